//! The cycle estimate. QEMU counts instructions, not time: a `vmla.f32` (3 cycles on a
//! Cortex-M4) and an `smlad` (two MACs in 1) count the same. So the firmware runs once more with
//! a TCG plugin (`xtask/qemu-plugin/exec_profile.c`) that records how often each translation
//! block ran and how often it left by a taken branch, filed under the firmware's markers (which
//! layer, or the inference's overhead). Each block's instructions come from the ELF's
//! disassembly, and [`m4`] prices them with the Cortex-M4 timings.

pub mod m4;
pub mod validate;

use anyhow::{bail, Context, Result};
use m4::{Class, Insn};
use protocol::marker::{Marker, COUNT};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The marker table's symbol in the firmware (see `firmware/app/src/marks.rs`).
const MARKS_SYMBOL: &str = "l1sparse_marks";

/// Builds the plugin (a shared library, with the host's C compiler) if its source changed;
/// returns its path.
pub fn plugin() -> Result<PathBuf> {
    let source = crate::root().join("xtask/qemu-plugin/exec_profile.c");
    let out_dir = crate::root().join("target/qemu-plugin");
    let lib = out_dir.join("exec_profile.so");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&lib).is_some() && modified(&lib) >= modified(&source) {
        return Ok(lib);
    }
    std::fs::create_dir_all(&out_dir)?;
    let status = Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Werror",
            "-fvisibility=hidden",
            "-o",
        ])
        .arg(&lib)
        .arg(&source)
        .status()
        .context("running cc to build the QEMU plugin")?;
    if !status.success() {
        bail!("building {} failed", source.display());
    }
    Ok(lib)
}

/// The QEMU arguments that load the plugin for `elf`, writing its profile to `out`.
pub fn plugin_args(elf: &Path, out: &Path) -> Result<Vec<String>> {
    let marks = symbol(elf, MARKS_SYMBOL)?;
    let plugin = plugin()?;
    Ok(vec![
        "-plugin".into(),
        format!(
            "{},marks={marks:x},nmarks={COUNT},out={}",
            plugin.display(),
            out.display()
        ),
    ])
}

/// The address of `name` in `elf`.
fn symbol(elf: &Path, name: &str) -> Result<u64> {
    let out = crate::stdout_of(
        Command::new("arm-none-eabi-nm").arg(elf),
        "arm-none-eabi-nm",
    )?;
    String::from_utf8_lossy(&out)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, _, sym) = (f.next()?, f.next()?, f.next()?);
            (sym == name).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .with_context(|| format!("{} has no symbol {name}", elf.display()))
}

/// One translation block's executions under one marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The marker table entry last executed before it (None: before the first marker).
    pub marker: Option<u32>,
    pub execs: u64,
    /// Executions that left it by a taken branch.
    pub taken: u64,
    /// Its instructions' addresses, in order.
    pub addrs: Vec<u32>,
}

/// What the plugin recorded in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub blocks: Vec<Block>,
    /// Executions of each marker table entry.
    pub markers: Vec<u64>,
}

impl Profile {
    /// Parses the plugin's output (see the plugin's header comment for the format).
    pub fn parse(text: &str) -> Result<Profile> {
        let mut p = Profile::default();
        for (i, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| {
                s.parse::<u64>()
                    .with_context(|| format!("line {}: {s}", i + 1))
            };
            match fields.as_slice() {
                ["block", phase, execs, taken, addrs @ ..] if !addrs.is_empty() => {
                    let phase = num(phase)?;
                    p.blocks.push(Block {
                        marker: phase.checked_sub(1).map(|m| m as u32),
                        execs: num(execs)?,
                        taken: num(taken)?,
                        addrs: addrs
                            .iter()
                            .map(|a| u32::from_str_radix(a, 16))
                            .collect::<Result<_, _>>()
                            .with_context(|| format!("line {}: bad address", i + 1))?,
                    });
                }
                ["marker", k, execs] => {
                    let k = num(k)? as usize;
                    p.markers.resize(p.markers.len().max(k + 1), 0);
                    p.markers[k] = num(execs)?;
                }
                _ => bail!("profile line {}: unexpected {line:?}", i + 1),
            }
        }
        Ok(p)
    }

    /// Reads the profile QEMU wrote to `path`.
    pub fn read(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the QEMU plugin's profile {}", path.display()))?;
        Profile::parse(&text)
    }
}

/// The image's instructions by address, from `arm-none-eabi-objdump -d`.
pub fn disassemble(elf: &Path) -> Result<HashMap<u32, Insn>> {
    let out = crate::stdout_of(
        Command::new("arm-none-eabi-objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(elf),
        "arm-none-eabi-objdump",
    )?;
    Ok(parse_disassembly(&String::from_utf8_lossy(&out)))
}

/// `    1e2c:\tldr\tr0, [r1, #4]\t@ comment` lines.
fn parse_disassembly(text: &str) -> HashMap<u32, Insn> {
    text.lines()
        .filter_map(|line| {
            let (addr, rest) = line.split_once(":\t")?;
            let addr = u32::from_str_radix(addr.trim(), 16).ok()?;
            let mut parts = rest.splitn(2, '\t');
            let mnemonic = parts.next()?.trim();
            if mnemonic.is_empty() || mnemonic.starts_with('.') {
                return None;
            }
            let operands = parts.next().unwrap_or("");
            let operands = operands.split(['@', ';', '<']).next().unwrap_or("").trim();
            Some((addr, Insn::decode(mnemonic, operands)))
        })
        .collect()
}

/// Instructions and estimated Cortex-M4 cycles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    pub instructions: u64,
    pub cycles: u64,
}

impl Cost {
    fn add(&mut self, instructions: u64, cycles: u64) {
        self.instructions += instructions;
        self.cycles += cycles;
    }
    fn per(self, n: u64) -> Cost {
        let n = n.max(1);
        Cost {
            instructions: (self.instructions + n / 2) / n,
            cycles: (self.cycles + n / 2) / n,
        }
    }
}

/// The estimate for one run, per inference (averaged over the run's inferences).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Estimate {
    pub inferences: u64,
    /// The whole inference: its layers plus the engine's work between them.
    pub inference: Cost,
    /// By layer index.
    pub layers: Vec<Cost>,
    /// Inside inferences, by class of instruction.
    pub classes: BTreeMap<Class, Cost>,
}

/// Clocks the report converts cycles to milliseconds at: (board, Hz).
pub const CLOCKS: [(&str, u64); 2] = [("nRF52840", 64_000_000), ("STM32F405", 168_000_000)];

impl Estimate {
    /// Milliseconds per inference at `hz`.
    pub fn millis(&self, hz: u64) -> f64 {
        self.inference.cycles as f64 * 1e3 / hz as f64
    }

    /// A plain-text table: per layer, per class, per inference.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut t = format!(
            "Cortex-M4 cycle estimate (zero wait states, refill {} cycles; {} inferences)\n",
            m4::REFILL,
            self.inferences
        );
        let mut row = |name: &str, c: &Cost| {
            let cpi = c.cycles as f64 / c.instructions.max(1) as f64;
            let _ = writeln!(
                t,
                "  {name:<12} {:>12} instr {:>12} cycles  CPI {cpi:.2}",
                c.instructions, c.cycles
            );
        };
        for (i, c) in self.layers.iter().enumerate() {
            row(&format!("layer {i}"), c);
        }
        for (class, c) in &self.classes {
            row(&format!("{class:?}"), c);
        }
        row("inference", &self.inference);
        for (board, hz) in CLOCKS {
            let _ = writeln!(
                t,
                "  {:.2} ms at {} MHz ({board})",
                self.millis(hz),
                hz / 1_000_000
            );
        }
        t
    }
}

/// Where an instruction executed under `marker` belongs.
enum Bucket {
    Layer(usize),
    Overhead,
    Outside,
}

fn bucket(marker: Option<u32>) -> Bucket {
    match marker.and_then(Marker::from_index) {
        Some(Marker::LayerStart(n)) => Bucket::Layer(n as usize),
        Some(Marker::LayerEnd | Marker::InferenceStart) => Bucket::Overhead,
        Some(Marker::InferenceEnd) | None => Bucket::Outside,
    }
}

/// Prices `profile` with the Cortex-M4 table: each block's instructions in order (a load's
/// pipelining and an address stall depend on the one before), its last instruction as taken
/// or not as often as the plugin saw. Totals by phase (0: before any marker, k + 1: after
/// marker k) and, within each, by class.
pub fn price(profile: &Profile, code: &HashMap<u32, Insn>) -> Result<Vec<BTreeMap<Class, Cost>>> {
    let mut phases: Vec<BTreeMap<Class, Cost>> = Vec::new();
    for block in &profile.blocks {
        let phase = block.marker.map_or(0, |m| m as usize + 1);
        phases.resize(phases.len().max(phase + 1), BTreeMap::new());
        let insns = block
            .addrs
            .iter()
            .map(|a| {
                code.get(a)
                    .with_context(|| format!("no instruction at {a:#x} in the image"))
            })
            .collect::<Result<Vec<_>>>()?;
        let not_taken = block.execs - block.taken.min(block.execs);
        let mut previous = None;
        for (i, insn) in insns.iter().enumerate() {
            let cycles = if i + 1 == insns.len() {
                insn.cycles(previous, true) * block.taken + insn.cycles(previous, false) * not_taken
            } else {
                insn.cycles(previous, false) * block.execs
            };
            phases[phase]
                .entry(insn.class)
                .or_default()
                .add(block.execs, cycles);
            previous = Some(*insn);
        }
    }
    Ok(phases)
}

/// The firmware's estimate: [`price`]d phases filed by what the firmware's markers mean, per
/// inference.
pub fn estimate(profile: &Profile, code: &HashMap<u32, Insn>) -> Result<Estimate> {
    let inferences = profile
        .markers
        .get(Marker::InferenceStart.index() as usize)
        .copied()
        .unwrap_or(0);
    let mut total = Cost::default();
    let mut layers: Vec<Cost> = Vec::new();
    let mut classes: BTreeMap<Class, Cost> = BTreeMap::new();
    for (phase, by_class) in price(profile, code)?.into_iter().enumerate() {
        let marker = phase.checked_sub(1).map(|m| m as u32);
        let layer = match bucket(marker) {
            Bucket::Outside => continue,
            Bucket::Layer(n) => Some(n),
            Bucket::Overhead => None,
        };
        for (class, cost) in by_class {
            total.add(cost.instructions, cost.cycles);
            classes
                .entry(class)
                .or_default()
                .add(cost.instructions, cost.cycles);
            if let Some(n) = layer {
                layers.resize(layers.len().max(n + 1), Cost::default());
                layers[n].add(cost.instructions, cost.cycles);
            }
        }
    }
    Ok(Estimate {
        inferences,
        inference: total.per(inferences),
        layers: layers.into_iter().map(|c| c.per(inferences)).collect(),
        classes: classes
            .into_iter()
            .map(|(k, c)| (k, c.per(inferences)))
            .collect(),
    })
}

/// All classes of a phase together.
pub fn sum(by_class: &BTreeMap<Class, Cost>) -> Cost {
    let mut c = Cost::default();
    for v in by_class.values() {
        c.add(v.instructions, v.cycles);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_price_taken_exits() {
        let text = "block 10 3 0 100 102\nblock 1 4 3 104 106\nblock 0 9 9 108\nmarker 9 2\n";
        let p = Profile::parse(text).unwrap();
        assert_eq!(p.blocks.len(), 3);
        assert_eq!(p.blocks[1].marker, Some(0));
        assert_eq!(p.markers[Marker::InferenceStart.index() as usize], 2);
        let code = parse_disassembly(
            "     100:\tadds\tr0, #1\n     102:\tldr\tr1, [r0]\n     104:\tsubs\tr2, #1\n     106:\tbne.n\t104 <f+0x4>\n     108:\tnop\n",
        );
        let est = estimate(&p, &code).unwrap();
        // Overhead block: 3 x (add 1 + load 2 + address stall 1); layer 0: 4 x subs 1,
        // 3 taken x (1 + refill) + 1 not taken x 1; the block before any marker is outside.
        let layer0 = 4 + 3 * (1 + m4::REFILL) + 1;
        assert_eq!(
            est.layers[0],
            Cost {
                instructions: 8,
                cycles: layer0
            }
            .per(2)
        );
        assert_eq!(est.inference.instructions, 7);
        assert_eq!(est.inference.cycles, (12 + layer0).div_ceil(2));
        assert!(Profile::parse("block 1 x 0 100").is_err());
        assert!(estimate(&Profile::parse("block 1 1 0 200").unwrap(), &code).is_err());
    }
}
