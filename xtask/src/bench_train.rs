//! `cargo xtask bench-train`: our trainer against the reference PyTorch script on the same
//! machine, data, batch size and thread count, runs alternating, plus our per-op profile.

use crate::report::update_readme_section;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use trainer::bench::BenchReport;
use xtask::{root, stdout_of};

#[derive(clap::Args)]
pub struct BenchTrainArgs {
    /// Training steps (batches of 64) per run, for both trainers.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Rounds; each runs ours (prox), ours (l1) and PyTorch once, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Threads for both (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Python interpreter to create the benchmark's virtual environment with.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// The reference recipe in PyTorch (a copy of the project's anchor script).
fn reference_script() -> PathBuf {
    xtask::python::script("seed_reference.py")
}

/// A virtual environment with torch, numpy and safetensors (`pip install`, once, ~5 GB).
fn pytorch_env(python: &str) -> Result<PathBuf> {
    xtask::python::venv(
        python,
        "bench-venv",
        &["torch", "numpy", "safetensors"],
        "torch, numpy, safetensors",
    )
}

/// Load average over the last minute (Linux), to report how busy the machine was.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One run of our trainer's benchmark: images/s and its JSON report.
fn ours(trainer: &Path, mode: &str, args: &BenchTrainArgs, threads: usize) -> Result<BenchReport> {
    let mut cmd = Command::new(trainer);
    cmd.args(["bench", "--dataset", "mnist", "--json", "--steps"])
        .arg(args.steps.to_string())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .current_dir(root());
    match mode {
        // The PyTorch script's penalty: λ = 1e-3 on every parameter, in the loss.
        "l1" => cmd.args(["--penalty", "l1", "--lambda", "1e-3", "--l1-scope", "all"]),
        _ => cmd.args(["--penalty", "prox", "--lambda", "1e-4", "--profile"]),
    };
    let out = stdout_of(&mut cmd, "trainer bench")?;
    serde_json::from_slice(&out).context("trainer bench output is not JSON")
}

/// One run of the PyTorch script on as many training images as our run's steps take (at most
/// the training set): the images/s of its second epoch, as the first pays for one-time setup
/// the way our warm-up steps do.
fn pytorch(py: &Path, data: &Path, args: &BenchTrainArgs, threads: usize) -> Result<f64> {
    let out = stdout_of(
        Command::new(py)
            .arg(reference_script())
            .arg(data)
            .args(["--epochs", "2", "--batch", "64", "--limit"])
            .arg((args.steps * 64).to_string())
            .arg("--threads")
            .arg(threads.to_string())
            .current_dir(root()),
        "the PyTorch script",
    )?;
    let text = String::from_utf8_lossy(&out);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line from the PyTorch script")?;
    let out: PytorchOutput = serde_json::from_str(line)?;
    Ok(out.img_per_s)
}

/// The last line the PyTorch script prints.
#[derive(serde::Deserialize)]
struct PytorchOutput {
    img_per_s: f64,
}

/// Markdown rows `| name | ms |`.
fn table_rows(md: &mut String, pairs: &[(String, f64)]) {
    for (name, ms) in pairs {
        md.push_str(&format!("| {name} | {ms:.2} |\n"));
    }
}

pub fn run(args: &BenchTrainArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    crate::cargo(
        &["build", "--release", "-p", "trainer"],
        "building the trainer",
    )?;
    let trainer = root().join("target/release/trainer");
    // Fetches MNIST into data/mnist (IDX) if needed, and warms the caches.
    let probe = Command::new(&trainer)
        .args(["bench", "--dataset", "mnist", "--steps", "1"])
        .current_dir(root())
        .status()?;
    if !probe.success() {
        bail!("trainer bench could not run");
    }
    let data = std::env::var_os("L1SPARSE_DATA")
        .map_or_else(|| root().join("data"), PathBuf::from)
        .join("mnist");
    let py = pytorch_env(&args.python)?;
    let load_before = load();
    let (mut prox, mut l1, mut torch) = (Vec::new(), Vec::new(), Vec::new());
    let mut profile = None;
    for round in 1..=args.rounds.max(1) {
        let p = ours(&trainer, "prox", args, threads)?;
        let l = ours(&trainer, "l1", args, threads)?;
        let t = pytorch(&py, &data, args, threads)?;
        eprintln!(
            "round {round}: ours prox {:.0} img/s, ours l1 {:.0} img/s, PyTorch {t:.0} img/s",
            p.images_per_second, l.images_per_second
        );
        prox.push(p.images_per_second);
        l1.push(l.images_per_second);
        torch.push(t);
        profile = Some(p);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (bp, bl, bt) = (best(&prox), best(&l1), best(&torch));
    let (p, l, t) = (median(prox), median(l1), median(torch));
    let mut md = String::new();
    md.push_str(&format!(
        "Training throughput on this machine ({threads} threads, batch 64, MNIST, {} alternating rounds; 1-minute load average {load_before} before, {} after). Ours: {} steps after 3 warm-up steps; PyTorch: the second epoch over the first {} training images (or all of them, if fewer), as its first epoch pays for one-time setup. Interference only slows a run down, so the best round is the steadier comparison; on this 2-vCPU VM PyTorch's runs vary the most.\n\n",
        args.rounds.max(1),
        load(),
        args.steps,
        args.steps * 64,
    ));
    md.push_str("| trainer | images/s, best | vs PyTorch, best | images/s, median | vs PyTorch, median |\n|---|---:|---:|---:|---:|\n");
    for (name, b, m) in [
        (
            "PyTorch (`xtask/pytorch/seed_reference.py`, L1 λ=1e-3 in the loss)",
            bt,
            t,
        ),
        (
            "ours, `--penalty l1 --lambda 1e-3 --l1-scope all` (same recipe)",
            bl,
            l,
        ),
        ("ours, `--penalty prox --lambda 1e-4` (the default)", bp, p),
    ] {
        md.push_str(&format!(
            "| {name} | {b:.0} | {:.2}× | {m:.0} | {:.2}× |\n",
            b / bt,
            m / t
        ));
    }
    md.push_str(
        "\nOur step, phase by phase (prox mode, ms per step):\n\n| phase | ms |\n|---|---:|\n",
    );
    let profile = profile.context("no benchmark round ran")?;
    table_rows(&mut md, &profile.milliseconds_per_step);
    md.push_str("\nEach operation on its own (same shapes, ms per call; the difference to the phases above is Candle's autograd bookkeeping):\n\n| operation | ms |\n|---|---:|\n");
    table_rows(&mut md, &profile.profile_ms);
    md.push_str("\nProduced by `cargo xtask bench-train`.\n");
    let dir = root().join("report");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench-train.md"), &md)?;
    update_readme_section(&root().join("README.md"), "performance", &md)?;
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{md}")?;
    Ok(())
}
