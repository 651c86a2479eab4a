//! Running the firmware under QEMU with the model and test images placed in flash by QEMU's
//! generic loader, decoding its defmt output, and parsing what it reports.

use crate::firmware::Board;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One decoded defmt message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// Decodes a defmt byte stream with the ELF's string table.
pub fn decode_defmt(elf: &[u8], stream: &[u8]) -> Result<Vec<LogLine>> {
    let table = defmt_decoder::Table::parse(elf)?.context("the ELF has no defmt table")?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(LogLine {
                level: frame
                    .level()
                    .map_or("print".to_string(), |l| l.as_str().to_string()),
                message: frame.display_message().to_string(),
            }),
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                bail!("malformed defmt frame in the firmware output")
            }
        }
    }
    Ok(lines)
}

/// What one QEMU run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// QEMU's exit status (the firmware's semihosting exit code); None if killed on timeout.
    pub exit_code: Option<i32>,
    pub lines: Vec<LogLine>,
}

impl Run {
    pub fn errors(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.level == "error")
            .map(|l| l.message.as_str())
            .collect()
    }
}

/// Runs `elf` on the board's QEMU machine with slot images loaded at the model and inputs
/// regions (either may be absent: erased flash). Instructions are counted with `-icount shift=0`.
pub fn run(
    board: Board,
    elf: &Path,
    model_slot: Option<&Path>,
    inputs_slot: Option<&Path>,
    timeout: Duration,
) -> Result<Run> {
    let machine = board
        .qemu_machine()
        .with_context(|| format!("{board:?} is not an emulated board"))?;
    let memory = board.memory();
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args([
        "-machine",
        machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
    ])
    .args([
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        "shift=0",
    ])
    .arg("-kernel")
    .arg(elf);
    for (slot, (addr, len)) in [(model_slot, memory.model), (inputs_slot, memory.inputs)] {
        if let Some(path) = slot {
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            if size > len {
                bail!(
                    "{} is {size} bytes, the region at {addr:#x} holds {len}",
                    path.display()
                );
            }
            cmd.arg("-device")
                .arg(format!("loader,file={},addr={addr:#x}", path.display()));
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-arm")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + timeout;
    let exit_code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stream = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading QEMU output failed"))?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let elf_bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let lines = decode_defmt(&elf_bytes, &stream)
        .with_context(|| format!("decoding firmware output (QEMU said: {stderr})"))?;
    Ok(Run { exit_code, lines })
}

/// One image's result as the firmware printed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageResult {
    pub index: usize,
    pub label: u8,
    pub predicted: usize,
    pub cost: u64,
    pub logit_bits: Vec<String>,
}

/// One layer's cost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerCost {
    pub name: String,
    pub macs: u64,
    pub cost: u64,
}

/// Everything a successful run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub model_bytes: u64,
    pub validation_cost: u64,
    pub images: Vec<ImageResult>,
    pub layers: Vec<LayerCost>,
    /// Statics (.data + .bss).
    pub static_ram: u64,
    /// The engine's activation and tap-offset memory (on the stack while running).
    pub activation_ram: u64,
    /// Stack high-water mark while validating the model at boot, and while running images.
    pub boot_stack: u64,
    pub run_stack: u64,
    /// Statics plus the larger stack peak.
    pub peak_ram: u64,
    pub cost_per_image: u64,
    pub correct: usize,
}

fn words(message: &str) -> Vec<&str> {
    message
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// The number after `key` in a message.
fn after(message: &str, key: &str) -> Option<u64> {
    let w = words(message);
    w.iter()
        .position(|&x| x == key)
        .and_then(|i| w.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// Parses the firmware's report lines (see firmware/app/src/main.rs).
pub fn parse_report(run: &Run) -> Result<Report> {
    let mut r = Report::default();
    for line in &run.lines {
        let m = line.message.as_str();
        if let Some(rest) = m.strip_prefix("model ok: ") {
            r.model_bytes = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            r.validation_cost = after(m, "in").unwrap_or(0);
        } else if m.starts_with("image ") {
            let logits = m.split("logits").nth(1).unwrap_or("");
            r.images.push(ImageResult {
                index: after(m, "image").context("image index")? as usize,
                label: after(m, "label").context("label")? as u8,
                predicted: after(m, "predicted").context("predicted")? as usize,
                cost: after(m, "cost").context("cost")?,
                logit_bits: words(logits)
                    .into_iter()
                    .map(|w| w.trim_start_matches("0x").to_string())
                    .collect(),
            });
        } else if m.starts_with("layer ") {
            let w = words(m);
            r.layers.push(LayerCost {
                name: w.get(2).unwrap_or(&"?").to_string(),
                macs: after(m, "macs").context("layer macs")?,
                cost: w
                    .last()
                    .and_then(|v| v.parse().ok())
                    .context("layer cost")?,
            });
        } else if m.starts_with("ram: ") {
            r.static_ram = after(m, "static").context("static ram")?;
            r.activation_ram = after(m, "activations").context("activations")?;
            r.boot_stack = after(m, "boot_stack").context("boot stack")?;
            r.run_stack = after(m, "run_stack").context("run stack")?;
            r.peak_ram = after(m, "peak").context("peak ram")?;
        } else if m.starts_with("done: ") {
            r.correct = after(m, "images").context("correct")? as usize;
            r.cost_per_image = after(m, "correct").context("cost per image")?;
        }
    }
    Ok(r)
}
