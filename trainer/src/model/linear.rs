//! A fully connected layer (`y = x·Wᵀ + b`, optionally ReLU) as one Candle op on `gemm`.
//!
//! Written with Candle's own ops the layer is four graph nodes (transpose, product, broadcast
//! add, ReLU), and the backward pass zero-fills and accumulates a gradient buffer for each,
//! transposing the kernel gradient back; here the three gradients are two products and a sum.

use crate::model::gemm::{grad_tensors, inputs3, matmul, values, with_values3, Inputs3, MatRef};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use num_traits::Float;

struct Linear {
    relu: bool,
}

fn forward<T: WithDType + Float>(
    x: &[T],
    w: &[T],
    b: &[T],
    (n, k, m): (usize, usize, usize),
    relu: bool,
) -> Result<Vec<T>> {
    let mut out = vec![T::zero(); n * m];
    for row in out.chunks_exact_mut(m) {
        row.copy_from_slice(&b[..m]);
    }
    matmul(
        &mut out,
        MatRef::rows(x, n, k),
        MatRef::rows(w, m, k).t(),
        true,
    )?;
    if relu {
        out.iter_mut()
            .for_each(|v| *v = if *v > T::zero() { *v } else { T::zero() });
    }
    Ok(out)
}

/// Kernel, bias and (when asked for) input gradients.
type Grads<T> = (Vec<T>, Vec<T>, Option<Vec<T>>);

fn backward<T: WithDType + Float + std::ops::AddAssign>(
    x: &[T],
    w: &[T],
    out: &[T],
    mut g: Vec<T>,
    (n, k, m): (usize, usize, usize),
    relu: bool,
    want_input: bool,
) -> Result<Grads<T>> {
    if relu {
        // ReLU's gradient: zero where the output was clamped (PyTorch: 0 at exactly 0 too).
        for (gv, &o) in g.iter_mut().zip(out) {
            if o <= T::zero() {
                *gv = T::zero();
            }
        }
    }
    let g_mat = MatRef::rows(&g, n, m);
    let mut grad_w = vec![T::zero(); m * k];
    matmul(&mut grad_w, g_mat.t(), MatRef::rows(x, n, k), false)?;
    let mut grad_b = vec![T::zero(); m];
    for row in g.chunks_exact(m) {
        for (s, &v) in grad_b.iter_mut().zip(row) {
            *s += v;
        }
    }
    let grad_x = if want_input {
        let mut grad_x = vec![T::zero(); n * k];
        matmul(&mut grad_x, g_mat, MatRef::rows(w, m, k), false)?;
        Some(grad_x)
    } else {
        None
    };
    Ok((grad_w, grad_b, grad_x))
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k) = lx.shape().dims2()?;
        let (m, k2) = lw.shape().dims2()?;
        if k != k2 || lb.shape().dims1()? != m {
            candle_core::bail!(
                "linear: shapes {:?} {:?} {:?}",
                lx.shape(),
                lw.shape(),
                lb.shape()
            );
        }
        let dims = (n, k, m);
        let out = match inputs3(self.name(), [(sx, lx), (sw, lw), (sb, lb)])? {
            Inputs3::F32([x, w, b]) => CpuStorage::F32(forward(x, w, b, dims, self.relu)?),
            Inputs3::F64([x, w, b]) => CpuStorage::F64(forward(x, w, b, dims, self.relu)?),
        };
        Ok((out, Shape::from((n, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let m = w.dim(0)?;
        let want_input = x.track_op();
        macro_rules! grads {
            ($t:ty) => {{
                let grads = with_values3::<$t, _>([x, w, res], |[xv, wv, rv]| {
                    backward(
                        xv,
                        wv,
                        rv,
                        values::<$t>(grad)?,
                        (n, k, m),
                        self.relu,
                        want_input,
                    )
                })??;
                grad_tensors(grads, [x, w, b])
            }};
        }
        match x.dtype() {
            DType::F32 => grads!(f32),
            DType::F64 => grads!(f64),
            dtype => candle_core::bail!("linear: unsupported {dtype:?}"),
        }
    }
}

/// `x·Wᵀ + b` for `x (n, k)`, `W (m, k)`, `b (m)`, then ReLU when `relu`: `(n, m)`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Linear { relu })
}
