//! Building the firmware for a board and measuring its image.

use anyhow::{bail, Context, Result};
use model_format::NetworkDef;
use std::path::{Path, PathBuf};
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

/// What `board.toml` says of a board.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct BoardFacts {
    pub description: String,
    /// The core clock (SysTick's under QEMU), Hz.
    pub core_hz: u64,
    /// The QEMU machine, for emulated boards.
    pub qemu_machine: Option<String>,
    /// probe-rs's chip name, for real boards.
    pub probe_rs_chip: Option<String>,
}

/// Where a board's memory regions are: (origin, length) in bytes, read from the board's linker
/// memory map `firmware/boards/<board>/memory.x`, the one place they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMap {
    pub flash: (u64, u64),
    pub model: (u64, u64),
    pub inputs: (u64, u64),
    pub ram: (u64, u64),
}

impl MemoryMap {
    /// Parses the `MEMORY { NAME : ORIGIN = 0x..., LENGTH = 256K }` block of a linker script.
    pub fn parse(script: &str) -> Result<Self> {
        let region = |name: &str| -> Result<(u64, u64)> {
            let line = script
                .lines()
                .find(|l| l.trim_start().starts_with(name) && l.contains("ORIGIN"))
                .with_context(|| format!("no {name} region"))?;
            let value = |key: &str| -> Result<u64> {
                let text = line
                    .split(key)
                    .nth(1)
                    .and_then(|r| r.trim_start().strip_prefix('='))
                    .map(|r| r.split(',').next().unwrap_or("").trim())
                    .with_context(|| format!("{name}: no {key}"))?;
                parse_size(text).with_context(|| format!("{name}: bad {key} {text}"))
            };
            Ok((value("ORIGIN")?, value("LENGTH")?))
        };
        Ok(MemoryMap {
            flash: region("FLASH")?,
            model: region("MODEL")?,
            inputs: region("INPUTS")?,
            ram: region("RAM")?,
        })
    }
}

/// `0x1000`, `4096`, `256K`, `1M`.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, scale) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 1 << 10),
        b'M' => (&text[..text.len() - 1], 1 << 20),
        _ => (text, 1),
    };
    let n = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    n.checked_mul(scale)
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

    /// The board's folder: `memory.x` and `board.toml`.
    pub fn dir(self) -> PathBuf {
        crate::root().join("firmware/boards").join(self.feature())
    }

    /// The board's facts (`firmware/boards/<board>/board.toml`).
    pub fn facts(self) -> Result<BoardFacts> {
        let path = self.dir().join("board.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}", path.display()))
    }

    /// The QEMU machine, for emulated boards.
    pub fn qemu_machine(self) -> Result<Option<String>> {
        Ok(self.facts()?.qemu_machine)
    }

    /// The board's memory map (from `firmware/boards/<board>/memory.x`).
    pub fn memory(self) -> Result<MemoryMap> {
        let path = self.dir().join("memory.x");
        let script = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        MemoryMap::parse(&script).with_context(|| format!("{}", path.display()))
    }

    /// Total flash of the chip (code + model + inputs regions).
    pub fn chip_flash(self) -> Result<u64> {
        let m = self.memory()?;
        Ok(m.flash.1 + m.model.1 + m.inputs.1)
    }
}

/// Which kernels a firmware image carries (the firmware's features besides the board's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernels {
    /// Both precisions and the dense int8 conv kernel: the default image.
    All,
    /// f32 models only, with the fast kernels for layers stored dense (unrolled conv taps,
    /// fully connected rows in fours): the dense f32 baseline's.
    F32,
    /// f32 models only, without the fast dense kernels (f32 layers stored dense run through
    /// the sparse kernels, every weight a tap: the same logits, slower): the image for sparse
    /// f32 models.
    F32Sparse,
    /// int8 models only, with the fast kernels for layers stored dense (im2col conv, unrolled
    /// fully connected): the dense int8 baseline's.
    Int8,
    /// int8 models only, without the fast dense kernels (int8 layers stored dense run through
    /// compact generic code: same logits, slower): the smallest image, for sparse int8 models.
    Int8Sparse,
}

impl Kernels {
    pub const ALL: [Kernels; 5] = [
        Kernels::All,
        Kernels::F32,
        Kernels::F32Sparse,
        Kernels::Int8,
        Kernels::Int8Sparse,
    ];

    /// The firmware's cargo features for these kernels.
    pub fn features(self) -> &'static str {
        match self {
            Kernels::All => "f32,int8,dense-kernels",
            Kernels::F32 => "f32,dense-kernels",
            Kernels::F32Sparse => "f32",
            Kernels::Int8 => "int8,dense-kernels",
            Kernels::Int8Sparse => "int8",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::All => "all",
            Kernels::F32 => "f32",
            Kernels::F32Sparse => "f32-sparse",
            Kernels::Int8 => "int8",
            Kernels::Int8Sparse => "int8-sparse",
        }
    }
}

/// The `.text` budget of the images that run sparse models on the QEMU board, each precision's
/// own (`int8-sparse`, `f32-sparse`).
pub const TEXT_BUDGET: u64 = 24_576;
/// The flash budget of the sparse int8 deployment: its image's code and data plus the model.
pub const FLASH_BUDGET: u64 = 40_960;

/// Builds the release firmware for `board`, its buffers sized for the recipe's network; returns
/// the ELF's path.
pub fn build(board: Board) -> Result<PathBuf> {
    build_image(board, Kernels::All, None)
}

/// Builds the release firmware for `board` with its engine buffers sized for `network` (the
/// recipe's if `None`; see the firmware's build.rs); returns the ELF's path.
pub fn build_for(board: Board, network: Option<&NetworkDef>) -> Result<PathBuf> {
    build_image(board, Kernels::All, network)
}

/// Builds the release firmware for `board` with `kernels` (and buffers for `network`); returns
/// the ELF's path, one per kernel set (the builds share a target folder and its dependencies).
pub fn build_image(
    board: Board,
    kernels: Kernels,
    network: Option<&NetworkDef>,
) -> Result<PathBuf> {
    build_named(board, kernels, network, &[], kernels.name())
}

/// Builds an image for `board` with `kernels` that carries its model and test images (slot
/// files, as `trainer device-files` writes them): one file to flash, validated at boot like the
/// regions. With `network` (the model's own), the engine's buffers are sized for it rather than
/// for the recipe: a reduced network needs less RAM. Returns the ELF's path.
pub fn build_embedded(
    board: Board,
    kernels: Kernels,
    model_slot: &Path,
    inputs_slot: &Path,
    network: Option<&NetworkDef>,
) -> Result<PathBuf> {
    let env = [
        ("L1SPARSE_EMBED_MODEL", model_slot),
        ("L1SPARSE_EMBED_INPUTS", inputs_slot),
    ];
    let name = format!("{}-embedded", kernels.name());
    build_named(board, kernels, network, &env, &name)
}

/// Builds and copies the image to `l1sparse-firmware-{name}` beside cargo's output.
fn build_named(
    board: Board,
    kernels: Kernels,
    network: Option<&NetworkDef>,
    env: &[(&str, &Path)],
    name: &str,
) -> Result<PathBuf> {
    // Builds of one board share its output file until it is copied: one at a time.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let target = cargo_firmware("build", board, kernels, network, env)?;
    let release = target.join("thumbv7em-none-eabihf/release");
    let elf = release.join(format!("l1sparse-firmware-{name}"));
    std::fs::copy(release.join("l1sparse-firmware"), &elf)
        .with_context(|| format!("copying the firmware image to {}", elf.display()))?;
    Ok(elf)
}

/// Lints the firmware (its own workspace) as built for `board` with `kernels`.
pub fn clippy(board: Board, kernels: Kernels) -> Result<()> {
    eprintln!(
        "==> firmware lints ({}, {})",
        board.feature(),
        kernels.name()
    );
    cargo_firmware("clippy", board, kernels, None, &[]).map(|_| ())
}

/// Runs `cargo <command> --release` on the firmware for `board` (and `network`) in a target
/// folder of its own; returns that folder.
fn cargo_firmware(
    command: &str,
    board: Board,
    kernels: Kernels,
    network: Option<&NetworkDef>,
    env: &[(&str, &Path)],
) -> Result<PathBuf> {
    let dir = crate::root().join("firmware/app");
    let mut target = dir.join("target").join(board.feature());
    let features = format!("{},{}", board.feature(), kernels.features());
    let mut cmd = Command::new("cargo");
    cmd.args([
        command,
        "--release",
        "--quiet",
        "--no-default-features",
        "--features",
        &features,
    ]);
    if command == "clippy" {
        cmd.args(["--", "-D", "warnings"]);
    }
    cmd.current_dir(&dir).env_remove("RUSTFLAGS");
    for var in ["L1SPARSE_EMBED_MODEL", "L1SPARSE_EMBED_INPUTS"] {
        cmd.env_remove(var);
    }
    for (var, path) in env {
        cmd.env(var, path);
    }
    match network {
        Some(net) => {
            let (input, layers) = net.describe();
            let spec = format!("{input};{layers}");
            target.set_file_name(format!("{}-{:016x}", board.feature(), fnv1a(&spec)));
            cmd.env("L1SPARSE_NETWORK", spec);
        }
        None => {
            cmd.env_remove("L1SPARSE_NETWORK");
        }
    }
    let status = cmd
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .with_context(|| format!("running cargo {command} for the firmware"))?;
    if !status.success() {
        bail!("firmware {command} for {} failed", board.feature());
    }
    Ok(target)
}

/// A stable name for a network's build folder (64-bit FNV-1a of its description).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A firmware image's sections, in bytes (`arm-none-eabi-size -A`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImageSize {
    /// Code: `.text`.
    pub text: u64,
    /// Constants: `.rodata`.
    pub rodata: u64,
    /// The vector table.
    pub vectors: u64,
    /// Initialised statics (in flash, copied to RAM at boot).
    pub data: u64,
    /// Zeroed statics (RAM only).
    pub bss: u64,
}

impl ImageSize {
    /// What the image takes of flash: vectors, code, constants and the statics' initial values.
    pub fn flash(&self) -> u64 {
        self.vectors + self.text + self.rodata + self.data
    }
}

/// The sections of `elf`.
pub fn image_size(elf: &std::path::Path) -> Result<ImageSize> {
    let out = crate::stdout_of(
        Command::new("arm-none-eabi-size").arg("-A").arg(elf),
        "arm-none-eabi-size",
    )?;
    let mut size = ImageSize::default();
    for line in String::from_utf8_lossy(&out).lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(bytes)) = (f.next(), f.next().and_then(|b| b.parse().ok())) else {
            continue;
        };
        match name {
            ".text" => size.text = bytes,
            ".rodata" => size.rodata = bytes,
            ".vector_table" => size.vectors = bytes,
            ".data" => size.data = bytes,
            ".bss" => size.bss = bytes,
            _ => {}
        }
    }
    if size.text == 0 {
        bail!("{}: no .text section", elf.display());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_come_from_their_folders() {
        let mps2 = Board::Mps2An386.memory().unwrap();
        assert_eq!(mps2.model, (0x0010_0000, 2 << 20));
        assert_eq!(mps2.ram, (0x2000_0000, 4 << 20));
        let stm = Board::Netduinoplus2.memory().unwrap();
        assert_eq!(stm.flash, (0x0800_0000, 256 << 10));
        assert_eq!(Board::Netduinoplus2.chip_flash().unwrap(), 1 << 20);
        for board in ALL_BOARDS {
            let m = board.memory().unwrap();
            assert!(m.flash.0 + m.flash.1 <= m.model.0, "{board:?}");
            assert!(m.model.0 + m.model.1 <= m.inputs.0, "{board:?}");
        }
        assert!(MemoryMap::parse("MEMORY { FLASH : ORIGIN = 0x0 }").is_err());
        assert_eq!(
            Board::Mps2An386.qemu_machine().unwrap().as_deref(),
            Some("mps2-an386")
        );
        for board in ALL_BOARDS {
            let facts = board.facts().unwrap();
            assert!(facts.core_hz > 0, "{board:?}");
            assert!(
                facts.qemu_machine.is_some() != facts.probe_rs_chip.is_some(),
                "{board:?}: emulated or real"
            );
        }
    }
}
