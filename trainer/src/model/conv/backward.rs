//! The conv block's backward pass for one image: sparse by construction. Max-pooling passes each
//! pooled gradient to one position of its 2x2 window (none when ReLU cut it), so at most a
//! quarter of the conv output's gradient is nonzero. The kernel and input gradients are sums
//! over those winners only, each a run of `9c` multiply-adds against a patch row or a kernel
//! row, instead of dense products over every position.

use super::image::{patches, sum_rows, taps_of, to_channels_first, to_channels_last, BlockShape};
use super::NONE;
use num_traits::Float;

/// Per-image scratch space and the running kernel and bias gradients of one share of a batch.
pub struct Backward<T> {
    s: BlockShape,
    x_hwc: Vec<T>,
    patches: Vec<T>,
    /// Kernel gradient in tap-major order (`o × 9c`), summed over this share's images.
    pub grad_w: Vec<T>,
    pub grad_b: Vec<T>,
    terms: Vec<(u32, T)>,
    /// For the input gradient: winners grouped by position (`by_pos[starts[p]..starts[p+1]]`).
    starts: Vec<usize>,
    /// Where the next winner of each position goes while `by_pos` is filled.
    cursor: Vec<usize>,
    by_pos: Vec<(u32, T)>,
    grad_patch: Vec<T>,
    grad_hwc: Vec<T>,
}

impl<T: Float> Backward<T> {
    pub fn new(s: BlockShape) -> Self {
        Backward {
            s,
            x_hwc: vec![T::zero(); s.positions() * s.c],
            patches: vec![T::zero(); s.positions() * s.taps()],
            grad_w: vec![T::zero(); s.o * s.taps()],
            grad_b: vec![T::zero(); s.o],
            terms: Vec::with_capacity(s.pooled()),
            starts: vec![0; s.positions() + 1],
            cursor: vec![0; s.positions()],
            by_pos: vec![(0, T::zero()); s.o * s.pooled()],
            grad_patch: vec![T::zero(); s.taps()],
            grad_hwc: vec![T::zero(); s.positions() * s.c],
        }
    }

    /// Adds one image's kernel and bias gradients, and writes its input gradient into `grad_x`
    /// (`c × h·w`) when given. `x` is the image (`c × h·w`), `g` and `winners` its pooled
    /// gradient and winners (`o × pooled`), `w_taps` the tap-major kernel.
    #[inline(always)]
    pub fn image(
        &mut self,
        x: &[T],
        g: &[T],
        winners: &[u32],
        w_taps: &[T],
        grad_x: Option<&mut [T]>,
    ) {
        let (s, k) = (self.s, self.s.taps());
        to_channels_last(x, s.c, &mut self.x_hwc);
        patches(&self.x_hwc, s, &mut self.patches);
        let gw_rows = self.grad_w.chunks_exact_mut(k);
        let pooled = s.pooled();
        for (oc, gw) in gw_rows.enumerate() {
            self.terms.clear();
            let span = oc * pooled..(oc + 1) * pooled;
            for (&gv, &win) in g[span.clone()].iter().zip(&winners[span]) {
                if win != NONE && gv != T::zero() {
                    self.terms.push((win, gv));
                }
            }
            self.grad_b[oc] = self.terms.iter().fold(self.grad_b[oc], |a, &(_, g)| a + g);
            sum_rows(gw, &self.patches, &self.terms);
        }
        if let Some(grad_x) = grad_x {
            self.input_grad(g, winners, w_taps);
            to_channels_first(&self.grad_hwc, s.c, grad_x);
        }
    }

    /// The input gradient (channels-last, in `grad_hwc`): each position's patch gradient is the
    /// sum of the kernel rows of the channels it won, folded back onto the 9 positions it read.
    #[inline(always)]
    fn input_grad(&mut self, g: &[T], winners: &[u32], w_taps: &[T]) {
        let (s, c) = (self.s, self.s.c);
        let pooled = s.pooled();
        // Counting sort of the winners (with a gradient) by position.
        let won = |gv: T, win: u32| win != NONE && gv != T::zero();
        self.starts.fill(0);
        for (&gv, &win) in g.iter().zip(winners) {
            if won(gv, win) {
                self.starts[win as usize + 1] += 1;
            }
        }
        for p in 0..s.positions() {
            self.starts[p + 1] += self.starts[p];
        }
        self.cursor.copy_from_slice(&self.starts[..s.positions()]);
        let channels = g.chunks_exact(pooled).zip(winners.chunks_exact(pooled));
        for (oc, (g, winners)) in channels.enumerate() {
            for (&gv, &win) in g.iter().zip(winners) {
                if won(gv, win) {
                    let at = &mut self.cursor[win as usize];
                    self.by_pos[*at] = (oc as u32, gv);
                    *at += 1;
                }
            }
        }
        self.grad_hwc.fill(T::zero());
        for pos in 0..s.positions() {
            let terms = &self.by_pos[self.starts[pos]..self.starts[pos + 1]];
            if terms.is_empty() {
                continue;
            }
            self.grad_patch.fill(T::zero());
            sum_rows(&mut self.grad_patch, w_taps, terms);
            for (tap, src) in taps_of(pos / s.w, pos % s.w, s) {
                let dst = &mut self.grad_hwc[src * c..(src + 1) * c];
                for (d, &v) in dst.iter_mut().zip(&self.grad_patch[tap * c..(tap + 1) * c]) {
                    *d = *d + v;
                }
            }
        }
    }
}
