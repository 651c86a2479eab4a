//! Accuracy, sparsity and per-layer cost of a model.

pub mod engine;

use crate::data::Dataset;
use crate::model::Cnn;
use anyhow::Result;
use candle_core::{DType, Device};
use model_format::{Layer, Model, NetworkDef, Weights};
use sparse_engine::cost;

/// Correct predictions per class (classes appear as labels are recorded).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EvalResult {
    pub correct: Vec<u64>,
    pub total: Vec<u64>,
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
        let of = |v: &[u64]| v.get(class).copied().unwrap_or(0);
        of(&self.correct) as f64 / of(&self.total).max(1) as f64
    }

    /// Accuracy of every class seen, in class order.
    pub fn per_class(&self) -> Vec<f64> {
        (0..self.total.len())
            .map(|c| self.class_accuracy(c))
            .collect()
    }

    pub fn record(&mut self, label: usize, predicted: usize) {
        if self.total.len() <= label {
            self.total.resize(label + 1, 0);
            self.correct.resize(label + 1, 0);
        }
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
    count_zeros_where(model, |_| true)
}

/// Exactly-zero weights (biases left out) and the number of weights.
pub fn count_weight_zeros(model: &Cnn) -> Result<(usize, usize)> {
    count_zeros_where(model, crate::model::is_weight)
}

fn count_zeros_where(model: &Cnn, keep: impl Fn(&str) -> bool) -> Result<(usize, usize)> {
    let mut zeros = 0;
    let mut total = 0;
    for (_, var) in model.params().iter().filter(|(n, _)| keep(n)) {
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerStats {
    pub layer: String,
    pub parameters: usize,
    pub exact_zeros: usize,
    pub density: f64,
    /// Multiply-accumulates per image with every weight used (real inputs: conv padding excluded).
    pub dense_macs: u64,
    /// Multiply-accumulates per image when zero weights are skipped.
    pub sparse_macs: u64,
}

/// Per-layer parameters, zeros, density and MACs of `network` from parameter values by name
/// (PyTorch's layout).
pub fn layer_stats(network: &NetworkDef, params: &[(String, Vec<f32>)]) -> Vec<LayerStats> {
    network
        .layers()
        .iter()
        .map(|layer| {
            let of = |suffix: &str| {
                let name = format!("{}.{suffix}", layer.name);
                params
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_slice())
                    .unwrap_or(&[])
            };
            let (weights, bias) = (Weights::Dense(of("weight")), of("bias"));
            let zero_biases = bias.iter().filter(|&&b| b == 0.0).count();
            let macs = cost::nonzero_macs(layer, &weights);
            layer_row(layer, weights.nnz(), bias.len(), zero_biases, macs)
        })
        .collect()
}

/// The table of a saved trained model (`model.safetensors` of a run).
pub fn saved_model_layer_stats(path: &std::path::Path) -> Result<Vec<LayerStats>> {
    let (model, _) = Cnn::load(path, &candle_core::Device::Cpu)?;
    Ok(layer_stats(model.network(), &model.to_vecs()?))
}

/// The same table for a model file, as stored (either precision).
pub fn model_layer_stats(model: &Model<'_>) -> Vec<LayerStats> {
    let f32_rows = model.layers_with_shapes().map(|(layer, p)| {
        let zero_biases = p.bias.iter().filter(|&&b| b == 0.0).count();
        layer_row(
            layer,
            p.weights.nnz(),
            p.bias.len(),
            zero_biases,
            cost::nonzero_macs(layer, &p.weights),
        )
    });
    let int8_rows = model.int8_with_shapes().map(|(layer, p)| {
        let zero_biases = p.bias.iter().filter(|&&b| b == 0).count();
        let macs = cost::nonzero_macs_i8(layer, &p.weights);
        layer_row(layer, p.weights.nnz(), p.bias.len(), zero_biases, macs)
    });
    f32_rows.chain(int8_rows).collect()
}

/// One layer's row from its non-zero weights, biases and MACs with zeros skipped (MACs from
/// the engine's one definition, [`sparse_engine::cost`]).
fn layer_row(
    layer: &Layer<'_>,
    nonzero_weights: usize,
    biases: usize,
    zero_biases: usize,
    sparse_macs: u64,
) -> LayerStats {
    let weight_count = layer.rows() * layer.cols();
    let parameters = weight_count + biases;
    let exact_zeros = weight_count.saturating_sub(nonzero_weights) + zero_biases;
    LayerStats {
        layer: layer.name.to_string(),
        parameters,
        exact_zeros,
        density: 1.0 - exact_zeros as f64 / parameters.max(1) as f64,
        dense_macs: cost::dense_macs(layer),
        sparse_macs,
    }
}
