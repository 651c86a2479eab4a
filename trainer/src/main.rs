//! `trainer`: train, prune, evaluate and export the L1-sparse CNN.

mod cli;

use clap::Parser;

/// A training step allocates and frees the same large buffers (unfolded inputs, gradients) every
/// step; glibc's malloc returns such blocks to the OS and takes page faults to get them back
/// (a third of the step's time was spent in the kernel). mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
