//! The int8 engine against the plain-integer reference (`model_format::reference`) on random
//! sparse networks of every density and width, in every encoding: the logits must be equal
//! integers. Plus its MAC counts and its refusal of f32 models and short memory.

use model_format::quant::multiplier_for;
use model_format::reference::{int8_logits, random_layers};
use model_format::writer::{write_int8, AlignedBytes, Encoding, LayerDef};
use model_format::{Flatten, LayerKind, Model, NetworkDef, Shape3};
use proptest::prelude::*;
use sparse_engine::{Cursor, EngineError, Int8Engine, Int8Memory, Int8Plan};
use std::collections::{BTreeMap, HashMap};

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// conv(channels→c1) → conv(c1→c2) → linear_relu (reading the map in `order`) → linear(→5), on a
/// `size`x`size` input.
fn network(
    (channels, size): (usize, usize),
    (c1, c2, hidden): (usize, usize, usize),
    order: Flatten,
) -> NetworkDef {
    let flat = c2 * (size / 4) * (size / 4);
    let def = |name: &str, kind, inputs, outputs| LayerDef {
        name: name.into(),
        kind,
        inputs,
        outputs,
    };
    let conv = LayerKind::Conv3x3ReluMaxPool2;
    NetworkDef::new(
        Shape3 {
            channels,
            height: size,
            width: size,
        },
        vec![
            def("a", conv, channels, c1),
            def("b", conv, c1, c2),
            def("c", LayerKind::Linear { relu: true, order }, flat, hidden),
            def(
                "d",
                LayerKind::Linear {
                    relu: false,
                    order: Flatten::Chw,
                },
                hidden,
                5,
            ),
        ],
    )
    .unwrap()
}

/// Random weights in −127..=127 of the given density, biases and requantizations that keep
/// activations mostly inside 0..=255 (so the test exercises values, not only the clamp).
struct Buffers {
    activations: Vec<i16>,
    acc: Vec<i32>,
    taps: Vec<u16>,
    cursors: Vec<Cursor>,
    scratch: Vec<u32>,
}

impl Buffers {
    fn for_plan(plan: &Int8Plan) -> Self {
        Buffers {
            activations: vec![0; plan.activations],
            acc: vec![0; plan.accumulators],
            taps: vec![0; plan.tap_offsets],
            cursors: vec![Cursor::default(); plan.cursors],
            scratch: vec![0; plan.scratch],
        }
    }

    fn memory(&mut self) -> Int8Memory<'_> {
        Int8Memory {
            activations: &mut self.activations,
            accumulators: &mut self.acc,
            tap_offsets: &mut self.taps,
            cursors: &mut self.cursors,
            scratch: &mut self.scratch,
        }
    }
}

/// Logits of each image through the engine, and its MACs per image.
fn run(file: &[u8], images: &[Vec<u8>]) -> (Vec<Vec<i32>>, u64) {
    let aligned = AlignedBytes::from(file);
    let model = Model::parse(&aligned).unwrap();
    let mut buffers = Buffers::for_plan(&Int8Plan::for_model(&model).unwrap());
    let mut engine = Int8Engine::new(&model, buffers.memory()).unwrap();
    let mut macs = 0;
    let logits = images
        .iter()
        .map(|image| {
            let mut out = vec![0i32; engine.classes()];
            engine.infer(image, &mut out, &mut ()).unwrap();
            macs = engine.stats().total_macs();
            out
        })
        .collect();
    (logits, macs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn engine_equals_integer_reference_in_every_encoding(
        quarter in 1usize..6,
        c1 in 1usize..6,
        c2 in 1usize..7,
        hidden in 1usize..12,
        hcw in any::<bool>(),
        density in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
        seed in any::<u64>(),
    ) {
        let order = if hcw { Flatten::Hcw } else { Flatten::Chw };
        let net = network((2, 4 * quarter), (c1, c2, hidden), order);
        let encodings = [Encoding::Dense, Encoding::Csr, Encoding::Smallest];
        check_against_reference(&net, density, seed, &encodings)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A one-channel 28x28 input, as the data sets' images: a first layer stored dense runs
    /// through the one-channel kernel (every tap, two per `SMLAD`), CSR through the tap-by-tap
    /// one; both equal the reference.
    #[test]
    fn one_channel_images_equal_the_integer_reference(
        c1 in 1usize..5,
        density in prop_oneof![Just(1.0), 0.0f64..1.0],
        seed in any::<u64>(),
    ) {
        let net = network((1, 28), (c1, 2, 3), Flatten::Hcw);
        check_against_reference(&net, density, seed, &[Encoding::Dense, Encoding::Csr])?;
    }
}

/// Random weights of `density` for `net`, written in each of `encodings`: the engine's logits
/// on three random images equal the plain-integer reference's.
fn check_against_reference(
    net: &NetworkDef,
    density: f64,
    seed: u64,
    encodings: &[Encoding],
) -> Result<(), TestCaseError> {
    let layers = random_layers(net, density, seed);
    let mut next = rng(seed ^ 0x5eed);
    let images: Vec<Vec<u8>> = (0..3)
        .map(|_| (0..net.input().len()).map(|_| next() as u8).collect())
        .collect();
    let expected: Vec<Vec<i32>> = images
        .iter()
        .map(|im| int8_logits(net, &layers, im).unwrap())
        .collect();
    for &encoding in encodings {
        let file = write_int8(net, &layers, encoding, &BTreeMap::new()).unwrap();
        let (logits, _) = run(&file, &images);
        prop_assert_eq!(&logits, &expected, "encoding {:?}", encoding);
    }
    Ok(())
}

/// A wide layer whose columns have gaps over 255 (zero bridges in the file) still computes the
/// reference, and the sparse MAC count is that of the non-zero weights only.
#[test]
fn long_gaps_and_mac_counts() {
    let net = network((2, 28), (3, 4, 6), Flatten::Hcw);
    let mut layers = random_layers(&net, 1.0, 7);
    // fc "c" (196 columns... 4·7·7 = 196) and conv "b": keep two weights per row, far apart.
    for name in ["a", "b", "c", "d"] {
        let q = layers.get_mut(name).unwrap();
        let cols = q.weights.len() / q.bias.len();
        for (r, row) in q.weights.chunks_exact_mut(cols).enumerate() {
            for (c, w) in row.iter_mut().enumerate() {
                if c != r % cols && c != cols - 1 {
                    *w = 0;
                }
            }
        }
    }
    let image: Vec<u8> = (0..net.input().len())
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    let expected = int8_logits(&net, &layers, &image).unwrap();
    let dense = write_int8(&net, &layers, Encoding::Dense, &BTreeMap::new()).unwrap();
    let csr = write_int8(&net, &layers, Encoding::Csr, &BTreeMap::new()).unwrap();
    let (dense_logits, dense_macs) = run(&dense, std::slice::from_ref(&image));
    let (csr_logits, csr_macs) = run(&csr, std::slice::from_ref(&image));
    assert_eq!(dense_logits[0], expected);
    assert_eq!(csr_logits[0], expected);
    assert!(csr_macs < dense_macs, "{csr_macs} vs {dense_macs}");
}

/// A one-channel 28-wide layer stored dense takes the image kernel only when every channel's
/// shift is 32 or more (its in-loop requantization needs it): with one smaller shift it runs
/// through the tap-by-tap kernel, which skips the zero weights. Both equal the reference.
#[test]
fn a_shift_below_32_takes_the_tap_kernel() {
    let net = network((1, 28), (2, 3, 4), Flatten::Hcw);
    let mut layers = random_layers(&net, 1.0, 11);
    let a = layers.get_mut("a").unwrap();
    a.weights.iter_mut().step_by(3).for_each(|w| *w = 0);
    let image: Vec<u8> = (0..net.input().len())
        .map(|i| (i * 53 % 256) as u8)
        .collect();
    let mut macs = Vec::new();
    for small in [false, true] {
        if small {
            let (m, s) = multiplier_for(0.75).unwrap();
            assert!(s < 32);
            let a = layers.get_mut("a").unwrap();
            (a.multiplier[1], a.shift[1]) = (m, s);
        }
        let expected = int8_logits(&net, &layers, &image).unwrap();
        let file = write_int8(&net, &layers, Encoding::Dense, &BTreeMap::new()).unwrap();
        let (logits, n) = run(&file, std::slice::from_ref(&image));
        assert_eq!(logits[0], expected, "shift below 32: {small}");
        macs.push(n);
    }
    // conv "a": 2 channels · 28·28 positions · 9 taps (less padding), a third of them zero.
    assert!(macs[1] < macs[0], "{macs:?}");
}

#[test]
fn refuses_f32_models_and_short_memory() {
    let net = network((2, 8), (2, 2, 3), Flatten::Hcw);
    let layers = random_layers(&net, 0.5, 1);
    let file = write_int8(&net, &layers, Encoding::Smallest, &BTreeMap::new()).unwrap();
    let aligned = AlignedBytes::from(file.as_slice());
    let model = Model::parse(&aligned).unwrap();
    let plan = Int8Plan::for_model(&model).unwrap();
    let mut short = Buffers::for_plan(&plan);
    short.activations.pop();
    assert!(matches!(
        Int8Engine::new(&model, short.memory()),
        Err(EngineError::BufferTooSmall { buffer: 2, .. })
    ));
    let mut buffers = Buffers::for_plan(&plan);
    assert!(matches!(
        Int8Engine::<1>::with_stages(&model, buffers.memory()),
        Err(EngineError::TooManyConvLayers {
            found: 2,
            capacity: 1
        })
    ));
    let mut engine = Int8Engine::<2>::with_stages(&model, buffers.memory()).unwrap();
    let mut logits = [0i32; 4];
    assert!(matches!(
        engine.infer(&[0u8; 128], &mut logits, &mut ()),
        Err(EngineError::OutputSize { .. })
    ));

    let tensors: HashMap<String, Vec<f32>> = net
        .layers()
        .iter()
        .flat_map(|l| {
            [
                (format!("{}.weight", l.name), vec![0.5; l.rows() * l.cols()]),
                (format!("{}.bias", l.name), vec![0.0; l.rows()]),
            ]
        })
        .collect();
    let f32_file =
        model_format::writer::write(&net, &tensors, Encoding::Smallest, &BTreeMap::new()).unwrap();
    let aligned = AlignedBytes::from(f32_file.as_slice());
    let f32_model = Model::parse(&aligned).unwrap();
    assert_eq!(
        Int8Plan::for_model(&f32_model),
        Err(EngineError::WrongPrecision)
    );
}

/// A sparse model's kernel scratch is its longest conv row's taps and two ends (the network's
/// bound is every tap's): what the firmware sizes its scratch by when the model is built in.
/// The engine runs the reference's logits in exactly that much, and refuses one word less.
#[test]
fn scratch_is_sized_by_the_longest_sparse_row() {
    let net = network((2, 12), (6, 8, 5), Flatten::Hcw);
    let mut layers = random_layers(&net, 1.0, 23);
    // Conv "b" (6 channels, 54 taps per row): row r keeps r + 3 weights, so the longest has 10.
    let b = layers.get_mut("b").unwrap();
    let taps = b.weights.len() / b.bias.len();
    for (r, row) in b.weights.chunks_exact_mut(taps).enumerate() {
        row.iter_mut()
            .enumerate()
            .for_each(|(c, w)| *w = if c < r + 3 { (c as i8 % 5) + 1 } else { 0 });
    }
    let file = write_int8(&net, &layers, Encoding::Csr, &BTreeMap::new()).unwrap();
    let aligned = AlignedBytes::from(file.as_slice());
    let model = Model::parse(&aligned).unwrap();
    let plan = Int8Plan::for_model(&model).unwrap();
    // Conv "a" has 2 · 9 = 18 taps per row, denser than any of "b"'s rows but for the last.
    let a = &layers["a"];
    let a_longest = a
        .weights
        .chunks_exact(18)
        .map(|row| row.iter().filter(|&&w| w != 0).count())
        .max()
        .unwrap();
    assert_eq!(plan.scratch, a_longest.max(10) + 2);
    assert!(plan.scratch < 54 + 2);

    let image: Vec<u8> = (0..net.input().len())
        .map(|i| (i * 29 % 256) as u8)
        .collect();
    let expected = int8_logits(&net, &layers, &image).unwrap();
    let (logits, _) = run(&file, std::slice::from_ref(&image));
    assert_eq!(logits[0], expected);

    let mut short = Buffers::for_plan(&plan);
    short.scratch.pop();
    assert!(matches!(
        Int8Engine::new(&model, short.memory()),
        Err(EngineError::BufferTooSmall { buffer: 6, .. })
    ));
}
