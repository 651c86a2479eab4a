//! The dense int8 conv kernel: CMSIS-NN's technique (`arm_nn_mat_mult_kernel_s8_s16`), our code.
//!
//! For two horizontally adjacent output pixels of one conv row, the input patches are copied
//! once ("im2col") as 16-bit values, in blocks of four taps ordered `(t0, t2), (t1, t3)`: the
//! order in which `SXTB16` and `SXTB16 ROR 8` widen four int8 weights loaded as one word. Then
//! two output channels × two pixels accumulate over the blocks: per four taps, two weight loads,
//! four widenings, four patch loads and eight `SMLAD`s (sixteen MACs). Padding taps read zeros
//! from the window, so the kernel runs every tap without a test. The max of the pool window's
//! four accumulators is requantized once, as in the sparse kernel.

use super::conv::{ConvShape, RowSink};
use super::dsp::{pack, smlad, sxtb16, sxtb16_ror8};
use model_format::quant::requantize_u8;
use model_format::LayerParamsI8;

/// Words of scratch the kernel needs for a layer with `taps` weights per output channel and
/// `out_channels` filters: two pixels' patches, then one accumulator per channel.
pub const fn scratch_words(taps: usize, out_channels: usize) -> usize {
    4 * taps.div_ceil(4) + out_channels
}

/// The dense weights and requantization of one layer, and where its taps read the window.
pub(crate) struct DenseConv<'a> {
    pub shape: &'a ConvShape,
    pub params: &'a LayerParamsI8<'a>,
    pub weights: &'a [i8],
    pub offsets: &'a [u16],
}

impl DenseConv<'_> {
    /// Pooled output row of every channel from `window` (checked by the caller to hold the
    /// layer's four rows), as `sink` says; `scratch` holds at least [`scratch_words`].
    pub fn pooled_row(&self, window: &[i16], out: &mut [i16], sink: RowSink, scratch: &mut [u32]) {
        let (taps, channels) = (self.shape.taps(), self.shape.out_channels);
        let blocks = taps.div_ceil(4);
        let Some((columns, rest)) = scratch.split_at_mut_checked(4 * blocks) else {
            return;
        };
        let Some(top) = rest.get_mut(..channels) else {
            return;
        };
        let (c0, c1) = columns.split_at_mut(2 * blocks);
        let slot = self.shape.slot_len();
        for px in 0..self.shape.width / 2 {
            for dy in 0..2 {
                // The pool window's conv row dy: pixels 2px and 2px + 1.
                self.im2col(window, dy * slot + 2 * px, c0);
                self.im2col(window, dy * slot + 2 * px + 1, c1);
                self.channels(c0, c1, |co, acc| match dy {
                    0 => {
                        if let Some(t) = top.get_mut(co) {
                            *t = acc as u32;
                        }
                    }
                    _ => {
                        let max = top.get(co).map_or(acc, |&t| acc.max(t as i32));
                        let at = sink.base + co * sink.stride + px;
                        let (m, s) = (self.params.multiplier, self.params.shift);
                        if let (Some(o), Some(&m), Some(&s)) =
                            (out.get_mut(at), m.get(co), s.get(co))
                        {
                            *o = i16::from(requantize_u8(max, m, s));
                        }
                    }
                });
            }
        }
    }

    /// The patch of the pixel whose window row starts at `base`, as packed pairs per block.
    fn im2col(&self, window: &[i16], base: usize, column: &mut [u32]) {
        let value = |t: usize| -> i16 {
            let at = self.offsets.get(t).map(|&o| base + usize::from(o));
            at.and_then(|at| window.get(at)).copied().unwrap_or(0)
        };
        for (b, words) in column.chunks_exact_mut(2).enumerate() {
            let t = 4 * b;
            words[0] = pack(value(t), value(t + 2));
            words[1] = pack(value(t + 1), value(t + 3));
        }
    }

    /// Each output channel's max over the two pixels' accumulators (bias included), to `emit`.
    fn channels(&self, c0: &[u32], c1: &[u32], mut emit: impl FnMut(usize, i32)) {
        let taps = self.shape.taps();
        let bias = self.params.bias;
        let mut co = 0;
        while co < self.shape.out_channels {
            // Two channels at a time; an odd last one is paired with itself.
            let cb = (co + 1).min(self.shape.out_channels - 1);
            let (Some(wa), Some(wb)) = (
                self.weights.get(co * taps..(co + 1) * taps),
                self.weights.get(cb * taps..(cb + 1) * taps),
            ) else {
                return;
            };
            let (ba, bb) = (
                bias.get(co).copied().unwrap_or(0),
                bias.get(cb).copied().unwrap_or(0),
            );
            let [a0, a1, b0, b1] = tile(wa, wb, c0, c1, [ba, ba, bb, bb]);
            emit(co, a0.max(a1));
            if cb != co {
                emit(cb, b0.max(b1));
            }
            co += 2;
        }
    }
}

/// Four weights as one word.
#[inline(always)]
fn word(q: &[i8]) -> u32 {
    let byte = |i: usize| q.get(i).map_or(0, |&v| v as u8);
    u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
}

/// Accumulators of (channel a, pixel 0), (a, 1), (b, 0), (b, 1) over every tap, from `init`.
#[inline(always)]
fn tile(wa: &[i8], wb: &[i8], c0: &[u32], c1: &[u32], init: [i32; 4]) -> [i32; 4] {
    let [mut a0, mut a1, mut b0, mut b1] = init;
    let mut step = |wa4: u32, wb4: u32, x0: &[u32], x1: &[u32]| {
        let (a02, a13) = (sxtb16(wa4), sxtb16_ror8(wa4));
        let (b02, b13) = (sxtb16(wb4), sxtb16_ror8(wb4));
        a0 = smlad(a13, x0[1], smlad(a02, x0[0], a0));
        a1 = smlad(a13, x1[1], smlad(a02, x1[0], a1));
        b0 = smlad(b13, x0[1], smlad(b02, x0[0], b0));
        b1 = smlad(b13, x1[1], smlad(b02, x1[0], b1));
    };
    let mut blocks = c0.chunks_exact(2).zip(c1.chunks_exact(2));
    let (full_a, full_b) = (wa.chunks_exact(4), wb.chunks_exact(4));
    let (tail_a, tail_b) = (full_a.remainder(), full_b.remainder());
    for ((qa, qb), (x0, x1)) in full_a.zip(full_b).zip(&mut blocks) {
        step(word(qa), word(qb), x0, x1);
    }
    // A last partial block: the missing weights are zero.
    if let (false, Some((x0, x1))) = (tail_a.is_empty(), blocks.next()) {
        step(word(tail_a), word(tail_b), x0, x1);
    }
    [a0, a1, b0, b1]
}
