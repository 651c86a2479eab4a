//! Feeds arbitrary bytes to the heap-free reader: it must return a model or an error, never
//! panic, and whatever it accepts must be safe to walk completely.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_format::{Model, Weights};
use model_format::quant::accumulator_fits;

fuzz_target!(|data: &[u8]| {
    // Copy into 4-byte-aligned memory, as flash would hold the model.
    let mut words = vec![0u32; data.len().div_ceil(4)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    bytes[..data.len()].copy_from_slice(data);
    if let Ok(model) = Model::parse(&bytes[..data.len()]) {
        for (layer, params) in model.layers_with_shapes() {
            let cols = layer.cols();
            if let Weights::Csr(csr) = params.weights {
                for row in 0..csr.rows {
                    let _ = params.weights.get(row, cols.saturating_sub(1), cols);
                }
            }
        }
        // Int8 layers: every row's entries walk in bounds, and the accumulator bound the
        // kernels rely on holds.
        for p in model.int8() {
            if let model_format::WeightsI8::Csr(csr) = p.weights {
                for (row, &bias) in p.bias.iter().enumerate().take(csr.rows) {
                    assert!(csr.row(row).all(|(col, _)| col < csr.cols));
                    assert!(accumulator_fits(bias, csr.row(row).map(|(_, w)| w)));
                }
            }
        }
    };
});
