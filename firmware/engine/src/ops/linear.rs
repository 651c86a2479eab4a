//! Fully connected layer `y = W·x + b`, optionally followed by ReLU, over the whole input at
//! once or streamed block by block (consecutive column ranges, in order) as a feature map's rows
//! are produced.
//!
//! Each output starts at its bias and adds its products in ascending column order, whether the
//! input comes whole or in blocks and in both kernels; the sparse kernel skips exactly the zero
//! weights, so it matches the dense kernel bit for bit.

use super::{row_pointer, ColumnIndex};
use model_format::{Indices, Weights};

/// Adds `W[:, start .. start + x.len()] · x` to `acc` (one partial sum per row), for a dense
/// `W` with `cols` columns: rows in blocks of four, so four accumulators share each load of `x`
/// (with feature `dense-kernels`; without it, row by row: the same sums in the same order, out
/// of line so that the sparse kernel beside it keeps its registers).
#[cfg_attr(not(feature = "dense-kernels"), inline(never))]
fn dense_block(weights: &[f32], cols: usize, start: usize, x: &[f32], acc: &mut [f32]) {
    let n = x.len();
    let row = |r: usize| {
        let from = r * cols + start;
        weights.get(from..from + n).unwrap_or(&[])
    };
    let blocked = if cfg!(feature = "dense-kernels") {
        acc.len() / 4 * 4
    } else {
        0
    };
    let (quads, tail) = acc.split_at_mut(blocked);
    for (q, a) in quads.chunks_exact_mut(4).enumerate() {
        let (w0, w1, w2, w3) = (row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3));
        let mut s = [a[0], a[1], a[2], a[3]];
        // Four columns a step, written out: the firmware's size-optimised build does not unroll
        // loops, and this is most of a dense model's fc1.
        let steps = x
            .chunks_exact(4)
            .zip(w0.chunks_exact(4))
            .zip(w1.chunks_exact(4));
        let steps = steps.zip(w2.chunks_exact(4)).zip(w3.chunks_exact(4));
        for ((((x, v0), v1), v2), v3) in steps {
            for (acc, v) in s.iter_mut().zip([v0, v1, v2, v3]) {
                for (&v, &x) in v.iter().zip(x) {
                    *acc += v * x;
                }
            }
        }
        let done = x.len() / 4 * 4;
        let x_rest = x.get(done..).unwrap_or(&[]);
        for (acc, w) in s.iter_mut().zip([w0, w1, w2, w3]) {
            for (&v, &x) in w.get(done..).unwrap_or(&[]).iter().zip(x_rest) {
                *acc += v * x;
            }
        }
        a.copy_from_slice(&s);
    }
    for (r, a) in tail.iter_mut().enumerate() {
        for (&w, &x) in row(blocked + r).iter().zip(x) {
            *a += w * x;
        }
    }
}

/// Adds a CSR matrix's products for columns `start .. start + x.len()` to each row's sum in
/// `acc`. `cursors` (one per row: how many of its non-zeros earlier blocks took) lets blocks
/// come in order from column 0; `None` means `x` is the whole input.
fn sparse_block<I: ColumnIndex>(
    row_ptr: &Indices<'_>,
    col_idx: &[I],
    values: &[f32],
    start: usize,
    x: &[f32],
    acc: &mut [f32],
    cursors: Option<&mut [u16]>,
) {
    let end = start + x.len();
    // Row `a`'s products from its non-zero `from` on, up to column `end`; returns where it
    // stopped. Indexes one non-zero at a time: cheaper than slicing for the one or two a row
    // has in each block.
    let row = |a: &mut f32, from: usize, to: usize| -> usize {
        let mut k = from;
        let mut sum = *a;
        while k < to {
            let (Some(c), Some(&v)) = (col_idx.get(k), values.get(k)) else {
                break;
            };
            let c = c.index();
            if c >= end {
                break;
            }
            // Validated at load: c < the layer's columns; blocks come in order, so c >= start.
            sum += v * x.get(c.wrapping_sub(start)).copied().unwrap_or(0.0);
            k += 1;
        }
        *a = sum;
        k
    };
    let bounds = (0..acc.len()).map(|r| (row_pointer(row_ptr, r), row_pointer(row_ptr, r + 1)));
    match cursors {
        Some(cursors) => {
            for ((a, (from, to)), done) in acc.iter_mut().zip(bounds).zip(cursors) {
                let stopped = row(a, from + usize::from(*done), to);
                *done = (stopped - from) as u16;
            }
        }
        None => {
            for (a, (from, to)) in acc.iter_mut().zip(bounds) {
                row(a, from, to);
            }
        }
    }
}

/// Adds block `x` (columns `start ..`) of the layer's input to the partial sums `acc`.
pub fn linear_block(
    weights: &Weights<'_>,
    cols: usize,
    start: usize,
    x: &[f32],
    acc: &mut [f32],
    cursors: Option<&mut [u16]>,
) {
    match *weights {
        Weights::Dense(w) => dense_block(w, cols, start, x, acc),
        Weights::Csr(ref csr) => {
            let (r, v) = (&csr.row_ptr, csr.values);
            match csr.col_idx {
                Indices::U8(c) => sparse_block(r, c, v, start, x, acc, cursors),
                Indices::U16(c) => sparse_block(r, c, v, start, x, acc, cursors),
                Indices::U32(c) => sparse_block(r, c, v, start, x, acc, cursors),
            }
        }
    }
}

/// Clamps at zero (the layer's ReLU, after the last block).
pub fn relu(out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = super::conv::max(*o, 0.0));
}

/// `out = W·input + bias` (then ReLU when `relu`).
pub fn linear(
    input: &[f32],
    weights: &Weights<'_>,
    bias: &[f32],
    with_relu: bool,
    out: &mut [f32],
) {
    out.iter_mut().zip(bias).for_each(|(o, &b)| *o = b);
    linear_block(weights, input.len(), 0, input, out, None);
    if with_relu {
        relu(out);
    }
}
