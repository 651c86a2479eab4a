//! What passes between the host and the firmware, as types both sides share:
//!
//! - [`slot`]: how a model file or a batch of test images sits in a reserved flash region;
//! - [`batch`]: the labelled test images the firmware runs;
//! - [`marker`]: the numbering of the markers the firmware executes for the cycle estimate;
//! - [`record`]: what the firmware reports (model check, per-image logits, per-layer cost, RAM).
//!   The app fills [`Record`]s and sends each one, postcard-encoded, as the bytes of a defmt
//!   message that starts with [`TAG`]; the host decodes the message's bytes back into the same
//!   type. Nothing is parsed from prose, so a field the app adds is a field the host reads,
//!   checked by the compiler on both sides.
//!
//! `no_std` and heap-free (the host's encoders behind feature `std`). The model file itself is
//! `model-format`'s: this crate is the packaging around it.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod batch;
mod error;
pub mod marker;
pub mod record;
pub mod slot;

pub use error::Error;
#[cfg(any(test, feature = "std"))]
pub use record::from_message;
pub use record::{CostUnit, Precision, Record, MAX_CLASSES, MAX_NAME_LEN, MAX_RECORD, TAG};
