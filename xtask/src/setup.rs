//! Installing what the project needs on a fresh machine, idempotently.

use anyhow::{bail, Context, Result};
use std::process::Command;

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs Debian packages that are missing (needs root or sudo).
pub fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    let root = is_root();
    let run = |args: &[&str]| -> Result<bool> {
        let mut cmd = if root {
            Command::new(args[0])
        } else {
            Command::new("sudo")
        };
        cmd.args(if root { &args[1..] } else { args });
        let status = cmd.env("DEBIAN_FRONTEND", "noninteractive").status();
        Ok(status
            .with_context(|| format!("running {}", args.join(" ")))?
            .success())
    };
    let mut install = vec!["apt-get", "install", "-y", "-q"];
    install.extend(&missing);
    let installed = run(&install)? || (run(&["apt-get", "update", "-q"])? && run(&install)?);
    if !installed {
        bail!(
            "could not install {}: install them with your package manager",
            missing.join(" ")
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// QEMU for the emulated boards and binutils for `size`.
pub fn firmware_tools() -> Result<()> {
    apt_install(&[
        ("qemu-system-arm", "qemu-system-arm"),
        ("arm-none-eabi-size", "binutils-arm-none-eabi"),
    ])
}

/// rsvg-convert, which turns the report's SVG figures into PNGs.
pub fn report_tools() -> Result<()> {
    apt_install(&[("rsvg-convert", "librsvg2-bin")])
}

/// The Cortex-M target (rust-toolchain.toml lists it; this covers toolchains without rustup's
/// automatic install).
pub fn rust_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = installed {
        if !String::from_utf8_lossy(&out.stdout).contains("thumbv7em-none-eabihf") {
            let ok = Command::new("rustup")
                .args(["target", "add", "thumbv7em-none-eabihf"])
                .status()?
                .success();
            if !ok {
                bail!("rustup target add thumbv7em-none-eabihf failed");
            }
        }
    }
    Ok(())
}
