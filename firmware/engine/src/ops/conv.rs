//! 3x3 convolution (stride 1, zero padding 1) fused with bias, ReLU and 2x2 max-pool.
//!
//! The kernel computes one output row of one channel at a time in a row of accumulators (kept in
//! FPU registers for the 28- and 14-wide maps of the recipe), applying each weight ("tap") to a
//! whole input row: the dense kernel visits every tap in (input channel, ky, kx) order so each
//! input row is loaded once per three taps; the sparse kernel decodes a CSR row's non-zero taps
//! once per output channel, grouped by kx so every group runs with a constant shift. Two conv rows
//! are then max-pooled and clamped at zero (ReLU commutes with max) without storing the conv map.
//! The float operations depend only on the model and input, never on the machine, so host and
//! MCU agree bit for bit.

use super::ColumnIndex;
use model_format::{Csr, Indices, Weights};

/// `f32::max` without NaN handling: on the Cortex-M4 `f32::max` is a call to `fmaxf`, this is a
/// compare and a conditional move. Activations are finite (validated weights, bounded inputs).
#[inline(always)]
pub(crate) fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Widest feature map the kernels handle (accumulator rows live on the stack).
pub const MAX_WIDTH: usize = 64;

/// Input geometry of one conv layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Applies one tap of weight `wt` at horizontal offset `kx − 1` to a row of accumulators;
/// returns the multiply-accumulates done.
#[inline(always)]
fn tap(acc: &mut [f32], row: &[f32], wt: f32, kx: usize) -> u32 {
    let n = match kx {
        0 => {
            for (a, &x) in acc.iter_mut().skip(1).zip(row) {
                *a += wt * x;
            }
            acc.len().saturating_sub(1)
        }
        1 => {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += wt * x;
            }
            acc.len()
        }
        _ => {
            for (a, &x) in acc.iter_mut().zip(row.iter().skip(1)) {
                *a += wt * x;
            }
            acc.len().saturating_sub(1)
        }
    };
    n as u32
}

/// Something that lists an output channel's taps as (input channel, ky, kx, weight).
trait Taps {
    fn visit(&self, out_channel: usize, f: impl FnMut(usize, usize, usize, f32));
}

struct DenseTaps<'a> {
    weights: &'a [f32],
    in_channels: usize,
}

impl Taps for DenseTaps<'_> {
    #[inline(always)]
    fn visit(&self, out_channel: usize, mut f: impl FnMut(usize, usize, usize, f32)) {
        let per_out = self.in_channels * 9;
        let start = out_channel * per_out;
        let Some(kernel) = self.weights.get(start..start + per_out) else {
            return;
        };
        for (ci, k) in kernel.chunks_exact(9).enumerate() {
            for (t, &wt) in k.iter().enumerate() {
                f(ci, t / 3, t % 3, wt);
            }
        }
    }
}

struct SparseTaps<'a, I> {
    row_ptr: Indices<'a>,
    col_idx: &'a [I],
    values: &'a [f32],
}

impl<I: ColumnIndex> Taps for SparseTaps<'_, I> {
    #[inline(always)]
    fn visit(&self, out_channel: usize, mut f: impl FnMut(usize, usize, usize, f32)) {
        let (Some(start), Some(end)) = (
            self.row_ptr.get(out_channel),
            self.row_ptr.get(out_channel + 1),
        ) else {
            return;
        };
        let (Some(cols), Some(vals)) = (self.col_idx.get(start..end), self.values.get(start..end))
        else {
            return;
        };
        for (&c, &wt) in cols.iter().zip(vals) {
            let c = c.index();
            let t = c % 9;
            f(c / 9, t / 3, t % 3, wt);
        }
    }
}

/// One conv output row (`y`) of `out_channel` into `acc`.
#[inline(always)]
fn conv_row(
    acc: &mut [f32],
    input: &[f32],
    shape: &ConvShape,
    taps: &impl Taps,
    out_channel: usize,
    y: usize,
    bias: f32,
) -> u32 {
    let (h, w) = (shape.height, shape.width);
    acc.fill(bias);
    let mut macs = 0;
    taps.visit(out_channel, |ci, ky, kx, wt| {
        // Input row y + ky − 1; rows outside the map are zero padding and add nothing.
        let Some(yy) = (y + ky).checked_sub(1).filter(|&yy| yy < h) else {
            return;
        };
        let start = (ci * h + yy) * w;
        if let Some(row) = input.get(start..start + w) {
            macs += tap(acc, row, wt, kx);
        }
    });
    macs
}

/// The whole layer for any width up to [`MAX_WIDTH`] (accumulators in memory: slower than
/// [`layer_fixed`], used for widths other than the recipe's 28 and 14).
fn layer_any(
    input: &[f32],
    shape: &ConvShape,
    taps: &impl Taps,
    bias: &[f32],
    out: &mut [f32],
) -> u64 {
    let w = shape.width;
    let (mut row0, mut row1) = ([0f32; MAX_WIDTH], [0f32; MAX_WIDTH]);
    let (Some(acc0), Some(acc1)) = (row0.get_mut(..w), row1.get_mut(..w)) else {
        return 0;
    };
    let mut macs: u64 = 0;
    let mut out_rows = out.chunks_exact_mut(w / 2);
    for (co, &b) in bias.iter().enumerate().take(shape.out_channels) {
        for py in 0..shape.height / 2 {
            macs += u64::from(conv_row(acc0, input, shape, taps, co, 2 * py, b));
            macs += u64::from(conv_row(acc1, input, shape, taps, co, 2 * py + 1, b));
            let Some(dst) = out_rows.next() else {
                return macs;
            };
            for ((o, a), b) in dst
                .iter_mut()
                .zip(acc0.chunks_exact(2))
                .zip(acc1.chunks_exact(2))
            {
                *o = max(max(max(a[0], a[1]), max(b[0], b[1])), 0.0);
            }
        }
    }
    macs
}

/// Applies one tap to a register-resident row of `W` accumulators (constant indices throughout,
/// so the compiler keeps `acc` in FPU registers and emits one load and one `vmla` per MAC).
#[inline(always)]
fn tap_fixed<const W: usize>(acc: &mut [f32; W], row: &[f32; W], wt: f32, kx: usize) -> u32 {
    match kx {
        0 => {
            for j in 1..W {
                acc[j] += wt * row[j - 1];
            }
            W as u32 - 1
        }
        1 => {
            for j in 0..W {
                acc[j] += wt * row[j];
            }
            W as u32
        }
        _ => {
            for j in 0..W - 1 {
                acc[j] += wt * row[j + 1];
            }
            W as u32 - 1
        }
    }
}

/// Input row `y + ky − 1` of channel `ci` as a fixed-size array; `None` on the zero padding.
#[inline(always)]
fn input_row<const W: usize>(
    input: &[f32],
    h: usize,
    ci: usize,
    y: usize,
    ky: usize,
) -> Option<&[f32; W]> {
    let yy = (y + ky).checked_sub(1).filter(|&yy| yy < h)?;
    let start = (ci * h + yy) * W;
    input.get(start..start + W).and_then(|r| r.try_into().ok())
}

/// Row `row` of a CSR matrix: its column indices and values (empty if out of range).
#[inline(always)]
fn csr_row<'a>(csr: &Csr<'a>, row: usize) -> (Indices<'a>, &'a [f32]) {
    let (start, end) = (
        csr.row_ptr.get(row).unwrap_or(0),
        csr.row_ptr.get(row + 1).unwrap_or(0),
    );
    let cols = match csr.col_idx {
        Indices::U8(c) => Indices::U8(c.get(start..end).unwrap_or(&[])),
        Indices::U16(c) => Indices::U16(c.get(start..end).unwrap_or(&[])),
        Indices::U32(c) => Indices::U32(c.get(start..end).unwrap_or(&[])),
    };
    (cols, csr.values.get(start..end).unwrap_or(&[]))
}

/// A sparse tap decoded once per output channel: where its input rows start (for `y = 1`), its
/// kernel row, and its weight. Taps are grouped by kernel column (kx), so each group runs a loop
/// whose shift is a compile-time constant.
#[derive(Clone, Copy)]
struct DecodedTap {
    offset: u32,
    ky: u32,
    wt: f32,
}

/// Taps decoded per output channel (a 32-channel 3x3 kernel has 288); wider kernels fall back
/// to decoding per row.
const MAX_DECODED: usize = 288;

/// Decodes a CSR row's taps grouped by kx (keeping their order within a group); returns the
/// group ends, or `None` when there are more than [`MAX_DECODED`].
#[inline(always)]
fn decode_taps<I: ColumnIndex>(
    cols: &[I],
    vals: &[f32],
    h: usize,
    w: usize,
    out: &mut [DecodedTap; MAX_DECODED],
) -> Option<[usize; 3]> {
    if cols.len() > MAX_DECODED {
        return None;
    }
    let mut n = 0;
    let mut ends = [0; 3];
    for (kx, end) in ends.iter_mut().enumerate() {
        for (&c, &wt) in cols.iter().zip(vals) {
            let c = c.index();
            let (ci, t) = (c / 9, c % 9);
            if t % 3 == kx {
                let ky = t / 3;
                if let Some(d) = out.get_mut(n) {
                    // Input row y + ky − 1 of channel ci starts at (ci·h + ky + y − 1)·w.
                    *d = DecodedTap {
                        offset: ((ci * h + ky) * w) as u32,
                        ky: ky as u32,
                        wt,
                    };
                    n += 1;
                }
            }
        }
        *end = n;
    }
    Some(ends)
}

/// Applies a group of decoded taps with column shift `KX − 1`.
#[inline(always)]
fn apply_group<const W: usize, const KX: usize>(
    acc: &mut [f32; W],
    input: &[f32],
    h: usize,
    y: usize,
    taps: &[DecodedTap],
) -> u32 {
    let mut macs = 0;
    for tap in taps {
        // Padding rows: y + ky − 1 outside 0..h.
        if (y + tap.ky as usize).wrapping_sub(1) >= h {
            continue;
        }
        let start = (tap.offset as usize + y * W).wrapping_sub(W);
        if let Some(row) = input
            .get(start..start + W)
            .and_then(|r| <&[f32; W]>::try_from(r).ok())
        {
            macs += tap_fixed(acc, row, tap.wt, KX);
        }
    }
    macs
}

/// One output row from decoded taps, `W` wide.
#[inline(always)]
fn decoded_row<const W: usize>(
    input: &[f32],
    h: usize,
    y: usize,
    taps: &[DecodedTap],
    ends: [usize; 3],
    bias: f32,
) -> ([f32; W], u32) {
    let mut acc = [bias; W];
    let group = |from: usize, to: usize| taps.get(from..to).unwrap_or(&[]);
    let macs = apply_group::<W, 0>(&mut acc, input, h, y, group(0, ends[0]))
        + apply_group::<W, 1>(&mut acc, input, h, y, group(ends[0], ends[1]))
        + apply_group::<W, 2>(&mut acc, input, h, y, group(ends[1], ends[2]));
    (acc, macs)
}

/// One output row of a sparse kernel, `W` wide: only the stored taps.
#[inline(always)]
fn sparse_row<const W: usize, I: ColumnIndex>(
    input: &[f32],
    h: usize,
    y: usize,
    cols: &[I],
    vals: &[f32],
    bias: f32,
) -> ([f32; W], u32) {
    let mut acc = [bias; W];
    let mut macs = 0;
    for (&c, &wt) in cols.iter().zip(vals) {
        let c = c.index();
        let (ci, t) = (c / 9, c % 9);
        if let Some(row) = input_row::<W>(input, h, ci, y, t / 3) {
            macs += tap_fixed(&mut acc, row, wt, t % 3);
        }
    }
    (acc, macs)
}

/// One output row of a dense kernel (`in_channels · 9` weights), `W` wide: every tap.
#[inline(always)]
fn dense_row<const W: usize>(
    input: &[f32],
    h: usize,
    y: usize,
    kernel: &[f32],
    bias: f32,
) -> ([f32; W], u32) {
    let mut acc = [bias; W];
    let mut macs = 0;
    // Each input row is loaded once for its three taps (the sparse kernel instead groups taps
    // by kx, so its sums may differ from these in the last bits).
    for (ci, k) in kernel.chunks_exact(9).enumerate() {
        for ky in 0..3 {
            if let Some(row) = input_row::<W>(input, h, ci, y, ky) {
                for kx in 0..3 {
                    macs += tap_fixed(&mut acc, row, k[ky * 3 + kx], kx);
                }
            }
        }
    }
    (acc, macs)
}

/// Max-pools two conv rows into one output row, with ReLU.
#[inline(always)]
fn pool_rows<const W: usize>(top: &[f32; W], bottom: &[f32; W], dst: &mut [f32]) {
    for (px, o) in dst.iter_mut().enumerate().take(W / 2) {
        let (a, b) = (2 * px, 2 * px + 1);
        *o = max(max(max(top[a], top[b]), max(bottom[a], bottom[b])), 0.0);
    }
}

/// A whole layer on a map exactly `W` wide, register-blocked by output row. Kept out of line so
/// that register allocation sees only this loop nest.
#[inline(never)]
fn layer_fixed<const W: usize>(
    input: &[f32],
    shape: &ConvShape,
    weights: &Weights<'_>,
    bias: &[f32],
    out: &mut [f32],
) -> u64 {
    let h = shape.height;
    let mut macs: u64 = 0;
    let mut out_rows = out.chunks_exact_mut(W / 2);
    let per_out = shape.in_channels * 9;
    let mut decoded = [DecodedTap {
        offset: 0,
        ky: 0,
        wt: 0.0,
    }; MAX_DECODED];
    for (co, &b) in bias.iter().enumerate().take(shape.out_channels) {
        let n_decoded = match *weights {
            Weights::Csr(csr) => {
                let (cols, vals) = csr_row(&csr, co);
                match cols {
                    Indices::U8(c) => decode_taps(c, vals, h, W, &mut decoded),
                    Indices::U16(c) => decode_taps(c, vals, h, W, &mut decoded),
                    Indices::U32(c) => decode_taps(c, vals, h, W, &mut decoded),
                }
            }
            Weights::Dense(_) => None,
        };
        for py in 0..h / 2 {
            let (y0, y1) = (2 * py, 2 * py + 1);
            let ((top, m0), (bottom, m1)) = match (n_decoded, *weights) {
                (Some(ends), _) => (
                    decoded_row::<W>(input, h, y0, &decoded, ends, b),
                    decoded_row::<W>(input, h, y1, &decoded, ends, b),
                ),
                (None, weights) => match weights {
                    Weights::Dense(w) => {
                        let kernel = w.get(co * per_out..(co + 1) * per_out).unwrap_or(&[]);
                        (
                            dense_row::<W>(input, h, y0, kernel, b),
                            dense_row::<W>(input, h, y1, kernel, b),
                        )
                    }
                    Weights::Csr(csr) => {
                        // More taps than fit the decode buffer: decode per row.
                        let (cols, vals) = csr_row(&csr, co);
                        match cols {
                            Indices::U8(c) => (
                                sparse_row::<W, u8>(input, h, y0, c, vals, b),
                                sparse_row::<W, u8>(input, h, y1, c, vals, b),
                            ),
                            Indices::U16(c) => (
                                sparse_row::<W, u16>(input, h, y0, c, vals, b),
                                sparse_row::<W, u16>(input, h, y1, c, vals, b),
                            ),
                            Indices::U32(c) => (
                                sparse_row::<W, u32>(input, h, y0, c, vals, b),
                                sparse_row::<W, u32>(input, h, y1, c, vals, b),
                            ),
                        }
                    }
                },
            };
            macs += u64::from(m0) + u64::from(m1);
            let Some(dst) = out_rows.next() else {
                return macs;
            };
            pool_rows(&top, &bottom, dst);
        }
    }
    macs
}

/// Runs the layer: `input` is `in_channels × height × width`, `out` receives
/// `out_channels × height/2 × width/2`. Returns the multiply-accumulates performed (taps that
/// fall on padding are not performed and not counted). The caller (the engine's plan) has
/// checked the sizes; slices that are too short produce zeros, never a panic.
pub fn conv3x3_relu_maxpool2(
    input: &[f32],
    shape: &ConvShape,
    weights: &Weights<'_>,
    bias: &[f32],
    out: &mut [f32],
) -> u64 {
    match shape.width {
        28 => return layer_fixed::<28>(input, shape, weights, bias, out),
        14 => return layer_fixed::<14>(input, shape, weights, bias, out),
        _ => {}
    }
    match *weights {
        Weights::Dense(w) => layer_any(
            input,
            shape,
            &DenseTaps {
                weights: w,
                in_channels: shape.in_channels,
            },
            bias,
            out,
        ),
        Weights::Csr(Csr {
            row_ptr,
            col_idx,
            values,
            ..
        }) => match col_idx {
            Indices::U8(c) => layer_any(
                input,
                shape,
                &SparseTaps {
                    row_ptr,
                    col_idx: c,
                    values,
                },
                bias,
                out,
            ),
            Indices::U16(c) => layer_any(
                input,
                shape,
                &SparseTaps {
                    row_ptr,
                    col_idx: c,
                    values,
                },
                bias,
                out,
            ),
            Indices::U32(c) => layer_any(
                input,
                shape,
                &SparseTaps {
                    row_ptr,
                    col_idx: c,
                    values,
                },
                bias,
                out,
            ),
        },
    }
}
