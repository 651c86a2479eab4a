//! The firmware's report as typed records: postcard bytes in a defmt message tagged [`TAG`].

use serde::{Deserialize, Serialize};

/// Logits a record carries at most.
pub const MAX_CLASSES: usize = 16;
/// Longest layer name (the model format's limit).
pub const MAX_NAME_LEN: usize = 24;
/// Largest encoded record (postcard: varints, so far below the worst case).
pub const MAX_RECORD: usize = 160;
/// What a record's defmt message starts with, before its bytes.
pub const TAG: &str = "l1sparse-record";

/// What the firmware's costs count.
/// A model's numbers: f32 throughout, or int8 weights with integer-only inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Precision {
    F32,
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CostUnit {
    /// Instructions (QEMU `-icount shift=0`, read through SysTick).
    Instructions,
    /// Core clock cycles (the DWT cycle counter on a board).
    Cycles,
}

/// One report record, in the order the firmware sends them: `Model`, then an `Image` per test
/// image, a `Layer` per layer, `Ram`, `Done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The model in flash passed validation.
    Model {
        bytes: u32,
        layers: u8,
        /// What its numbers are, and so what `Image::logit_bits` hold.
        precision: Precision,
        /// Cost of `Model::parse`.
        validation_cost: u64,
        unit: CostUnit,
        /// The core clock the costs were counted at (SysTick's under QEMU).
        core_hz: u32,
    },
    /// One test image: its label, the prediction, the cost and the logits exactly (f32 bit
    /// patterns, or an int8 model's `i32` logits as `u32`).
    Image {
        index: u16,
        label: u8,
        predicted: u8,
        cost: u64,
        logit_bits: heapless::Vec<u32, MAX_CLASSES>,
    },
    /// One layer's multiply-accumulates and cost for the last image.
    Layer {
        index: u8,
        name: heapless::String<MAX_NAME_LEN>,
        macs: u64,
        cost: u64,
    },
    /// RAM: statics, the engine's buffers (on the run's stack), the stack's high-water marks
    /// while validating at boot and while running, and the peak (statics + the larger stack).
    Ram {
        static_bytes: u32,
        activation_bytes: u32,
        boot_stack: u32,
        run_stack: u32,
        peak: u32,
    },
    /// The batch is done.
    Done {
        images: u16,
        correct: u16,
        /// The cost of all images together (the host divides: no 64-bit division on the MCU).
        total_cost: u64,
    },
}

impl Record {
    /// The record's bytes in `buf`; `None` if it does not fit (a record never exceeds
    /// [`MAX_RECORD`]).
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        postcard::to_slice(self, buf).ok().map(|b| &*b)
    }

    /// A record from its bytes.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The record carried by a decoded defmt message (`TAG` then a byte list as defmt displays
/// `{=[u8]:x}`: `[0x1, 0xab]`); `None` for any other message.
#[cfg(any(test, feature = "std"))]
pub fn from_message(message: &str) -> Option<Result<Record, String>> {
    let list = message.strip_prefix(TAG)?.trim();
    let inner = list.strip_prefix('[').and_then(|l| l.strip_suffix(']'));
    let bytes: Option<Vec<u8>> = inner.and_then(|inner| {
        inner
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .collect()
    });
    Some(
        bytes
            .and_then(|b| Record::decode(&b))
            .ok_or_else(|| format!("malformed report record: {message}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        let mut logits = heapless::Vec::new();
        for v in [0x3f80_0000u32, 0xbf00_0000, 0, u32::MAX] {
            logits.push(v).unwrap();
        }
        vec![
            Record::Model {
                bytes: 25_528,
                layers: 4,
                precision: Precision::Int8,
                validation_cost: 123_456,
                unit: CostUnit::Instructions,
                core_hz: 25_000_000,
            },
            Record::Image {
                index: 63,
                label: 7,
                predicted: 7,
                cost: 1_112_668,
                logit_bits: logits,
            },
            Record::Layer {
                index: 3,
                name: heapless::String::try_from("fc2").unwrap(),
                macs: u64::MAX,
                cost: 1,
            },
            Record::Ram {
                static_bytes: 8,
                activation_bytes: 11_866,
                boot_stack: 5_000,
                run_stack: u32::MAX,
                peak: 18_148,
            },
            Record::Done {
                images: 64,
                correct: 60,
                total_cost: 1_112_668,
            },
        ]
    }

    #[test]
    fn records_round_trip_through_bytes_and_the_defmt_display() {
        for r in records() {
            let mut buf = [0u8; MAX_RECORD];
            let bytes = r.encode(&mut buf).unwrap().to_vec();
            assert_eq!(Record::decode(&bytes), Some(r.clone()));
            // defmt shows `{=[u8]:x}` as `[0x1, 0xab]`.
            let shown: Vec<String> = bytes.iter().map(|b| format!("{b:#x}")).collect();
            let message = format!("{TAG} [{}]", shown.join(", "));
            assert_eq!(from_message(&message), Some(Ok(r)));
        }
    }

    #[test]
    fn other_messages_are_not_records_and_damaged_ones_are_errors() {
        assert_eq!(from_message("model ok"), None);
        assert!(matches!(
            from_message(&format!("{TAG} [0x9]")),
            Some(Err(_))
        ));
        assert!(matches!(from_message(&format!("{TAG} [zz]")), Some(Err(_))));
        assert!(matches!(from_message(&format!("{TAG} 0x1")), Some(Err(_))));
    }
}
