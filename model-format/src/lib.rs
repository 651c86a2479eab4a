//! The `l1sparse` model file: the contract between the trainer and the firmware.
//!
//! A model is a safetensors file whose weight matrices are stored either dense or as compressed
//! sparse rows with narrow integer indices, whichever is smaller, plus metadata describing the
//! network, each tensor's encoding, a CRC-32 of the data and the model's provenance. `SPEC.md`
//! beside this crate is the normative description.
//!
//! - [`Model::parse`] (always available, `no_std`, no allocator) validates a file held in memory
//!   or flash once, zero-copy, and returns typed views the kernels can trust.
//! - [`writer`] (feature `std`) builds files from dense tensors with exact zeros.
//! - [`Network`] is the network description every stage shares: [`RECIPE`] is the default one,
//!   as a constant; [`NetworkDef`] (feature `std`) is its owned form on the host.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!(
    "model-format reads little-endian data in place: big-endian targets are not supported"
);

pub mod container;
pub mod crc32;
pub mod error;
pub mod int8;
mod json;
pub mod model;
pub mod network;
#[cfg(feature = "std")]
pub mod network_def;
pub mod quant;
pub mod recipe;
#[cfg(feature = "std")]
pub mod reference;
#[cfg(feature = "std")]
pub mod writer;

pub use container::Dtype;
pub use error::{Error, MetadataKey, Part};
pub use int8::{CsrI8, LayerParamsI8, WeightsI8};
pub use model::{
    data_crc32, header_crc32, Csr, Indices, LayerParams, Model, Precision, Weights, FORMAT_MAJOR,
    FORMAT_NAME,
};
pub use network::{Flatten, Layer, LayerKind, LayerSpec, Network, NetworkSpec, Shape3};
#[cfg(feature = "std")]
pub use network_def::{LayerDef, NetworkDef};
pub use recipe::RECIPE;
