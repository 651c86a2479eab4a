//! Int8 models (format 1.3): the writer's output reads back value for value in both encodings,
//! golden files stay what the writer produces and every single-bit flip of them is rejected,
//! the reader rejects out-of-range values with typed errors, and corrupted files (checksums
//! resealed, so the validators see the damage) give errors, never panics.

mod common;

use model_format::quant::multiplier_for;
use model_format::writer::AlignedBytes;
use model_format::writer::{write_int8, Encoding, LayerDef, QuantizedLayer, WriteError};
use model_format::{
    Error, Flatten, LayerKind, Model, NetworkDef, Part, Precision, Shape3, WeightsI8,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

fn net(channels: usize, outputs: usize) -> NetworkDef {
    let input = Shape3 {
        channels: 1,
        height: 4,
        width: 4,
    };
    let linear = |relu| LayerKind::Linear {
        relu,
        order: Flatten::Chw,
    };
    NetworkDef::new(
        input,
        vec![
            LayerDef {
                name: "conv".into(),
                kind: LayerKind::Conv3x3ReluMaxPool2,
                inputs: 1,
                outputs: channels,
            },
            LayerDef {
                name: "fc".into(),
                kind: linear(true),
                inputs: channels * 4,
                outputs,
            },
            LayerDef {
                name: "out".into(),
                kind: linear(false),
                inputs: outputs,
                outputs: 3,
            },
        ],
    )
    .unwrap()
}

fn layer(rows: usize, cols: usize, weight: impl Fn(usize) -> i8) -> QuantizedLayer {
    let (m, s) = multiplier_for(0.003).unwrap();
    QuantizedLayer {
        weights: (0..rows * cols).map(weight).collect(),
        bias: (0..rows).map(|r| r as i32 * 37 - 50).collect(),
        output_scale: 0.01,
        multiplier: vec![m; rows],
        shift: vec![s; rows],
    }
}

fn layers(
    channels: usize,
    outputs: usize,
    weight: impl Fn(usize) -> i8 + Copy,
) -> HashMap<String, QuantizedLayer> {
    HashMap::from([
        ("conv".to_string(), layer(channels, 9, weight)),
        ("fc".to_string(), layer(outputs, channels * 4, weight)),
        ("out".to_string(), layer(3, outputs, weight)),
    ])
}

/// The dense matrix a parsed int8 layer holds.
fn dense(weights: &WeightsI8<'_>, rows: usize, cols: usize) -> Vec<i8> {
    match weights {
        WeightsI8::Dense(v) => v.to_vec(),
        WeightsI8::Csr(c) => {
            let mut out = vec![0i8; rows * cols];
            for r in 0..rows {
                for (col, v) in c.row(r) {
                    out[r * cols + col] = v;
                }
            }
            out
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn int8_layers_round_trip(
        channels in 1usize..70,
        outputs in 1usize..40,
        density in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
        seed in any::<u64>(),
        encoding in prop_oneof![Just(Encoding::Smallest), Just(Encoding::Dense), Just(Encoding::Csr)],
    ) {
        let weight = move |i: usize| {
            let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            if (h % 10_000) as f64 / 10_000.0 < density { (((h >> 14) % 255) as i32 - 127) as i8 } else { 0 }
        };
        let def = net(channels, outputs);
        let q = layers(channels, outputs, weight);
        let bytes = write_int8(&def, &q, encoding, &BTreeMap::new()).unwrap();
        let aligned = model_format::writer::AlignedBytes::from(bytes.as_slice());
        let model = Model::parse(&aligned).unwrap();
        prop_assert_eq!(model.precision(), Precision::Int8);
        prop_assert!(model.layers().is_empty());
        for (layer, p) in model.int8_with_shapes() {
            let want = &q[layer.name];
            let (rows, cols) = (layer.rows(), layer.cols());
            prop_assert_eq!(dense(&p.weights, rows, cols), want.weights.clone());
            prop_assert_eq!(p.bias, want.bias.as_slice());
            prop_assert_eq!(p.multiplier, want.multiplier.as_slice());
            prop_assert_eq!(p.shift, want.shift.as_slice());
            if encoding == Encoding::Csr {
                prop_assert!(matches!(p.weights, WeightsI8::Csr(_)));
            }
        }
    }
}

fn rejected(q: HashMap<String, QuantizedLayer>, def: &NetworkDef) -> Error {
    match write_int8(def, &q, Encoding::Csr, &BTreeMap::new()) {
        Err(WriteError::ReadBack(e)) => e,
        other => panic!("expected the reader to reject the file, got {other:?}"),
    }
}

#[test]
fn a_weight_of_minus_128_is_rejected() {
    let mut q = layers(2, 2, |i| if i == 3 { -100 } else { 0 });
    q.get_mut("fc").unwrap().weights[5] = -128;
    let e = rejected(q, &net(2, 2));
    assert!(
        matches!(
            e,
            Error::ValueOutOfRange {
                layer: 1,
                part: Part::Weight,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_accumulator_that_could_overflow_is_rejected() {
    let mut q = layers(2, 2, |_| 127);
    q.get_mut("fc").unwrap().bias[1] = i32::MAX - 10;
    let e = rejected(q, &net(2, 2));
    assert_eq!(e, Error::AccumulatorRange { layer: 1, row: 1 });
}

#[test]
fn bad_requantization_parameters_are_rejected() {
    let mut q = layers(2, 2, |_| 1);
    q.get_mut("conv").unwrap().shift[0] = 0;
    assert!(matches!(
        rejected(q, &net(2, 2)),
        Error::ValueOutOfRange {
            layer: 0,
            part: Part::Shift,
            index: 0
        }
    ));
    let mut q = layers(2, 2, |_| 1);
    q.get_mut("out").unwrap().multiplier[2] = -1;
    assert!(matches!(
        rejected(q, &net(2, 2)),
        Error::ValueOutOfRange {
            layer: 2,
            part: Part::Multiplier,
            index: 2
        }
    ));
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let mut q = layers(2, 2, |_| 1);
        q.get_mut("fc").unwrap().output_scale = bad;
        let e = write_int8(&net(2, 2), &q, Encoding::Csr, &BTreeMap::new());
        assert!(
            matches!(e, Err(WriteError::BadScale { .. })),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn a_hidden_layer_without_relu_is_rejected() {
    let input = Shape3 {
        channels: 1,
        height: 2,
        width: 2,
    };
    let linear = |relu| LayerKind::Linear {
        relu,
        order: Flatten::Chw,
    };
    let def = NetworkDef::new(
        input,
        vec![
            LayerDef {
                name: "a".into(),
                kind: linear(false),
                inputs: 4,
                outputs: 2,
            },
            LayerDef {
                name: "b".into(),
                kind: linear(false),
                inputs: 2,
                outputs: 2,
            },
        ],
    )
    .unwrap();
    let q = HashMap::from([
        ("a".to_string(), layer(2, 4, |_| 1)),
        ("b".to_string(), layer(2, 2, |_| 1)),
    ]);
    assert_eq!(rejected(q, &def), Error::Int8NeedsRelu { layer: 0 });
}

#[test]
fn long_gaps_are_bridged_by_zero_entries() {
    // fc has 70·4 = 280 columns: a row with weights at 0 and 279 needs one bridge of 255.
    let def = net(70, 1);
    let mut q = layers(70, 1, |_| 0);
    let fc = q.get_mut("fc").unwrap();
    fc.weights[0] = 5;
    fc.weights[279] = -7;
    let bytes = write_int8(&def, &q, Encoding::Csr, &BTreeMap::new()).unwrap();
    let aligned = model_format::writer::AlignedBytes::from(bytes.as_slice());
    let model = Model::parse(&aligned).unwrap();
    let WeightsI8::Csr(c) = model.int8()[1].weights else {
        panic!("csr expected")
    };
    assert_eq!(
        c.row(0).collect::<Vec<_>>(),
        vec![(0, 5), (255, 0), (279, -7)]
    );
    assert_eq!(model.int8()[1].weights.nnz(), 2);
}

/// The golden int8 network: 2 filters, 3 hidden units, 3 outputs; every fourth weight zero.
fn golden_bytes(encoding: Encoding) -> Vec<u8> {
    let weight = |i: usize| {
        if i.is_multiple_of(4) {
            0
        } else {
            ((i * 37 % 253) as i32 - 126) as i8
        }
    };
    let provenance = BTreeMap::from([("dataset".to_string(), "unit-test".to_string())]);
    write_int8(&net(2, 3), &layers(2, 3, weight), encoding, &provenance).unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const GOLDEN: [(&str, Encoding); 2] = [
    ("v1.3-int8-dense.safetensors", Encoding::Dense),
    ("v1.3-int8-csr.safetensors", Encoding::Csr),
];

#[test]
fn golden_v1_3_files_read_and_the_writer_still_produces_them() {
    for (name, encoding) in GOLDEN {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(fixture(name), golden_bytes(encoding)).unwrap();
        }
        let golden = std::fs::read(fixture(name)).unwrap();
        assert_eq!(
            golden,
            golden_bytes(encoding),
            "{name}: writer output changed (UPDATE_GOLDEN=1 to accept)"
        );
        let aligned = AlignedBytes::from(golden.as_slice());
        let model = Model::parse(&aligned).unwrap();
        assert_eq!(model.precision(), Precision::Int8);
        assert_eq!(model.metadata("format_version"), Some("1.3"));
        assert!(model.metadata("output_scales").is_some());
        let csr = model
            .int8()
            .iter()
            .any(|p| matches!(p.weights, WeightsI8::Csr(_)));
        assert_eq!(csr, encoding == Encoding::Csr, "{name}");
    }
}

#[test]
fn every_single_bit_flip_of_an_int8_file_is_a_typed_error() {
    for (name, _) in GOLDEN {
        let golden = std::fs::read(fixture(name)).unwrap();
        let mut flipped = golden.clone();
        for bit in 0..golden.len() * 8 {
            flipped[bit / 8] ^= 1 << (bit % 8);
            let aligned = AlignedBytes::from(flipped.as_slice());
            assert!(
                Model::parse(&aligned).is_err(),
                "{name}: bit {bit} flipped is accepted"
            );
            flipped[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

proptest! {
    // Bounded in every test pass; `cargo fuzz run reader` is the long run.
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_int8_files_give_errors_not_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        csr in any::<bool>(),
        in_header in any::<bool>(),
    ) {
        let bytes = golden_bytes(if csr { Encoding::Csr } else { Encoding::Dense });
        let (mut header, mut data) = common::split(&bytes);
        for (at, value) in edits {
            if in_header {
                // A printable byte, so the header stays text the edit can be resealed in.
                let i = at.index(header.len());
                if header.is_char_boundary(i) && header.is_char_boundary(i + 1) {
                    header.replace_range(i..i + 1, &char::from(value % 95 + 32).to_string());
                }
            } else if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = value;
            }
        }
        let _ = Model::parse(&common::assemble(&header, &data, true));
    }
}

/// A reader that accepts one precision refuses the other by name, and still reads its own.
#[test]
fn a_reader_for_one_precision_refuses_the_other() {
    for (name, precision) in [
        ("v1.3-int8-csr.safetensors", Precision::Int8),
        ("v1.2-csr.safetensors", Precision::F32),
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let aligned = AlignedBytes::from(bytes.as_slice());
        let (f32_only, int8_only) = (
            Model::parse_accepting::<true, false>(&aligned),
            Model::parse_accepting::<false, true>(&aligned),
        );
        let (refused, accepted) = match precision {
            Precision::Int8 => (f32_only, int8_only),
            Precision::F32 => (int8_only, f32_only),
        };
        assert_eq!(
            refused.err(),
            Some(Error::PrecisionNotAccepted { precision }),
            "{name}"
        );
        assert_eq!(accepted.unwrap().precision(), precision, "{name}");
    }
}
