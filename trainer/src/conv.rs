//! The recipe's 3x3 convolution (stride 1, zero padding 1) as `im2col` + one matrix product.
//!
//! Candle 0.11's CPU `conv2d` backward runs `conv_transpose2d` for the input gradient and a
//! strided direct convolution for the kernel gradient, which together dominated a training step.
//! Here the input is unfolded once into a `(C·9, N·H·W)` matrix (every tap's shifted copy of each
//! input plane is one contiguous row segment), so the forward pass and both gradients are single
//! large matrix products that Candle hands to its `gemm` kernels; the unfold's own gradient is
//! the matching fold (`col2im`), and it is not run at all when the input needs no gradient (the
//! image into conv1).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

/// Unfolds `(n, c, h, w)` into `(c·9, n·h·w)`: row `ci·9 + ky·3 + kx`, column `(b·h + y)·w + x`
/// holds `x[b, ci, y + ky − 1, x + kx − 1]` (zero outside the map).
struct Im2col3x3;

/// The adjoint of [`Im2col3x3`]: adds every column entry back to the input position it came
/// from.
struct Col2im3x3 {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
}

/// For tap offset `k` (0, 1, 2 → −1, 0, +1) along an axis of length `len`: the output range
/// whose input `o + k − 1` is inside the map.
fn valid(k: usize, len: usize) -> std::ops::Range<usize> {
    match k {
        0 => 1..len,
        1 => 0..len,
        _ => 0..len.saturating_sub(1),
    }
}

fn im2col<T: WithDType>(x: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let (hw, cols) = (h * w, n * h * w);
    let mut out = vec![T::zero(); c * 9 * cols];
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        let (ci, ky, kx) = (r / 9, r % 9 / 3, r % 3);
        for (b, dst) in row.chunks_exact_mut(hw).enumerate() {
            let plane = &x[(b * c + ci) * hw..(b * c + ci + 1) * hw];
            for y in valid(ky, h) {
                let src = &plane[(y + ky - 1) * w..(y + ky) * w];
                let xs = valid(kx, w);
                let d = &mut dst[y * w + xs.start..y * w + xs.end];
                d.copy_from_slice(&src[xs.start + kx - 1..xs.end + kx - 1]);
            }
        }
    }
    out
}

fn col2im<T: WithDType>(cols: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let (hw, width) = (h * w, n * h * w);
    let mut out = vec![T::zero(); n * c * hw];
    for (r, row) in cols.chunks_exact(width).enumerate() {
        let (ci, ky, kx) = (r / 9, r % 9 / 3, r % 3);
        for (b, src) in row.chunks_exact(hw).enumerate() {
            let plane = &mut out[(b * c + ci) * hw..(b * c + ci + 1) * hw];
            for y in valid(ky, h) {
                let dst = &mut plane[(y + ky - 1) * w..(y + ky) * w];
                let xs = valid(kx, w);
                let s = &src[y * w + xs.start..y * w + xs.end];
                for (d, &v) in dst[xs.start + kx - 1..xs.end + kx - 1].iter_mut().zip(s) {
                    *d += v;
                }
            }
        }
    }
    out
}

/// The contiguous data of a CPU tensor as `f32` or `f64`, and the op applied to it.
fn map_float(
    storage: &CpuStorage,
    layout: &Layout,
    name: &str,
    f32_op: impl FnOnce(&[f32]) -> Vec<f32>,
    f64_op: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{name}: input must be contiguous");
    };
    Ok(match storage {
        CpuStorage::F32(x) => CpuStorage::F32(f32_op(&x[start..end])),
        CpuStorage::F64(x) => CpuStorage::F64(f64_op(&x[start..end])),
        _ => candle_core::bail!("{name}: f32 or f64 only"),
    })
}

impl CustomOp1 for Im2col3x3 {
    fn name(&self) -> &'static str {
        "im2col-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        let (n, c, h, w) = dims;
        let out = map_float(
            storage,
            layout,
            self.name(),
            |x| im2col(x, dims),
            |x| im2col(x, dims),
        )?;
        Ok((out, Shape::from((c * 9, n * h * w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let fold = Col2im3x3 { n, c, h, w };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&fold)?))
    }
}

impl CustomOp1 for Col2im3x3 {
    fn name(&self) -> &'static str {
        "col2im-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = (self.n, self.c, self.h, self.w);
        if layout.shape().dims() != [self.c * 9, self.n * self.h * self.w] {
            candle_core::bail!("col2im-3x3: unexpected shape {:?}", layout.shape());
        }
        let out = map_float(
            storage,
            layout,
            self.name(),
            |x| col2im(x, dims),
            |x| col2im(x, dims),
        )?;
        Ok((out, Shape::from(dims)))
    }
}

/// `conv2d(x, w, padding 1) + b` for `x (n, c, h, w)`, `w (o, c, 3, 3)`, `b (o)`, returned in
/// `(o, n, h, w)` order (what the matrix product yields; the pooling op reads it as is).
pub fn conv3x3_cnhw(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let o = weight.dim(0)?;
    let cols = x.contiguous()?.apply_op1(Im2col3x3)?;
    weight
        .reshape((o, c * 9))?
        .matmul(&cols)?
        .broadcast_add(&bias.reshape((o, 1))?)?
        .reshape((o, n, h, w))
}
