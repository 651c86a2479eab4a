//! Int8 3x3 convolution (stride 1, zero padding 1) fused with bias, 2x2 max-pool, requantization
//! and ReLU (SPEC §4.1), one pooled output row at a time from a four-row window of unsigned-byte
//! activations, in the same window geometry as the f32 kernel ([`ConvShape`], [`TapTable`]).
//!
//! Each output channel's taps add `weight · window[offset + j]` to a [`CHUNK`]-wide row of `i32`
//! accumulators that start at the bias. Padding is zero in the window, so a tap on it adds
//! nothing and no kernel needs to skip it. The two conv rows of a pooled row are max-pooled on
//! the accumulators, then requantized once (the requantization is non-decreasing, so this is
//! the same as pooling requantized values) and clamped to 0..=255, which is the ReLU.
//!
//! Integer sums are exact in any order (the reader checked that no accumulator can overflow),
//! so any kernel, portable or assembly, gives the same bytes on every machine.

use super::conv::{chunk_starts, ConvShape, RowSink, TapTable, CHUNK};
use model_format::quant::requantize_u8;
use model_format::{LayerParamsI8, WeightsI8};

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
    pub fn pooled_row(&self, window: &[u8], out: &mut [u8], sink: RowSink) {
        if self.shape.window_len().is_none_or(|n| window.len() < n) {
            return;
        }
        let (w, slot, taps) = (self.shape.width, self.shape.slot_len(), self.shape.taps());
        let offsets = self.table.offsets();
        let p = &self.params;
        let rows = p.bias.iter().zip(p.multiplier).zip(p.shift);
        for (co, ((&bias, &m), &s)) in rows.enumerate().take(self.shape.out_channels) {
            let start = sink.base + co * sink.stride;
            let Some(dst) = out.get_mut(start..start + w / 2) else {
                return;
            };
            let mut pooled = 0;
            for x0 in chunk_starts(w) {
                let (top, bottom) = match p.weights {
                    WeightsI8::Dense(all) => {
                        let kernel = all.get(co * taps..(co + 1) * taps).unwrap_or(&[]);
                        let taps = kernel.iter().enumerate().map(|(c, &v)| (c, v));
                        conv_rows(bias, window, x0, slot, offsets, taps)
                    }
                    WeightsI8::Csr(csr) => conv_rows(bias, window, x0, slot, offsets, csr.row(co)),
                };
                let end = ((x0 + CHUNK) / 2).min(dst.len());
                for px in pooled..end {
                    let j = 2 * px - x0;
                    if let (Some(t), Some(u), Some(o)) =
                        (top.get(j..j + 2), bottom.get(j..j + 2), dst.get_mut(px))
                    {
                        *o = requantize_u8(t[0].max(t[1]).max(u[0]).max(u[1]), m, s);
                    }
                }
                pooled = end.max(pooled);
            }
        }
    }
}

/// The two conv rows (top: window rows from slot 0, bottom: from slot 1) of one output channel
/// on the chunk at `x0`: `bias` plus every tap `(column, weight)` of `taps`, zero weights skipped.
#[inline(always)]
fn conv_rows(
    bias: i32,
    window: &[u8],
    x0: usize,
    slot: usize,
    offsets: &[u16],
    taps: impl Iterator<Item = (usize, i8)>,
) -> ([i32; CHUNK], [i32; CHUNK]) {
    let mut top = [bias; CHUNK];
    let mut bottom = [bias; CHUNK];
    for (col, wt) in taps.filter(|&(_, w)| w != 0) {
        let Some(&off) = offsets.get(col) else {
            continue;
        };
        let at = x0 + usize::from(off);
        // Both rows of the tap: the bottom one a slot further down the window.
        let rows = (
            window.get(at..at + CHUNK),
            window.get(at + slot..at + slot + CHUNK),
        );
        let (Some(t), Some(b)) = rows else {
            continue;
        };
        let wt = i32::from(wt);
        for ((a, c), (&x, &y)) in top.iter_mut().zip(bottom.iter_mut()).zip(t.iter().zip(b)) {
            *a += wt * i32::from(x);
            *c += wt * i32::from(y);
        }
    }
    (top, bottom)
}

impl crate::stream::RowKernel for ConvLayerI8<'_, '_> {
    type Act = u8;
    const ZERO: u8 = 0;

    fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// The input's scale is 1/255: bytes are used as they are.
    fn pixel(px: u8) -> u8 {
        px
    }

    fn pooled_row(&self, window: &[u8], _p: usize, out: &mut [u8], sink: RowSink) {
        ConvLayerI8::pooled_row(self, window, out, sink)
    }
}
