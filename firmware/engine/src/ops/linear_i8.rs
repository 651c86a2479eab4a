//! Int8 fully connected layer (SPEC §4.1): `i32` accumulators start at the bias and add
//! `weight · input activation` (a byte, held as `i16` like every int8 activation), over the
//! whole input at once or streamed block by block (consecutive column ranges, in order) as a
//! feature map's rows are produced; then each row is requantized to a byte (a hidden layer,
//! whose clamp at 0 is its ReLU) or saturated to an `i32` logit.
//!
//! Integer sums are exact in any order (the reader bounded every accumulator), so the dense and
//! the sparse kernel, whole or streamed, give the same result.

use model_format::quant::{requantize_i32, requantize_u8};
use model_format::{CsrI8, LayerParamsI8, WeightsI8};

/// Where a streamed CSR row stands: how many of its entries earlier blocks took, and the column
/// of the last one taken (0 before the first: the first delta is its column).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub taken: u16,
    pub column: u16,
}

/// `Σ w·x` over the pairs of `w` and `x`: four a step with two `SMLAD`s, as CMSIS-NN's fully
/// connected kernel does (one word of weights widened by `SXTB16` to the pairs (w0, w2) and
/// (w1, w3), the inputs paired to match).
#[cfg(feature = "dense-kernels")]
fn dot(w: &[i8], x: &[i16]) -> i32 {
    use super::dsp::{pack, smlad, sxtb16, sxtb16_ror8};
    let mut sum = 0i32;
    for (w, x) in w.chunks_exact(4).zip(x.chunks_exact(4)) {
        if let ([w0, w1, w2, w3], [x0, x1, x2, x3]) = (w, x) {
            let word = u32::from_le_bytes([*w0 as u8, *w1 as u8, *w2 as u8, *w3 as u8]);
            sum = smlad(sxtb16(word), pack(*x0, *x2), sum);
            sum = smlad(sxtb16_ror8(word), pack(*x1, *x3), sum);
        }
    }
    let done = w.len().min(x.len()) / 4 * 4;
    let rest = w
        .get(done..)
        .unwrap_or(&[])
        .iter()
        .zip(x.get(done..).unwrap_or(&[]));
    rest.fold(sum, |s, (&w, &v)| s + i32::from(w) * i32::from(v))
}

/// `Σ w·x`, compact (without feature `dense-kernels`).
#[cfg(not(feature = "dense-kernels"))]
fn dot(w: &[i8], x: &[i16]) -> i32 {
    w.iter()
        .zip(x)
        .fold(0i32, |s, (&w, &v)| s + i32::from(w) * i32::from(v))
}

/// Adds `W[:, start .. start + x.len()] · x` to `acc` for a dense `W` with `cols` columns.
fn dense_block(weights: &[i8], cols: usize, start: usize, x: &[i16], acc: &mut [i32]) {
    for (r, a) in acc.iter_mut().enumerate() {
        let from = r * cols + start;
        *a += dot(weights.get(from..from + x.len()).unwrap_or(&[]), x);
    }
}

/// Row `row`'s entries of `csr`: where they start and end.
#[inline(always)]
fn row_range(csr: &CsrI8<'_>, row: usize) -> (usize, usize) {
    let from = csr.row_ptr.get(row).unwrap_or(0);
    (from, csr.row_ptr.get(row + 1).unwrap_or(from))
}

/// Adds the row whose entries of `csr` are `from .. to`, from `cursor` on while their columns
/// fall in block `x` (columns `start .. start + x.len()`), to `acc`; returns where it stopped.
#[inline(always)]
fn sparse_row(
    csr: &CsrI8<'_>,
    (from, to): (usize, usize),
    cursor: Cursor,
    start: usize,
    x: &[i16],
    acc: &mut i32,
) -> Cursor {
    let k = from + usize::from(cursor.taken);
    // The reader checked that every row's entries lie inside both arrays.
    let deltas = csr.col_delta.get(k..to).unwrap_or(&[]);
    let values = csr.values.get(k..to).unwrap_or(&[]);
    // Blocks come in order from column 0, so every column read here is at least `start`.
    let (taken, column, sum) = csr_run(deltas, values, usize::from(cursor.column), start, x, *acc);
    *acc = sum;
    // The plan checked that rows and columns fit in u16.
    Cursor {
        taken: (k - from + taken) as u16,
        column: column as u16,
    }
}

/// Adds a CSR row's entries to `sum` while their columns (the running sum of the deltas from
/// `column`) read inside `x`, whose first value is column `start`; returns how many it took,
/// the last column taken (`column` if none) and the sum (assembly on the Cortex-M4F). One
/// copy for the streamed and the whole layer: the image's `.text` budget is tight.
#[inline(never)]
fn csr_run(
    deltas: &[u8],
    values: &[i8],
    column: usize,
    start: usize,
    x: &[i16],
    sum: i32,
) -> (usize, usize, i32) {
    let deltas = deltas.get(..values.len()).unwrap_or(deltas);
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    let run = match deltas.is_empty() {
        true => (0, column, sum),
        // SAFETY: `deltas` is not empty and `values` at least as long.
        #[allow(unsafe_code)]
        false => unsafe { arm::csr_run(deltas, values, column, start, x, sum) },
    };
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    let run = portable::csr_run(deltas, values, column, start, x, sum);
    run
}

/// The portable definition of [`csr_run`].
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
mod portable {
    pub fn csr_run(
        deltas: &[u8],
        values: &[i8],
        mut column: usize,
        start: usize,
        x: &[i16],
        mut sum: i32,
    ) -> (usize, usize, i32) {
        let mut taken = 0;
        for (&d, &w) in deltas.iter().zip(values) {
            let c = column + usize::from(d);
            // Past the block's end (or, wrapping, before its start): the next block's.
            let Some(&v) = x.get(c.wrapping_sub(start)) else {
                break;
            };
            sum += i32::from(w) * i32::from(v);
            column = c;
            taken += 1;
        }
        (taken, column, sum)
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
#[allow(unsafe_code)]
mod arm {
    use core::arch::asm;

    /// [`super::portable::csr_run`] in assembly: nine instructions per entry taken.
    ///
    /// # Safety
    /// `deltas` is not empty and `values` is at least as long.
    #[inline(always)]
    pub unsafe fn csr_run(
        deltas: &[u8],
        values: &[i8],
        column: usize,
        start: usize,
        x: &[i16],
        mut sum: i32,
    ) -> (usize, usize, i32) {
        let first = deltas.as_ptr();
        let mut next = first;
        let mut at = column.wrapping_sub(start);
        // SAFETY: reads each delta at most once (the loop ends at the last), the value beside
        // each delta it takes, and `x` at `at`, which the unsigned compare keeps below
        // `x.len()`; writes registers only.
        unsafe {
            asm!(
                "2:",
                "ldrb {d}, [{pd}], #1",
                "add {at}, {at}, {d}",
                "cmp {at}, {len}",
                "bhs 4f",
                "ldrsb {w}, [{pv}], #1",
                "ldrsh {v}, [{x}, {at}, lsl #1]",
                "smlabb {sum}, {w}, {v}, {sum}",
                "cmp {pd}, {stop}",
                "bne 2b",
                "b 3f",
                // Not taken: the column and the delta pointer back to the last taken.
                "4:",
                "sub {at}, {at}, {d}",
                "sub {pd}, {pd}, #1",
                "3:",
                pd = inout(reg) next,
                pv = inout(reg) values.as_ptr() => _,
                stop = in(reg) first.wrapping_add(deltas.len()),
                at = inout(reg) at,
                len = in(reg) x.len(),
                x = in(reg) x.as_ptr(),
                sum = inout(reg) sum,
                d = out(reg) _,
                w = out(reg) _,
                v = out(reg) _,
                options(nostack, readonly),
            );
        }
        let taken = next as usize - first as usize;
        (taken, at.wrapping_add(start), sum)
    }
}

/// Adds block `x` (columns `start ..`) of the layer's input to the partial sums `acc`;
/// `cursors` (one per row) carry a CSR matrix's progress from block to block.
#[inline(never)]
pub fn linear_block_i8(
    weights: &WeightsI8<'_>,
    cols: usize,
    start: usize,
    x: &[i16],
    acc: &mut [i32],
    cursors: &mut [Cursor],
) {
    match weights {
        WeightsI8::Dense(w) => dense_block(w, cols, start, x, acc),
        WeightsI8::Csr(csr) => {
            // Each row ends where the next begins: one row pointer read per row.
            let mut from = csr.row_ptr.get(0).unwrap_or(0);
            for (r, (a, cur)) in acc.iter_mut().zip(cursors.iter_mut()).enumerate() {
                let to = csr.row_ptr.get(r + 1).unwrap_or(from);
                *cur = sparse_row(csr, (from, to), *cur, start, x, a);
                from = to;
            }
        }
    }
}

/// Where requantized rows go: activations (bytes 0..=255, held as `i16`) or `i32` logits.
pub enum Output<'a> {
    Bytes(&'a mut [i16]),
    Logits(&'a mut [i32]),
}

impl Output<'_> {
    /// Row `r`'s accumulator requantized into its place (rows past the end are dropped).
    fn set(&mut self, r: usize, acc: i32, multiplier: i32, shift: u8) {
        match self {
            Output::Bytes(out) => {
                if let Some(o) = out.get_mut(r) {
                    *o = i16::from(requantize_u8(acc, multiplier, shift));
                }
            }
            Output::Logits(out) => {
                if let Some(o) = out.get_mut(r) {
                    *o = requantize_i32(acc, multiplier, shift);
                }
            }
        }
    }
}

/// Writes each row's requantized accumulator to `out`.
pub fn requantize_rows(params: &LayerParamsI8<'_>, acc: &[i32], mut out: Output<'_>) {
    let per_row = acc.iter().zip(params.multiplier).zip(params.shift);
    for (r, ((&a, &m), &s)) in per_row.enumerate() {
        out.set(r, a, m, s);
    }
}

/// `out = requantize(W·input + bias)`, row by row, with no memory besides `out`.
pub fn linear_i8(input: &[i16], params: &LayerParamsI8<'_>, mut out: Output<'_>) {
    let cols = input.len();
    let rows = params.bias.iter().zip(params.multiplier).zip(params.shift);
    for (r, ((&bias, &m), &s)) in rows.enumerate() {
        let acc = match params.weights {
            WeightsI8::Dense(w) => {
                bias + dot(w.get(r * cols..(r + 1) * cols).unwrap_or(&[]), input)
            }
            WeightsI8::Csr(ref csr) => {
                let mut acc = bias;
                let rows = row_range(csr, r);
                sparse_row(csr, rows, Cursor::default(), 0, input, &mut acc);
                acc
            }
        };
        out.set(r, acc, m, s);
    }
}
