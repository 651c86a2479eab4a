//! Training runs: exact resume, masked fine-tuning and the proximal penalty's exact zeros.

mod common;

use candle_core::Device;
use trainer::data::Dataset;
use trainer::model::Cnn;
use trainer::prune::{prune, GradualPrune, PruneTarget};
use trainer::train::optim::{LrSchedule, Penalty, Scope};
use trainer::train::{read_metrics, train, EpochMetrics, RunDir, RunOptions, TrainConfig};

fn config(penalty: Penalty) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 1e-3,
        penalty,
        seed: 11,
        freeze_zeros: false,
        lr_schedule: LrSchedule::Constant,
        gradual: None,
    }
}

/// Trains `model` to the end in a fresh folder; the epochs' metrics.
fn train_fresh(
    model: &Cnn,
    cfg: &TrainConfig,
    (train_set, test_set): (&Dataset, &Dataset),
) -> Vec<EpochMetrics> {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir(dir.path().into());
    let metrics = train(
        model,
        cfg,
        train_set,
        test_set,
        &run,
        &RunOptions::default(),
    );
    metrics.unwrap().expect("not stopped early")
}

#[test]
fn resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    assert_resume_is_exact(config(Penalty::Prox {
        lambda: 1e-2,
        scope: Scope::Weights,
    }));
}

/// The learning rate and the pruning cuts follow the step count, so a resumed run meets them
/// where the uninterrupted one did.
#[test]
fn resume_is_exact_with_a_cosine_rate_and_gradual_pruning() {
    let mut cfg = config(Penalty::None);
    cfg.lr_schedule = LrSchedule::Cosine;
    cfg.freeze_zeros = true;
    cfg.gradual = Some(GradualPrune {
        from: 0.0,
        to: 0.8,
        ramp_epochs: 1,
        per_layer: false,
        mac_exponent: 0.06,
    });
    assert_resume_is_exact(cfg);
}

fn assert_resume_is_exact(cfg: TrainConfig) {
    let (train_set, test_set) = (common::synthetic(200, 1), common::synthetic(40, 2));
    let dir = tempfile::tempdir().unwrap();

    let straight = RunDir(dir.path().join("straight"));
    let model = Cnn::new_seeded(cfg.seed, &Device::Cpu).unwrap();
    let metrics = train(
        &model,
        &cfg,
        &train_set,
        &test_set,
        &straight,
        &RunOptions::default(),
    )
    .unwrap()
    .unwrap();
    let expected = model.to_vecs().unwrap();

    // 7 steps per epoch; checkpoints every 3 steps. Kill at step 5 (last checkpoint: step 3),
    // then at step 10 (in epoch 2; last checkpoint: step 9), then run to the end.
    let resumed = RunDir(dir.path().join("resumed"));
    let mut opts = RunOptions {
        checkpoint_every: Some(3),
        stop_after_step: Some(5),
        ..Default::default()
    };
    let fresh = || Cnn::new_seeded(cfg.seed, &Device::Cpu).unwrap();
    assert!(
        train(&fresh(), &cfg, &train_set, &test_set, &resumed, &opts)
            .unwrap()
            .is_none()
    );
    opts.resume = true;
    opts.stop_after_step = Some(10);
    assert!(
        train(&fresh(), &cfg, &train_set, &test_set, &resumed, &opts)
            .unwrap()
            .is_none()
    );
    opts.stop_after_step = None;
    // A different seed's weights are overwritten by the checkpoint: nothing of the fresh model leaks.
    let model = Cnn::new_seeded(999, &Device::Cpu).unwrap();
    let resumed_metrics = train(&model, &cfg, &train_set, &test_set, &resumed, &opts)
        .unwrap()
        .unwrap();

    let got = model.to_vecs().unwrap();
    for ((name, a), (_, b)) in expected.iter().zip(&got) {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} differs after resume");
    }
    assert_eq!(read_metrics(&resumed.metrics()).unwrap().len(), 2);
    let strip = |m: &[trainer::train::EpochMetrics]| {
        m.iter()
            .map(|m| (m.epoch, m.train_loss, m.test_accuracy, m.exact_zeros))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&metrics), strip(&resumed_metrics));
}

#[test]
fn starting_over_an_existing_run_without_resume_is_refused() {
    let (train_set, test_set) = (common::synthetic(64, 1), common::synthetic(20, 2));
    let mut cfg = config(Penalty::None);
    cfg.epochs = 1;
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir(dir.path().to_path_buf());
    let model = Cnn::new_seeded(1, &Device::Cpu).unwrap();
    train(
        &model,
        &cfg,
        &train_set,
        &test_set,
        &run,
        &RunOptions::default(),
    )
    .unwrap();
    let err = train(
        &model,
        &cfg,
        &train_set,
        &test_set,
        &run,
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    // Resuming with other settings is refused too.
    cfg.lr = 5e-4;
    let opts = RunOptions {
        resume: true,
        ..Default::default()
    };
    let err = train(&model, &cfg, &train_set, &test_set, &run, &opts).unwrap_err();
    assert!(err.to_string().contains("different settings"), "{err}");
}

#[test]
fn masked_fine_tuning_never_revives_a_pruned_weight() {
    let (train_set, test_set) = (common::synthetic(200, 3), common::synthetic(40, 4));
    let model = Cnn::new_seeded(3, &Device::Cpu).unwrap();
    let mut params = model.to_vecs().unwrap();
    prune(
        &mut params,
        PruneTarget::Sparsity {
            fraction: 0.9,
            per_layer: false,
        },
    );
    let model = model.with_values(params.clone()).unwrap();
    let mut cfg = config(Penalty::None);
    cfg.freeze_zeros = true;
    train_fresh(&model, &cfg, (&train_set, &test_set));
    let after = model.to_vecs().unwrap();
    let mut changed = 0;
    for ((name, before), (_, now)) in params.iter().zip(&after) {
        for (b, a) in before.iter().zip(now) {
            if name.ends_with(".weight") && *b == 0.0 {
                assert_eq!(a.to_bits(), 0, "{name}: a pruned weight came back as {a}");
            } else if a != b {
                changed += 1;
            }
        }
    }
    assert!(
        changed > 30_000,
        "surviving weights must keep training, {changed} changed"
    );
}

/// Zhu & Gupta's ramp: zeros only grow, each cut keeps what earlier cuts removed, and the run
/// ends at the target exactly, after a last epoch on a fixed mask.
#[test]
fn gradual_pruning_grows_the_zeros_to_the_target_and_keeps_them() {
    let (train_set, test_set) = (common::synthetic(200, 7), common::synthetic(40, 8));
    let model = Cnn::new_seeded(7, &Device::Cpu).unwrap();
    let mut cfg = config(Penalty::None);
    (cfg.epochs, cfg.batch_size) = (3, 2); // 100 steps an epoch: cuts at steps 0, 50, …, 200
    cfg.freeze_zeros = true;
    cfg.lr_schedule = LrSchedule::Cosine;
    cfg.gradual = Some(GradualPrune {
        from: 0.0,
        to: 0.95,
        ramp_epochs: 2,
        per_layer: false,
        mac_exponent: 0.06,
    });
    let metrics = train_fresh(&model, &cfg, (&train_set, &test_set));
    let (zeros, weights) = trainer::eval::count_weight_zeros(&model).unwrap();
    assert_eq!(zeros, (0.95 * weights as f64).round() as usize);
    let counts: Vec<usize> = metrics.iter().map(|m| m.exact_zeros).collect();
    assert!(counts[0] > 0 && counts[0] < zeros, "{counts:?}");
    assert_eq!(
        counts[1], counts[2],
        "the last epoch must keep the mask: {counts:?}"
    );
}

#[test]
fn gradual_cuts_follow_the_cubic_ramp() {
    let g = GradualPrune {
        from: 0.5,
        to: 0.99,
        ramp_epochs: 2,
        per_layer: true,
        mac_exponent: 0.0,
    };
    let fraction = |step| match g.cut_at(step, 120) {
        Some(PruneTarget::Sparsity {
            fraction,
            per_layer: true,
        }) => Some(fraction),
        _ => None,
    };
    assert_eq!(fraction(0), Some(0.5));
    assert_eq!(fraction(49), None);
    assert_eq!(fraction(239), Some(0.99), "the ramp's last step is a cut");
    assert_eq!(fraction(240), None, "no cut after the ramp");
    assert_eq!(fraction(250), None);
    let mid = fraction(100).unwrap();
    // 1 − (1 − 100/239)³ of the way: most of the cutting happens early.
    let expected = 0.99 + (0.5 - 0.99) * (1.0f64 - 100.0 / 239.0).powi(3);
    assert!((mid - expected).abs() < 1e-12, "{mid} vs {expected}");
    let cuts: Vec<f64> = (0..240).filter_map(fraction).collect();
    assert_eq!(cuts.len(), 6, "steps 0, 50, 100, 150, 200, 239");
    assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
}

#[test]
fn cosine_schedule_falls_from_the_rate_to_zero() {
    let f = |s| LrSchedule::Cosine.factor(s, 100);
    assert_eq!(f(0), 1.0);
    assert!((f(50) - 0.5).abs() < 1e-12);
    assert!(f(100).abs() < 1e-12 && f(200).abs() < 1e-12);
    assert!((0..100).all(|s| f(s + 1) < f(s)));
    assert_eq!(LrSchedule::Constant.factor(70, 100), 1.0);
}

#[test]
fn l1_in_the_loss_leaves_no_exact_zeros_but_prox_does() {
    let (train_set, test_set) = (common::synthetic(200, 5), common::synthetic(40, 6));
    let zeros = |penalty| {
        let model = Cnn::new_seeded(5, &Device::Cpu).unwrap();
        let m = train_fresh(&model, &config(penalty), (&train_set, &test_set));
        m.last().unwrap().exact_zeros
    };
    assert_eq!(
        zeros(Penalty::L1 {
            lambda: 1e-3,
            scope: Scope::All
        }),
        0
    );
    assert!(
        zeros(Penalty::Prox {
            lambda: 1e-3,
            scope: Scope::Weights
        }) > 10_000
    );
}

/// The default λ: the tuned value up to the set it was tuned on, smaller on larger sets (the
/// proximal step thresholds once per step, and a larger set takes more steps per epoch).
#[test]
fn default_lambda_shrinks_with_the_training_set() {
    use trainer::pipeline::{lambda_for, LAMBDA, LAMBDA_IMAGES};
    assert_eq!(lambda_for(LAMBDA_IMAGES), LAMBDA);
    assert_eq!(lambda_for(500), LAMBDA, "never above the tuned value");
    let fashion = lambda_for(60_000);
    assert!((fashion - 2.98e-5).abs() < 0.01e-5, "{fashion}");
    let sizes = [8_000, 10_000, 30_000, 60_000, 600_000];
    assert!(sizes
        .windows(2)
        .all(|w| lambda_for(w[1]) < lambda_for(w[0])));
    assert!(lambda_for(0).is_finite());
}
