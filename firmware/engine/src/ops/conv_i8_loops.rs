//! The int8 conv kernels' inner loops: Cortex-M4 assembly ([`arm`]) and the portable loops
//! ([`portable`]) that define them. Both compute exact integer sums (the reader bounds every
//! accumulator), so they agree bit for bit whatever the order of operations.
//!
//! - [`dense_blocks`]: one output channel against four im2col'd pixels, four taps per step:
//!   one weight load, two `SXTB16`, four `LDRD` and eight `SMLAD` for 16 MACs (17 instructions
//!   with the loop test), the register-resident tile of CMSIS-NN's
//!   `arm_nn_mat_mult_kernel_s8_s16` cut to fit eleven registers.
//! - [`pooled_chunk`]: a chunk (14 columns) of both conv rows of a pooled row in four passes of
//!   7 sums against a list of decoded taps (window byte offset in the low half, weight in the
//!   high half) that ends with two 0s: one `UXTAH` for the address, four loads and seven
//!   `SMLAxT` per tap, two taps per turn of the loop, sums in registers, max-pooled in pairs as
//!   each pass ends.
//! - [`decode_csr`], [`decode_dense`]: an output channel's non-zero weights into that list.
#![allow(unsafe_code)]

/// Outputs of one pass over the taps: half a chunk, seven sums in registers.
pub const HALF: usize = 7;
/// Pooled outputs of a chunk.
pub const POOLED: usize = super::conv::CHUNK / 2;

/// A decoded sparse tap: the window offset in bytes (low half) and the weight (high half).
#[inline(always)]
pub fn tap(byte_offset: u16, weight: i8) -> u32 {
    u32::from(byte_offset) | (u32::from(i16::from(weight) as u16) << 16)
}

/// The portable loops: the definitions.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
pub mod portable {
    use super::{tap, HALF, POOLED};
    use crate::ops::dsp::portable::smlabt;
    #[cfg(feature = "dense-kernels")]
    use crate::ops::dsp::portable::{smlad, sxtb16, sxtb16_ror8};

    /// `acc[q] += Σ w[t] · pixel q's value of tap t` over the `n` full blocks of four taps:
    /// `cols` holds per block, per pixel q, the words `(v0, v2), (v1, v3)`.
    #[cfg(feature = "dense-kernels")]
    pub fn dense_blocks(w: &[i8], cols: &[u32], n: usize, mut acc: [i32; 4]) -> [i32; 4] {
        for (q4, x) in w.chunks_exact(4).zip(cols.chunks_exact(8)).take(n) {
            let word = u32::from_le_bytes([q4[0] as u8, q4[1] as u8, q4[2] as u8, q4[3] as u8]);
            let (w02, w13) = (sxtb16(word), sxtb16_ror8(word));
            for (q, a) in acc.iter_mut().enumerate() {
                *a = smlad(w13, x[2 * q + 1], smlad(w02, x[2 * q], *a));
            }
        }
        acc
    }

    /// A CSR row's non-zero entries as [`tap`]s into `scratch` (the column's entry of
    /// `offsets`, a window byte offset, and the weight); how many.
    pub fn decode_csr(deltas: &[u8], values: &[i8], offsets: &[u16], scratch: &mut [u32]) -> usize {
        let (mut col, mut n) = (0usize, 0usize);
        for (&d, &wt) in deltas.iter().zip(values) {
            col += usize::from(d);
            // A zero weight adds nothing, and its tap could read as the list's end.
            if wt == 0 {
                continue;
            }
            if let (Some(&off), Some(slot)) = (offsets.get(col), scratch.get_mut(n)) {
                *slot = tap(off, wt);
                n += 1;
            }
        }
        n
    }

    /// A dense row's non-zero weights as [`tap`]s into `scratch`, with their window byte
    /// offsets from `offsets`; how many.
    pub fn decode_dense(row: &[i8], offsets: &[u16], scratch: &mut [u32]) -> usize {
        let mut n = 0;
        for (&wt, &off) in row.iter().zip(offsets) {
            if let (false, Some(slot)) = (wt == 0, scratch.get_mut(n)) {
                *slot = tap(off, wt);
                n += 1;
            }
        }
        n
    }

    /// `acc[j] += weight · window[offset/2 + j]` for every tap of `taps` before the first 0.
    pub fn sparse_half(taps: &[u32], window: &[i16], mut acc: [i32; HALF]) -> [i32; HALF] {
        for &t in taps.iter().take_while(|&&t| t != 0) {
            let at = (t & 0xffff) as usize / 2;
            let Some(row) = window.get(at..at + HALF) else {
                continue;
            };
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = smlabt(u32::from(v as u16), t, *a);
            }
        }
        acc
    }

    /// The 2x2 max-pooled sums (no bias) of a [`CHUNK`](crate::ops::conv::CHUNK)-wide chunk:
    /// every tap on the conv row whose chunk starts at window index `top`, and on the one `slot` values below it,
    /// each in two [`sparse_half`] passes, then the maxima of the four sums of each pooled
    /// column (`HALF` is odd: the pair across the halves is the first half's last sum and the
    /// second's first).
    pub fn pooled_chunk(taps: &[u32], window: &[i16], top: usize, slot: usize) -> [i32; POOLED] {
        let row = |base: usize| {
            let [a, b] = [base, base + HALF]
                .map(|from| sparse_half(taps, window.get(from..).unwrap_or(&[]), [0; HALF]));
            [
                a[0].max(a[1]),
                a[2].max(a[3]),
                a[4].max(a[5]),
                a[6].max(b[0]),
                b[1].max(b[2]),
                b[3].max(b[4]),
                b[5].max(b[6]),
            ]
        };
        let (upper, lower) = (row(top), row(top + slot));
        core::array::from_fn(|k| upper[k].max(lower[k]))
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm {
    use super::{HALF, POOLED};
    use core::arch::asm;

    /// [`super::portable::dense_blocks`] in assembly.
    #[cfg(feature = "dense-kernels")]
    ///
    /// # Safety
    /// `w` holds at least `4n` bytes and `cols` at least `8n` words, `n ≥ 1`.
    #[inline(always)]
    pub unsafe fn dense_blocks(w: &[i8], cols: &[u32], n: usize, acc: [i32; 4]) -> [i32; 4] {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: the loop reads 4n bytes from `w` (unaligned `ldr`, allowed on ARMv7-M) and 8n
        // words from `cols` (word-aligned `ldrd`), both in bounds by the caller's contract; it
        // writes registers only.
        unsafe {
            asm!(
                "2:",
                "ldr {w}, [{pw}], #4",
                "sxtb16 {w13}, {w}, ror #8",
                "sxtb16 {w}, {w}",
                "ldrd {x0}, {x1}, [{pc}], #8",
                "smlad {a0}, {w}, {x0}, {a0}",
                "smlad {a0}, {w13}, {x1}, {a0}",
                "ldrd {x0}, {x1}, [{pc}], #8",
                "smlad {a1}, {w}, {x0}, {a1}",
                "smlad {a1}, {w13}, {x1}, {a1}",
                "ldrd {x0}, {x1}, [{pc}], #8",
                "smlad {a2}, {w}, {x0}, {a2}",
                "smlad {a2}, {w13}, {x1}, {a2}",
                "ldrd {x0}, {x1}, [{pc}], #8",
                "smlad {a3}, {w}, {x0}, {a3}",
                "smlad {a3}, {w13}, {x1}, {a3}",
                "cmp {pw}, {end}",
                "bne 2b",
                pw = inout(reg) w.as_ptr() => _,
                end = in(reg) w.as_ptr().wrapping_add(4 * n),
                pc = inout(reg) cols.as_ptr() => _,
                w = out(reg) _,
                w13 = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                options(nostack, readonly),
            );
        }
        [a0, a1, a2, a3]
    }

    /// The decoders' common step: window byte offset `{d}` and weight `r3` (a low register,
    /// for `CBZ`) as a tap (offset low, weight high) stored at `{out}`, which advances, unless
    /// the weight is 0.
    macro_rules! store_tap {
        () => {
            concat!(
                "cbz r3, 3f\n",
                "pkhbt {d}, {d}, r3, lsl #16\n",
                "str {d}, [{out}], #4\n",
                "3:\n",
            )
        };
    }

    /// [`super::portable::decode_csr`] in assembly: nine instructions per entry.
    ///
    /// # Safety
    /// `deltas` and `values` are equally long and not empty, every running sum of `deltas` is
    /// an index of `offsets`, and `scratch` holds at least `deltas.len()` words.
    #[inline(always)]
    pub unsafe fn decode_csr(
        deltas: &[u8],
        values: &[i8],
        offsets: &[u16],
        scratch: &mut [u32],
    ) -> usize {
        let start = scratch.as_mut_ptr();
        let mut end = start;
        // SAFETY: reads each of the `deltas.len()` deltas and values once, and `offsets` at
        // each running sum, in bounds by the caller's contract; writes at most one word per
        // entry from `scratch`'s start, which holds that many.
        unsafe {
            asm!(
                "2:",
                "ldrb {d}, [{pd}], #1",
                "ldrsb r3, [{pv}], #1",
                "add {col}, {col}, {d}",
                "ldrh {d}, [{offs}, {col}, lsl #1]",
                store_tap!(),
                "cmp {pd}, {stop}",
                "bne 2b",
                pd = inout(reg) deltas.as_ptr() => _,
                pv = inout(reg) values.as_ptr() => _,
                stop = in(reg) deltas.as_ptr().wrapping_add(deltas.len()),
                offs = in(reg) offsets.as_ptr(),
                out = inout(reg) end,
                col = inout(reg) 0usize => _,
                d = out(reg) _,
                out("r3") _,
                options(nostack),
            );
        }
        (end as usize - start as usize) / 4
    }

    /// [`super::portable::decode_dense`] in assembly: seven instructions per weight.
    ///
    /// # Safety
    /// `row` is not empty, and `offsets` and `scratch` are at least as long.
    #[inline(always)]
    pub unsafe fn decode_dense(row: &[i8], offsets: &[u16], scratch: &mut [u32]) -> usize {
        let start = scratch.as_mut_ptr();
        let mut end = start;
        // SAFETY: reads each weight of `row` and the offset beside it once, and writes at most
        // one word per weight from `scratch`'s start, all in bounds by the caller's contract.
        unsafe {
            asm!(
                "2:",
                "ldrsb r3, [{pw}], #1",
                "ldrh {d}, [{offs}], #2",
                store_tap!(),
                "cmp {pw}, {stop}",
                "bne 2b",
                pw = inout(reg) row.as_ptr() => _,
                stop = in(reg) row.as_ptr().wrapping_add(row.len()),
                offs = inout(reg) offsets.as_ptr() => _,
                out = inout(reg) end,
                d = out(reg) _,
                out("r3") _,
                options(nostack),
            );
        }
        (end as usize - start as usize) / 4
    }

    /// What [`pooled_chunk`]'s assembly reads and writes, addressed from one register (all
    /// others hold sums and loop state, so the pass's return address waits here too).
    #[repr(C)]
    struct Frame {
        taps: *const u32,
        /// The four passes' first window values: top row, its second half, bottom row, its
        /// second half.
        bases: [*const i16; 4],
        out: [i32; POOLED],
        back: u32,
    }

    /// Runs the pass (label 5) from base `$k` of the frame, returning to the next line.
    macro_rules! call_pass {
        ($k:literal) => {
            concat!(
                "ldr {base}, [{f}, #(4 + 4 * ",
                $k,
                ")]\n",
                "adr.w {x}, 1f\n",
                "str {x}, [{f}, #48]\n",
                "b.w 5f\n",
                ".balign 4\n",
                "1:\n",
            )
        };
    }

    /// One tap's seven multiply-accumulates at `{base}`, then the next tap: the address, four
    /// loads, seven `SMLAxT` and the next tap's load.
    macro_rules! tap_step {
        () => {
            concat!(
                "uxtah {x}, {base}, {t}\n",
                "ldr {y}, [{x}, #4]\n",
                "smlabt {a2}, {y}, {t}, {a2}\n",
                "smlatt {a3}, {y}, {t}, {a3}\n",
                "ldr {y}, [{x}, #8]\n",
                "smlabt {a4}, {y}, {t}, {a4}\n",
                "smlatt {a5}, {y}, {t}, {a5}\n",
                "ldrh {y}, [{x}, #12]\n",
                "smlabt {a6}, {y}, {t}, {a6}\n",
                "ldr {y}, [{x}]\n",
                "smlabt {a0}, {y}, {t}, {a0}\n",
                "smlatt {a1}, {y}, {t}, {a1}\n",
                "ldr {t}, [{p}], #4\n",
            )
        };
    }

    /// The pass, a subroutine at label 5 ([`call_pass`]; it returns to the address in the
    /// frame, `MOV PC` ignoring the Thumb bit): seven sums from 0 over the taps at `{base}`,
    /// two taps per turn (the list's length is even but for its end, so the end is only tested
    /// every second tap).
    macro_rules! pass {
        () => {
            concat!(
                "5:\n",
                "ldr {p}, [{f}]\n",
                "mov {a0}, #0\n",
                "mov {a1}, {a0}\n",
                "mov {a2}, {a0}\n",
                "mov {a3}, {a0}\n",
                "mov {a4}, {a0}\n",
                "mov {a5}, {a0}\n",
                "mov {a6}, {a0}\n",
                "ldr {t}, [{p}], #4\n",
                "cmp {t}, #0\n",
                "beq 7f\n",
                "6:\n",
                tap_step!(),
                tap_step!(),
                "cmp {t}, #0\n",
                "bne 6b\n",
                "7:\n",
                "ldr {x}, [{f}, #48]\n",
                "mov pc, {x}\n",
            )
        };
    }

    /// `$a = max($a, $b)`, signed.
    macro_rules! max_into {
        ($a:literal, $b:literal) => {
            concat!("cmp ", $a, ", ", $b, "\nit lt\nmovlt ", $a, ", ", $b, "\n")
        };
    }

    /// Three adjacent pairs of sums pooled into their first registers: a first half's
    /// (a0,a1), (a2,a3), (a4,a5), whose a6 waits for the second half's a0; a second half's
    /// (a1,a2), (a3,a4), (a5,a6).
    macro_rules! pairs {
        ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $f:literal) => {
            concat!(max_into!($a, $b), max_into!($c, $d), max_into!($e, $f))
        };
    }

    /// Output word `$i` of the frame becomes the max of itself and `$r`.
    macro_rules! max_out {
        ($r:literal, $i:literal) => {
            concat!(
                "ldr {y}, [{f}, #(20 + 4 * ",
                $i,
                ")]\n",
                max_into!("{y}", $r),
                "str {y}, [{f}, #(20 + 4 * ",
                $i,
                ")]\n",
            )
        };
    }

    /// [`super::portable::pooled_chunk`] in assembly: four passes, each's sums max-pooled in
    /// pairs as it ends, the bottom row's into the top row's in the frame.
    ///
    /// # Safety
    /// `taps` ends with two 0 entries, and for every entry before them and for offset 0, the
    /// `HALF` values at that byte offset from each of the four passes' bases (`top`,
    /// `top + HALF`, `top + slot`, `top + slot + HALF`) are inside `window`.
    #[inline(always)]
    pub unsafe fn pooled_chunk(
        taps: &[u32],
        window: &[i16],
        top: usize,
        slot: usize,
    ) -> [i32; POOLED] {
        let w = window.as_ptr();
        let mut frame = Frame {
            taps: taps.as_ptr(),
            bases: [top, top + HALF, top + slot, top + slot + HALF].map(|b| w.wrapping_add(b)),
            out: [0; POOLED],
            back: 0,
        };
        // SAFETY: a pass reads taps two at a time and stops at the first 0 it finds at an even
        // index: one of the last two entries, both 0, is at one, so it reads no further than
        // the list's end; per tap read (the 0 pad included) and pass, 7 halfwords from the
        // window at the tap's offset from the pass's base (unaligned word loads are allowed
        // on ARMv7-M), in bounds by the caller's contract. It reads and writes `frame` only,
        // at the offsets of its `repr(C)` fields (u32 pointers on this target), and jumps
        // only within itself.
        unsafe {
            asm!(
                call_pass!("0"),
                pairs!("{a0}", "{a1}", "{a2}", "{a3}", "{a4}", "{a5}"),
                "str {a0}, [{f}, #20]",
                "str {a2}, [{f}, #24]",
                "str {a4}, [{f}, #28]",
                "str {a6}, [{f}, #32]",
                call_pass!("1"),
                max_out!("{a0}", "3"),
                pairs!("{a1}", "{a2}", "{a3}", "{a4}", "{a5}", "{a6}"),
                "str {a1}, [{f}, #36]",
                "str {a3}, [{f}, #40]",
                "str {a5}, [{f}, #44]",
                call_pass!("2"),
                pairs!("{a0}", "{a1}", "{a2}", "{a3}", "{a4}", "{a5}"),
                max_out!("{a0}", "0"),
                max_out!("{a2}", "1"),
                max_out!("{a4}", "2"),
                max_out!("{a6}", "3"),
                call_pass!("3"),
                max_out!("{a0}", "3"),
                pairs!("{a1}", "{a2}", "{a3}", "{a4}", "{a5}", "{a6}"),
                max_out!("{a1}", "4"),
                max_out!("{a3}", "5"),
                max_out!("{a5}", "6"),
                "b 9f",
                pass!(),
                "9:",
                f = in(reg) &raw mut frame,
                p = out(reg) _,
                base = out(reg) _,
                t = out(reg) _,
                x = out(reg) _,
                y = out(reg) _,
                a0 = out(reg) _,
                a1 = out(reg) _,
                a2 = out(reg) _,
                a3 = out(reg) _,
                a4 = out(reg) _,
                a5 = out(reg) _,
                a6 = out(reg) _,
                options(nostack),
            );
        }
        frame.out
    }
}

/// One channel against four pixels over `n ≥ 1` full blocks (assembly on the Cortex-M4F).
#[cfg(feature = "dense-kernels")]
#[inline(always)]
pub fn dense_blocks(w: &[i8], cols: &[u32], n: usize, acc: [i32; 4]) -> [i32; 4] {
    let n = n.min(w.len() / 4).min(cols.len() / 8);
    if n == 0 {
        return acc;
    }
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: n ≥ 1 and both slices hold n blocks (checked just above).
    let acc = unsafe { arm::dense_blocks(w, cols, n, acc) };
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    let acc = portable::dense_blocks(w, cols, n, acc);
    acc
}

/// A CSR row's non-zero entries as taps into `scratch`; how many (assembly on the Cortex-M4F).
///
/// # Safety
/// Every running sum of `deltas` (over the entries both slices have) is an index of `offsets`,
/// and `scratch` holds at least `deltas.len()` words.
#[inline(never)]
pub unsafe fn decode_csr(
    deltas: &[u8],
    values: &[i8],
    offsets: &[u16],
    scratch: &mut [u32],
) -> usize {
    let len = deltas.len().min(values.len());
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if let (Some(deltas), Some(values), true) = (deltas.get(..len), values.get(..len), len > 0) {
        // SAFETY: equal, non-zero lengths (just checked); the rest is our caller's contract.
        return unsafe { arm::decode_csr(deltas, values, offsets, scratch) };
    }
    portable::decode_csr(deltas.get(..len).unwrap_or(&[]), values, offsets, scratch)
}

/// A dense row's non-zero weights as taps into `scratch`; how many (assembly on the
/// Cortex-M4F). Weights beyond `offsets` or `scratch` are left out.
#[inline(never)]
pub fn decode_dense(row: &[i8], offsets: &[u16], scratch: &mut [u32]) -> usize {
    let len = row.len().min(offsets.len()).min(scratch.len());
    let row = row.get(..len).unwrap_or(&[]);
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if len > 0 {
        // SAFETY: `row` is not empty and `offsets` and `scratch` are at least as long.
        return unsafe { arm::decode_dense(row, offsets, scratch) };
    }
    portable::decode_dense(row, offsets, scratch)
}

/// The 2x2 max-pooled sums of a chunk (assembly on the Cortex-M4F): see
/// [`portable::pooled_chunk`].
///
/// `taps`: non-zero taps, then two 0s (what the decoders and `conv_i8` make); the assembly
/// takes a 0 before the end for a tap that adds nothing, the portable loop for the end.
///
/// # Safety
/// For every tap before the two 0s and for offset 0, the [`HALF`] values at that offset from
/// each of `top`, `top + HALF`, `top + slot` and `top + slot + HALF` are inside `window` (the
/// caller checks it when decoding: `conv_i8`).
#[inline(never)]
pub unsafe fn pooled_chunk(taps: &[u32], window: &[i16], top: usize, slot: usize) -> [i32; POOLED] {
    if !matches!(taps, [.., 0, 0]) {
        return [0; POOLED];
    }
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: `taps` ends with two 0s (checked); the reads are in bounds by our caller's
    // contract.
    let out = unsafe { arm::pooled_chunk(taps, window, top, slot) };
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    let out = portable::pooled_chunk(taps, window, top, slot);
    out
}
