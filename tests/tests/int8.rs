//! The int8 path end to end on a briefly trained model: quantize (calibrated on training
//! images) → the int8 file's engine logits equal the quantized model's plain-integer definition
//! on every test image → accuracy close to the f32 model's → the firmware under QEMU gives the
//! same integer logits as the host, for the sparse and the dense int8 file, on both boards →
//! a damaged int8 file is rejected by name. And the footprint: the smallest image, which runs
//! them within its code budget, and an image with its model embedded.

mod common;

use common::{assert_bit_identical_on, fixture, rejected};
use model_format::quant::multiplier_for;
use model_format::reference::random_layers;
use model_format::writer::{write_int8, AlignedBytes, Encoding};
use model_format::{Model, NetworkDef, Precision};
use protocol::slot::{slot_image, SlotKind};
use std::sync::OnceLock;
use std::time::Duration;
use trainer::data::{Dataset, Split};
use trainer::eval::engine::run_engine;
use trainer::pipeline;
use trainer::quantize::Quantized;
use xtask::firmware::{self, Board, Kernels};
use xtask::qemu;

struct Int8 {
    quantized: Quantized,
    sparse: Vec<u8>,
    dense: Vec<u8>,
}

fn int8() -> &'static Int8 {
    static INT8: OnceLock<Int8> = OnceLock::new();
    INT8.get_or_init(|| {
        let f = fixture();
        let train_set = Dataset::load_split(&common::data_dir(), Split::Train).unwrap();
        let meta = Default::default();
        // The fixture's own network, so the f32 and int8 files compare layer by layer.
        let keep = trainer::pipeline::FileOptions {
            remove_dead_units: false,
            ..Default::default()
        };
        let (quantized, sparse) =
            trainer::pipeline::quantize(&f.model, &meta, "test", (&train_set, 256), keep).unwrap();
        let dense = write_int8(
            &quantized.network,
            &quantized.layers,
            Encoding::Dense,
            &Default::default(),
        )
        .unwrap();
        Int8 {
            quantized,
            sparse,
            dense,
        }
    })
}

#[test]
fn int8_engine_equals_the_quantized_definition_and_keeps_accuracy() {
    let (f, q) = (fixture(), int8());
    let aligned = AlignedBytes::from(q.sparse.as_slice());
    let model = Model::parse(&aligned).unwrap();
    assert_eq!(model.precision(), Precision::Int8);
    let run = run_engine(&aligned, &f.test_set).unwrap();
    for i in 0..f.test_set.len() {
        let expected = q.quantized.logits(f.test_set.image(i)).unwrap();
        let got = &run.logit_bits[i * run.classes..(i + 1) * run.classes];
        let got: Vec<i32> = got.iter().map(|&b| b as i32).collect();
        assert_eq!(got, expected, "image {i}");
    }
    let f32_run = run_engine(&AlignedBytes::from(f.sparse_file.as_slice()), &f.test_set).unwrap();
    let (a8, a32) = (run.result.accuracy(), f32_run.result.accuracy());
    eprintln!(
        "int8 {a8:.4} vs f32 {a32:.4} on {} images",
        f.test_set.len()
    );
    assert!(a8 > a32 - 0.02, "int8 {a8} vs f32 {a32}");
    // Every exact zero of the f32 model stays an exact zero: the file is as sparse.
    assert!(
        q.sparse.len() * 2 < f.sparse_file.len(),
        "{} vs {}",
        q.sparse.len(),
        f.sparse_file.len()
    );
}

#[test]
fn sparse_int8_is_bit_identical_on_mps2_an386() {
    assert_bit_identical_on(
        Board::Mps2An386,
        &int8().sparse,
        &fixture().test_set,
        "sparse-int8",
    );
}

#[test]
fn sparse_int8_is_bit_identical_on_netduinoplus2() {
    assert_bit_identical_on(
        Board::Netduinoplus2,
        &int8().sparse,
        &fixture().test_set,
        "sparse-int8",
    );
}

#[test]
fn dense_int8_is_bit_identical_on_both_boards() {
    for board in [Board::Mps2An386, Board::Netduinoplus2] {
        assert_bit_identical_on(board, &int8().dense, &fixture().test_set, "dense-int8");
    }
}

#[test]
fn a_damaged_int8_model_is_rejected_by_name() {
    let mut bytes = int8().sparse.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    let errors = rejected(Some(&slot_image(&bytes, SlotKind::Model)), "int8-flipped");
    assert!(errors.contains("ChecksumMismatch"), "{errors}");
}

/// `densify` of an int8 file gives the f32 weights the integers stand for: each within half a
/// quantization step of the model it was quantized from, every exact zero still zero.
#[test]
fn densified_int8_weights_are_within_half_a_step_and_keep_every_zero() {
    let (f, q) = (fixture(), int8());
    let aligned = AlignedBytes::from(q.sparse.as_slice());
    let (network, tensors) = trainer::export::densify(&aligned).unwrap();
    assert_eq!(&network, f.model.network());
    let source: std::collections::HashMap<String, Vec<f32>> =
        f.model.to_vecs().unwrap().into_iter().collect();
    for t in tensors.iter().filter(|t| t.name.ends_with(".weight")) {
        let src = &source[&t.name];
        let cols = src.len() / t.shape[0];
        for (r, (row, back)) in src.chunks(cols).zip(t.values.chunks(cols)).enumerate() {
            let step = row.iter().fold(0f32, |m, w| m.max(w.abs())) / 127.0;
            for (&w, &d) in row.iter().zip(back) {
                // Zeros stay zero (a weight under half a step may become one too).
                assert!(w != 0.0 || d == 0.0, "{} row {r}: {w} vs {d}", t.name);
                assert!(
                    (w - d).abs() <= 0.5001 * step + 1e-9,
                    "{} row {r}: {w} vs {d}",
                    t.name
                );
            }
        }
    }
}

/// The smallest image (int8 kernels without the dense ones) fits the footprint budget, runs the
/// sparse int8 file and the dense one (through its compact code) bit-identical to the host
/// engine, and refuses an f32 file by name.
#[test]
fn the_int8_sparse_image_fits_its_budget_and_runs_both_int8_files() {
    let board = Board::Mps2An386;
    let elf = firmware::build_image(board, Kernels::Int8Sparse, None).unwrap();
    let size = firmware::image_size(&elf).unwrap();
    assert!(
        size.text <= firmware::TEXT_BUDGET,
        ".text {} > {} bytes",
        size.text,
        firmware::TEXT_BUDGET
    );
    let (q, f) = (int8(), fixture());
    // Logits only: the files' layers stored dense do other work here than on the host.
    for (file, name) in [(&q.sparse, "small-sparse"), (&q.dense, "small-dense")] {
        common::assert_logits_identical_with(&elf, board, file, &f.test_set, name);
    }
    let dir = f.work.join("small-f32");
    std::fs::create_dir_all(&dir).unwrap();
    let slot = common::write_file(
        &dir,
        "model.slot",
        &slot_image(&f.sparse_file, SlotKind::Model),
    );
    let run = qemu::run(board, &elf, Some(&slot), None, Duration::from_secs(60)).unwrap();
    assert_ne!(run.exit_code, Some(0));
    let errors = run.errors().join("\n");
    assert!(errors.contains("PrecisionNotAccepted"), "{errors}");
}

/// One file to flash: an image that carries the sparse int8 model and the test images runs with
/// nothing in the flash regions, bit-identical to the host engine.
#[test]
fn an_image_with_its_model_embedded_runs_bit_identical() {
    let (q, f) = (int8(), fixture());
    let images = f.test_set.truncated(common::DEVICE_IMAGES);
    let files = pipeline::device_files(&AlignedBytes::from(&q.sparse[..]), &images).unwrap();
    let dir = f.work.join("embedded");
    std::fs::create_dir_all(&dir).unwrap();
    let model = common::write_file(&dir, "model.slot", &files.model_slot);
    let inputs = common::write_file(&dir, "inputs.slot", &files.inputs_slot);
    let board = Board::Mps2An386;
    // Buffers sized for the model's own network, as `cargo xtask firmware --embed` builds it.
    let aligned = AlignedBytes::from(q.sparse.as_slice());
    let network = model_format::NetworkDef::from_network(&Model::parse(&aligned).unwrap().network);
    let elf = firmware::build_embedded(board, Kernels::Int8Sparse, &model, &inputs, Some(&network))
        .unwrap();
    let run = qemu::run(board, &elf, None, None, Duration::from_secs(300)).unwrap();
    assert_eq!(run.exit_code, Some(0), "{:?}", run.errors());
    let report = qemu::parse_report(&run).unwrap();
    assert_eq!(report.images.len(), common::DEVICE_IMAGES);
    for (img, host) in report.images.iter().zip(&files.host.logit_bits) {
        assert_eq!(&img.logit_bits, host, "image {}", img.index);
    }
}

/// [`random_layers`] for `net`, with layer 0's rows 0 and 1 at shifts 31 and 32 when
/// `edge_shifts`: below and at the one-channel kernel's smallest.
fn random_model(net: &NetworkDef, density: f64, seed: u64, edge_shifts: bool) -> Vec<u8> {
    let mut layers = random_layers(net, density, seed);
    if edge_shifts {
        let first = net.layers()[0].name;
        let q = layers.get_mut(first).unwrap();
        for (r, real) in [(0, 0.75), (1, 0.3)] {
            (q.multiplier[r], q.shift[r]) = multiplier_for(real).unwrap();
        }
        assert_eq!(q.shift[..2], [31, 32]);
    }
    write_int8(net, &layers, Encoding::Smallest, &Default::default()).unwrap()
}

/// Random int8 models of the fixture's network, at three densities and with edge shifts, run on
/// the int8-sparse image and on the default one bit-identical to the host engine: the assembly
/// kernels against their portable twins on values no trained model reaches (extreme weights,
/// odd and even tap counts, CSR gaps over 255 columns, shifts of 31 and 32).
#[test]
fn random_int8_models_are_bit_identical_on_the_mcu() {
    let (q, f) = (int8(), fixture());
    let board = Board::Mps2An386;
    let small = firmware::build_image(board, Kernels::Int8Sparse, None).unwrap();
    let images = [("small", small), ("all", common::firmware_elf(board))];
    for (case, (density, edge_shifts)) in [(1.0, false), (0.3, true), (0.02, false)]
        .into_iter()
        .enumerate()
    {
        let file = random_model(&q.quantized.network, density, case as u64 + 1, edge_shifts);
        for (kernels, elf) in &images {
            let name = format!("random-{case}-{kernels}");
            common::assert_logits_identical_with(elf, board, &file, &f.test_set, &name);
        }
    }
}
