//! The flash regions the linker reserves for the model and the test images, and RAM bounds.

extern "C" {
    static _model_start: u8;
    static _model_len: u8;
    static _inputs_start: u8;
    static _inputs_len: u8;
    static _ram_start: u8;
    static __sheap: u8;
    static _stack_start: u8;
}

fn region(start: &'static u8, len_symbol: &'static u8) -> &'static [u8] {
    let len = core::ptr::addr_of!(*len_symbol) as usize;
    // SAFETY: the linker script reserves `len` bytes at `start` (firmware/boards/<board>/memory.x) for this
    // region alone; no code or data is placed there and nothing writes it while the firmware
    // runs, so it is valid, immutable memory for the program's whole life.
    unsafe { core::slice::from_raw_parts(start as *const u8, len) }
}

/// The model region (a flash slot, see `model_format::slot`).
pub fn model() -> &'static [u8] {
    // SAFETY: taking the address of a linker symbol does not read it.
    unsafe { region(&_model_start, &_model_len) }
}

/// The test-image region (a flash slot holding a batch).
pub fn inputs() -> &'static [u8] {
    // SAFETY: as above.
    unsafe { region(&_inputs_start, &_inputs_len) }
}

/// RAM addresses: start, end of static data (start of the free area), top of the stack.
pub fn ram_layout() -> (usize, usize, usize) {
    (
        core::ptr::addr_of!(_ram_start) as usize,
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}
