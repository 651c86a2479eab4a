//! Post-training int8 quantization (SPEC §4.1), as TFLite does it per channel:
//!
//! - weights: symmetric per output channel, `scale = max|w| / 127`, `q = round(w / scale)` in
//!   −127..=127, so every exact zero stays exactly zero and the sparsity pattern is kept;
//! - activations: unsigned bytes with zero point 0 (every hidden layer ends in ReLU), one scale
//!   per layer output, `max / 255` of that output over calibration images (training images,
//!   the first `calibration_images` of the split); the input's scale is 1/255;
//! - biases: `i32` in accumulator units, `round(b / (s_in · s_w))`;
//! - requantization: the integer multiplier and shift of `s_in · s_w / s_out` per row;
//! - logits: `i32` at a fine scale, `max |logit| / 2^16` on the calibration images, so the
//!   argmax sees the accumulators' full resolution.

use crate::data::Dataset;
use crate::model::Cnn;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use model_format::quant::{multiplier_for, MAX_ACTIVATION, MAX_WEIGHT};
use model_format::writer::QuantizedLayer;
use model_format::NetworkDef;
use rayon::prelude::*;
use std::collections::HashMap;

/// Images per calibration batch.
const BATCH: usize = 256;
/// Logit steps per calibrated maximum |logit|.
const LOGIT_STEPS: f64 = 65_536.0;

/// A quantized model: the network and each layer's integer tensors, plus the scales chosen.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub network: NetworkDef,
    pub layers: HashMap<String, QuantizedLayer>,
    /// Each layer's output scale (real value = stored integer × scale).
    pub output_scales: Vec<f64>,
    pub calibration_images: usize,
}

impl Quantized {
    /// The logits of one image by the plain-integer definition of the model (SPEC §4.1).
    pub fn logits(&self, image: &[u8]) -> Result<Vec<i32>> {
        model_format::reference::int8_logits(&self.network, &self.layers, image)
            .ok_or_else(|| anyhow!("the image does not fit the network's input"))
    }

    /// [`Self::logits`] of every image of `data`, in order.
    pub fn all_logits(&self, data: &Dataset) -> Result<Vec<Vec<i32>>> {
        (0..data.len())
            .into_par_iter()
            .map(|i| self.logits(data.image(i)))
            .collect()
    }
}

/// Each layer's largest output (largest |logit| for the last) over the first `n` images.
fn calibrate(model: &Cnn, data: &Dataset, n: usize) -> Result<Vec<f64>> {
    let n = n.min(data.len());
    if n == 0 {
        bail!("calibration needs at least one image");
    }
    let mut maxima = vec![0f64; model.network().layer_defs().len()];
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(BATCH) {
        let (x, _) = data.batch(chunk, &Device::Cpu)?;
        for (m, out) in maxima.iter_mut().zip(model.forward_layers(&x)?) {
            let peak = out.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            *m = m.max(f64::from(peak));
        }
    }
    Ok(maxima)
}

/// Quantizes `model` with activation scales calibrated on the first `calibration_images` of
/// `calibration` (training images).
pub fn quantize(
    model: &Cnn,
    calibration: &Dataset,
    calibration_images: usize,
) -> Result<Quantized> {
    let network = model.network().clone();
    let maxima = calibrate(model, calibration, calibration_images)?;
    let last = maxima.len().saturating_sub(1);
    let output_scales: Vec<f64> = maxima
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            // A layer silent on every calibration image gets any positive scale.
            let m = if m > 0.0 { m } else { 1.0 };
            if i == last {
                m / LOGIT_STEPS
            } else {
                m / MAX_ACTIVATION as f64
            }
        })
        .collect();
    let tensors = crate::export::file_order_tensors(model)?;
    let mut layers = HashMap::new();
    let mut input_scale = 1.0 / MAX_ACTIVATION as f64;
    for (layer, &output_scale) in network.layers().iter().zip(&output_scales) {
        // The file stores scales as f32: requantize with exactly what densifying will read.
        let output_scale = f64::from(output_scale as f32);
        let get = |suffix: &str| {
            tensors
                .get(&format!("{}.{suffix}", layer.name))
                .with_context(|| format!("{}.{suffix} missing", layer.name))
        };
        let (w, b) = (get("weight")?, get("bias")?);
        let q = quantize_layer(w, b, layer.cols(), input_scale, output_scale)
            .with_context(|| format!("quantizing layer {}", layer.name))?;
        layers.insert(layer.name.to_string(), q);
        input_scale = output_scale;
    }
    Ok(Quantized {
        network,
        layers,
        output_scales,
        calibration_images: calibration_images.min(calibration.len()),
    })
}

/// One layer's integer tensors from its real weights (`cols` per row, file order) and biases.
fn quantize_layer(
    weights: &[f32],
    bias: &[f32],
    cols: usize,
    input_scale: f64,
    output_scale: f64,
) -> Result<QuantizedLayer> {
    let mut q = QuantizedLayer {
        output_scale: output_scale as f32,
        weights: Vec::with_capacity(weights.len()),
        bias: Vec::with_capacity(bias.len()),
        multiplier: Vec::with_capacity(bias.len()),
        shift: Vec::with_capacity(bias.len()),
    };
    let max_w = f64::from(MAX_WEIGHT as i16);
    for (row, &b) in weights.chunks_exact(cols.max(1)).zip(bias) {
        let peak = row.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs()));
        // A dead row keeps only its bias: any positive weight scale represents it.
        let scale = if peak > 0.0 { peak / max_w } else { 1.0 };
        let row_q: Vec<i8> = row
            .iter()
            .map(|&w| (f64::from(w) / scale).round().clamp(-max_w, max_w) as i8)
            .collect();
        // The accumulator bound of SPEC §4.1 leaves the bias this much room.
        let reach: i64 = row_q
            .iter()
            .map(|&w| i64::from(w).abs() * MAX_ACTIVATION)
            .sum();
        let room = (i64::from(i32::MAX) - reach) as f64;
        let bias_q = (f64::from(b) / (input_scale * scale))
            .round()
            .clamp(-room, room);
        let (m, s) = multiplier_for(input_scale * scale / output_scale)
            .ok_or_else(|| anyhow!("requantization factor out of range"))?;
        q.weights.extend(row_q);
        q.bias.push(bias_q as i32);
        q.multiplier.push(m);
        q.shift.push(s);
    }
    Ok(q)
}
