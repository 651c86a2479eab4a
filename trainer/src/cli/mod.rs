//! Command-line interface of the `trainer` binary.

/// `println!` that returns an error instead of panicking when standard output is closed (as
/// in `trainer inspect FILE | head -3`); `main` ends quietly on that error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod args;
mod eval;
mod files;
mod quantize;
mod train;

use anyhow::Result;
use args::{DataArgs, PenaltyArgs};
use clap::{Args, Parser, Subcommand};
use trainer::data::Split;

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Train, prune and evaluate the L1-sparse CNN"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the CNN with an L1 penalty (defaults: the project's best recipe's first stage).
    Train(train::TrainArgs),
    /// Zero the smallest weights, then optionally fine-tune with the zeros pinned.
    Prune(train::PruneArgs),
    /// Bring in a model trained in PyTorch (a state dict saved with safetensors) as a run
    /// folder that prune, export, eval and the firmware take.
    Import(files::ImportArgs),
    /// Test accuracy, per-class accuracy and per-layer sparsity and cost of a model.
    Eval(eval::EvalArgs),
    /// Write a trained or pruned model as a compressed sparse l1sparse file.
    Export(files::ExportArgs),
    /// Show a sparse file's tensors, encodings and bytes; fails on an invalid file.
    Inspect(files::InspectArgs),
    /// Quantize a model to int8 (per-channel weights, calibrated activations) and write it as
    /// an l1sparse file; reports its accuracy against the f32 model's.
    Quantize(quantize::QuantizeArgs),
    /// Write a sparse file back as a plain dense safetensors state dict (PyTorch names).
    Densify(files::DensifyArgs),
    /// Measure training throughput (images/s) and where a training step's time goes.
    Bench(BenchArgs),
    /// Write flash-slot images of a model and of test images for the firmware, plus the host
    /// engine's logits for those images.
    DeviceFiles(files::DeviceFilesArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Timed training steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[command(flatten)]
    penalty: PenaltyArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Also time each operation of the step on its own (forward and backward, layer by layer).
    #[arg(long)]
    profile: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::run_train(args),
        Command::Prune(args) => train::run_prune(args),
        Command::Import(args) => files::run_import(args),
        Command::Eval(args) => eval::run_eval(args),
        Command::Export(args) => files::run_export(args),
        Command::Quantize(args) => quantize::run_quantize(args),
        Command::Inspect(args) => files::run_inspect(args),
        Command::Densify(args) => files::run_densify(args),
        Command::DeviceFiles(args) => files::run_device_files(args),
        Command::Bench(args) => run_bench(args),
    }
}

fn run_bench(args: BenchArgs) -> Result<()> {
    let train_set = args.data.load(Split::Train)?;
    let penalty = args.penalty.penalty(train_set.len())?;
    let mut report = trainer::bench::bench(&train_set, args.batch_size, args.steps, &penalty)?;
    if args.profile {
        report.profile_ms = trainer::bench::profile(&train_set, args.batch_size, 10)?;
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out!(
            "{} steps of {} images: {:.1} images/s ({} threads)",
            report.steps,
            report.batch_size,
            report.images_per_second,
            report.threads
        )?;
        for (phase, ms) in &report.milliseconds_per_step {
            out!("  {phase:<38} {ms:>8.2} ms/step")?;
        }
        if !report.profile_ms.is_empty() {
            out!("each operation on its own:")?;
            for (op, ms) in &report.profile_ms {
                out!("  {op:<52} {ms:>8.2} ms")?;
            }
        }
    }
    Ok(())
}
