//! Stack high-water mark by painting: fill the free RAM below the stack with a pattern at boot,
//! and later find the lowest word the stack has overwritten.

const PAINT: u32 = 0xC5C5_C5C5;
/// Left untouched below the current stack pointer while painting (the painter's own frame).
const MARGIN: usize = 256;

/// Paints from the end of static data up to just below the current stack pointer.
#[inline(never)]
pub fn paint(free_start: usize) {
    let sp = cortex_m::register::msp::read() as usize;
    let mut addr = (free_start + 3) & !3;
    while addr + 4 <= sp.saturating_sub(MARGIN) {
        // SAFETY: [free_start, sp − MARGIN) is RAM that no static, heap (there is none) or live
        // stack frame occupies: statics end at `free_start` and the stack grows down from above
        // `sp`. The address is 4-aligned.
        unsafe { core::ptr::write_volatile(addr as *mut u32, PAINT) };
        addr += 4;
    }
}

/// Bytes of stack used so far: from the top of the stack down to the lowest overwritten word.
pub fn high_water(free_start: usize, stack_top: usize) -> usize {
    let mut addr = (free_start + 3) & !3;
    while addr < stack_top {
        // SAFETY: the address lies in RAM between static data and the stack top, 4-aligned.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != PAINT {
            break;
        }
        addr += 4;
    }
    stack_top - addr
}
