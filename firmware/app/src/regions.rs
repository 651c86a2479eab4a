//! The flash regions the linker reserves for the model and the test images, and RAM bounds.
//! An image built with `L1SPARSE_EMBED_MODEL` (and `L1SPARSE_EMBED_INPUTS`) carries its own
//! slot images instead (see build.rs and `cargo xtask firmware --embed`): one file to flash,
//! validated at boot exactly like a slot written to the region.

extern "C" {
    static _model_start: u8;
    static _model_len: u8;
    static _inputs_start: u8;
    static _inputs_len: u8;
    static _ram_start: u8;
    static __sheap: u8;
    static _stack_start: u8;
}

#[cfg_attr(all(embedded_model, embedded_inputs), allow(dead_code))]
fn region(start: &'static u8, len_symbol: &'static u8) -> &'static [u8] {
    let len = core::ptr::addr_of!(*len_symbol) as usize;
    // SAFETY: the linker script reserves `len` bytes at `start` (firmware/boards/<board>/memory.x) for this
    // region alone; no code or data is placed there and nothing writes it while the firmware
    // runs, so it is valid, immutable memory for the program's whole life.
    unsafe { core::slice::from_raw_parts(start as *const u8, len) }
}

/// A slot image embedded in the firmware, aligned as the flash regions are (16 bytes), so the
/// model's tensors are as aligned as when flashed to its region.
#[cfg(any(embedded_model, embedded_inputs))]
#[repr(C, align(16))]
struct Aligned<Bytes: ?Sized> {
    bytes: Bytes,
}

#[cfg(embedded_model)]
static MODEL: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/model.slot")),
};

#[cfg(embedded_inputs)]
static INPUTS: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/inputs.slot")),
};

/// The model's slot: the embedded one, or the model region (see `protocol::slot`).
pub fn model() -> &'static [u8] {
    #[cfg(embedded_model)]
    return &MODEL.bytes;
    #[cfg(not(embedded_model))]
    // SAFETY: taking the address of a linker symbol does not read it.
    unsafe {
        region(&_model_start, &_model_len)
    }
}

/// The test images' slot: the embedded one, or the inputs region.
pub fn inputs() -> &'static [u8] {
    #[cfg(embedded_inputs)]
    return &INPUTS.bytes;
    #[cfg(not(embedded_inputs))]
    // SAFETY: as above.
    unsafe {
        region(&_inputs_start, &_inputs_len)
    }
}

/// RAM addresses: start, end of static data (start of the free area), top of the stack.
pub fn ram_layout() -> (usize, usize, usize) {
    (
        core::ptr::addr_of!(_ram_start) as usize,
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}
