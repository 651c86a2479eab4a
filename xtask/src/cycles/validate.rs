//! Validation of the cycle estimate on micro-benchmarks whose cycle counts the Cortex-M4 TRM
//! fixes (`xtask/qemu-plugin/validate.s`): the estimate must equal the count worked out by hand
//! from the TRM, for each loop, and the plugin must count its instructions exactly.

use super::{m4::REFILL, Profile};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Loop iterations in every benchmark (`ITERATIONS` in validate.s).
const N: u64 = 100;
/// The loop's closing `subs; bne`: taken N - 1 times (1 + refill), falling through once (1).
const LOOP_BRANCH: u64 = N + (N - 1) * (1 + REFILL) + 1;

/// One benchmark: what the TRM says and what the estimate says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    /// The TRM's cycles for the loop, worked out by hand below.
    pub trm_cycles: u64,
    pub estimated_cycles: u64,
    pub expected_instructions: u64,
    pub counted_instructions: u64,
}

impl Check {
    pub fn passes(&self) -> bool {
        self.trm_cycles == self.estimated_cycles
            && self.expected_instructions == self.counted_instructions
    }
}

/// The benchmarks in validate.s order (marker 1 onwards): name, TRM cycles of the whole loop,
/// instructions of the whole loop. Per iteration, then the closing `subs; bne`.
fn benchmarks() -> [(&'static str, u64, u64); 9] {
    [
        // adds 1, eors 1
        ("data processing", 2 * N + LOOP_BRANCH, 4 * N),
        // ldr 2, then two loads that pipeline behind it, 1 each
        ("independent loads (pipelined)", 4 * N + LOOP_BRANCH, 5 * N),
        // ldr 2, ldr 2 (its address is the first one's result: no pipelining)
        (
            "load after the load it depends on",
            4 * N + LOOP_BRANCH,
            4 * N,
        ),
        // adds 1, ldr 2 + 1 stall (its address was written by the add)
        (
            "load after an add of its address",
            4 * N + LOOP_BRANCH,
            4 * N,
        ),
        // ldr 2, ldr 1, smlad 1, smlad 1
        ("SMLAD (int8 kernels)", 5 * N + LOOP_BRANCH, 6 * N),
        // vldm of 8 registers 1 + 8, four vmla.f32 3 each
        ("VLDM + VMLA.F32 (f32 kernels)", 21 * N + LOOP_BRANCH, 7 * N),
        // bl 1 + P, push of 5 registers 1 + 5, pop of 5 with the PC 1 + 5 + P
        (
            "call: BL, PUSH, POP {..., pc}",
            (1 + REFILL + 6 + 6 + REFILL) * N + LOOP_BRANCH,
            5 * N,
        ),
        // str with an immediate offset 1, str with a register offset 2
        ("stores", 3 * N + LOOP_BRANCH, 4 * N),
        // cmp 1, a conditional branch not taken 1
        ("branch not taken", 2 * N + LOOP_BRANCH, 4 * N),
    ]
}

/// Assembles and links validate.s (GNU binutils for Arm) into an mps2-an386 image.
fn build() -> Result<PathBuf> {
    let source = crate::root().join("xtask/qemu-plugin/validate.s");
    let dir = crate::root().join("target/qemu-plugin");
    std::fs::create_dir_all(&dir)?;
    let (object, elf) = (dir.join("validate.o"), dir.join("validate.elf"));
    crate::stdout_of(
        Command::new("arm-none-eabi-as")
            .arg("-o")
            .arg(&object)
            .arg(&source),
        "arm-none-eabi-as",
    )?;
    crate::stdout_of(
        Command::new("arm-none-eabi-ld")
            .args(["--section-start=.vectors=0", "-Ttext=0x100", "-o"])
            .arg(&elf)
            .arg(&object),
        "arm-none-eabi-ld",
    )?;
    Ok(elf)
}

/// Runs the benchmarks under QEMU with the plugin and compares each with the TRM.
pub fn validate() -> Result<Vec<Check>> {
    let elf = build()?;
    let dir = std::env::temp_dir().join(format!("l1sparse-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("validate.profile");
    let status = Command::new("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-nographic", "-monitor", "none"])
        .args([
            "-serial",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .args(super::plugin_args(&elf, &out)?)
        .arg("-kernel")
        .arg(&elf)
        .status()
        .context("running qemu-system-arm")?;
    if !status.success() {
        bail!("the validation image failed under QEMU: {status}");
    }
    let profile = Profile::read(&out);
    let _ = std::fs::remove_dir_all(&dir);
    let phases = super::price(&profile?, &super::disassemble(&elf)?)?;
    // Benchmark k runs after marker k: phase k + 1.
    let layer = |k: usize| phases.get(k + 1).map(super::sum).unwrap_or_default();
    let markers = layer(0);
    Ok(benchmarks()
        .into_iter()
        .enumerate()
        .map(|(i, (name, trm_cycles, expected_instructions))| {
            let measured = layer(i + 1);
            Check {
                name,
                trm_cycles,
                estimated_cycles: measured.cycles - markers.cycles.min(measured.cycles),
                expected_instructions,
                counted_instructions: measured.instructions
                    - markers.instructions.min(measured.instructions),
            }
        })
        .collect())
}
