//! `report/report.json`: every figure of the report for scripts and CI, per dataset and
//! deployment, numbers as JSON numbers (accuracies as fractions).

use super::{
    by_name, code_bytes, image_of, on_board, stats, DatasetInputs, Inputs, Measured, ParetoPoint,
};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use xtask::firmware::Board;

#[derive(Serialize)]
pub struct Report {
    pub command: String,
    pub seconds: f64,
    /// The dataset of the headline table (the first the demo ran).
    pub headline: String,
    pub datasets: BTreeMap<String, Dataset>,
    pub cycle_model: CycleModel,
    /// Every firmware image the demo built, by board and kernel set.
    pub firmware_images: Vec<Image>,
}

#[derive(Serialize)]
pub struct Image {
    pub board: &'static str,
    pub kernels: &'static str,
    #[serde(flatten)]
    pub size: xtask::firmware::ImageSize,
    pub flash: u64,
}

/// How `est_cycles` are estimated, and the estimate's validation against the TRM.
#[derive(Serialize)]
pub struct CycleModel {
    pub core: &'static str,
    pub assumptions: &'static str,
    pub branch_refill_cycles: u64,
    pub divide_cycles: u64,
    pub validation: Vec<xtask::cycles::validate::Check>,
}

#[derive(Serialize)]
pub struct Dataset {
    /// The training recipe, in words.
    pub recipe: String,
    pub test_images: usize,
    pub deployments: BTreeMap<&'static str, Deployment>,
    /// The same sparsity reached without L1 (the dense model, magnitude-pruned).
    pub magnitude_pruned: Quality,
    /// Pruned + fine-tuned models at several targets, per method.
    pub pareto: Vec<ParetoPoint>,
    /// The int8 deployments' quantization, by model: calibration, accuracy against the f32
    /// source, and how many test images' engine logits equal the int8 definition's.
    pub quantization: BTreeMap<String, trainer::output::QuantizeReport>,
    /// Median images per second over every epoch the demo's training runs logged.
    pub training_images_per_second: Option<f64>,
    /// The sparse f32 model's quality target and whether it is met.
    pub quality_target: QualityTarget,
}

#[derive(Serialize)]
pub struct QualityTarget {
    pub min_zero_fraction: f64,
    pub max_loss_pp: f64,
    pub loss_pp: f64,
    pub met: bool,
}

/// One way of deploying the model, as measured by the demo (mps2-an386 unless named).
#[derive(Serialize)]
pub struct Deployment {
    pub model_bytes: u64,
    /// The firmware image that runs it (its kernels).
    pub image: &'static str,
    /// `.text` of the firmware image that runs it (mps2-an386).
    pub code_bytes: u64,
    /// Flash of that image (vectors, code, constants, initialised data) plus the model.
    pub flash_bytes: u64,
    pub peak_ram_bytes: Option<u64>,
    /// Peak RAM of the image built for the model's own network with the model embedded
    /// (`cargo xtask firmware --embed`), mps2-an386.
    pub own_image_peak_ram_bytes: Option<u64>,
    pub macs: Option<u64>,
    pub instructions: Option<u64>,
    /// Estimated Cortex-M4 cycles per inference (see `cycle_model`), mps2-an386's run.
    pub est_cycles: Option<u64>,
    /// The estimate in milliseconds at each board's clock, by board.
    pub est_ms: BTreeMap<&'static str, f64>,
    /// Estimated cycles by kind of instruction.
    pub est_cycles_by_class: BTreeMap<xtask::cycles::m4::Class, u64>,
    pub layers: Vec<Layer>,
    #[serde(flatten)]
    pub quality: Quality,
    pub images_compared: usize,
    pub bit_identical_images: usize,
    /// Per board: instructions per inference, or why the model does not fit.
    pub boards: BTreeMap<&'static str, BoardRun>,
}

#[derive(Serialize)]
pub struct Quality {
    pub accuracy: f64,
    pub accuracy_ci95: (f64, f64),
    pub zero_fraction: f64,
}

#[derive(Serialize)]
pub struct Layer {
    pub name: String,
    pub macs: u64,
    pub instructions: u64,
    pub est_cycles: Option<u64>,
}

#[derive(Serialize)]
pub struct BoardRun {
    pub instructions: Option<u64>,
    pub peak_ram_bytes: Option<u64>,
    pub does_not_fit: Option<String>,
}

/// The sparse model's quality target on its dataset ([`super::zero_target`]).
pub(super) fn quality_target(
    ds: &DatasetInputs,
    dense: &Measured,
    sparse: &Measured,
) -> QualityTarget {
    let min_zero_fraction = super::zero_target(&ds.dataset);
    let loss_pp = 100.0 * (dense.eval.accuracy - sparse.eval.accuracy);
    QualityTarget {
        min_zero_fraction,
        max_loss_pp: super::MAX_LOSS_PP,
        loss_pp,
        met: sparse.eval.zero_fraction() >= min_zero_fraction && loss_pp <= super::MAX_LOSS_PP,
    }
}

fn quality(m: &Measured) -> Quality {
    Quality {
        accuracy: m.eval.accuracy,
        accuracy_ci95: stats::wilson95(m.eval.accuracy, m.eval.test_images),
        zero_fraction: m.eval.zero_fraction(),
    }
}

fn deployment(m: &Measured, inputs: &Inputs) -> Deployment {
    let mps2 = on_board(m, Board::Mps2An386);
    let est = m.cycles.as_ref();
    let boards = m
        .qemu
        .iter()
        .map(|(b, r, why)| {
            let run = BoardRun {
                instructions: r.as_ref().map(|r| r.cost_per_image),
                peak_ram_bytes: r.as_ref().map(|r| r.peak_ram),
                does_not_fit: r.is_none().then(|| why.clone()),
            };
            (b.feature(), run)
        })
        .collect();
    Deployment {
        model_bytes: m.file_bytes,
        image: m.kernels.name(),
        code_bytes: code_bytes(inputs, m),
        flash_bytes: image_of(inputs, m).map_or(0, |s| s.flash()) + m.file_bytes,
        peak_ram_bytes: mps2.map(|r| r.peak_ram),
        own_image_peak_ram_bytes: m.own_image.as_ref().map(|r| r.peak_ram),
        macs: mps2.map(|r| r.layers.iter().map(|l| l.macs).sum()),
        instructions: mps2.map(|r| r.cost_per_image),
        est_cycles: est.map(|e| e.inference.cycles),
        est_ms: est
            .map(|e| {
                xtask::cycles::CLOCKS
                    .iter()
                    .map(|(board, hz)| (*board, e.millis(*hz)))
                    .collect()
            })
            .unwrap_or_default(),
        est_cycles_by_class: est
            .map(|e| e.classes.iter().map(|(k, c)| (*k, c.cycles)).collect())
            .unwrap_or_default(),
        layers: mps2
            .map(|r| {
                r.layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Layer {
                        name: l.name.clone(),
                        macs: l.macs,
                        instructions: l.cost,
                        est_cycles: est.and_then(|e| e.layers.get(i)).map(|c| c.cycles),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        quality: quality(m),
        images_compared: m.bit_identical.iter().map(|(_, _, n)| n).sum(),
        bit_identical_images: m.bit_identical.iter().map(|(_, same, _)| same).sum(),
        boards,
    }
}

impl Dataset {
    fn of(inputs: &Inputs, ds: &DatasetInputs) -> Result<Self> {
        let sparse = by_name(ds, "sparse")?;
        let mut deployments = BTreeMap::new();
        for (key, name) in [
            ("dense-f32", "dense"),
            ("sparse-f32", "sparse"),
            ("dense-int8", "dense-int8"),
            ("sparse-int8", "sparse-int8"),
        ] {
            deployments.insert(key, deployment(by_name(ds, name)?, inputs));
        }
        Ok(Dataset {
            recipe: ds.recipe.clone(),
            test_images: sparse.eval.test_images,
            deployments,
            magnitude_pruned: quality(by_name(ds, "dense-pruned")?),
            pareto: ds.pareto.clone(),
            quantization: ds.quantized.iter().cloned().collect(),
            training_images_per_second: ds.training_speed().map(|(speed, _)| speed),
            quality_target: quality_target(ds, by_name(ds, "dense")?, sparse),
        })
    }
}

impl Report {
    pub fn of(inputs: &Inputs) -> Result<Self> {
        let datasets = inputs
            .datasets
            .iter()
            .map(|ds| Ok((ds.dataset.clone(), Dataset::of(inputs, ds)?)))
            .collect::<Result<_>>()?;
        Ok(Report {
            command: inputs.command.clone(),
            seconds: inputs.seconds,
            headline: inputs
                .datasets
                .first()
                .map(|d| d.dataset.clone())
                .unwrap_or_default(),
            datasets,
            firmware_images: inputs
                .firmware_sizes
                .iter()
                .map(|(b, k, s)| Image {
                    board: b.feature(),
                    kernels: k.name(),
                    size: *s,
                    flash: s.flash(),
                })
                .collect(),
            cycle_model: CycleModel {
                core: "Cortex-M4 (TRM ARM DDI 0439 timings)",
                assumptions: "zero wait states on fetches and loads; a taken branch refills the pipeline in branch_refill_cycles; divides at their worst case; instructions skipped in IT blocks cost as executed",
                branch_refill_cycles: xtask::cycles::m4::REFILL,
                divide_cycles: xtask::cycles::m4::DIVIDE,
                validation: inputs.cycle_checks.clone(),
            },
        })
    }
}
