//! The trainer's own ops against Candle's: the fused conv block (convolution, bias,
//! ReLU, max-pool; and its direct single-channel path) against `conv2d` followed by the
//! reference pooling op, the linear op against `matmul` + `broadcast_add` (+ `relu`): same
//! values, same gradients for input, kernel and bias.

use candle_core::{DType, Device, Tensor, Var};
use trainer::model::conv::conv3x3_relu_pool;
mod common;

use common::relu_pool::relu_max_pool2;

fn random(shape: &[usize], seed: u64) -> Var {
    let n: usize = shape.iter().product();
    let mut s = seed | 1;
    let values: Vec<f64> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f64 / 1000.0 - 1.0
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Candle's `conv2d`, bias, then the reference ReLU + max-pool.
fn reference_block(x: &Tensor, k: &Tensor, b: &Tensor) -> Tensor {
    let o = k.dim(0).unwrap();
    relu_max_pool2(
        &x.conv2d(k, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, o, 1, 1)).unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// `|a − e|∞ / max(1, |e|∞)`, in f64.
fn relative_error(a: &Tensor, e: &Tensor) -> f64 {
    let (a, e) = (
        a.to_dtype(DType::F64).unwrap(),
        e.to_dtype(DType::F64).unwrap(),
    );
    let scale = e.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    max_diff(&a, &e) / scale.to_scalar::<f64>().unwrap().max(1.0)
}

/// Our block against the reference on input `x`, kernel `k`, bias `b`, with the loss
/// `Σ r · output` (weights on the pooled output, so every gradient path is exercised unevenly):
/// the relative error of the output and of the input, kernel and bias gradients.
fn block_errors(x: &Var, k: &Var, b: &Var, r: &Var) -> [(&'static str, f64); 4] {
    let ours = conv3x3_relu_pool(x, k, b).unwrap();
    let reference = reference_block(x, k, b);
    assert_eq!(ours.dims(), reference.dims());
    let loss = |y: &Tensor| (y * r.as_tensor()).unwrap().sum_all().unwrap();
    let (g1, g2) = (
        loss(&ours).backward().unwrap(),
        loss(&reference).backward().unwrap(),
    );
    let grad = |v: &Var| relative_error(g1.get(v).unwrap(), g2.get(v).unwrap());
    [
        ("output", relative_error(&ours, &reference)),
        ("input gradient", grad(x)),
        ("kernel gradient", grad(k)),
        ("bias gradient", grad(b)),
    ]
}

#[test]
fn conv_block_matches_candle_values_and_gradients() {
    // Channel counts give patch rows (9c values) shorter than one accumulator run, a run plus a
    // remainder, and whole runs only; more images than the backward pass has shares.
    let shapes = [
        (2, 3, 4, 6, 4),
        (3, 1, 5, 4, 8),
        (1, 2, 2, 2, 2),
        (2, 5, 3, 6, 6),
        (11, 32, 6, 4, 4),
    ];
    for (n, c, o, h, w) in shapes {
        let x = random(&[n, c, h, w], 1 + h as u64);
        let k = random(&[o, c, 3, 3], 7 + o as u64);
        let b = random(&[o], 3);
        let r = random(&[n, o, h / 2, w / 2], 11);
        for (what, error) in block_errors(&x, &k, &b, &r) {
            assert!(
                error < 1e-12,
                "{what} differs by {error} for {:?}",
                (n, c, o, h, w)
            );
        }
    }
}

#[test]
fn the_recipe_blocks_match_candle_in_f32() {
    // Training runs in f32, where the kernels take their vectorised paths: conv1 (one channel,
    // summed directly) and conv2 (32 channels, patches times kernel), at the recipe's sizes.
    for (n, c, o, h, seed) in [(4, 1, 32, 28, 81), (4, 32, 64, 14, 83)] {
        let f32_var = |shape: &[usize], seed| {
            Var::from_tensor(&random(shape, seed).to_dtype(DType::F32).unwrap()).unwrap()
        };
        let x = f32_var(&[n, c, h, h], seed);
        let k = f32_var(&[o, c, 3, 3], seed + 1);
        let b = f32_var(&[o], seed + 2);
        let r = f32_var(&[n, o, h / 2, h / 2], seed + 3);
        for (what, error) in block_errors(&x, &k, &b, &r) {
            assert!(error < 1e-5, "{what} differs by {error} for {:?}", (c, o));
        }
    }
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    // A resumed run must replay exactly: the kernel gradient's sum over images must come out
    // bit for bit the same however many threads share the batch.
    let x = random(&[13, 8, 6, 6], 61);
    let k = random(&[5, 8, 3, 3], 67);
    let b = random(&[5], 71);
    let r = random(&[13, 5, 3, 3], 73);
    let grads_on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = conv3x3_relu_pool(&x, &k, &b).unwrap();
            let g = (y * r.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            [&x, &k, &b].map(|v| {
                g.get(v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
        })
    };
    assert_eq!(grads_on(1), grads_on(3));
}

#[test]
fn mismatched_shapes_are_errors() {
    let x = random(&[2, 3, 4, 4], 91);
    let k = random(&[5, 3, 3, 3], 93);
    let b = random(&[5], 95);
    assert!(conv3x3_relu_pool(&x, &k, &b).is_ok());
    let cases = [
        ("channels", random(&[2, 2, 4, 4], 1), k.clone(), b.clone()),
        ("odd size", random(&[2, 3, 5, 4], 2), k.clone(), b.clone()),
        (
            "kernel size",
            x.clone(),
            random(&[5, 3, 2, 2], 3),
            b.clone(),
        ),
        ("bias", x.clone(), k.clone(), random(&[4], 4)),
    ];
    for (what, x, k, b) in cases {
        assert!(conv3x3_relu_pool(&x, &k, &b).is_err(), "{what}");
    }
}

#[test]
fn an_untracked_input_gets_no_gradient_work() {
    // The image into conv1 is a plain tensor: the backward pass must not need it.
    let x = Tensor::ones((1, 1, 4, 4), DType::F64, &Device::Cpu).unwrap();
    let k = random(&[2, 1, 3, 3], 5);
    let b = random(&[2], 6);
    let y = conv3x3_relu_pool(&x, &k, &b).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&k).is_some() && grads.get(&b).is_some());
}

#[test]
fn the_direct_single_channel_path_matches_candle() {
    // An untracked one-channel input (the image into conv1) takes the direct kernels.
    for (n, o, h, w) in [(3, 4, 6, 8), (2, 3, 28, 28), (1, 2, 2, 2)] {
        let x = random(&[n, 1, h, w], 21 + w as u64).as_tensor().detach();
        let k = random(&[o, 1, 3, 3], 23);
        let b = random(&[o], 29);
        let r = random(&[n, o, h / 2, w / 2], 31);
        let ours = conv3x3_relu_pool(&x, &k, &b).unwrap();
        let reference = reference_block(&x, &k, &b);
        assert!(max_diff(&ours, &reference) < 1e-12);
        let loss = |y: &Tensor| (y * r.as_tensor()).unwrap().sum_all().unwrap();
        let (g1, g2) = (
            loss(&ours).backward().unwrap(),
            loss(&reference).backward().unwrap(),
        );
        for (name, v) in [("kernel", &k), ("bias", &b)] {
            let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(
                max_diff(a, e) < 1e-10,
                "{name} gradient differs for {:?}",
                (n, o, h, w)
            );
        }
        assert!(g1.get(&x).is_none());
    }
}

#[test]
fn the_linear_op_matches_candle_values_and_gradients() {
    for (n, k, m, relu) in [(4, 6, 3, true), (2, 5, 7, false), (3, 1, 1, true)] {
        let x = random(&[n, k], 41 + k as u64);
        let w = random(&[m, k], 43);
        let b = random(&[m], 47);
        let r = random(&[n, m], 53);
        let ours = trainer::model::linear::linear(&x, &w, &b, relu).unwrap();
        let mut reference = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        if relu {
            reference = reference.relu().unwrap();
        }
        assert!(max_diff(&ours, &reference) < 1e-12);
        let loss = |y: &Tensor| (y * r.as_tensor()).unwrap().sum_all().unwrap();
        let (g1, g2) = (
            loss(&ours).backward().unwrap(),
            loss(&reference).backward().unwrap(),
        );
        for (name, v) in [("input", &x), ("kernel", &w), ("bias", &b)] {
            let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(
                max_diff(a, e) < 1e-12,
                "{name} gradient differs for {:?}",
                (n, k, m, relu)
            );
        }
    }
}
