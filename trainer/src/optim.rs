//! Adam with an optional proximal L1 step and masks that pin pruned weights at exact zero.
//!
//! Plain L1 in the loss never reaches exact zeros under Adam: its normalised steps keep a weight
//! oscillating around 0. The proximal step soft-thresholds each weight after the Adam update by
//! `lr·λ / (sqrt(v̂) + ε)`, the size of Adam's own step for that weight, so weights whose gradient
//! signal is weaker than the penalty land on exactly 0.0.

use crate::model::{is_weight, Cnn};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// Which parameters an L1 penalty applies to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every parameter, biases included (the recipe as written).
    All,
    /// Weights only: biases are few and cheap, and zeroing them buys nothing.
    Weights,
}

impl Scope {
    pub fn covers(self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Weights => is_weight(name),
        }
    }
}

/// How the L1 penalty λ·Σ|w| enters training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
// Externally tagged: an internally tagged enum cannot hold f64s when serde_json's
// `arbitrary_precision` feature is on (some workspace dependency enables it).
#[serde(rename_all = "kebab-case")]
pub enum Penalty {
    None,
    /// Added to the loss and differentiated (the recipe as written).
    L1 {
        lambda: f64,
        scope: Scope,
    },
    /// Applied as a proximal soft-threshold after each Adam step.
    Prox {
        lambda: f64,
        scope: Scope,
    },
}

impl Penalty {
    pub fn lambda(&self) -> f64 {
        match *self {
            Penalty::None => 0.0,
            Penalty::L1 { lambda, .. } | Penalty::Prox { lambda, .. } => lambda,
        }
    }

    /// λ·Σ|w| over the covered parameters, when the penalty is part of the loss.
    pub fn loss_term(&self, model: &Cnn) -> Result<Option<Tensor>> {
        let Penalty::L1 { lambda, scope } = *self else {
            return Ok(None);
        };
        let mut total: Option<Tensor> = None;
        for (name, var) in model.params() {
            if scope.covers(name) {
                let s = var.as_tensor().abs()?.sum_all()?;
                total = Some(match total {
                    Some(t) => (t + s)?,
                    None => s,
                });
            }
        }
        total.map(|t| t.affine(lambda, 0.0)).transpose()
    }
}

/// Soft-thresholding: `sign(w)·max(|w| − τ, 0)`, written so that the result is +0.0 exactly
/// wherever `|w| ≤ τ`.
pub fn soft_threshold(w: &Tensor, tau: &Tensor) -> Result<Tensor> {
    let up = w.broadcast_sub(tau)?.relu()?;
    let down = w.neg()?.broadcast_sub(tau)?.relu()?;
    up - down
}

/// Adam's state: first and second moments per parameter and the step count.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: u64,
    pub first_moments: Vec<Tensor>,
    pub second_moments: Vec<Tensor>,
}

impl Adam {
    /// PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn new(model: &Cnn, lr: f64) -> Result<Self> {
        let zeros = || -> Result<Vec<Tensor>> {
            model
                .params()
                .iter()
                .map(|(_, v)| v.as_tensor().zeros_like())
                .collect()
        };
        Ok(Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            first_moments: zeros()?,
            second_moments: zeros()?,
        })
    }

    /// One update of every parameter that has a gradient; then the proximal step where the
    /// penalty asks for one; then masks (`1` keeps, `0` pins at +0.0) where given.
    pub fn step(
        &mut self,
        model: &Cnn,
        grads: &GradStore,
        penalty: &Penalty,
        masks: &[Option<Tensor>],
    ) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        for (i, (name, var)) in model.params().iter().enumerate() {
            let w = var.as_tensor();
            // Detached: a gradient can carry its own autograd graph (e.g. |w|'s sign(w)), and moments
            // built from it would chain every step's graph to the next (unbounded memory).
            let Some(g) = grads.get(w).map(|g| g.detach()) else {
                continue;
            };
            let m = (self.first_moments[i].affine(self.beta1, 0.0)?
                + g.affine(1.0 - self.beta1, 0.0)?)?;
            let v = (self.second_moments[i].affine(self.beta2, 0.0)?
                + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            // denom = sqrt(v̂) + ε, as PyTorch computes it.
            let denom = v.affine(1.0 / bias2, 0.0)?.sqrt()?.affine(1.0, self.eps)?;
            let mut updated = (w - (m.affine(self.lr / bias1, 0.0)? / &denom)?)?;
            if let Penalty::Prox { lambda, scope } = *penalty {
                if scope.covers(name) {
                    let tau = denom.recip()?.affine(self.lr * lambda, 0.0)?;
                    updated = soft_threshold(&updated, &tau)?;
                }
            }
            if let Some(Some(mask)) = masks.get(i) {
                updated = mask.where_cond(&updated, &updated.zeros_like()?)?;
            }
            var.set(&updated.detach())?;
            self.first_moments[i] = m.detach();
            self.second_moments[i] = v.detach();
        }
        Ok(())
    }
}
