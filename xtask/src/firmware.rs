//! Building the firmware for a board and measuring its image.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The boards the firmware builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Board {
    /// QEMU mps2-an386: Cortex-M4F, 4 MiB code memory, 4 MiB RAM.
    Mps2An386,
    /// QEMU netduinoplus2: STM32F405, 1 MiB flash, 128 KiB RAM.
    Netduinoplus2,
    /// nRF52840-DK (probe-rs).
    Nrf52840dk,
    /// STM32F4-Discovery, STM32F407VG (probe-rs).
    Stm32f407,
}

pub const ALL_BOARDS: [Board; 4] = [
    Board::Mps2An386,
    Board::Netduinoplus2,
    Board::Nrf52840dk,
    Board::Stm32f407,
];

/// Where a board's memory regions are (must agree with `firmware/app/memory/<board>.x`).
#[derive(Debug, Clone, Copy)]
pub struct MemoryMap {
    pub flash: (u64, u64),
    pub model: (u64, u64),
    pub inputs: (u64, u64),
    pub ram: (u64, u64),
}

impl Board {
    pub fn feature(self) -> &'static str {
        match self {
            Board::Mps2An386 => "mps2-an386",
            Board::Netduinoplus2 => "netduinoplus2",
            Board::Nrf52840dk => "nrf52840dk",
            Board::Stm32f407 => "stm32f407",
        }
    }

    /// The QEMU machine, for emulated boards.
    pub fn qemu_machine(self) -> Option<&'static str> {
        match self {
            Board::Mps2An386 => Some("mps2-an386"),
            Board::Netduinoplus2 => Some("netduinoplus2"),
            _ => None,
        }
    }

    pub fn memory(self) -> MemoryMap {
        match self {
            Board::Mps2An386 => MemoryMap {
                flash: (0x0000_0000, 1 << 20),
                model: (0x0010_0000, 2 << 20),
                inputs: (0x0030_0000, 1 << 20),
                ram: (0x2000_0000, 4 << 20),
            },
            Board::Netduinoplus2 | Board::Stm32f407 => MemoryMap {
                flash: (0x0800_0000, 256 << 10),
                model: (0x0804_0000, 512 << 10),
                inputs: (0x080C_0000, 256 << 10),
                ram: (0x2000_0000, 128 << 10),
            },
            Board::Nrf52840dk => MemoryMap {
                flash: (0x0000_0000, 256 << 10),
                model: (0x0004_0000, 512 << 10),
                inputs: (0x000C_0000, 256 << 10),
                ram: (0x2000_0000, 256 << 10),
            },
        }
    }

    /// Total flash of the chip (code + model + inputs regions).
    pub fn chip_flash(self) -> u64 {
        let m = self.memory();
        m.flash.1 + m.model.1 + m.inputs.1
    }
}

/// Builds the release firmware for `board`; returns the ELF's path.
pub fn build(board: Board) -> Result<PathBuf> {
    let dir = crate::root().join("firmware/app");
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--quiet",
            "--features",
            board.feature(),
        ])
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", dir.join("target").join(board.feature()))
        .status()
        .context("running cargo for the firmware")?;
    if !status.success() {
        bail!("firmware build for {} failed", board.feature());
    }
    Ok(dir
        .join("target")
        .join(board.feature())
        .join("thumbv7em-none-eabihf/release/l1sparse-firmware"))
}

/// Lints the firmware (its own workspace) as built for `board`.
pub fn clippy(board: Board) -> Result<()> {
    let dir = crate::root().join("firmware/app");
    eprintln!("==> firmware lints ({})", board.feature());
    let status = Command::new("cargo")
        .args([
            "clippy",
            "--release",
            "--quiet",
            "--features",
            board.feature(),
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", dir.join("target").join(board.feature()))
        .status()
        .context("running cargo clippy for the firmware")?;
    if !status.success() {
        bail!("firmware lints for {} failed", board.feature());
    }
    Ok(())
}

/// Sizes of an ELF's sections as `arm-none-eabi-size` reports them: (text, data, bss).
pub fn image_size(elf: &std::path::Path) -> Result<(u64, u64, u64)> {
    let out = Command::new("arm-none-eabi-size")
        .arg(elf)
        .output()
        .context("running arm-none-eabi-size")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .context("unexpected arm-none-eabi-size output")?
        .split_whitespace()
        .take(3)
        .map(|n| n.parse().context("parsing size"))
        .collect::<Result<_>>()?;
    Ok((nums[0], nums[1], nums[2]))
}
