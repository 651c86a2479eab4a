//! Options shared by several subcommands: the data, the optimizer, the penalty.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use trainer::data::datasets::{self, BuiltinDataset};
use trainer::data::{Dataset, Split};
use trainer::pipeline;
use trainer::train::optim::{LrSchedule, Penalty, Scope};
use trainer::train::{RunOptions, TrainConfig};

/// A path as a file's provenance records it: relative to the current directory when it lies
/// under it (so the same run gives the same bytes in any checkout), as given otherwise.
pub fn recorded(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|here| path.strip_prefix(here).ok().map(Path::to_path_buf));
    relative.as_deref().unwrap_or(path).display().to_string()
}

#[derive(Args, Clone)]
pub struct DataArgs {
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
    pub test_limit: Option<usize>,
}

impl DataArgs {
    pub fn name(&self) -> String {
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

    pub fn load(&self, split: Split) -> Result<Dataset> {
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
pub struct OptimArgs {
    /// Epochs over the training set (at least 1).
    #[arg(long, default_value_t = pipeline::EPOCHS, value_parser = at_least_one)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// How the learning rate moves over the run [default: constant for `train`, the fine-tune's
    /// schedule of the main job for `prune`].
    #[arg(long, value_enum)]
    lr_schedule: Option<LrSchedule>,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every N steps besides each epoch's end.
    #[arg(long, default_value_t = pipeline::CHECKPOINT_EVERY)]
    checkpoint_every: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
}

/// A count that must be positive (`--epochs 0` would save an untrained model without a word).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl OptimArgs {
    /// The run's configuration; `schedule` unless `--lr-schedule` says otherwise.
    pub fn config(
        &self,
        penalty: Penalty,
        freeze_zeros: bool,
        schedule: LrSchedule,
    ) -> TrainConfig {
        TrainConfig {
            lr_schedule: self.lr_schedule.unwrap_or(schedule),
            epochs: self.epochs,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            penalty,
            seed: self.seed,
            freeze_zeros,
            gradual: None,
        }
    }

    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            checkpoint_every: Some(self.checkpoint_every),
            resume: self.resume,
            progress: std::io::stderr().is_terminal(),
            stop_after_step: None,
        }
    }
}

#[derive(Args)]
pub struct PenaltyArgs {
    /// How the L1 penalty is applied.
    #[arg(long, value_enum, default_value = "prox")]
    penalty: PenaltyMode,
    /// L1 strength λ [default: by the training set's size, `pipeline::lambda_for`: 1e-4 up to
    /// 8,000 images, less above].
    #[arg(long)]
    lambda: Option<f64>,
    /// Which parameters the penalty covers.
    #[arg(long, value_enum, default_value = "weights")]
    l1_scope: Scope,
}

impl PenaltyArgs {
    /// The penalty for a training set of `train_images`.
    pub fn penalty(&self, train_images: usize) -> Result<Penalty> {
        let lambda = self
            .lambda
            .unwrap_or_else(|| pipeline::lambda_for(train_images));
        let scope = self.l1_scope;
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

#[cfg(test)]
mod tests {
    use super::recorded;
    use std::path::Path;

    /// Paths under the current directory are recorded relative to it, others as given.
    #[test]
    fn provenance_paths_do_not_depend_on_the_checkout() {
        let here = std::env::current_dir().unwrap();
        let inside = here.join("runs").join("m.safetensors");
        assert_eq!(
            recorded(&inside),
            Path::new("runs")
                .join("m.safetensors")
                .display()
                .to_string()
        );
        assert_eq!(
            recorded(Path::new("runs/m.safetensors")),
            "runs/m.safetensors"
        );
        let outside = Path::new("/nowhere-near/m.safetensors");
        assert_eq!(recorded(outside), "/nowhere-near/m.safetensors");
    }
}
