//! Python virtual environments under `target/` for the reference scripts in `xtask/pytorch/`
//! (created once with `python3 -m venv` and `pip install`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter of `target/<name>` with `packages` installed, creating it if `imports` (a
/// Python `import` statement's module list) does not run there yet.
pub fn venv(python: &str, name: &str, packages: &[&str], imports: &str) -> Result<PathBuf> {
    let dir = crate::root().join("target").join(name);
    let py = dir.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {imports}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&py) {
        return Ok(py);
    }
    eprintln!(
        "setup: creating {} with {}",
        dir.display(),
        packages.join(", ")
    );
    let status = Command::new(python)
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .with_context(|| format!("running {python} -m venv"))?;
    if !status.success() {
        bail!("{python} -m venv failed: install Python 3 with venv support (apt: python3-venv)");
    }
    let status = Command::new(&py)
        .args(["-m", "pip", "install", "-q"])
        .args(packages)
        .status()
        .context("running pip")?;
    if !status.success() || !ready(&py) {
        bail!("pip install {} failed", packages.join(" "));
    }
    Ok(py)
}

/// A script of `xtask/pytorch/`.
pub fn script(name: &str) -> PathBuf {
    crate::root().join("xtask/pytorch").join(name)
}
