//! Export of a pruned model: opens with the official safetensors crate, densifies back bit for
//! bit, and is far smaller than dense f32.

use candle_core::Device;
use model_format::writer::{AlignedBytes, Encoding};
use trainer::export::{densify, export_bytes, inspect};
use trainer::model::Cnn;
use trainer::prune::{prune, PruneTarget};

fn pruned_model(fraction: f64) -> Cnn {
    let model = Cnn::new_seeded(9, &Device::Cpu).unwrap();
    let mut params = model.to_vecs().unwrap();
    prune(
        &mut params,
        PruneTarget::Sparsity {
            fraction,
            per_layer: false,
        },
    );
    model.with_values(params).unwrap()
}

#[test]
fn export_densify_round_trip_is_bit_exact_for_every_encoding() {
    let model = pruned_model(0.99);
    for encoding in [Encoding::Smallest, Encoding::Csr, Encoding::Dense] {
        let bytes = export_bytes(&model, &Default::default(), encoding).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.len() >= 8);
        let (network, back) = densify(&AlignedBytes::from(bytes.as_slice())).unwrap();
        assert_eq!(&network, model.network());
        let original = model.to_named().unwrap();
        for t in &original {
            let got = back.iter().find(|b| b.name == t.name).unwrap();
            assert_eq!(got.shape, t.shape, "{}", t.name);
            let same = got
                .values
                .iter()
                .zip(&t.values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} differs after densify ({encoding:?})", t.name);
        }
        // The densified tensors load as the candle model.
        Cnn::from_named(&network, &back, &Device::Cpu).unwrap();
    }
}

#[test]
fn a_99_percent_sparse_export_is_at_least_50x_smaller() {
    let model = pruned_model(0.991);
    let bytes = export_bytes(&model, &Default::default(), Encoding::Smallest).unwrap();
    let report = inspect(&AlignedBytes::from(bytes.as_slice())).unwrap();
    assert_eq!(report.dense_f32_bytes, 1_686_568);
    assert!(
        report.file_bytes * 50 <= report.dense_f32_bytes,
        "{} bytes",
        report.file_bytes
    );
    assert_eq!(report.parameters, 421_642);
}
