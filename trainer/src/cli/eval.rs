//! `trainer eval`: accuracy and per-layer cost of a dense model (Candle) or a model file (the
//! firmware's engine on the host).

use super::args::DataArgs;
use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;
use trainer::data::{Dataset, Split};
use trainer::eval::engine::{compare_with_candle, run_engine};
use trainer::eval::{evaluate, layer_stats, model_layer_stats};
use trainer::export;
use trainer::model::Cnn;
use trainer::output::EvalReport;

#[derive(Args)]
pub struct EvalArgs {
    /// The model to evaluate: a dense model (candle) or an l1sparse file (the firmware's engine).
    model: PathBuf,
    /// For an l1sparse file, also run the candle model on its weights and report agreement.
    #[arg(long)]
    compare_candle: bool,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn is_sparse_file(path: &std::path::Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let format = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    Ok(format.as_deref() == Some(model_format::FORMAT_NAME))
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    let report = if is_sparse_file(&args.model)? {
        eval_file(&args)?
    } else {
        eval_dense(&args)?
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_eval(&report)?;
    }
    Ok(())
}

fn eval_dense(args: &EvalArgs) -> Result<EvalReport> {
    let (model, metadata) = Cnn::load(&args.model, &Device::Cpu)?;
    let test_set = args.data.load(Split::Test)?;
    trainer::pipeline::check_fits(&model, &test_set)?;
    let result = evaluate(&model, &test_set)?;
    Ok(EvalReport {
        model: args.model.clone(),
        engine: "candle".into(),
        dataset: args.data.name(),
        test_images: test_set.len(),
        accuracy: result.accuracy(),
        per_class_accuracy: result.per_class(),
        layers: layer_stats(model.network(), &model.to_vecs()?),
        engine_macs_per_layer: None,
        activation_buffer_bytes: None,
        file_bytes: None,
        candle_agreement: None,
        metadata,
    })
}

fn eval_file(args: &EvalArgs) -> Result<EvalReport> {
    let bytes = export::read_model_file(&args.model)?;
    let model = model_format::Model::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("invalid model file: {e}"))?;
    let test_set: Dataset = args.data.load(Split::Test)?;
    let run = run_engine(&bytes, &test_set)?;
    let candle_agreement = if args.compare_candle {
        let (network, dense) = export::densify(&bytes)?;
        let candle = Cnn::from_named(&network, &dense, &Device::Cpu)?;
        Some(compare_with_candle(&candle, &test_set, &run)?)
    } else {
        None
    };
    Ok(EvalReport {
        model: args.model.clone(),
        engine: "sparse-engine".into(),
        dataset: args.data.name(),
        test_images: test_set.len(),
        accuracy: run.result.accuracy(),
        per_class_accuracy: run.result.per_class(),
        layers: model_layer_stats(&model),
        engine_macs_per_layer: Some(run.layer_macs.clone()),
        activation_buffer_bytes: Some(run.buffer_bytes),
        file_bytes: Some(bytes.len()),
        candle_agreement,
        metadata: model
            .metadata_entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

fn print_eval(report: &EvalReport) -> Result<()> {
    out!(
        "model {}  on {} ({} test images, {})",
        report.model.display(),
        report.dataset,
        report.test_images,
        report.engine
    )?;
    out!("test accuracy {:.4}", report.accuracy)?;
    let per_class: Vec<String> = report
        .per_class_accuracy
        .iter()
        .enumerate()
        .map(|(c, a)| format!("{c}:{a:.3}"))
        .collect();
    out!("per class     {}", per_class.join(" "))?;
    out!()?;
    out!(
        "{:<8} {:>10} {:>12} {:>9} {:>12} {:>12}",
        "layer",
        "params",
        "exact zeros",
        "density",
        "dense MACs",
        "sparse MACs"
    )?;
    let mut total = (0, 0, 0u64, 0u64);
    for l in &report.layers {
        out!(
            "{:<8} {:>10} {:>12} {:>8.2}% {:>12} {:>12}",
            l.layer,
            l.parameters,
            l.exact_zeros,
            100.0 * l.density,
            l.dense_macs,
            l.sparse_macs
        )?;
        total = (
            total.0 + l.parameters,
            total.1 + l.exact_zeros,
            total.2 + l.dense_macs,
            total.3 + l.sparse_macs,
        );
    }
    out!(
        "{:<8} {:>10} {:>12} {:>8.2}% {:>12} {:>12}",
        "total",
        total.0,
        total.1,
        100.0 * (1.0 - total.1 as f64 / total.0.max(1) as f64),
        total.2,
        total.3
    )?;
    out!("(MACs on real inputs: conv padding excluded; sparse MACs skip exact zeros)")?;
    if let Some(a) = &report.candle_agreement {
        out!(
            "candle agreement: {}/{} same predictions, max |logit difference| {:.3e}",
            a.same_prediction,
            a.images,
            a.max_abs_logit_diff
        )?;
    }
    Ok(())
}
