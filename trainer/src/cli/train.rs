//! `trainer train` and `trainer prune`.

use super::args::{DataArgs, OptimArgs, PenaltyArgs};
use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use model_format::NetworkDef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trainer::data::{Dataset, Split};
use trainer::model::Cnn;
use trainer::pipeline;
use trainer::prune::{GradualPrune, PruneTarget};
use trainer::train::optim::Penalty;
use trainer::train::{RunDir, TrainConfig};

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    optim: OptimArgs,
    #[command(flatten)]
    penalty: PenaltyArgs,
    /// The network, in the model file's `layers` syntax (`name:kind:inputs:outputs,...`, see
    /// model-format/SPEC.md §3) on 1x28x28 inputs [default: the recipe's CNN].
    #[arg(long, value_parser = parse_arch)]
    arch: Option<NetworkDef>,
    /// Run folder: checkpoint.safetensors, metrics.jsonl, model.safetensors.
    #[arg(long, short, default_value = "runs/train")]
    out: PathBuf,
}

pub(super) fn parse_arch(layers: &str) -> Result<NetworkDef, String> {
    NetworkDef::parse("1x28x28", layers).map_err(|e| format!("{e}"))
}

#[derive(Args)]
pub struct PruneArgs {
    /// The trained model (model.safetensors of a run).
    #[arg(long)]
    model: PathBuf,
    /// Fraction of weights to zero (biases are kept).
    #[arg(long, default_value_t = pipeline::SPARSITY, conflicts_with = "threshold")]
    sparsity: f64,
    /// Zero weights with |w| ≤ this instead of a target sparsity.
    #[arg(long)]
    threshold: Option<f32>,
    /// Rank weights within each layer instead of over the whole network.
    #[arg(long)]
    per_layer: bool,
    /// Rank weights by |w| / MACs^this, MACs being what a weight costs per inference (a tap
    /// of the recipe's conv1 about 784, of conv2 196, a linear weight 1): conv weights go
    /// first at equal magnitude, so the zeros save more compute. 0: by magnitude alone.
    #[arg(long, default_value_t = pipeline::MAC_EXPONENT, conflicts_with = "threshold")]
    mac_exponent: f64,
    /// Epochs of masked fine-tuning after pruning (pruned weights stay exactly zero).
    #[arg(long, default_value_t = pipeline::FINETUNE_EPOCHS)]
    finetune_epochs: usize,
    /// Prune gradually over the fine-tune's first N epochs (cubic ramp from the model's own
    /// zeros to --sparsity, Zhu & Gupta 2017) instead of at once before it; 0: at once.
    #[arg(long, default_value_t = pipeline::GRADUAL_EPOCHS, conflicts_with = "threshold")]
    gradual_epochs: usize,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    optim: OptimArgs,
    /// Run folder: pruned.safetensors, then the fine-tune's checkpoint, metrics and model.
    #[arg(long, short, default_value = "runs/pruned")]
    out: PathBuf,
}

/// Trains `model` into `out` and saves `out/model.safetensors`.
fn train_and_save(
    model: &Cnn,
    cfg: &TrainConfig,
    (data, train_set, test_set): (&DataArgs, &Dataset, &Dataset),
    optim: &OptimArgs,
    out: &Path,
    mut provenance: BTreeMap<String, String>,
) -> Result<()> {
    eprintln!(
        "training {} on {} images of {}, testing on {}; run folder {}",
        model.network(),
        train_set.len(),
        data.name(),
        test_set.len(),
        out.display()
    );
    let run = RunDir(out.to_path_buf());
    provenance.insert("dataset".into(), data.name());
    pipeline::train_and_save(
        model,
        cfg,
        (train_set, test_set),
        &run,
        &optim.run_options(),
        provenance,
    )?;
    eprintln!("saved {}", run.model().display());
    Ok(())
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    let (train_set, test_set) = (args.data.load(Split::Train)?, args.data.load(Split::Test)?);
    let penalty = args.penalty.penalty(train_set.len())?;
    let cfg = args.optim.config(penalty, false, pipeline::TRAIN_SCHEDULE);
    let network = args.arch.unwrap_or_else(NetworkDef::recipe);
    let model = Cnn::seeded(&network, cfg.seed, &Device::Cpu)?;
    train_and_save(
        &model,
        &cfg,
        (&args.data, &train_set, &test_set),
        &args.optim,
        &args.out,
        BTreeMap::new(),
    )
}

fn prune_target(args: &PruneArgs) -> Result<PruneTarget> {
    Ok(match args.threshold {
        Some(t) if t.is_finite() && t >= 0.0 => PruneTarget::Threshold(t),
        Some(t) => bail!("--threshold must be a finite number ≥ 0, got {t}"),
        None if (0.0..=1.0).contains(&args.sparsity) => PruneTarget::Sparsity {
            fraction: args.sparsity,
            per_layer: args.per_layer,
        },
        None => bail!("--sparsity must be within 0..=1, got {}", args.sparsity),
    })
}

pub fn run_prune(args: PruneArgs) -> Result<()> {
    let target = prune_target(&args)?;
    if !(args.mac_exponent.is_finite() && args.mac_exponent >= 0.0) {
        bail!(
            "--mac-exponent must be a finite number ≥ 0, got {}",
            args.mac_exponent
        );
    }
    if args.gradual_epochs > 0 && args.gradual_epochs >= args.finetune_epochs {
        bail!(
            "--gradual-epochs ({}) must be fewer than --finetune-epochs ({}): the last epochs \
             fine-tune the final mask",
            args.gradual_epochs,
            args.finetune_epochs
        );
    }
    let (model, mut meta) = Cnn::load(&args.model, &Device::Cpu)?;
    let gradual = gradual(&args, &model)?;
    let run = RunDir(args.out.clone());
    // The fine-tune's starting point: pruned at once, or as it is when pruning gradually.
    let pruned_path = args.out.join("pruned.safetensors");
    let model = if args.optim.resume && pruned_path.is_file() {
        Cnn::load(&pruned_path, &Device::Cpu)?.0
    } else {
        let pruned = match gradual {
            Some(_) => model,
            None => {
                let (pruned, zeros) = pipeline::pruned(&model, target, args.mac_exponent)?;
                eprintln!("pruned to {zeros} zero weights");
                pruned
            }
        };
        meta.insert("pruned_from".into(), super::args::recorded(&args.model));
        pruned.save(&pruned_path, &meta)?;
        pruned
    };
    if args.finetune_epochs == 0 {
        std::fs::copy(&pruned_path, run.model())?;
        return Ok(());
    }
    let mut optim = args.optim.clone();
    optim.epochs = args.finetune_epochs;
    let mut cfg = optim.config(Penalty::None, true, pipeline::FINETUNE_SCHEDULE);
    cfg.gradual = gradual;
    let (train_set, test_set) = (args.data.load(Split::Train)?, args.data.load(Split::Test)?);
    let data = (&args.data, &train_set, &test_set);
    train_and_save(&model, &cfg, data, &optim, &args.out, BTreeMap::new())
}

/// The gradual pruning `--gradual-epochs` asks for, from the model's own zero fraction.
fn gradual(args: &PruneArgs, model: &Cnn) -> Result<Option<GradualPrune>> {
    if args.gradual_epochs == 0 {
        return Ok(None);
    }
    let (zeros, total) = trainer::eval::count_weight_zeros(model)?;
    Ok(Some(GradualPrune {
        from: zeros as f64 / total.max(1) as f64,
        to: args.sparsity,
        ramp_epochs: args.gradual_epochs,
        per_layer: args.per_layer,
        mac_exponent: args.mac_exponent,
    }))
}
