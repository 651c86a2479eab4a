//! Training throughput: images per second of the real training step, and its phases.

use crate::data::Dataset;
use crate::model::Cnn;
use crate::optim::{Adam, Penalty};
use anyhow::{bail, Result};
use candle_core::Device;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub steps: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub images_per_second: f64,
    /// Mean milliseconds per step of: batch, forward (incl. loss), backward, optimizer.
    pub milliseconds_per_step: Vec<(String, f64)>,
}

/// Times `steps` training steps (after 3 untimed warm-up steps) on consecutive batches.
pub fn bench(
    data: &Dataset,
    batch_size: usize,
    steps: usize,
    penalty: &Penalty,
) -> Result<BenchReport> {
    if data.len() < batch_size || batch_size == 0 || steps == 0 {
        bail!("need at least one full batch ({batch_size}) of data and one step");
    }
    let device = Device::Cpu;
    let model = Cnn::new_seeded(0, &device)?;
    let mut adam = Adam::new(&model, 1e-3)?;
    let masks = vec![None; model.params().len()];
    let mut phases = [0f64; 4];
    let mut timed = Instant::now();
    for step in 0..steps + 3 {
        if step == 3 {
            phases = [0.0; 4];
            timed = Instant::now();
        }
        let start = (step * batch_size) % (data.len() - batch_size + 1);
        let indices: Vec<usize> = (start..start + batch_size).collect();
        let t0 = Instant::now();
        let (x, y) = data.batch(&indices, &device)?;
        let t1 = Instant::now();
        let logits = model.forward(&x)?;
        let mut loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        if let Some(l1) = penalty.loss_term(&model)? {
            loss = (loss + l1)?;
        }
        let _ = loss.to_scalar::<f32>()?;
        let t2 = Instant::now();
        let grads = loss.backward()?;
        let t3 = Instant::now();
        adam.step(&model, &grads, penalty, &masks)?;
        let t4 = Instant::now();
        for (p, (a, b)) in phases
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
        {
            *p += (b - a).as_secs_f64();
        }
    }
    let seconds = timed.elapsed().as_secs_f64();
    let names = ["batch", "forward", "backward", "optimizer"];
    Ok(BenchReport {
        steps,
        batch_size,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        images_per_second: (steps * batch_size) as f64 / seconds,
        milliseconds_per_step: names
            .iter()
            .zip(phases)
            .map(|(n, s)| (n.to_string(), 1000.0 * s / steps as f64))
            .collect(),
    })
}
