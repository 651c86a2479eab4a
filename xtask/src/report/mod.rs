//! The efficiency report: `report/report.md`, `report/table.md` (also spliced into the README)
//! and SVG figures, every number taken from the demo's own measurements.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use trainer::train::EpochMetrics;
mod charts;
mod cycle_section;
mod json;
mod stats;

use trainer::output::{EvalReport, HostLogits, QuantizeReport};
use xtask::cycles;
use xtask::firmware::{self, Board, ImageSize, Kernels};
use xtask::qemu;

/// What the demo measured for one model.
pub struct Measured {
    pub name: String,
    pub file_bytes: u64,
    pub eval: EvalReport,
    pub qemu: Vec<(Board, Option<qemu::Report>, String)>,
    pub host_logits: HostLogits,
    pub bit_identical: Vec<(Board, usize, usize)>,
    /// The Cortex-M4 cycle estimate of its mps2-an386 run (None if it did not run there).
    pub cycles: Option<cycles::Estimate>,
    /// The firmware image that ran it.
    pub kernels: Kernels,
    /// Its run in the mps2-an386 image built for its own network with the model embedded
    /// (`cargo xtask firmware --embed`): the RAM deploying this model takes. The slot image's
    /// run when its network is the recipe's (the same buffers).
    pub own_image: Option<qemu::Report>,
}

/// A point of an accuracy-vs-sparsity curve: the method, the pruning target, and the final
/// model's exact-zero fraction and test accuracy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParetoPoint {
    pub method: &'static str,
    pub target: f64,
    /// Its fine-tune after pruning, in words.
    pub finetune: String,
    pub zero_fraction: f64,
    pub accuracy: f64,
}

/// What the demo measured: each dataset's deployments, and what they share (the firmware
/// images, the cycle table's checks).
pub struct Inputs {
    pub command: String,
    /// The headline dataset first.
    pub datasets: Vec<DatasetInputs>,
    /// Every image the demo built: board, kernels, sections.
    pub firmware_sizes: Vec<(Board, Kernels, ImageSize)>,
    pub seconds: f64,
    /// Trained runs taken from an earlier (possibly interrupted) demo instead of trained now.
    pub reused_runs: usize,
    /// The cycle table's micro-benchmarks, TRM against estimate.
    pub cycle_checks: Vec<cycles::validate::Check>,
}

/// One dataset's models, as measured.
pub struct DatasetInputs {
    pub dataset: String,
    /// The training recipe, in words.
    pub recipe: String,
    pub measured: Vec<Measured>,
    pub sparse_model: PathBuf,
    /// (λ, zeros before pruning, accuracy before, accuracy after pruning + fine-tune)
    pub sweep: Vec<(f64, f64, f64, f64)>,
    /// Pruned + fine-tuned models at several targets, per method.
    pub pareto: Vec<ParetoPoint>,
    /// Each training run's metrics, with the epochs of the run it continues.
    pub curves: Vec<(String, usize, Vec<EpochMetrics>)>,
    /// The int8 models' quantization (by model name): calibration, accuracy against their f32
    /// source, agreement of the engine with the int8 definition.
    pub quantized: Vec<(String, QuantizeReport)>,
}

impl DatasetInputs {
    /// The Pareto points as one (zero fraction, accuracy) curve per method, by target.
    fn pareto_curves(&self) -> Vec<(&'static str, Vec<(f64, f64)>)> {
        let mut curves: Vec<(&'static str, Vec<(f64, f64)>)> = Vec::new();
        for p in &self.pareto {
            match curves.iter_mut().find(|(m, _)| *m == p.method) {
                Some((_, points)) => points.push((p.zero_fraction, p.accuracy)),
                None => curves.push((p.method, vec![(p.zero_fraction, p.accuracy)])),
            }
        }
        for (_, points) in &mut curves {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        curves
    }

    /// The median training speed (images per second) over the epochs of the training figure's
    /// runs, and how many epochs that is; `None` without epochs.
    fn training_speed(&self) -> Option<(f64, usize)> {
        let mut speeds: Vec<f64> = self
            .curves
            .iter()
            .flat_map(|(_, _, m)| m.iter().map(|e| e.images_per_second))
            .collect();
        speeds.sort_by(f64::total_cmp);
        let n = speeds.len();
        (n > 0).then(|| ((speeds[(n - 1) / 2] + speeds[n / 2]) / 2.0, n))
    }

    /// How the report names the dataset.
    fn title(&self) -> String {
        match self.dataset.as_str() {
            "fashion-mnist" => "Fashion-MNIST (60k training / 10k test images)".into(),
            "mnist" => "MNIST digits (10k-sample subset, 80/20 split)".into(),
            other => other.into(),
        }
    }
}

fn by_name<'a>(ds: &'a DatasetInputs, name: &str) -> Result<&'a Measured> {
    ds.measured
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no {name} measurements"))
}

pub(crate) fn on_board(m: &Measured, board: Board) -> Option<&qemu::Report> {
    m.qemu
        .iter()
        .find(|(b, _, _)| *b == board)
        .and_then(|(_, r, _)| r.as_ref())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "–".into()
    } else {
        format!("{:.1}×", a / b)
    }
}

pub fn write(dir: &Path, inputs: &Inputs) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut t = String::new();
    for ds in &inputs.datasets {
        writeln!(t, "### {}\n", ds.title())?;
        t += &summary_table(inputs, ds)?;
    }
    t += &produced_by(inputs)?;
    std::fs::write(dir.join("table.md"), &t)?;
    let mut r = String::new();
    writeln!(
        r,
        "# Efficiency report: dense vs L1-sparse CNN on a Cortex-M4F\n"
    )?;
    writeln!(
        r,
        "Generated by `{}`; every number below was measured by that run.\n",
        inputs.command
    )?;
    for ds in &inputs.datasets {
        writeln!(r, "## {}\n", ds.title())?;
        r += &summary_table(inputs, ds)?;
        r += &per_layer_section(ds)?;
        r += &cycle_section::section(ds)?;
        r += &figures(dir, ds)?;
    }
    r += &image_table(inputs)?;
    r += &cycle_section::validation(&inputs.cycle_checks)?;
    r += "\n";
    r += &produced_by(inputs)?;
    std::fs::write(dir.join("report.md"), r)?;
    let json = serde_json::to_string_pretty(&json::Report::of(inputs)?)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    Ok(())
}

/// MACs per inference of a run (0 if it did not run).
fn macs(r: Option<&qemu::Report>) -> u64 {
    r.map_or(0, |r| r.layers.iter().map(|l| l.macs).sum())
}

/// Estimated Cortex-M4 cycles per inference (0 if it did not run).
fn est_cycles(m: &Measured) -> u64 {
    m.cycles.as_ref().map_or(0, |e| e.inference.cycles)
}

/// Instructions per inference of a run (0 if it did not run).
fn instr(r: Option<&qemu::Report>) -> u64 {
    r.map_or(0, |r| r.cost_per_image)
}

/// The deployments the headline table compares, by column: (heading, model name).
const COLUMNS: [(&str, &str); 4] = [
    ("dense f32", "dense"),
    ("L1-sparse f32", "sparse"),
    ("dense int8", "dense-int8"),
    ("L1-sparse int8", "sparse-int8"),
];

/// The [`COLUMNS`]' measurements and their runs on mps2-an386.
type Columns<'a> = (Vec<&'a Measured>, Vec<Option<&'a qemu::Report>>);

fn columns(ds: &DatasetInputs) -> Result<Columns<'_>> {
    let models = COLUMNS
        .iter()
        .map(|(_, name)| by_name(ds, name))
        .collect::<Result<Vec<_>>>()?;
    let runs = models
        .iter()
        .map(|m| on_board(m, Board::Mps2An386))
        .collect();
    Ok((models, runs))
}

/// The headline table (also the README's results section): the four deployments side by side,
/// and the ratio of the one people deploy today (dense int8) to ours (sparse int8).
fn summary_table(inputs: &Inputs, ds: &DatasetInputs) -> Result<String> {
    let (models, runs) = columns(ds)?;
    let n_test = models[1].eval.test_images;
    let mut t = String::new();
    let headings: Vec<&str> = COLUMNS.iter().map(|(h, _)| *h).collect();
    writeln!(
        t,
        "| measured on {} | {} | dense int8 / sparse int8 |",
        ds.dataset,
        headings.join(" | ")
    )?;
    writeln!(t, "|---|---:|---:|---:|---:|---:|")?;
    for (label, values) in numeric_rows(inputs, &models, &runs) {
        let cells: Vec<String> = values.iter().map(u64::to_string).collect();
        let r = ratio(values[2] as f64, values[3] as f64);
        writeln!(t, "| {label} | {} | {r} |", cells.join(" | "))?;
    }
    let row = |label: &str, cell: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = models.iter().map(|m| cell(m)).collect();
        format!("| {label} | {} | |\n", cells.join(" | "))
    };
    for (board, hz) in cycles::CLOCKS {
        t += &row(
            &format!(
                "estimated ms per inference at {} MHz ({board})",
                hz / 1_000_000
            ),
            &|m| {
                m.cycles
                    .as_ref()
                    .map_or("–".into(), |e| format!("{:.1}", e.millis(hz)))
            },
        );
    }
    t += &row("parameters exactly zero (of the trained network's)", &|m| {
        pct(m.eval.zero_fraction())
    });
    t += &row(
        &format!("test accuracy ({n_test} images, firmware engine on host; 95% CI)"),
        &|m| {
            let a = m.eval.accuracy;
            let (lo, hi) = stats::wilson95(a, n_test);
            format!("{a:.4} ({lo:.4}–{hi:.4})")
        },
    );
    t += &row("MCU logits bit-identical to host engine", &|m| {
        m.bit_identical
            .iter()
            .map(|(b, same, n)| format!("{same}/{n} ({})", b.feature()))
            .collect::<Vec<_>>()
            .join(", ")
    });
    t += &row(
        "STM32F405 (netduinoplus2, 1 MiB flash, 128 KiB RAM)",
        &netduino_cell,
    );
    t.push_str(&summary_footer(ds)?);
    Ok(t)
}

/// The headline table's numeric rows: a label and one figure per deployment ([`COLUMNS`]).
fn numeric_rows(
    inputs: &Inputs,
    models: &[&Measured],
    runs: &[Option<&qemu::Report>],
) -> [(&'static str, Vec<u64>); 8] {
    let ram = |r: &Option<&qemu::Report>| r.map_or(0, |r| r.peak_ram);
    [
        (
            "model file (bytes)",
            models.iter().map(|m| m.file_bytes).collect(),
        ),
        (
            "firmware `.text`, mps2-an386 image that runs it (bytes)",
            models.iter().map(|m| code_bytes(inputs, m)).collect(),
        ),
        (
            "flash: firmware image + model (bytes)",
            models
                .iter()
                .map(|m| image_of(inputs, m).map_or(0, |s| s.flash()) + m.file_bytes)
                .collect(),
        ),
        (
            "peak RAM: statics + stack, mps2-an386, buffers sized for the recipe's network (bytes)",
            runs.iter().map(ram).collect(),
        ),
        (
            "peak RAM, the model's own image (`firmware --embed`: buffers sized for its network) (bytes)",
            models.iter().map(|m| ram(&m.own_image.as_ref())).collect(),
        ),
        (
            "multiply-accumulates per image",
            runs.iter().map(|r| macs(*r)).collect(),
        ),
        (
            "instructions per inference, mps2-an386",
            runs.iter().map(|r| instr(*r)).collect(),
        ),
        (
            "estimated Cortex-M4 cycles per inference (zero wait states)",
            models.iter().map(|m| est_cycles(m)).collect(),
        ),
    ]
}

/// The mps2-an386 image that runs `m`.
fn image_of<'a>(inputs: &'a Inputs, m: &Measured) -> Option<&'a ImageSize> {
    inputs
        .firmware_sizes
        .iter()
        .find(|(b, k, _)| *b == Board::Mps2An386 && *k == m.kernels)
        .map(|(_, _, s)| s)
}

/// `.text` of the mps2-an386 image that runs `m`.
fn code_bytes(inputs: &Inputs, m: &Measured) -> u64 {
    image_of(inputs, m).map_or(0, |s| s.text)
}

/// What the netduinoplus2 row says of a model: how it ran, or why it does not fit.
fn netduino_cell(m: &Measured) -> String {
    let run = m.qemu.iter().find(|(b, _, _)| *b == Board::Netduinoplus2);
    match run {
        Some((_, Some(r), _)) => format!(
            "runs: {} instructions, peak RAM {} bytes",
            r.cost_per_image, r.peak_ram
        ),
        Some((_, None, why)) => why.clone(),
        None => "–".into(),
    }
}

/// The accuracy comparisons, the quantization, the magnitude-pruning comparison and how the
/// report was made.
fn summary_footer(ds: &DatasetInputs) -> Result<String> {
    let dense = by_name(ds, "dense")?;
    let magnitude = by_name(ds, "dense-pruned")?;
    let acc = |m: &Measured| m.eval.accuracy;
    let mut t = String::from("\n");
    writeln!(t, "- Recipe: {}.", ds.recipe)?;
    for (what, base, other) in [
        ("L1-sparse f32 vs dense f32", "dense", "sparse"),
        (
            "L1-sparse int8 vs L1-sparse f32 (quantization)",
            "sparse",
            "sparse-int8",
        ),
        ("L1-sparse int8 vs dense int8", "dense-int8", "sparse-int8"),
    ] {
        let (b, o) = (by_name(ds, base)?, by_name(ds, other)?);
        writeln!(
            t,
            "- Accuracy, {what}: {}.",
            stats::difference_text(acc(b), acc(o), o.eval.test_images)
        )?;
    }
    t += &quality_target(ds, dense, by_name(ds, "sparse")?)?;
    writeln!(
        t,
        "- Same sparsity without L1 (dense model magnitude-pruned to {} zeros, same fine-tune): accuracy {:.4}, {} vs dense.",
        pct(magnitude.eval.zero_fraction()),
        acc(magnitude),
        stats::difference_text(acc(dense), acc(magnitude), magnitude.eval.test_images)
    )?;
    for m in &ds.measured {
        if let Some(units) = m.eval.metadata.get("removed_units") {
            writeln!(
                t,
                "- {}: dead units removed at export (layer: units before->after): {}.",
                m.name,
                units.replace(',', ", ")
            )?;
        }
    }
    if let Some((speed, epochs)) = ds.training_speed() {
        writeln!(
            t,
            "- Training speed: median {speed:.0} images/s over the {epochs} epochs of the runs in the training figure (this machine; compare `trainer bench` from a release build)."
        )?;
    }
    for (name, q) in &ds.quantized {
        writeln!(
            t,
            "- {name}: post-training quantization (per-channel weights, activation scales from {} training images); the engine's logits equal the int8 model's plain-integer definition on {}/{} test images.",
            q.calibration_images, q.engine_identical_logits, q.test_images
        )?;
    }
    writeln!(
        t,
        "\nAccuracy intervals: Wilson 95% on the test set's size; differences: 95% interval of two independent proportions (wider than a paired test).\n"
    )?;
    Ok(t)
}

/// The exact-zero fraction the sparse model must reach on `dataset` at no more than
/// [`MAX_LOSS_PP`] below dense: 99% on Fashion-MNIST, 99.5% on MNIST (where Sparse
/// Variational Dropout reaches 99.6% on LeNet-5), 99% elsewhere.
fn zero_target(dataset: &str) -> f64 {
    match dataset {
        "mnist" => 0.995,
        _ => 0.99,
    }
}

/// The accuracy the sparse model may lose against dense, in percentage points.
const MAX_LOSS_PP: f64 = 0.5;

/// Whether the sparse model meets its dataset's quality target, in words.
fn quality_target(ds: &DatasetInputs, dense: &Measured, sparse: &Measured) -> Result<String> {
    let t = json::quality_target(ds, dense, sparse);
    Ok(format!(
        "- Target: ≥ {} of parameters exactly zero at ≤ {} pp below dense: {}, {:+.2} pp: **{}**.\n",
        pct(t.min_zero_fraction),
        t.max_loss_pp,
        pct(sparse.eval.zero_fraction()),
        -t.loss_pp,
        verdict(t.met)
    ))
}

/// How the report was made: the command, its time, what it reused.
fn produced_by(inputs: &Inputs) -> Result<String> {
    let mut t = String::new();
    let reuse = if inputs.reused_runs > 0 {
        format!(
            " (reusing {} trained runs of an earlier demo)",
            inputs.reused_runs
        )
    } else {
        String::new()
    };
    writeln!(
        t,
        "Produced by `{}` in {:.0} s{reuse}; see report/report.md (every figure also in report/report.json).",
        inputs.command, inputs.seconds
    )?;
    Ok(t)
}

/// Per-layer instructions and MACs, the targets, and the firmware images' sizes.
fn per_layer_section(ds: &DatasetInputs) -> Result<String> {
    let (models, runs) = columns(ds)?;
    let mut r = String::new();
    writeln!(
        r,
        "\n### Per layer (mps2-an386, instructions counted by QEMU `-icount shift=0` via SysTick)\n"
    )?;
    let headings: Vec<&str> = COLUMNS.iter().map(|(h, _)| *h).collect();
    writeln!(
        r,
        "Instructions per inference (instructions per MAC performed); density of the trained L1-sparse network (before dead units are removed).\n\n| layer | density | MACs dense | MACs sparse | {} |",
        headings.join(" | ")
    )?;
    writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let trained = trained_sparse_layers(ds)?;
    if let [Some(d), Some(s), ..] = runs[..] {
        for (i, ((dl, sl), ev)) in d.layers.iter().zip(&s.layers).zip(&trained).enumerate() {
            let cells: Vec<String> = runs
                .iter()
                .map(|run| match run.and_then(|r| r.layers.get(i)) {
                    Some(l) if l.macs > 0 => {
                        format!("{} ({:.2})", l.cost, l.cost as f64 / l.macs as f64)
                    }
                    Some(l) => l.cost.to_string(),
                    None => "–".into(),
                })
                .collect();
            writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                dl.name,
                pct(ev.density),
                dl.macs,
                sl.macs,
                cells.join(" | ")
            )?;
        }
    }
    r.push_str(&targets(&models, &runs)?);
    writeln!(
        r,
        "\nInstructions are QEMU's count, not cycles: the cycle estimate below prices them.\n"
    )?;
    Ok(r)
}

/// The firmware images by board and kernel set, and the footprint targets per dataset.
fn image_table(inputs: &Inputs) -> Result<String> {
    let mut r = String::from("## Firmware images\n\n`arm-none-eabi-size -A`, bytes; kernels: the firmware's features, `all` = both precisions + the fast kernels for layers stored dense, `f32` and `int8` = one precision with them, `f32-sparse` and `int8-sparse` = one precision without them (layers stored dense run through the compact and sparse kernels: same logits, slower).\n\n| board | kernels | `.text` | `.rodata` | flash (vectors + text + rodata + data) | `.bss` |\n|---|---|---:|---:|---:|---:|\n");
    for (b, k, s) in &inputs.firmware_sizes {
        writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} |",
            b.feature(),
            k.name(),
            s.text,
            s.rodata,
            s.flash(),
            s.bss
        )?;
    }
    writeln!(r)?;
    for ds in &inputs.datasets {
        r += &footprint_targets(inputs, ds)?;
    }
    Ok(r)
}

/// The footprint targets for one dataset's sparse models.
fn footprint_targets(inputs: &Inputs, ds: &DatasetInputs) -> Result<String> {
    let mut r = String::new();
    let name = &ds.dataset;
    let sparse = by_name(ds, "sparse-int8")?;
    if let Some(image) = image_of(inputs, sparse) {
        let flash = image.flash() + sparse.file_bytes;
        writeln!(
            r,
            "- Footprint ({name}): `.text` of the image that runs the sparse int8 model ({}, mps2-an386) ≤ {}: {}: **{}**.",
            sparse.kernels.name(),
            firmware::TEXT_BUDGET,
            image.text,
            verdict(image.text <= firmware::TEXT_BUDGET)
        )?;
        writeln!(
            r,
            "- Footprint ({name}): flash of the sparse int8 deployment (image {} + model {}) ≤ {}: {flash}: **{}**.",
            image.flash(),
            sparse.file_bytes,
            firmware::FLASH_BUDGET,
            verdict(flash <= firmware::FLASH_BUDGET)
        )?;
    }
    let sparse_f32 = by_name(ds, "sparse").ok();
    if let Some((m, image)) = sparse_f32.and_then(|m| Some((m, image_of(inputs, m)?))) {
        writeln!(
            r,
            "- Footprint ({name}): `.text` of the image that runs the sparse f32 model ({}, mps2-an386) ≤ {}: {}: **{}**.",
            m.kernels.name(),
            firmware::TEXT_BUDGET,
            image.text,
            verdict(image.text <= firmware::TEXT_BUDGET)
        )?;
    }
    Ok(r)
}

/// CMSIS-NN's dense int8 conv2 of this network on mps2-an386 (`arm_convolve_s8`, -O2; measured
/// with the same QEMU machine, see ../shared/NOTES.md): the dense int8 baseline's bound.
const CMSIS_NN_CONV2: u64 = 6_702_942;
/// CMSIS-NN's whole network, same measurement.
const CMSIS_NN_NETWORK: u64 = 9_757_163;

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "not met"
    }
}

/// The model's own image's peak RAM, as a clause of a RAM target's line ("" if it has none).
fn own_image_ram(m: Option<&&Measured>) -> String {
    match m.and_then(|m| m.own_image.as_ref()) {
        Some(own) => format!(
            "; in the model's own image (`cargo xtask firmware --embed`, buffers sized for its network) {} bytes (engine memory {}, run stack {}, boot stack {})",
            own.peak_ram, own.activation_ram, own.run_stack, own.boot_stack
        ),
        None => String::new(),
    }
}

/// The smaller of a deployment's peak RAM in the slot image and in its own image.
fn least_ram(slot: &qemu::Report, m: Option<&&Measured>) -> u64 {
    let own = m.and_then(|m| m.own_image.as_ref()).map(|r| r.peak_ram);
    own.map_or(slot.peak_ram, |o| o.min(slot.peak_ram))
}

/// The efficiency targets, each with the measured figure and whether it is met.
fn targets(models: &[&Measured], runs: &[Option<&qemu::Report>]) -> Result<String> {
    let mut r = String::from("\nTargets:\n\n");
    if let [Some(d), Some(s), ..] = runs {
        let mac_ratio = macs(Some(d)) as f64 / macs(Some(s)).max(1) as f64;
        let instr_ratio = instr(Some(d)) as f64 / instr(Some(s)).max(1) as f64;
        writeln!(
            r,
            "- f32: instruction reduction ≥ 0.8 × MAC reduction. MAC reduction {mac_ratio:.2}×, instruction reduction {instr_ratio:.2}× = {:.2} of it: **{}**.",
            instr_ratio / mac_ratio,
            verdict(instr_ratio >= 0.8 * mac_ratio)
        )?;
        writeln!(
            r,
            "- f32: sparse peak RAM ≤ 12,288 bytes: {} bytes = statics {} + the larger stack peak: {} while running (of which the engine's activations and tap tables {}, sized for the recipe's network), {} while validating the model at boot{}: **{}**.",
            s.peak_ram,
            s.static_ram,
            s.run_stack,
            s.activation_ram,
            s.boot_stack,
            own_image_ram(models.get(1)),
            verdict(least_ram(s, models.get(1)) <= 12_288)
        )?;
    }
    if let [_, _, Some(di), Some(si)] = runs {
        let conv2 = di.layers.get(1).map_or(0, |l| l.cost);
        writeln!(
            r,
            "- int8: the dense baseline's conv2 ≤ CMSIS-NN's {CMSIS_NN_CONV2} instructions (an honest baseline): {conv2}: **{}**.",
            verdict(conv2 <= CMSIS_NN_CONV2)
        )?;
        writeln!(
            r,
            "- int8: sparse network ≤ 1,000,000 instructions per inference (CMSIS-NN's dense int8 network: {CMSIS_NN_NETWORK}): {} ({:.1}× fewer than CMSIS-NN): **{}**.",
            si.cost_per_image,
            CMSIS_NN_NETWORK as f64 / si.cost_per_image.max(1) as f64,
            verdict(si.cost_per_image <= 1_000_000)
        )?;
        writeln!(
            r,
            "- int8: sparse peak RAM ≤ 8,192 bytes: {} bytes = statics {} + stack {} while running (engine memory {}, sized for the recipe's network), {} at boot{}: **{}**.",
            si.peak_ram,
            si.static_ram,
            si.run_stack,
            si.activation_ram,
            si.boot_stack,
            own_image_ram(models.get(3)),
            verdict(least_ram(si, models.get(3)) <= 8_192)
        )?;
    }
    if let Some(sparse_int8) = models.get(3) {
        writeln!(
            r,
            "- int8: sparse model file ≤ 12,288 bytes: {}: **{}**.",
            sparse_int8.file_bytes,
            verdict(sparse_int8.file_bytes <= 12_288)
        )?;
    }
    let validation: Vec<String> = COLUMNS
        .iter()
        .zip(runs)
        .filter_map(|((h, _), r)| r.map(|r| format!("{} ({h})", r.validation_cost)))
        .collect();
    writeln!(
        r,
        "\nModel validation at boot, instructions: {}.",
        validation.join(", ")
    )?;
    Ok(r)
}

/// Draws the figures and returns the markdown that shows them.
/// A figure's markdown.
fn image(r: &mut String, file: &str, alt: &str) -> std::fmt::Result {
    writeln!(r, "![{alt}]({file}.svg)\n")
}

fn figures(dir: &Path, ds: &DatasetInputs) -> Result<String> {
    let dense = by_name(ds, "dense")?;
    let mut r = String::from("### Figures\n\nEach figure is an SVG with a PNG beside it.\n\n");
    // Each dataset's figures carry its name: `<dataset>-<figure>.svg`.
    let file = |figure: &str| format!("{}-{figure}", ds.dataset);
    let path = |figure: &str| dir.join(format!("{}.svg", file(figure)));
    charts::pareto(
        &path("pareto"),
        &ds.dataset,
        &ds.pareto_curves(),
        dense.eval.accuracy,
    )?;
    image(
        &mut r,
        &file("pareto"),
        "accuracy vs exact zeros, L1 vs magnitude pruning",
    )?;
    writeln!(
        r,
        "| method | pruning target | fine-tune | parameters exactly zero | test accuracy |\n|---|---:|---|---:|---:|"
    )?;
    for p in &ds.pareto {
        writeln!(
            r,
            "| {} | {} | {} | {} | {:.4} |",
            p.method,
            pct(p.target),
            p.finetune,
            pct(p.zero_fraction),
            p.accuracy
        )?;
    }
    writeln!(r)?;
    charts::density(
        &path("density"),
        &dense.eval.layers,
        &trained_sparse_layers(ds)?,
    )?;
    image(&mut r, &file("density"), "non-zero parameters per layer")?;
    let runs: Vec<(&str, &qemu::Report)> = COLUMNS
        .iter()
        .filter_map(|(heading, name)| {
            let m = by_name(ds, name).ok()?;
            on_board(m, Board::Mps2An386).map(|r| (*heading, r))
        })
        .collect();
    charts::instructions(&path("instructions"), "mps2-an386", &runs)?;
    image(&mut r, &file("instructions"), "instructions per layer")?;
    charts::training_curves(&path("training"), &ds.curves)?;
    image(&mut r, &file("training"), "training curves")?;
    let (shape, w) = read_tensor(&ds.sparse_model, "fc1.weight")?;
    if let [rows, cols] = shape[..] {
        charts::fc1_map(&path("fc1-sparsity"), rows, cols, &w)?;
        image(&mut r, &file("fc1-sparsity"), "fc1 sparsity map")?;
    }
    if !ds.sweep.is_empty() {
        charts::sweep(&path("sweep"), &ds.sweep)?;
        image(&mut r, &file("sweep"), "λ sweep")?;
        writeln!(r, "| λ | zeros after L1 | accuracy after L1 | accuracy after prune + fine-tune |\n|---|---:|---:|---:|")?;
        for (l, z, a, b) in &ds.sweep {
            writeln!(r, "| {l:e} | {} | {a:.4} | {b:.4} |", pct(*z))?;
        }
    }
    Ok(r)
}

/// Per-layer parameters, zeros and density of the trained L1-sparse model, whole (its file
/// has the dead units removed, so its layers are smaller).
fn trained_sparse_layers(ds: &DatasetInputs) -> Result<Vec<trainer::eval::LayerStats>> {
    trainer::eval::saved_model_layer_stats(&ds.sparse_model)
}

/// One f32 tensor of a trained model (through the safetensors crate).
fn read_tensor(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (tensors, _) = trainer::model::tensor_file::load(path)?;
    let t = tensors
        .into_iter()
        .find(|t| t.name == name)
        .with_context(|| format!("{}: no tensor {name}", path.display()))?;
    Ok((t.shape, t.values))
}

/// Replaces the README's results section (between markers) with the generated table.
pub fn update_readme(readme: &Path, table: &Path) -> Result<()> {
    let table = std::fs::read_to_string(table)?;
    update_readme_section(readme, "results", &table)
}

/// Replaces the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->` in the README.
pub fn update_readme_section(readme: &Path, name: &str, body: &str) -> Result<()> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        eprintln!("README has no {name} markers; leaving it alone");
        return Ok(());
    };
    let updated = format!("{}{begin}\n{body}{}", &text[..b], &text[e..]);
    std::fs::write(readme, updated)?;
    Ok(())
}
