//! The conv block's forward pass for one image: convolution into a channel-major `(o, h·w)`
//! buffer, then ReLU and 2x2 max-pooling with each window's winner, all in one core's cache.
//!
//! A single-channel input (conv1) is convolved directly: each output row is 9 shifted input rows
//! times a kernel value each, contiguous runs that vectorise. A wider input (conv2) is one matrix
//! product of the kernel with the image's patches.

use super::image::{patches, tap_major, to_channels_last, BlockShape};
use super::NONE;
use crate::model::gemm::{matmul_on, MatRef};
use num_traits::Float;

/// Inputs with at most this many channels are convolved directly: the product's packing and
/// setup would cost more than its arithmetic.
const DIRECT_MAX_CHANNELS: usize = 3;

fn direct(s: BlockShape) -> bool {
    s.c <= DIRECT_MAX_CHANNELS
}

/// Values per row of the conv output: the direct convolution keeps the zero border's width.
fn row_stride(s: BlockShape) -> usize {
    if direct(s) {
        s.w + 2
    } else {
        s.w
    }
}

/// The kernel in the layout [`Forward::image`] reads: `(o, c, 3, 3)` as given for the direct
/// convolution, tap-major rows (`o × 9c`, see [`tap_major`]) for the product with the patches.
pub struct ForwardKernel<T>(Vec<T>);

impl<T: Copy> ForwardKernel<T> {
    pub fn new(w: &[T], s: BlockShape) -> Self {
        ForwardKernel(if direct(s) {
            w.to_vec()
        } else {
            tap_major(w, s)
        })
    }
}

/// Per-image scratch space of the forward pass.
pub struct Forward<T> {
    s: BlockShape,
    /// Direct path: the image with a zero border, `c × (h+2) × (w+2)`.
    padded: Vec<T>,
    /// Product path: the image channels-last, and its patches (see [`patches`]).
    x_hwc: Vec<T>,
    patches: Vec<T>,
    /// The conv output, `o × h × row_stride`.
    pre: Vec<T>,
}

impl<T: Float + 'static> Forward<T> {
    pub fn new(s: BlockShape) -> Self {
        let (padded, product) = if direct(s) {
            (s.c * (s.h + 2) * (s.w + 2), 0)
        } else {
            (0, s.positions())
        };
        Forward {
            s,
            padded: vec![T::zero(); padded],
            x_hwc: vec![T::zero(); product * s.c],
            patches: vec![T::zero(); product * s.taps()],
            pre: vec![T::zero(); s.o * s.h * row_stride(s)],
        }
    }

    /// One image `x` (`c × h·w`) through the block with `kernel` and `bias`: pooled outputs and
    /// winners as [`relu_pool`] writes them.
    #[inline(always)]
    pub fn image(
        &mut self,
        x: &[T],
        kernel: &ForwardKernel<T>,
        bias: &[T],
        out: &mut [T],
        winners: &mut [u32],
    ) -> candle_core::Result<()> {
        let s = self.s;
        for (plane, &b) in self.pre.chunks_exact_mut(s.h * row_stride(s)).zip(bias) {
            plane.fill(b);
        }
        if direct(s) {
            self.direct(x, &kernel.0);
        } else {
            to_channels_last(x, s.c, &mut self.x_hwc);
            patches(&self.x_hwc, s, &mut self.patches);
            // One core per image: the batch's images already keep every core busy.
            matmul_on(
                &mut self.pre,
                MatRef::rows(&kernel.0, s.o, s.taps()),
                MatRef::rows(&self.patches, s.positions(), s.taps()).t(),
                true,
                false,
            )?;
        }
        relu_pool(&self.pre, s, row_stride(s), out, winners);
        Ok(())
    }

    /// `pre += conv(x, w)` for a kernel `(o, c, 3, 3)`, in padded-width rows (`o × h × (w+2)`,
    /// the last two values of each row unused): then each tap adds one contiguous run of the
    /// zero-bordered input, shifted by the tap's offset, times its weight.
    #[inline(always)]
    fn direct(&mut self, x: &[T], w: &[T]) {
        let s = self.s;
        let (pw, plane) = (s.w + 2, (s.h + 2) * (s.w + 2));
        // Only the interior is written: the border stays zero from the allocation.
        for (src, dst) in x
            .chunks_exact(s.positions())
            .zip(self.padded.chunks_exact_mut(plane))
        {
            for (row, padded) in src.chunks_exact(s.w).zip(dst.chunks_exact_mut(pw).skip(1)) {
                padded[1..=s.w].copy_from_slice(row);
            }
        }
        let len = s.h * pw - 2;
        for (out, w) in self
            .pre
            .chunks_exact_mut(s.h * pw)
            .zip(w.chunks_exact(s.taps()))
        {
            let out = &mut out[..len];
            for (padded, w) in self.padded.chunks_exact(plane).zip(w.chunks_exact(9)) {
                for (tap, &wv) in w.iter().enumerate() {
                    let shift = (tap / 3) * pw + tap % 3;
                    for (o, &v) in out.iter_mut().zip(&padded[shift..shift + len]) {
                        *o = wv.mul_add(v, *o);
                    }
                }
            }
        }
    }
}

/// ReLU + 2x2 max-pool of one image's conv output `pre` (`o × h` rows of `stride ≥ w` values)
/// into `out` (`o × h/2·w/2`) and each output's winner: the position (`y·w + x`) of its window's
/// first maximum in row-major order (PyTorch's choice), or [`NONE`] with output 0 when that
/// maximum is ≤ 0.
#[inline(always)]
pub fn relu_pool<T: Float>(
    pre: &[T],
    s: BlockShape,
    stride: usize,
    out: &mut [T],
    winners: &mut [u32],
) {
    let (w, ow) = (s.w, s.w / 2);
    let planes = pre.chunks_exact(s.h * stride);
    let outputs = out.chunks_exact_mut(s.pooled());
    for ((plane, out), winners) in planes
        .zip(outputs)
        .zip(winners.chunks_exact_mut(s.pooled()))
    {
        let rows = out.chunks_exact_mut(ow).zip(winners.chunks_exact_mut(ow));
        for (oy, (out, winners)) in rows.enumerate() {
            let top = &plane[2 * oy * stride..][..w];
            let bottom = &plane[(2 * oy + 1) * stride..][..w];
            for (ox, (o, win)) in out.iter_mut().zip(winners.iter_mut()).enumerate() {
                let first = (2 * oy * w + 2 * ox) as u32;
                let (mut m, mut at) = (top[2 * ox], first);
                if top[2 * ox + 1] > m {
                    (m, at) = (top[2 * ox + 1], first + 1);
                }
                if bottom[2 * ox] > m {
                    (m, at) = (bottom[2 * ox], first + w as u32);
                }
                if bottom[2 * ox + 1] > m {
                    (m, at) = (bottom[2 * ox + 1], first + w as u32 + 1);
                }
                let live = m > T::zero();
                *o = if live { m } else { T::zero() };
                *win = if live { at } else { NONE };
            }
        }
    }
}
