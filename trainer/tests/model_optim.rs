//! The model's shape, the proximal step, the L1 gradient and pruning.

mod common;

use candle_core::{DType, Device, Tensor};
use model_format::NetworkDef;
use trainer::model::{param_count, param_shapes, Cnn};
use trainer::prune::{prune, prune_ranked, PruneTarget, Ranking};
use trainer::train::optim::{soft_threshold, Adam, Penalty, Scope};

#[test]
fn output_shape_and_parameter_count() {
    let model = Cnn::new_seeded(1, &Device::Cpu).unwrap();
    assert_eq!(param_count(&NetworkDef::recipe()), 421_642);
    let counted: usize = model.params().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(counted, 421_642);
    let x = Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.forward(&x).unwrap().dims(), &[3, 10]);
}

#[test]
fn seeded_initialisation_is_reproducible_and_seed_dependent() {
    let a = Cnn::new_seeded(7, &Device::Cpu).unwrap().to_vecs().unwrap();
    let b = Cnn::new_seeded(7, &Device::Cpu).unwrap().to_vecs().unwrap();
    let c = Cnn::new_seeded(8, &Device::Cpu).unwrap().to_vecs().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // PyTorch's bound for fc1: 1/sqrt(3136).
    let fc1 = &a.iter().find(|(n, _)| n == "fc1.weight").unwrap().1;
    let bound = 1.0 / 3136f32.sqrt();
    assert!(fc1.iter().all(|w| w.abs() <= bound));
    assert!(fc1.iter().any(|w| w.abs() > 0.9 * bound));
}

#[test]
fn soft_threshold_zeroes_exactly_within_tau_and_shrinks_outside() {
    let dev = Device::Cpu;
    let w = Tensor::new(&[-0.5f32, -0.1, -0.05, 0.0, 0.05, 0.1, 0.3], &dev).unwrap();
    let tau = Tensor::new(&[0.1f32, 0.1, 0.1, 0.1, 0.1, 0.05, 0.1], &dev).unwrap();
    let out = soft_threshold(&w, &tau).unwrap().to_vec1::<f32>().unwrap();
    let expected = [-0.4f32, 0.0, 0.0, 0.0, 0.0, 0.05, 0.2];
    for (o, e) in out.iter().zip(expected) {
        assert!((o - e).abs() < 1e-7, "{out:?}");
        if e == 0.0 {
            assert_eq!(o.to_bits(), 0, "zeros must be +0.0 exactly: {out:?}");
        }
    }
}

fn loss_and_grads(model: &Cnn, penalty: &Penalty) -> (Tensor, candle_core::backprop::GradStore) {
    let data = common::synthetic(16, 3);
    let idx: Vec<usize> = (0..16).collect();
    let (x, y) = data.batch(&idx, &Device::Cpu).unwrap();
    let dtype = model.params()[0].1.dtype();
    let logits = model.forward(&x.to_dtype(dtype).unwrap()).unwrap();
    let mut loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
    if let Some(l1) = penalty.loss_term(model).unwrap() {
        loss = (loss + l1).unwrap();
    }
    let grads = loss.backward().unwrap();
    (loss, grads)
}

#[test]
fn proximal_adam_step_matches_the_formula_and_leaves_exact_zeros() {
    let model = Cnn::new_seeded(2, &Device::Cpu).unwrap();
    let before = model.to_vecs().unwrap();
    let (_, grads) = loss_and_grads(&model, &Penalty::None);
    let lambda = 5.0;
    let penalty = Penalty::Prox {
        lambda,
        scope: Scope::Weights,
    };
    let mut adam = Adam::new(&model, 1e-3).unwrap();
    adam.step(&model, &grads, &penalty, &vec![None; 8]).unwrap();
    let after = model.to_vecs().unwrap();
    let mut zeros = 0;
    for (((name, w0), (_, w1)), (_, var)) in before.iter().zip(&after).zip(model.params()) {
        let _ = var;
        let g = grads
            .get(model.param(name).unwrap().as_tensor())
            .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let g = g.unwrap_or_else(|| vec![0.0; w0.len()]);
        for ((&w0, &w1), &g) in w0.iter().zip(w1).zip(&g) {
            // First step: m̂ = g, v̂ = g², so the update is lr·g/(|g|+ε).
            let denom = (g as f64).abs() + 1e-8;
            let stepped = w0 as f64 - 1e-3 * g as f64 / denom;
            let expected = if name.ends_with(".weight") {
                let tau = 1e-3 * lambda / denom;
                stepped.signum() * (stepped.abs() - tau).max(0.0)
            } else {
                stepped
            };
            assert!(
                (w1 as f64 - expected).abs() < 1e-5,
                "{name}: {w1} vs {expected}"
            );
            if expected == 0.0 {
                assert_eq!(w1, 0.0, "{name}: expected exact zero");
                zeros += 1;
            }
        }
    }
    assert!(
        zeros > 100_000,
        "a large λ must zero most weights, got {zeros}"
    );
    // Biases are outside the weights scope: none became zero.
    for (name, w) in &after {
        if name.ends_with(".bias") {
            assert!(w.iter().all(|&b| b != 0.0), "{name}");
        }
    }
}

#[test]
fn l1_gradient_matches_finite_differences() {
    let lambda = 1e-2;
    let penalty = Penalty::L1 {
        lambda,
        scope: Scope::All,
    };
    let model = Cnn::new_seeded(4, &Device::Cpu)
        .unwrap()
        .with_dtype(DType::F64)
        .unwrap();
    let (_, grads) = loss_and_grads(&model, &penalty);
    // Check a few coordinates of each parameter against central differences of the full loss.
    for (name, var) in model.params() {
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for &i in &[0, base.len() / 3, base.len() - 1] {
            // Small enough that no ReLU or pooling kink among ~400k activations is crossed.
            let h = 1e-8;
            let eval_at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                let (loss, _) = loss_and_grads(&model, &penalty);
                loss.to_scalar::<f64>().unwrap()
            };
            let numeric = (eval_at(h) - eval_at(-h)) / (2.0 * h);
            eval_at(0.0);
            assert!(
                (numeric - g[i]).abs() < 1e-6 + 1e-4 * g[i].abs(),
                "{name}[{i}]: autograd {} vs finite difference {numeric}",
                g[i]
            );
        }
    }
    // The penalty's own gradient is λ·sign(w): compare with and without it.
    let (_, plain) = loss_and_grads(&model, &Penalty::None);
    let (name, var) = &model.params()[6];
    let with = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let without = plain
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let w = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for ((a, b), w) in with.iter().zip(&without).zip(&w) {
        assert!((a - b - lambda * w.signum()).abs() < 1e-12, "{name}");
    }
}

#[test]
fn global_prune_hits_the_target_exactly_and_keeps_biases() {
    let model = Cnn::new_seeded(5, &Device::Cpu).unwrap();
    let mut params = model.to_vecs().unwrap();
    let weights: usize = param_shapes(&NetworkDef::recipe())
        .iter()
        .filter(|(n, _)| n.ends_with("weight"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let zeros = prune(
        &mut params,
        PruneTarget::Sparsity {
            fraction: 0.99,
            per_layer: false,
        },
    );
    assert_eq!(zeros, (0.99 * weights as f64).round() as usize);
    // Every surviving weight is at least as large as every pruned one.
    let original = model.to_vecs().unwrap();
    let mut max_pruned = 0f32;
    let mut min_kept = f32::MAX;
    for ((name, before), (_, after)) in original.iter().zip(&params) {
        if name.ends_with(".bias") {
            assert_eq!(before, after);
            continue;
        }
        for (b, a) in before.iter().zip(after) {
            if *a == 0.0 {
                max_pruned = max_pruned.max(b.abs());
            } else {
                assert_eq!(a, b);
                min_kept = min_kept.min(a.abs());
            }
        }
    }
    assert!(max_pruned <= min_kept);
}

#[test]
fn per_layer_prune_and_threshold_prune() {
    let model = Cnn::new_seeded(6, &Device::Cpu).unwrap();
    let mut params = model.to_vecs().unwrap();
    prune(
        &mut params,
        PruneTarget::Sparsity {
            fraction: 0.5,
            per_layer: true,
        },
    );
    for (name, w) in params.iter().filter(|(n, _)| n.ends_with("weight")) {
        let zeros = w.iter().filter(|&&x| x == 0.0).count();
        assert_eq!(zeros, (0.5 * w.len() as f64).round() as usize, "{name}");
    }
    let mut params = model.to_vecs().unwrap();
    prune(&mut params, PruneTarget::Threshold(0.01));
    for ((name, before), (_, after)) in model.to_vecs().unwrap().iter().zip(&params) {
        for (b, a) in before.iter().zip(after) {
            let expect_zero = name.ends_with("weight") && b.abs() <= 0.01;
            assert_eq!(*a == 0.0, expect_zero || *b == 0.0, "{name}: {b} -> {a}");
        }
    }
}

/// Per-MAC ranking: costly weights go first even when slightly larger (a conv1 tap applies at
/// up to 784 positions, a conv2 tap at 196, a linear weight once; magnitude ranking would take
/// the opposite order here), and exponent 0 is magnitude ranking exactly.
#[test]
fn per_mac_ranking_prunes_costly_weights_first_at_equal_magnitude() {
    let model = Cnn::new_seeded(7, &Device::Cpu).unwrap();
    let network = NetworkDef::recipe();
    let flat: Vec<(String, Vec<f32>)> = model
        .to_vecs()
        .unwrap()
        .into_iter()
        .map(|(n, w)| {
            let size = match n.as_str() {
                "conv1.weight" => 0.52f32,
                "conv2.weight" => 0.5,
                _ => 0.45,
            };
            let w = w.iter().map(|x| size.copysign(*x)).collect();
            (n, w)
        })
        .collect();
    let weights = |name: &str| flat.iter().find(|(n, _)| n == name).unwrap().1.len();
    let (conv1, conv2) = (weights("conv1.weight"), weights("conv2.weight"));
    let total: usize = flat
        .iter()
        .filter(|(n, _)| n.ends_with("weight"))
        .map(|(_, w)| w.len())
        .sum();
    let zeros_by_layer = |fraction: f64| {
        let mut params = flat.clone();
        let target = PruneTarget::Sparsity {
            fraction,
            per_layer: false,
        };
        let ranking = Ranking::per_mac(&network, 0.06).unwrap();
        prune_ranked(&mut params, target, &ranking);
        params
            .iter()
            .filter(|(n, _)| n.ends_with("weight"))
            .map(|(n, w)| (n.clone(), w.iter().filter(|&&x| x == 0.0).count()))
            .collect::<Vec<_>>()
    };
    let only_conv1 = zeros_by_layer(conv1 as f64 / total as f64);
    assert_eq!(
        only_conv1[0],
        ("conv1.weight".to_string(), conv1),
        "{only_conv1:?}"
    );
    assert!(
        only_conv1[1..].iter().all(|(_, z)| *z == 0),
        "{only_conv1:?}"
    );
    let both_convs = zeros_by_layer((conv1 + conv2) as f64 / total as f64);
    assert_eq!(
        both_convs[1],
        ("conv2.weight".to_string(), conv2),
        "{both_convs:?}"
    );
    assert!(
        both_convs[2..].iter().all(|(_, z)| *z == 0),
        "{both_convs:?}"
    );
    // Exponent 0 is plain magnitude ranking.
    let target = PruneTarget::Sparsity {
        fraction: 0.9,
        per_layer: false,
    };
    let (mut a, mut b) = (model.to_vecs().unwrap(), model.to_vecs().unwrap());
    prune(&mut a, target);
    prune_ranked(&mut b, target, &Ranking::per_mac(&network, 0.0).unwrap());
    assert_eq!(a, b);
}

#[test]
fn relu_max_pool_matches_pytorch_semantics() {
    use candle_core::Var;
    use common::relu_pool::relu_max_pool2;
    // Window 1: unique max 4 → gets the whole gradient. Window 2: tie 5,5 → the first one only.
    // Window 3: all ≤ 0 → output 0, no gradient. Window 4: a mix of negatives and 0.5.
    let x = Var::from_tensor(
        &Tensor::new(
            &[[[
                [1f32, 2., 5., 5.],
                [3., 4., 1., 0.],
                [-1., -2., -3., 0.5],
                [-4., 0., -1., -2.],
            ]]],
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let y = relu_max_pool2(x.as_tensor()).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [4., 5., 0., 0.5]
    );
    let weights = Tensor::new(&[[[[10f32, 20.], [30., 40.]]]], &Device::Cpu).unwrap();
    let grads = (y * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    #[rustfmt::skip]
    let expected = [0., 0., 20., 0.,
                    0., 10., 0., 0.,
                    0., 0., 0., 40.,
                    0., 0., 0., 0.];
    assert_eq!(g, expected);
}

#[test]
fn optimizer_state_keeps_no_autograd_graph_between_steps() {
    // With λ·Σ|w| in the loss, the gradient carries sign(w)'s graph; moments built from it must
    // not, or every step's graph stays alive (this once grew a run to 24 GB).
    let model = Cnn::new_seeded(12, &Device::Cpu).unwrap();
    let penalty = Penalty::L1 {
        lambda: 1e-3,
        scope: Scope::All,
    };
    let mut adam = Adam::new(&model, 1e-3).unwrap();
    for _ in 0..2 {
        let (_, grads) = loss_and_grads(&model, &penalty);
        adam.step(
            &model,
            &grads,
            &penalty,
            &[None, None, None, None, None, None, None, None],
        )
        .unwrap();
    }
    for (m, v) in adam.first_moments.iter().zip(&adam.second_moments) {
        assert!(!m.track_op() && !v.track_op());
    }
}
