//! The Cortex-M4 cycle table: what one executed instruction costs, from the Cortex-M4 Technical
//! Reference Manual (ARM DDI 0439, Table 3-1 "Cortex-M4 instruction set summary", §3.3.2
//! "Load/store timings", and Table 7-1 for the FPU). The one place these timings are written.
//!
//! Assumptions (also in docs/CYCLES.md):
//! - zero wait states on every fetch and load (the TRM's own assumption);
//! - a pipeline refill `P` of [`REFILL`] cycles after every taken branch (the TRM gives 1 to 3,
//!   by the target's alignment and width and whether the core speculated it);
//! - divides at their worst case, 12 cycles (the TRM: 2 to 12, by the operands);
//! - instructions skipped inside an IT block cost what they would cost executed.

/// Cycles of a pipeline refill after a taken branch (`P` in the TRM).
pub const REFILL: u64 = 2;
/// Cycles of SDIV and UDIV (their worst case).
pub const DIVIDE: u64 = 12;

/// What kind of work an instruction is, as the report groups it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Data processing: moves, adds, shifts, compares, bit fields, extends.
    Alu,
    /// Multiplies, including the DSP ones (MUL, MLA, SMULL, SMLAD, SMLABB, ...).
    Multiply,
    /// Packed and saturating DSP operations (SXTB16, SSAT, QADD, ...).
    Simd,
    Divide,
    /// Single loads, core and FPU (LDR, LDRH, LDRD, VLDR).
    Load,
    /// Single stores, core and FPU.
    Store,
    /// Load and store multiple, core and FPU (LDM, POP, VLDM, VPUSH, ...).
    Multiple,
    /// Branches, calls and returns (B, BL, BX, CBZ, TBB, IT).
    Branch,
    /// Floating-point multiply-accumulate (VMLA, VFMA, ...): 3 cycles.
    FpMac,
    /// Other floating-point operations and moves (VADD, VMUL, VCVT, VMOV, VMRS, ...).
    FpOther,
    /// Floating-point divide and square root: 14 cycles.
    FpDivide,
    /// Hints, barriers, system instructions.
    System,
}

impl Class {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Class::Alu => "data processing",
            Class::Multiply => "multiply, MAC (incl. SMLAD)",
            Class::Simd => "packed / saturating (SXTB16, SSAT)",
            Class::Divide => "divide",
            Class::Load => "load",
            Class::Store => "store",
            Class::Multiple => "load/store multiple (incl. VLDM, PUSH)",
            Class::Branch => "branch",
            Class::FpMac => "f32 multiply-accumulate (VMLA)",
            Class::FpOther => "other f32 (VADD, VMUL, VCVT, VMOV)",
            Class::FpDivide => "f32 divide, square root",
            Class::System => "system, hints",
        }
    }
}

/// One instruction of the image, decoded from its disassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insn {
    /// The mnemonic without its width qualifier, condition, flag-setting `s` and data type.
    pub base: String,
    pub class: Class,
    /// Registers moved by a load/store multiple, in 32-bit words.
    pub words: u64,
    /// Core registers it writes (for the address-dependency rule), by number.
    pub writes: Vec<u8>,
    /// Core registers its address uses (loads and stores).
    pub address: Vec<u8>,
    /// Whether it writes the PC (a branch, `pop {..., pc}`, `ldr pc`, `add pc`).
    pub writes_pc: bool,
    /// A store with an immediate offset (or none): one cycle, the write buffer takes it.
    pub store_immediate: bool,
    /// A double-word load or store (LDRD, STRD, VLDR.64): not pipelined with its neighbours.
    pub double: bool,
}

impl Insn {
    /// Decodes `mnemonic operands` as `arm-none-eabi-objdump -d` prints them.
    pub fn decode(mnemonic: &str, operands: &str) -> Insn {
        let lower = mnemonic.to_ascii_lowercase();
        let (stem, qualifier) = lower.split_once('.').unwrap_or((&lower, ""));
        let base = base_mnemonic(stem);
        let class = classify(&base);
        let list = register_list(operands);
        let first = operands
            .split(',')
            .next()
            .and_then(|t| register(t.trim().trim_end_matches('!')));
        let address = bracketed_registers(operands);
        let memory = matches!(class, Class::Load | Class::Store);
        let writes = match class {
            Class::Load => first.into_iter().collect(),
            Class::Alu | Class::Multiply | Class::Simd | Class::Divide | Class::FpOther
                if !matches!(base.as_str(), "cmp" | "cmn" | "tst" | "teq") =>
            {
                first.into_iter().collect()
            }
            _ => Vec::new(),
        };
        let writes_pc = class == Class::Branch && base != "it"
            || writes.contains(&15)
            || (matches!(base.as_str(), "pop" | "ldm" | "ldmia") && operands.contains("pc"));
        Insn {
            words: list.unwrap_or(0),
            store_immediate: class == Class::Store && !offset_is_register(operands),
            double: memory
                && (matches!(base.as_str(), "ldrd" | "strd")
                    || qualifier == "64"
                    || vector_double(operands)),
            writes,
            address,
            writes_pc,
            base,
            class,
        }
    }

    /// Cycles for one execution: `previous` is the instruction executed just before it in the
    /// same block (for load pipelining and address stalls), `taken` whether it branched.
    pub fn cycles(&self, previous: Option<&Insn>, taken: bool) -> u64 {
        let base = match self.class {
            Class::Alu | Class::Simd | Class::Multiply | Class::FpOther | Class::System => {
                1 + if self.writes_pc { REFILL } else { 0 }
            }
            Class::Divide => DIVIDE,
            Class::FpMac => 3,
            Class::FpDivide => 14,
            Class::Load | Class::Store => self.single_memory_cycles(previous),
            // 1 + N, and a refill when the PC is among the registers loaded.
            Class::Multiple => 1 + self.words + if self.writes_pc { REFILL } else { 0 },
            Class::Branch => match self.base.as_str() {
                "it" => 1,
                "tbb" | "tbh" => 2 + REFILL,
                "bl" | "blx" => 1 + REFILL,
                _ if taken => 1 + REFILL,
                _ => 1,
            },
        };
        base + self.address_stall(previous)
    }

    /// A single load or store: 2 cycles (LDRD/STRD and 64-bit VLDR/VSTR 3); a store with an
    /// immediate offset 1; one less when it follows a load it does not take its address from.
    fn single_memory_cycles(&self, previous: Option<&Insn>) -> u64 {
        if self.double {
            return 3;
        }
        if self.writes_pc {
            return 2 + REFILL;
        }
        if self.store_immediate {
            return 1;
        }
        let pipelined = previous.is_some_and(|p| {
            p.class == Class::Load
                && !p.double
                && !p.writes.iter().any(|r| self.address.contains(r))
        });
        if pipelined {
            1
        } else {
            2
        }
    }

    /// One cycle when a load or store takes its address from a register the data-processing
    /// instruction just before it wrote (the TRM: there is no forwarding path for it).
    fn address_stall(&self, previous: Option<&Insn>) -> u64 {
        let memory = matches!(self.class, Class::Load | Class::Store | Class::Multiple);
        let stalls = memory
            && previous.is_some_and(|p| {
                matches!(
                    p.class,
                    Class::Alu | Class::Multiply | Class::Simd | Class::Divide
                ) && p.writes.iter().any(|r| self.address.contains(r))
            });
        u64::from(stalls)
    }
}

const CONDITIONS: [&str; 16] = [
    "eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le",
];

/// The mnemonic without a condition suffix (inside IT blocks, and conditional branches) or the
/// flag-setting `s`: `addne` → `add`, `bls` → `b`, `lsls` → `lsl`, `subseq` → `sub`.
fn base_mnemonic(stem: &str) -> String {
    let known = |m: &str| classify_known(m).is_some();
    if known(stem) {
        return stem.to_string();
    }
    let without_s = stem.strip_suffix('s').filter(|m| known(m));
    let without_cond = CONDITIONS
        .iter()
        .find_map(|c| stem.strip_suffix(c))
        .filter(|m| !m.is_empty());
    // The condition first: `bls` is `b` + `ls`, not `bl` + `s`.
    let candidates = [
        without_cond.filter(|m| known(m)),
        without_s,
        without_cond
            .and_then(|m| m.strip_suffix('s'))
            .filter(|m| known(m)),
    ];
    candidates
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(stem)
        .to_string()
}

fn classify(base: &str) -> Class {
    classify_known(base).unwrap_or(Class::Alu)
}

/// The class of a base mnemonic, `None` if the table does not know it.
fn classify_known(m: &str) -> Option<Class> {
    use Class::*;
    let class = match m {
        "b" | "bl" | "blx" | "bx" | "cbz" | "cbnz" | "tbb" | "tbh" | "it" | "itt" | "ite"
        | "ittt" | "itte" | "itet" | "itee" | "itttt" => Branch,
        "ldr" | "ldrb" | "ldrh" | "ldrsb" | "ldrsh" | "ldrd" | "ldrex" | "ldrt" | "vldr" => Load,
        "str" | "strb" | "strh" | "strd" | "strex" | "vstr" => Store,
        "ldm" | "ldmia" | "ldmdb" | "ldmfd" | "stm" | "stmia" | "stmdb" | "stmfd" | "push"
        | "pop" | "vldm" | "vldmia" | "vldmdb" | "vstm" | "vstmia" | "vstmdb" | "vpush"
        | "vpop" => Multiple,
        "mul" | "mla" | "mls" | "smull" | "umull" | "smlal" | "umlal" | "smulbb" | "smulbt"
        | "smultb" | "smultt" | "smlabb" | "smlabt" | "smlatb" | "smlatt" | "smulwb" | "smulwt"
        | "smlawb" | "smlawt" | "smlad" | "smladx" | "smlsd" | "smlsdx" | "smuad" | "smuadx"
        | "smusd" | "smusdx" | "smlald" | "smlaldx" | "smlsld" | "smmul" | "smmla" | "smmls"
        | "smmulr" | "smmlar" | "umaal" | "smlalbb" | "smlalbt" | "smlaltb" | "smlaltt" => Multiply,
        "sdiv" | "udiv" => Divide,
        "sxtb16" | "uxtb16" | "sxtab16" | "uxtab16" | "ssat" | "usat" | "ssat16" | "usat16"
        | "qadd" | "qsub" | "qdadd" | "qdsub" | "sadd16" | "ssub16" | "uadd16" | "usub16"
        | "sadd8" | "ssub8" | "uadd8" | "usub8" | "qadd16" | "qsub16" | "qadd8" | "qsub8"
        | "shadd16" | "uhadd16" | "pkhbt" | "pkhtb" | "sel" | "usad8" | "usada8" | "sasx"
        | "ssax" => Simd,
        "vmla" | "vmls" | "vnmla" | "vnmls" | "vfma" | "vfms" | "vfnma" | "vfnms" => FpMac,
        "vdiv" | "vsqrt" => FpDivide,
        "vadd" | "vsub" | "vmul" | "vnmul" | "vabs" | "vneg" | "vcmp" | "vcmpe" | "vcvt"
        | "vcvtr" | "vcvtb" | "vcvtt" | "vmov" | "vmrs" | "vmsr" => FpOther,
        "nop" | "bkpt" | "wfi" | "wfe" | "sev" | "dmb" | "dsb" | "isb" | "cpsid" | "cpsie"
        | "mrs" | "msr" | "svc" | "udf" | "yield" => System,
        "mov" | "movw" | "movt" | "mvn" | "add" | "addw" | "adc" | "sub" | "subw" | "sbc"
        | "rsb" | "adr" | "and" | "orr" | "orn" | "eor" | "bic" | "lsl" | "lsr" | "asr" | "ror"
        | "rrx" | "cmp" | "cmn" | "tst" | "teq" | "clz" | "rbit" | "rev" | "rev16" | "revsh"
        | "bfi" | "bfc" | "ubfx" | "sbfx" | "sxtb" | "sxth" | "uxtb" | "uxth" | "sxtab"
        | "sxtah" | "uxtab" | "uxtah" | "neg" => Alu,
        _ => return None,
    };
    Some(class)
}

/// A core register's number: `r0`–`r12`, `sb`, `sl`, `fp`, `ip`, `sp`, `lr`, `pc`.
fn register(token: &str) -> Option<u8> {
    match token {
        "sb" => Some(9),
        "sl" => Some(10),
        "fp" => Some(11),
        "ip" => Some(12),
        "sp" => Some(13),
        "lr" => Some(14),
        "pc" => Some(15),
        _ => token.strip_prefix('r')?.parse().ok().filter(|n| *n < 16),
    }
}

/// The core registers inside `[...]`.
fn bracketed_registers(operands: &str) -> Vec<u8> {
    let Some((_, rest)) = operands.split_once('[') else {
        return Vec::new();
    };
    let inside = rest.split(']').next().unwrap_or("");
    inside
        .split(',')
        .filter_map(|t| register(t.split_whitespace().next().unwrap_or("")))
        .collect()
}

/// Whether a load/store's offset is a register (`[r0, r1]`, `[r0, r1, lsl #2]`).
fn offset_is_register(operands: &str) -> bool {
    bracketed_registers(operands).len() > 1
}

/// Whether a VLDR/VSTR moves a double register.
fn vector_double(operands: &str) -> bool {
    operands.trim_start().starts_with('d')
}

/// Words moved by a register list `{r4, r5, r6, lr}`, `{s0-s15}` or `{d8-d9}`.
fn register_list(operands: &str) -> Option<u64> {
    let (_, rest) = operands.split_once('{')?;
    let inside = rest.split('}').next()?;
    let mut words = 0;
    for item in inside.split(',').map(str::trim) {
        let (first, last) = item.split_once('-').unwrap_or((item, item));
        let per = if first.starts_with('d') { 2 } else { 1 };
        let number = |r: &str| -> Option<u64> {
            match r {
                "sb" | "sl" | "fp" | "ip" | "sp" | "lr" | "pc" => Some(0),
                _ => r.get(1..)?.parse().ok(),
            }
        };
        let span = number(last)?.checked_sub(number(first)?)? + 1;
        words += span * per;
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(text: &str) -> Insn {
        let (m, ops) = text.split_once(' ').unwrap_or((text, ""));
        Insn::decode(m, ops.trim())
    }

    #[test]
    fn mnemonics_lose_conditions_flags_and_widths() {
        for (text, base, class) in [
            ("adds.n r0, #1", "add", Class::Alu),
            ("lsls r0, r0, #1", "lsl", Class::Alu),
            ("bls.n 1e2c", "b", Class::Branch),
            ("blt.w 1e2c", "b", Class::Branch),
            ("bl 1e2c", "bl", Class::Branch),
            ("bics r0, r1", "bic", Class::Alu),
            ("addne r0, r1", "add", Class::Alu),
            ("ldrhne r0, [r1]", "ldrh", Class::Load),
            ("vmla.f32 s0, s1, s2", "vmla", Class::FpMac),
            ("smlad r0, r1, r2, r3", "smlad", Class::Multiply),
            ("sxtb16 r0, r1, ror #8", "sxtb16", Class::Simd),
            ("vldmia r0!, {s0-s15}", "vldmia", Class::Multiple),
        ] {
            let i = insn(text);
            assert_eq!((i.base.as_str(), i.class), (base, class), "{text}");
        }
    }

    #[test]
    fn timings_follow_the_trm() {
        let cost = |text: &str| insn(text).cycles(None, false);
        assert_eq!(cost("ldr r0, [r1, #4]"), 2);
        assert_eq!(cost("str r0, [r1, #4]"), 1);
        assert_eq!(cost("str r0, [r1, r2]"), 2);
        assert_eq!(cost("ldrd r0, r1, [r2]"), 3);
        assert_eq!(cost("push {r4, r5, r6, r7, lr}"), 6);
        assert_eq!(cost("pop {r4, r5, r6, r7, pc}"), 6 + REFILL);
        assert_eq!(cost("vldmia r0!, {s0-s7}"), 9);
        assert_eq!(cost("vpush {d8-d9}"), 5);
        assert_eq!(cost("vmla.f32 s0, s1, s2"), 3);
        assert_eq!(cost("vmul.f32 s0, s1, s2"), 1);
        assert_eq!(cost("sdiv r0, r1, r2"), DIVIDE);
        assert_eq!(insn("bx lr").cycles(None, true), 1 + REFILL);
        assert_eq!(insn("bne.n 100").cycles(None, true), 1 + REFILL);
        assert_eq!(cost("bl 100"), 1 + REFILL);
        assert_eq!(cost("add pc, r0"), 1 + REFILL);
        assert_eq!(cost("ldr pc, [sp], #4"), 2 + REFILL);
    }

    #[test]
    fn neighbouring_loads_pipeline_unless_the_address_depends_on_them() {
        let first = insn("ldr r2, [r1]");
        assert_eq!(insn("ldr r3, [r1, #4]").cycles(Some(&first), false), 1);
        assert_eq!(insn("str r3, [r4, r5]").cycles(Some(&first), false), 1);
        assert_eq!(insn("ldr r3, [r2]").cycles(Some(&first), false), 2);
        assert_eq!(
            insn("ldr r3, [r4, r2, lsl #2]").cycles(Some(&first), false),
            2
        );
        let add = insn("adds r1, #4");
        assert_eq!(insn("ldr r3, [r1]").cycles(Some(&add), false), 3);
        assert_eq!(insn("ldr r3, [r2]").cycles(Some(&add), false), 2);
        assert_eq!(insn("cmp r1, #4").writes, Vec::<u8>::new());
    }
}
