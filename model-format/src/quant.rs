//! The integer arithmetic of int8 models (SPEC §4.1), in one place: the reader's range checks,
//! the engine's requantization and the writer's multipliers all use these definitions.

/// Largest magnitude of a stored int8 weight: symmetric, so −128 never occurs and a weight's
/// sign flip never saturates.
pub const MAX_WEIGHT: i32 = 127;
/// Largest activation: activations between layers (and the input image) are unsigned bytes.
pub const MAX_ACTIVATION: i64 = 255;
/// Metadata key of an int8 model's per-layer output scales (SPEC §4.1), comma-separated.
pub const OUTPUT_SCALES: &str = "output_scales";

/// The real scale of a row's weights: the requantization `m / 2^shift` is
/// `input_scale · weight_scale / output_scale`, so `weight_scale` follows from it and the
/// layer's input and output scales (what densifying an int8 model multiplies by).
pub fn weight_scale(multiplier: i32, shift: u8, input_scale: f64, output_scale: f64) -> f64 {
    let real = f64::from(multiplier) / pow2(shift);
    real * output_scale / input_scale
}

/// `2^shift` for a valid shift, without `std`.
fn pow2(shift: u8) -> f64 {
    (0..shift).fold(1.0, |p, _| p * 2.0)
}

/// Shifts a requantization may use.
pub const SHIFTS: core::ops::RangeInclusive<u8> = 1..=62;

/// `acc · multiplier / 2^shift`, rounded to nearest with ties toward +∞, in 64-bit arithmetic:
/// `(acc · m + 2^(shift−1)) >> shift`. Exact for every `i32` accumulator and valid multiplier
/// (`0 ≤ m < 2^31`, `shift` in [`SHIFTS`]): |acc · m| < 2^62, so nothing overflows.
#[inline(always)]
pub fn requantize(acc: i32, multiplier: i32, shift: u8) -> i64 {
    let shift = u32::from(shift).clamp(1, 62);
    let product = i64::from(acc) * i64::from(multiplier);
    if shift > 32 {
        // The same value from the high word alone: the low word only adds a fraction below 1
        // before the floor, and |high| < 2^30, so the 32-bit sum cannot overflow. (Most layers'
        // shifts are here; a variable 64-bit shift is a library call on the MCU.)
        let high = (product >> 32) as i32;
        return i64::from((high + (1 << (shift - 33))) >> (shift - 32));
    }
    shift_rounded(product, shift)
}

/// `(product + 2^(shift−1)) >> shift` in 64 bits: the rare small shifts, out of line.
#[cold]
#[inline(never)]
fn shift_rounded(product: i64, shift: u32) -> i64 {
    (product + (1i64 << (shift - 1))) >> shift
}

/// [`requantize`] clamped to an unsigned byte: the output of a layer with ReLU.
#[inline(always)]
pub fn requantize_u8(acc: i32, multiplier: i32, shift: u8) -> u8 {
    requantize(acc, multiplier, shift).clamp(0, MAX_ACTIVATION) as u8
}

/// [`requantize`] saturated to `i32`: the logits of the last layer.
#[inline(always)]
pub fn requantize_i32(acc: i32, multiplier: i32, shift: u8) -> i32 {
    requantize(acc, multiplier, shift).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Whether a row's accumulator stays within `i32` for every input: `|bias| + 255 · Σ|w| ≤
/// 2^31 − 1`. The reader checks it at load so kernels may add without overflow checks.
pub fn accumulator_fits(bias: i32, weights: impl Iterator<Item = i8>) -> bool {
    let reach = weights.fold(0i64, |s, w| s + i64::from(w).abs() * MAX_ACTIVATION);
    i64::from(bias).abs() + reach <= i64::from(i32::MAX)
}

/// The multiplier and shift that represent a positive real factor `real` (as TFLite does, with
/// 31 significant bits): `real ≈ m / 2^shift`, `2^30 ≤ m < 2^31`. `None` if `real` is not
/// finite and positive or needs a shift outside [`SHIFTS`].
pub fn multiplier_for(real: f64) -> Option<(i32, u8)> {
    if !(real.is_finite() && real > 0.0) {
        return None;
    }
    // Normalise real = f · 2^e with f in [0.5, 1); shift = 31 − e.
    let (mut f, mut e) = (real, 0i32);
    while f >= 1.0 {
        f /= 2.0;
        e += 1;
    }
    while f < 0.5 {
        f *= 2.0;
        e -= 1;
    }
    // f · 2^31 in [2^30, 2^31]; rounding can reach 2^31, which halves back to 2^30.
    let mut m = (f * 2_147_483_648.0 + 0.5) as i64;
    let mut shift = 31 - e;
    if m == 1 << 31 {
        m /= 2;
        shift -= 1;
    }
    let shift = u8::try_from(shift).ok().filter(|s| SHIFTS.contains(s))?;
    Some((i32::try_from(m).ok()?, shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_up_and_clamps() {
        // 3 · 0.5 = 1.5 → 2; −3 · 0.5 = −1.5 → −1 (ties toward +∞).
        let (m, s) = multiplier_for(0.5).unwrap();
        assert_eq!((m, s), (1 << 30, 31));
        assert_eq!(requantize(3, m, s), 2);
        assert_eq!(requantize(-3, m, s), -1);
        assert_eq!(requantize_u8(-3, m, s), 0);
        assert_eq!(requantize_u8(1000, m, s), 255);
        assert_eq!(requantize_i32(i32::MIN, i32::MAX, 1), i32::MIN);
    }

    /// The definition, `(acc · m + 2^(s−1)) >> s`, in 128-bit arithmetic.
    fn reference(acc: i32, m: i32, shift: u8) -> i64 {
        let p = i128::from(acc) * i128::from(m);
        ((p + (1i128 << (shift - 1))) >> shift) as i64
    }

    #[test]
    fn requantization_equals_its_definition() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let edges = [i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX];
        for shift in SHIFTS {
            for _ in 0..2000 {
                let acc = next() as i32 >> (next() % 32);
                let m = (next() as i32 & i32::MAX) >> (next() % 31);
                assert_eq!(
                    requantize(acc, m, shift),
                    reference(acc, m, shift),
                    "{acc} {m} {shift}"
                );
            }
            for acc in edges {
                for m in [0, 1, 1 << 30, i32::MAX] {
                    assert_eq!(
                        requantize(acc, m, shift),
                        reference(acc, m, shift),
                        "{acc} {m} {shift}"
                    );
                }
            }
        }
    }

    #[test]
    fn multipliers_cover_the_range() {
        for real in [1e-9, 3.7e-4, 0.25, 0.999_999_999_9, 1.0, 2.5, 1e6] {
            let (m, s) = multiplier_for(real).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&m), "{real}: m {m}");
            let back = f64::from(m) / 2f64.powi(i32::from(s));
            assert!((back / real - 1.0).abs() < 1e-9, "{real}: {back}");
        }
        assert_eq!(multiplier_for(0.0), None);
        assert_eq!(multiplier_for(f64::NAN), None);
        assert_eq!(multiplier_for(1e-30), None);
    }

    #[test]
    fn accumulator_bound_is_exact_at_the_limit() {
        let w = [127i8; 8];
        let reach = 8 * 127 * 255;
        assert!(accumulator_fits(i32::MAX - reach, w.iter().copied()));
        assert!(!accumulator_fits(i32::MAX - reach + 1, w.iter().copied()));
        assert!(accumulator_fits(-(i32::MAX - reach), w.iter().copied()));
    }
}
