//! Adam with an optional proximal L1 step and masks that pin pruned weights at exact zero.
//!
//! Plain L1 in the loss never reaches exact zeros under Adam: its normalised steps keep a weight
//! oscillating around 0. The proximal step soft-thresholds each weight after the Adam update by
//! `lr·λ / (sqrt(v̂) + ε)`, the size of Adam's own step for that weight, so weights whose gradient
//! signal is weaker than the penalty land on exactly 0.0.

use crate::model::{is_weight, Cnn};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, WithDType};
use num_traits::Float;

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

/// How the learning rate moves over a run.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The same rate at every step (the reference recipe).
    #[default]
    Constant,
    /// Cosine decay from the rate to zero over the run's steps (Loshchilov & Hutter 2017): the
    /// last epochs settle instead of ending wherever a constant step leaves them.
    Cosine,
}

impl LrSchedule {
    /// The factor on the base rate at optimizer step `step` (0-based) of `total`.
    pub fn factor(self, step: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let done = step.min(total) as f64 / total.max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * done).cos())
            }
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
                let s = var.as_tensor().apply_op1(AbsSum)?;
                total = Some(match total {
                    Some(t) => (t + s)?,
                    None => s,
                });
            }
        }
        total.map(|t| t.affine(lambda, 0.0)).transpose()
    }
}

/// `Σ|w|` as one op whose gradient, `sign(w)` (0 at 0, as PyTorch's `abs`), is a single pass:
/// Candle's `abs().sum_all()` allocates and accumulates four full-size tensors per parameter per
/// backward pass.
struct AbsSum;

impl candle_core::CustomOp1 for AbsSum {
    fn name(&self) -> &'static str {
        "abs-sum"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("abs-sum: input must be contiguous");
        };
        let out = match storage {
            CpuStorage::F32(x) => {
                CpuStorage::F32(vec![x[start..end].iter().map(|v| v.abs()).sum()])
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(vec![x[start..end].iter().map(|v| v.abs()).sum()])
            }
            _ => candle_core::bail!("abs-sum: f32 or f64 only"),
        };
        Ok((out, candle_core::Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let sign = |v: f64| {
            if v > 0.0 {
                g
            } else if v < 0.0 {
                -g
            } else {
                0.0
            }
        };
        let grad = match arg.dtype() {
            DType::F32 => {
                let v = arg.flatten_all()?.to_vec1::<f32>()?;
                let out: Vec<f32> = v.iter().map(|&w| sign(f64::from(w)) as f32).collect();
                Tensor::from_vec(out, arg.shape(), arg.device())?
            }
            DType::F64 => {
                let v = arg.flatten_all()?.to_vec1::<f64>()?;
                let out: Vec<f64> = v.iter().map(|&w| sign(w)).collect();
                Tensor::from_vec(out, arg.shape(), arg.device())?
            }
            dtype => candle_core::bail!("abs-sum: unsupported {dtype:?}"),
        };
        Ok(Some(grad))
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
    /// penalty asks for one; then masks (`1` keeps, `0` pins at +0.0) where given. One fused
    /// pass over each parameter's values (a chain of tensor ops allocated a dozen temporaries per
    /// parameter per step).
    pub fn step(
        &mut self,
        model: &Cnn,
        grads: &GradStore,
        penalty: &Penalty,
        masks: &[Option<Tensor>],
    ) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let hyper = Hyper {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            bias1: 1.0 - self.beta1.powi(t),
            bias2: 1.0 - self.beta2.powi(t),
        };
        for (i, (name, var)) in model.params().iter().enumerate() {
            let w = var.as_tensor();
            let Some(g) = grads.get(w) else {
                continue;
            };
            let lambda = match *penalty {
                Penalty::Prox { lambda, scope } if scope.covers(name) => Some(lambda),
                _ => None,
            };
            let mask = match masks.get(i) {
                Some(Some(m)) => Some(m.flatten_all()?.to_dtype(DType::U8)?.to_vec1::<u8>()?),
                _ => None,
            };
            let (m, v) = (&self.first_moments[i], &self.second_moments[i]);
            let (w_new, m_new, v_new) = match w.dtype() {
                DType::F32 => update::<f32>(w, g, m, v, &hyper, lambda, mask.as_deref())?,
                DType::F64 => update::<f64>(w, g, m, v, &hyper, lambda, mask.as_deref())?,
                dtype => candle_core::bail!("adam: unsupported {dtype:?}"),
            };
            var.set(&w_new)?;
            self.first_moments[i] = m_new;
            self.second_moments[i] = v_new;
        }
        Ok(())
    }
}

/// Adam's hyper-parameters for one step, with the bias corrections `1 − βᵗ`.
struct Hyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    bias1: f64,
    bias2: f64,
}

/// One parameter's update in its own precision (as PyTorch computes it): new weights, first
/// and second moments. Gradients are read as plain values, so no autograd graph survives.
fn update<T: WithDType + Float>(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &Hyper,
    lambda: Option<f64>,
    mask: Option<&[u8]>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<T>();
    let (mut wv, gv, mut mv, mut vv) = (flat(w)?, flat(g)?, flat(m)?, flat(v)?);
    let c = |x: f64| T::from_f64(x);
    let (b1, b2, one) = (c(h.beta1), c(h.beta2), T::one());
    let (step, inv_bias2, eps) = (c(h.lr / h.bias1), c(1.0 / h.bias2), c(h.eps));
    let shrink = lambda.map(|l| c(h.lr * l));
    for (j, ((w, &g), (m, v))) in wv
        .iter_mut()
        .zip(&gv)
        .zip(mv.iter_mut().zip(vv.iter_mut()))
        .enumerate()
    {
        *m = *m * b1 + g * (one - b1);
        *v = *v * b2 + g * g * (one - b2);
        // denom = sqrt(v̂) + ε, as PyTorch computes it.
        let denom = (*v * inv_bias2).sqrt() + eps;
        let mut x = *w - *m * step / denom;
        if let Some(shrink) = shrink {
            let tau = shrink / denom;
            x = if x > tau {
                x - tau
            } else if x < -tau {
                x + tau
            } else {
                T::zero()
            };
        }
        if mask.and_then(|mk| mk.get(j)) == Some(&0) {
            x = T::zero();
        }
        *w = x;
    }
    let shape = w.shape();
    let back = |values: Vec<T>| Tensor::from_vec(values, shape, w.device());
    Ok((back(wv)?, back(mv)?, back(vv)?))
}
