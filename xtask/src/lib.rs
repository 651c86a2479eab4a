//! Automation shared by `cargo xtask` and the end-to-end tests: building the firmware, running it
//! under QEMU with a model and test images placed in flash, and decoding its defmt output.

pub mod firmware;
pub mod qemu;
pub mod setup;

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}
