//! Evaluating an exported sparse file with the firmware's own engine, and comparing it with the
//! candle model.

use crate::data::Dataset;
use crate::eval::EvalResult;
use crate::model::Cnn;
use anyhow::{anyhow, Result};
use candle_core::Device;
use model_format::Model;
use sparse_engine::{argmax, BufferPlan, Engine};

/// What the engine produced over a dataset.
#[derive(Debug, Clone)]
pub struct EngineRun {
    pub result: EvalResult,
    /// Logits, `classes` per image, in dataset order.
    pub logits: Vec<f32>,
    pub classes: usize,
    /// Multiply-accumulates per image, per layer (identical for every image).
    pub layer_macs: Vec<u64>,
    pub buffer_bytes: usize,
}

/// Runs every image of `data` through the engine.
pub fn run_engine(bytes: &[u8], data: &Dataset) -> Result<EngineRun> {
    let model = Model::parse(bytes).map_err(|e| anyhow!("invalid model file: {e}"))?;
    let plan = BufferPlan::for_model(&model).map_err(|e| anyhow!("{e}"))?;
    let (mut a, mut b) = (vec![0f32; plan.activations], vec![0u16; plan.tap_offsets]);
    let mut engine = Engine::new(&model, &mut a, &mut b).map_err(|e| anyhow!("{e}"))?;
    let classes = engine.classes();
    data.check_input(engine.input_shape())?;
    let mut result = EvalResult::default();
    let mut logits = vec![0f32; classes * data.len()];
    let mut layer_macs = Vec::new();
    for (i, out) in logits.chunks_exact_mut(classes).enumerate() {
        let stats = engine
            .infer(data.image(i), out, &mut ())
            .map_err(|e| anyhow!("{e}"))?;
        result.record(usize::from(data.labels[i]), argmax(out));
        layer_macs = stats.layer_macs[..stats.layers].to_vec();
    }
    Ok(EngineRun {
        result,
        logits,
        classes,
        layer_macs,
        buffer_bytes: plan.bytes(),
    })
}

/// Agreement between the engine's logits and the candle model's on the same images.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    pub images: usize,
    pub same_prediction: usize,
    pub max_abs_logit_diff: f32,
}

pub fn compare_with_candle(model: &Cnn, data: &Dataset, run: &EngineRun) -> Result<Agreement> {
    let mut same = 0;
    let mut max_diff = 0f32;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(500) {
        let (x, _) = data.batch(chunk, &Device::Cpu)?;
        let candle_logits = model.forward(&x)?.to_vec2::<f32>()?;
        for (&i, row) in chunk.iter().zip(&candle_logits) {
            let engine_row = &run.logits[i * run.classes..(i + 1) * run.classes];
            if argmax(engine_row) == argmax(row) {
                same += 1;
            }
            for (a, b) in engine_row.iter().zip(row) {
                max_diff = max_diff.max((a - b).abs());
            }
        }
    }
    Ok(Agreement {
        images: data.len(),
        same_prediction: same,
        max_abs_logit_diff: max_diff,
    })
}
