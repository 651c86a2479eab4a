//! The engine against plain-loop references on random sparse networks, sparse and dense storage
//! of the same weights agreeing, and the engine's MAC counts and errors.

use model_format::writer::{write, AlignedBytes, Encoding, LayerDef};
use model_format::{Flatten, LayerKind, Model, Shape3};
use proptest::prelude::*;
use sparse_engine::{BufferPlan, Engine, EngineError};
use std::collections::HashMap;

struct Net {
    input: Shape3,
    layers: Vec<LayerDef>,
    tensors: HashMap<String, Vec<f32>>,
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// conv(2→c1) → conv(c1→c2) → linear_relu (reading the map in `order`) → linear, with weights
/// of the given density.
fn net(
    size: usize,
    (c1, c2, hidden): (usize, usize, usize),
    order: Flatten,
    density: f64,
    seed: u64,
) -> Net {
    let mut next = rng(seed);
    let mut values = |n: usize, d: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let keep = (next() % 10_000) as f64 / 10_000.0 < d;
                let v = ((next() % 2001) as f32 - 1000.0) / 1000.0;
                if keep {
                    v
                } else {
                    0.0
                }
            })
            .collect()
    };
    let flat = c2 * (size / 4) * (size / 4);
    let layers = vec![
        LayerDef {
            name: "a".into(),
            kind: LayerKind::Conv3x3ReluMaxPool2,
            inputs: 2,
            outputs: c1,
        },
        LayerDef {
            name: "b".into(),
            kind: LayerKind::Conv3x3ReluMaxPool2,
            inputs: c1,
            outputs: c2,
        },
        LayerDef {
            name: "c".into(),
            kind: LayerKind::Linear { relu: true, order },
            inputs: flat,
            outputs: hidden,
        },
        LayerDef {
            name: "d".into(),
            kind: LayerKind::Linear {
                relu: false,
                order: Flatten::Chw,
            },
            inputs: hidden,
            outputs: 5,
        },
    ];
    let tensors = HashMap::from([
        ("a.weight".to_string(), values(c1 * 2 * 9, density)),
        ("a.bias".to_string(), values(c1, 1.0)),
        ("b.weight".to_string(), values(c2 * c1 * 9, density)),
        ("b.bias".to_string(), values(c2, 1.0)),
        ("c.weight".to_string(), values(hidden * flat, density)),
        ("c.bias".to_string(), values(hidden, 1.0)),
        ("d.weight".to_string(), values(5 * hidden, density)),
        ("d.bias".to_string(), values(5, 1.0)),
    ]);
    Net {
        input: Shape3 {
            channels: 2,
            height: size,
            width: size,
        },
        layers,
        tensors,
    }
}

/// Plain-loop reference in f64: conv with zero padding, ReLU, 2x2 max-pool; linear layers.
fn reference(net: &Net, image: &[u8]) -> Vec<f64> {
    let mut x: Vec<f64> = image.iter().map(|&p| f64::from(p) / 255.0).collect();
    let (mut c, mut h, mut w) = (net.input.channels, net.input.height, net.input.width);
    for l in &net.layers {
        let wt = &net.tensors[&format!("{}.weight", l.name)];
        let b = &net.tensors[&format!("{}.bias", l.name)];
        match l.kind {
            LayerKind::Conv3x3ReluMaxPool2 => {
                let co_n = l.outputs;
                let mut conv = vec![0f64; co_n * h * w];
                for co in 0..co_n {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut acc = f64::from(b[co]);
                            for ci in 0..c {
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let (iy, ix) = (
                                            y as isize + ky as isize - 1,
                                            xx as isize + kx as isize - 1,
                                        );
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        let v = x[(ci * h + iy as usize) * w + ix as usize];
                                        acc += f64::from(wt[((co * c + ci) * 3 + ky) * 3 + kx]) * v;
                                    }
                                }
                            }
                            conv[(co * h + y) * w + xx] = acc.max(0.0);
                        }
                    }
                }
                let (oh, ow) = (h / 2, w / 2);
                x = (0..co_n * oh * ow)
                    .map(|i| {
                        let (co, py, px) = (i / (oh * ow), (i / ow) % oh, i % ow);
                        let at =
                            |dy: usize, dx: usize| conv[(co * h + 2 * py + dy) * w + 2 * px + dx];
                        at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1))
                    })
                    .collect();
                (c, h, w) = (co_n, oh, ow);
            }
            LayerKind::Linear { relu, order } => {
                if order == Flatten::Hcw {
                    // Column (y·c + ci)·w + x reads map element (ci·h + y)·w + x.
                    x = (0..x.len())
                        .map(|k| {
                            let (y, ci, xx) = (k / (c * w), k / w % c, k % w);
                            x[(ci * h + y) * w + xx]
                        })
                        .collect();
                }
                let n_in = x.len();
                x = (0..l.outputs)
                    .map(|r| {
                        let s: f64 = f64::from(b[r])
                            + (0..n_in)
                                .map(|k| f64::from(wt[r * n_in + k]) * x[k])
                                .sum::<f64>();
                        if relu {
                            s.max(0.0)
                        } else {
                            s
                        }
                    })
                    .collect();
                (c, h, w) = (l.outputs, 1, 1);
            }
        }
    }
    x
}

fn run(bytes: &[u8], image: &[u8]) -> (Vec<f32>, u64) {
    let aligned = AlignedBytes::from(bytes);
    let model = Model::parse(&aligned).unwrap();
    let plan = BufferPlan::for_model(&model).unwrap();
    let (mut a, mut b) = (vec![0f32; plan.activations], vec![0u16; plan.tap_offsets]);
    let mut engine = Engine::new(&model, &mut a, &mut b).unwrap();
    let mut logits = vec![0f32; engine.classes()];
    engine.infer(image, &mut logits, &mut ()).unwrap();
    (logits, engine.stats().total_macs())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference_and_sparse_agrees_with_dense(
        quarter in 1usize..8,
        c1 in 1usize..6,
        c2 in 1usize..6,
        hidden in 1usize..12,
        hcw in any::<bool>(),
        density in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
        seed in any::<u64>(),
    ) {
        let size = 4 * quarter;
        let order = if hcw { Flatten::Hcw } else { Flatten::Chw };
        let n = net(size, (c1, c2, hidden), order, density, seed);
        let mut next = rng(seed ^ 0xABCD);
        let image: Vec<u8> = (0..2 * size * size).map(|_| next() as u8).collect();
        let expected = reference(&n, &image);
        let net = model_format::NetworkDef::new(n.input, n.layers.clone()).unwrap();
        let write_as = |e| write(&net, &n.tensors, e, &Default::default()).unwrap();
        let (sparse, sparse_macs) = run(&write_as(Encoding::Csr), &image);
        let (dense, dense_macs) = run(&write_as(Encoding::Dense), &image);
        let scale = expected.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, (&got, &want)) in sparse.iter().zip(&expected).enumerate() {
            prop_assert!(((f64::from(got) - want) / scale).abs() < 1e-5, "logit {}: {} vs {}", i, got, want);
        }
        for (a, b) in sparse.iter().zip(&dense) {
            prop_assert_eq!(a.to_bits(), b.to_bits(), "sparse {:?} vs dense {:?}", sparse, dense);
        }
        prop_assert!(sparse_macs <= dense_macs);
        if density == 0.0 {
            prop_assert_eq!(sparse_macs, 0);
        }
    }
}

#[test]
fn mac_counts_exclude_padding_and_zero_weights() {
    let n = net(8, (3, 4, 6), Flatten::Hcw, 1.0, 7);
    let image = vec![128u8; 2 * 64];
    let bytes = write(
        &model_format::NetworkDef::new(n.input, n.layers.clone()).unwrap(),
        &n.tensors,
        Encoding::Dense,
        &Default::default(),
    )
    .unwrap();
    let (_, macs) = run(&bytes, &image);
    // Conv taps on an h x w map with padding 1: per (co, ci), 3 rows·3 cols of taps cover
    // (3h−2)(3w−2) input positions.
    let conv = |co: u64, ci: u64, h: u64, w: u64| co * ci * (3 * h - 2) * (3 * w - 2);
    let expected = conv(3, 2, 8, 8) + conv(4, 3, 4, 4) + 16 * 6 + 6 * 5;
    assert_eq!(macs, expected);
}

#[test]
fn bad_buffers_and_inputs_are_errors() {
    let n = net(8, (3, 4, 6), Flatten::Chw, 0.5, 9);
    let bytes = write(
        &model_format::NetworkDef::new(n.input, n.layers.clone()).unwrap(),
        &n.tensors,
        Encoding::Smallest,
        &Default::default(),
    )
    .unwrap();
    let aligned = AlignedBytes::from(bytes.as_slice());
    let model = Model::parse(&aligned).unwrap();
    let plan = BufferPlan::for_model(&model).unwrap();
    // Windows: 4 rows × (2 channels × 15 + 1) (8 wide, widened to a chunk, one shared zero
    // column after each channel's row and one before the first) and 4 × (3 × 15 + 1); the map
    // 4·2·2 (conv b's output, later d's 5), the linear buffer c's 6. Tap tables 2·9 + 3·9.
    assert_eq!(
        (plan.activations, plan.tap_offsets),
        (124 + 184 + 16 + 6, 18 + 27)
    );
    let mut offsets = vec![0u16; plan.tap_offsets];
    let mut a = vec![0f32; plan.activations - 1];
    assert!(matches!(
        Engine::new(&model, &mut a, &mut offsets),
        Err(EngineError::BufferTooSmall { buffer: 0, .. })
    ));
    let mut a = vec![0f32; plan.activations];
    let mut short = vec![0u16; plan.tap_offsets - 1];
    assert!(matches!(
        Engine::new(&model, &mut a, &mut short),
        Err(EngineError::BufferTooSmall { buffer: 1, .. })
    ));
    // An engine with room for one conv layer (a firmware built for such a network) refuses
    // the model's two by name; with room for two it runs them.
    assert_eq!(
        Engine::<1>::with_stages(&model, &mut a, &mut offsets).err(),
        Some(EngineError::TooManyConvLayers {
            found: 2,
            capacity: 1
        })
    );
    let mut logits = [0f32; 5];
    {
        let mut two = Engine::<2>::with_stages(&model, &mut a, &mut offsets).unwrap();
        two.infer(&[7; 128], &mut logits, &mut ()).unwrap();
    }
    let tight = logits;
    let mut engine = Engine::new(&model, &mut a, &mut offsets).unwrap();
    engine.infer(&[7; 128], &mut logits, &mut ()).unwrap();
    assert_eq!(logits.map(f32::to_bits), tight.map(f32::to_bits));
    assert_eq!(
        engine.infer(&[0; 127], &mut logits, &mut ()),
        Err(EngineError::InputSize {
            expected: 128,
            found: 127
        })
    );
    assert_eq!(
        engine.infer(&[0; 128], &mut logits[..4], &mut ()),
        Err(EngineError::OutputSize {
            expected: 5,
            found: 4
        })
    );
}

#[test]
fn argmax_and_softmax() {
    assert_eq!(sparse_engine::argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
    let mut p = [1.0f32, 2.0, 3.0];
    sparse_engine::softmax(&mut p);
    let exact = [0.09003057f32, 0.24472847, 0.66524096];
    for (a, b) in p.iter().zip(exact) {
        assert!((a - b).abs() < 2e-3, "{p:?}");
    }
}

#[test]
fn a_first_layer_reading_the_image_row_major_matches_the_reference() {
    let mut n = net(4, (1, 1, 6), Flatten::Hcw, 0.7, 11);
    // Keep only the two linear layers, the first now reading the 2x4x4 image itself.
    n.layers.drain(..2);
    n.layers[0].inputs = 32;
    let mut next = rng(5);
    let weights: Vec<f32> = (0..6 * 32)
        .map(|_| ((next() % 2001) as f32 - 1000.0) / 1000.0)
        .collect();
    n.tensors.insert("c.weight".into(), weights);
    let image: Vec<u8> = (0..32).map(|_| next() as u8).collect();
    let expected = reference(&n, &image);
    for encoding in [Encoding::Csr, Encoding::Dense] {
        let bytes = write(
            &model_format::NetworkDef::new(n.input, n.layers.clone()).unwrap(),
            &n.tensors,
            encoding,
            &Default::default(),
        )
        .unwrap();
        let (got, _) = run(&bytes, &image);
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (f64::from(*g) - e).abs() < 1e-5 * e.abs().max(1.0),
                "{got:?} vs {expected:?}"
            );
        }
    }
}
