//! CRC-32 (IEEE 802.3, zlib's `crc32`: reflected polynomial 0xEDB88320, initial and final value
//! all ones), four bits at a time with a 16-entry table. The `crc` crate's byte table is 1 KiB of
//! flash, a quarter of what the firmware may spend beside its code, and its table-free variant
//! is larger code; this costs about twelve instructions per byte, once per model at boot. Tested
//! equal to the `crc` crate's CRC-32/ISO-HDLC.

/// The CRC of each nibble value, shifted through four rounds of the reflected polynomial.
const NIBBLES: [u32; 16] = {
    let mut table = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut round = 0;
        while round < 4 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            round += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// A running CRC-32: [`Crc32::update`] with each piece of the message in order, then
/// [`Crc32::finish`].
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Crc32 {
    pub const fn new() -> Self {
        Crc32(u32::MAX)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c ^= u32::from(b);
            c = (c >> 4) ^ NIBBLES[(c & 15) as usize];
            c = (c >> 4) ^ NIBBLES[(c & 15) as usize];
        }
        self.0 = c;
    }

    pub const fn finish(self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// The CRC-32 of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}
