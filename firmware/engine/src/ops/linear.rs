//! Fully connected layer `y = W·x + b`, optionally followed by ReLU.
//!
//! Each output sums its products in ascending column order, in both kernels; the sparse kernel
//! skips exactly the zero weights, so it matches the dense kernel bit for bit.

use super::ColumnIndex;
use model_format::{Csr, Indices, Weights};

/// One output: the bias plus the row's products in ascending column order.
#[inline(always)]
fn dot(row: &[f32], input: &[f32], bias: f32) -> f32 {
    let mut acc = bias;
    for (&w, &x) in row.iter().zip(input) {
        acc += w * x;
    }
    acc
}

/// Dense rows in blocks of four: four accumulators share each load of `x`.
fn dense(weights: &[f32], input: &[f32], bias: &[f32], out: &mut [f32]) {
    let cols = input.len();
    let rows = out.len().min(bias.len());
    if cols == 0 || weights.len() < rows * cols {
        out.iter_mut().zip(bias).for_each(|(o, &b)| *o = b);
        return;
    }
    let blocked = rows / 4 * 4;
    let blocks = weights
        .chunks_exact(4 * cols)
        .zip(bias.chunks_exact(4))
        .zip(out.chunks_exact_mut(4));
    for ((w, b), o) in blocks.take(rows / 4) {
        let (w0, rest) = w.split_at(cols);
        let (w1, rest) = rest.split_at(cols);
        let (w2, w3) = rest.split_at(cols);
        let &[b0, b1, b2, b3] = b else { continue };
        let (mut a0, mut a1, mut a2, mut a3) = (b0, b1, b2, b3);
        for ((((&x, &v0), &v1), &v2), &v3) in input.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
            a0 += v0 * x;
            a1 += v1 * x;
            a2 += v2 * x;
            a3 += v3 * x;
        }
        o.copy_from_slice(&[a0, a1, a2, a3]);
    }
    let tail = weights.get(blocked * cols..rows * cols).unwrap_or(&[]);
    for ((w, &b), o) in tail
        .chunks_exact(cols)
        .zip(&bias[blocked..rows])
        .zip(&mut out[blocked..rows])
    {
        *o = dot(w, input, b);
    }
}

fn sparse<I: ColumnIndex>(
    row_ptr: Indices<'_>,
    col_idx: &[I],
    values: &[f32],
    input: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    for (r, (o, &b)) in out.iter_mut().zip(bias).enumerate() {
        let mut acc = b;
        if let (Some(start), Some(end)) = (row_ptr.get(r), row_ptr.get(r + 1)) {
            if let (Some(cols), Some(vals)) = (col_idx.get(start..end), values.get(start..end)) {
                for (&c, &v) in cols.iter().zip(vals) {
                    // Validated at load: c < input.len().
                    acc += v * input.get(c.index()).copied().unwrap_or(0.0);
                }
            }
        }
        *o = acc;
    }
}

/// `out = W·input + bias` (then ReLU when `relu`).
pub fn linear(input: &[f32], weights: &Weights<'_>, bias: &[f32], relu: bool, out: &mut [f32]) {
    match *weights {
        Weights::Dense(w) => dense(w, input, bias, out),
        Weights::Csr(Csr {
            row_ptr,
            col_idx,
            values,
            ..
        }) => match col_idx {
            Indices::U8(c) => sparse(row_ptr, c, values, input, bias, out),
            Indices::U16(c) => sparse(row_ptr, c, values, input, bias, out),
            Indices::U32(c) => sparse(row_ptr, c, values, input, bias, out),
        },
    }
    if relu {
        out.iter_mut().for_each(|o| *o = super::conv::max(*o, 0.0));
    }
}
