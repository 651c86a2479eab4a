//! `trainer`: train, prune, evaluate and export the L1-sparse CNN.

mod cli;

use clap::Parser;

/// A training step allocates and frees the same large buffers (activations, gradients) every
/// step; glibc's malloc returns such blocks to the OS and takes page faults to get them back
/// (a third of the step's time was spent in the kernel). mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Candle runs large element-wise ops (its autograd's gradient sums) on a pool of its own
    // whose idle workers spin, taking cores from the rayon workers that run every heavy kernel
    // of the step (a quarter of the training throughput on 2 cores). One thread — the caller —
    // runs those ops inline instead. Set before any Candle op creates the pool; a user's own
    // setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`trainer inspect FILE | head -3`): nothing left to say.
        Err(e) if closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the error is a write to a closed pipe.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
