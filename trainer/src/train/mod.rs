//! The training loop: mini-batch Adam with an L1 penalty, per-epoch metrics, checkpoints and
//! exact resume.
//!
//! Everything random is derived from the seed (initialisation, and each epoch's shuffle from
//! `(seed, epoch)`), and a checkpoint holds the parameters, Adam's moments, masks and the position
//! in the epoch, so a resumed run ends with the same weights as one that was never interrupted.

pub mod optim;

use crate::data::Dataset;
use crate::eval::{count_zeros, evaluate};
use crate::model::tensor_file::{self, NamedTensor};
use crate::model::{is_weight, Cnn};
use crate::prune::{prune_ranked, GradualPrune, Ranking};
use crate::train::optim::{Adam, LrSchedule, Penalty};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to train and how; a checkpoint only resumes a run with the same configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub penalty: Penalty,
    pub seed: u64,
    /// Pin weights that are exactly zero at the start at zero (masked fine-tuning after pruning).
    pub freeze_zeros: bool,
    /// The learning rate over the run (`lr` is where it starts). Configurations saved before
    /// schedules existed read as constant.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Prune gradually while training (with `freeze_zeros`: what is cut stays zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradual: Option<GradualPrune>,
}

impl TrainConfig {
    /// The reference recipe: Adam lr 1e-3, batch 64.
    pub fn recipe(epochs: usize, penalty: Penalty, seed: u64) -> Self {
        TrainConfig {
            epochs,
            batch_size: 64,
            lr: 1e-3,
            penalty,
            seed,
            freeze_zeros: false,
            lr_schedule: LrSchedule::Constant,
            gradual: None,
        }
    }
}

/// How a run behaves, without changing what it computes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Save a checkpoint every this many optimizer steps (besides each epoch's end).
    pub checkpoint_every: Option<u64>,
    /// Continue from the run folder's checkpoint.
    pub resume: bool,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Stop right after this global step, as if killed (for testing resume).
    pub stop_after_step: Option<u64>,
}

/// The files of one training run.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn model(&self) -> PathBuf {
        self.0.join("model.safetensors")
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub exact_zeros: usize,
    pub parameters: usize,
    pub zero_fraction: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Where a run stands; what a checkpoint saves besides tensors.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Progress {
    epochs_done: usize,
    step_in_epoch: usize,
    loss_sum: f64,
    correct: u64,
    seen: u64,
    seconds: f64,
}

/// The order of the training samples in `epoch`: a function of the seed and the epoch only.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Masks for masked training: 1 where a weight is non-zero, 0 where it is exactly zero.
pub fn zero_masks(model: &Cnn) -> Result<Vec<Option<Tensor>>> {
    model
        .params()
        .iter()
        .map(|(name, var)| {
            if is_weight(name) {
                Ok(Some(var.as_tensor().ne(0f32)?))
            } else {
                Ok(None)
            }
        })
        .collect()
}

struct TrainState {
    adam: Adam,
    masks: Vec<Option<Tensor>>,
    progress: Progress,
}

/// Trains `model` in place. Returns `Ok(None)` when stopped early by `stop_after_step`.
pub fn train(
    model: &Cnn,
    cfg: &TrainConfig,
    train_set: &Dataset,
    test_set: &Dataset,
    run: &RunDir,
    opts: &RunOptions,
) -> Result<Option<Vec<EpochMetrics>>> {
    if train_set.is_empty() || cfg.batch_size == 0 {
        bail!(
            "nothing to train on: {} samples, batch size {}",
            train_set.len(),
            cfg.batch_size
        );
    }
    let mut state = start_or_resume(model, cfg, run, opts)?;
    let n = train_set.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let ranking = match cfg.gradual {
        Some(g) => Ranking::per_mac(model.network(), g.mac_exponent)?,
        None => Ranking::magnitude(),
    };
    let mut all_metrics = read_metrics(&run.metrics())?;
    while state.progress.epochs_done < cfg.epochs {
        let epoch = state.progress.epochs_done;
        let order = epoch_order(cfg.seed, epoch, n);
        let bar = progress_bar(opts.progress, steps_per_epoch, epoch, cfg.epochs);
        bar.set_position(state.progress.step_in_epoch as u64);
        let mut started = Instant::now();
        let mut seconds_before = state.progress.seconds;
        while state.progress.step_in_epoch < steps_per_epoch {
            let step = state.progress.step_in_epoch;
            let batch = &order[step * cfg.batch_size..((step + 1) * cfg.batch_size).min(n)];
            let total = (cfg.epochs * steps_per_epoch) as u64;
            state.adam.lr = cfg.lr * cfg.lr_schedule.factor(state.adam.step, total);
            if let Some(target) = cfg
                .gradual
                .and_then(|g| g.cut_at(state.adam.step, steps_per_epoch as u64))
            {
                cut(model, target, &ranking, &mut state)?;
            }
            train_step(model, cfg, train_set, batch, &mut state)?;
            let p = &state.progress;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.3}",
                p.loss_sum / p.seen as f64,
                p.correct as f64 / p.seen as f64
            ));
            let global_step = state.adam.step;
            let at_end = p.step_in_epoch == steps_per_epoch;
            if !at_end
                && opts
                    .checkpoint_every
                    .is_some_and(|k| k > 0 && global_step % k == 0)
            {
                state.progress.seconds = seconds_before + started.elapsed().as_secs_f64();
                save_checkpoint(model, cfg, &state, &run.checkpoint())?;
                (started, seconds_before) = (Instant::now(), state.progress.seconds);
            }
            if opts.stop_after_step == Some(global_step) {
                bar.abandon();
                return Ok(None);
            }
        }
        bar.finish_and_clear();
        state.progress.seconds = seconds_before + started.elapsed().as_secs_f64();
        let metrics = end_epoch(model, cfg, test_set, &state.progress)?;
        append_metrics(&run.metrics(), &metrics)?;
        all_metrics.push(metrics);
        state.progress = Progress {
            epochs_done: epoch + 1,
            ..Progress::default()
        };
        save_checkpoint(model, cfg, &state, &run.checkpoint())?;
    }
    Ok(Some(all_metrics))
}

/// The state of a new run (its folder created), or of the run in the folder's checkpoint.
fn start_or_resume(
    model: &Cnn,
    cfg: &TrainConfig,
    run: &RunDir,
    opts: &RunOptions,
) -> Result<TrainState> {
    if opts.resume && run.checkpoint().is_file() {
        let state = load_checkpoint(model, cfg, &run.checkpoint())?;
        eprintln!(
            "resuming {} at epoch {} step {}",
            run.0.display(),
            state.progress.epochs_done + 1,
            state.progress.step_in_epoch
        );
        truncate_metrics(&run.metrics(), state.progress.epochs_done)?;
        return Ok(state);
    }
    if run.checkpoint().exists() {
        bail!(
            "{} already holds a checkpoint: pass --resume to continue that run, or choose \
             another output folder",
            run.0.display()
        );
    }
    std::fs::create_dir_all(&run.0).with_context(|| format!("creating {}", run.0.display()))?;
    std::fs::write(run.metrics(), b"")?;
    Ok(TrainState {
        adam: Adam::new(model, cfg.lr)?,
        masks: if cfg.freeze_zeros {
            zero_masks(model)?
        } else {
            vec![None; model.params().len()]
        },
        progress: Progress::default(),
    })
}

/// Prunes `model` in place to `target` and pins what is zero from now on.
fn cut(
    model: &Cnn,
    target: crate::prune::PruneTarget,
    ranking: &Ranking,
    state: &mut TrainState,
) -> Result<()> {
    let mut values = model.to_vecs()?;
    prune_ranked(&mut values, target, ranking);
    model.set_values(&values)?;
    state.masks = zero_masks(model)?;
    Ok(())
}

/// One optimizer step on the samples `batch`, counted in `state.progress`.
fn train_step(
    model: &Cnn,
    cfg: &TrainConfig,
    train_set: &Dataset,
    batch: &[usize],
    state: &mut TrainState,
) -> Result<()> {
    let (x, y) = train_set.batch(batch, &Device::Cpu)?;
    let logits = model.forward(&x)?;
    let ce = candle_nn::loss::cross_entropy(&logits, &y)?;
    let loss = match cfg.penalty.loss_term(model)? {
        Some(l1) => (&ce + l1)?,
        None => ce,
    };
    let grads = loss.backward()?;
    state.adam.step(model, &grads, &cfg.penalty, &state.masks)?;
    let p = &mut state.progress;
    p.loss_sum += f64::from(loss.to_scalar::<f32>()?) * batch.len() as f64;
    p.correct += logits
        .argmax(1)?
        .eq(&y)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64;
    p.seen += batch.len() as u64;
    p.step_in_epoch += 1;
    Ok(())
}

/// The finished epoch's metrics (test accuracy, exact zeros), also printed.
fn end_epoch(
    model: &Cnn,
    cfg: &TrainConfig,
    test_set: &Dataset,
    p: &Progress,
) -> Result<EpochMetrics> {
    let test = evaluate(model, test_set)?;
    let (zeros, total) = count_zeros(model)?;
    let metrics = EpochMetrics {
        epoch: p.epochs_done + 1,
        train_loss: p.loss_sum / p.seen as f64,
        train_accuracy: p.correct as f64 / p.seen as f64,
        test_accuracy: test.accuracy(),
        exact_zeros: zeros,
        parameters: total,
        zero_fraction: zeros as f64 / total as f64,
        seconds: p.seconds,
        images_per_second: p.seen as f64 / p.seconds.max(1e-9),
    };
    eprintln!(
        "epoch {:>2}/{}: loss {:.4} train acc {:.4} test acc {:.4} exact zeros {:.2}% ({:.0} img/s)",
        metrics.epoch,
        cfg.epochs,
        metrics.train_loss,
        metrics.train_accuracy,
        metrics.test_accuracy,
        100.0 * metrics.zero_fraction,
        metrics.images_per_second
    );
    Ok(metrics)
}

fn progress_bar(show: bool, steps: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

fn append_metrics(path: &Path, metrics: &EpochMetrics) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(metrics)?)?;
    Ok(())
}

/// Reads `metrics.jsonl` (missing file: no epochs yet).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| format!("{}: bad line {l}", path.display()))
        })
        .collect()
}

/// Drops metric lines of epochs the checkpoint does not contain (written after it was saved).
fn truncate_metrics(path: &Path, epochs_done: usize) -> Result<()> {
    let kept: Vec<EpochMetrics> = read_metrics(path)?
        .into_iter()
        .filter(|m| m.epoch <= epochs_done)
        .collect();
    let mut text = String::new();
    for m in &kept {
        text.push_str(&serde_json::to_string(m)?);
        text.push('\n');
    }
    tensor_file::write_atomically(path, text.as_bytes())
}

const MOMENT1: &str = "adam.m.";
const MOMENT2: &str = "adam.v.";
const MASK: &str = "mask.";

fn tensor_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

fn save_checkpoint(model: &Cnn, cfg: &TrainConfig, state: &TrainState, path: &Path) -> Result<()> {
    let mut tensors = model.to_named()?;
    for (i, (name, var)) in model.params().iter().enumerate() {
        let shape = var.dims().to_vec();
        let mut push = |prefix: &str, t: &Tensor| -> Result<()> {
            tensors.push(NamedTensor {
                name: format!("{prefix}{name}"),
                shape: shape.clone(),
                values: tensor_values(t)?,
            });
            Ok(())
        };
        push(MOMENT1, &state.adam.first_moments[i])?;
        push(MOMENT2, &state.adam.second_moments[i])?;
        if let Some(mask) = &state.masks[i] {
            push(MASK, mask)?;
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("kind".into(), "l1sparse-checkpoint".into());
    meta.insert("config".into(), serde_json::to_string(cfg)?);
    meta.insert("progress".into(), serde_json::to_string(&state.progress)?);
    meta.insert("adam_step".into(), state.adam.step.to_string());
    tensor_file::save(path, &tensors, &meta)
}

fn load_checkpoint(model: &Cnn, cfg: &TrainConfig, path: &Path) -> Result<TrainState> {
    let (tensors, meta) = tensor_file::load(path)?;
    let field = |key: &str| {
        meta.get(key)
            .with_context(|| format!("{}: checkpoint lacks metadata {key}", path.display()))
    };
    let saved: TrainConfig = serde_json::from_str(field("config")?)?;
    if &saved != cfg {
        bail!(
            "{}: the checkpoint was made with different settings ({}); resume with the same \
             options, or start a new run folder",
            path.display(),
            serde_json::to_string(&saved)?
        );
    }
    let progress: Progress = serde_json::from_str(field("progress")?)?;
    let device = Device::Cpu;
    let find = |name: &str| tensors.iter().find(|t| t.name == name);
    let mut adam = Adam::new(model, cfg.lr)?;
    adam.step = field("adam_step")?.parse().context("adam_step")?;
    let mut masks = Vec::new();
    for (i, (name, var)) in model.params().iter().enumerate() {
        let load = |prefix: &str| -> Result<Option<Tensor>> {
            find(&format!("{prefix}{name}"))
                .map(|t| Ok(Tensor::from_vec(t.values.clone(), var.dims(), &device)?))
                .transpose()
        };
        let weights = load("")?.with_context(|| format!("checkpoint lacks {name}"))?;
        var.set(&weights)?;
        adam.first_moments[i] =
            load(MOMENT1)?.with_context(|| format!("checkpoint lacks {MOMENT1}{name}"))?;
        adam.second_moments[i] =
            load(MOMENT2)?.with_context(|| format!("checkpoint lacks {MOMENT2}{name}"))?;
        masks.push(load(MASK)?.map(|m| m.ne(0f32)).transpose()?);
    }
    Ok(TrainState {
        adam,
        masks,
        progress,
    })
}
