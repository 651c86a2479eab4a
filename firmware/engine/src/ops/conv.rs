//! 3x3 convolution (stride 1, zero padding 1) fused with bias, ReLU and 2x2 max-pool, computed
//! one pooled output row at a time from a four-row input window, so a layer can consume the
//! previous layer's rows as they are produced instead of its whole feature map.
//!
//! The window holds input rows `2p − 1 ..= 2p + 2` for pooled row `p` (slots 0..4, slot-major,
//! then channel: each channel's row after a zero column, which is also the previous channel's
//! right padding, and one more zero column at the slot's end), with zero rows standing in for
//! the padding above and below the map. Every kernel works on a [`CHUNK`]-wide row of accumulators (in FPU registers):
//! - the tap kernel visits an output channel's taps in column order (input channel, ky, kx),
//!   each tap one contiguous window read at an offset looked up in a [`TapTable`] (padding
//!   included: a zero times the weight adds nothing), which on the Cortex-M4F is a short
//!   assembly loop (`ops/conv_arm.rs`) that computes a whole pooled chunk per call. It reads
//!   CSR weights' column indices as stored (one or two bytes) and, without feature
//!   `dense-kernels`, runs dense weights too (every column in order);
//! - with `dense-kernels`, dense weights take a kernel that visits every tap in the same order
//!   but skips the padding instead of reading it.
//!
//! A product with a padding zero or a zero weight is ±0, which leaves a sum unchanged except
//! for the sign of an exact zero, and the ReLU below turns −0 into +0: so every kernel, and a
//! model stored sparse or dense, gives the same bits.
//!
//! Two conv rows are max-pooled and clamped at zero (ReLU commutes with max). The float
//! operations on each output depend only on the model and input, never on the machine or the
//! chunking, so host and MCU agree bit for bit.

use super::row_pointer;
use model_format::{Csr, Indices, Layer, LayerParams, Shape3, Weights};

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

/// Width of the accumulator row every kernel computes at once: the recipe's 28- and 14-wide maps
/// split into whole chunks; other widths use overlapping chunks (a few outputs computed twice).
pub const CHUNK: usize = 14;

/// Largest window (in floats) a layer may need: tap offsets are stored as `u16`.
pub const MAX_WINDOW: usize = 1 << 16;

/// Input geometry of one conv layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ConvShape {
    /// The geometry of a conv layer of the network.
    pub fn of(layer: &Layer<'_>) -> Self {
        Self::reading(layer.input, layer.output.channels)
    }

    /// The geometry of a conv layer with `out_channels` filters reading `input`.
    pub const fn reading(input: Shape3, out_channels: usize) -> Self {
        ConvShape {
            in_channels: input.channels,
            out_channels,
            height: input.height,
            width: input.width,
        }
    }

    /// Floats from one input channel's row in a window slot to the next: the row, at least a
    /// chunk wide, and one zero column. Neighbouring channels share that column: it is the
    /// right padding of one and the left padding of the next.
    pub const fn padded_width(&self) -> usize {
        (if self.width > CHUNK {
            self.width
        } else {
            CHUNK
        }) + 1
    }

    /// Floats per window slot: one input row of every input channel, each after its left
    /// padding, and the last one's right padding.
    pub const fn slot_len(&self) -> usize {
        self.in_channels * self.padded_width() + 1
    }

    /// Floats of the four-slot window, `None` if it would exceed [`MAX_WINDOW`].
    pub const fn window_len(&self) -> Option<usize> {
        match self.in_channels.checked_mul(self.padded_width()) {
            Some(rows) if rows < MAX_WINDOW / 4 => Some((rows + 1) * 4),
            _ => None,
        }
    }

    /// Weights per output channel (`in_channels · 9`), the length of the layer's tap table.
    pub const fn taps(&self) -> usize {
        self.in_channels * 9
    }

    /// Multiply-accumulates of a tap at kernel position (ky, kx) over the whole map: the rows and
    /// columns where it does not fall on the padding.
    pub fn tap_macs(&self, ky: usize, kx: usize) -> u64 {
        let rows = self.height - usize::from(ky != 1);
        let cols = self.width - usize::from(kx != 1);
        (rows * cols) as u64
    }
}

/// Where each tap of a layer reads in the window, relative to the conv row's slot and the chunk:
/// entry `ci·9 + ky·3 + kx` is `ky · slot_len + ci · padded_width + kx` values (or that many
/// times a value's bytes, [`Self::in_units`]). Built by [`Self::new`] only, so every entry is
/// at most `3 · slot_len − padded_width + 1` values: a chunk read at any entry stays inside
/// the window (see [`ConvLayer::pooled_row`]).
#[derive(Debug, Clone, Copy)]
pub struct TapTable<'a> {
    offsets: &'a [u16],
}

impl<'a> TapTable<'a> {
    /// Fills `storage` (at least `shape.taps()` entries) for `shape`; `None` if it is too short
    /// or the window too large for `u16` offsets.
    pub fn new(shape: &ConvShape, storage: &'a mut [u16]) -> Option<Self> {
        Self::in_units(shape, storage, 1)
    }

    /// [`Self::new`] with each offset in units of `unit` (a value's bytes, for kernels that
    /// address the window in bytes).
    pub fn in_units(shape: &ConvShape, storage: &'a mut [u16], unit: usize) -> Option<Self> {
        shape.window_len()?;
        let (pw, slot) = (shape.padded_width(), shape.slot_len());
        let offsets = storage.get_mut(..shape.taps())?;
        for (i, o) in offsets.iter_mut().enumerate() {
            let (ci, ky, kx) = (i / 9, i % 9 / 3, i % 3);
            *o = u16::try_from((ky * slot + ci * pw + kx).checked_mul(unit)?).ok()?;
        }
        Some(TapTable { offsets })
    }

    /// The offsets, one per column of the layer's weight matrix.
    pub(crate) fn offsets(&self) -> &'a [u16] {
        self.offsets
    }
}

/// A conv layer checked for the kernels: weights of the right size, every stored column index
/// below `in_channels · 9` (the sparse kernel's reads depend on it).
#[derive(Debug, Clone, Copy)]
pub struct ConvLayer<'m, 't> {
    shape: ConvShape,
    /// Borrowed from the model: a stage holds a pointer, not a copy of the layer's views.
    params: &'m LayerParams<'m>,
    table: TapTable<'t>,
}

/// Where a layer's pooled rows go: channel `co`'s row starts at `base + co · stride` of the
/// output slice.
#[derive(Debug, Clone, Copy)]
pub struct RowSink {
    pub base: usize,
    pub stride: usize,
}

impl<'m, 't> ConvLayer<'m, 't> {
    /// `None` if the weights or bias do not match `shape` or a column index is out of range.
    pub fn new(shape: ConvShape, params: &'m LayerParams<'m>, table: TapTable<'t>) -> Option<Self> {
        let (rows, taps) = (shape.out_channels, shape.taps());
        let sized = match params.weights {
            Weights::Dense(w) => w.len() >= rows * taps,
            Weights::Csr(Csr {
                row_ptr,
                col_idx,
                values,
                ..
            }) => {
                // 32-bit column indices mean more than 65,535 taps, so a window too large for
                // the u16 tap table (`TapTable::new` refuses it first): no kernel for them.
                let in_range = match col_idx {
                    Indices::U8(c) => c.iter().all(|&c| usize::from(c) < taps),
                    Indices::U16(c) => c.iter().all(|&c| usize::from(c) < taps),
                    Indices::U32(_) => false,
                };
                in_range && row_ptr.len() > rows && values.len() == col_idx.len()
            }
        };
        let biased = params.bias.len() >= rows;
        (sized && biased && table.offsets.len() == taps).then_some(ConvLayer {
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
    /// than the shape's [`ConvShape::window_len`] or rows outside `out` leave `out` untouched.
    ///
    /// Never inlined: inlined into the streaming, its chunk arrays became `memcpy` calls in
    /// the firmware's size-optimised build (9% of a sparse inference).
    #[inline(never)]
    pub fn pooled_row(&self, window: &[f32], p: usize, out: &mut [f32], sink: RowSink) {
        if self.shape.window_len().is_none_or(|n| window.len() < n) {
            return;
        }
        #[cfg(feature = "dense-kernels")]
        if let Weights::Dense(w) = self.params.weights {
            return self.dense_rows(window, p, out, sink, w);
        }
        // The tap kernel reads the padding rows (zeros) rather than skipping them by row.
        let _ = p;
        self.tap_rows(window, out, sink);
    }

    /// [`Self::pooled_row`] on the tap kernel, one output channel at a time.
    fn tap_rows(&self, window: &[f32], out: &mut [f32], sink: RowSink) {
        let w = self.shape.width;
        for (co, &b) in self
            .params
            .bias
            .iter()
            .enumerate()
            .take(self.shape.out_channels)
        {
            let start = sink.base + co * sink.stride;
            let Some(dst) = out.get_mut(start..start + w / 2) else {
                return;
            };
            let (cols, vals) = self.row_taps(co);
            self.channel_row(window, cols, vals, b, dst);
        }
    }

    /// Output channel `co`'s taps: their column indices as stored (every column for a dense
    /// row) and their weights.
    fn row_taps(&self, co: usize) -> (Cols<'m>, &'m [f32]) {
        match self.params.weights {
            Weights::Dense(w) => {
                let taps = self.shape.taps();
                (
                    Cols::Every,
                    w.get(co * taps..(co + 1) * taps).unwrap_or(&[]),
                )
            }
            Weights::Csr(Csr {
                row_ptr,
                col_idx,
                values,
                ..
            }) => {
                let (from, to) = (row_pointer(&row_ptr, co), row_pointer(&row_ptr, co + 1));
                let vals = values.get(from..to).unwrap_or(&[]);
                let cols = match col_idx {
                    Indices::U8(c) => Cols::U8(c.get(from..to).unwrap_or(&[])),
                    Indices::U16(c) => Cols::U16(c.get(from..to).unwrap_or(&[])),
                    // Refused by `new`.
                    Indices::U32(_) => Cols::U16(&[]),
                };
                (cols, vals)
            }
        }
    }

    /// One output channel's pooled row from its taps, chunk by chunk: the top conv row, then
    /// the bottom one pooled with it. A chunk that overlaps the one before it writes its
    /// pooled values again (the same floats: the same taps on the same inputs); in a row
    /// narrower than a chunk the pooled chunk is cut to the row.
    #[inline(always)]
    #[allow(unsafe_code)]
    fn channel_row(&self, window: &[f32], cols: Cols<'_>, vals: &[f32], b: f32, dst: &mut [f32]) {
        let slot = self.shape.slot_len();
        let bias = [b; CHUNK];
        let taps = Taps::new(self.table.offsets, cols, vals);
        let mut part = [0f32; CHUNK / 2];
        for x0 in chunk_starts(self.shape.width) {
            let whole = dst
                .get_mut(x0 / 2..x0 / 2 + CHUNK / 2)
                .and_then(|d| <&mut [f32; CHUNK / 2]>::try_from(d).ok());
            let narrow = whole.is_none();
            let pooled = whole.unwrap_or(&mut part);
            // SAFETY: every column index is below `taps() == table.offsets.len()` (`new`
            // checked the stored ones; a dense row has `taps()` weights, so its columns are
            // too), so every offset is a table entry. `pooled_row` checked `window.len() >=
            // window_len() == 4 · slot_len`. The bottom row starts at most at `slot_len +
            // padded_width − 1 − CHUNK` (chunks end by the map's width, and a channel's row
            // and its padding column are at least a chunk + 1 wide) and a table entry is at
            // most `3 · slot_len − padded_width + 1`, so CHUNK floats read from either row's
            // start + an entry end at or before `4 · slot_len`.
            unsafe {
                kernel::pooled_chunk(&bias, &taps, window.get(x0..).unwrap_or(&[]), slot, pooled)
            };
            if narrow {
                narrow_chunk(dst, x0 / 2, &part);
            }
        }
    }

    /// [`Self::pooled_row`] for dense weights with the dense kernels: every tap, skipping the
    /// padding.
    #[cfg(feature = "dense-kernels")]
    fn dense_rows(
        &self,
        window: &[f32],
        p: usize,
        out: &mut [f32],
        sink: RowSink,
        weights: &[f32],
    ) {
        let shape = &self.shape;
        let (h, w, slot, taps) = (shape.height, shape.width, shape.slot_len(), shape.taps());
        // Input row 2p − 1 + s is real for window slots s in `first..last`.
        let first = usize::from(p == 0);
        let last = (h + 1).saturating_sub(2 * p).min(4);
        for (co, &b) in self.params.bias.iter().enumerate().take(shape.out_channels) {
            let start = sink.base + co * sink.stride;
            let Some(dst) = out.get_mut(start..start + w / 2) else {
                return;
            };
            let kernel = weights.get(co * taps..(co + 1) * taps).unwrap_or(&[]);
            let mut pooled = 0;
            for x0 in chunk_starts(w) {
                let edges = (x0 == 0, x0 + CHUNK == w);
                let rows = [0, 1].map(|dy| {
                    // Kernel rows on real input rows: window slot ky + dy in first..last.
                    let kys = first.saturating_sub(dy)..(last - dy).min(3);
                    dense_chunk(b, window, dy * slot + x0, shape, kernel, kys, edges)
                });
                pooled = pool_chunk(&rows, x0, pooled, dst);
            }
        }
    }
}

/// ReLU of the max of four values. For finite floats the bit patterns read as `i32` keep the
/// order of the non-negative values and put every negative one (and −0.0) below +0.0, so an
/// integer max clamped at 0 is exactly `max(max(a, b, c, d), 0.0)`, in three cheap instructions
/// per compare instead of a float compare and a status-register move.
#[inline(always)]
fn relu_max4(a: f32, b: f32, c: f32, d: f32) -> f32 {
    let bits = |v: f32| v.to_bits() as i32;
    let m = bits(a).max(bits(b)).max(bits(c)).max(bits(d)).max(0);
    f32::from_bits(m as u32)
}

/// Max-pools (with ReLU) two whole conv rows of a chunk: constant indices, no checks.
#[inline(always)]
fn pool_whole(top: &[f32; CHUNK], bottom: &[f32; CHUNK], dst: &mut [f32; CHUNK / 2]) {
    for (px, o) in dst.iter_mut().enumerate() {
        let j = 2 * px;
        *o = relu_max4(top[j], top[j + 1], bottom[j], bottom[j + 1]);
    }
}

/// Max-pools (with ReLU) the two conv rows of the chunk at `x0` into `dst`, from pooled column
/// `pooled` on (earlier chunks may have covered some); returns the pooled columns done.
#[cfg(feature = "dense-kernels")]
#[inline(always)]
fn pool_chunk(rows: &[[f32; CHUNK]; 2], x0: usize, pooled: usize, dst: &mut [f32]) -> usize {
    let [top, bottom] = rows;
    let end = ((x0 + CHUNK) / 2).min(dst.len());
    if pooled == x0 / 2 {
        // The common case, a chunk of its own.
        if let Some(d) = dst
            .get_mut(x0 / 2..x0 / 2 + CHUNK / 2)
            .and_then(|d| <&mut [f32; CHUNK / 2]>::try_from(d).ok())
        {
            pool_whole(top, bottom, d);
            return end;
        }
    }
    for px in pooled..end {
        let j = 2 * px - x0;
        if let (Some(t), Some(u), Some(o)) =
            (top.get(j..j + 2), bottom.get(j..j + 2), dst.get_mut(px))
        {
            *o = relu_max4(t[0], t[1], u[0], u[1]);
        }
    }
    end.max(pooled)
}

/// A row narrower than a chunk: the pooled chunk's first values, as many as the row holds
/// from `from` on. Out of line, so the common case (whole chunks) stays short.
#[inline(never)]
fn narrow_chunk(dst: &mut [f32], from: usize, part: &[f32; CHUNK / 2]) {
    for (o, &v) in dst.iter_mut().skip(from).zip(part) {
        *o = v;
    }
}

/// Starts of the chunks that cover the pooled columns of a row `w` wide: whole chunks, the last
/// one moved left to end at `w` (at `w − 1` when `w` is odd, whose last column no pool reads)
/// when `w` is not a multiple of [`CHUNK`]. All even, so pooling pairs stay aligned.
pub(crate) fn chunk_starts(w: usize) -> impl Iterator<Item = usize> {
    (0..w.div_ceil(CHUNK)).map(move |i| (i * CHUNK).min(w.saturating_sub(CHUNK) & !1))
}

/// Dense taps of one output channel on a chunk whose conv row starts at `base`, for kernel rows
/// `kys` (those on real input rows), in column order (ci, ky, kx), as the tap kernel adds them;
/// `edges` says whether the chunk touches the left/right border (where the taps that would read
/// the padding are skipped). One inlined copy per border case: constant loop bounds.
#[cfg(feature = "dense-kernels")]
#[inline(always)]
fn dense_chunk(
    bias: f32,
    window: &[f32],
    base: usize,
    shape: &ConvShape,
    kernel: &[f32],
    kys: core::ops::Range<usize>,
    edges: (bool, bool),
) -> [f32; CHUNK] {
    match edges {
        (true, true) => dense_taps(bias, window, base, shape, kernel, kys, (true, true)),
        (true, false) => dense_taps(bias, window, base, shape, kernel, kys, (true, false)),
        (false, true) => dense_taps(bias, window, base, shape, kernel, kys, (false, true)),
        (false, false) => dense_taps(bias, window, base, shape, kernel, kys, (false, false)),
    }
}

impl crate::stream::RowKernel for ConvLayer<'_, '_> {
    type Act = f32;
    const ZERO: f32 = 0.0;

    fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// Bytes scaled by 1/255, as in training.
    fn pixel(px: u8) -> f32 {
        f32::from(px) / 255.0
    }

    fn pooled_row(&self, window: &[f32], p: usize, out: &mut [f32], sink: RowSink, _: &mut [u32]) {
        ConvLayer::pooled_row(self, window, p, out, sink)
    }
}

/// The dense taps of [`dense_chunk`], skipping those on the left (`edges.0`) and right
/// (`edges.1`) padding. Inlined with constant borders, every loop has constant bounds and the
/// accumulators (a local array) stay in registers.
#[cfg(feature = "dense-kernels")]
#[inline(always)]
fn dense_taps(
    bias: f32,
    window: &[f32],
    base: usize,
    shape: &ConvShape,
    kernel: &[f32],
    kys: core::ops::Range<usize>,
    (left, right): (bool, bool),
) -> [f32; CHUNK] {
    let mut acc = [bias; CHUNK];
    let (pw, slot) = (shape.padded_width(), shape.slot_len());
    // A running start rather than `base + ci · pw`: 0.2% fewer instructions in the dense f32
    // model (the firmware's build does not strength-reduce it).
    let mut channel = base;
    for k in kernel.chunks_exact(9) {
        let from = channel;
        channel += pw;
        let Ok(k) = <&[f32; 9]>::try_from(k) else {
            continue;
        };
        // Kernel rows ky of this input channel against its window rows, in order (the loop
        // over a constant array is written out: each row's weights and offset are constants;
        // in the demo's dense f32 model it took 5% fewer instructions than a range of rows).
        for ky in [0, 1, 2] {
            if kys.contains(&ky) {
                dense_row(&mut acc, window, from + ky * slot, k, ky, (left, right));
            }
        }
    }
    acc
}

/// Kernel row `ky` of one input channel (`k`, its nine weights) against the window row at
/// `start`, added to `acc` ([`dense_taps`]' inner step).
#[cfg(feature = "dense-kernels")]
#[inline(always)]
fn dense_row(
    acc: &mut [f32; CHUNK],
    window: &[f32],
    start: usize,
    k: &[f32; 9],
    ky: usize,
    (left, right): (bool, bool),
) {
    let Some(row) = window
        .get(start..start + CHUNK + 2)
        .and_then(|r| <&[f32; CHUNK + 2]>::try_from(r).ok())
    else {
        return;
    };
    let Some(&[w0, w1, w2]) = k.get(3 * ky..3 * ky + 3) else {
        return;
    };
    // Output-major: each input value is loaded once and used by its three taps; each
    // accumulator still sees kx = 0, 1, 2 in order.
    for (j, a) in acc.iter_mut().enumerate() {
        if !(left && j == 0) {
            *a += w0 * row[j];
        }
        *a += w1 * row[j + 1];
        if !(right && j == CHUNK - 1) {
            *a += w2 * row[j + 2];
        }
    }
}

/// One output channel's column indices as stored.
#[derive(Clone, Copy)]
pub(crate) enum Cols<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    /// A dense row: every column in order, as many as its weights.
    Every,
}

/// An output channel's taps: tap `i` adds `vals[i] · row[offsets[cols[i]] ..][..CHUNK]` to a
/// conv row of a chunk, where `row` is the window from the chunk's start (`offsets[i]` for a
/// dense row). The column list and the weights hold the same number of taps. The kernels'
/// callers guarantee that every column index is below `offsets.len()` and that every tap's
/// CHUNK floats lie in `row`: `offset + CHUNK <= row.len()`.
pub(crate) struct Taps<'a> {
    pub offsets: &'a [u16],
    pub cols: Cols<'a>,
    pub vals: &'a [f32],
}

impl<'a> Taps<'a> {
    /// The taps both `cols` and `vals` hold (a dense row's also within `offsets`).
    fn new(offsets: &'a [u16], cols: Cols<'a>, vals: &'a [f32]) -> Self {
        let n = match cols {
            Cols::U8(c) => c.len(),
            Cols::U16(c) => c.len(),
            Cols::Every => offsets.len(),
        }
        .min(vals.len());
        let cols = match cols {
            Cols::U8(c) => Cols::U8(c.get(..n).unwrap_or(&[])),
            Cols::U16(c) => Cols::U16(c.get(..n).unwrap_or(&[])),
            Cols::Every => Cols::Every,
        };
        Taps {
            offsets,
            cols,
            vals: vals.get(..n).unwrap_or(&[]),
        }
    }

    /// Tap `i`'s offset in the row and weight.
    #[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
    fn tap(&self, i: usize) -> Option<(usize, f32)> {
        let col = match self.cols {
            Cols::U8(c) => usize::from(*c.get(i)?),
            Cols::U16(c) => usize::from(*c.get(i)?),
            Cols::Every => i,
        };
        Some((usize::from(*self.offsets.get(col)?), *self.vals.get(i)?))
    }
}

/// The tap kernel's loops: assembly on the Cortex-M4F (`conv_arm`), [`portable`] elsewhere.
/// Both are `unsafe fn pooled_chunk(init, taps, row, slot, dst)`: the taps on the top conv row
/// at `row` and on the bottom one `slot` values further, each from `init`, max-pooled in pairs
/// and clamped at zero into `dst`, whose safety condition is [`Taps`]', for both rows.
mod kernel {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    pub(crate) use super::super::conv_arm::pooled_chunk;
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    pub(crate) use super::portable::pooled_chunk;
}

/// The portable loops, the reference for the assembly ones (same operations, same order).
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
#[allow(unsafe_code)]
pub(crate) mod portable {
    use super::{pool_whole, Taps, CHUNK};

    /// Safe: reads out of the window are skipped (the assembly's callers rule them out).
    #[inline(always)]
    pub unsafe fn conv_row(init: &[f32; CHUNK], taps: &Taps<'_>, row: &[f32]) -> [f32; CHUNK] {
        let mut acc = *init;
        for (off, wt) in (0..taps.vals.len()).filter_map(|i| taps.tap(i)) {
            let Some(row) = row
                .get(off..off + CHUNK)
                .and_then(|r| <&[f32; CHUNK]>::try_from(r).ok())
            else {
                continue;
            };
            for j in 0..CHUNK {
                acc[j] += wt * row[j];
            }
        }
        acc
    }

    #[inline(always)]
    pub unsafe fn pooled_chunk(
        init: &[f32; CHUNK],
        taps: &Taps<'_>,
        row: &[f32],
        slot: usize,
        dst: &mut [f32; CHUNK / 2],
    ) {
        let bottom = row.get(slot..).unwrap_or(&[]);
        // SAFETY: `conv_row` has no precondition of its own (see above).
        let rows = unsafe { [conv_row(init, taps, row), conv_row(init, taps, bottom)] };
        pool_whole(&rows[0], &rows[1], dst);
    }
}
