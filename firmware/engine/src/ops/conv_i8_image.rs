//! Int8 3x3 conv of a one-channel input (an image) with its weights stored dense: every tap,
//! two per `SMLAD`. A kernel row's first two taps read two neighbouring window values, which one
//! (unaligned) word load brings packed, so `SMLAD` adds both products at once; the third tap
//! reads the top or bottom half of the next word (`SMLAxB`/`SMLAxT`). For the four conv outputs
//! of a pooled output (2x2), the 4x4 input patch is 12 word loads and 24 multiply-accumulates
//! (36 MACs), the weights staying in five registers; the four sums are max-pooled as they end,
//! and the maximum is requantized in the loop (bias, `SMMLA`, shift, `USAT`: the ReLU) and
//! stored as the output byte. One call makes an output channel's whole pooled row.
//!
//! Sums are exact integers and the requantization is SPEC §4.1's, so the assembly ([`arm`]) and
//! the portable definition ([`portable`]) agree bit for bit with every other kernel.
#![allow(unsafe_code)]

/// Values per window slot (one channel's row) for which the assembly is built: a 28-wide
/// input (the data sets' 28x28 images) and its two padding columns. Other widths take the
/// tap-by-tap kernel.
pub const ROW: usize = 30;
/// Pooled outputs of a row.
pub const COLUMNS: usize = (ROW - 2) / 2;

/// An output channel's requantization as the loop applies it to a pooled sum `v`:
/// `(v · multiplier + folded) >> shift` in 64 bits (`SMLAL`, then the high word shifted by
/// `shift − 32`), with `folded = bias · multiplier + 2^(shift−1)`. That is SPEC §4.1's
/// `((v + bias) · multiplier + 2^(shift−1)) >> shift` with the bias folded in, exact for
/// shifts of 32 or more; then clamped to a byte (`USAT`: the ReLU).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Requant {
    folded_low: u32,
    folded_high: i32,
    multiplier: i32,
    /// The requantization's shift less 32.
    shift: i32,
}

impl Requant {
    /// `None` for a shift below 32, whose result needs the low word too.
    pub fn new(bias: i32, multiplier: i32, shift: u8) -> Option<Self> {
        let high = i32::from(shift)
            .checked_sub(32)
            .filter(|s| (0..=30).contains(s))?;
        // 2^(shift−1) from its two words (a variable 64-bit shift is a library call on the
        // MCU); |bias · multiplier| < 2^62 and 2^(shift−1) ≤ 2^61: no overflow.
        let half_high = if high > 0 {
            i64::from(1i32 << (high - 1))
        } else {
            0
        };
        let half = (half_high << 32) | if high == 0 { 1i64 << 31 } else { 0 };
        let folded = i64::from(bias) * i64::from(multiplier) + half;
        Some(Requant {
            folded_low: folded as u32,
            folded_high: (folded >> 32) as i32,
            multiplier,
            shift: high,
        })
    }

    /// The output byte of pooled sum `v`, as the loop computes it. Exact when |v + bias| fits
    /// an `i32` (the reader's accumulator bound): the 64-bit sum is then below 2^63.
    #[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
    fn apply(&self, v: i32) -> i16 {
        let folded = (i64::from(self.folded_high) << 32) | i64::from(self.folded_low);
        let sum = i64::from(v) * i64::from(self.multiplier) + folded;
        ((sum >> 32) >> self.shift).clamp(0, 255) as i16
    }
}

/// Values of the window [`row`] reads: four rows, the last to its second padding column.
pub const WINDOW: usize = 3 * ROW + 2 * COLUMNS + 2;

/// The portable definition.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
pub mod portable {
    use super::{Requant, ROW};

    /// A pooled row's output bytes into `out` (up to [`super::COLUMNS`]): per pooled column
    /// k, the 2x2 maximum of the conv sums of weights `w` (in (ky, kx) order) whose taps start
    /// at `window[2k]` (the window's four rows are [`ROW`] apart), requantized.
    pub fn row(w: &[i8; 9], q: &Requant, window: &[i16], out: &mut [i16]) {
        for (k, o) in out.iter_mut().enumerate().take(super::COLUMNS) {
            let sum = |dy: usize, dx: usize| {
                let mut s = 0i32;
                for (t, &wt) in w.iter().enumerate() {
                    let at = (dy + t / 3) * ROW + 2 * k + dx + t % 3;
                    s += i32::from(wt) * i32::from(window.get(at).copied().unwrap_or(0));
                }
                s
            };
            *o = q.apply(sum(0, 0).max(sum(0, 1)).max(sum(1, 0)).max(sum(1, 1)));
        }
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm {
    use super::{Requant, COLUMNS, ROW};
    use core::arch::asm;

    /// The loop: per pooled column, the 2x2 block of conv sums from window rows 0..4 (at `{p}`
    /// and `{r1}`, `{r2}`, `{r3}` bytes after it), max-pooled, requantized by the [`Requant`]
    /// at `{q}` and stored to `{out}` as a halfword.
    macro_rules! block_loop {
        () => {
            concat!(
                "2:\n",
                // Window row 0: kernel row 0 of the upper conv row (its first word last).
                "ldr {t}, [{p}, #4]\n",
                "smulbb {a00}, {t}, {s01}\n",
                "smultb {a01}, {t}, {s01}\n",
                "ldr {t}, [{p}, #2]\n",
                "smlad {a01}, {t}, {w0}, {a01}\n",
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
                // Row 0's first word, {p} moving on to the next pooled column.
                "ldr {t}, [{p}], #4\n",
                "smlad {a00}, {t}, {w0}, {a00}\n",
                // The 2x2 maximum.
                "cmp {a00}, {a01}\n",
                "it lt\n",
                "movlt {a00}, {a01}\n",
                "cmp {a10}, {a11}\n",
                "it lt\n",
                "movlt {a10}, {a11}\n",
                "cmp {a00}, {a10}\n",
                "it lt\n",
                "movlt {a00}, {a10}\n",
                // Requantized (the sums' registers are free now), stored; the next column.
                "ldrd {a01}, {a10}, [{q}]\n",
                "ldrd {a11}, {t}, [{q}, #8]\n",
                "smlal {a01}, {a10}, {a00}, {a11}\n",
                "asr {a10}, {a10}, {t}\n",
                "usat {a10}, #8, {a10}\n",
                "strh {a10}, [{out}], #2\n",
                // The count in s2's top half reaches 0 with a carry out.
                "adds {s2}, {s2}, #0x10000\n",
                "bcc 2b\n",
            )
        };
    }

    /// [`super::portable::row`] in assembly, for all [`COLUMNS`]. The weights go into five
    /// registers as the loop takes them: kernel rows' (tap 0, tap 1) pairs, then (w02, w12),
    /// and (w22, pooled columns left, counting up to 0).
    ///
    /// # Safety
    /// `window` holds [`super::WINDOW`] values and `out` [`COLUMNS`] or more.
    #[inline(always)]
    pub unsafe fn row(w: &[i8; 9], q: &Requant, window: &[i16], out: &mut [i16]) {
        // SAFETY: reads the 9 weight bytes (unaligned words at bytes 0, 3 and 5; unaligned
        // loads are allowed on ARMv7-M). Per pooled column k < COLUMNS (the count in s2's top
        // half) the loop reads the words at byte offsets 4k + {0, 2, 4} of window rows 0..4,
        // the last ending at value 3·ROW + 2k + 3 < WINDOW, in bounds by the caller's contract;
        // it reads `q`'s four words (`repr(C)`, word-aligned for LDRD) and writes halfword k
        // of `out`, registers otherwise.
        unsafe {
            asm!(
                // Bytes b0..b8 = (ky, kx) order; {a00} holds their address until the loop.
                "ldr {t}, [{a00}]",
                "sxtb16 {a01}, {t}",
                "sxtb16 {a10}, {t}, ror #8",
                "pkhbt {w0}, {a01}, {a10}, lsl #16",
                "ldr {t}, [{a00}, #3]",
                "sxtb16 {a11}, {t}",
                "sxtb16 {a10}, {t}, ror #8",
                "pkhbt {w1}, {a11}, {a10}, lsl #16",
                "pkhtb {s01}, {a11}, {a01}, asr #16",
                "ldr {t}, [{a00}, #5]",
                "sxtb16 {a01}, {t}",
                "sxtb16 {a10}, {t}, ror #8",
                "pkhbt {w2}, {a10}, {a01}",
                "uxth {s2}, {a10}, ror #16",
                "sub {s2}, {s2}, #{count}",
                block_loop!(),
                r1 = const 2 * ROW,
                r2 = const 4 * ROW,
                r3 = const 6 * ROW,
                count = const COLUMNS << 16,
                p = inout(reg) window.as_ptr() => _,
                out = inout(reg) out.as_mut_ptr() => _,
                q = in(reg) q as *const Requant,
                w0 = out(reg) _,
                w1 = out(reg) _,
                w2 = out(reg) _,
                s01 = out(reg) _,
                s2 = out(reg) _,
                t = out(reg) _,
                a00 = inout(reg) w.as_ptr() => _,
                a01 = out(reg) _,
                a10 = out(reg) _,
                a11 = out(reg) _,
                options(nostack),
            );
        }
    }
}

/// An output channel's pooled row: [`COLUMNS`] output bytes (as `i16`) into `out`, from its 9
/// weights (in (ky, kx) order) and a one-channel window [`ROW`] values wide (nothing if the window or `out` is too short: callers
/// check once per row).
#[inline(always)]
pub fn row(w: &[i8; 9], q: &Requant, window: &[i16], out: &mut [i16]) {
    if window.len() < WINDOW || out.len() < COLUMNS {
        return;
    }
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: the window and `out` are long enough (checked just above).
    unsafe {
        arm::row(w, q, window, out)
    };
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    portable::row(w, q, window, out);
}

#[cfg(test)]
mod tests {
    use super::Requant;
    use model_format::quant::requantize_u8;
    use proptest::prelude::*;

    /// Accumulator-sized values: mostly the range conv sums take, sometimes any `i32`.
    fn sums() -> impl Strategy<Value = i32> {
        prop_oneof![3 => -(1i32 << 22)..(1 << 22), 1 => any::<i32>()]
    }

    proptest! {
        /// The folded requantization is SPEC §4.1's for every shift it takes, and refuses only
        /// shifts below 32.
        #[test]
        fn folded_bias_requantizes_as_the_spec(
            v in sums(),
            bias in sums(),
            multiplier in prop_oneof![(1i32 << 30)..i32::MAX, 0..i32::MAX],
            shift in 1u8..=62,
        ) {
            // The reader's bound: the sum plus the bias fits an i32.
            let Some(acc) = v.checked_add(bias) else { return Ok(()) };
            match Requant::new(bias, multiplier, shift) {
                Some(q) => prop_assert_eq!(
                    q.apply(v),
                    i16::from(requantize_u8(acc, multiplier, shift))
                ),
                None => prop_assert!(shift < 32),
            }
        }
    }
}
