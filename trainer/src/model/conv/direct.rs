//! The backward pass of the conv block for a single-channel input whose gradient nobody needs
//! (the image into conv1): the kernel and bias gradients are summed from the pooling winners
//! alone (a quarter of the positions at most), reading the 3x3 patch around each winner straight
//! from the image. With 9 values per patch, the general pass's patch rows would be too short for
//! its vectorised runs.

use super::NONE;
use candle_core::WithDType;
use num_traits::Float;
use rayon::prelude::*;
use std::ops::AddAssign;

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
