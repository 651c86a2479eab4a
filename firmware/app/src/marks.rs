//! The marker table of the cycle estimate (see `protocol::marker`): under QEMU, `mark(m)`
//! executes entry `m` of `l1sparse_marks`, a table of `bx lr` instructions, so xtask's QEMU plugin
//! knows what the instructions that follow belong to. On real boards it does nothing: the DWT
//! cycle counter measures them instead.

use protocol::marker::Marker;
#[cfg(feature = "qemu")]
use protocol::marker::COUNT;

const _: () = assert!(protocol::marker::LAYERS as usize == model_format::network::MAX_LAYERS);

#[cfg(feature = "qemu")]
core::arch::global_asm!(
    ".section .text.l1sparse_mark,\"ax\",%progbits",
    ".global l1sparse_mark",
    ".thumb_func",
    ".p2align 1",
    "l1sparse_mark:",
    // Entry r0 of the table: PC reads 4 bytes past the `add`, so the table starts 6 bytes in.
    "lsls r0, r0, #1",
    "add pc, r0",
    "nop",
    ".global l1sparse_marks",
    "l1sparse_marks:",
    ".rept {count}",
    "bx lr",
    ".endr",
    count = const COUNT,
);

#[cfg(feature = "qemu")]
extern "C" {
    fn l1sparse_mark(index: u32);
}

/// Executes marker `m`'s table entry (under QEMU).
#[inline(always)]
pub fn mark(m: Marker) {
    let index = m.index();
    #[cfg(feature = "qemu")]
    if index < COUNT {
        // SAFETY: `l1sparse_mark` jumps to entry `index` of a table of `COUNT` `bx lr`
        // instructions, and `index < COUNT` was just checked; it only clobbers r0 and the
        // flags, which the C ABI lets a callee clobber, and touches no memory.
        unsafe { l1sparse_mark(index) }
    }
    let _ = index;
}
