//! The main job as library calls: train → prune → masked fine-tune → export → device files.
//! The CLI's subcommands are thin wrappers of these, `cargo xtask demo` runs those subcommands,
//! and the end-to-end tests call them directly. The defaults of the main job live here, once.

use crate::data::Dataset;
use crate::eval::engine::run_engine;
use crate::model::Cnn;
use crate::output::HostLogits;
use crate::prune::{prune_ranked, PruneTarget, Ranking};
use crate::quantize::Quantized;
use crate::train::optim::LrSchedule;
use crate::train::{train, EpochMetrics, RunDir, RunOptions, TrainConfig};
use anyhow::{bail, Context, Result};
use model_format::writer::Encoding;
use model_format::NetworkDef;
use protocol::batch::Batch;
use protocol::slot::{slot_image, SlotKind};
use std::collections::BTreeMap;
use std::path::Path;

/// Epochs of the dense baseline and of the L1 (proximal) training.
pub const EPOCHS: usize = 10;
/// Epochs of masked fine-tuning after pruning.
pub const FINETUNE_EPOCHS: usize = 6;
/// Learning-rate schedule of the dense and the L1 training (the reference recipe's).
pub const TRAIN_SCHEDULE: LrSchedule = LrSchedule::Constant;
/// Epochs over which the fine-tune prunes gradually (0: one cut before it).
pub const GRADUAL_EPOCHS: usize = 3;
/// Learning-rate schedule of the masked fine-tune.
pub const FINETUNE_SCHEDULE: LrSchedule = LrSchedule::Cosine;
/// L1 strength of the proximal training on [`LAMBDA_IMAGES`] training images.
pub const LAMBDA: f64 = 1e-4;
/// The training-set size [`LAMBDA`] was tuned on (the MNIST-10k subset's 80% split).
pub const LAMBDA_IMAGES: usize = 8_000;

/// The default λ for a training set of `images`: [`LAMBDA`] up to [`LAMBDA_IMAGES`], then
/// smaller as `(LAMBDA_IMAGES / images)^0.6`. The proximal step thresholds once per optimizer
/// step, so a larger set, with more steps per epoch, zeroes more for the same λ: on full
/// Fashion-MNIST (60,000 images) λ = 1e-4 left the L1 model at 0.9003 and the final 99%-sparse
/// one 0.89 pp under dense, while 3e-5 (this rule gives 2.98e-5) ended 0.35 pp under it.
/// Fitted to the two data sets we measured (docs/TRAINING.md has the runs), not derived: check
/// it on new data with the demo's `--sweep`.
pub fn lambda_for(images: usize) -> f64 {
    let ratio = LAMBDA_IMAGES as f64 / images.max(1) as f64;
    LAMBDA * ratio.min(1.0).powf(0.6)
}
/// Fraction of the weights pruned after L1 training.
pub const SPARSITY: f64 = 0.991;
/// Pruning ranks weights by `|w| / MACs^MAC_EXPONENT` ([`crate::prune::Ranking::per_mac`]);
/// 0 is magnitude alone. 0.06 cut Fashion-MNIST's MACs by 29% but cost 0.10 pp of accuracy on
/// average over three seeds, enough to miss the 0.5 pp target against dense (docs/TRAINING.md),
/// so the default keeps accuracy and the saving is an option.
pub const MAC_EXPONENT: f64 = 0.0;
/// Test images run on the device.
pub const DEVICE_IMAGES: u16 = 64;
/// Training images the int8 quantization calibrates its activation scales on.
pub const CALIBRATION_IMAGES: u32 = 512;
/// Optimizer steps between checkpoints (besides each epoch's end).
pub const CHECKPOINT_EVERY: u64 = 200;

/// Checks that `model`'s network reads the images of `data` and has an output per class.
pub fn check_fits(model: &Cnn, data: &Dataset) -> Result<()> {
    data.check_input(model.network().input())?;
    let outputs = model.network().classes();
    if let Some((index, label)) = data
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= outputs)
    {
        bail!("label {label} of sample {index} is not one of the network's {outputs} classes");
    }
    Ok(())
}

/// Trains `model` in the run folder (resuming from its checkpoint when `opts.resume`), then
/// saves `model.safetensors` there with `provenance` and the final test accuracy.
pub fn train_and_save(
    model: &Cnn,
    cfg: &TrainConfig,
    (train_set, test_set): (&Dataset, &Dataset),
    run: &RunDir,
    opts: &RunOptions,
    mut provenance: BTreeMap<String, String>,
) -> Result<Vec<EpochMetrics>> {
    check_fits(model, train_set)?;
    let metrics =
        train(model, cfg, train_set, test_set, run, opts)?.context("training stopped early")?;
    provenance.insert("kind".into(), "l1sparse-dense-model".into());
    provenance.insert("training".into(), serde_json::to_string(cfg)?);
    if let Some(m) = metrics.last() {
        provenance.insert("test_accuracy".into(), format!("{:.6}", m.test_accuracy));
    }
    model.save(&run.model(), &provenance)?;
    Ok(metrics)
}

/// A PyTorch `state_dict` of `network` saved with `safetensors.torch.save_file` (names
/// `<layer>.weight` / `<layer>.bias`, PyTorch's layouts and flatten order, F32) as the trainer's
/// model. Every name, shape and dtype is checked against the network; an error names the
/// tensor and what was expected.
pub fn import_state_dict(path: &Path, network: &NetworkDef) -> Result<Cnn> {
    let (tensors, _) = crate::model::tensor_file::load(path)?;
    Cnn::from_named(network, &tensors, &candle_core::Device::Cpu).with_context(|| {
        format!(
            "{}: not a state dict of the network ({network})",
            path.display()
        )
    })
}

/// A copy of `model` with its weights pruned to `target` (a sparsity target ranking them by
/// [`Ranking::per_mac`] with `mac_exponent`), and how many weights are zero.
pub fn pruned(model: &Cnn, target: PruneTarget, mac_exponent: f64) -> Result<(Cnn, usize)> {
    let mut params = model.to_vecs()?;
    let ranking = Ranking::per_mac(model.network(), mac_exponent)?;
    let zeros = prune_ranked(&mut params, target, &ranking);
    Ok((model.with_values(params)?, zeros))
}

/// How a model becomes a file: the weight encoding, and whether dead units are removed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    pub encoding: Encoding,
    pub remove_dead_units: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            encoding: Encoding::Smallest,
            remove_dead_units: true,
        }
    }
}

/// `model` with its dead units removed (`None`: use it as it is), and its provenance: the
/// model's own metadata, `source`, and which units went.
fn prepared(
    model: &Cnn,
    source_meta: &BTreeMap<String, String>,
    source: &str,
    remove_dead_units: bool,
) -> Result<(Option<Cnn>, BTreeMap<String, String>)> {
    let mut provenance = crate::export::provenance(model, source_meta, source)?;
    if !remove_dead_units {
        return Ok((None, provenance));
    }
    let (reduced, reduction) = crate::reduce::remove_dead_units(model)?;
    if reduction.removed_any() {
        provenance.insert("removed_units".into(), reduction.describe());
    }
    Ok((Some(reduced), provenance))
}

/// The model file's bytes (provenance from the model's own metadata and `source`).
pub fn export(
    model: &Cnn,
    source_meta: &BTreeMap<String, String>,
    source: &str,
    options: FileOptions,
) -> Result<Vec<u8>> {
    let (reduced, provenance) = prepared(model, source_meta, source, options.remove_dead_units)?;
    crate::export::export_bytes(
        reduced.as_ref().unwrap_or(model),
        &provenance,
        options.encoding,
    )
}

/// The int8 model of `model` (calibrated on the first `calibration_images` of `calibration`) and
/// its file's bytes (provenance from the model's own metadata and `source`).
pub fn quantize(
    model: &Cnn,
    source_meta: &BTreeMap<String, String>,
    source: &str,
    (calibration, calibration_images): (&Dataset, u32),
    options: FileOptions,
) -> Result<(Quantized, Vec<u8>)> {
    let (reduced, mut provenance) =
        prepared(model, source_meta, source, options.remove_dead_units)?;
    let model = reduced.as_ref().unwrap_or(model);
    let quantized = crate::quantize::quantize(model, calibration, calibration_images as usize)?;
    provenance.insert(
        "quantization".into(),
        format!(
            "post-training int8: per-channel symmetric weights, activation scales from the maximum over {} training images",
            quantized.calibration_images
        ),
    );
    let bytes = model_format::writer::write_int8(
        &quantized.network,
        &quantized.layers,
        options.encoding,
        &provenance,
    )?;
    Ok((quantized, bytes))
}

/// What the device gets: the model's and the images' flash slots, and the host engine's
/// results for those images.
pub struct DeviceFiles {
    pub model_slot: Vec<u8>,
    pub inputs_slot: Vec<u8>,
    pub host: HostLogits,
}

/// Flash slots for a model file and `images` (all of them, in order), with the host engine's
/// logits for them.
pub fn device_files(model_bytes: &[u8], images: &Dataset) -> Result<DeviceFiles> {
    let run = run_engine(model_bytes, images)?;
    let views: Vec<&[u8]> = (0..images.len()).map(|i| images.image(i)).collect();
    let batch = Batch::encode(images.pixels(), &views, &images.labels);
    Ok(DeviceFiles {
        model_slot: slot_image(model_bytes, SlotKind::Model),
        inputs_slot: slot_image(&batch, SlotKind::Batch),
        host: HostLogits {
            images: images.len(),
            labels: images.labels.clone(),
            logit_bits: run
                .logit_bits
                .chunks_exact(run.classes)
                .map(<[u32]>::to_vec)
                .collect(),
            layer_macs: run.layer_macs,
            model_bytes: model_bytes.len(),
        },
    })
}
