//! The report's figures, drawn with plotters as SVG and converted to PNG (rsvg-convert). One
//! palette (Okabe–Ito, safe for colour-blind readers), tick labels as people write numbers
//! (`1M`, `250k`, `10%`), a legend on every multi-series figure, and log axes where the values
//! span decades, so no bar vanishes.

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use trainer::eval::LayerStats;
use trainer::train::EpochMetrics;
use xtask::qemu;

/// Okabe–Ito: blue, vermillion, bluish green, orange, reddish purple, sky blue.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(230, 159, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

const FONT: &str = "sans-serif";

/// `1.5M`, `250k`, `40`: no `.0`, no long runs of zeros.
pub fn count_label(v: f64) -> String {
    let (scaled, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

/// A percentage of a fraction, with as many decimals as small values need: `100%`, `9.5%`,
/// `0.41%`.
pub fn pct_label(fraction: f64) -> String {
    let p = 100.0 * fraction;
    let decimals = if p >= 10.0 {
        0
    } else if p >= 1.0 {
        1
    } else {
        2
    };
    let text = format!("{p:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}%")
}

/// Draws an SVG with `draw`, then writes the PNG beside it.
fn figure(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<()> {
    {
        let root = SVGBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    to_png(path)
}

/// `x.svg` → `x.png` with rsvg-convert (librsvg2-bin).
fn to_png(svg: &Path) -> Result<()> {
    let png = svg.with_extension("png");
    let status = std::process::Command::new("rsvg-convert")
        .args(["--background-color", "white", "-o"])
        .arg(&png)
        .arg(svg)
        .status()
        .context("running rsvg-convert (apt: librsvg2-bin)")?;
    anyhow::ensure!(status.success(), "rsvg-convert failed on {}", svg.display());
    Ok(())
}

/// The legend, in one style for every figure.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .position(at)
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// A legend entry's swatch.
fn swatch(c: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
}

/// Grouped bars on a log axis: one group per label, one bar per series, the value written on
/// each bar.
struct Bars<'a> {
    title: &'a str,
    y_desc: &'a str,
    labels: Vec<String>,
    /// (series name, one value per label).
    series: Vec<(String, Vec<f64>)>,
    range: (f64, f64),
    tick: fn(f64) -> String,
    value: fn(f64) -> String,
}

fn grouped_bars(root: &DrawingArea<SVGBackend, Shift>, bars: &Bars<'_>) -> Result<()> {
    let groups = bars.labels.len();
    let n = bars.series.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(bars.title, (FONT, 17))
        .margin(14)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(
            0f64..groups as f64,
            (bars.range.0..bars.range.1).log_scale(),
        )?;
    let labels = bars.labels.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            let centred = (x - x.floor() - 0.5).abs() < 1e-6;
            match labels.get(i) {
                Some(l) if centred => l.clone(),
                _ => String::new(),
            }
        })
        .y_label_formatter(&|v| (bars.tick)(*v))
        .y_desc(bars.y_desc)
        .label_style((FONT, 13))
        .draw()?;
    for (s, (name, values)) in bars.series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let width = 0.8 / n;
        let left = |g: usize| g as f64 + 0.1 + s as f64 * width;
        chart
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                Rectangle::new(
                    [
                        (left(g), bars.range.0),
                        (left(g) + width * 0.92, v.max(bars.range.0)),
                    ],
                    color.filled(),
                )
            }))?
            .label(name.clone())
            .legend(swatch(color));
        chart.draw_series(values.iter().enumerate().map(|(g, &v)| {
            Text::new(
                (bars.value)(v),
                (left(g), v.max(bars.range.0) * 1.25),
                (FONT, 12).into_font().color(&BLACK),
            )
        }))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// Non-zero fraction of each layer's weights and biases, dense vs sparse (log axis).
pub fn density(path: &Path, dense: &[LayerStats], sparse: &[LayerStats]) -> Result<()> {
    let series = [("dense f32", dense), ("L1-sparse", sparse)]
        .iter()
        .map(|(name, layers)| {
            let values = layers.iter().map(|l| l.density.max(1e-5)).collect();
            (name.to_string(), values)
        })
        .collect();
    let bars = Bars {
        title: "Non-zero parameters per layer of the trained networks (log scale)",
        y_desc: "non-zero fraction",
        labels: sparse.iter().map(|l| l.layer.clone()).collect(),
        series,
        range: (1e-3, 4.0),
        tick: pct_label,
        value: pct_label,
    };
    figure(path, (720, 400), |root| grouped_bars(root, &bars))
}

/// Instructions per layer of every deployment that ran on the board (log axis).
pub fn instructions(path: &Path, board: &str, runs: &[(&str, &qemu::Report)]) -> Result<()> {
    let Some((_, first)) = runs.first() else {
        return Ok(());
    };
    let max = runs
        .iter()
        .flat_map(|(_, r)| r.layers.iter().map(|l| l.cost))
        .max()
        .unwrap_or(1) as f64;
    // The legend names the deployments.
    let title = format!("Instructions per layer on {board} (QEMU count)");
    let bars = Bars {
        title: &title,
        y_desc: "instructions per inference",
        labels: first.layers.iter().map(|l| l.name.clone()).collect(),
        series: runs
            .iter()
            .map(|(name, r)| {
                let values = r.layers.iter().map(|l| l.cost.max(1) as f64).collect();
                (name.to_string(), values)
            })
            .collect(),
        range: (1e3, max * 8.0),
        tick: count_label,
        value: count_label,
    };
    // Wide enough for four bars per layer with their values.
    figure(path, (200 + 190 * first.layers.len() as u32, 440), |root| {
        grouped_bars(root, &bars)
    })
}

/// Loss, test accuracy and exact zeros per epoch of each training run; fine-tunes continue
/// after the run they start from (`offset` epochs).
pub fn training_curves(path: &Path, runs: &[(String, usize, Vec<EpochMetrics>)]) -> Result<()> {
    let epochs = runs
        .iter()
        .map(|(_, offset, m)| offset + m.len())
        .max()
        .unwrap_or(1);
    figure(path, (760, 820), |root| {
        let root = root.titled(
            "Training runs of the demo: loss, test accuracy and exact zeros per epoch",
            (FONT, 18),
        )?;
        let panels = root.split_evenly((3, 1));
        type Pick = fn(&EpochMetrics) -> f64;
        let picks: [(&str, Pick, (f64, f64)); 3] = [
            ("training loss", |m| m.train_loss, (0.0, max_loss(runs))),
            ("test accuracy", |m| m.test_accuracy, (min_acc(runs), 1.0)),
            ("exact zeros", |m| m.zero_fraction, (0.0, 1.0)),
        ];
        for (k, (panel, (desc, pick, (lo, hi)))) in panels.iter().zip(picks).enumerate() {
            let mut chart = ChartBuilder::on(panel)
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(56)
                .build_cartesian_2d(0.5f64..epochs as f64 + 0.5, lo..hi)?;
            let percent = desc != "training loss";
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(desc)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|v| {
                    if percent {
                        pct_label(*v)
                    } else {
                        count_label(*v)
                    }
                })
                .label_style((FONT, 12))
                .draw()?;
            for (i, (name, offset, metrics)) in runs.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let points: Vec<(f64, f64)> = metrics
                    .iter()
                    .map(|m| ((offset + m.epoch) as f64, pick(m)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(name.clone())
                    .legend(swatch(color));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            // One legend, where the loss panel has room: above the curves between the first
            // epochs' high loss and the fine-tunes'.
            if k == 0 {
                legend(&mut chart, SeriesLabelPosition::UpperMiddle)?;
            }
        }
        Ok(())
    })
}

fn max_loss(runs: &[(String, usize, Vec<EpochMetrics>)]) -> f64 {
    let m = runs
        .iter()
        .flat_map(|(_, _, m)| m.iter().map(|e| e.train_loss))
        .fold(0.0, f64::max);
    (m * 1.1).max(0.1)
}

fn min_acc(runs: &[(String, usize, Vec<EpochMetrics>)]) -> f64 {
    let m = runs
        .iter()
        .flat_map(|(_, _, m)| m.iter().map(|e| e.test_accuracy))
        .fold(1.0, f64::min);
    ((m - 0.02) * 50.0).floor() / 50.0
}

/// Accuracy against the fraction of exactly-zero parameters, per method, with the dense
/// baseline as a dashed line.
pub fn pareto(
    path: &Path,
    dataset: &str,
    curves: &[(&str, Vec<(f64, f64)>)],
    dense: f64,
) -> Result<()> {
    let all = || curves.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let lo = all().fold(dense, f64::min);
    let lo = ((lo - 0.01) * 50.0).floor() / 50.0;
    let hi = (all().fold(dense, f64::max) + 0.005).min(1.0);
    let title = format!(
        "Test accuracy vs exact zeros on {dataset}: L1 (proximal) then prune, vs magnitude pruning alone"
    );
    figure(path, (760, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (FONT, 16))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.88f64..1.0, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("parameters exactly zero")
            .y_desc("test accuracy")
            .x_label_formatter(&|v| pct_label(*v))
            .y_label_formatter(&|v| pct_label(*v))
            .label_style((FONT, 13))
            .draw()?;
        let dashed = BLACK.mix(0.6);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.88, dense), (1.0, dense)],
                6,
                4,
                dashed.stroke_width(1),
            ))?
            .label(format!("dense baseline ({:.2}%)", 100.0 * dense))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], dashed));
        // The first curve (L1) last, on top; circles and triangles tell them apart where they
        // meet.
        for (i, (name, points)) in curves.iter().enumerate().rev() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name.to_string())
                .legend(swatch(color));
            if i == 0 {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled())))?;
            } else {
                let marker = |p| TriangleMarker::new(p, 7, color.filled());
                chart.draw_series(points.iter().map(|&p| marker(p)))?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        Ok(())
    })
}

/// fc1's weights as the density of non-zeros in 2 × 16 blocks, with dead rows (outputs with no
/// weight) marked on the left and dead columns (inputs no weight reads) along the bottom.
pub fn fc1_map(path: &Path, rows: usize, cols: usize, w: &[f32]) -> Result<()> {
    let (bh, bw) = (2, 16);
    let dead_rows: Vec<usize> = (0..rows)
        .filter(|&r| w[r * cols..(r + 1) * cols].iter().all(|&v| v == 0.0))
        .collect();
    let dead_cols: Vec<usize> = (0..cols)
        .filter(|&c| (0..rows).all(|r| w[r * cols + c] == 0.0))
        .collect();
    let title = format!(
        "fc1 non-zero weights ({rows} outputs × {cols} inputs, channel-major; darker = denser): {} dead rows, {} dead columns (red)",
        dead_rows.len(),
        dead_cols.len()
    );
    figure(path, (1000, 460), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (FONT, 14))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(-40i64..cols as i64, -6i64..rows as i64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("input (column)")
            .y_desc("output (row)")
            .label_style((FONT, 12))
            .draw()?;
        let mut cells = Vec::new();
        for by in (0..rows).step_by(bh) {
            for bx in (0..cols).step_by(bw) {
                let nz = (by..(by + bh).min(rows))
                    .flat_map(|r| (bx..(bx + bw).min(cols)).map(move |c| (r, c)))
                    .filter(|&(r, c)| w[r * cols + c] != 0.0)
                    .count();
                if nz > 0 {
                    let shade = 1.0 - (nz as f64 / (bh * bw) as f64).sqrt();
                    let c = PALETTE[0];
                    let mix = |v: u8| (f64::from(v) + shade * (255.0 - f64::from(v)) * 0.8) as u8;
                    cells.push(Rectangle::new(
                        [(bx as i64, by as i64), ((bx + bw) as i64, (by + bh) as i64)],
                        RGBColor(mix(c.0), mix(c.1), mix(c.2)).filled(),
                    ));
                }
            }
        }
        chart.draw_series(cells)?;
        let red = PALETTE[1];
        chart.draw_series(
            dead_rows
                .iter()
                .map(|&r| Rectangle::new([(-40, r as i64), (-10, r as i64 + 1)], red.filled())),
        )?;
        chart.draw_series(
            dead_cols
                .iter()
                .map(|&c| Rectangle::new([(c as i64, -6), (c as i64 + 1, -2)], red.filled())),
        )?;
        Ok(())
    })
}

/// The λ sweep (`--sweep`): accuracy after proximal L1 and after pruning + fine-tune.
pub fn sweep(path: &Path, points: &[(f64, f64, f64, f64)]) -> Result<()> {
    let lo = points.iter().map(|p| p.2.min(p.3)).fold(1.0, f64::min) - 0.01;
    figure(path, (720, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "λ sweep: accuracy after proximal L1, and after pruning + fine-tune",
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, lo..1f64)?;
        chart
            .configure_mesh()
            .x_desc("parameters exactly zero after L1")
            .y_desc("test accuracy")
            .x_label_formatter(&|v| pct_label(*v))
            .y_label_formatter(&|v| pct_label(*v))
            .draw()?;
        let (a, b) = (PALETTE[0], PALETTE[1]);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.1, p.2)),
                a.stroke_width(2),
            ))?
            .label("after proximal L1")
            .legend(swatch(a));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.1, p.3), 4, b.filled())),
            )?
            .label("after pruning + fine-tune")
            .legend(swatch(b));
        legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_people_write_numbers() {
        assert_eq!(count_label(1e6), "1M");
        assert_eq!(count_label(5_916_800.0), "5.92M");
        assert_eq!(count_label(250_000.0), "250k");
        assert_eq!(count_label(40.0), "40");
        assert_eq!(count_label(1_000.0), "1k");
        assert_eq!(pct_label(1.0), "100%");
        assert_eq!(pct_label(0.095), "9.5%");
        assert_eq!(pct_label(0.0041), "0.41%");
        assert_eq!(pct_label(0.9), "90%");
        for v in [1e3, 1e4, 1e5, 1e6, 1e7] {
            assert!(!count_label(v).contains(".0"), "{}", count_label(v));
        }
    }
}
