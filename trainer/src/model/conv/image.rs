//! What the conv block's forward and backward passes share: its shape, the patch layout, the
//! register-resident sums, and the switch to AVX2 + FMA code.
//!
//! Each image is worked on by one core, on buffers small enough to stay in its cache (a
//! batch-wide unfolded input is 14 MB for conv2; one image's is 225 KB). An image's patches are a
//! `(h·w) × 9c` matrix, row `pos = y·w + x`, column `tap·c + ci` (`tap = ky·3 + kx`): the
//! input's `c` channels at `(y + ky − 1, x + kx − 1)`, zero outside the map. Tap-major columns
//! make every copy into and out of a patch row a run of `c` contiguous values (from a
//! channels-last copy of the image); the kernel is permuted to match ([`tap_major`]).

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
/// the x86-64 baseline, SSE2); `f`'s callees must be `#[inline(always)]` to benefit. The kernels'
/// `mul_add` is then one instruction (on a CPU without FMA it is a slower library call).
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
    // Contiguous stores, strided loads: the `c` planes' current cache lines all stay in L1.
    for (pos, px) in dst.chunks_exact_mut(c).enumerate() {
        for (ci, d) in px.iter_mut().enumerate() {
            *d = x[ci * hw + pos];
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
pub fn taps_of(y: usize, x: usize, s: BlockShape) -> impl Iterator<Item = (usize, usize)> {
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

/// `acc[..] += Σ g · rows[at][..]` over `terms` `(at, g)`, with `rows` of `acc.len()` values
/// each; runs of [`RUN`] accumulators stay in registers across all the terms.
#[inline(always)]
pub fn sum_rows<T: Float>(acc: &mut [T], rows: &[T], terms: &[(u32, T)]) {
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
                    run[i] = g.mul_add(src[i], run[i]);
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
            *a = g.mul_add(v, *a);
        }
    }
}
