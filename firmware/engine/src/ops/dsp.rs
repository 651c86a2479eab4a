//! The Cortex-M4's DSP multiply-accumulates on packed 16-bit halves, one instruction each on
//! the MCU ([`arm`]), and the same integer arithmetic in plain Rust elsewhere ([`portable`]).
//! (`SMLABT`/`SMLATT` appear only inside the sparse assembly loop; `portable::smlabt` defines
//! them for its portable twin.)
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
}

/// The same, one instruction each.
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
#[allow(unsafe_code)]
pub mod arm {
    use core::arch::asm;

    /// `acc + a.lo·b.lo + a.hi·b.hi`
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: one register-only DSP instruction (ARMv7E-M: every hard-float Cortex-M4/M7):
        // no memory, no stack, no flags the compiler relies on (it may set Q, which nothing
        // reads).
        unsafe {
            asm!(
                "smlad {out}, {a}, {b}, {acc}",
                out = lateout(reg) out,
                a = in(reg) a,
                b = in(reg) b,
                acc = in(reg) acc,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }

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
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
pub use arm::{smlad, sxtb16, sxtb16_ror8};
#[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
pub use portable::{smlad, sxtb16, sxtb16_ror8};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions() {
        let a = pack(-3, 7);
        let b = pack(100, -200);
        assert_eq!(smlad(a, b, 5), 5 - 300 - 1400);
        assert_eq!(portable::smlabt(a, b, 5), 5 + 600);
        let w = u32::from_le_bytes([0x81, 0x7f, 0x05, 0xfb]);
        assert_eq!(sxtb16(w), pack(-127, 5));
        assert_eq!(sxtb16_ror8(w), pack(127, -5));
    }
}
