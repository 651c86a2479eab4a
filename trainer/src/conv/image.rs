//! The conv block's work for one image at a time, on buffers small enough to stay in a core's
//! cache (a batch-wide unfolded input is 14 MB for conv2; one image's is 225 KB).
//!
//! Layout: an image's patches are a `(h·w) × 9c` matrix, row `pos = y·w + x`, column
//! `tap·c + ci` (`tap = ky·3 + kx`): the input's `c` channels at `(y + ky − 1, x + kx − 1)`, zero
//! outside the map. Tap-major columns make every copy into and out of a patch row a run of `c`
//! contiguous values (from a channels-last copy of the image); the kernel is permuted to match
//! ([`tap_major`]). The conv output is `(h·w) × o`, position-major, so pooling reads four rows.
//!
//! The backward pass is sparse by construction: max-pooling passes each pooled gradient to one
//! position of its 2x2 window (none when ReLU cut it), so at most a quarter of the conv output's
//! gradient is nonzero. The kernel and input gradients are sums over those winners only, each a
//! run of `9c` multiply-adds against a patch row or a kernel row, instead of dense products over
//! every position.

use super::NONE;
use crate::gemm::{matmul_on, MatRef};
use num_traits::Float;

/// Width of the register-resident accumulator runs in the sparse sums.
const RUN: usize = 32;

/// Shape of one conv block: input channels, map height and width, output channels.
#[derive(Clone, Copy, Debug)]
pub struct BlockShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
}

impl BlockShape {
    pub fn positions(&self) -> usize {
        self.h * self.w
    }
    /// Columns of a patch row: 9 taps of `c` channels.
    pub fn taps(&self) -> usize {
        9 * self.c
    }
    pub fn pooled(&self) -> usize {
        (self.h / 2) * (self.w / 2)
    }
}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (our own loops are otherwise built for
/// the x86-64 baseline, SSE2); `f`'s callees must be `#[inline(always)]` to benefit.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(f);
    }
    f()
}

/// The kernel `(o, c, 3, 3)` with each row's columns reordered to `tap·c + ci`.
pub fn tap_major<T: Copy>(w: &[T], s: BlockShape) -> Vec<T> {
    let mut out = Vec::with_capacity(w.len());
    for row in w.chunks_exact(s.taps()) {
        out.extend((0..s.taps()).map(|col| row[(col % s.c) * 9 + col / s.c]));
    }
    out
}

/// The inverse of [`tap_major`].
pub fn channel_major<T: Copy>(w: &[T], s: BlockShape) -> Vec<T> {
    let mut out = Vec::with_capacity(w.len());
    for row in w.chunks_exact(s.taps()) {
        out.extend((0..s.taps()).map(|col| row[(col % 9) * s.c + col / 9]));
    }
    out
}

/// `(c, h·w)` → `(h·w, c)`.
#[inline(always)]
pub fn to_channels_last<T: Copy>(x: &[T], c: usize, dst: &mut [T]) {
    let hw = dst.len() / c.max(1);
    for (ci, plane) in x.chunks_exact(hw).enumerate().take(c) {
        for (pos, &v) in plane.iter().enumerate() {
            dst[pos * c + ci] = v;
        }
    }
}

/// `(h·w, c)` → `(c, h·w)`.
#[inline(always)]
pub fn to_channels_first<T: Copy>(x: &[T], c: usize, dst: &mut [T]) {
    for (pos, px) in x.chunks_exact(c).enumerate() {
        for (ci, &v) in px.iter().enumerate() {
            dst[ci * (x.len() / c) + pos] = v;
        }
    }
}

/// The source position of each tap of output position `(y, x)`, `None` in the padding.
#[inline(always)]
fn taps_of(y: usize, x: usize, s: BlockShape) -> impl Iterator<Item = (usize, usize)> {
    (0..9).filter_map(move |tap| {
        let sy = (y + tap / 3).checked_sub(1).filter(|&v| v < s.h)?;
        let sx = (x + tap % 3).checked_sub(1).filter(|&v| v < s.w)?;
        Some((tap, sy * s.w + sx))
    })
}

/// Fills `patches` (`h·w × 9c`) from a channels-last image. Only taps inside the map are
/// written: the padding entries are the same for every image, so a buffer zeroed once and reused
/// for images of one shape keeps them zero.
#[inline(always)]
pub fn patches<T: Copy>(x_hwc: &[T], s: BlockShape, patches: &mut [T]) {
    let (c, k) = (s.c, s.taps());
    for (pos, row) in patches.chunks_exact_mut(k).enumerate() {
        for (tap, src) in taps_of(pos / s.w, pos % s.w, s) {
            // An element loop, not `copy_from_slice`: runs of `c` (1 or 32 here) are too short
            // to pay for a `memcpy` call each.
            let dst = &mut row[tap * c..(tap + 1) * c];
            for (d, &v) in dst.iter_mut().zip(&x_hwc[src * c..(src + 1) * c]) {
                *d = v;
            }
        }
    }
}

/// ReLU + 2x2 max-pool of one image's conv output `pre` (`h·w × o`) into `out` (`o × h/2·w/2`)
/// and each output's winner: the position of its window's first maximum (PyTorch's choice), or
/// [`NONE`] when that maximum is ≤ 0. `best` and `which` (`h/2·w/2 × o`) are scratch space: the
/// window maxima are found position-major, where all channels are contiguous (vectorised
/// selects), then written out channel-major.
#[inline(always)]
pub fn relu_pool<T: Float>(
    pre: &[T],
    s: BlockShape,
    (best, which): (&mut [T], &mut [u32]),
    out: &mut [T],
    winners: &mut [u32],
) {
    let (o, ow, pooled) = (s.o, s.w / 2, s.pooled());
    let windows = best.chunks_exact_mut(o).zip(which.chunks_exact_mut(o));
    for (j, (best, which)) in windows.enumerate() {
        let first = 2 * (j / ow) * s.w + 2 * (j % ow);
        let [r0, r1, r2, r3] =
            [first, first + 1, first + s.w, first + s.w + 1].map(|p| &pre[p * o..(p + 1) * o]);
        for oc in 0..o {
            let (mut m, mut at) = (r0[oc], 0);
            if r1[oc] > m {
                (m, at) = (r1[oc], 1);
            }
            if r2[oc] > m {
                (m, at) = (r2[oc], 2);
            }
            if r3[oc] > m {
                (m, at) = (r3[oc], 3);
            }
            best[oc] = m;
            which[oc] = at;
        }
    }
    for (j, (best, which)) in best.chunks_exact(o).zip(which.chunks_exact(o)).enumerate() {
        let first = (2 * (j / ow) * s.w + 2 * (j % ow)) as u32;
        let offsets = [0, 1, s.w as u32, s.w as u32 + 1];
        for (oc, (&m, &at)) in best.iter().zip(which).enumerate() {
            if m > T::zero() {
                out[oc * pooled + j] = m;
                winners[oc * pooled + j] = first + offsets[at as usize & 3];
            }
        }
    }
}

/// Patch rows up to this long (a single-channel input has 9) are summed directly: a product's
/// packing and setup would cost more than its arithmetic.
const DIRECT_MAX_TAPS: usize = 27;

/// The kernel in the layout [`Forward::image`] reads: tap-major rows (`o × 9c`) for the product
/// with the patches, or for a short patch row its transpose (`9c × o`), one row per tap and
/// channel, to sum directly.
pub struct ForwardKernel<T>(Vec<T>);

impl<T: Copy> ForwardKernel<T> {
    pub fn new(w: &[T], s: BlockShape) -> Self {
        let taps = tap_major(w, s);
        if s.taps() > DIRECT_MAX_TAPS {
            return ForwardKernel(taps);
        }
        let k = s.taps();
        ForwardKernel(
            (0..k * s.o)
                .map(|i| taps[(i % s.o) * k + i / s.o])
                .collect(),
        )
    }
}

/// Per-image scratch space of the forward pass.
pub struct Forward<T> {
    s: BlockShape,
    x_hwc: Vec<T>,
    patches: Vec<T>,
    pre: Vec<T>,
    /// A position's patch entries as (kernel row, value) for the direct sum.
    terms: Vec<(u32, T)>,
    best: Vec<T>,
    which: Vec<u32>,
}

impl<T: Float + 'static> Forward<T> {
    pub fn new(s: BlockShape) -> Self {
        let direct = s.taps() <= DIRECT_MAX_TAPS;
        Forward {
            s,
            x_hwc: vec![T::zero(); s.positions() * s.c],
            patches: vec![T::zero(); if direct { 0 } else { s.positions() * s.taps() }],
            pre: vec![T::zero(); s.positions() * s.o],
            terms: Vec::with_capacity(s.taps()),
            best: vec![T::zero(); s.pooled() * s.o],
            which: vec![0; s.pooled() * s.o],
        }
    }

    /// One image `x` (`c × h·w`) through the block with `kernel` and `bias`: pooled outputs and
    /// winners as [`relu_pool`] writes them (`out` and `winners` arrive as zeros and `NONE`).
    #[inline(always)]
    pub fn image(
        &mut self,
        x: &[T],
        kernel: &ForwardKernel<T>,
        bias: &[T],
        out: &mut [T],
        winners: &mut [u32],
    ) -> candle_core::Result<()> {
        let (s, c) = (self.s, self.s.c);
        to_channels_last(x, c, &mut self.x_hwc);
        for row in self.pre.chunks_exact_mut(s.o) {
            row.copy_from_slice(bias);
        }
        if s.taps() <= DIRECT_MAX_TAPS {
            let mut rows = self.pre.chunks_exact_mut(s.o);
            for y in 0..s.h {
                let ys = (y.saturating_sub(1)..(y + 2).min(s.h)).map(|sy| (sy + 1 - y, sy));
                for (x, row) in (0..s.w).zip(&mut rows) {
                    self.terms.clear();
                    for (ky, sy) in ys.clone() {
                        for sx in x.saturating_sub(1)..(x + 2).min(s.w) {
                            let first = ((ky * 3 + sx + 1 - x) * c) as u32;
                            let px = &self.x_hwc[(sy * s.w + sx) * c..][..c];
                            self.terms.extend((first..).zip(px.iter().copied()));
                        }
                    }
                    sum_rows(row, &kernel.0, &self.terms);
                }
            }
        } else {
            patches(&self.x_hwc, s, &mut self.patches);
            // One core per image: the batch's images already keep every core busy.
            matmul_on(
                &mut self.pre,
                MatRef::rows(&self.patches, s.positions(), s.taps()),
                MatRef::rows(&kernel.0, s.o, s.taps()).t(),
                true,
                false,
            )?;
        }
        relu_pool(
            &self.pre,
            s,
            (&mut self.best, &mut self.which),
            out,
            winners,
        );
        Ok(())
    }
}

/// `acc[..] += Σ g · rows[at][..]` over `terms` `(at, g)`, with `rows` of `acc.len()` values
/// each; runs of [`RUN`] accumulators stay in registers across all the terms.
#[inline(always)]
fn sum_rows<T: Float>(acc: &mut [T], rows: &[T], terms: &[(u32, T)]) {
    let k = acc.len();
    let mut runs = acc.chunks_exact_mut(RUN);
    for (r, out) in (&mut runs).enumerate() {
        let start = r * RUN;
        let mut run: [T; RUN] = std::array::from_fn(|i| out[i]);
        for &(at, g) in terms {
            let src = &rows[at as usize * k + start..][..RUN];
            // A fixed length, so the run is unrolled into registers.
            if let Ok(src) = <&[T; RUN]>::try_from(src) {
                for i in 0..RUN {
                    run[i] = run[i] + g * src[i];
                }
            }
        }
        out.copy_from_slice(&run);
    }
    let tail = runs.into_remainder();
    let start = k - tail.len();
    for &(at, g) in terms {
        let src = &rows[at as usize * k + start..(at as usize + 1) * k];
        for (a, &v) in tail.iter_mut().zip(src) {
            *a = *a + g * v;
        }
    }
}

/// Per-image scratch space and the running kernel and bias gradients of one share of a batch.
pub struct Backward<T> {
    s: BlockShape,
    x_hwc: Vec<T>,
    patches: Vec<T>,
    /// Kernel gradient in tap-major order (`o × 9c`), summed over this share's images.
    pub grad_w: Vec<T>,
    pub grad_b: Vec<T>,
    terms: Vec<(u32, T)>,
    /// For the input gradient: winners grouped by position (`by_pos[starts[p]..starts[p+1]]`).
    starts: Vec<usize>,
    /// Where the next winner of each position goes while `by_pos` is filled.
    cursor: Vec<usize>,
    by_pos: Vec<(u32, T)>,
    grad_patch: Vec<T>,
    grad_hwc: Vec<T>,
}

impl<T: Float> Backward<T> {
    pub fn new(s: BlockShape) -> Self {
        Backward {
            s,
            x_hwc: vec![T::zero(); s.positions() * s.c],
            patches: vec![T::zero(); s.positions() * s.taps()],
            grad_w: vec![T::zero(); s.o * s.taps()],
            grad_b: vec![T::zero(); s.o],
            terms: Vec::with_capacity(s.pooled()),
            starts: vec![0; s.positions() + 1],
            cursor: vec![0; s.positions()],
            by_pos: vec![(0, T::zero()); s.o * s.pooled()],
            grad_patch: vec![T::zero(); s.taps()],
            grad_hwc: vec![T::zero(); s.positions() * s.c],
        }
    }

    /// Adds one image's kernel and bias gradients, and writes its input gradient into `grad_x`
    /// (`c × h·w`) when given. `x` is the image (`c × h·w`), `g` and `winners` its pooled
    /// gradient and winners (`o × pooled`), `w_taps` the tap-major kernel.
    #[inline(always)]
    pub fn image(
        &mut self,
        x: &[T],
        g: &[T],
        winners: &[u32],
        w_taps: &[T],
        grad_x: Option<&mut [T]>,
    ) {
        let (s, k) = (self.s, self.s.taps());
        to_channels_last(x, s.c, &mut self.x_hwc);
        patches(&self.x_hwc, s, &mut self.patches);
        let gw_rows = self.grad_w.chunks_exact_mut(k);
        let pooled = s.pooled();
        for (oc, gw) in gw_rows.enumerate() {
            self.terms.clear();
            let span = oc * pooled..(oc + 1) * pooled;
            for (&gv, &win) in g[span.clone()].iter().zip(&winners[span]) {
                if win != NONE && gv != T::zero() {
                    self.terms.push((win, gv));
                }
            }
            self.grad_b[oc] = self.terms.iter().fold(self.grad_b[oc], |a, &(_, g)| a + g);
            sum_rows(gw, &self.patches, &self.terms);
        }
        if let Some(grad_x) = grad_x {
            self.input_grad(g, winners, w_taps);
            to_channels_first(&self.grad_hwc, s.c, grad_x);
        }
    }

    /// The input gradient (channels-last, in `grad_hwc`): each position's patch gradient is the
    /// sum of the kernel rows of the channels it won, folded back onto the 9 positions it read.
    #[inline(always)]
    fn input_grad(&mut self, g: &[T], winners: &[u32], w_taps: &[T]) {
        let (s, c) = (self.s, self.s.c);
        let pooled = s.pooled();
        // Counting sort of the winners (with a gradient) by position.
        let won = |gv: T, win: u32| win != NONE && gv != T::zero();
        self.starts.fill(0);
        for (&gv, &win) in g.iter().zip(winners) {
            if won(gv, win) {
                self.starts[win as usize + 1] += 1;
            }
        }
        for p in 0..s.positions() {
            self.starts[p + 1] += self.starts[p];
        }
        self.cursor.copy_from_slice(&self.starts[..s.positions()]);
        let channels = g.chunks_exact(pooled).zip(winners.chunks_exact(pooled));
        for (oc, (g, winners)) in channels.enumerate() {
            for (&gv, &win) in g.iter().zip(winners) {
                if won(gv, win) {
                    let at = &mut self.cursor[win as usize];
                    self.by_pos[*at] = (oc as u32, gv);
                    *at += 1;
                }
            }
        }
        self.grad_hwc.fill(T::zero());
        for pos in 0..s.positions() {
            let terms = &self.by_pos[self.starts[pos]..self.starts[pos + 1]];
            if terms.is_empty() {
                continue;
            }
            self.grad_patch.fill(T::zero());
            sum_rows(&mut self.grad_patch, w_taps, terms);
            for (tap, src) in taps_of(pos / s.w, pos % s.w, s) {
                let dst = &mut self.grad_hwc[src * c..(src + 1) * c];
                for (d, &v) in dst.iter_mut().zip(&self.grad_patch[tap * c..(tap + 1) * c]) {
                    *d = *d + v;
                }
            }
        }
    }
}
