//! `trainer quantize`: an int8 model file from a trained (pruned) model, checked against the f32
//! model and against the engine on the test set.

use super::args::DataArgs;
use anyhow::Result;
use candle_core::Device;
use clap::Args;
use sparse_engine::argmax;
use std::path::PathBuf;
use trainer::data::Split;
use trainer::eval::engine::run_engine;
use trainer::eval::evaluate;
use trainer::export;
use trainer::model::tensor_file::write_atomically;
use trainer::model::Cnn;
use trainer::output::QuantizeReport;
use trainer::pipeline;

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model (model.safetensors of a run), usually pruned.
    model: PathBuf,
    /// The int8 file to write.
    #[arg(long, short, default_value = "model.int8.l1sparse.safetensors")]
    out: PathBuf,
    /// Training images the activation scales are calibrated on (the first N of the split).
    #[arg(long, default_value_t = pipeline::CALIBRATION_IMAGES, value_parser = clap::value_parser!(u32).range(1..))]
    calibration_images: u32,
    #[command(flatten)]
    data: DataArgs,
    /// Keep dead units (filters and neurons that are all zero or never read) instead of
    /// writing the smaller network without them.
    #[arg(long)]
    keep_dead_units: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_quantize(args: QuantizeArgs) -> Result<()> {
    let (model, meta) = Cnn::load(&args.model, &Device::Cpu)?;
    let train_set = args.data.load(Split::Train)?;
    let test_set = args.data.load(Split::Test)?;
    pipeline::check_fits(&model, &test_set)?;
    let source = super::args::recorded(&args.model);
    let calibration = (&train_set, args.calibration_images);
    let options = pipeline::FileOptions {
        remove_dead_units: !args.keep_dead_units,
        ..Default::default()
    };
    let (quantized, bytes) = pipeline::quantize(&model, &meta, &source, calibration, options)?;
    write_atomically(&args.out, &bytes)?;
    let file = export::read_model_file(&args.out)?;
    let engine = run_engine(&file, &test_set)?;
    // The int8 model's plain-integer definition, once per test image.
    let reference = quantized.all_logits(&test_set)?;
    let correct = reference
        .iter()
        .zip(&test_set.labels)
        .filter(|&(logits, &l)| argmax(logits) == usize::from(l))
        .count();
    let identical = reference
        .iter()
        .zip(engine.logit_bits.chunks_exact(engine.classes.max(1)))
        .filter(|(logits, row)| logits.iter().map(|&v| v as u32).eq(row.iter().copied()))
        .count();
    let report = QuantizeReport {
        file: args.out.clone(),
        file_bytes: bytes.len(),
        calibration_images: quantized.calibration_images,
        test_images: test_set.len(),
        f32_accuracy: evaluate(&model, &test_set)?.accuracy(),
        int8_accuracy: correct as f64 / test_set.len().max(1) as f64,
        engine_identical_logits: identical,
        output_scales: quantized.output_scales.clone(),
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out!(
            "wrote {}: {} bytes, int8 (calibrated on {} training images)",
            report.file.display(),
            report.file_bytes,
            report.calibration_images
        )?;
        out!(
            "test accuracy: f32 {:.4}, int8 {:.4} ({:+.2} pp) on {} images",
            report.f32_accuracy,
            report.int8_accuracy,
            100.0 * (report.int8_accuracy - report.f32_accuracy),
            report.test_images
        )?;
        out!(
            "engine logits identical to the integer definition: {}/{}",
            report.engine_identical_logits,
            report.test_images
        )?;
    }
    if report.engine_identical_logits != report.test_images {
        anyhow::bail!(
            "the engine's logits differ from the int8 model's definition on {} images",
            report.test_images - report.engine_identical_logits
        );
    }
    Ok(())
}
