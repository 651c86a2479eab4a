//! The recipe's conv block — 3x3 convolution (stride 1, zero padding 1), bias, ReLU, 2x2
//! max-pool — as one Candle op.
//!
//! Candle 0.11's CPU `conv2d` backward runs `conv_transpose2d` for the input gradient and a
//! strided direct convolution for the kernel gradient, which together dominated a training step,
//! and its autograd zero-fills and accumulates a gradient buffer for every intermediate tensor.
//! Here each image goes through on one core with buffers that stay in its cache (module
//! `image`). The forward pass (`forward`) is a direct convolution for a single-channel input,
//! else one product of the image's patches with the kernel (the `gemm` kernels Candle itself
//! uses), fused with ReLU and pooling. The backward pass (`backward`) sums over the pooling
//! winners only (at most a quarter of the positions). A single-channel input that needs no
//! gradient (the image into conv1) takes the `direct` backward pass.

mod backward;
mod direct;
mod forward;
mod image;

use crate::model::gemm::{grad_tensors, inputs3, values, with_values3, Inputs3};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use image::{with_simd, BlockShape};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Mutex;

/// The whole block — convolution, bias, ReLU, 2x2 max-pool — as one graph node (input, kernel,
/// bias → pooled output): its gradients are computed here from each pooling window's winner, so
/// Candle's autograd never materialises, zero-fills or accumulates the full-resolution conv
/// output or its gradient. The forward pass keeps only the winners.
struct Conv3x3ReluPool {
    winners: Mutex<Option<Vec<u32>>>,
}

/// Marks a pooled output whose window's maximum is ≤ 0 (ReLU: no gradient).
const NONE: u32 = u32::MAX;

/// The images of a batch are split into this many fixed shares for the backward pass, each
/// summing its own kernel gradient: the sums' order, and so the result, does not depend on how
/// the threads happen to pick up the work (a resumed run must replay exactly).
const SHARES: usize = 8;

/// Pooled outputs `(n, o, h/2, w/2)` and, for each, the position (`y·w + x`) in its image of
/// its window's first maximum, or [`NONE`].
fn block_forward<T: WithDType + Float>(
    x: &[T],
    w: &[T],
    b: &[T],
    s: BlockShape,
    n: usize,
) -> Result<(Vec<T>, Vec<u32>)> {
    let (per_in, per_out) = (s.c * s.positions(), s.o * s.pooled());
    let mut out = vec![T::zero(); n * per_out];
    let mut winners = vec![NONE; n * per_out];
    if per_out == 0 {
        return Ok((out, winners));
    }
    let kernel = forward::ForwardKernel::new(w, s);
    out.par_chunks_exact_mut(per_out)
        .zip(winners.par_chunks_exact_mut(per_out))
        .enumerate()
        .try_for_each_init(
            || forward::Forward::new(s),
            |f, (i, (out, win))| {
                with_simd(
                    #[inline(always)]
                    || f.image(&x[i * per_in..(i + 1) * per_in], &kernel, b, out, win),
                )
            },
        )?;
    Ok((out, winners))
}

/// Kernel, bias and (when asked for) input gradients.
type BlockGrads<T> = (Vec<T>, Vec<T>, Option<Vec<T>>);

/// Gradients for kernel, bias and (when `want_input`) input from the pooled output's gradient
/// `g`, routed to each window's winner. A single-channel input that needs no gradient (the image
/// into conv1) takes the `direct` pass.
fn block_backward<T: WithDType + Float + std::ops::AddAssign>(
    g: &[T],
    winners: &[u32],
    x: &[T],
    w: &[T],
    s: BlockShape,
    n: usize,
    want_input: bool,
) -> BlockGrads<T> {
    if s.c == 1 && !want_input {
        let (grad_w, grad_b) = direct::backward(g, winners, x, (n, s.h, s.w), s.o);
        return (grad_w, grad_b, None);
    }
    let (per_in, per_out) = (s.c * s.positions(), s.o * s.pooled());
    let mut grad_x = vec![T::zero(); if want_input { n * per_in } else { 0 }];
    let mut grad_w = vec![T::zero(); s.o * s.taps()];
    let mut grad_b = vec![T::zero(); s.o];
    if per_in == 0 || per_out == 0 || n == 0 {
        return (grad_w, grad_b, want_input.then_some(grad_x));
    }
    let w_taps = image::tap_major(w, s);
    let share = n.div_ceil(SHARES);
    let run = |first: usize, count: usize, mut gx: Option<&mut [T]>| {
        with_simd(
            #[inline(always)]
            || {
                let mut part = backward::Backward::new(s);
                for (i, b) in (first..first + count).enumerate() {
                    part.image(
                        &x[b * per_in..(b + 1) * per_in],
                        &g[b * per_out..(b + 1) * per_out],
                        &winners[b * per_out..(b + 1) * per_out],
                        &w_taps,
                        gx.as_deref_mut()
                            .map(|gx| &mut gx[i * per_in..(i + 1) * per_in]),
                    );
                }
                part
            },
        )
    };
    let parts: Vec<backward::Backward<T>> = if want_input {
        grad_x
            .par_chunks_mut(share * per_in)
            .enumerate()
            .map(|(i, gx)| run(i * share, gx.len() / per_in, Some(gx)))
            .collect()
    } else {
        (0..n.div_ceil(share))
            .into_par_iter()
            .map(|i| run(i * share, share.min(n - i * share), None))
            .collect()
    };
    // Summed in share order: the same result on any number of threads.
    for part in &parts {
        for (a, &v) in grad_w.iter_mut().zip(&part.grad_w) {
            *a += v;
        }
        for (a, &v) in grad_b.iter_mut().zip(&part.grad_b) {
            *a += v;
        }
    }
    (
        image::channel_major(&grad_w, s),
        grad_b,
        want_input.then_some(grad_x),
    )
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
        let (n, s) = block_shape(lx.shape(), lw.shape())?;
        if lb.shape().dims1()? != s.o {
            candle_core::bail!(
                "conv3x3-relu-maxpool2: bias {:?} for {} channels",
                lb.shape(),
                s.o
            );
        }
        let (out, winners) = match inputs3(self.name(), [(sx, lx), (sw, lw), (sb, lb)])? {
            Inputs3::F32([x, w, b]) => {
                let (out, win) = block_forward(x, w, b, s, n)?;
                (CpuStorage::F32(out), win)
            }
            Inputs3::F64([x, w, b]) => {
                let (out, win) = block_forward(x, w, b, s, n)?;
                (CpuStorage::F64(out), win)
            }
        };
        if let Ok(mut saved) = self.winners.lock() {
            *saved = Some(winners);
        }
        Ok((out, Shape::from((n, s.o, s.h / 2, s.w / 2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, s) = block_shape(x.shape(), w.shape())?;
        let winners = self
            .winners
            .lock()
            .ok()
            .and_then(|mut saved| saved.take())
            .ok_or_else(|| {
                candle_core::Error::Msg("conv3x3-relu-maxpool2: no saved state".into())
            })?;
        // The image into the first layer needs no gradient: skip that sum.
        let want_input = x.track_op();
        macro_rules! grads {
            ($t:ty) => {{
                let grads = with_values3::<$t, _>([grad, x, w], |[g, xv, wv]| {
                    if g.len() != n * s.o * s.pooled() || xv.len() != n * s.c * s.positions() {
                        candle_core::bail!("conv3x3-relu-maxpool2: gradient or input size");
                    }
                    if wv.len() != s.o * s.taps() || winners.len() != g.len() {
                        candle_core::bail!("conv3x3-relu-maxpool2: kernel or saved state size");
                    }
                    Ok(block_backward(g, &winners, xv, wv, s, n, want_input))
                })??;
                grad_tensors(grads, [x, w, b])
            }};
        }
        match x.dtype() {
            DType::F32 => grads!(f32),
            DType::F64 => grads!(f64),
            _ => candle_core::bail!("conv3x3-relu-maxpool2: f32 or f64 only"),
        }
    }
}

/// Batch size and block shape from the input `(n, c, h, w)` and kernel `(o, c, 3, 3)` shapes.
fn block_shape(x: &Shape, w: &Shape) -> Result<(usize, BlockShape)> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, kc, kh, kw) = w.dims4()?;
    if h % 2 != 0 || wd % 2 != 0 {
        candle_core::bail!("conv3x3-relu-maxpool2: odd spatial size {h}x{wd}");
    }
    if (kc, kh, kw) != (c, 3, 3) {
        candle_core::bail!("conv3x3-relu-maxpool2: kernel {kc}x{kh}x{kw}, input has {c} channels");
    }
    Ok((n, BlockShape { c, h, w: wd, o }))
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
    let (n, s) = block_shape(x.shape(), weight.shape())?;
    let (xv, wv, bv) = (
        values::<f32>(x)?,
        values::<f32>(weight)?,
        values::<f32>(bias)?,
    );
    let reps = reps.max(1);
    let start = std::time::Instant::now();
    let mut last = None;
    for _ in 0..reps {
        last = Some(block_forward(&xv, &wv, &bv, s, n)?);
    }
    let forward = start.elapsed().as_secs_f64() / reps as f64;
    let Some((out, winners)) = last else {
        candle_core::bail!("no repetition");
    };
    let g = vec![1f32; out.len()];
    let start = std::time::Instant::now();
    for _ in 0..reps {
        block_backward(&g, &winners, &xv, &wv, s, n, input_grad);
    }
    let backward = start.elapsed().as_secs_f64() / reps as f64;
    Ok((1000.0 * forward, 1000.0 * backward))
}

/// `max_pool2d(relu(conv2d(x, w, padding 1) + b), 2)` for `x (n, c, h, w)`, `w (o, c, 3, 3)`,
/// `b (o)` with even `h`, `w`: `(n, o, h/2, w/2)`, with PyTorch's gradients.
pub fn conv3x3_relu_pool(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let op = Conv3x3ReluPool {
        winners: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}
