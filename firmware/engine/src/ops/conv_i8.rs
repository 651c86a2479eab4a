//! Int8 3x3 convolution (stride 1, zero padding 1) fused with bias, 2x2 max-pool, requantization
//! and ReLU (SPEC §4.1), one pooled output row at a time from a four-row window of activations
//! (bytes 0..=255 widened to `i16`, so the Cortex-M4's dual 16-bit multiply-accumulates read two
//! of them per load), in the same window geometry as the f32 kernel ([`ConvShape`], [`TapTable`]).
//!
//! Sparse weights: each output channel's non-zero taps are decoded once per pooled row (window
//! offset and weight in one word), then add `weight · window[offset + j]` to `i32` accumulators
//! that start at the bias, half a [`CHUNK`] at a time so the sums stay in registers; one
//! `SMLABB`/`SMLABT` per MAC, one load per two. Dense weights take CMSIS-NN's im2col technique
//! instead (`conv_i8_dense`). Padding is zero in the window, so a
//! tap on it adds nothing and no kernel needs to skip it. The two conv rows of a pooled row are
//! max-pooled on the accumulators, then requantized once (the requantization is non-decreasing,
//! so this is the same as pooling requantized values) and clamped to 0..=255: the ReLU.
//!
//! Integer sums are exact in any order (the reader checked that no accumulator can overflow),
//! so any kernel gives the same values on every machine.

use super::conv::{chunk_starts, ConvShape, RowSink, TapTable, CHUNK};
pub use super::conv_i8_dense::scratch_words;
use super::conv_i8_dense::DenseConv;
use super::dsp::{pack, smlabb, smlabt};
use model_format::quant::requantize_u8;
use model_format::{CsrI8, LayerParamsI8, WeightsI8};

/// An int8 conv layer checked for the kernels: weights of the right size, every stored column
/// below `in_channels · 9`, one bias and requantization per output channel.
#[derive(Debug, Clone, Copy)]
pub struct ConvLayerI8<'m, 't> {
    shape: ConvShape,
    params: LayerParamsI8<'m>,
    table: TapTable<'t>,
}

impl<'m, 't> ConvLayerI8<'m, 't> {
    /// `None` if the parameters do not match `shape`.
    pub fn new(shape: ConvShape, params: LayerParamsI8<'m>, table: TapTable<'t>) -> Option<Self> {
        let (rows, taps) = (shape.out_channels, shape.taps());
        let sized = match params.weights {
            WeightsI8::Dense(w) => w.len() >= rows * taps,
            // The reader checked that every row's columns stay below the layer's columns.
            WeightsI8::Csr(c) => c.cols == taps && c.rows == rows,
        };
        let per_row = params.bias.len() >= rows
            && params.multiplier.len() >= rows
            && params.shift.len() >= rows;
        (sized && per_row && table.offsets().len() == taps).then_some(ConvLayerI8 {
            shape,
            params,
            table,
        })
    }

    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// Pooled output row `p` of every output channel, from a window holding input rows
    /// `2p − 1 ..= 2p + 2` (zeros outside the map), written as `sink` says. A window shorter
    /// than [`ConvShape::window_len`] or rows outside `out` leave `out` untouched.
    /// `scratch`: at least [`scratch_words`] (`taps` words for the sparse kernel's tap list).
    pub fn pooled_row(&self, window: &[i16], out: &mut [i16], sink: RowSink, scratch: &mut [u32]) {
        if self.shape.window_len().is_none_or(|n| window.len() < n) {
            return;
        }
        let csr = match self.params.weights {
            WeightsI8::Dense(weights) => {
                let dense = DenseConv {
                    shape: &self.shape,
                    params: &self.params,
                    weights,
                    offsets: self.table.offsets(),
                };
                return dense.pooled_row(window, out, sink, scratch);
            }
            WeightsI8::Csr(csr) => csr,
        };
        let (w, slot) = (self.shape.width, self.shape.slot_len());
        let p = &self.params;
        let rows = p.bias.iter().zip(p.multiplier).zip(p.shift);
        for (co, ((&bias, &m), &s)) in rows.enumerate().take(self.shape.out_channels) {
            let start = sink.base + co * sink.stride;
            let Some(dst) = out.get_mut(start..start + w / 2) else {
                return;
            };
            let taps = self.decode(&csr, co, scratch);
            let mut pooled = 0;
            for x0 in chunk_starts(w) {
                let top = conv_row(bias, window, x0, taps);
                let bottom = conv_row(bias, window, slot + x0, taps);
                let end = ((x0 + CHUNK) / 2).min(dst.len());
                for px in pooled..end {
                    let j = 2 * px - x0;
                    if let (Some(t), Some(u), Some(o)) =
                        (top.get(j..j + 2), bottom.get(j..j + 2), dst.get_mut(px))
                    {
                        let max = t[0].max(t[1]).max(u[0]).max(u[1]);
                        *o = i16::from(requantize_u8(max, m, s));
                    }
                }
                pooled = end.max(pooled);
            }
        }
    }

    /// Output channel `co`'s non-zero taps into `scratch`, each as its window offset (high half)
    /// and weight (low half): decoded once, used by every chunk of both conv rows.
    fn decode<'s>(&self, csr: &CsrI8<'_>, co: usize, scratch: &'s mut [u32]) -> &'s [u32] {
        let offsets = self.table.offsets();
        let mut n = 0;
        for (col, wt) in csr.row(co).filter(|&(_, w)| w != 0) {
            if let (Some(&off), Some(slot)) = (offsets.get(col), scratch.get_mut(n)) {
                *slot = (u32::from(off) << 16) | u32::from(i16::from(wt) as u16);
                n += 1;
            }
        }
        scratch.get(..n).unwrap_or(&[])
    }
}

/// Half a chunk: few enough accumulators to stay in registers across the tap loop.
const HALF: usize = CHUNK / 2;

/// One conv row of a chunk whose window row starts at `base`: `bias` plus every decoded tap,
/// half a chunk at a time.
#[inline(always)]
fn conv_row(bias: i32, window: &[i16], base: usize, taps: &[u32]) -> [i32; CHUNK] {
    let mut acc = [bias; CHUNK];
    for (half, out) in acc.chunks_exact_mut(HALF).enumerate() {
        let mut sums = [bias; HALF];
        for &tap in taps {
            let at = base + half * HALF + (tap >> 16) as usize;
            if let Some(row) = window
                .get(at..at + HALF)
                .and_then(|r| <&[i16; HALF]>::try_from(r).ok())
            {
                half_tap(&mut sums, row, tap);
            }
        }
        out.copy_from_slice(&sums);
    }
    acc
}

/// `acc[j] += w · row[j]`, the weight in the low half of `tap`.
#[inline(always)]
fn half_tap(acc: &mut [i32; HALF], row: &[i16; HALF], tap: u32) {
    for k in 0..HALF / 2 {
        let a = pack(row[2 * k], row[2 * k + 1]);
        acc[2 * k] = smlabb(tap, a, acc[2 * k]);
        acc[2 * k + 1] = smlabt(tap, a, acc[2 * k + 1]);
    }
    if HALF % 2 == 1 {
        let last = u32::from(row[HALF - 1] as u16);
        acc[HALF - 1] = smlabb(tap, last, acc[HALF - 1]);
    }
}

impl crate::stream::RowKernel for ConvLayerI8<'_, '_> {
    type Act = i16;
    const ZERO: i16 = 0;

    fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// The input's scale is 1/255: bytes are used as they are.
    fn pixel(px: u8) -> i16 {
        i16::from(px)
    }

    fn pooled_row(
        &self,
        window: &[i16],
        _p: usize,
        out: &mut [i16],
        sink: RowSink,
        scratch: &mut [u32],
    ) {
        ConvLayerI8::pooled_row(self, window, out, sink, scratch)
    }
}
