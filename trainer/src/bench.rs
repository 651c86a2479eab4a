//! Training throughput: images per second of the real training step, and its phases.

use crate::data::Dataset;
use crate::model::Cnn;
use crate::train::optim::{Adam, Penalty};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    pub steps: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub images_per_second: f64,
    /// Mean milliseconds per step of: batch, forward (incl. loss), the L1 term (l1 mode),
    /// backward, optimizer (with the proximal step in prox mode).
    pub milliseconds_per_step: Vec<(String, f64)>,
    /// With `--profile`: milliseconds per call of each operation on its own.
    #[serde(default)]
    pub profile_ms: Vec<(String, f64)>,
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
    let mut phases = [0f64; 5];
    let mut timed = Instant::now();
    for step in 0..steps + 3 {
        if step == 3 {
            phases = [0.0; 5];
            timed = Instant::now();
        }
        let start = (step * batch_size) % (data.len() - batch_size + 1);
        let indices: Vec<usize> = (start..start + batch_size).collect();
        let t0 = Instant::now();
        let (x, y) = data.batch(&indices, &device)?;
        let t1 = Instant::now();
        let logits = model.forward(&x)?;
        let mut loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let _ = loss.to_scalar::<f32>()?;
        let t2 = Instant::now();
        if let Some(l1) = penalty.loss_term(&model)? {
            loss = (loss + l1)?;
        }
        let _ = loss.to_scalar::<f32>()?;
        let t3 = Instant::now();
        let grads = loss.backward()?;
        let t4 = Instant::now();
        adam.step(&model, &grads, penalty, &masks)?;
        let t5 = Instant::now();
        for (p, (a, b)) in phases
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)])
        {
            *p += (b - a).as_secs_f64();
        }
    }
    let seconds = timed.elapsed().as_secs_f64();
    let names = [
        "batch",
        "forward (incl. loss)",
        "L1 term in the loss (l1 mode)",
        "backward (incl. the L1 term's)",
        "Adam (+ proximal step in prox mode)",
    ];
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
        profile_ms: Vec::new(),
    })
}

/// Milliseconds per call of each operation of a training step, timed one at a time on the
/// step's real shapes (`reps` calls each, after one untimed call): where a step's time goes,
/// layer by layer, forward and backward. Candle's backward pass is one call, so its parts are
/// re-run here as the operations it performs.
pub fn profile(data: &Dataset, batch_size: usize, reps: usize) -> Result<Vec<(String, f64)>> {
    use crate::model::conv::{conv3x3_relu_pool, time_block};
    if data.len() < batch_size || batch_size == 0 || reps == 0 {
        bail!("need at least one full batch ({batch_size}) of data and one repetition");
    }
    let device = Device::Cpu;
    let model = Cnn::new_seeded(0, &device)?;
    let p = |name: &str| -> Result<Tensor> {
        Ok(model
            .param(name)
            .with_context(|| format!("no parameter {name}"))?
            .as_tensor()
            .clone())
    };
    let indices: Vec<usize> = (0..batch_size).collect();
    let (x, y) = data.batch(&indices, &device)?;
    let mut rows = Vec::new();
    let mut time = |name: &str, f: &mut dyn FnMut() -> Result<Tensor>| -> Result<Tensor> {
        let out = f()?;
        let start = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        rows.push((
            name.to_string(),
            1000.0 * start.elapsed().as_secs_f64() / reps as f64,
        ));
        Ok(out)
    };
    let (w1, b1, w2, b2) = (
        p("conv1.weight")?,
        p("conv1.bias")?,
        p("conv2.weight")?,
        p("conv2.bias")?,
    );
    let (w3, b3, w4, b4) = (
        p("fc1.weight")?,
        p("fc1.bias")?,
        p("fc2.weight")?,
        p("fc2.bias")?,
    );
    let h1 = conv3x3_relu_pool(&x, &w1, &b1)?;
    let h2 = conv3x3_relu_pool(&h1, &w2, &b2)?;
    let flat = h2.flatten_from(1)?;
    let h3 = time("forward fc1 (linear + relu)", &mut || {
        Ok(crate::model::linear::linear(&flat, &w3, &b3, true)?)
    })?;
    let logits = time("forward fc2 (linear)", &mut || {
        Ok(crate::model::linear::linear(&h3, &w4, &b4, false)?)
    })?;
    time("forward loss (cross-entropy)", &mut || {
        Ok(candle_nn::loss::cross_entropy(&logits, &y)?)
    })?;
    let g4 = logits.ones_like()?;
    // The products the linear op's backward pass runs.
    time("backward fc2 (weight + input grads)", &mut || {
        g4.t()?.matmul(&h3)?;
        Ok(g4.matmul(&w4)?)
    })?;
    let g3 = h3.ones_like()?;
    time("backward fc1 (weight + input grads)", &mut || {
        g3.t()?.matmul(&flat)?;
        Ok(g3.matmul(&w3)?)
    })?;
    let (f1, bw1) = time_block(&x, &w1, &b1, false, reps)?;
    let (f2, bw2) = time_block(&h1, &w2, &b2, true, reps)?;
    let mut all = vec![
        (
            "forward conv1 block (direct convolution, relu, pool)".to_string(),
            f1,
        ),
        (
            "forward conv2 block (patches · kernel, relu, pool)".to_string(),
            f2,
        ),
    ];
    all.extend(rows.drain(..3));
    all.push((
        "backward conv1 block (kernel + bias grads at the winners)".to_string(),
        bw1,
    ));
    all.push((
        "backward conv2 block (kernel, bias + input grads at the winners)".to_string(),
        bw2,
    ));
    all.extend(rows);
    Ok(all)
}
