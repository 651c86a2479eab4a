//! Fused ReLU + 2x2 max-pool (stride 2) as a Candle custom op: the tests' reference for the
//! pooling half of the trainer's conv blocks (PyTorch's gradient semantics).
//!
//! Candle 0.11.1's own `max_pool2d` backward scales the gradient by the fraction of tied maxima
//! in each window, so a unique maximum receives only a quarter of its gradient (measured: the
//! gradient of `sum(max_pool2d([[1,2],[3,4]]))` comes back as `[0,0,0,0.25]`). This op routes each window's gradient to its first
//! maximum when that maximum is positive — exactly PyTorch's `max_pool2d(relu(x))` gradient — and
//! saves a pass over memory by fusing the ReLU.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

struct ReluMaxPool2;

trait Elem: Copy + PartialOrd + Default + candle_core::WithDType {}
impl Elem for f32 {}
impl Elem for f64 {}

/// Index (in `x`) of the first maximum of each 2x2 window, and that maximum.
fn window_argmax<T: Elem>(
    x: &[T],
    plane: usize,
    h: usize,
    w: usize,
    oy: usize,
    ox: usize,
) -> (usize, T) {
    let base = plane * h * w + 2 * oy * w + 2 * ox;
    let mut best = (base, x[base]);
    for idx in [base + 1, base + w, base + w + 1] {
        if x[idx] > best.1 {
            best = (idx, x[idx]);
        }
    }
    best
}

fn forward<T: Elem>(x: &[T], planes: usize, h: usize, w: usize) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let (_, m) = window_argmax(x, p, h, w, oy, ox);
                out.push(if m > T::default() { m } else { T::default() });
            }
        }
    }
    out
}

fn backward<T: Elem>(x: &[T], grad: &[T], planes: usize, h: usize, w: usize) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![T::default(); x.len()];
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let (idx, m) = window_argmax(x, p, h, w, oy, ox);
                if m > T::default() {
                    out[idx] = grad[p * oh * ow + oy * ow + ox];
                }
            }
        }
    }
    out
}

fn dims4(shape: &Shape) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = shape.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("relu_max_pool2: odd spatial size {h}x{w}");
    }
    Ok((n, c, h, w))
}

impl CustomOp1 for ReluMaxPool2 {
    fn name(&self) -> &'static str {
        "relu-max-pool2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(layout.shape())?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("relu_max_pool2: input must be contiguous");
        };
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(&x[start..end], n * c, h, w)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(&x[start..end], n * c, h, w)),
            _ => candle_core::bail!("relu_max_pool2: f32 or f64 only"),
        };
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = dims4(arg.shape())?;
        let planes = n * c;
        let flat = |t: &Tensor| t.contiguous()?.flatten_all();
        let (x, g) = (flat(arg)?, flat(grad_res)?);
        let grad = match arg.dtype() {
            DType::F32 => Tensor::from_vec(
                backward(&x.to_vec1::<f32>()?, &g.to_vec1::<f32>()?, planes, h, w),
                arg.shape(),
                arg.device(),
            )?,
            DType::F64 => Tensor::from_vec(
                backward(&x.to_vec1::<f64>()?, &g.to_vec1::<f64>()?, planes, h, w),
                arg.shape(),
                arg.device(),
            )?,
            dtype => candle_core::bail!("relu_max_pool2: unsupported {dtype:?}"),
        };
        Ok(Some(grad))
    }
}

/// `max_pool2d(relu(x), 2)` for `(n, c, h, w)` with even `h`, `w`, with PyTorch's gradient.
pub fn relu_max_pool2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ReluMaxPool2)
}
