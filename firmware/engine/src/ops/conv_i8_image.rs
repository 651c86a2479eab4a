//! Int8 3x3 conv of a one-channel input (an image) with its weights stored dense: every tap,
//! two per `SMLAD`. A kernel row's first two taps read two neighbouring window values, which one
//! (unaligned) word load brings packed, so `SMLAD` adds both products at once; the third tap
//! reads the top or bottom half of the next word (`SMLAxB`/`SMLAxT`). For the four conv outputs
//! of a pooled output (2x2), the 4x4 input patch is 12 word loads and 24 multiply-accumulates
//! (36 MACs), the weights staying in five registers; the four sums are max-pooled as they end.
//!
//! Sums exclude the bias (the caller adds it to the pooled maximum: max(a) + b = max(a + b)) and
//! are exact integers, so the assembly ([`arm`]) and the portable definition ([`portable`])
//! agree bit for bit with every other kernel.
#![allow(unsafe_code)]

use super::conv_i8_loops::POOLED;

/// Values per window row for which the assembly is built: a 28-wide input (the data sets'
/// 28x28 images) and its two padding columns. Other widths take the tap-by-tap kernel.
pub const ROW: usize = 30;

/// The 9 weights of an output channel as the kernel holds them: kernel rows' (tap 0, tap 1)
/// pairs, then (w02, w12) and (w22, pooled outputs left, counting up to 0) for the third taps.
#[derive(Debug, Clone, Copy)]
pub struct Packed([u32; 5]);

/// Packs an output channel's 9 weights (missing ones read as 0) for [`pooled`].
#[inline(always)]
pub fn packed(w: &[i8]) -> Packed {
    use super::dsp::pack;
    let h = |i: usize| i16::from(w.get(i).copied().unwrap_or(0));
    Packed([
        pack(h(0), h(1)),
        pack(h(3), h(4)),
        pack(h(6), h(7)),
        pack(h(2), h(5)),
        pack(h(8), -(POOLED as i16)),
    ])
}

impl Packed {
    /// The weights back in (ky, kx) order.
    #[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
    fn taps(&self) -> [i8; 9] {
        let [w0, w1, w2, s01, s2] = self.0;
        let half = |x: u32, top: bool| (if top { x >> 16 } else { x }) as u16 as i16 as i8;
        [
            half(w0, false),
            half(w0, true),
            half(s01, false),
            half(w1, false),
            half(w1, true),
            half(s01, true),
            half(w2, false),
            half(w2, true),
            half(s2, false),
        ]
    }
}

/// Whether `window` holds what [`pooled`] reads for every chunk of a conv row `width` wide.
pub fn fits(window: &[i16], width: usize) -> bool {
    window.len() >= width.saturating_sub(super::conv::CHUNK) + 3 * ROW + 2 * POOLED + 2
}

/// The portable definition.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
pub mod portable {
    use super::{Packed, POOLED, ROW};

    /// The 2x2 maxima of the conv sums (no bias) of [`POOLED`] pooled columns whose first
    /// conv column's taps start at `window[base]`: the window's four rows are [`ROW`] apart.
    pub fn pooled(w: Packed, window: &[i16], base: usize) -> [i32; POOLED] {
        let w = w.taps();
        core::array::from_fn(|k| {
            let sum = |dy: usize, dx: usize| {
                let mut s = 0i32;
                for (t, &wt) in w.iter().enumerate() {
                    let at = base + (dy + t / 3) * ROW + 2 * k + dx + t % 3;
                    s += i32::from(wt) * i32::from(window.get(at).copied().unwrap_or(0));
                }
                s
            };
            sum(0, 0).max(sum(0, 1)).max(sum(1, 0)).max(sum(1, 1))
        })
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm {
    use super::{Packed, POOLED, ROW};
    use core::arch::asm;
    use core::mem::MaybeUninit;

    /// The loop: per pooled column, the 2x2 block of conv sums from window rows 0..4 (at `{p}`
    /// and `{r1}`, `{r2}`, `{r3}` bytes after it), max-pooled and stored to `{out}`.
    macro_rules! block_loop {
        () => {
            concat!(
                "2:\n",
                // Window row 0: kernel row 0 of the upper conv row.
                "ldr {t}, [{p}]\n",
                "smuad {a00}, {t}, {w0}\n",
                "ldr {t}, [{p}, #2]\n",
                "smuad {a01}, {t}, {w0}\n",
                "ldr {t}, [{p}, #4]\n",
                "smlabb {a00}, {t}, {s01}, {a00}\n",
                "smlatb {a01}, {t}, {s01}, {a01}\n",
                // Row 1: kernel row 1 of the upper conv row, row 0 of the lower.
                "ldr {t}, [{p}, #{r1}]\n",
                "smlad {a00}, {t}, {w1}, {a00}\n",
                "smuad {a10}, {t}, {w0}\n",
                "ldr {t}, [{p}, #{r1} + 2]\n",
                "smlad {a01}, {t}, {w1}, {a01}\n",
                "smuad {a11}, {t}, {w0}\n",
                "ldr {t}, [{p}, #{r1} + 4]\n",
                "smlabt {a00}, {t}, {s01}, {a00}\n",
                "smlatt {a01}, {t}, {s01}, {a01}\n",
                "smlabb {a10}, {t}, {s01}, {a10}\n",
                "smlatb {a11}, {t}, {s01}, {a11}\n",
                // Row 2: kernel row 2 of the upper conv row, row 1 of the lower.
                "ldr {t}, [{p}, #{r2}]\n",
                "smlad {a00}, {t}, {w2}, {a00}\n",
                "smlad {a10}, {t}, {w1}, {a10}\n",
                "ldr {t}, [{p}, #{r2} + 2]\n",
                "smlad {a01}, {t}, {w2}, {a01}\n",
                "smlad {a11}, {t}, {w1}, {a11}\n",
                "ldr {t}, [{p}, #{r2} + 4]\n",
                "smlabb {a00}, {t}, {s2}, {a00}\n",
                "smlatb {a01}, {t}, {s2}, {a01}\n",
                "smlabt {a10}, {t}, {s01}, {a10}\n",
                "smlatt {a11}, {t}, {s01}, {a11}\n",
                // Row 3: kernel row 2 of the lower conv row.
                "ldr {t}, [{p}, #{r3}]\n",
                "smlad {a10}, {t}, {w2}, {a10}\n",
                "ldr {t}, [{p}, #{r3} + 2]\n",
                "smlad {a11}, {t}, {w2}, {a11}\n",
                "ldr {t}, [{p}, #{r3} + 4]\n",
                "smlabb {a10}, {t}, {s2}, {a10}\n",
                "smlatb {a11}, {t}, {s2}, {a11}\n",
                // The 2x2 maximum, stored; the next pooled column.
                "cmp {a00}, {a01}\n",
                "it lt\n",
                "movlt {a00}, {a01}\n",
                "cmp {a10}, {a11}\n",
                "it lt\n",
                "movlt {a10}, {a11}\n",
                "cmp {a00}, {a10}\n",
                "it lt\n",
                "movlt {a00}, {a10}\n",
                "str {a00}, [{out}], #4\n",
                "add {p}, {p}, #4\n",
                // The count in s2's top half reaches 0 with a carry out.
                "adds {s2}, {s2}, #0x10000\n",
                "bcc 2b\n",
            )
        };
    }

    /// [`super::portable::pooled`] in assembly.
    ///
    /// # Safety
    /// `window` holds `base + 3·ROW + 2·POOLED + 2` values or more.
    #[inline(always)]
    pub unsafe fn pooled(w: Packed, window: &[i16], base: usize) -> [i32; POOLED] {
        let mut out = MaybeUninit::<[i32; POOLED]>::uninit();
        let [w0, w1, w2, s01, s2] = w.0;
        // SAFETY: per pooled column k the loop reads the words at byte offsets 2k + {0, 2, 4}
        // of window rows 0..4 from `base` (unaligned word loads are allowed on ARMv7-M), the
        // last ending at value base + 3·ROW + 2k + 4 ≤ base + 3·ROW + 2·POOLED + 2, in bounds
        // by the caller's contract; it writes the POOLED words of `out`, registers otherwise.
        unsafe {
            asm!(
                block_loop!(),
                r1 = const 2 * ROW,
                r2 = const 4 * ROW,
                r3 = const 6 * ROW,
                p = inout(reg) window.as_ptr().wrapping_add(base) => _,
                out = inout(reg) out.as_mut_ptr() as *mut i32 => _,
                w0 = in(reg) w0,
                w1 = in(reg) w1,
                w2 = in(reg) w2,
                s01 = in(reg) s01,
                s2 = inout(reg) s2 => _,
                t = out(reg) _,
                a00 = out(reg) _,
                a01 = out(reg) _,
                a10 = out(reg) _,
                a11 = out(reg) _,
                options(nostack),
            );
            // SAFETY: the loop ran POOLED times (the count in s2's top half) and stored a word
            // each time.
            out.assume_init()
        }
    }
}

/// The 2x2 maxima of the conv sums (no bias) of [`POOLED`] pooled columns whose first conv
/// column's taps start at `window[base]`, for a one-channel window [`ROW`] values wide (zeros
/// if the window is too short: callers check [`fits`] once per row).
#[inline(always)]
pub fn pooled(w: Packed, window: &[i16], base: usize) -> [i32; POOLED] {
    if window.len() < base + 3 * ROW + 2 * POOLED + 2 {
        return [0; POOLED];
    }
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: the window is long enough (checked just above).
    let out = unsafe { arm::pooled(w, window, base) };
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    let out = portable::pooled(w, window, base);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed weights read back as the nine taps, and the count is POOLED.
    #[test]
    fn packing_keeps_every_tap() {
        let w: [i8; 9] = [-127, 1, 2, -3, 4, 127, -6, 7, -8];
        let p = packed(&w);
        assert_eq!(p.taps(), w);
        assert_eq!((p.0[4] >> 16) as u16 as i16, -(POOLED as i16));
    }
}
