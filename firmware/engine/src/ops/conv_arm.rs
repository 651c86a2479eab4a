//! The sparse conv inner loops in Cortex-M4F assembly. Per stored tap: one index load, one table
//! load, one address add, a 14-register `vldm` of the window row and 14 `vmla`, plus a weight-pair
//! load and a loop test per two taps (19.5 instructions for 14 MACs; compiled Rust spends about
//! twice that, a load per MAC and bounds checks per tap). The second row of a chunk also
//! max-pools with the first and clamps at zero in integer registers. The operations are the
//! portable loops'
//! ([`super::conv::portable`]): `vmla.f32` rounds the product before adding, exactly as
//! `acc += w * x` does on the host, each accumulator sees the taps in the same order, and the
//! pooling is the same integer max, so results are bit-identical.
#![allow(unsafe_code)]

use super::conv::{ApplyTaps, TapRow, CHUNK};
use core::arch::asm;
use core::mem::MaybeUninit;

/// Fourteen `vmla.f32`: accumulators s0–s13 += weight `$w` × window row s16–s29.
macro_rules! vmla_row {
    ($w:literal) => {
        concat!(
            "vmla.f32 s0, ",
            $w,
            ", s16\n",
            "vmla.f32 s1, ",
            $w,
            ", s17\n",
            "vmla.f32 s2, ",
            $w,
            ", s18\n",
            "vmla.f32 s3, ",
            $w,
            ", s19\n",
            "vmla.f32 s4, ",
            $w,
            ", s20\n",
            "vmla.f32 s5, ",
            $w,
            ", s21\n",
            "vmla.f32 s6, ",
            $w,
            ", s22\n",
            "vmla.f32 s7, ",
            $w,
            ", s23\n",
            "vmla.f32 s8, ",
            $w,
            ", s24\n",
            "vmla.f32 s9, ",
            $w,
            ", s25\n",
            "vmla.f32 s10, ",
            $w,
            ", s26\n",
            "vmla.f32 s11, ",
            $w,
            ", s27\n",
            "vmla.f32 s12, ",
            $w,
            ", s28\n",
            "vmla.f32 s13, ",
            $w,
            ", s29\n",
        )
    };
}

/// The tap loop, shared by both kernels: `{init}` → s0–s13, then each tap from `{cols}` to
/// `{end}`, two per iteration (one weight pair load, one loop test) and a last odd one.
/// `$load`/`$step` read one column index. Clobbers `{end}`, `{c}`, `{c2}`.
macro_rules! tap_loop {
    ($load:literal, $step:literal) => {
        concat!(
            "vldm {init}, {{s0-s13}}\n",
            // Pairs while at least two indices are left: cols < end − step.
            "sub {end}, {end}, #",
            $step,
            "\n",
            "cmp {cols}, {end}\n",
            "bhs 4f\n",
            "2:\n",
            $load,
            " {c}, [{cols}], #",
            $step,
            "\n",
            $load,
            " {c2}, [{cols}], #",
            $step,
            "\n",
            "vldmia {vals}!, {{s30-s31}}\n",
            "ldrh {c}, [{offsets}, {c}, lsl #1]\n",
            "add {c}, {row0}, {c}, lsl #2\n",
            "vldm {c}, {{s16-s29}}\n",
            vmla_row!("s30"),
            "ldrh {c2}, [{offsets}, {c2}, lsl #1]\n",
            "add {c2}, {row0}, {c2}, lsl #2\n",
            "vldm {c2}, {{s16-s29}}\n",
            vmla_row!("s31"),
            "cmp {cols}, {end}\n",
            "blo 2b\n",
            // One index left exactly when cols == end − step.
            "4:\n",
            "bne 3f\n",
            $load,
            " {c}, [{cols}], #",
            $step,
            "\n",
            "vldmia {vals}!, {{s30}}\n",
            "ldrh {c}, [{offsets}, {c}, lsl #1]\n",
            "add {c}, {row0}, {c}, lsl #2\n",
            "vldm {c}, {{s16-s29}}\n",
            vmla_row!("s30"),
            "3:\n",
        )
    };
}

/// One pooled output: bottom pair s$lo, s$hi and the top pair at byte `$off` of `{top}`; the
/// signed-integer max of the four bit patterns, clamped at 0 (`bic` with the sign), to `{dst}`.
macro_rules! pool_one {
    ($lo:literal, $hi:literal, $off:literal, $out:literal) => {
        concat!(
            "vmov {cols}, {end}, s",
            $lo,
            ", s",
            $hi,
            "\n",
            "ldrd {vals}, {offsets}, [{top}, #",
            $off,
            "]\n",
            "cmp {cols}, {end}\n",
            "it lt\n",
            "movlt {cols}, {end}\n",
            "cmp {vals}, {offsets}\n",
            "it lt\n",
            "movlt {vals}, {offsets}\n",
            "cmp {cols}, {vals}\n",
            "it lt\n",
            "movlt {cols}, {vals}\n",
            "bic {cols}, {cols}, {cols}, asr #31\n",
            "str {cols}, [{dst}, #",
            $out,
            "]\n",
        )
    };
}

/// `asm!` with the FPU registers the tap loop uses declared clobbered (the compiler saves
/// d8–d15) and no stack use.
macro_rules! tap_asm {
    ($($body:tt)*) => {
        asm!(
            $($body)*
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s16") _, out("s17") _,
            out("s18") _, out("s19") _, out("s20") _, out("s21") _,
            out("s22") _, out("s23") _, out("s24") _, out("s25") _,
            out("s26") _, out("s27") _, out("s28") _, out("s29") _,
            out("s30") _, out("s31") _,
            options(nostack),
        )
    };
}

macro_rules! arm_apply_taps {
    ($ty:ty, $load:literal, $step:literal) => {
        impl ApplyTaps for $ty {
            #[inline(always)]
            unsafe fn conv_row(init: &[f32; CHUNK], taps: &TapRow<'_, Self>) -> [f32; CHUNK] {
                let n = taps.cols.len().min(taps.vals.len());
                let (Some(cols), Some(row0)) = (taps.cols.get(..n), taps.window.get(taps.base..))
                else {
                    return *init;
                };
                let range = cols.as_ptr_range();
                let mut acc = MaybeUninit::<[f32; CHUNK]>::uninit();
                // SAFETY: the loop reads `n` column indices from `cols` and `n` weights from
                // `vals` (both at least `n` long), `offsets[c]` for each index `c` and CHUNK
                // floats at `row0 + offsets[c]`, all in bounds by the caller's contract. It
                // reads the 14 floats of `init` and writes all 14 of `acc`, nothing else, and
                // not the stack. The clobbered FPU registers are declared by `tap_asm!`.
                unsafe {
                    tap_asm!(
                        tap_loop!($load, $step),
                        "vstm {acc}, {{s0-s13}}",
                        init = in(reg) init.as_ptr(),
                        acc = in(reg) acc.as_mut_ptr(),
                        cols = inout(reg) range.start => _,
                        end = inout(reg) range.end => _,
                        vals = inout(reg) taps.vals.as_ptr() => _,
                        offsets = in(reg) taps.offsets.as_ptr(),
                        row0 = in(reg) row0.as_ptr(),
                        c = out(reg) _,
                        c2 = out(reg) _,
                    );
                    acc.assume_init()
                }
            }

            #[inline(always)]
            unsafe fn conv_row_pool(
                init: &[f32; CHUNK],
                top: &[f32; CHUNK],
                taps: &TapRow<'_, Self>,
                dst: &mut [f32; CHUNK / 2],
            ) {
                let n = taps.cols.len().min(taps.vals.len());
                let (Some(cols), Some(row0)) = (taps.cols.get(..n), taps.window.get(taps.base..))
                else {
                    return;
                };
                let range = cols.as_ptr_range();
                // SAFETY: as in `conv_row` for the loop; then it reads the 14 floats of `top`
                // (8-byte aligned pairs are not needed: `ldrd` takes 4-aligned addresses on
                // ARMv7-M) and writes the 7 of `dst`.
                unsafe {
                    tap_asm!(
                        tap_loop!($load, $step),
                        pool_one!("0", "1", "0", "0"),
                        pool_one!("2", "3", "8", "4"),
                        pool_one!("4", "5", "16", "8"),
                        pool_one!("6", "7", "24", "12"),
                        pool_one!("8", "9", "32", "16"),
                        pool_one!("10", "11", "40", "20"),
                        pool_one!("12", "13", "48", "24"),
                        init = in(reg) init.as_ptr(),
                        top = in(reg) top.as_ptr(),
                        dst = in(reg) dst.as_mut_ptr(),
                        cols = inout(reg) range.start => _,
                        end = inout(reg) range.end => _,
                        vals = inout(reg) taps.vals.as_ptr() => _,
                        offsets = inout(reg) taps.offsets.as_ptr() => _,
                        row0 = in(reg) row0.as_ptr(),
                        c = out(reg) _,
                        c2 = out(reg) _,
                    );
                }
            }
        }
    };
}

arm_apply_taps!(u8, "ldrb", "1");
arm_apply_taps!(u16, "ldrh", "2");
