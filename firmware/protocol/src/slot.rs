//! Flash slots: how a model file or a batch of test images sits in a reserved flash region.
//!
//! A slot is a 16-byte header — magic `L1SPSLOT`, the payload length (u32 LE) and the payload's
//! kind (u32 LE: 1 = model, 2 = image batch) — followed by the payload, which thus starts 16-byte
//! aligned when the region is. Erased flash (all 0xFF) or zeroed memory reads as "no model".

use crate::Error;

pub const SLOT_MAGIC: [u8; 8] = *b"L1SPSLOT";
pub const SLOT_HEADER_LEN: usize = 16;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SlotKind {
    Model = 1,
    Batch = 2,
}

/// The payload of a slot of `kind` found at the start of `region`.
pub fn read_slot(region: &[u8], kind: SlotKind) -> Result<&[u8], Error> {
    let header = region
        .get(..SLOT_HEADER_LEN)
        .ok_or(Error::TooShort { len: region.len() })?;
    if header.iter().all(|&b| b == 0xFF) || header.iter().all(|&b| b == 0) {
        return Err(Error::Erased);
    }
    if header[..8] != SLOT_MAGIC {
        return Err(Error::BadSlot);
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if word(12) != kind as u32 {
        return Err(Error::BadSlot);
    }
    let len = word(8) as usize;
    let capacity = region.len() - SLOT_HEADER_LEN;
    region
        .get(SLOT_HEADER_LEN..)
        .and_then(|rest| rest.get(..len))
        .ok_or(Error::SlotOverflow { len, capacity })
}

/// A slot image for `payload`, to be written at the start of a region.
#[cfg(any(test, feature = "std"))]
pub fn slot_image(payload: &[u8], kind: SlotKind) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_HEADER_LEN + payload.len());
    out.extend_from_slice(&SLOT_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_a_payload_and_reject_others() {
        let payload: Vec<u8> = (0..200u8).collect();
        let mut region = slot_image(&payload, SlotKind::Model);
        region.resize(region.len() + 100, 0xFF);
        assert_eq!(read_slot(&region, SlotKind::Model), Ok(&payload[..]));
        assert_eq!(read_slot(&region, SlotKind::Batch), Err(Error::BadSlot));
        assert_eq!(read_slot(&[0xFF; 64], SlotKind::Model), Err(Error::Erased));
        assert_eq!(read_slot(&[0; 64], SlotKind::Model), Err(Error::Erased));
        assert_eq!(
            read_slot(&region[..10], SlotKind::Model),
            Err(Error::TooShort { len: 10 })
        );
        let mut bad = region.clone();
        bad[0] = b'X';
        assert_eq!(read_slot(&bad, SlotKind::Model), Err(Error::BadSlot));
        let short = &region[..payload.len()];
        assert_eq!(
            read_slot(short, SlotKind::Model),
            Err(Error::SlotOverflow {
                len: payload.len(),
                capacity: payload.len() - 16
            })
        );
    }
}
