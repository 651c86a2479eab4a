//! Int8 3x3 convolution (stride 1, zero padding 1) fused with bias, 2x2 max-pool, requantization
//! and ReLU (SPEC §4.1), one pooled output row at a time from a four-row window of activations
//! (bytes 0..=255 widened to `i16`, so the Cortex-M4's dual 16-bit multiply-accumulates read two
//! of them per load), in the same window geometry as the f32 kernel ([`ConvShape`], [`TapTable`]).
//!
//! Sparse weights: each output channel's non-zero taps are decoded once per pooled row (window
//! offset and weight in one word), then add `weight · window[offset + j]` to `i32` accumulators
//! that start at 0 (the bias joins at the requantization), half a [`CHUNK`] at a time so the
//! sums stay in registers
//! (`conv_i8_loops::pooled_chunk`: one `SMLAxT` per MAC, one load per two); each pass's sums are
//! max-pooled in pairs of columns as it ends (the pair across the halves joins after both), so
//! only seven maxima per conv row leave the registers. Dense weights take
//! CMSIS-NN's im2col technique instead (`conv_i8_dense`). Padding is zero in the window, so a
//! tap on it adds nothing and no kernel needs to skip it. The two conv rows of a pooled row are
//! max-pooled on the accumulators, then requantized once (the requantization is non-decreasing,
//! so this is the same as pooling requantized values) and clamped to 0..=255: the ReLU.
//!
//! Integer sums are exact in any order (the reader checked that no accumulator can overflow),
//! so any kernel gives the same values on every machine.

use super::conv::{chunk_starts, ConvShape, RowSink, TapTable, CHUNK};
#[cfg(feature = "dense-kernels")]
use super::conv_i8_dense::DenseConv;
use super::conv_i8_image::{self, Requant, COLUMNS};
use super::conv_i8_loops::{decode_csr, decode_dense, pooled_chunk, HALF};
use crate::plan::longest_row;
use model_format::quant::requantize_u8;
use model_format::{LayerParamsI8, WeightsI8};

/// An int8 conv layer checked for the kernels: weights of the right size, every stored column
/// below `in_channels · 9`, one bias and requantization per output channel.
#[derive(Debug, Clone, Copy)]
pub struct ConvLayerI8<'m, 't> {
    shape: ConvShape,
    /// Borrowed from the model: a stage holds a pointer, not a copy of the layer's views.
    params: &'m LayerParamsI8<'m>,
    table: TapTable<'t>,
    /// The table's largest window offset, in values: one check per pooled row covers every
    /// tap. (`u16`, as the table: a stage is as small as it can be, the firmware holds one per
    /// conv layer of its network on the stack.)
    max_offset: u16,
    /// Words of scratch its kernel needs ([`scratch_needed`]).
    scratch: u16,
    /// Whether the image kernel runs it ([`uses_image_kernel`]).
    image: bool,
}

impl<'m, 't> ConvLayerI8<'m, 't> {
    /// The layer with its tap table in `storage` (at least `shape.taps()` entries); `None` if
    /// the parameters do not match `shape` or the storage is too short.
    pub fn new(
        shape: ConvShape,
        params: &'m LayerParamsI8<'m>,
        storage: &'t mut [u16],
    ) -> Option<Self> {
        let (rows, taps) = (shape.out_channels, shape.taps());
        let sized = match params.weights {
            WeightsI8::Dense(w) => w.len() >= rows * taps,
            // The reader checked that every row's columns stay below the layer's columns.
            WeightsI8::Csr(c) => c.cols == taps && c.rows == rows,
        };
        let per_row = params.bias.len() >= rows
            && params.multiplier.len() >= rows
            && params.shift.len() >= rows;
        // The sparse kernel addresses the window in bytes with 16 bits (its decoded taps hold
        // byte offsets, so its table does too); im2col reads values.
        let addressable = shape.window_len().is_some_and(|n| n <= 1 << 15);
        let im2col = matches!(params.weights, WeightsI8::Dense(_)) && uses_im2col(&shape);
        let unit = if im2col { 1 } else { size_of::<i16>() };
        let table = TapTable::in_units(&shape, storage, unit)?;
        let max_offset = table.offsets().iter().copied().max().unwrap_or(0) / unit as u16;
        let scratch = u16::try_from(scratch_needed(&shape, params)).ok()?;
        (sized && per_row && addressable).then_some(ConvLayerI8 {
            shape,
            params,
            table,
            max_offset,
            scratch,
            image: uses_image_kernel(&shape, params),
        })
    }

    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// Pooled output row `p` of every output channel, from a window holding input rows
    /// `2p − 1 ..= 2p + 2` (zeros outside the map), written as `sink` says. A window shorter
    /// than [`ConvShape::window_len`] or rows outside `out` leave `out` untouched.
    /// `scratch`: at least [`scratch_needed`] words.
    pub fn pooled_row(&self, window: &[i16], out: &mut [i16], sink: RowSink, scratch: &mut [u32]) {
        if self.shape.window_len().is_none_or(|n| window.len() < n) {
            return;
        }
        #[cfg(feature = "dense-kernels")]
        if let (WeightsI8::Dense(weights), true) = (self.params.weights, uses_im2col(&self.shape)) {
            let dense = DenseConv {
                shape: &self.shape,
                params: self.params,
                weights,
                offsets: self.table.offsets(),
            };
            return dense.pooled_row(window, out, sink, scratch);
        }
        match self.params.weights {
            WeightsI8::Dense(weights) if self.image => self.image_row(weights, window, out, sink),
            _ => self.taps_row(window, out, sink, scratch),
        }
    }

    /// The image kernel's pooled row: one call per output channel (the kernel packs its
    /// weights), the requantization set up once and applied in the kernel's loop.
    fn image_row(&self, weights: &[i8], window: &[i16], out: &mut [i16], sink: RowSink) {
        let p = self.params;
        let requant = p.bias.iter().zip(p.multiplier).zip(p.shift);
        let rows = weights.chunks_exact(9).zip(requant);
        for (co, (w, ((&bias, &m), &s))) in rows.enumerate().take(self.shape.out_channels) {
            let start = sink.base + co * sink.stride;
            let (Ok(w), Some(q), Some(dst)) = (
                <&[i8; 9]>::try_from(w),
                Requant::new(bias, m, s),
                out.get_mut(start..start + COLUMNS),
            ) else {
                return;
            };
            conv_i8_image::row(w, &q, window, dst);
        }
    }

    /// The tap-by-tap kernel's pooled row: per output channel, its taps decoded once, then the
    /// row in chunks, each chunk's maxima requantized.
    fn taps_row(&self, window: &[i16], out: &mut [i16], sink: RowSink, scratch: &mut [u32]) {
        if !self.in_reach(window, scratch) {
            return;
        }
        let (w, slot) = (self.shape.width, self.shape.slot_len());
        let p = self.params;
        let rows = p.bias.iter().zip(p.multiplier).zip(p.shift);
        for (co, ((&bias, &m), &s)) in rows.enumerate().take(self.shape.out_channels) {
            let start = sink.base + co * sink.stride;
            let Some(dst) = out.get_mut(start..start + w / 2) else {
                return;
            };
            let taps = self.decode(co, scratch);
            for x0 in chunk_starts(w) {
                // SAFETY: `decode` kept only taps whose HALF values lie inside the window from
                // the furthest start of a pass (`in_reach`: slot + x0 + HALF at most), and
                // ended them with 0.
                #[allow(unsafe_code)]
                let pooled = unsafe { pooled_chunk(taps, window, x0, slot) };
                // Chunks start at even columns, so chunk pair k is pooled column x0/2 + k.
                let dst = dst.get_mut(x0 / 2..).unwrap_or(&mut []);
                for (o, &v) in dst.iter_mut().zip(&pooled) {
                    // The sums left the bias out; the reader bounded |bias| + every sum.
                    *o = i16::from(requantize_u8(v + bias, m, s));
                }
            }
        }
    }

    /// Whether every chunk's reads stay inside `window` and the longest tap list fits
    /// `scratch`: checked once per pooled row.
    fn in_reach(&self, window: &[i16], scratch: &[u32]) -> bool {
        let (w, slot) = (self.shape.width, self.shape.slot_len());
        // The furthest a pass starts: the bottom row's last chunk's second half. Every tap
        // leaves its HALF values inside the window from any pass's start (what `pooled_chunk`
        // relies on) when the furthest tap does: one check for all of them.
        let last_base = slot + w.saturating_sub(CHUNK) + HALF;
        usize::from(self.max_offset) + HALF <= window.len().saturating_sub(last_base)
            && scratch.len() >= usize::from(self.scratch)
    }

    /// Output channel `co`'s non-zero taps into `scratch` as [`tap`]s (window byte offset and
    /// weight), then two 0s: the end, and before it a tap that adds nothing if the count is
    /// odd (the kernel takes taps two at a time). Decoded once, used by every pass of the
    /// pooled row. `scratch` holds [`scratch_needed`] words, two more than the longest row's
    /// taps, and every offset is in reach (both checked by `pooled_row`).
    fn decode<'s>(&self, co: usize, scratch: &'s mut [u32]) -> &'s [u32] {
        let offsets = self.table.offsets();
        let n = match self.params.weights {
            WeightsI8::Csr(csr) => {
                let (from, to) = (
                    csr.row_ptr.get(co).unwrap_or(0),
                    csr.row_ptr.get(co + 1).unwrap_or(0),
                );
                let deltas = csr.col_delta.get(from..to).unwrap_or(&[]);
                let values = csr.values.get(from..to).unwrap_or(&[]);
                // SAFETY: the reader checked that a row's columns (running sums of its deltas)
                // strictly increase and stay below the layer's columns, `new` that these are
                // the table's length, and `pooled_row` that `scratch` holds two words more
                // than the longest row's entries ([`scratch_needed`]).
                #[allow(unsafe_code)]
                unsafe {
                    decode_csr(deltas, values, offsets, scratch)
                }
            }
            WeightsI8::Dense(all) => {
                let taps = self.shape.taps();
                let row = all.get(co * taps..(co + 1) * taps).unwrap_or(&[]);
                decode_dense(row, offsets, scratch)
            }
        };
        match scratch.get_mut(n..n + 2) {
            Some(end) => end.fill(0),
            None => return &[],
        }
        scratch.get(..n + 2).unwrap_or(&[])
    }
}

/// Whether a conv layer runs through the one-channel kernel (`conv_i8_image`: every tap, two
/// per `SMLAD`, the requantization in its loop): stored dense, a one-channel input as wide as
/// the kernel is built for, and every output channel's shift 32 or more (what the loop's
/// requantization handles; the demo's models' conv1 shifts are 37 to 41). On the Fashion-MNIST
/// model's 60%-dense conv1 it took 1.3x fewer instructions than the tap-by-tap kernel, zeros
/// skipped (the demo's per-layer table), before its requantization moved into the loop.
pub fn uses_image_kernel(shape: &ConvShape, params: &LayerParamsI8<'_>) -> bool {
    matches!(params.weights, WeightsI8::Dense(_))
        && shape.in_channels == 1
        && shape.slot_len() == conv_i8_image::ROW
        && params
            .shift
            .iter()
            .all(|&s| Requant::new(0, 0, s).is_some())
}

/// Whether a conv layer stored dense runs through im2col (copying each pixel's patch pays off
/// over many taps) rather than the tap-by-tap kernel, which also skips zero weights: from 4
/// input channels on (on the recipe's conv1, one channel and 9 taps, the tap-by-tap kernel took
/// fewer instructions in the demo's runs; on conv2 im2col took far fewer). The engine's MAC
/// counts follow the same choice (`cost::performed_macs_i8`).
/// Never without feature `dense-kernels`.
pub fn uses_im2col(shape: &ConvShape) -> bool {
    cfg!(feature = "dense-kernels") && shape.in_channels >= 4
}

/// Words of scratch the int8 conv kernels need for a layer with `taps` weights per output
/// channel: the sparse kernel's tap list and its two 0s, `taps + 2` words, or with feature
/// `dense-kernels` (im2col) four pixels' patches as 16-bit pairs (more).
pub const fn scratch_words(taps: usize) -> usize {
    if cfg!(feature = "dense-kernels") {
        8 * taps.div_ceil(4)
    } else {
        taps + 2
    }
}

/// Words of scratch the int8 conv kernels need for this layer as stored: none for the image
/// kernel, [`scratch_words`] for im2col, the tap list of the longest CSR row and its two 0s
/// for sparse weights (a model's own bound, below the network's: the firmware sizes its
/// scratch by it when the model is built in), `taps + 2` for dense weights on the tap-by-tap
/// kernel (its decoder reads a row only as far as the scratch goes).
pub fn scratch_needed(shape: &ConvShape, params: &LayerParamsI8<'_>) -> usize {
    let taps = shape.taps();
    match params.weights {
        WeightsI8::Dense(_) if uses_image_kernel(shape, params) => 0,
        WeightsI8::Dense(_) if uses_im2col(shape) => scratch_words(taps),
        WeightsI8::Dense(_) => taps + 2,
        WeightsI8::Csr(c) => (longest_row(c.row_ptr, c.rows) + 2).min(taps + 2),
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
