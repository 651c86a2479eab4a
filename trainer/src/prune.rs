//! Magnitude pruning: set the smallest weights to exactly zero, ranked by magnitude alone or by
//! magnitude per unit of inference cost.

use crate::model::is_weight;
use anyhow::{Context, Result};
use model_format::NetworkDef;
use std::collections::HashMap;

/// What to prune to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PruneTarget {
    /// Zero every weight with |w| ≤ threshold.
    Threshold(f32),
    /// Zero this fraction of the weights, ranked by magnitude over all layers together
    /// (`per_layer: false`) or within each layer.
    Sparsity { fraction: f64, per_layer: bool },
}

/// Gradual magnitude pruning during a masked fine-tune (Zhu & Gupta 2017, "To prune, or not to
/// prune"): the zero fraction rises from `from` to `to` along `to + (from − to)·(1 − t/T)³` over
/// the first `ramp_epochs` epochs, pruning every [`GradualPrune::EVERY`] steps, so the network
/// adapts to each cut while the cuts are still small; the rest of the run keeps the final mask.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GradualPrune {
    pub from: f64,
    pub to: f64,
    pub ramp_epochs: usize,
    pub per_layer: bool,
    /// The cuts' [`Ranking::per_mac`] exponent (0: magnitude alone, as before it existed).
    #[serde(default)]
    pub mac_exponent: f64,
}

impl GradualPrune {
    /// Optimizer steps between two cuts.
    pub const EVERY: u64 = 50;

    /// The target to prune to before optimizer step `step` of a run of `steps_per_epoch`, if
    /// that step is a cut: every [`Self::EVERY`] steps of the ramp and at its last step, so
    /// the ramp's last epoch ends at the target.
    pub fn cut_at(&self, step: u64, steps_per_epoch: u64) -> Option<PruneTarget> {
        let last = (self.ramp_epochs as u64 * steps_per_epoch).checked_sub(1)?;
        if step > last || (!step.is_multiple_of(Self::EVERY) && step != last) {
            return None;
        }
        let left = 1.0 - step as f64 / last.max(1) as f64;
        Some(PruneTarget::Sparsity {
            fraction: self.to + (self.from - self.to) * left.powi(3),
            per_layer: self.per_layer,
        })
    }
}

/// How a sparsity target ranks the weights.
#[derive(Debug, Clone, Default)]
pub struct Ranking {
    /// Per weight tensor, per column of its weight matrix: what the weight's magnitude is
    /// divided by. Tensors not named rank by magnitude alone.
    divisors: HashMap<String, Vec<f32>>,
}

impl Ranking {
    /// By magnitude alone.
    pub fn magnitude() -> Self {
        Self::default()
    }

    /// By `|w| / MACs^exponent`, MACs being what the weight costs per inference
    /// (`sparse_engine::cost::column_macs`: a conv tap of the recipe's conv1 about 784, of
    /// conv2 196, a linear weight 1). At equal magnitude a costly conv weight goes first, so
    /// the same number of zeros saves more multiply-accumulates; 0 is [`Self::magnitude`].
    pub fn per_mac(network: &NetworkDef, exponent: f64) -> Result<Self> {
        if exponent == 0.0 {
            return Ok(Self::magnitude());
        }
        let net = network.network().context("the model's network")?;
        let divisors = net
            .layers
            .iter()
            .map(|layer| {
                let costs = (0..layer.cols())
                    .map(|c| {
                        let macs = sparse_engine::cost::column_macs(layer, c).max(1);
                        (macs as f64).powf(exponent) as f32
                    })
                    .collect();
                (format!("{}.weight", layer.name), costs)
            })
            .collect();
        Ok(Ranking { divisors })
    }

    /// The ranking key of value `i` of a tensor whose per-column divisors are `divisors`.
    fn key(divisors: Option<&[f32]>, i: usize, v: f32) -> f32 {
        match divisors {
            Some(d) if !d.is_empty() => v.abs() / d[i % d.len()],
            _ => v.abs(),
        }
    }
}

/// Zeros weights (never biases) of `params` in place, ranked by magnitude; returns how many
/// weights are zero after.
pub fn prune(params: &mut [(String, Vec<f32>)], target: PruneTarget) -> usize {
    prune_ranked(params, target, &Ranking::magnitude())
}

/// [`prune`] with a sparsity target ranking the weights as `ranking` says.
pub fn prune_ranked(
    params: &mut [(String, Vec<f32>)],
    target: PruneTarget,
    ranking: &Ranking,
) -> usize {
    let weights = params
        .iter_mut()
        .filter(|(n, _)| is_weight(n))
        .map(|(n, w)| (ranking.divisors.get(n.as_str()).map(Vec::as_slice), w));
    match target {
        PruneTarget::Threshold(t) => {
            for (_, w) in weights {
                w.iter_mut().filter(|x| x.abs() <= t).for_each(|x| *x = 0.0);
            }
        }
        PruneTarget::Sparsity {
            fraction,
            per_layer: true,
        } => {
            for (d, w) in weights {
                zero_smallest(&mut [(d, w.as_mut_slice())], fraction);
            }
        }
        PruneTarget::Sparsity {
            fraction,
            per_layer: false,
        } => {
            let mut all: Vec<_> = weights.map(|(d, w)| (d, w.as_mut_slice())).collect();
            zero_smallest(&mut all, fraction);
        }
    }
    params
        .iter()
        .filter(|(n, _)| is_weight(n))
        .map(|(_, w)| w.iter().filter(|&&x| x == 0.0).count())
        .sum()
}

/// Zeros the `round(fraction·len)` values across `groups` of smallest [`Ranking::key`] (ties
/// broken by position, so exactly that many end up zero). Zeros written are +0.0.
fn zero_smallest(groups: &mut [(Option<&[f32]>, &mut [f32])], fraction: f64) {
    let total: usize = groups.iter().map(|(_, g)| g.len()).sum();
    let k = ((fraction.clamp(0.0, 1.0) * total as f64).round() as usize).min(total);
    if k == 0 {
        return;
    }
    let mut ranked: Vec<(f32, usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, (d, vals))| {
            let d = *d;
            vals.iter()
                .enumerate()
                .map(move |(i, &v)| (Ranking::key(d, i, v), g, i))
        })
        .collect();
    ranked.select_nth_unstable_by(k - 1, |a, b| {
        a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    for &(_, g, i) in &ranked[..k] {
        groups[g].1[i] = 0.0;
    }
}
