//! Dead units removed, exactly: after pruning, whole filters and neurons can be dead. A unit of a
//! hidden layer goes when
//! - nothing reads it: every weight of the next layer on its output is zero; or
//! - its weights are all zero, so its output is the constant `relu(bias)`: zero (then nothing
//!   changes when it goes), or a constant that folds into the next layer's bias when that layer
//!   is linear (a padded convolution would see the constant only inside the map: not folded).
//!
//! The smaller network (e.g. conv2 with fewer filters, fc1 with fewer outputs) computes the same
//! logits up to float rounding (the folded bias sums in another order), and saves flash, RAM and
//! per-row work on the MCU. Applied until nothing more goes, as removing a unit's readers can
//! leave the unit before it unread.

use crate::model::tensor_file::NamedTensor;
use crate::model::Cnn;
use anyhow::{Context, Result};
use candle_core::Device;
use model_format::{LayerDef, LayerKind, NetworkDef};
use std::collections::HashMap;

/// Units per layer before and after.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reduction {
    pub layers: Vec<(String, usize, usize)>,
}

impl Reduction {
    /// Whether any unit went.
    pub fn removed_any(&self) -> bool {
        self.layers.iter().any(|(_, before, after)| before != after)
    }

    /// `conv2:64->50,fc1:128->60` for the layers that lost units.
    pub fn describe(&self) -> String {
        let changed: Vec<String> = self
            .layers
            .iter()
            .filter(|(_, b, a)| b != a)
            .map(|(n, b, a)| format!("{n}:{b}->{a}"))
            .collect();
        changed.join(",")
    }
}

/// One layer being reduced: its description, weights (rows × cols, the trainer's layout) and
/// bias.
struct Unit {
    def: LayerDef,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Unit {
    fn cols(&self) -> usize {
        self.weights.len() / self.bias.len().max(1)
    }

    /// The output of unit `u` when its weights are all zero: `relu(bias)`, or the bias of a
    /// layer without ReLU.
    fn constant(&self, u: usize) -> f32 {
        let relu = match self.def.kind {
            LayerKind::Conv3x3ReluMaxPool2 => true,
            LayerKind::Linear { relu, .. } => relu,
        };
        let b = self.bias.get(u).copied().unwrap_or(0.0);
        if relu {
            b.max(0.0)
        } else {
            b
        }
    }

    /// Keeps only the rows (units) `keep` says.
    fn keep_rows(&mut self, keep: &[bool]) {
        let cols = self.cols();
        let kept = |u: &usize| keep.get(*u).copied().unwrap_or(true);
        self.weights = self
            .weights
            .chunks_exact(cols.max(1))
            .enumerate()
            .filter(|(u, _)| kept(u))
            .flat_map(|(_, row)| row.iter().copied())
            .collect();
        self.bias = self
            .bias
            .iter()
            .enumerate()
            .filter(|(u, _)| kept(u))
            .map(|(_, &v)| v)
            .collect();
        self.def.outputs = self.bias.len();
    }

    /// Keeps only the input groups (`g` columns each per row) `keep` says.
    fn keep_column_groups(&mut self, keep: &[bool], g: usize) {
        let cols = self.cols();
        let kept = |u: &usize| keep.get(*u).copied().unwrap_or(true);
        self.weights = self
            .weights
            .chunks_exact(cols.max(1))
            .flat_map(|row| {
                row.chunks_exact(g.max(1))
                    .enumerate()
                    .filter(|(u, _)| kept(u))
                    .flat_map(|(_, group)| group.iter().copied())
                    .collect::<Vec<_>>()
            })
            .collect();
        let groups = keep.iter().filter(|&&k| k).count();
        self.def.inputs = match self.def.kind {
            LayerKind::Conv3x3ReluMaxPool2 => groups,
            LayerKind::Linear { .. } => groups * g,
        };
    }
}

/// The model with its dead units removed, and what went.
pub fn remove_dead_units(model: &Cnn) -> Result<(Cnn, Reduction)> {
    let network = model.network();
    let values: HashMap<String, Vec<f32>> = model.to_vecs()?.into_iter().collect();
    let mut layers = network
        .layer_defs()
        .iter()
        .map(|def| {
            let get = |suffix: &str| {
                values
                    .get(&format!("{}.{suffix}", def.name))
                    .cloned()
                    .with_context(|| format!("{}.{suffix} missing", def.name))
            };
            Ok(Unit {
                def: def.clone(),
                weights: get("weight")?,
                bias: get("bias")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let before: Vec<usize> = layers.iter().map(|l| l.def.outputs).collect();
    while (0..layers.len().saturating_sub(1)).any(|i| reduce_pair(&mut layers, i)) {}
    let reduced = NetworkDef::new(
        network.input(),
        layers.iter().map(|l| l.def.clone()).collect(),
    )?;
    let named: Vec<NamedTensor> = layers
        .iter()
        .zip(reduced.layers())
        .flat_map(|(l, layer)| {
            let (shape, rank) = layer.weight_shape();
            [
                NamedTensor {
                    name: format!("{}.weight", l.def.name),
                    shape: shape[..rank].to_vec(),
                    values: l.weights.clone(),
                },
                NamedTensor {
                    name: format!("{}.bias", l.def.name),
                    shape: vec![l.bias.len()],
                    values: l.bias.clone(),
                },
            ]
        })
        .collect();
    let reduction = Reduction {
        layers: layers
            .iter()
            .zip(before)
            .map(|(l, b)| (l.def.name.clone(), b, l.def.outputs))
            .collect(),
    };
    Ok((Cnn::from_named(&reduced, &named, &Device::Cpu)?, reduction))
}

/// Removes the dead units of layer `i` (folding constants into layer `i + 1`); whether any went.
fn reduce_pair(layers: &mut [Unit], i: usize) -> bool {
    let [a, b] = match layers.get_mut(i..i + 2) {
        Some([a, b]) => [a, b],
        _ => return false,
    };
    // Layer b's columns that read unit u: a contiguous group of `g` per row (a conv reads a
    // channel's 9 taps, a linear layer after a conv its map, after a linear layer one value).
    let g = b.cols() / a.bias.len().max(1);
    let keep = kept_units(a, b, g);
    if keep.iter().all(|&k| k) {
        return false;
    }
    let b_cols = b.cols();
    for u in (0..keep.len()).filter(|&u| !keep[u]) {
        let constant = a.constant(u);
        if constant != 0.0 {
            for (row, bias) in b.weights.chunks_exact(b_cols).zip(&mut b.bias) {
                *bias += row[u * g..(u + 1) * g].iter().sum::<f32>() * constant;
            }
        }
    }
    a.keep_rows(&keep);
    b.keep_column_groups(&keep, g);
    true
}

/// Which units of `a` stay: those that are read by `b` (its column groups of `g`) and are not
/// dead with a constant that neither is zero nor folds into `b` (a linear layer). At least one.
fn kept_units(a: &Unit, b: &Unit, g: usize) -> Vec<bool> {
    let fold_ok = matches!(b.def.kind, LayerKind::Linear { .. });
    let (a_cols, b_cols) = (a.cols().max(1), b.cols().max(1));
    let mut keep: Vec<bool> = a
        .weights
        .chunks_exact(a_cols)
        .enumerate()
        .map(|(u, row)| {
            let dead = row.iter().all(|&w| w == 0.0);
            let unread = b
                .weights
                .chunks_exact(b_cols)
                .all(|r| r[u * g..(u + 1) * g].iter().all(|&w| w == 0.0));
            let removable = unread || (dead && (a.constant(u) == 0.0 || fold_ok));
            !removable
        })
        .collect();
    if let (false, Some(first)) = (keep.iter().any(|&k| k), keep.first_mut()) {
        *first = true;
    }
    keep
}
