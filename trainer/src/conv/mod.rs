//! The recipe's conv block — 3x3 convolution (stride 1, zero padding 1), bias, ReLU, 2x2
//! max-pool — as one Candle op built on `im2col` and matrix products.
//!
//! Candle 0.11's CPU `conv2d` backward runs `conv_transpose2d` for the input gradient and a
//! strided direct convolution for the kernel gradient, which together dominated a training step,
//! and its autograd zero-fills and accumulates a gradient buffer for every intermediate tensor.
//! Here the input is unfolded once into a `(C·9, N·H·W)` matrix (every tap's shifted copy of each
//! input plane is one contiguous row segment), so the forward pass and both gradients are single
//! large products (the `gemm` kernels Candle itself uses); the fold back (`col2im`) runs only when
//! the input needs a gradient (not for the image into conv1).

mod direct;

use crate::gemm::{inputs3, matmul, values, Inputs3, MatRef};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Mutex;

/// For tap offset `k` (0, 1, 2 → −1, 0, +1) along an axis of length `len`: the output range
/// whose input `o + k − 1` is inside the map.
fn valid(k: usize, len: usize) -> std::ops::Range<usize> {
    match k {
        0 => 1..len,
        1 => 0..len,
        _ => 0..len.saturating_sub(1),
    }
}

/// Unfolds `(n, c, h, w)` into `(c·9, n·h·w)`: row `ci·9 + ky·3 + kx`, column `(b·h + y)·w + x`
/// holds `x[b, ci, y + ky − 1, x + kx − 1]` (zero outside the map).
fn im2col<T: WithDType>(x: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let (hw, cols) = (h * w, n * h * w);
    let mut out = vec![T::zero(); c * 9 * cols];
    out.par_chunks_exact_mut(cols)
        .enumerate()
        .for_each(|(r, row)| {
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
        });
    out
}

/// The adjoint of [`im2col`]: adds every column entry back to the input position it came from.
fn col2im<T: WithDType>(cols: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let (hw, width) = (h * w, n * h * w);
    let mut out = vec![T::zero(); n * c * hw];
    // One batch element per task: its planes take contributions from every row, at its columns.
    out.par_chunks_exact_mut(c * hw)
        .enumerate()
        .for_each(|(b, image)| {
            for (r, row) in cols.chunks_exact(width).enumerate() {
                let (ci, ky, kx) = (r / 9, r % 9 / 3, r % 3);
                let src = &row[b * hw..(b + 1) * hw];
                let plane = &mut image[ci * hw..(ci + 1) * hw];
                for y in valid(ky, h) {
                    let dst = &mut plane[(y + ky - 1) * w..(y + ky) * w];
                    let xs = valid(kx, w);
                    let s = &src[y * w + xs.start..y * w + xs.end];
                    for (d, &v) in dst[xs.start + kx - 1..xs.end + kx - 1].iter_mut().zip(s) {
                        *d += v;
                    }
                }
            }
        });
    out
}

/// The whole block — convolution, bias, ReLU, 2x2 max-pool — as one graph node (input, kernel,
/// bias → pooled output): its gradients come from a scatter and three products computed here,
/// so Candle's autograd never materialises, zero-fills or accumulates into the unfolded input,
/// the full-resolution conv output, or their gradients. The forward pass keeps the unfolded
/// input (for the kernel gradient) and each pooling window's winner.
struct Conv3x3ReluPool {
    saved: Mutex<Option<Saved>>,
    /// A single-channel input that needs no gradient: keep the pooling winners as image
    /// positions instead of the unfolded input, for the [`direct`] backward pass.
    direct: bool,
}

/// What the forward pass keeps for the backward pass.
struct Saved {
    /// The unfolded input (`None` on the direct path).
    cols: Option<CpuStorage>,
    /// For each pooled output (in output order): the index of its window's first maximum in
    /// the conv output (on the direct path: its position in the image), or `NONE` when that
    /// maximum is ≤ 0 (ReLU: no gradient).
    winners: Vec<u32>,
}

const NONE: u32 = u32::MAX;

/// Winners as indices into the conv output (`o × n` planes of `plane` values) → positions in
/// their plane, for a single-channel input: the image position the direct backward pass reads.
fn to_positions(winners: &mut [u32], plane: usize) {
    let plane = plane as u32;
    winners
        .iter_mut()
        .filter(|v| **v != NONE)
        .for_each(|v| *v %= plane);
}

/// Pooled outputs and their winners (`NONE` until set), `per_image` of each for `n` images,
/// filled by `fill(image, outputs, winners)` in parallel over the images.
fn per_image_outputs<T: WithDType>(
    n: usize,
    per_image: usize,
    fill: impl Fn(usize, &mut [T], &mut [u32]) + Sync + Send,
) -> (Vec<T>, Vec<u32>) {
    let mut out = vec![T::zero(); n * per_image];
    let mut winners = vec![NONE; n * per_image];
    out.par_chunks_exact_mut(per_image)
        .zip(winners.par_chunks_exact_mut(per_image))
        .enumerate()
        .for_each(|(b, (out, winners))| fill(b, out, winners));
    (out, winners)
}

/// ReLU + 2x2 max-pool of the conv output `pre` (`o × n × h × w`) into `(n, o, h/2, w/2)`, and
/// each output's winner (PyTorch's choice: the first maximum of the window).
fn relu_pool<T: WithDType + Float>(
    pre: &[T],
    (n, h, w): (usize, usize, usize),
    o: usize,
) -> (Vec<T>, Vec<u32>) {
    let (oh, ow) = (h / 2, w / 2);
    per_image_outputs(n, o * oh * ow, |b, out, winners| {
        for oc in 0..o {
            let plane = (oc * n + b) * h * w;
            let dst = oc * oh * ow;
            for oy in 0..oh {
                for ox in 0..ow {
                    let base = plane + 2 * oy * w + 2 * ox;
                    let mut best = base;
                    for idx in [base + 1, base + w, base + w + 1] {
                        if pre[idx] > pre[best] {
                            best = idx;
                        }
                    }
                    if pre[best] > T::zero() {
                        out[dst + oy * ow + ox] = pre[best];
                        winners[dst + oy * ow + ox] = best as u32;
                    }
                }
            }
        }
    })
}

fn block_forward<T: WithDType + Float + std::ops::AddAssign>(
    x: &[T],
    w: &[T],
    b: &[T],
    dims: (usize, usize, usize, usize),
    o: usize,
) -> Result<(Vec<T>, Vec<T>, Vec<u32>)> {
    let (n, c, h, wd) = dims;
    let (k, p) = (c * 9, n * h * wd);
    let cols = im2col(x, dims);
    let mut pre = vec![T::zero(); o * p];
    for (row, &bias) in pre.chunks_exact_mut(p).zip(b) {
        row.fill(bias);
    }
    matmul(
        &mut pre,
        MatRef::rows(w, o, k),
        MatRef::rows(&cols, k, p),
        true,
    )?;
    let (out, winners) = relu_pool(&pre, (n, h, wd), o);
    Ok((out, cols, winners))
}

/// Kernel, bias and (when asked for) input gradients.
type BlockGrads<T> = (Vec<T>, Vec<T>, Option<Vec<T>>);

/// Gradients for kernel, bias and (when `want_input`) input from the pooled output's gradient
/// `g`, routed to each window's winner.
fn block_backward<T: WithDType + Float>(
    g: &[T],
    winners: &[u32],
    w: &[T],
    cols: &[T],
    dims: (usize, usize, usize, usize),
    o: usize,
    want_input: bool,
) -> Result<BlockGrads<T>> {
    let (n, c, h, wd) = dims;
    let (k, p) = (c * 9, n * h * wd);
    // Each output channel's row of the conv gradient takes its windows' winners; the pooled
    // gradient is laid out (n, o, h/2, w/2).
    let mut g_pre = vec![T::zero(); o * p];
    let pooled = (h / 2) * (wd / 2);
    g_pre
        .par_chunks_exact_mut(p)
        .enumerate()
        .for_each(|(oc, row)| {
            for b in 0..n {
                let at = (b * o + oc) * pooled;
                let (Some(gs), Some(ws)) = (g.get(at..at + pooled), winners.get(at..at + pooled))
                else {
                    continue;
                };
                for (&gv, &win) in gs.iter().zip(ws) {
                    if let Some(slot) = (win as usize)
                        .checked_sub(oc * p)
                        .and_then(|i| row.get_mut(i))
                    {
                        *slot = gv;
                    }
                }
            }
        });
    let g_mat = MatRef::rows(&g_pre, o, p);
    let mut grad_w = vec![T::zero(); o * k];
    matmul(&mut grad_w, g_mat, MatRef::rows(cols, k, p).t(), false)?;
    let grad_b = g_pre
        .chunks_exact(p)
        .map(|row| row.iter().fold(T::zero(), |s, &v| s + v))
        .collect();
    let grad_x = if want_input {
        let mut grad_cols = vec![T::zero(); k * p];
        matmul(&mut grad_cols, MatRef::rows(w, o, k).t(), g_mat, false)?;
        Some(col2im(&grad_cols, dims))
    } else {
        None
    };
    Ok((grad_w, grad_b, grad_x))
}

impl CustomOp3 for Conv3x3ReluPool {
    fn name(&self) -> &'static str {
        "conv3x3-relu-maxpool2"
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
        let dims = lx.shape().dims4()?;
        let (n, _, h, w) = dims;
        if h % 2 != 0 || w % 2 != 0 {
            candle_core::bail!("conv3x3-relu-maxpool2: odd spatial size {h}x{w}");
        }
        let (o, c, _, _) = lw.shape().dims4()?;
        if c != dims.1 {
            candle_core::bail!(
                "conv3x3-relu-maxpool2: kernel for {c} channels, input has {}",
                dims.1
            );
        }
        let (out, cols, mut winners) = match inputs3(self.name(), [(sx, lx), (sw, lw), (sb, lb)])? {
            Inputs3::F32([x, wt, b]) => {
                let (out, cols, win) = block_forward(x, wt, b, dims, o)?;
                (CpuStorage::F32(out), CpuStorage::F32(cols), win)
            }
            Inputs3::F64([x, wt, b]) => {
                let (out, cols, win) = block_forward(x, wt, b, dims, o)?;
                (CpuStorage::F64(out), CpuStorage::F64(cols), win)
            }
        };
        // The direct backward pass needs the winners' image positions, not the unfolded input.
        let cols = if self.direct && c == 1 {
            to_positions(&mut winners, h * w);
            None
        } else {
            Some(cols)
        };
        if let Ok(mut saved) = self.saved.lock() {
            *saved = Some(Saved { cols, winners });
        }
        Ok((out, Shape::from((n, o, h / 2, w / 2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims4()?;
        let o = w.dim(0)?;
        let Saved { cols, winners } = self
            .saved
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| {
                candle_core::Error::Msg("conv3x3-relu-maxpool2: no saved state".into())
            })?;
        // The image into the first layer needs no gradient: skip that product and fold.
        let want_input = x.track_op();
        macro_rules! grads {
            ($t:ty, $cols:expr) => {{
                let (g, wv) = (values::<$t>(grad)?, values::<$t>(w)?);
                let (gw, gb, gx) = block_backward(&g, &winners, &wv, $cols, dims, o, want_input)?;
                let t = |v: Vec<$t>, s: &Shape| Tensor::from_vec(v, s, x.device());
                (
                    gx.map(|v| t(v, x.shape())).transpose()?,
                    Some(t(gw, w.shape())?),
                    Some(t(gb, b.shape())?),
                )
            }};
        }
        macro_rules! direct_grads {
            ($t:ty) => {{
                let (g, xv) = (values::<$t>(grad)?, values::<$t>(x)?);
                let (n, _, h, wd) = dims;
                let (gw, gb) = direct::backward(&g, &winners, &xv, (n, h, wd), o);
                let t = |v: Vec<$t>, s: &Shape| Tensor::from_vec(v, s, x.device());
                (None, Some(t(gw, w.shape())?), Some(t(gb, b.shape())?))
            }};
        }
        Ok(match (&cols, x.dtype()) {
            (Some(CpuStorage::F32(cols)), _) => grads!(f32, cols),
            (Some(CpuStorage::F64(cols)), _) => grads!(f64, cols),
            (None, DType::F32) => direct_grads!(f32),
            (None, DType::F64) => direct_grads!(f64),
            _ => candle_core::bail!("conv3x3-relu-maxpool2: f32 or f64 only"),
        })
    }
}

/// Milliseconds per call of the block's forward pass and of its backward pass (kernel and bias
/// gradients, plus the input gradient when `input_grad`), on real tensors: for the profile.
pub fn time_block(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    input_grad: bool,
    reps: usize,
) -> Result<(f64, f64)> {
    let dims = x.dims4()?;
    let o = weight.dim(0)?;
    let (xv, wv, bv) = (
        values::<f32>(x)?,
        values::<f32>(weight)?,
        values::<f32>(bias)?,
    );
    let (n, c, h, w) = dims;
    let start = std::time::Instant::now();
    let mut last = None;
    for _ in 0..reps.max(1) {
        last = Some(block_forward(&xv, &wv, &bv, dims, o)?);
    }
    let forward = start.elapsed().as_secs_f64() / reps.max(1) as f64;
    let Some((out, cols, winners)) = last else {
        candle_core::bail!("no repetition");
    };
    let g = vec![1f32; out.len()];
    let mut positions = winners.clone();
    to_positions(&mut positions, h * w);
    let start = std::time::Instant::now();
    for _ in 0..reps.max(1) {
        if c == 1 && !input_grad {
            direct::backward(&g, &positions, &xv, (n, h, w), o);
        } else {
            block_backward(&g, &winners, &wv, &cols, dims, o, input_grad)?;
        }
    }
    let backward = start.elapsed().as_secs_f64() / reps.max(1) as f64;
    Ok((1000.0 * forward, 1000.0 * backward))
}

/// `max_pool2d(relu(conv2d(x, w, padding 1) + b), 2)` for `x (n, c, h, w)`, `w (o, c, 3, 3)`,
/// `b (o)` with even `h`, `w`: `(n, o, h/2, w/2)`, with PyTorch's gradients.
pub fn conv3x3_relu_pool(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let op = Conv3x3ReluPool {
        saved: Mutex::new(None),
        direct: x.dim(1)? == 1 && !x.track_op(),
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}
