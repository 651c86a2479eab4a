//! Subcommands about model files: `export`, `inspect`, `densify`, `device-files`.

use super::args::DataArgs;
use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use model_format::writer::Encoding;
use model_format::NetworkDef;
use std::collections::BTreeMap;
use std::path::PathBuf;
use trainer::data::Split;
use trainer::export;
use trainer::model::tensor_file::write_atomically;
use trainer::model::Cnn;
use trainer::pipeline;

#[derive(Args)]
pub struct ExportArgs {
    /// The dense model (model.safetensors of a run).
    model: PathBuf,
    /// The sparse file to write.
    #[arg(long, short, default_value = "model.l1sparse.safetensors")]
    out: PathBuf,
    /// Store every weight matrix in this encoding instead of the smallest.
    #[arg(long, value_enum)]
    encoding: Option<ForcedEncoding>,
    /// Keep dead units (filters and neurons that are all zero or never read) instead of
    /// writing the smaller network without them.
    #[arg(long)]
    keep_dead_units: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ForcedEncoding {
    Dense,
    Csr,
}

#[derive(Args)]
pub struct ImportArgs {
    /// A PyTorch state dict saved with `safetensors.torch.save_file(model.state_dict(), ...)`.
    state_dict: PathBuf,
    /// Run folder to write `model.safetensors` into (for `prune`, `export`, `eval`).
    #[arg(long, short)]
    out: PathBuf,
    /// The network, as for `train --arch` [default: the recipe's CNN].
    #[arg(long, value_parser = super::train::parse_arch)]
    arch: Option<NetworkDef>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The sparse file.
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DensifyArgs {
    /// The sparse file.
    file: PathBuf,
    /// The dense safetensors file to write.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct DeviceFilesArgs {
    /// The l1sparse file.
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// How many test images (the first N of the test split).
    #[arg(long, default_value_t = pipeline::DEVICE_IMAGES, value_parser = clap::value_parser!(u16).range(1..))]
    images: u16,
    /// Output folder: model.slot, inputs.slot, host-logits.json.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run_export(args: ExportArgs) -> Result<()> {
    let (model, meta) = Cnn::load(&args.model, &Device::Cpu)?;
    let encoding = match args.encoding {
        None => Encoding::Smallest,
        Some(ForcedEncoding::Dense) => Encoding::Dense,
        Some(ForcedEncoding::Csr) => Encoding::Csr,
    };
    let source = super::args::recorded(&args.model);
    let options = pipeline::FileOptions {
        encoding,
        remove_dead_units: !args.keep_dead_units,
    };
    let bytes = pipeline::export(&model, &meta, &source, options)?;
    write_atomically(&args.out, &bytes)?;
    let report = export::inspect(&export::read_model_file(&args.out)?)?;
    eprintln!(
        "wrote {}: {} bytes ({:.1}x smaller than {} bytes of dense f32)",
        args.out.display(),
        report.file_bytes,
        report.compression,
        report.dense_f32_bytes
    );
    Ok(())
}

pub fn run_import(args: ImportArgs) -> Result<()> {
    let network = args.arch.unwrap_or_else(NetworkDef::recipe);
    let model = pipeline::import_state_dict(&args.state_dict, &network)?;
    let run = trainer::train::RunDir(args.out.clone());
    let mut meta = BTreeMap::new();
    meta.insert("kind".into(), "l1sparse-dense-model".into());
    meta.insert(
        "imported_from".into(),
        super::args::recorded(&args.state_dict),
    );
    model.save(&run.model(), &meta)?;
    eprintln!("wrote {} ({network})", run.model().display());
    Ok(())
}

pub fn run_inspect(args: InspectArgs) -> Result<()> {
    let bytes = export::read_model_file(&args.file)?;
    let report = export::inspect(&bytes)?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    out!("{}", args.file.display())?;
    out!(
        "{:<24} {:<9} {:<5} {:>12} {:>9} {:>9}",
        "tensor",
        "enc",
        "dtype",
        "shape",
        "non-zero",
        "bytes"
    )?;
    for t in &report.tensors {
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        out!(
            "{:<24} {:<9} {:<5} {:>12} {:>9} {:>9}",
            t.tensor,
            t.encoding,
            t.dtype,
            shape,
            t.nonzeros,
            t.bytes
        )?;
    }
    out!(
        "file {} bytes (header {}, data {}); dense f32 {} bytes: {:.1}x smaller",
        report.file_bytes,
        report.header_bytes,
        report.data_bytes,
        report.dense_f32_bytes,
        report.compression
    )?;
    out!(
        "{} of {} parameters non-zero ({:.2}% zero); {:.2} file bytes per non-zero",
        report.nonzeros,
        report.parameters,
        100.0 * (1.0 - report.nonzeros as f64 / report.parameters as f64),
        report.bytes_per_nonzero
    )?;
    if let Some(scales) = report.metadata.get(model_format::quant::OUTPUT_SCALES) {
        out!("int8: integer-only inference; layer output scales {scales}")?;
    }
    Ok(())
}

pub fn run_densify(args: DensifyArgs) -> Result<()> {
    let bytes = export::read_model_file(&args.file)?;
    let (network, tensors) = export::densify(&bytes)?;
    let mut meta = BTreeMap::new();
    meta.insert("kind".into(), "l1sparse-dense-model".into());
    meta.insert("densified_from".into(), super::args::recorded(&args.file));
    Cnn::from_named(&network, &tensors, &Device::Cpu)?.save(&args.out, &meta)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

pub fn run_device_files(args: DeviceFilesArgs) -> Result<()> {
    let bytes = export::read_model_file(&args.model)?;
    let test_set = args
        .data
        .load(Split::Test)?
        .truncated(usize::from(args.images));
    let files = pipeline::device_files(&bytes, &test_set)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, data: &[u8]| write_atomically(&args.out.join(name), data);
    write("model.slot", &files.model_slot)?;
    write("inputs.slot", &files.inputs_slot)?;
    let json = serde_json::to_string_pretty(&files.host)?;
    write("host-logits.json", json.as_bytes())?;
    eprintln!(
        "wrote model.slot, inputs.slot, host-logits.json to {}",
        args.out.display()
    );
    Ok(())
}
