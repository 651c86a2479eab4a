//! Running the firmware under QEMU with the model and test images placed in flash by QEMU's
//! generic loader, decoding its defmt output, and parsing what it reports.

use crate::cycles;
use crate::firmware::Board;
use anyhow::{bail, Context, Result};
use protocol::Record;
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
    let icount = ["-icount".to_string(), "shift=0".to_string()];
    run_with(board, elf, model_slot, inputs_slot, timeout, &icount)
}

/// [`run`] with the cycle estimate's plugin recording what executed (see [`cycles`]). Without
/// `-icount`: under it, QEMU restarts a block that touches a device (the SysTick reads) and
/// the plugin would count the restarted part twice; so the firmware's own instruction counts
/// in this run's report follow host time and mean nothing.
pub fn run_profiled(
    board: Board,
    elf: &Path,
    model_slot: Option<&Path>,
    inputs_slot: Option<&Path>,
    timeout: Duration,
) -> Result<(Run, cycles::Profile)> {
    let dir = std::env::temp_dir().join(format!("l1sparse-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("{}.profile", board.feature()));
    let _ = std::fs::remove_file(&out);
    let args = cycles::plugin_args(elf, &out)?;
    let run = run_with(board, elf, model_slot, inputs_slot, timeout, &args)?;
    let profile = cycles::Profile::read(&out);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((run, profile?))
}

fn run_with(
    board: Board,
    elf: &Path,
    model_slot: Option<&Path>,
    inputs_slot: Option<&Path>,
    timeout: Duration,
    extra_args: &[String],
) -> Result<Run> {
    let machine = board
        .qemu_machine()?
        .with_context(|| format!("{board:?} is not an emulated board"))?;
    let memory = board.memory()?;
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args([
        "-machine",
        &machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
    ])
    .args(["-semihosting-config", "enable=on,target=native"])
    .args(extra_args)
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

/// One image's result as the firmware reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageResult {
    pub index: usize,
    pub label: u8,
    pub predicted: usize,
    pub cost: u64,
    pub logit_bits: Vec<u32>,
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
    /// The model's precision, as the firmware read it from the file.
    pub precision: Option<protocol::Precision>,
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

impl Report {
    /// How many images' logits equal `host`'s (the host engine's, image by image) bit for bit.
    pub fn bit_identical(&self, host: &[Vec<u32>]) -> usize {
        self.images
            .iter()
            .zip(host)
            .filter(|(img, h)| img.logit_bits == **h)
            .count()
    }
}

/// The firmware's report, from its typed records (see the `protocol` crate).
pub fn parse_report(run: &Run) -> Result<Report> {
    let mut r = Report::default();
    for line in &run.lines {
        let Some(record) = protocol::from_message(&line.message) else {
            continue;
        };
        r.add(record.map_err(anyhow::Error::msg)?);
    }
    Ok(r)
}

impl Report {
    fn add(&mut self, record: Record) {
        match record {
            Record::Model {
                bytes,
                validation_cost,
                precision,
                ..
            } => {
                (self.model_bytes, self.validation_cost) = (bytes.into(), validation_cost);
                self.precision = Some(precision);
            }
            Record::Image {
                index,
                label,
                predicted,
                cost,
                logit_bits,
            } => self.images.push(ImageResult {
                index: index.into(),
                label,
                predicted: predicted.into(),
                cost,
                logit_bits: logit_bits.to_vec(),
            }),
            Record::Layer {
                name, macs, cost, ..
            } => self.layers.push(LayerCost {
                name: name.to_string(),
                macs,
                cost,
            }),
            Record::Ram {
                static_bytes,
                activation_bytes,
                boot_stack,
                run_stack,
                peak,
            } => {
                self.static_ram = static_bytes.into();
                self.activation_ram = activation_bytes.into();
                self.boot_stack = boot_stack.into();
                self.run_stack = run_stack.into();
                self.peak_ram = peak.into();
            }
            Record::Done {
                correct,
                total_cost,
                images,
            } => {
                self.correct = correct.into();
                self.cost_per_image = total_cost / u64::from(images).max(1);
            }
        }
    }
}
