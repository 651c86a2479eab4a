//! Evaluating an exported sparse file with the firmware's own engine, and comparing it with the
//! candle model.

use crate::data::Dataset;
use crate::eval::EvalResult;
use crate::model::Cnn;
use anyhow::{anyhow, Result};
use candle_core::Device;
use model_format::{Model, Precision};
use sparse_engine::{argmax, BufferPlan, Cursor, Engine, Int8Engine, Int8Memory, Int8Plan, Stats};

/// What the engine produced over a dataset.
#[derive(Debug, Clone)]
pub struct EngineRun {
    pub precision: Precision,
    pub result: EvalResult,
    /// Logits, `classes` per image, in dataset order (an int8 model's `i32` logits converted).
    pub logits: Vec<f32>,
    /// The same logits exactly: f32 bit patterns, or the int8 model's `i32` values as `u32`.
    pub logit_bits: Vec<u32>,
    pub classes: usize,
    /// Multiply-accumulates per image, per layer (identical for every image).
    pub layer_macs: Vec<u64>,
    pub buffer_bytes: usize,
}

/// Runs every image of `data` through the engine for the model's precision.
pub fn run_engine(bytes: &[u8], data: &Dataset) -> Result<EngineRun> {
    let model = Model::parse(bytes).map_err(|e| anyhow!("invalid model file: {e}"))?;
    data.check_input(model.network.input)?;
    match model.precision() {
        Precision::F32 => run_f32(&model, data),
        Precision::Int8 => run_int8(&model, data),
    }
}

fn run_f32(model: &Model<'_>, data: &Dataset) -> Result<EngineRun> {
    let plan = BufferPlan::for_model(model).map_err(|e| anyhow!("{e}"))?;
    let (mut a, mut b) = (vec![0f32; plan.activations], vec![0u16; plan.tap_offsets]);
    let mut engine = Engine::new(model, &mut a, &mut b).map_err(|e| anyhow!("{e}"))?;
    let mut run = EngineRun::new(Precision::F32, engine.classes(), data.len(), plan.bytes());
    let mut out = vec![0f32; run.classes];
    run.layer_macs(&engine.stats());
    for i in 0..data.len() {
        engine
            .infer(data.image(i), &mut out, &mut ())
            .map_err(|e| anyhow!("{e}"))?;
        let bits = out.iter().map(|v| v.to_bits());
        run.record(data.labels[i], argmax(&out), (out.iter().copied(), bits));
    }
    Ok(run)
}

fn run_int8(model: &Model<'_>, data: &Dataset) -> Result<EngineRun> {
    let plan = Int8Plan::for_model(model).map_err(|e| anyhow!("{e}"))?;
    let mut activations = vec![0i16; plan.activations];
    let mut acc = vec![0i32; plan.accumulators];
    let mut taps = vec![0u16; plan.tap_offsets];
    let mut cursors = vec![Cursor::default(); plan.cursors];
    let mut scratch = vec![0u32; plan.scratch];
    let memory = Int8Memory {
        activations: &mut activations,
        accumulators: &mut acc,
        tap_offsets: &mut taps,
        cursors: &mut cursors,
        scratch: &mut scratch,
    };
    let mut engine = Int8Engine::new(model, memory).map_err(|e| anyhow!("{e}"))?;
    let mut run = EngineRun::new(
        Precision::Int8,
        engine.classes(),
        data.len(),
        plan.total_bytes(),
    );
    let mut out = vec![0i32; run.classes];
    run.layer_macs(&engine.stats());
    for i in 0..data.len() {
        engine
            .infer(data.image(i), &mut out, &mut ())
            .map_err(|e| anyhow!("{e}"))?;
        let (values, bits) = (out.iter().map(|&v| v as f32), out.iter().map(|&v| v as u32));
        run.record(data.labels[i], argmax(&out), (values, bits));
    }
    Ok(run)
}

impl EngineRun {
    fn new(precision: Precision, classes: usize, images: usize, buffer_bytes: usize) -> Self {
        EngineRun {
            precision,
            result: EvalResult::default(),
            logits: Vec::with_capacity(classes * images),
            logit_bits: Vec::with_capacity(classes * images),
            classes,
            layer_macs: Vec::new(),
            buffer_bytes,
        }
    }

    /// One image's prediction (made from the exact logits: an `i32` logit may not be exact as
    /// `f32`) and its logits, as values for display and exactly as bits.
    fn record(
        &mut self,
        label: u8,
        predicted: usize,
        (values, bits): (impl Iterator<Item = f32>, impl Iterator<Item = u32>),
    ) {
        self.result.record(usize::from(label), predicted);
        self.logits.extend(values);
        self.logit_bits.extend(bits);
    }

    /// The engine's per-layer MACs of one inference (the same for every image).
    fn layer_macs(&mut self, stats: &Stats) {
        self.layer_macs = stats.layer_macs[..stats.layers].to_vec();
    }
}

/// Agreement between the engine's logits and the candle model's on the same images.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    pub images: usize,
    pub same_prediction: usize,
    pub max_abs_logit_diff: f32,
}

pub fn compare_with_candle(model: &Cnn, data: &Dataset, run: &EngineRun) -> Result<Agreement> {
    if run.precision != Precision::F32 {
        anyhow::bail!("logits are compared with candle for f32 model files only");
    }
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
