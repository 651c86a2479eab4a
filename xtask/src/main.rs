//! `cargo xtask demo` runs the whole pipeline and writes the efficiency report;
//! `cargo xtask test` runs every check CI runs; `cargo xtask bench-train` compares training
//! speed with PyTorch.

mod bench_train;
mod demo;
mod embed;
mod report;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::process::Command;
use xtask::{firmware, root, setup};

#[derive(Parser)]
#[command(about = "Project automation for the L1-sparse CNN")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Train dense and sparse models, export, run the firmware under QEMU, write report/.
    Demo(demo::DemoArgs),
    /// Formatting, lints, all tests (incl. QEMU end-to-end), no_std builds, every board image.
    Test,
    /// Training speed: our trainer vs the reference PyTorch script, alternating runs, plus a
    /// per-op profile; writes report/bench-train.md and the README's performance section.
    BenchTrain(bench_train::BenchTrainArgs),
    /// Build the firmware for every board and kernel set and print image sizes; with `--embed`,
    /// one image that carries a model and test images (one file to flash).
    Firmware(embed::EmbedArgs),
    /// Run the firmware under QEMU with slot files made by `trainer device-files`.
    Qemu {
        /// mps2-an386 or netduinoplus2.
        #[arg(long, value_enum, default_value = "mps2-an386")]
        board: firmware::Board,
        /// The model slot (omit to run with erased flash).
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// The test-image slot.
        #[arg(long)]
        inputs: Option<std::path::PathBuf>,
        /// Also estimate Cortex-M4 cycles per inference (QEMU plugin + cycle table).
        #[arg(long)]
        cycles: bool,
        /// The kernels the image carries.
        #[arg(long, value_enum, default_value = "all")]
        kernels: firmware::Kernels,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Demo(args) => demo::run(&args),
        Task::Test => test(),
        Task::BenchTrain(args) => bench_train::run(&args),
        Task::Firmware(args) => match &args.embed {
            Some(file) => embed::run(&args, file),
            None => build_all_firmware(),
        },
        Task::Qemu {
            board,
            model,
            inputs,
            cycles,
            kernels,
        } => run_qemu(board, kernels, model.as_deref(), inputs.as_deref(), cycles),
    };
    match result {
        Ok(()) => {}
        // The reader of our output went away (`cargo xtask qemu | head`): nothing left to say.
        Err(e) if xtask::closed_pipe(&e) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs a command in the workspace root, failing with its description.
pub fn cargo(args: &[&str], what: &str) -> Result<()> {
    eprintln!("==> {what}: cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running cargo for {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn build_all_firmware() -> Result<()> {
    setup::firmware_tools()?;
    for board in firmware::ALL_BOARDS {
        for kernels in firmware::Kernels::ALL {
            let elf = firmware::build_image(board, kernels, None)?;
            let s = firmware::image_size(&elf)?;
            eprintln!(
                "{:<14} {:<12} text {:>6}  rodata {:>5}  flash {:>6}  bss {:>6}  {}",
                board.feature(),
                kernels.name(),
                s.text,
                s.rodata,
                s.flash(),
                s.bss,
                elf.display()
            );
        }
    }
    Ok(())
}

fn test() -> Result<()> {
    setup::rust_target()?;
    setup::firmware_tools()?;
    cargo(&["fmt", "--all", "--", "--check"], "formatting")?;
    let app = root().join("firmware/app");
    let formatted = Command::new("cargo")
        .args(["fmt", "--check"])
        .current_dir(&app)
        .status()?;
    if !formatted.success() {
        bail!("firmware/app is not formatted (cargo fmt in firmware/app)");
    }
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        "lints",
    )?;
    // The engine without its dense kernels (the smallest firmware image's engine): its lints and
    // its property tests, which then run dense int8 layers through the compact code.
    let lean = [
        "-p",
        "sparse-engine",
        "--no-default-features",
        "--all-targets",
    ];
    cargo(
        &[&["clippy"][..], &lean, &["--", "-D", "warnings"]].concat(),
        "lints of the engine without dense kernels",
    )?;
    cargo(
        &[&["test"][..], &lean].concat(),
        "tests of the engine without dense kernels",
    )?;
    for krate in ["model-format", "sparse-engine", "protocol"] {
        let mut args = vec!["build", "-p", krate, "--target", "thumbv7em-none-eabihf"];
        if krate == "model-format" {
            args.push("--no-default-features");
        }
        cargo(&args, &format!("no_std build of {krate}"))?;
    }
    build_all_firmware()?;
    // Each kernel set compiles different code (and an nRF52840 image the RTT path).
    for kernels in firmware::Kernels::ALL {
        firmware::clippy(firmware::Board::Mps2An386, kernels)?;
    }
    firmware::clippy(firmware::Board::Nrf52840dk, firmware::Kernels::All)?;
    cargo(
        &["test", "--workspace"],
        "tests (unit, property, end-to-end under QEMU)",
    )?;
    Ok(())
}

fn run_qemu(
    board: firmware::Board,
    kernels: firmware::Kernels,
    model: Option<&std::path::Path>,
    inputs: Option<&std::path::Path>,
    cycles: bool,
) -> Result<()> {
    setup::firmware_tools()?;
    let elf = firmware::build_image(board, kernels, None)?;
    let timeout = std::time::Duration::from_secs(600);
    let run = if cycles {
        let (run, profile) = xtask::qemu::run_profiled(board, &elf, model, inputs, timeout)?;
        let estimate = xtask::cycles::estimate(&profile, &xtask::cycles::disassemble(&elf)?)?;
        eprint!("{}", estimate.describe());
        run
    } else {
        xtask::qemu::run(board, &elf, model, inputs, timeout)?
    };
    let mut stdout = std::io::stdout().lock();
    for line in &run.lines {
        match protocol::from_message(&line.message) {
            Some(Ok(record)) => writeln!(stdout, "{:<5} {record:?}", line.level)?,
            _ => writeln!(stdout, "{:<5} {}", line.level, line.message)?,
        }
    }
    match run.exit_code {
        Some(0) => Ok(()),
        code => bail!("firmware exited with {code:?}"),
    }
}
