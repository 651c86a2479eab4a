//! What the trainer's commands print with `--json` and write for the device, as types: the CLI
//! serialises them, `cargo xtask` and the tests deserialise the same types.

use crate::eval::engine::Agreement;
use crate::eval::LayerStats;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `trainer eval --json`: a dense model run by Candle, or a model file run by the engine.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    pub model: PathBuf,
    /// `candle` for a dense model, `sparse-engine` for a model file.
    pub engine: String,
    pub dataset: String,
    pub test_images: usize,
    pub accuracy: f64,
    pub per_class_accuracy: Vec<f64>,
    /// Parameters, zeros and MACs per layer (MACs from `sparse_engine::cost`).
    pub layers: Vec<LayerStats>,
    /// Model files only: what the engine's kernels performed per layer, its buffer memory, the
    /// file's size, and (with `--compare-candle`) agreement with Candle on the same weights.
    pub engine_macs_per_layer: Option<Vec<u64>>,
    pub activation_buffer_bytes: Option<usize>,
    pub file_bytes: Option<usize>,
    pub candle_agreement: Option<Agreement>,
    pub metadata: BTreeMap<String, String>,
}

impl EvalReport {
    /// Exactly-zero parameters over all parameters of the network as trained: the file's own
    /// `zero_fraction` provenance when it has one (export writes it before dead units are
    /// removed, so removed units count as the zeros they were), else counted in the file.
    pub fn zero_fraction(&self) -> f64 {
        if let Some(f) = self
            .metadata
            .get("zero_fraction")
            .and_then(|v| v.parse().ok())
        {
            return f;
        }
        let zeros: usize = self.layers.iter().map(|l| l.exact_zeros).sum();
        let params: usize = self.layers.iter().map(|l| l.parameters).sum();
        zeros as f64 / params.max(1) as f64
    }
}

/// `host-logits.json` of `trainer device-files`: the engine's results on the host for the
/// images in the inputs slot, to compare with the firmware's bit for bit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostLogits {
    pub images: usize,
    pub labels: Vec<u8>,
    /// Each image's logits as f32 bit patterns (exact).
    pub logit_bits: Vec<Vec<u32>>,
    pub layer_macs: Vec<u64>,
    pub model_bytes: usize,
}

/// `trainer quantize --json`: the int8 file written, and how the quantized model compares with
/// the f32 model it came from on the test set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizeReport {
    pub file: PathBuf,
    pub file_bytes: usize,
    pub calibration_images: usize,
    pub test_images: usize,
    /// The f32 model's accuracy (Candle) and the int8 model's (its plain-integer definition).
    pub f32_accuracy: f64,
    pub int8_accuracy: f64,
    /// Test images whose logits from the engine, reading the written file, equal the
    /// plain-integer definition's exactly (the trainer's int8 path agrees with the engine).
    pub engine_identical_logits: usize,
    /// Each layer's output scale (real value = stored integer × scale).
    pub output_scales: Vec<f64>,
}
