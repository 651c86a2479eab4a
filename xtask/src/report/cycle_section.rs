//! The report's cycle-estimate section: estimated Cortex-M4 cycles per layer and by kind of
//! instruction for each deployment, the model's assumptions, and its validation against the TRM.

use super::{by_name, DatasetInputs, COLUMNS};
use anyhow::Result;
use std::fmt::Write as _;
use xtask::cycles::{self, m4, Cost};

/// CMSIS-NN's dense int8 network priced the same way (per-address execution counts from a QEMU
/// plugin, the same Cortex-M4 timings; ../shared/NOTES.md): not measured by the demo.
pub const CMSIS_NN_CYCLES: u64 = 11_760_000;

fn cpi(c: &Cost) -> String {
    format!("{:.2}", c.cycles as f64 / c.instructions.max(1) as f64)
}

/// One dataset's estimates: per layer, per inference and by kind of instruction.
pub fn section(ds: &DatasetInputs) -> Result<String> {
    let mut r = String::from(
        "\n### Cycle estimate (Cortex-M4, zero wait states; the model and its validation: section \"Cycle model\" below)\n\n",
    );
    let estimates: Vec<(&str, &cycles::Estimate)> = COLUMNS
        .iter()
        .filter_map(|(heading, name)| {
            let m = by_name(ds, name).ok()?;
            m.cycles.as_ref().map(|e| (*heading, e))
        })
        .collect();
    let headings: Vec<&str> = estimates.iter().map(|(h, _)| *h).collect();
    let rule = "|---".repeat(estimates.len() + 1) + "|";
    writeln!(
        r,
        "Estimated cycles per inference, per layer (cycles per instruction):\n\n| layer | {} |\n{rule}",
        headings.join(" | ")
    )?;
    let layers = estimates
        .iter()
        .map(|(_, e)| e.layers.len())
        .max()
        .unwrap_or(0);
    let names = layer_names(ds);
    for i in 0..layers {
        let cells: Vec<String> = estimates
            .iter()
            .map(|(_, e)| {
                e.layers
                    .get(i)
                    .map_or("–".into(), |c| format!("{} ({})", c.cycles, cpi(c)))
            })
            .collect();
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("layer {i}"));
        writeln!(r, "| {name} | {} |", cells.join(" | "))?;
    }
    let whole: Vec<String> = estimates
        .iter()
        .map(|(_, e)| format!("**{}** ({})", e.inference.cycles, cpi(&e.inference)))
        .collect();
    writeln!(r, "| whole inference | {} |", whole.join(" | "))?;
    for (board, hz) in cycles::CLOCKS {
        let ms: Vec<String> = estimates
            .iter()
            .map(|(_, e)| format!("{:.1}", e.millis(hz)))
            .collect();
        writeln!(
            r,
            "| ms at {} MHz ({board}) | {} |",
            hz / 1_000_000,
            ms.join(" | ")
        )?;
    }
    writeln!(
        r,
        "\nFor comparison, CMSIS-NN's dense int8 network priced the same way: {CMSIS_NN_CYCLES} cycles (../shared/NOTES.md; not re-measured by the demo).\n"
    )?;
    r.push_str(&by_class(&estimates)?);
    Ok(r)
}

fn layer_names(ds: &DatasetInputs) -> Vec<String> {
    by_name(ds, "dense")
        .ok()
        .and_then(|m| super::on_board(m, xtask::firmware::Board::Mps2An386))
        .map(|r| r.layers.iter().map(|l| l.name.clone()).collect())
        .unwrap_or_default()
}

/// Where each deployment's cycles go, by kind of instruction.
fn by_class(estimates: &[(&str, &cycles::Estimate)]) -> Result<String> {
    let headings: Vec<&str> = estimates.iter().map(|(h, _)| *h).collect();
    let mut r = format!(
        "Where the cycles go (share of each inference's estimated cycles, by kind of instruction):\n\n| kind | {} |\n{}|\n",
        headings.join(" | "),
        "|---".repeat(estimates.len() + 1)
    );
    let mut classes: Vec<m4::Class> = estimates
        .iter()
        .flat_map(|(_, e)| e.classes.keys().copied())
        .collect();
    classes.sort();
    classes.dedup();
    for class in classes {
        let cells: Vec<String> = estimates
            .iter()
            .map(|(_, e)| {
                let c = e.classes.get(&class).copied().unwrap_or_default();
                format!(
                    "{:.1}%",
                    100.0 * c.cycles as f64 / e.inference.cycles.max(1) as f64
                )
            })
            .collect();
        writeln!(r, "| {} | {} |", class.label(), cells.join(" | "))?;
    }
    Ok(r)
}

/// How the estimate is made, and its micro-benchmarks: TRM against estimate.
pub fn validation(checks: &[cycles::validate::Check]) -> Result<String> {
    let mut r = String::from("\n## Cycle model\n\n");
    writeln!(
        r,
        "QEMU counts instructions; a Cortex-M4 spends 1 cycle on most, 2 on a load (1 when it pipelines behind another), 1 + N on a load or store multiple of N registers, 3 on `vmla.f32`, 1 on `smlad` (two MACs), 1 + {} on a taken branch. The estimate prices every instruction each inference executed (recorded by a QEMU plugin between the firmware's layer markers) with the Cortex-M4 TRM's timings: `cargo xtask qemu --cycles --model M --inputs I` gives it for any model. Assumptions: zero wait states on fetches and loads (real flash at 64–168 MHz adds wait states that caches and prefetch hide only in part, so silicon takes longer, most for weights read from flash), pipeline refill {} cycles (the TRM: 1–3), divides at their worst case ({} cycles). See docs/CYCLES.md.\n",
        m4::REFILL,
        m4::REFILL,
        m4::DIVIDE
    )?;
    r += &checks_table(checks)?;
    Ok(r)
}

/// The micro-benchmarks: what the TRM says each loop takes, and what the estimate says.
fn checks_table(checks: &[cycles::validate::Check]) -> Result<String> {
    let passed = checks.iter().filter(|c| c.passes()).count();
    let mut r = format!(
        "\nValidation on micro-benchmarks (`xtask/qemu-plugin/validate.s`, 100 iterations each): {passed}/{} equal the TRM's count.\n\n| loop | TRM cycles | estimated | instructions expected | counted |\n|---|---:|---:|---:|---:|\n",
        checks.len()
    );
    for c in checks {
        writeln!(
            r,
            "| {} | {} | {} | {} | {} |",
            c.name,
            c.trm_cycles,
            c.estimated_cycles,
            c.expected_instructions,
            c.counted_instructions
        )?;
    }
    Ok(r)
}
