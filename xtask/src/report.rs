//! The efficiency report: `report/report.md`, `report/table.md` (also spliced into the README)
//! and SVG figures, every number taken from the demo's own measurements.

use crate::demo::Measured;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use trainer::eval::LayerStats;
use xtask::firmware::Board;
use xtask::qemu;

pub struct Inputs {
    pub dataset: String,
    pub command: String,
    pub measured: Vec<Measured>,
    pub firmware_sizes: Vec<(Board, (u64, u64, u64))>,
    pub sparse_model: PathBuf,
    /// (λ, zeros before pruning, accuracy before, accuracy after pruning + fine-tune)
    pub sweep: Vec<(f64, f64, f64, f64)>,
    pub seconds: f64,
    /// Trained runs taken from an earlier (possibly interrupted) demo instead of trained now.
    pub reused_runs: usize,
}

fn by_name<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Measured> {
    inputs
        .measured
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no {name} measurements"))
}

fn on_board(m: &Measured, board: Board) -> Option<&qemu::Report> {
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
    let dense = by_name(inputs, "dense")?;
    let sparse = by_name(inputs, "sparse")?;
    let magnitude = by_name(inputs, "dense-pruned")?;
    let (d_mps, s_mps) = (
        on_board(dense, Board::Mps2An386),
        on_board(sparse, Board::Mps2An386),
    );
    let s_net = on_board(sparse, Board::Netduinoplus2);
    let text = inputs
        .firmware_sizes
        .iter()
        .find(|(b, _)| *b == Board::Mps2An386)
        .map_or(0, |(_, s)| s.0);
    let acc = |m: &Measured| m.eval.accuracy;
    let n_test = sparse.eval.test_images;
    let macs =
        |r: Option<&qemu::Report>| r.map_or(0, |r| r.layers.iter().map(|l| l.macs).sum::<u64>());
    let instr = |r: Option<&qemu::Report>| r.map_or(0, |r| r.cost_per_image);
    let ram = |r: Option<&qemu::Report>| r.map_or(0, |r| r.peak_ram);
    let identical = |m: &Measured| {
        m.bit_identical
            .iter()
            .map(|(b, same, n)| format!("{same}/{n} ({})", b.feature()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let netduino_dense = dense
        .qemu
        .iter()
        .find(|(b, _, _)| *b == Board::Netduinoplus2)
        .map_or(String::new(), |(_, r, msg)| {
            if r.is_some() {
                "runs".into()
            } else {
                msg.clone()
            }
        });

    let mut t = String::new();
    writeln!(
        t,
        "| measured on {} | dense f32 | L1-sparse | dense / sparse |",
        inputs.dataset
    )?;
    writeln!(t, "|---|---:|---:|---:|")?;
    writeln!(
        t,
        "| model file (bytes) | {} | {} | {} |",
        dense.file_bytes,
        sparse.file_bytes,
        ratio(dense.file_bytes as f64, sparse.file_bytes as f64)
    )?;
    let flash = |m: &Measured| text + m.file_bytes;
    writeln!(
        t,
        "| flash: firmware code + model (bytes) | {} | {} | {} |",
        flash(dense),
        flash(sparse),
        ratio(flash(dense) as f64, flash(sparse) as f64)
    )?;
    writeln!(
        t,
        "| peak RAM: statics + stack, mps2-an386 (bytes) | {} | {} | {} |",
        ram(d_mps),
        ram(s_mps),
        ratio(ram(d_mps) as f64, ram(s_mps) as f64)
    )?;
    writeln!(
        t,
        "| multiply-accumulates per image | {} | {} | {} |",
        macs(d_mps),
        macs(s_mps),
        ratio(macs(d_mps) as f64, macs(s_mps) as f64)
    )?;
    writeln!(
        t,
        "| instructions per inference, mps2-an386 | {} | {} | {} |",
        instr(d_mps),
        instr(s_mps),
        ratio(instr(d_mps) as f64, instr(s_mps) as f64)
    )?;
    writeln!(
        t,
        "| parameters exactly zero | {} | {} | |",
        pct(dense.eval.zero_fraction()),
        pct(sparse.eval.zero_fraction())
    )?;
    writeln!(
        t,
        "| test accuracy ({n_test} images, firmware engine on host) | {:.4} | {:.4} | {:+.2} pp |",
        acc(dense),
        acc(sparse),
        100.0 * (acc(sparse) - acc(dense))
    )?;
    writeln!(
        t,
        "| MCU logits bit-identical to host engine | {} | {} | |",
        identical(dense),
        identical(sparse)
    )?;
    writeln!(
        t,
        "| STM32F405 (netduinoplus2, 1 MiB flash, 128 KiB RAM) | {} | {} | |",
        if netduino_dense.is_empty() {
            "–".into()
        } else {
            netduino_dense
        },
        s_net.map_or("–".into(), |r| format!(
            "runs: {} instructions, peak RAM {} bytes",
            r.cost_per_image, r.peak_ram
        ))
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "Same sparsity without L1 (dense model magnitude-pruned to {} zeros, same fine-tune): accuracy {:.4} ({:+.2} pp vs dense).",
        pct(magnitude.eval.zero_fraction()),
        acc(magnitude),
        100.0 * (acc(magnitude) - acc(dense))
    )?;
    writeln!(t)?;
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
        "Produced by `{}` in {:.0} s{reuse}; see report/report.md.",
        inputs.command, inputs.seconds
    )?;
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
    r.push_str(&t);
    writeln!(
        r,
        "\n## Per layer (mps2-an386, instructions counted by QEMU `-icount shift=0` via SysTick)\n"
    )?;
    writeln!(r, "| layer | density | MACs dense | MACs sparse | instr. dense | instr. sparse | instr./MAC dense | instr./MAC sparse |")?;
    writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let sparse_layers = &sparse.eval.layers;
    if let (Some(d), Some(s)) = (d_mps, s_mps) {
        for ((dl, sl), ev) in d.layers.iter().zip(&s.layers).zip(sparse_layers) {
            let per = |c: u64, m: u64| {
                if m == 0 {
                    "–".to_string()
                } else {
                    format!("{:.2}", c as f64 / m as f64)
                }
            };
            writeln!(
                r,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                dl.name,
                pct(ev.density),
                dl.macs,
                sl.macs,
                dl.cost,
                sl.cost,
                per(dl.cost, dl.macs),
                per(sl.cost, sl.macs)
            )?;
        }
        let mac_ratio = macs(d_mps) as f64 / macs(s_mps).max(1) as f64;
        let instr_ratio = instr(d_mps) as f64 / instr(s_mps).max(1) as f64;
        writeln!(
            r,
            "\nTarget: instruction reduction ≥ 0.8 × MAC reduction. MAC reduction {mac_ratio:.2}×, instruction reduction {instr_ratio:.2}× = {:.2} of it: **{}**.",
            instr_ratio / mac_ratio,
            if instr_ratio >= 0.8 * mac_ratio { "met" } else { "not met" }
        )?;
        writeln!(
            r,
            "Peak RAM target ≤ 24 KB (24,576 bytes) for the sparse f32 network: {} bytes = statics {} + the larger stack peak: {} while running (of which the engine's activations and tap tables {}), {} while validating the model at boot: **{}**.",
            s.peak_ram,
            s.static_ram,
            s.run_stack,
            s.activation_ram,
            s.boot_stack,
            if s.peak_ram <= 24_576 { "met" } else { "not met" }
        )?;
        writeln!(
            r,
            "Model validation at boot: {} instructions (sparse), {} (dense).",
            s.validation_cost, d.validation_cost
        )?;
    }
    writeln!(r, "\nFirmware images (`arm-none-eabi-size`, bytes):\n\n| board | text | data | bss |\n|---|---:|---:|---:|")?;
    for (b, (text, data, bss)) in &inputs.firmware_sizes {
        writeln!(r, "| {} | {text} | {data} | {bss} |", b.feature())?;
    }
    writeln!(r, "\nInstructions are QEMU's count, not cycles: a Cortex-M4 takes ~1 cycle for most, 2 for loads, N+1 for `vldm`/`vstm` of N registers and ~3 for `vmla.f32`.\n")?;
    writeln!(r, "## Figures\n\n![per-layer density](density.svg)\n\n![instructions per layer](instructions.svg)\n\n![fc1 sparsity map](fc1-sparsity.svg)\n")?;
    density_chart(&dir.join("density.svg"), sparse_layers)?;
    if let (Some(d), Some(s)) = (d_mps, s_mps) {
        instructions_chart(&dir.join("instructions.svg"), d, s)?;
    }
    sparsity_map(&dir.join("fc1-sparsity.svg"), &inputs.sparse_model)?;
    if !inputs.sweep.is_empty() {
        writeln!(r, "![accuracy vs sparsity](sweep.svg)\n\n| λ | zeros after L1 | accuracy after L1 | accuracy after prune + fine-tune |\n|---|---:|---:|---:|")?;
        for (l, z, a, b) in &inputs.sweep {
            writeln!(r, "| {l:e} | {} | {a:.4} | {b:.4} |", pct(*z))?;
        }
        sweep_chart(&dir.join("sweep.svg"), &inputs.sweep)?;
    }
    std::fs::write(dir.join("report.md"), r)?;
    Ok(())
}

fn density_chart(path: &Path, layers: &[LayerStats]) -> Result<()> {
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<String> = layers.iter().map(|l| l.layer.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Non-zero parameters per layer (L1-sparse model)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..names.len()).into_segmented(), 0f64..100f64)?;
    chart
        .configure_mesh()
        .y_desc("density %")
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(layers.iter().enumerate().map(|(i, l)| {
        let d = 100.0 * l.density;
        Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), d),
            ],
            BLUE.filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

fn instructions_chart(path: &Path, dense: &qemu::Report, sparse: &qemu::Report) -> Result<()> {
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = dense
        .layers
        .iter()
        .chain(&sparse.layers)
        .map(|l| l.cost)
        .max()
        .unwrap_or(1) as f64;
    let n = dense.layers.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Instructions per layer on mps2-an386 (blue dense, red sparse)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, 0f64..max * 1.12)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("instructions")
        .draw()?;
    // Layer names above each pair of bars.
    chart.draw_series(dense.layers.iter().enumerate().map(|(i, l)| {
        Text::new(
            l.name.clone(),
            (i as f64 + 0.3, max * 1.09),
            ("sans-serif", 14),
        )
    }))?;
    for (offset, report, color) in [(0.1, dense, BLUE), (0.5, sparse, RED)] {
        chart.draw_series(report.layers.iter().enumerate().map(|(i, l)| {
            Rectangle::new(
                [
                    (i as f64 + offset, 0.0),
                    (i as f64 + offset + 0.4, l.cost as f64),
                ],
                color.filled(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// One f32 tensor of a trained model (through the safetensors crate).
fn read_tensor(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (tensors, _) = trainer::tensor_file::load(path)?;
    let t = tensors
        .into_iter()
        .find(|t| t.name == name)
        .with_context(|| format!("{}: no tensor {name}", path.display()))?;
    Ok((t.shape, t.values))
}

/// fc1's 128 × 3136 weights, as the density of non-zeros in 2 × 16 blocks.
fn sparsity_map(path: &Path, model: &Path) -> Result<()> {
    let (shape, w) = read_tensor(model, "fc1.weight")?;
    let (rows, cols) = (shape[0], shape[1]);
    let (bh, bw) = (2, 16);
    let root = SVGBackend::new(path, (980, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "fc1 non-zero weights (rows: outputs; columns: inputs, channel-major; darker = denser)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(40)
        .build_cartesian_2d(0..cols, 0..rows)?;
    chart.configure_mesh().disable_mesh().draw()?;
    let mut cells = Vec::new();
    for by in (0..rows).step_by(bh) {
        for bx in (0..cols).step_by(bw) {
            let nz = (by..(by + bh).min(rows))
                .flat_map(|r| (bx..(bx + bw).min(cols)).map(move |c| (r, c)))
                .filter(|&(r, c)| w[r * cols + c] != 0.0)
                .count();
            if nz > 0 {
                let shade = 1.0 - (nz as f64 / (bh * bw) as f64).sqrt();
                let level = (shade * 200.0) as u8;
                cells.push(Rectangle::new(
                    [(bx, by), (bx + bw, by + bh)],
                    RGBColor(level, level, 255).filled(),
                ));
            }
        }
    }
    chart.draw_series(cells)?;
    root.present()?;
    Ok(())
}

fn sweep_chart(path: &Path, points: &[(f64, f64, f64, f64)]) -> Result<()> {
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = points.iter().map(|p| p.2.min(p.3)).fold(1.0, f64::min) - 0.01;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Accuracy vs exact zeros after proximal L1 (blue) and after pruning + fine-tune (red)",
            ("sans-serif", 14),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..100f64, lo..1f64)?;
    chart
        .configure_mesh()
        .x_desc("exact zeros %")
        .y_desc("test accuracy")
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().map(|p| (100.0 * p.1, p.2)),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new((100.0 * p.1, p.2), 4, BLUE.filled())),
    )?;
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new((99.0, p.3), 4, RED.filled())),
    )?;
    root.present()?;
    Ok(())
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
