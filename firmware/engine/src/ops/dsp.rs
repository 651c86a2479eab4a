//! The Cortex-M4's DSP multiply-accumulates on packed 16-bit halves, one instruction each on
//! the MCU ([`arm`]), and the same integer arithmetic in plain Rust elsewhere ([`portable`]).
//!
//! Every kernel that uses them keeps its sums within `i32` (the reader bounds each row's
//! accumulator), so the hardware's wrapping and the portable code's agree exactly: results are
//! the same bits on host and MCU, whatever instruction the compiler picks.

/// Two halves `(lo, hi)` packed in a word, as the DSP instructions read them.
#[inline(always)]
pub fn pack(lo: i16, hi: i16) -> u32 {
    u32::from(lo as u16) | (u32::from(hi as u16) << 16)
}

#[inline(always)]
fn lo(x: u32) -> i32 {
    i32::from(x as u16 as i16)
}

#[inline(always)]
fn hi(x: u32) -> i32 {
    i32::from((x >> 16) as u16 as i16)
}

/// Portable definitions: what each instruction computes.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
pub mod portable {
    use super::{hi, lo};

    /// `acc + a.lo·b.lo + a.hi·b.hi`
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * lo(b)).wrapping_add(hi(a) * hi(b))
    }

    /// `acc + a.lo·b.hi + a.hi·b.lo`
    #[inline(always)]
    pub fn smladx(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * hi(b)).wrapping_add(hi(a) * lo(b))
    }

    /// `acc + a.lo·b.lo`
    #[inline(always)]
    pub fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * lo(b))
    }

    /// `acc + a.lo·b.hi`
    #[inline(always)]
    pub fn smlabt(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * hi(b))
    }

    /// Bytes 0 and 2 of `x`, sign-extended to the two halves.
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        super::pack(x as u8 as i8 as i16, (x >> 16) as u8 as i8 as i16)
    }

    /// Bytes 1 and 3 of `x`, sign-extended to the two halves (`sxtb16 d, x, ror #8`).
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }

    /// `(b.lo, a.hi)`: the bottom half of `b` under the top half of `a` (`pkhbt d, b, a`).
    #[inline(always)]
    pub fn pkhbt(b: u32, a: u32) -> u32 {
        (b & 0xffff) | (a & 0xffff_0000)
    }
}

/// The same, one instruction each.
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
#[allow(unsafe_code)]
pub mod arm {
    use core::arch::asm;

    macro_rules! mla {
        ($name:ident, $insn:literal) => {
            #[inline(always)]
            pub fn $name(a: u32, b: u32, acc: i32) -> i32 {
                let out: i32;
                // SAFETY: one register-only DSP instruction (ARMv7E-M: every hard-float Cortex-M4/M7):
                // no memory, no stack, no flags the compiler relies on (it may set Q, which
                // nothing reads).
                unsafe {
                    asm!(
                        concat!($insn, " {out}, {a}, {b}, {acc}"),
                        out = lateout(reg) out,
                        a = in(reg) a,
                        b = in(reg) b,
                        acc = in(reg) acc,
                        options(pure, nomem, nostack, preserves_flags),
                    );
                }
                out
            }
        };
    }

    mla!(smlad, "smlad");
    mla!(smladx, "smladx");
    mla!(smlabb, "smlabb");
    mla!(smlabt, "smlabt");

    macro_rules! unary {
        ($name:ident, $insn:literal) => {
            #[inline(always)]
            pub fn $name(x: u32) -> u32 {
                let out: u32;
                // SAFETY: one register-only instruction, as above.
                unsafe {
                    asm!(
                        $insn,
                        out = lateout(reg) out,
                        x = in(reg) x,
                        options(pure, nomem, nostack, preserves_flags),
                    );
                }
                out
            }
        };
    }

    unary!(sxtb16, "sxtb16 {out}, {x}");
    unary!(sxtb16_ror8, "sxtb16 {out}, {x}, ror #8");

    #[inline(always)]
    pub fn pkhbt(b: u32, a: u32) -> u32 {
        let out: u32;
        // SAFETY: one register-only instruction, as above.
        unsafe {
            asm!(
                "pkhbt {out}, {b}, {a}",
                out = lateout(reg) out,
                b = in(reg) b,
                a = in(reg) a,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
pub use arm::{pkhbt, smlabb, smlabt, smlad, smladx, sxtb16, sxtb16_ror8};
#[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
pub use portable::{pkhbt, smlabb, smlabt, smlad, smladx, sxtb16, sxtb16_ror8};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions() {
        let a = pack(-3, 7);
        let b = pack(100, -200);
        assert_eq!(smlad(a, b, 5), 5 - 300 - 1400);
        assert_eq!(smladx(a, b, 5), 5 + 600 + 700);
        assert_eq!(smlabb(a, b, 5), 5 - 300);
        assert_eq!(smlabt(a, b, 5), 5 + 600);
        assert_eq!(pkhbt(b, a), pack(100, 7));
        let w = u32::from_le_bytes([0x81, 0x7f, 0x05, 0xfb]);
        assert_eq!(sxtb16(w), pack(-127, 5));
        assert_eq!(sxtb16_ror8(w), pack(127, -5));
    }
}
