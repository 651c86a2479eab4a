//! What a layer costs, defined once: multiply-accumulates (MACs) of one inference on real inputs.
//! A conv tap that falls on the zero padding is not counted; a weight counts once per output
//! position it is applied at. The engine's statistics, the trainer's eval table and the report
//! all take their MACs from here.

use crate::ops::conv::ConvShape;
use crate::ops::conv_i8::{uses_im2col, uses_image_kernel};
use model_format::{Indices, Layer, LayerKind, LayerParamsI8, Weights, WeightsI8};

/// MACs per inference of one weight in column `col` of `layer`'s weight matrix (conv: column
/// `ci·9 + ky·3 + kx`, applied wherever that tap reads the map, not the padding; linear: 1).
pub fn column_macs(layer: &Layer<'_>, col: usize) -> u64 {
    match layer.kind {
        LayerKind::Conv3x3ReluMaxPool2 => ConvShape::of(layer).tap_macs(col % 9 / 3, col % 3),
        LayerKind::Linear { .. } => 1,
    }
}

/// MACs with every weight used: what a dense kernel performs.
pub fn dense_macs(layer: &Layer<'_>) -> u64 {
    let per_row: u64 = (0..layer.cols()).map(|c| column_macs(layer, c)).sum();
    per_row * layer.rows() as u64
}

/// MACs with the exact zeros skipped, whatever the encoding: what the weights need.
pub fn nonzero_macs(layer: &Layer<'_>, weights: &Weights<'_>) -> u64 {
    let cols = layer.cols().max(1);
    match weights {
        Weights::Dense(v) => v
            .iter()
            .enumerate()
            .filter(|(_, &w)| w != 0.0)
            .map(|(i, _)| column_macs(layer, i % cols))
            .sum(),
        Weights::Csr(csr) => csr
            .values
            .iter()
            .enumerate()
            .filter(|(_, &w)| w != 0.0)
            .filter_map(|(k, _)| csr.col_idx.get(k))
            .map(|c| column_macs(layer, c))
            .sum(),
    }
}

/// MACs the engine's kernels perform for the weights as stored: every weight of a dense matrix,
/// every stored entry of a CSR one.
pub fn performed_macs(layer: &Layer<'_>, weights: &Weights<'_>) -> u64 {
    match weights {
        Weights::Dense(_) => dense_macs(layer),
        Weights::Csr(csr) => stored_macs(layer, csr.col_idx),
    }
}

fn stored_macs(layer: &Layer<'_>, col_idx: Indices<'_>) -> u64 {
    (0..col_idx.len())
        .filter_map(|k| col_idx.get(k))
        .map(|c| column_macs(layer, c))
        .sum()
}

/// [`nonzero_macs`] for int8 weights.
pub fn nonzero_macs_i8(layer: &Layer<'_>, weights: &WeightsI8<'_>) -> u64 {
    let cols = layer.cols().max(1);
    match weights {
        WeightsI8::Dense(v) => v
            .iter()
            .enumerate()
            .filter(|(_, &w)| w != 0)
            .map(|(i, _)| column_macs(layer, i % cols))
            .sum(),
        WeightsI8::Csr(csr) => (0..csr.rows)
            .flat_map(|r| csr.row(r))
            .filter(|&(_, w)| w != 0)
            .map(|(c, _)| column_macs(layer, c))
            .sum(),
    }
}

/// MACs the int8 kernels perform for a layer's weights as stored: every weight of a dense
/// matrix (but a dense conv layer that takes the tap-by-tap kernel skips its zeros, see
/// `conv_i8::uses_im2col` and `conv_i8::uses_image_kernel`), every non-zero entry of a CSR one
/// (the zero entries that bridge long gaps are skipped too).
pub fn performed_macs_i8(layer: &Layer<'_>, params: &LayerParamsI8<'_>) -> u64 {
    let every_weight = match layer.kind {
        LayerKind::Conv3x3ReluMaxPool2 => {
            let shape = ConvShape::of(layer);
            uses_im2col(&shape) || uses_image_kernel(&shape, params)
        }
        LayerKind::Linear { .. } => true,
    };
    match params.weights {
        WeightsI8::Dense(_) if every_weight => dense_macs(layer),
        _ => nonzero_macs_i8(layer, &params.weights),
    }
}
