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

    fn relu(&self) -> bool {
        match self.def.kind {
            LayerKind::Conv3x3ReluMaxPool2 => true,
            LayerKind::Linear { relu, .. } => relu,
        }
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
    let units = a.bias.len();
    // Layer b's columns that read unit u: a contiguous group of `g` per row (a conv reads a
    // channel's 9 taps, a linear layer after a conv its map, after a linear layer one value).
    let (a_cols, b_cols) = (a.cols(), b.cols());
    let g = b_cols / units.max(1);
    let fold_ok = matches!(b.def.kind, LayerKind::Linear { .. });
    let mut keep = Vec::with_capacity(units);
    for u in 0..units {
        let dead = a.weights[u * a_cols..(u + 1) * a_cols]
            .iter()
            .all(|&w| w == 0.0);
        let unread = b
            .weights
            .chunks_exact(b_cols)
            .all(|row| row[u * g..(u + 1) * g].iter().all(|&w| w == 0.0));
        let constant = if a.relu() {
            a.bias[u].max(0.0)
        } else {
            a.bias[u]
        };
        let removable = unread || (dead && (constant == 0.0 || fold_ok));
        keep.push(!removable);
    }
    // A layer keeps at least one unit.
    if keep.iter().all(|k| !k) {
        keep[0] = true;
    }
    if keep.iter().all(|&k| k) {
        return false;
    }
    for (u, _) in keep.iter().enumerate().filter(|(_, &k)| !k) {
        let constant = if a.relu() {
            a.bias[u].max(0.0)
        } else {
            a.bias[u]
        };
        if constant != 0.0 {
            for (row, bias) in b.weights.chunks_exact(b_cols).zip(&mut b.bias) {
                *bias += row[u * g..(u + 1) * g].iter().sum::<f32>() * constant;
            }
        }
    }
    let kept = |u: usize| keep[u];
    a.weights = a
        .weights
        .chunks_exact(a_cols)
        .enumerate()
        .filter(|&(u, _)| kept(u))
        .flat_map(|(_, row)| row.iter().copied())
        .collect();
    a.bias = a
        .bias
        .iter()
        .enumerate()
        .filter(|&(u, _)| kept(u))
        .map(|(_, &v)| v)
        .collect();
    b.weights = b
        .weights
        .chunks_exact(b_cols)
        .flat_map(|row| {
            row.chunks_exact(g.max(1))
                .enumerate()
                .filter(|&(u, _)| kept(u))
                .flat_map(|(_, group)| group.iter().copied())
                .collect::<Vec<_>>()
        })
        .collect();
    let remaining = a.bias.len();
    a.def.outputs = remaining;
    b.def.inputs = match b.def.kind {
        LayerKind::Conv3x3ReluMaxPool2 => remaining,
        LayerKind::Linear { .. } => remaining * g,
    };
    true
}
