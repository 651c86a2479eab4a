//! The panic handler: says where, and ends the program like any other failure. Not
//! panic-probe's `print-defmt`, which formats the message with `core::fmt` (about 2 KB of code
//! for a path validated input never takes).

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => defmt::error!("panic at {=str}:{=u32}", at.file(), at.line()),
        None => defmt::error!("panic"),
    }
    crate::finish(false)
}
