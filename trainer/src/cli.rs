//! Command-line interface of the `trainer` binary.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand, ValueEnum};
use model_format::writer::Encoding;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use trainer::data::{Dataset, Split};
use trainer::datasets::{self, BuiltinDataset};
use trainer::eval::{evaluate, layer_stats, EvalResult, LayerStats};
use trainer::export;
use trainer::model::Cnn;
use trainer::optim::{Penalty, Scope};
use trainer::prune::{prune, PruneTarget};
use trainer::train::{train, RunDir, RunOptions, TrainConfig};

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
    Train(TrainArgs),
    /// Zero the smallest weights, then optionally fine-tune with the zeros pinned.
    Prune(PruneArgs),
    /// Test accuracy, per-class accuracy and per-layer sparsity and cost of a model.
    Eval(EvalArgs),
    /// Write a trained or pruned model as a compressed sparse l1sparse file.
    Export(ExportArgs),
    /// Show a sparse file's tensors, encodings and bytes; fails on an invalid file.
    Inspect(InspectArgs),
    /// Write a sparse file back as a plain dense safetensors state dict (PyTorch names).
    Densify(DensifyArgs),
    /// Measure training throughput (images/s) and where a training step's time goes.
    Bench(BenchArgs),
    /// Write flash-slot images of a model and of test images for the firmware, plus the host
    /// engine's logits for those images.
    DeviceFiles(DeviceFilesArgs),
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

#[derive(Args)]
struct DeviceFilesArgs {
    /// The l1sparse file.
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// How many test images (the first N of the test split).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    images: u16,
    /// Output folder: model.slot, inputs.slot, host-logits.json.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// The dense model (model.safetensors of a run).
    model: PathBuf,
    /// The sparse file to write.
    #[arg(long, short, default_value = "model.l1sparse.safetensors")]
    out: PathBuf,
    /// Store every weight matrix in this encoding instead of the smallest.
    #[arg(long, value_enum)]
    encoding: Option<ForcedEncoding>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ForcedEncoding {
    Dense,
    Csr,
}

#[derive(Args)]
struct InspectArgs {
    /// The sparse file.
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DensifyArgs {
    /// The sparse file.
    file: PathBuf,
    /// The dense safetensors file to write.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// A built-in dataset, fetched and cached when missing.
    #[arg(long, value_enum, default_value = "mnist", conflicts_with = "data")]
    dataset: BuiltinDataset,
    /// A folder with train-/t10k- IDX files (raw or .gz) instead of a built-in dataset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where built-in datasets are cached [default: $L1SPARSE_DATA or ./data].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Train on the first N training images only.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_limit: Option<usize>,
}

impl DataArgs {
    fn name(&self) -> String {
        match &self.data {
            Some(dir) => dir.display().to_string(),
            None => self.dataset.name().to_string(),
        }
    }

    fn dir(&self) -> Result<PathBuf> {
        match &self.data {
            Some(dir) => Ok(dir.clone()),
            None => datasets::ensure(
                self.dataset,
                &self
                    .cache_dir
                    .clone()
                    .unwrap_or_else(datasets::default_cache_dir),
            ),
        }
    }

    fn load(&self, split: Split) -> Result<Dataset> {
        let data = Dataset::load_split(&self.dir()?, split)?;
        let limit = match split {
            Split::Train => self.limit,
            Split::Test => self.test_limit,
        };
        Ok(limit.map_or(data.clone(), |n| data.truncated(n)))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PenaltyMode {
    /// No penalty: the dense baseline.
    None,
    /// λ·Σ|w| added to the loss (the recipe as written).
    L1,
    /// Proximal soft-threshold after each Adam step: leaves exact zeros.
    Prox,
}

#[derive(Args, Clone)]
struct OptimArgs {
    /// Epochs over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint every N steps besides each epoch's end.
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
}

impl OptimArgs {
    fn config(&self, penalty: Penalty, freeze_zeros: bool) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            penalty,
            seed: self.seed,
            freeze_zeros,
        }
    }

    fn run_options(&self) -> RunOptions {
        RunOptions {
            checkpoint_every: Some(self.checkpoint_every),
            resume: self.resume,
            progress: std::io::stderr().is_terminal(),
            stop_after_step: None,
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    optim: OptimArgs,
    #[command(flatten)]
    penalty: PenaltyArgs,
    /// Run folder: checkpoint.safetensors, metrics.jsonl, model.safetensors.
    #[arg(long, short, default_value = "runs/train")]
    out: PathBuf,
}

#[derive(Args)]
struct PruneArgs {
    /// The trained model (model.safetensors of a run).
    #[arg(long)]
    model: PathBuf,
    /// Fraction of weights to zero (biases are kept).
    #[arg(long, default_value_t = 0.991, conflicts_with = "threshold")]
    sparsity: f64,
    /// Zero weights with |w| ≤ this instead of a target sparsity.
    #[arg(long)]
    threshold: Option<f32>,
    /// Rank weights within each layer instead of over the whole network.
    #[arg(long)]
    per_layer: bool,
    /// Epochs of masked fine-tuning after pruning (pruned weights stay exactly zero).
    #[arg(long, default_value_t = 3)]
    finetune_epochs: usize,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    optim: OptimArgs,
    /// Run folder: pruned.safetensors, then the fine-tune's checkpoint, metrics and model.
    #[arg(long, short, default_value = "runs/pruned")]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    /// The model to evaluate: a dense model (candle) or an l1sparse file (the firmware's engine).
    model: PathBuf,
    /// For an l1sparse file, also run the candle model on its weights and report agreement.
    #[arg(long)]
    compare_candle: bool,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => run_train(args),
        Command::Prune(args) => run_prune(args),
        Command::Eval(args) => run_eval(args),
        Command::Export(args) => run_export(args),
        Command::Inspect(args) => run_inspect(args),
        Command::Densify(args) => run_densify(args),
        Command::DeviceFiles(args) => run_device_files(args),
        Command::Bench(args) => run_bench(args),
    }
}

#[derive(Args)]
struct PenaltyArgs {
    /// How the L1 penalty is applied.
    #[arg(long, value_enum, default_value = "prox")]
    penalty: PenaltyMode,
    /// L1 strength λ.
    #[arg(long, default_value_t = 1e-4)]
    lambda: f64,
    /// Which parameters the penalty covers.
    #[arg(long, value_enum, default_value = "weights")]
    l1_scope: Scope,
}

impl PenaltyArgs {
    fn penalty(&self) -> Result<Penalty> {
        let (lambda, scope) = (self.lambda, self.l1_scope);
        if !(lambda.is_finite() && lambda >= 0.0) {
            bail!("--lambda must be a finite number ≥ 0, got {lambda}");
        }
        Ok(match self.penalty {
            PenaltyMode::None => Penalty::None,
            PenaltyMode::L1 => Penalty::L1 { lambda, scope },
            PenaltyMode::Prox => Penalty::Prox { lambda, scope },
        })
    }
}

fn provenance(
    data: &DataArgs,
    cfg: &TrainConfig,
    accuracy: Option<f64>,
) -> Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    meta.insert("kind".into(), "l1sparse-dense-model".into());
    meta.insert("dataset".into(), data.name());
    meta.insert("training".into(), serde_json::to_string(cfg)?);
    if let Some(acc) = accuracy {
        meta.insert("test_accuracy".into(), format!("{acc:.6}"));
    }
    Ok(meta)
}

/// Trains `model` into `out` and saves `out/model.safetensors`.
fn train_and_save(
    model: &Cnn,
    cfg: &TrainConfig,
    data: &DataArgs,
    optim: &OptimArgs,
    out: &std::path::Path,
) -> Result<()> {
    let train_set = data.load(Split::Train)?;
    let test_set = data.load(Split::Test)?;
    eprintln!(
        "training on {} images of {}, testing on {}; run folder {}",
        train_set.len(),
        data.name(),
        test_set.len(),
        out.display()
    );
    let run = RunDir(out.to_path_buf());
    let metrics = train(
        model,
        cfg,
        &train_set,
        &test_set,
        &run,
        &optim.run_options(),
    )?
    .context("training stopped early")?;
    let accuracy = metrics.last().map(|m| m.test_accuracy);
    model.save(&run.model(), &provenance(data, cfg, accuracy)?)?;
    eprintln!("saved {}", run.model().display());
    Ok(())
}

fn run_train(args: TrainArgs) -> Result<()> {
    let penalty = args.penalty.penalty()?;
    let cfg = args.optim.config(penalty, false);
    let model = Cnn::new_seeded(cfg.seed, &Device::Cpu)?;
    train_and_save(&model, &cfg, &args.data, &args.optim, &args.out)
}

fn run_prune(args: PruneArgs) -> Result<()> {
    let target = match args.threshold {
        Some(t) if t.is_finite() && t >= 0.0 => PruneTarget::Threshold(t),
        Some(t) => bail!("--threshold must be a finite number ≥ 0, got {t}"),
        None if (0.0..=1.0).contains(&args.sparsity) => PruneTarget::Sparsity {
            fraction: args.sparsity,
            per_layer: args.per_layer,
        },
        None => bail!("--sparsity must be within 0..=1, got {}", args.sparsity),
    };
    let (model, mut meta) = Cnn::load(&args.model, &Device::Cpu)?;
    let run = RunDir(args.out.clone());
    let pruned_path = args.out.join("pruned.safetensors");
    let model = if args.optim.resume && pruned_path.is_file() {
        Cnn::load(&pruned_path, &Device::Cpu)?.0
    } else {
        let mut params = model.to_vecs()?;
        let zeros = prune(&mut params, target);
        eprintln!("pruned to {zeros} zero weights");
        let pruned = model.with_values(params)?;
        meta.insert("pruned_from".into(), args.model.display().to_string());
        pruned.save(&pruned_path, &meta)?;
        pruned
    };
    if args.finetune_epochs == 0 {
        std::fs::copy(&pruned_path, run.model())?;
        return Ok(());
    }
    let mut optim = args.optim.clone();
    optim.epochs = args.finetune_epochs;
    let cfg = optim.config(Penalty::None, true);
    train_and_save(&model, &cfg, &args.data, &optim, &args.out)
}

fn is_sparse_file(path: &std::path::Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let format = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    Ok(format.as_deref() == Some(model_format::FORMAT_NAME))
}

fn run_eval(args: EvalArgs) -> Result<()> {
    if is_sparse_file(&args.model)? {
        return run_eval_sparse(args);
    }
    let (model, meta) = Cnn::load(&args.model, &Device::Cpu)?;
    let test_set = args.data.load(Split::Test)?;
    let result = evaluate(&model, &test_set)?;
    let layers = layer_stats(&model.to_vecs()?);
    if args.json {
        let json = serde_json::json!({
            "model": args.model,
            "dataset": args.data.name(),
            "test_images": test_set.len(),
            "accuracy": result.accuracy(),
            "per_class_accuracy": (0..10).map(|c| result.class_accuracy(c)).collect::<Vec<_>>(),
            "layers": layers,
            "metadata": meta,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_eval(&args, &test_set, &result, &layers);
    }
    Ok(())
}

fn print_eval(args: &EvalArgs, test_set: &Dataset, result: &EvalResult, layers: &[LayerStats]) {
    println!(
        "model {}  on {} ({} test images)",
        args.model.display(),
        args.data.name(),
        test_set.len()
    );
    println!("test accuracy {:.4}", result.accuracy());
    let per_class: Vec<String> = (0..10)
        .map(|c| format!("{c}:{:.3}", result.class_accuracy(c)))
        .collect();
    println!("per class     {}", per_class.join(" "));
    println!();
    println!(
        "{:<6} {:>10} {:>12} {:>9} {:>12} {:>12}",
        "layer", "params", "exact zeros", "density", "dense MACs", "sparse MACs"
    );
    let mut total = (0, 0, 0u64, 0u64);
    for l in layers {
        println!(
            "{:<6} {:>10} {:>12} {:>8.2}% {:>12} {:>12}",
            l.layer,
            l.parameters,
            l.exact_zeros,
            100.0 * l.density,
            l.dense_macs,
            l.sparse_macs
        );
        total = (
            total.0 + l.parameters,
            total.1 + l.exact_zeros,
            total.2 + l.dense_macs,
            total.3 + l.sparse_macs,
        );
    }
    println!(
        "{:<6} {:>10} {:>12} {:>8.2}% {:>12} {:>12}",
        "total",
        total.0,
        total.1,
        100.0 * (1.0 - total.1 as f64 / total.0.max(1) as f64),
        total.2,
        total.3
    );
}

fn run_export(args: ExportArgs) -> Result<()> {
    let (model, meta) = Cnn::load(&args.model, &Device::Cpu)?;
    let encoding = match args.encoding {
        None => Encoding::Smallest,
        Some(ForcedEncoding::Dense) => Encoding::Dense,
        Some(ForcedEncoding::Csr) => Encoding::Csr,
    };
    let source = args.model.display().to_string();
    let bytes = export::export_bytes(
        &model,
        &export::provenance(&model, &meta, &source)?,
        encoding,
    )?;
    trainer::tensor_file::write_atomically(&args.out, &bytes)?;
    let report = export::inspect(&export::read_model_file(&args.out)?)?;
    eprintln!(
        "wrote {}: {} bytes ({:.1}x smaller than {} bytes of dense f32)",
        args.out.display(),
        report.file_bytes,
        report.compression,
        report.dense_f32_bytes
    );
    Ok(())
}

fn run_inspect(args: InspectArgs) -> Result<()> {
    let bytes = export::read_model_file(&args.file)?;
    let report = export::inspect(&bytes)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", args.file.display());
    println!(
        "{:<22} {:<6} {:<5} {:>12} {:>9} {:>9}",
        "tensor", "enc", "dtype", "shape", "non-zero", "bytes"
    );
    for t in &report.tensors {
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        println!(
            "{:<22} {:<6} {:<5} {:>12} {:>9} {:>9}",
            t.tensor, t.encoding, t.dtype, shape, t.nonzeros, t.bytes
        );
    }
    println!(
        "file {} bytes (header {}, data {}); dense f32 {} bytes: {:.1}x smaller",
        report.file_bytes,
        report.header_bytes,
        report.data_bytes,
        report.dense_f32_bytes,
        report.compression
    );
    println!(
        "{} of {} parameters non-zero ({:.2}% zero); {:.2} file bytes per non-zero",
        report.nonzeros,
        report.parameters,
        100.0 * (1.0 - report.nonzeros as f64 / report.parameters as f64),
        report.bytes_per_nonzero
    );
    Ok(())
}

fn run_densify(args: DensifyArgs) -> Result<()> {
    let bytes = export::read_model_file(&args.file)?;
    let tensors = export::densify(&bytes)?;
    let mut meta = BTreeMap::new();
    meta.insert("kind".into(), "l1sparse-dense-model".into());
    meta.insert("densified_from".into(), args.file.display().to_string());
    trainer::tensor_file::save(&args.out, &tensors, &meta)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn run_eval_sparse(args: EvalArgs) -> Result<()> {
    let bytes = export::read_model_file(&args.model)?;
    let test_set = args.data.load(Split::Test)?;
    let run = trainer::engine_eval::run_engine(&bytes, &test_set)?;
    let dense = export::densify(&bytes)?;
    let params: Vec<(String, Vec<f32>)> = dense
        .iter()
        .map(|t| (t.name.clone(), t.values.clone()))
        .collect();
    let mut layers = layer_stats(&params);
    for (l, &macs) in layers.iter_mut().zip(&run.layer_macs) {
        l.sparse_macs = macs;
    }
    let agreement = if args.compare_candle {
        let model = Cnn::from_named(&dense, &Device::Cpu)?;
        Some(trainer::engine_eval::compare_with_candle(
            &model, &test_set, &run,
        )?)
    } else {
        None
    };
    let info = export::inspect(&bytes)?;
    if args.json {
        let json = serde_json::json!({
            "model": args.model,
            "engine": "sparse-engine",
            "dataset": args.data.name(),
            "test_images": test_set.len(),
            "accuracy": run.result.accuracy(),
            "per_class_accuracy": (0..10).map(|c| run.result.class_accuracy(c)).collect::<Vec<_>>(),
            "layers": layers,
            "engine_macs_per_layer": run.layer_macs,
            "activation_buffer_bytes": run.buffer_bytes,
            "file_bytes": info.file_bytes,
            "candle_agreement": agreement,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "(sparse file, evaluated with the firmware's engine; sparse MACs are those it performed)"
    );
    print_eval(&args, &test_set, &run.result, &layers);
    if let Some(a) = agreement {
        println!(
            "candle agreement: {}/{} same predictions, max |logit difference| {:.3e}",
            a.same_prediction, a.images, a.max_abs_logit_diff
        );
    }
    Ok(())
}

fn run_device_files(args: DeviceFilesArgs) -> Result<()> {
    use model_format::batch::Batch;
    use model_format::slot::{slot_image, SlotKind};
    let bytes = export::read_model_file(&args.model)?;
    let test_set = args
        .data
        .load(Split::Test)?
        .truncated(usize::from(args.images));
    let run = trainer::engine_eval::run_engine(&bytes, &test_set)?;
    let images: Vec<&[u8]> = (0..test_set.len()).map(|i| test_set.image(i)).collect();
    let batch = Batch::encode(trainer::data::PIXELS, &images, &test_set.labels);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, data: &[u8]| {
        trainer::tensor_file::write_atomically(&args.out.join(name), data)
    };
    write("model.slot", &slot_image(&bytes, SlotKind::Model))?;
    write("inputs.slot", &slot_image(&batch, SlotKind::Batch))?;
    let logits: Vec<Vec<String>> = run
        .logits
        .chunks_exact(run.classes)
        .map(|l| l.iter().map(|v| format!("{:08x}", v.to_bits())).collect())
        .collect();
    let json = serde_json::json!({
        "images": test_set.len(),
        "labels": test_set.labels,
        "logit_bits": logits,
        "layer_macs": run.layer_macs,
        "model_bytes": bytes.len(),
    });
    write(
        "host-logits.json",
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    eprintln!(
        "wrote model.slot, inputs.slot, host-logits.json to {}",
        args.out.display()
    );
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    let train_set = args.data.load(Split::Train)?;
    let penalty = args.penalty.penalty()?;
    let report = trainer::bench::bench(&train_set, args.batch_size, args.steps, &penalty)?;
    let profile = if args.profile {
        trainer::bench::profile(&train_set, args.batch_size, 10)?
    } else {
        Vec::new()
    };
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["profile_ms"] = serde_json::to_value(&profile)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "{} steps of {} images: {:.1} images/s ({} threads)",
            report.steps, report.batch_size, report.images_per_second, report.threads
        );
        for (phase, ms) in &report.milliseconds_per_step {
            println!("  {phase:<38} {ms:>8.2} ms/step");
        }
        if !profile.is_empty() {
            println!("each operation on its own:");
            for (op, ms) in &profile {
                println!("  {op:<52} {ms:>8.2} ms");
            }
        }
    }
    Ok(())
}
