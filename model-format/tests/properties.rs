//! Property tests: random sparse networks round-trip bit for bit, and no corruption of a valid
//! file makes the reader panic (a bounded in-test version of the `cargo fuzz` target).

mod common;

use model_format::writer::{write, AlignedBytes, Encoding, LayerDef};
use model_format::{LayerKind, Model, Shape3};
use proptest::prelude::*;
use std::collections::HashMap;

/// A random conv + linear network with weights of the given density (0..=1).
fn network(
    channels: usize,
    size: usize,
    outputs: usize,
    density: f64,
    seed: u64,
) -> (Shape3, Vec<LayerDef>, HashMap<String, Vec<f32>>) {
    let input = Shape3 {
        channels: 2,
        height: size,
        width: size,
    };
    let features = channels * (size / 2) * (size / 2);
    let layers = vec![
        LayerDef {
            name: "conv".into(),
            kind: LayerKind::Conv3x3ReluMaxPool2,
            inputs: 2,
            outputs: channels,
        },
        LayerDef {
            name: "fc".into(),
            kind: LayerKind::Linear {
                relu: true,
                order: model_format::Flatten::Chw,
            },
            inputs: features,
            outputs,
        },
    ];
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let keep = (next() % 10_000) as f64 / 10_000.0 < density;
                if keep {
                    f32::from_bits((next() as u32 & 0x807F_FFFF) | 0x3E00_0000)
                } else {
                    0.0
                }
            })
            .collect()
    };
    let tensors = HashMap::from([
        ("conv.weight".to_string(), values(channels * 2 * 9)),
        ("conv.bias".to_string(), values(channels)),
        ("fc.weight".to_string(), values(features * outputs)),
        ("fc.bias".to_string(), values(outputs)),
    ]);
    (input, layers, tensors)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_encoding_round_trips_bit_for_bit(
        channels in 1usize..40,
        half in 1usize..8,
        outputs in 1usize..300,
        density in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
        seed in any::<u64>(),
        encoding in prop_oneof![Just(Encoding::Smallest), Just(Encoding::Dense), Just(Encoding::Csr)],
    ) {
        let (input, layers, tensors) = network(channels, 2 * half, outputs, density, seed);
        let net = model_format::NetworkDef::new(input, layers).unwrap();
        let bytes = write(&net, &tensors, encoding, &Default::default()).unwrap();
        safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let aligned = AlignedBytes::from(bytes.as_slice());
        let model = Model::parse(&aligned).unwrap();
        for (layer, params) in model.layers_with_shapes() {
            let w = &tensors[&format!("{}.weight", layer.name)];
            let cols = layer.cols();
            for (i, &expected) in w.iter().enumerate() {
                prop_assert_eq!(params.weights.get(i / cols, i % cols, cols).to_bits(), expected.to_bits());
            }
            prop_assert_eq!(params.weights.nnz(), w.iter().filter(|&&x| x != 0.0).count());
            let b = &tensors[&format!("{}.bias", layer.name)];
            prop_assert_eq!(params.bias, &b[..]);
        }
    }

}

proptest! {
    // A bounded mutation run in every test pass; `cargo fuzz run reader` is the long one.
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_files_give_errors_not_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        csr in any::<bool>(),
    ) {
        let mut bytes = common::model_bytes(if csr { Encoding::Csr } else { Encoding::Dense });
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = Model::parse(&AlignedBytes::from(bytes.as_slice()));
    }
}

proptest! {
    /// The format's CRC-32 (a 16-entry table, for flash) equals the `crc` crate's
    /// CRC-32/ISO-HDLC, whole or fed in two pieces.
    #[test]
    fn crc32_equals_the_crc_crate(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        split in any::<prop::sample::Index>(),
    ) {
        let reference = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes);
        prop_assert_eq!(model_format::crc32::checksum(&bytes), reference);
        let (a, b) = bytes.split_at(split.index(bytes.len() + 1));
        let mut running = model_format::crc32::Crc32::new();
        running.update(a);
        running.update(b);
        prop_assert_eq!(running.finish(), reference);
    }
}
