//! The main job: dense baseline and L1-sparse model, trained, pruned, exported, run on the
//! emulated MCUs, and compared in `report/`.

use crate::report::{self, Measured};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use trainer::output::{EvalReport, HostLogits, QuantizeReport};
use trainer::pipeline;
use trainer::train::optim::LrSchedule;
use trainer::train::{read_metrics, EpochMetrics, RunDir, TrainConfig};
use xtask::firmware::{self, Board, Kernels};
use xtask::{cycles, qemu, root, setup, stdout_of};

#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Datasets, the headline first: fashion-mnist (60k/10k) and mnist (10k digits). Repeat
    /// the option or separate with commas.
    #[arg(long = "dataset", value_delimiter = ',', default_values_t = DEFAULT_DATASETS.map(String::from))]
    datasets: Vec<String>,
    /// Epochs of the dense baseline and of the L1 (proximal) training.
    #[arg(long, default_value_t = pipeline::EPOCHS)]
    epochs: usize,
    /// Epochs of masked fine-tuning after pruning.
    #[arg(long, default_value_t = pipeline::FINETUNE_EPOCHS)]
    finetune_epochs: usize,
    /// L1 strength of the proximal training, for every dataset [default: the dataset's recipe
    /// (`DatasetRecipe::of`), else by its size, `trainer::pipeline::lambda_for`].
    #[arg(long)]
    lambda: Option<f64>,
    /// Fine-tune epochs over which pruning ramps up gradually (0: one cut before them), for
    /// every dataset [default: the dataset's recipe].
    #[arg(long)]
    gradual_epochs: Option<usize>,
    /// Fraction of weights pruned after L1 training, for every dataset [default: the dataset's
    /// recipe].
    #[arg(long)]
    sparsity: Option<f64>,
    /// Pruning ranks weights by |w| / MACs^this (0: by magnitude alone; `trainer prune
    /// --mac-exponent`), for every dataset [default: the dataset's recipe].
    #[arg(long)]
    mac_exponent: Option<f64>,
    /// Test images run on the MCUs.
    #[arg(long, default_value_t = pipeline::DEVICE_IMAGES)]
    device_images: u16,
    /// Also train a λ sweep (prox, then prune) for the accuracy-vs-sparsity curve.
    #[arg(long)]
    sweep: bool,
    /// Work folder (runs are resumed from here when interrupted).
    #[arg(long, default_value = "runs/demo")]
    work: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "report")]
    report: PathBuf,
}

/// The demo's datasets by default: full Fashion-MNIST as the headline, MNIST beside it.
const DEFAULT_DATASETS: [&str; 2] = ["fashion-mnist", "mnist"];

/// What the demo trains on a dataset unless an option says otherwise: the trainer's defaults,
/// except on MNIST, whose target is 99.5% zeros (docs/TRAINING.md, "MNIST at 99.5%"): a
/// stronger L1, one cut to 99.6% of the weights, ranked by |w| / MACs^0.12.
struct DatasetRecipe {
    sparsity: f64,
    lambda: Option<f64>,
    gradual_epochs: usize,
    mac_exponent: f64,
}

impl DatasetRecipe {
    /// The trainer's defaults (λ by the data's size).
    const TRAINER: DatasetRecipe = DatasetRecipe {
        sparsity: pipeline::SPARSITY,
        lambda: None,
        gradual_epochs: pipeline::GRADUAL_EPOCHS,
        mac_exponent: pipeline::MAC_EXPONENT,
    };

    fn of(dataset: &str) -> Self {
        match dataset {
            "mnist" => DatasetRecipe {
                sparsity: 0.996,
                lambda: Some(5e-4),
                gradual_epochs: 0,
                mac_exponent: 0.12,
            },
            _ => Self::TRAINER,
        }
    }
}

impl DemoArgs {
    /// These options with the dataset's recipe where they leave a setting open.
    fn for_dataset(&self, dataset: &str) -> Self {
        let recipe = DatasetRecipe::of(dataset);
        DemoArgs {
            lambda: self.lambda.or(recipe.lambda),
            gradual_epochs: Some(self.gradual_epochs.unwrap_or(recipe.gradual_epochs)),
            sparsity: Some(self.sparsity.unwrap_or(recipe.sparsity)),
            mac_exponent: Some(self.mac_exponent.unwrap_or(recipe.mac_exponent)),
            ..self.clone()
        }
    }

    // The settings of resolved options ([`Self::for_dataset`]); unresolved, the trainer's.

    fn sparsity(&self) -> f64 {
        self.sparsity.unwrap_or(DatasetRecipe::TRAINER.sparsity)
    }

    fn gradual_epochs(&self) -> usize {
        self.gradual_epochs
            .unwrap_or(DatasetRecipe::TRAINER.gradual_epochs)
    }

    fn mac_exponent(&self) -> f64 {
        self.mac_exponent
            .unwrap_or(DatasetRecipe::TRAINER.mac_exponent)
    }
}

struct Steps {
    total: usize,
    done: usize,
    started: Instant,
}

impl Steps {
    fn next(&mut self, what: &str) {
        self.done += 1;
        eprintln!(
            "\n[{}/{}] {what} ({:.0}s elapsed)",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn trainer_bin() -> PathBuf {
    root().join("target/debug/trainer")
}

/// Runs the trainer; its output streams to the terminal.
fn trainer(args: &[&str], step: &str) -> Result<()> {
    let status = Command::new(trainer_bin())
        .args(args)
        .current_dir(root())
        .status()
        .context("starting the trainer")?;
    if !status.success() {
        bail!(
            "step '{step}' failed: trainer {} ({status})",
            args.join(" ")
        );
    }
    Ok(())
}

/// Runs the trainer and reads its JSON output as the type it prints.
fn trainer_json<T: serde::de::DeserializeOwned>(args: &[&str], step: &str) -> Result<T> {
    let what = format!("step '{step}' (trainer {})", args.join(" "));
    let out = stdout_of(
        Command::new(trainer_bin()).args(args).current_dir(root()),
        &what,
    )?;
    serde_json::from_slice(&out)
        .with_context(|| format!("step '{step}': trainer output is not JSON"))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Runs finished before this demo started (reused rather than trained).
static REUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Trains unless the run already finished; an interrupted run resumes from its checkpoint.
fn train_run(out: &Path, extra: &[&str], data: &[&str], step: &str) -> Result<()> {
    if out.join("model.safetensors").is_file() {
        eprintln!(
            "{} already trained: reusing it (delete the folder to retrain)",
            out.display()
        );
        REUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(());
    }
    let mut args = vec!["train", "--out", out.to_str().context("path")?, "--resume"];
    args.extend_from_slice(extra);
    args.extend_from_slice(data);
    trainer(&args, step)
}

/// The pruning and fine-tune: epochs, over how many of them pruning ramps up, and the
/// ranking's MAC exponent.
struct Finetune {
    epochs: String,
    gradual: String,
    mac_exponent: String,
}

impl Finetune {
    fn of(args: &DemoArgs) -> Self {
        Finetune {
            epochs: args.finetune_epochs.to_string(),
            gradual: args.gradual_epochs().to_string(),
            mac_exponent: args.mac_exponent().to_string(),
        }
    }
}

fn prune_run(
    model: &Path,
    out: &Path,
    sparsity: &str,
    ft: &Finetune,
    data: &[&str],
    step: &str,
) -> Result<()> {
    if out.join("model.safetensors").is_file() {
        eprintln!("{} already pruned: reusing it", out.display());
        REUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(());
    }
    let model = path_str(model);
    let out_s = path_str(out);
    let mut args = vec![
        "prune",
        "--model",
        &model,
        "--sparsity",
        sparsity,
        "--finetune-epochs",
        &ft.epochs,
        "--gradual-epochs",
        &ft.gradual,
        "--mac-exponent",
        &ft.mac_exponent,
        "--out",
        &out_s,
        "--resume",
    ];
    args.extend_from_slice(data);
    trainer(&args, step)
}

/// The demo's run folders and files for one setting.
struct Work {
    dir: PathBuf,
    data: [String; 2],
}

impl Work {
    fn data(&self) -> [&str; 2] {
        [self.data[0].as_str(), self.data[1].as_str()]
    }
    fn run(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.l1sparse.safetensors"))
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let mut steps = Steps {
        total: 3 + 7 * args.datasets.len(),
        done: 0,
        started: Instant::now(),
    };
    steps.next("setting up: QEMU, Cortex-M target, trainer and firmware builds");
    setup::rust_target()?;
    setup::firmware_tools()?;
    setup::report_tools()?;
    crate::cargo(&["build", "-p", "trainer"], "building the trainer")?;
    let mut images = Vec::new();
    for board in BOARDS {
        for kernels in Kernels::ALL {
            images.push((board, kernels, firmware::build_image(board, kernels, None)?));
        }
    }
    let datasets = args
        .datasets
        .iter()
        .map(|dataset| run_dataset(&args.for_dataset(dataset), dataset, &images, &mut steps))
        .collect::<Result<Vec<_>>>()?;
    steps.next("measuring firmware images");
    let sizes = images
        .iter()
        .map(|(board, kernels, elf)| Ok((*board, *kernels, firmware::image_size(elf)?)))
        .collect::<Result<Vec<_>>>()?;
    steps.next("writing the efficiency report");
    let inputs = report::Inputs {
        command: demo_command(args),
        datasets,
        firmware_sizes: sizes,
        seconds: steps.started.elapsed().as_secs_f64(),
        reused_runs: REUSED.load(std::sync::atomic::Ordering::Relaxed),
        cycle_checks: cycles::validate::validate()?,
    };
    write_report(args, &inputs, &steps)
}

/// The run folder of a dataset: one per setting, so changing an option (or the recipe's
/// fine-tune) retrains instead of reusing stale runs.
fn work_for(args: &DemoArgs, dataset: &str) -> Work {
    let finetune = match args.gradual_epochs() {
        0 => format!("ft{}", args.finetune_epochs),
        g => format!("ft{}g{g}", args.finetune_epochs),
    };
    let lambda = args.lambda.map_or("auto".into(), |l| l.to_string());
    let schedule = match pipeline::FINETUNE_SCHEDULE {
        LrSchedule::Constant => "",
        LrSchedule::Cosine => "cos",
    };
    let ranking = match args.mac_exponent() {
        0.0 => String::new(),
        x => format!("-mac{x}"),
    };
    let settings = format!(
        "e{}-{finetune}{schedule}-lambda{lambda}-s{}{ranking}",
        args.epochs,
        args.sparsity()
    );
    Work {
        dir: root().join(&args.work).join(dataset).join(settings),
        data: ["--dataset".into(), dataset.to_string()],
    }
}

/// Everything of one dataset: training, files, host evaluation, the firmware's runs.
fn run_dataset(
    args: &DemoArgs,
    dataset: &str,
    images: &[(Board, Kernels, PathBuf)],
    steps: &mut Steps,
) -> Result<report::DatasetInputs> {
    eprintln!("\n=== {dataset} ===");
    let work = work_for(args, dataset);
    train_models(args, &work, steps)?;
    let quantized = export_models(&work, steps)?;
    steps.next("evaluating the exported files with the firmware's engine on the full test set");
    let mut measured = [
        "dense",
        "sparse",
        "dense-pruned",
        "dense-int8",
        "sparse-int8",
    ]
    .into_iter()
    .map(|name| measure_on_host(args, &work, name))
    .collect::<Result<Vec<_>>>()?;
    steps.next(
        "running the firmware under QEMU (mps2-an386 and netduinoplus2, each model that fits)",
    );
    for m in measured.iter_mut().filter(|m| m.name != "dense-pruned") {
        for (board, kernels, elf) in images {
            if *kernels == m.kernels {
                run_on_board(m, &work, *board, elf)?;
            }
        }
        run_own_image(m, &work)?;
    }
    let sweep = if args.sweep {
        run_sweep(args, &work.dir, &work.data())?
    } else {
        Vec::new()
    };
    Ok(report::DatasetInputs {
        dataset: dataset.to_string(),
        recipe: recipe(args, &work)?,
        measured,
        sparse_model: work.run("sparse").join("model.safetensors"),
        sweep,
        pareto: pareto_points(args, &work)?,
        quantized,
        curves: training_curves(args, &work)?,
    })
}

/// The model files: f32 exports of the trained runs, then the int8 quantizations.
fn export_models(work: &Work, steps: &mut Steps) -> Result<Vec<(String, QuantizeReport)>> {
    steps.next("exporting: sparse file (CSR, dead units removed) and dense f32 baseline");
    // The sparse models as CSR throughout: the sparse kernels beat the dense ones even on a
    // mostly dense conv1 (its dead filters removed), for a few bytes more than the smallest.
    for (name, encoding) in [
        ("sparse", Some("csr")),
        ("dense-pruned", Some("csr")),
        ("dense", Some("dense")),
    ] {
        export_model(work, name, encoding)?;
    }
    steps.next("quantizing to int8: the sparse model and the dense baseline");
    [("sparse", "sparse-int8"), ("dense", "dense-int8")]
        .into_iter()
        .map(|(run, name)| quantize_model(work, run, name))
        .collect()
}

/// Dense baseline, proximal L1, pruning + fine-tune of both (each resumable, reused if done).
fn train_models(args: &DemoArgs, work: &Work, steps: &mut Steps) -> Result<()> {
    let data = work.data();
    let epochs = args.epochs.to_string();
    steps.next("training the dense baseline (no penalty)");
    let dense = work.run("dense");
    let none = ["--penalty", "none", "--epochs", &epochs];
    train_run(&dense, &none, &data, "dense training")?;

    steps.next("training with proximal L1 (exact zeros during training)");
    let prox = work.run("prox");
    let mut l1 = vec!["--penalty", "prox", "--epochs", &epochs];
    let lambda = args.lambda.map(|l| l.to_string());
    if let Some(lambda) = &lambda {
        l1.extend(["--lambda", lambda]);
    }
    train_run(&prox, &l1, &data, "L1 training")?;

    steps.next(
        "pruning (L1 model and, for comparison, the dense one) and fine-tuning with zeros pinned",
    );
    for (target, suffix, ft) in pareto_targets(args) {
        let sparsity = target.to_string();
        for (from, to, step) in [
            (&prox, "sparse", "pruning"),
            (
                &dense,
                "dense-pruned",
                "magnitude pruning of the dense model",
            ),
        ] {
            let model = from.join("model.safetensors");
            let out = work.run(&format!("{to}{suffix}"));
            prune_run(&model, &out, &sparsity, &ft, &data, step)?;
        }
    }
    Ok(())
}

/// The recipe the dataset's runs followed, in words, with the λ the L1 run used (the trainer
/// picks it by the data's size unless `--lambda` says).
fn recipe(args: &DemoArgs, work: &Work) -> Result<String> {
    let prox = work.run("prox").join("model.safetensors");
    let (_, meta) = trainer::model::tensor_file::load(&prox)?;
    let cfg: TrainConfig = serde_json::from_str(
        meta.get("training")
            .with_context(|| format!("{}: no training metadata", prox.display()))?,
    )?;
    let n = args.finetune_epochs;
    let ramp = match args.gradual_epochs() {
        0 => format!("at once, then {n} masked fine-tune epochs"),
        g => format!("gradually over the first {g} (Zhu & Gupta's cubic ramp) of {n} masked fine-tune epochs"),
    };
    let schedule = match pipeline::FINETUNE_SCHEDULE {
        LrSchedule::Constant => "constant",
        LrSchedule::Cosine => "cosine-decayed to 0",
    };
    let ranking = match args.mac_exponent() {
        0.0 => "ranked by magnitude".to_string(),
        x => format!("ranked by |w| / MACs^{x}"),
    };
    Ok(format!(
        "dense {e} epochs; proximal L1 λ = {:.3e} {e} epochs; prune {:.1}% of the weights ({ranking}) {ramp}, their learning rate {schedule} (Adam, lr 1e-3, batch 64, seed 0 throughout)",
        cfg.penalty.lambda(),
        100.0 * args.sparsity(),
        e = args.epochs,
    ))
}

/// Pruning targets of the accuracy-vs-sparsity curves, their run folders' suffixes and
/// fine-tunes: the demo's own target (the folders `sparse`, `dense-pruned`) with the recipe's
/// fine-tune, and lower ones with [`PARETO_FINETUNE`], which keeps both datasets within the
/// demo's time (the same for both methods, so each point still compares like with like).
fn pareto_targets(args: &DemoArgs) -> Vec<(f64, String, Finetune)> {
    let mut targets = vec![(args.sparsity(), String::new(), Finetune::of(args))];
    let (epochs, gradual) = PARETO_FINETUNE;
    for t in PARETO_TARGETS.into_iter().filter(|&t| t < args.sparsity()) {
        let ft = Finetune {
            epochs: epochs.to_string(),
            gradual: gradual.to_string(),
            ..Finetune::of(args)
        };
        targets.push((t, format!("-s{t}-ft{epochs}g{gradual}"), ft));
    }
    targets
}

/// The lower pruning targets every demo also draws.
const PARETO_TARGETS: [f64; 2] = [0.9, 0.97];
/// Their fine-tune: epochs, and over how many pruning ramps up.
const PARETO_FINETUNE: (usize, usize) = (2, 1);

/// Each pruned model's zeros and accuracy (its last epoch), per method.
fn pareto_points(args: &DemoArgs, work: &Work) -> Result<Vec<report::ParetoPoint>> {
    let mut points = Vec::new();
    for (target, suffix, ft) in pareto_targets(args) {
        for (method, run) in [
            ("L1 (proximal), then prune + fine-tune", "sparse"),
            ("magnitude pruning + fine-tune (no L1)", "dense-pruned"),
        ] {
            let (zero_fraction, accuracy) = last_metrics(&work.run(&format!("{run}{suffix}")))?;
            points.push(report::ParetoPoint {
                method,
                target,
                finetune: format!("{} epochs, ramp over {}", ft.epochs, ft.gradual),
                zero_fraction,
                accuracy,
            });
        }
    }
    Ok(points)
}

/// The training runs' metrics for the curves; fine-tunes continue their source's epochs.
fn training_curves(
    args: &DemoArgs,
    work: &Work,
) -> Result<Vec<(String, usize, Vec<EpochMetrics>)>> {
    [
        ("dense (no penalty)", "dense", 0),
        ("proximal L1", "prox", 0),
        ("L1 → prune → fine-tune", "sparse", args.epochs),
        (
            "dense → magnitude prune → fine-tune",
            "dense-pruned",
            args.epochs,
        ),
    ]
    .into_iter()
    .map(|(name, run, offset)| {
        let metrics = read_metrics(&RunDir(work.run(run)).metrics())?;
        Ok((name.to_string(), offset, metrics))
    })
    .collect()
}

/// Exports run `name` to its model file (the smallest encoding per tensor unless `encoding`).
fn export_model(work: &Work, name: &str, encoding: Option<&str>) -> Result<()> {
    let model = path_str(&work.run(name).join("model.safetensors"));
    let file = path_str(&work.file(name));
    let mut args = vec!["export", &model, "-o", &file];
    if let Some(e) = encoding {
        args.extend(["--encoding", e]);
    }
    trainer(&args, "export")
}

/// Quantizes run `run` to int8 as model file `name`, calibrated on training images; the
/// trainer checks that the engine's logits equal the int8 model's definition on the test set.
fn quantize_model(work: &Work, run: &str, name: &str) -> Result<(String, QuantizeReport)> {
    let model = path_str(&work.run(run).join("model.safetensors"));
    let file = path_str(&work.file(name));
    let [flag, dataset] = work.data();
    let report: QuantizeReport = trainer_json(
        &["quantize", &model, "-o", &file, "--json", flag, dataset],
        "quantization",
    )?;
    eprintln!(
        "{name}: {} bytes, accuracy {:.4} (f32 {:.4}), engine logits identical on {}/{} test images",
        report.file_bytes,
        report.int8_accuracy,
        report.f32_accuracy,
        report.engine_identical_logits,
        report.test_images
    );
    Ok((name.to_string(), report))
}

/// The boards the demo runs the firmware on.
const BOARDS: [Board; 2] = [Board::Mps2An386, Board::Netduinoplus2];

/// The image that runs a model: the smallest that carries its kernels.
fn kernels_for(name: &str) -> Kernels {
    match name {
        "sparse-int8" => Kernels::Int8Sparse,
        "sparse" => Kernels::F32Sparse,
        n if n.ends_with("-int8") => Kernels::Int8,
        _ => Kernels::F32,
    }
}

/// Evaluates model file `name` with the engine on the host and writes its device files.
fn measure_on_host(args: &DemoArgs, work: &Work, name: &str) -> Result<Measured> {
    let file = work.file(name);
    let [flag, dataset] = work.data();
    let file_arg = path_str(&file);
    let mut eval_args = vec!["eval", &file_arg, "--json", flag, dataset];
    // Candle runs the f32 files' weights as they are; int8 files have no candle twin.
    if !name.ends_with("-int8") {
        eval_args.push("--compare-candle");
    }
    let eval: EvalReport = trainer_json(&eval_args, "evaluation")?;
    eprintln!(
        "{name}: accuracy {} on {} images",
        eval.accuracy, eval.test_images
    );
    let device_dir = work.run(&format!("device-{name}"));
    trainer(
        &[
            "device-files",
            &path_str(&file),
            "--images",
            &args.device_images.to_string(),
            "-o",
            &path_str(&device_dir),
            flag,
            dataset,
        ],
        "device files",
    )?;
    let host_logits: HostLogits =
        serde_json::from_slice(&std::fs::read(device_dir.join("host-logits.json"))?)?;
    Ok(Measured {
        name: name.into(),
        file_bytes: std::fs::metadata(&file)?.len(),
        eval,
        qemu: Vec::new(),
        host_logits,
        bit_identical: Vec::new(),
        cycles: None,
        kernels: kernels_for(name),
        own_image: None,
    })
}

/// Runs `m`'s device files on `board` (or records why the model does not fit its flash).
fn run_on_board(m: &mut Measured, work: &Work, board: Board, elf: &Path) -> Result<()> {
    let device_dir = work.run(&format!("device-{}", m.name));
    let slot = device_dir.join("model.slot");
    let slot_len = std::fs::metadata(&slot)?.len();
    let region = board.memory()?.model.1;
    if slot_len > region {
        let msg = format!(
            "does not fit: the model needs {slot_len} bytes of flash, the {} model region holds {region} (the whole chip has {} bytes of flash)",
            board.feature(),
            board.chip_flash()?
        );
        eprintln!("{} on {}: {msg}", m.name, board.feature());
        m.qemu.push((board, None, msg));
        return Ok(());
    }
    let inputs = device_dir.join("inputs.slot");
    let run = qemu::run(
        board,
        elf,
        Some(&slot),
        Some(&inputs),
        Duration::from_secs(600),
    )?;
    if run.exit_code != Some(0) {
        bail!(
            "firmware on {} failed (exit {:?}): {:?}",
            board.feature(),
            run.exit_code,
            run.errors()
        );
    }
    let rep = qemu::parse_report(&run)?;
    let same = rep.bit_identical(&m.host_logits.logit_bits);
    eprintln!(
        "{} on {}: {} images, {same} bit-identical to the host engine, {} instructions per inference, peak RAM {} bytes",
        m.name,
        board.feature(),
        rep.images.len(),
        rep.cost_per_image,
        rep.peak_ram
    );
    m.bit_identical.push((board, same, rep.images.len()));
    m.qemu.push((board, Some(rep), String::new()));
    if board == Board::Mps2An386 {
        let timeout = Duration::from_secs(600);
        let (run, profile) = qemu::run_profiled(board, elf, Some(&slot), Some(&inputs), timeout)?;
        if run.exit_code != Some(0) {
            bail!("profiled firmware run failed: {:?}", run.errors());
        }
        let estimate = cycles::estimate(&profile, &cycles::disassemble(elf)?)?;
        eprintln!(
            "{} on {}: estimated {} Cortex-M4 cycles per inference",
            m.name,
            board.feature(),
            estimate.inference.cycles
        );
        m.cycles = Some(estimate);
    }
    Ok(())
}

/// Runs `m` in the mps2-an386 image built for its own network with the model and test images
/// embedded, as `cargo xtask firmware --embed` builds it for one-file flashing: the engine's
/// buffers sized for this model (dead units removed), so its peak RAM is what deploying it
/// takes. A model whose network is the recipe's has the slot image's buffers: that run stands.
fn run_own_image(m: &mut Measured, work: &Work) -> Result<()> {
    let board = Board::Mps2An386;
    let file = trainer::export::read_model_file(&work.file(&m.name))?;
    let parsed = model_format::Model::parse(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let network = model_format::NetworkDef::from_network(&parsed.network);
    if network == model_format::NetworkDef::recipe() {
        m.own_image = report::on_board(m, board).cloned();
        return Ok(());
    }
    let device_dir = work.run(&format!("device-{}", m.name));
    let (slot, inputs) = (
        device_dir.join("model.slot"),
        device_dir.join("inputs.slot"),
    );
    let elf = firmware::build_embedded(board, m.kernels, &slot, &inputs, Some(&network))?;
    let run = qemu::run(board, &elf, None, None, Duration::from_secs(600))?;
    if run.exit_code != Some(0) {
        bail!("{}'s own image failed: {:?}", m.name, run.errors());
    }
    let rep = qemu::parse_report(&run)?;
    let same = rep.bit_identical(&m.host_logits.logit_bits);
    if same != rep.images.len() {
        bail!(
            "{}'s own image: {same} of {} images bit-identical to the host engine",
            m.name,
            rep.images.len()
        );
    }
    eprintln!(
        "{} in its own image ({}): peak RAM {} bytes (engine memory {}), {same} images bit-identical",
        m.name,
        network.describe().1,
        rep.peak_ram,
        rep.activation_ram
    );
    m.own_image = Some(rep);
    Ok(())
}

fn write_report(args: &DemoArgs, inputs: &report::Inputs, steps: &Steps) -> Result<()> {
    let report_dir = root().join(&args.report);
    report::write(&report_dir, inputs)?;
    // The README shows the default report only, so a trial run elsewhere leaves it alone.
    if args.report == Path::new("report") {
        report::update_readme(&root().join("README.md"), &report_dir.join("table.md"))?;
    }
    eprintln!(
        "\nreport written to {} ({:.0}s)",
        report_dir.join("report.md").display(),
        steps.started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn demo_command(args: &DemoArgs) -> String {
    let mut cmd = String::from("cargo xtask demo");
    if args.datasets != DEFAULT_DATASETS {
        cmd += &format!(" --dataset {}", args.datasets.join(","));
    }
    if args.epochs != 10 {
        cmd += &format!(" --epochs {}", args.epochs);
    }
    if args.finetune_epochs != pipeline::FINETUNE_EPOCHS {
        cmd += &format!(" --finetune-epochs {}", args.finetune_epochs);
    }
    if let Some(gradual) = args.gradual_epochs {
        cmd += &format!(" --gradual-epochs {gradual}");
    }
    if let Some(sparsity) = args.sparsity {
        cmd += &format!(" --sparsity {sparsity}");
    }
    if let Some(lambda) = args.lambda {
        cmd += &format!(" --lambda {lambda}");
    }
    if let Some(mac) = args.mac_exponent {
        cmd += &format!(" --mac-exponent {mac}");
    }
    if args.sweep {
        cmd += " --sweep";
    }
    cmd
}

/// λ sweep: prox training then pruning to the same sparsity; (λ, zero fraction before pruning,
/// accuracy before pruning, accuracy after pruning + fine-tune).
fn run_sweep(args: &DemoArgs, work: &Path, data: &[&str]) -> Result<Vec<(f64, f64, f64, f64)>> {
    let mut points = Vec::new();
    let epochs = args.epochs.to_string();
    for lambda in [3e-5, 1e-4, 3e-4, 1e-3] {
        let l = lambda.to_string();
        let run = work.join(format!("sweep-{l}"));
        train_run(
            &run,
            &["--penalty", "prox", "--lambda", &l, "--epochs", &epochs],
            data,
            "sweep training",
        )?;
        let pruned = work.join(format!("sweep-{l}-pruned"));
        prune_run(
            &run.join("model.safetensors"),
            &pruned,
            &args.sparsity().to_string(),
            &Finetune::of(args),
            data,
            "sweep pruning",
        )?;
        let before = last_metrics(&run)?;
        let after = last_metrics(&pruned)?;
        points.push((lambda, before.0, before.1, after.1));
    }
    Ok(points)
}

/// (zero fraction, test accuracy) of a run's last epoch.
pub fn last_metrics(run: &Path) -> Result<(f64, f64)> {
    let metrics = read_metrics(&RunDir(run.to_path_buf()).metrics())?;
    let last = metrics.last().context("no metrics")?;
    Ok((last.zero_fraction, last.test_accuracy))
}
