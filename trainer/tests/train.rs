//! Training runs: exact resume, masked fine-tuning and the proximal penalty's exact zeros.

mod common;

use candle_core::Device;
use trainer::model::Cnn;
use trainer::prune::{prune, PruneTarget};
use trainer::train::optim::{Penalty, Scope};
use trainer::train::{read_metrics, train, RunDir, RunOptions, TrainConfig};

fn config(penalty: Penalty) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 1e-3,
        penalty,
        seed: 11,
        freeze_zeros: false,
    }
}

#[test]
fn resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    let (train_set, test_set) = (common::synthetic(200, 1), common::synthetic(40, 2));
    let cfg = config(Penalty::Prox {
        lambda: 1e-2,
        scope: Scope::Weights,
    });
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
    let dir = tempfile::tempdir().unwrap();
    train(
        &model,
        &cfg,
        &train_set,
        &test_set,
        &RunDir(dir.path().into()),
        &RunOptions::default(),
    )
    .unwrap();
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

#[test]
fn l1_in_the_loss_leaves_no_exact_zeros_but_prox_does() {
    let (train_set, test_set) = (common::synthetic(200, 5), common::synthetic(40, 6));
    let zeros = |penalty| {
        let model = Cnn::new_seeded(5, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = train(
            &model,
            &config(penalty),
            &train_set,
            &test_set,
            &RunDir(dir.path().into()),
            &RunOptions::default(),
        )
        .unwrap()
        .unwrap();
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
