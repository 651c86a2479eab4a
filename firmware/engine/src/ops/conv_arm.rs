//! The conv tap kernel's inner loops in Cortex-M4F assembly. Per tap: one column index load
//! (a byte or a halfword, as stored), one table load, one address add, a 14-register `vldm` of
//! the window row and 14 `vmla`, plus a weight-pair load and a loop test per two taps (19.5
//! instructions for 14 MACs; compiled Rust spends about twice that, a load per MAC and bounds
//! checks per tap); a dense row reads the table in order instead (no index load). One call is
//! a pooled chunk: the top conv row's 14 sums are pushed on the stack, the bottom row's taps
//! run, and the two rows are max-pooled and clamped at zero in integer registers. The
//! operations are the portable loops' ([`super::conv::portable`]): `vmla.f32` rounds the
//! product before adding, exactly as `acc += w * x` does on the host, each accumulator sees the
//! taps in the same order, and the pooling is the same integer max, so results are
//! bit-identical.
#![allow(unsafe_code)]

use super::conv::{Cols, Taps, CHUNK};
use core::arch::asm;

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
/// `indexed`: `{cols}` holds column indices that `$load` reads (`$step` bytes each) and the
/// table at `{offsets}` turns into window offsets; `every`: `{cols}` walks the table itself
/// (a dense row). Clobbers `{end}`, `{c}`, `{c2}`.
macro_rules! tap_loop {
    (indexed $load:literal, $step:literal) => {
        tap_loop!(
            @ $load,
            $step,
            "ldrh {c}, [{offsets}, {c}, lsl #1]\n",
            "ldrh {c2}, [{offsets}, {c2}, lsl #1]\n"
        )
    };
    (every) => {
        tap_loop!(@ "ldrh", "2", "", "")
    };
    (@ $load:literal, $step:literal, $look:literal, $look2:literal) => {
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
            $look,
            "add {c}, {row0}, {c}, lsl #2\n",
            "vldm {c}, {{s16-s29}}\n",
            vmla_row!("s30"),
            $look2,
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
            $look,
            "add {c}, {row0}, {c}, lsl #2\n",
            "vldm {c}, {{s16-s29}}\n",
            vmla_row!("s30"),
            "3:\n",
        )
    };
}

/// The pooled output at byte `$out` of `{dst}`: from the bottom pair s$lo, s$hi and the top
/// pair s$tlo, s$thi, the signed-integer max of the four bit patterns (their order is the floats' for the
/// non-negative ones, and puts every negative one below them), clamped at 0 (`bic` with the
/// sign): the ReLU. The loops' pointer registers are free by then.
macro_rules! pool_pair {
    ($lo:literal, $hi:literal, $tlo:literal, $thi:literal, $out:literal) => {
        concat!(
            "vmov {c}, {c2}, s",
            $lo,
            ", s",
            $hi,
            "\n",
            "vmov {cols}, {end}, s",
            $tlo,
            ", s",
            $thi,
            "\n",
            "cmp {c}, {c2}\n",
            "it lt\n",
            "movlt {c}, {c2}\n",
            "cmp {cols}, {end}\n",
            "it lt\n",
            "movlt {cols}, {end}\n",
            "cmp {c}, {cols}\n",
            "it lt\n",
            "movlt {c}, {cols}\n",
            "bic {c}, {c}, {c}, asr #31\n",
            "str {c}, [{dst}, #",
            $out,
            "]\n",
        )
    };
}

/// A pooled chunk: the tap loop on the top row, its sums pushed on the stack, the tap loop
/// again (the column list and weights from their start, saved on the stack first) on the
/// bottom row `{slot}` bytes further, then the top sums popped into s16–s29 and pooled with
/// the bottom's. `$loop` is [`tap_loop!`]'s kind, `$step` its column step in bytes.
macro_rules! pooled_chunk {
    ($step:literal, $($loop:tt)*) => {
        concat!(
            "strd {cols}, {vals}, [sp, #-8]!\n",
            tap_loop!($($loop)*),
            "vpush {{s0-s13}}\n",
            "ldrd {cols}, {vals}, [sp, #56]\n",
            "add {end}, {end}, #",
            $step,
            "\n",
            "add {row0}, {row0}, {slot}\n",
            tap_loop!($($loop)*),
            "vpop {{s16-s29}}\n",
            "add sp, sp, #8\n",
            pool_pair!("0", "1", "16", "17", "0"),
            pool_pair!("2", "3", "18", "19", "4"),
            pool_pair!("4", "5", "20", "21", "8"),
            pool_pair!("6", "7", "22", "23", "12"),
            pool_pair!("8", "9", "24", "25", "16"),
            pool_pair!("10", "11", "26", "27", "20"),
            pool_pair!("12", "13", "28", "29", "24"),
        )
    };
}

/// `asm!` with the FPU registers the tap loop uses declared clobbered (the compiler saves
/// d8–d15). The kernel keeps 64 bytes on the stack while it runs (two pointers and the top
/// row's sums) and frees them before it ends.
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
        )
    };
}

/// [`pooled_chunk`]'s assembly for column indices `$cols` that `$load` reads, `$step` bytes
/// each.
macro_rules! indexed_chunk {
    (
        $load:literal,
        $step:literal,
        $cols:expr,
        $init:expr,
        $taps:expr,
        $row:expr,
        $slot:expr,
        $dst:expr
    ) => {{
        let cols = $cols.as_ptr_range();
        tap_asm!(
            pooled_chunk!($step, indexed $load, $step),
            init = in(reg) $init.as_ptr(),
            dst = in(reg) $dst.as_mut_ptr(),
            slot = in(reg) $slot,
            cols = inout(reg) cols.start => _,
            end = inout(reg) cols.end => _,
            offsets = in(reg) $taps.offsets.as_ptr(),
            vals = inout(reg) $taps.vals.as_ptr() => _,
            row0 = inout(reg) $row.as_ptr() => _,
            c = out(reg) _,
            c2 = out(reg) _,
        )
    }};
}

/// One output channel's pooled chunk: its taps on the top conv row at `row` and on the bottom
/// one `slot` values further, each from `init`, max-pooled in pairs and clamped at zero into
/// `dst`.
///
/// # Safety
/// As [`Taps`] says, for both rows: every column index is below `taps.offsets.len()`, and
/// every tap's CHUNK floats lie in `row` and in `row[slot..]`.
#[inline(always)]
pub(crate) unsafe fn pooled_chunk(
    init: &[f32; CHUNK],
    taps: &Taps<'_>,
    row: &[f32],
    slot: usize,
    dst: &mut [f32; CHUNK / 2],
) {
    let slot_bytes = slot * size_of::<f32>();
    // SAFETY: each pass reads the column indices (for a dense row, as many table entries as
    // weights) and the weights, which `Taps::new` made the same number, `offsets[c]` for each
    // index `c`, and CHUNK floats at `row + offset` (then `row + slot + offset`), all in bounds
    // by the caller's contract. It reads the 14 floats of `init` twice and writes the 7 of
    // `dst`; on the stack it pushes 64 bytes and pops them. The clobbered FPU registers are
    // declared by `tap_asm!`.
    unsafe {
        match taps.cols {
            Cols::U8(c) => indexed_chunk!("ldrb", "1", c, init, taps, row, slot_bytes, dst),
            Cols::U16(c) => indexed_chunk!("ldrh", "2", c, init, taps, row, slot_bytes, dst),
            Cols::Every => {
                let n = taps.vals.len();
                let cols = taps.offsets.get(..n).unwrap_or(&[]).as_ptr_range();
                tap_asm!(
                    pooled_chunk!("2", every),
                    init = in(reg) init.as_ptr(),
                    dst = in(reg) dst.as_mut_ptr(),
                    slot = in(reg) slot_bytes,
                    cols = inout(reg) cols.start => _,
                    end = inout(reg) cols.end => _,
                    vals = inout(reg) taps.vals.as_ptr() => _,
                    row0 = inout(reg) row.as_ptr() => _,
                    c = out(reg) _,
                    c2 = out(reg) _,
                )
            }
        }
    }
}
