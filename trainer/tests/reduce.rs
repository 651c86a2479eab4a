//! Dead units removed: a model with known dead filters and neurons loses exactly those that can
//! go, and the reduced model's logits equal the full one's within float rounding, in Candle and
//! through the exported file in the firmware's engine.

use candle_core::{Device, Tensor};
use model_format::writer::AlignedBytes;
use model_format::NetworkDef;
use trainer::eval::engine::run_engine;
use trainer::model::Cnn;
use trainer::pipeline::{self, FileOptions};
use trainer::reduce::remove_dead_units;

/// conv 1→4, conv 4→6, fc_hcw 24→8 (ReLU), fc 8→3, on 1x8x8 images.
fn network() -> NetworkDef {
    let arch = "a:conv3x3_relu_maxpool2:1:4,b:conv3x3_relu_maxpool2:4:6,\
                c:linear_relu_hcw:24:8,d:linear:8:3";
    NetworkDef::parse("1x8x8", arch).unwrap()
}

/// A seeded model with these units made dead:
/// - a filter 1: zero weights, bias < 0 (outputs 0: goes);
/// - a filter 2: zero weights, bias > 0 (a constant a padded conv sees only inside: stays);
/// - b filter 3: zero weights, bias > 0 (a constant: folds into c's bias, goes);
/// - b filter 4: nothing in c reads it (goes);
/// - c row 5: zero weights, bias > 0 (folds into d's bias, goes);
/// - c row 6: d does not read it (goes).
fn model_with_dead_units() -> Cnn {
    let model = Cnn::seeded(&network(), 5, &Device::Cpu).unwrap();
    let mut v = model.to_vecs().unwrap();
    let mut set = |name: &str, f: &dyn Fn(&mut Vec<f32>)| {
        let (_, values) = v.iter_mut().find(|(n, _)| n == name).unwrap();
        f(values);
    };
    set("a.weight", &|w| w[9..27].fill(0.0));
    set("a.bias", &|b| (b[1], b[2]) = (-0.5, 0.3));
    set("b.weight", &|w| w[3 * 36..4 * 36].fill(0.0));
    set("b.bias", &|b| b[3] = 0.2);
    // c reads b's map channel-major in the trainer's layout: channel 4 is columns 16..20.
    set("c.weight", &|w| {
        w.chunks_exact_mut(24).for_each(|row| row[16..20].fill(0.0))
    });
    set("c.weight", &|w| w[5 * 24..6 * 24].fill(0.0));
    set("c.bias", &|b| b[5] = 0.7);
    set("d.weight", &|w| {
        w.chunks_exact_mut(8).for_each(|row| row[6] = 0.0)
    });
    model.with_values(v).unwrap()
}

fn images(n: usize) -> Vec<u8> {
    (0..n * 64).map(|i| (i * 97 % 256) as u8).collect()
}

fn logits(model: &Cnn, pixels: &[u8]) -> Vec<Vec<f32>> {
    let x: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let x = Tensor::from_vec(x, (pixels.len() / 64, 1, 8, 8), &Device::Cpu).unwrap();
    model.forward(&x).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn exactly_the_dead_units_go_and_the_logits_stay() {
    let full = model_with_dead_units();
    let (reduced, reduction) = remove_dead_units(&full).unwrap();
    let units: Vec<usize> = reduction
        .layers
        .iter()
        .map(|(_, _, after)| *after)
        .collect();
    assert_eq!(units, vec![3, 4, 6, 3], "{reduction:?}");
    assert_eq!(reduction.describe(), "a:4->3,b:6->4,c:8->6");
    let pixels = images(16);
    for (f, r) in logits(&full, &pixels).iter().zip(logits(&reduced, &pixels)) {
        for (a, b) in f.iter().zip(&r) {
            assert!((a - b).abs() < 1e-5, "{f:?} vs {r:?}");
        }
    }
    // Nothing more to remove.
    let (_, again) = remove_dead_units(&reduced).unwrap();
    assert!(!again.removed_any());
}

#[test]
fn the_exported_reduced_file_runs_in_the_engine_with_the_full_models_logits() {
    let full = model_with_dead_units();
    let bytes =
        pipeline::export(&full, &Default::default(), "test", FileOptions::default()).unwrap();
    let aligned = AlignedBytes::from(bytes.as_slice());
    let model = model_format::Model::parse(&aligned).unwrap();
    let outputs: Vec<usize> = model
        .network
        .layers
        .iter()
        .map(|l| l.output.channels)
        .collect();
    assert_eq!(outputs, vec![3, 4, 6, 3]);
    assert_eq!(
        model.metadata("removed_units"),
        Some("a:4->3,b:6->4,c:8->6")
    );
    let pixels = images(8);
    let data = trainer::data::Dataset::new(pixels.clone(), vec![0; 8], 8, 8).unwrap();
    let run = run_engine(&aligned, &data).unwrap();
    for (expected, got) in logits(&full, &pixels)
        .iter()
        .zip(run.logits.chunks_exact(3))
    {
        for (a, b) in expected.iter().zip(got) {
            assert!((a - b).abs() < 1e-4, "{expected:?} vs {got:?}");
        }
    }
    // Kept when asked.
    let keep = FileOptions {
        remove_dead_units: false,
        ..Default::default()
    };
    let bytes = pipeline::export(&full, &Default::default(), "test", keep).unwrap();
    let aligned = AlignedBytes::from(bytes.as_slice());
    let model = model_format::Model::parse(&aligned).unwrap();
    assert_eq!(NetworkDef::from_network(&model.network), network());
}
