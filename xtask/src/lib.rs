//! Automation shared by `cargo xtask` and the end-to-end tests: building the firmware, running it
//! under QEMU with a model and test images placed in flash, and decoding its defmt output.

pub mod cycles;
pub mod firmware;
pub mod python;
pub mod qemu;
pub mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate lives in `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// Runs `cmd` to completion and returns its standard output; fails with its standard error when
/// it exits unsuccessfully. `what` names the command in errors.
pub fn stdout_of(cmd: &mut Command, what: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        anyhow::bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// Whether `e` is a write to a closed pipe (the reader of our output went away).
pub fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
