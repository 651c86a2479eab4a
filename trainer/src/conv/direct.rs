//! The conv block for a single-channel input whose gradient nobody needs (the image into
//! conv1): a direct convolution, row pair by row pair, pooled at once. Through `im2col` and a
//! product with an inner dimension of 9 this layer was memory-bound on its full-resolution
//! output (6.4 MB per batch of 64, written, pooled, zero-filled for the gradient, scattered,
//! read back); here nothing larger than two rows is ever stored, and the kernel gradient is
//! summed from the pooling winners alone (a quarter of the positions at most).

use super::NONE;
use candle_core::WithDType;
use num_traits::Float;
use rayon::prelude::*;
use std::ops::AddAssign;

/// Pooled output `(n, o, h/2, w/2)` and each output's winner as a position `y·w + x` in its
/// image (`NONE` where the window's maximum is ≤ 0), for images `x` `(n, 1, h, w)`.
pub fn forward<T: WithDType + Float + AddAssign>(
    x: &[T],
    weight: &[T],
    bias: &[T],
    (n, h, w): (usize, usize, usize),
    o: usize,
) -> (Vec<T>, Vec<u32>) {
    let (oh, ow) = (h / 2, w / 2);
    super::per_image_outputs(n, o * oh * ow, |b, out, winners| {
        let image = &x[b * h * w..(b + 1) * h * w];
        let mut rows = [vec![T::zero(); w], vec![T::zero(); w]];
        for (oc, (k, &bias)) in weight.chunks_exact(9).zip(bias).enumerate().take(o) {
            for oy in 0..oh {
                for (dy, row) in rows.iter_mut().enumerate() {
                    conv_row(image, (h, w), 2 * oy + dy, k, bias, row);
                }
                let dst = oc * oh * ow + oy * ow;
                for ox in 0..ow {
                    // PyTorch's choice on ties: the first maximum in row-major order.
                    let candidates = [(0, 0), (0, 1), (1, 0), (1, 1)];
                    let (mut by, mut bx) = (0, 2 * ox);
                    for (dy, dx) in candidates {
                        if rows[dy][2 * ox + dx] > rows[by][bx] {
                            (by, bx) = (dy, 2 * ox + dx);
                        }
                    }
                    let best = rows[by][bx];
                    if best > T::zero() {
                        out[dst + ox] = best;
                        winners[dst + ox] = ((2 * oy + by) * w + bx) as u32;
                    }
                }
            }
        }
    })
}

/// Conv row `y` of one image with one 3x3 kernel `k`, plus `bias`, into `row`.
fn conv_row<T: WithDType + Float + AddAssign>(
    image: &[T],
    (h, w): (usize, usize),
    y: usize,
    k: &[T],
    bias: T,
    row: &mut [T],
) {
    row.fill(bias);
    for ky in 0..3 {
        let Some(src_y) = (y + ky).checked_sub(1).filter(|&s| s < h) else {
            continue;
        };
        let src = &image[src_y * w..(src_y + 1) * w];
        for kx in 0..3 {
            let wt = k[ky * 3 + kx];
            let xs = super::valid(kx, w);
            let from = &src[xs.start + kx - 1..xs.end + kx - 1];
            for (acc, &v) in row[xs].iter_mut().zip(from) {
                *acc += wt * v;
            }
        }
    }
}

/// Kernel and bias gradients from the pooled output's gradient `g` `(n, o, h/2, w/2)`: each
/// winner passes its gradient to the bias and, times the 3x3 patch around it, to the kernel.
pub fn backward<T: WithDType + Float + AddAssign>(
    g: &[T],
    winners: &[u32],
    x: &[T],
    (n, h, w): (usize, usize, usize),
    o: usize,
) -> (Vec<T>, Vec<T>) {
    let pooled = (h / 2) * (w / 2);
    let per_channel: Vec<([T; 9], T)> = (0..o)
        .into_par_iter()
        .map(|oc| {
            let (mut gw, mut gb) = ([T::zero(); 9], T::zero());
            for b in 0..n {
                let image = &x[b * h * w..(b + 1) * h * w];
                let at = (b * o + oc) * pooled;
                for (&gv, &win) in g[at..at + pooled].iter().zip(&winners[at..at + pooled]) {
                    if win == NONE {
                        continue;
                    }
                    gb += gv;
                    let (y, xx) = (win as usize / w, win as usize % w);
                    for ky in 0..3 {
                        let Some(sy) = (y + ky).checked_sub(1).filter(|&s| s < h) else {
                            continue;
                        };
                        for kx in 0..3 {
                            if let Some(sx) = (xx + kx).checked_sub(1).filter(|&s| s < w) {
                                gw[ky * 3 + kx] += gv * image[sy * w + sx];
                            }
                        }
                    }
                }
            }
            (gw, gb)
        })
        .collect();
    let grad_w = per_channel.iter().flat_map(|(gw, _)| *gw).collect();
    let grad_b = per_channel.iter().map(|&(_, gb)| gb).collect();
    (grad_w, grad_b)
}
