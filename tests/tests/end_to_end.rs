//! The whole path on a slice of real MNIST: train briefly → prune → export → the firmware's
//! engine on the host agrees with candle → the firmware under QEMU gives bit-identical logits →
//! damaged models are rejected by name with a non-zero exit.

mod common;

use candle_core::Device;
use common::{
    assert_bit_identical_on, assert_bit_identical_with, data_dir, firmware_elf, fixture, rejected,
};
use model_format::reference::random_layers;
use model_format::writer::{write, write_int8, AlignedBytes, Encoding};
use model_format::NetworkDef;
use protocol::slot::{slot_image, SlotKind};
use std::collections::HashMap;
use trainer::data::{Dataset, Split};
use trainer::eval::engine::{compare_with_candle, run_engine};
use trainer::model::Cnn;
use trainer::pipeline;
use trainer::prune::PruneTarget;
use trainer::train::optim::{Penalty, Scope};
use trainer::train::{RunDir, RunOptions, TrainConfig};
use xtask::firmware::{self, Board};

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
    let (pruned, _) = pipeline::pruned(&loaded, target, 0.0).unwrap();
    // This network as it is (dead-unit removal has its own tests).
    let keep_units = pipeline::FileOptions {
        remove_dead_units: false,
        ..Default::default()
    };
    let file = pipeline::export(&pruned, &meta, "small-net", keep_units).unwrap();
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

/// The f32 image without the dense kernels fits the footprint budget, is smaller than the one
/// with them, and runs the sparse file and the same model stored dense (every weight a tap of
/// the sparse kernel) bit-identical to the host engine, which runs dense layers through the
/// fast kernels.
#[test]
fn the_f32_sparse_image_fits_its_budget_and_runs_dense_layers_with_the_same_logits() {
    let board = Board::Mps2An386;
    let [lean, full] = [firmware::Kernels::F32Sparse, firmware::Kernels::F32]
        .map(|k| firmware::build_image(board, k, None).unwrap());
    let [lean_text, full_text] = [&lean, &full].map(|e| firmware::image_size(e).unwrap().text);
    assert!(lean_text < full_text, "{lean_text} vs {full_text}");
    assert!(
        lean_text <= firmware::TEXT_BUDGET,
        ".text {lean_text} > {} bytes",
        firmware::TEXT_BUDGET
    );
    let f = fixture();
    let dense =
        trainer::export::export_bytes(&f.model, &Default::default(), Encoding::Dense).unwrap();
    for (file, name) in [(&f.sparse_file, "lean-sparse"), (&dense, "lean-dense")] {
        common::assert_logits_identical_with(&lean, board, file, &f.test_set, name);
    }
}

/// Maps whose width is not a multiple of the kernels' 14-column chunk: conv1 on a 20-wide image
/// (two overlapping chunks) and conv2 on its 10-wide output (narrower than a chunk), which the
/// data sets' 28- and 14-wide maps never take. Random weights of both precisions (f32 sparse
/// and dense, int8) on random images, run on the images for sparse models and the default one:
/// bit-identical to the host engine.
#[test]
fn maps_of_other_widths_run_bit_identical_on_the_mcu() {
    let network = NetworkDef::parse(
        "1x20x20",
        "conv1:conv3x3_relu_maxpool2:1:6,conv2:conv3x3_relu_maxpool2:6:8,\
         fc1:linear_relu_hcw:200:16,fc2:linear:16:10",
    )
    .unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = common::DEVICE_IMAGES;
    let images = (0..n * 400).map(|_| next() as u8).collect();
    let test_set = Dataset::new(images, (0..n).map(|i| (i % 10) as u8).collect(), 20, 20).unwrap();
    let mut tensors = HashMap::new();
    for layer in network.layers() {
        // Half the weights zero, the rest within ±1; biases within ±0.1.
        let mut values = |count: usize, scale: f32, density: u64| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    if next() % 100 < density {
                        ((next() % 2001) as f32 - 1000.0) / 1000.0 * scale
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let (weight, bias) = (
            values(layer.rows() * layer.cols(), 1.0, 50),
            values(layer.rows(), 0.1, 100),
        );
        tensors.insert(format!("{}.weight", layer.name), weight);
        tensors.insert(format!("{}.bias", layer.name), bias);
    }
    let f32_file = |encoding| write(&network, &tensors, encoding, &Default::default()).unwrap();
    let int8 = write_int8(
        &network,
        &random_layers(&network, 0.5, 5),
        Encoding::Smallest,
        &Default::default(),
    )
    .unwrap();
    let board = Board::Mps2An386;
    let [f32_sparse, int8_sparse] = [firmware::Kernels::F32Sparse, firmware::Kernels::Int8Sparse]
        .map(|k| firmware::build_image(board, k, None).unwrap());
    let all = firmware_elf(board);
    for (file, elf, name) in [
        (f32_file(Encoding::Csr), &f32_sparse, "widths-f32-csr-lean"),
        (
            f32_file(Encoding::Dense),
            &f32_sparse,
            "widths-f32-dense-lean",
        ),
        (f32_file(Encoding::Dense), &all, "widths-f32-dense-all"),
        (int8.clone(), &int8_sparse, "widths-int8-lean"),
        (int8.clone(), &all, "widths-int8-all"),
    ] {
        common::assert_logits_identical_with(elf, board, &file, &test_set, name);
    }
}
