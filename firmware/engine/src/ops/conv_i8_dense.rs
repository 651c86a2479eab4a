//! The dense int8 conv kernel: CMSIS-NN's technique (`arm_nn_mat_mult_kernel_s8_s16`), our code.
//!
//! For the four conv outputs of one pooled pixel (two rows × two columns), the input patches are
//! copied once ("im2col") as 16-bit values, in blocks of four taps ordered `(t0, t2), (t1, t3)`:
//! the order in which `SXTB16` and `SXTB16 ROR 8` widen four int8 weights loaded as one word.
//! Then each output channel runs over the blocks with its four accumulators in registers
//! ([`dense_blocks`]: 16 MACs per 17 instructions on the Cortex-M4F). Padding taps read zeros
//! from the window, so every tap runs without a test. The max of the four accumulators is
//! requantized once, as in the sparse kernel.

use super::conv::{ConvShape, RowSink};
use super::conv_i8_loops::dense_blocks;
use super::dsp::{pack, smlad, sxtb16, sxtb16_ror8};
use model_format::quant::requantize_u8;
use model_format::LayerParamsI8;

/// The dense weights and requantization of one layer, and where its taps read the window.
pub(crate) struct DenseConv<'a> {
    pub shape: &'a ConvShape,
    pub params: &'a LayerParamsI8<'a>,
    pub weights: &'a [i8],
    pub offsets: &'a [u16],
}

impl DenseConv<'_> {
    /// Pooled output row of every channel from `window` (checked by the caller to hold the
    /// layer's four rows), as `sink` says; `scratch` holds at least [`super::conv_i8::scratch_words`].
    pub fn pooled_row(&self, window: &[i16], out: &mut [i16], sink: RowSink, scratch: &mut [u32]) {
        let taps = self.shape.taps();
        let (full, blocks) = (taps / 4, taps.div_ceil(4));
        let Some(columns) = scratch.get_mut(..8 * blocks) else {
            return;
        };
        let slot = self.shape.slot_len();
        let p = self.params;
        for px in 0..self.shape.width / 2 {
            let x = 2 * px;
            self.im2col(window, [x, x + 1, slot + x, slot + x + 1], columns);
            let rows = p.bias.iter().zip(p.multiplier).zip(p.shift);
            for (co, ((&bias, &m), &s)) in rows.enumerate().take(self.shape.out_channels) {
                let Some(w) = self.weights.get(co * taps..(co + 1) * taps) else {
                    return;
                };
                // A partial last block may read on into the next channel's weights: the
                // activations past the last tap are zero, so they add nothing. Only the last
                // channel, with nothing after it, takes the tail on its own.
                let acc = match self.weights.get(co * taps..co * taps + 4 * blocks) {
                    Some(padded) => dense_blocks(padded, columns, blocks, [bias; 4]),
                    None => {
                        let acc = dense_blocks(w, columns, full, [bias; 4]);
                        let tail = w.get(4 * full..).unwrap_or(&[]);
                        tail_block(tail, columns.get(8 * full..).unwrap_or(&[]), acc)
                    }
                };
                let max = acc[0].max(acc[1]).max(acc[2]).max(acc[3]);
                if let Some(o) = out.get_mut(sink.base + co * sink.stride + px) {
                    *o = i16::from(requantize_u8(max, m, s));
                }
            }
        }
    }

    /// The patches of the four pixels whose window rows start at `bases`, as packed pairs per
    /// block of four taps and pixel (taps past the last are zero).
    fn im2col(&self, window: &[i16], bases: [usize; 4], columns: &mut [u32]) {
        let value = |base: usize, t: usize| -> i16 {
            let at = self.offsets.get(t).map(|&o| base + usize::from(o));
            at.and_then(|at| window.get(at)).copied().unwrap_or(0)
        };
        for (b, words) in columns.chunks_exact_mut(8).enumerate() {
            let t = 4 * b;
            for (q, &base) in bases.iter().enumerate() {
                words[2 * q] = pack(value(base, t), value(base, t + 2));
                words[2 * q + 1] = pack(value(base, t + 1), value(base, t + 3));
            }
        }
    }
}

/// A last partial block of fewer than four weights (the missing ones zero).
fn tail_block(w: &[i8], x: &[u32], mut acc: [i32; 4]) -> [i32; 4] {
    let byte = |i: usize| w.get(i).map_or(0, |&v| v as u8);
    let word = u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
    let (w02, w13) = (sxtb16(word), sxtb16_ror8(word));
    for (q, a) in acc.iter_mut().enumerate() {
        if let (Some(&x02), Some(&x13)) = (x.get(2 * q), x.get(2 * q + 1)) {
            *a = smlad(w13, x13, smlad(w02, x02, *a));
        }
    }
    acc
}
