//! Accuracy, sparsity and per-layer cost of a model.

use crate::data::{Dataset, CLASSES};
use crate::model::{Cnn, PARAM_SHAPES};
use anyhow::Result;
use candle_core::{DType, Device};

/// Correct predictions per class.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EvalResult {
    pub correct: [u64; CLASSES],
    pub total: [u64; CLASSES],
}

impl EvalResult {
    pub fn accuracy(&self) -> f64 {
        let total: u64 = self.total.iter().sum();
        if total == 0 {
            return 0.0;
        }
        self.correct.iter().sum::<u64>() as f64 / total as f64
    }

    pub fn class_accuracy(&self, class: usize) -> f64 {
        self.correct[class] as f64 / self.total[class].max(1) as f64
    }

    pub fn record(&mut self, label: usize, predicted: usize) {
        self.total[label] += 1;
        if predicted == label {
            self.correct[label] += 1;
        }
    }
}

/// Runs the candle model over a dataset in batches of 500.
pub fn evaluate(model: &Cnn, data: &Dataset) -> Result<EvalResult> {
    let mut result = EvalResult::default();
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(500) {
        let (x, y) = data.batch(chunk, &Device::Cpu)?;
        let predicted = model.forward(&x)?.argmax(1)?.to_vec1::<u32>()?;
        for (label, pred) in y.to_vec1::<u32>()?.into_iter().zip(predicted) {
            result.record(label as usize, pred as usize);
        }
    }
    Ok(result)
}

/// (exactly-zero parameters, all parameters).
pub fn count_zeros(model: &Cnn) -> Result<(usize, usize)> {
    let mut zeros = 0;
    let mut total = 0;
    for (_, var) in model.params() {
        let t = var.as_tensor();
        zeros += t
            .eq(0f32)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as usize;
        total += t.elem_count();
    }
    Ok((zeros, total))
}

/// One row of the per-layer table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerStats {
    pub layer: String,
    pub parameters: usize,
    pub exact_zeros: usize,
    pub density: f64,
    /// Multiply-accumulates per image with every weight used.
    pub dense_macs: u64,
    /// Multiply-accumulates per image when zero weights are skipped.
    pub sparse_macs: u64,
}

/// Output positions each weight of a layer is applied at, per image (conv: output pixels,
/// including those at the padded border; fc: 1).
pub fn weight_uses_per_image(layer: &str) -> u64 {
    match layer {
        "conv1" => 28 * 28,
        "conv2" => 14 * 14,
        _ => 1,
    }
}

/// Per-layer parameters, zeros, density and MACs, from parameter values by name.
pub fn layer_stats(params: &[(String, Vec<f32>)]) -> Vec<LayerStats> {
    let layers: Vec<&str> = PARAM_SHAPES
        .iter()
        .filter_map(|(n, _)| n.strip_suffix(".weight"))
        .collect();
    layers
        .into_iter()
        .map(|layer| {
            let of = |suffix: &str| {
                params
                    .iter()
                    .find(|(n, _)| *n == format!("{layer}.{suffix}"))
                    .map(|(_, v)| v.as_slice())
                    .unwrap_or(&[])
            };
            let (w, b) = (of("weight"), of("bias"));
            let zeros = |v: &[f32]| v.iter().filter(|&&x| x == 0.0).count();
            let parameters = w.len() + b.len();
            let exact_zeros = zeros(w) + zeros(b);
            let uses = weight_uses_per_image(layer);
            LayerStats {
                layer: layer.to_string(),
                parameters,
                exact_zeros,
                density: 1.0 - exact_zeros as f64 / parameters.max(1) as f64,
                dense_macs: w.len() as u64 * uses,
                sparse_macs: (w.len() - zeros(w)) as u64 * uses,
            }
        })
        .collect()
}
