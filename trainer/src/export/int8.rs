//! Int8 model files (SPEC §4.1) for inspection and densification: their tensors as stored, and
//! their weights and biases back as real numbers (stored integer × scale).

use super::TensorRow;
use anyhow::{anyhow, bail, Result};
use model_format::quant::{weight_scale, MAX_ACTIVATION, OUTPUT_SCALES};
use model_format::{Dtype, Layer, Model, WeightsI8};

/// An int8 model's tensor rows, parameters and non-zero parameters.
pub(super) fn tensor_rows(model: &Model<'_>) -> (Vec<TensorRow>, usize, usize) {
    let mut rows = Vec::new();
    let (mut parameters, mut nonzeros) = (0, 0);
    for (layer, p) in model.int8_with_shapes() {
        let name = layer.name;
        let weight_nnz = p.weights.nnz();
        let bias_nnz = p.bias.iter().filter(|&&b| b != 0).count();
        parameters += layer.rows() * layer.cols() + p.bias.len();
        nonzeros += weight_nnz + bias_nnz;
        let row = |suffix: &str, encoding: &str, dtype: Dtype, shape: Vec<usize>, nnz| TensorRow {
            tensor: format!("{name}.{suffix}"),
            encoding: encoding.into(),
            dtype: dtype.name().into(),
            bytes: shape.iter().product::<usize>() * dtype.size(),
            shape,
            nonzeros: nnz,
        };
        match p.weights {
            WeightsI8::Dense(_) => {
                let (shape, rank) = layer.weight_shape();
                rows.push(row(
                    "weight",
                    "dense",
                    Dtype::I8,
                    shape[..rank].to_vec(),
                    weight_nnz,
                ));
            }
            WeightsI8::Csr(csr) => {
                let n = csr.entries();
                rows.push(row(
                    "weight.values",
                    "csr-delta",
                    Dtype::I8,
                    vec![n],
                    weight_nnz,
                ));
                let ptr = csr.row_ptr;
                rows.push(row(
                    "weight.row_ptr",
                    "csr-delta",
                    ptr.dtype(),
                    vec![ptr.len()],
                    0,
                ));
                rows.push(row("weight.col_delta", "csr-delta", Dtype::U8, vec![n], 0));
            }
        }
        let per_row = vec![p.bias.len()];
        rows.push(row("bias", "dense", Dtype::I32, per_row.clone(), bias_nnz));
        rows.push(row(
            "output.multiplier",
            "dense",
            Dtype::I32,
            per_row.clone(),
            0,
        ));
        rows.push(row("output.shift", "dense", Dtype::U8, per_row, 0));
    }
    (rows, parameters, nonzeros)
}

/// Each layer's output scale, from the `output_scales` metadata.
fn output_scales(model: &Model<'_>) -> Result<Vec<f64>> {
    let text = model
        .metadata(OUTPUT_SCALES)
        .ok_or_else(|| anyhow!("int8 model without {OUTPUT_SCALES} metadata"))?;
    let scales: Vec<f64> = text
        .split(',')
        .map(|s| s.parse::<f32>().map(f64::from))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{OUTPUT_SCALES}: {e}"))?;
    if scales.len() != model.int8().len() || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("{OUTPUT_SCALES} must hold a finite positive scale per layer: {text}");
    }
    Ok(scales)
}

/// A layer, its weights (dense, row-major, the file's column order) and its biases.
pub(super) type RealLayer<'a> = (Layer<'a>, Vec<f32>, Vec<f32>);

/// Each layer with its weights (dense, row-major, the file's column order) and biases as real
/// numbers: stored integer × the row's scale (the bias at input scale × weight scale).
pub(super) fn real_layers<'a>(model: &Model<'a>) -> Result<Vec<RealLayer<'a>>> {
    let scales = output_scales(model)?;
    let mut input_scale = 1.0 / MAX_ACTIVATION as f64;
    let mut out = Vec::new();
    for ((layer, p), &output_scale) in model.int8_with_shapes().zip(&scales) {
        let (rows, cols) = (layer.rows(), layer.cols());
        let mut q = vec![0i8; rows * cols];
        match p.weights {
            WeightsI8::Dense(v) => q.copy_from_slice(v),
            WeightsI8::Csr(csr) => {
                for r in 0..rows {
                    for (c, v) in csr.row(r) {
                        if let Some(slot) = q.get_mut(r * cols + c) {
                            *slot = v;
                        }
                    }
                }
            }
        }
        let row_scale: Vec<f64> = p
            .multiplier
            .iter()
            .zip(p.shift)
            .map(|(&m, &s)| weight_scale(m, s, input_scale, output_scale))
            .collect();
        let weights = q
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(v) * row_scale[i / cols.max(1)]) as f32)
            .collect();
        let bias = p
            .bias
            .iter()
            .zip(&row_scale)
            .map(|(&b, &s)| (f64::from(b) * s * input_scale) as f32)
            .collect();
        out.push((*layer, weights, bias));
        input_scale = output_scale;
    }
    Ok(out)
}
