//! `cargo xtask firmware --embed MODEL`: one firmware image that carries a model and test
//! images, to flash as a single file (`probe-rs run`, `cargo run`), and, on an emulated board,
//! its run under QEMU checked against the host engine bit for bit.

use anyhow::{bail, Result};
use model_format::{Model, NetworkDef};
use std::path::PathBuf;
use std::time::Duration;
use trainer::data::datasets::{self, BuiltinDataset};
use trainer::data::{Dataset, Split};
use trainer::pipeline;
use xtask::firmware::{self, Board, Kernels};
use xtask::{qemu, root};

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// The model file (`.l1sparse.safetensors`, f32 or int8) to build into the image (without
    /// it: build every board's images and print their sizes).
    #[arg(long)]
    pub embed: Option<PathBuf>,
    /// The board to build for.
    #[arg(long, value_enum, default_value = "mps2-an386")]
    pub board: Board,
    /// The kernels the image carries (the smallest that runs the model is the model's precision
    /// alone, without the dense kernels for a sparse one: `f32-sparse`, `int8-sparse`).
    #[arg(long, value_enum, default_value = "all")]
    pub kernels: Kernels,
    /// The data set whose first test images go into the image.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: BuiltinDataset,
    /// How many test images.
    #[arg(long, default_value_t = pipeline::DEVICE_IMAGES, value_parser = clap::value_parser!(u16).range(1..))]
    pub images: u16,
    /// Run the image under QEMU (emulated boards) and compare its logits with the host engine's.
    #[arg(long)]
    pub run: bool,
}

pub fn run(args: &EmbedArgs, file: &std::path::Path) -> Result<()> {
    let model = trainer::export::read_model_file(file)?;
    let cache = datasets::ensure(args.dataset, &datasets::default_cache_dir())?;
    let images = Dataset::load_split(&cache, Split::Test)?.truncated(usize::from(args.images));
    let files = pipeline::device_files(&model, &images)?;
    let dir = root().join("target/embed");
    std::fs::create_dir_all(&dir)?;
    let (model_slot, inputs_slot) = (dir.join("model.slot"), dir.join("inputs.slot"));
    std::fs::write(&model_slot, &files.model_slot)?;
    std::fs::write(&inputs_slot, &files.inputs_slot)?;
    // The engine's buffers sized for this model's own network (dead units removed, its
    // layers may be smaller than the recipe's), so the image holds only the RAM it needs.
    let parsed = Model::parse(&model).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let network = NetworkDef::from_network(&parsed.network);
    let elf = firmware::build_embedded(
        args.board,
        args.kernels,
        &model_slot,
        &inputs_slot,
        Some(&network),
    )?;
    let size = firmware::image_size(&elf)?;
    eprintln!(
        "{}: {} bytes of flash (.text {}, .rodata {} with the model and {} images); flash it as one file",
        elf.display(),
        size.flash(),
        size.text,
        size.rodata,
        args.images
    );
    if !args.run {
        return Ok(());
    }
    if args.board.qemu_machine()?.is_none() {
        bail!(
            "--run needs an emulated board; flash {} with probe-rs run",
            elf.display()
        );
    }
    let run = qemu::run(args.board, &elf, None, None, Duration::from_secs(600))?;
    if run.exit_code != Some(0) {
        bail!("the image failed under QEMU: {:?}", run.errors());
    }
    let report = qemu::parse_report(&run)?;
    let same = report.bit_identical(&files.host.logit_bits);
    eprintln!(
        "{} images, {} correct, {same} with logits bit-identical to the host engine, {} instructions per inference, peak RAM {} bytes (engine buffers sized for {network})",
        report.images.len(),
        report.correct,
        report.cost_per_image,
        report.peak_ram
    );
    if same != report.images.len() || same != usize::from(args.images) {
        bail!(
            "{same} of {} images agree with the host engine",
            args.images
        );
    }
    Ok(())
}
