//! The `trainer` binary as a pipeline stage: quiet on a closed pipe, clear on bad arguments.

use candle_core::Device;
use model_format::writer::Encoding;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use trainer::export::export_bytes;
use trainer::model::Cnn;

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.l1sparse.safetensors");
    let model = Cnn::new_seeded(0, &Device::Cpu).unwrap();
    let bytes = export_bytes(&model, &Default::default(), Encoding::Smallest).unwrap();
    std::fs::write(&file, bytes).unwrap();
    // As `trainer inspect FILE | head -0`: the reader is gone before the first write.
    for json in [false, true] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = trainer();
        cmd.arg("inspect").arg(&file);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        assert!(stderr.is_empty(), "{stderr}");
    }
    // And with a reader that takes the first line only.
    let mut child = trainer()
        .arg("inspect")
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("m.l1sparse.safetensors"), "{first}");
    assert!(child.wait().unwrap().success());
}

/// Runs the trainer with `args` and `--out <a fresh folder>/run`; checks that it fails and
/// wrote nothing, and returns its standard error.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = trainer()
        .args(args)
        .arg("--out")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!dir.path().join("run").exists(), "nothing is written");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn zero_epochs_are_refused_by_name() {
    let stderr = refused(&["train", "--epochs", "0"]);
    assert!(
        stderr.contains("--epochs") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

#[test]
fn a_ramp_as_long_as_the_fine_tune_is_refused_before_anything_is_read() {
    let stderr = refused(&[
        "prune",
        "--model",
        "missing.safetensors",
        "--finetune-epochs",
        "3",
        "--gradual-epochs",
        "3",
    ]);
    assert!(
        stderr.contains("--gradual-epochs (3) must be fewer than --finetune-epochs (3)"),
        "{stderr}"
    );
}

#[test]
fn quantize_refuses_bad_arguments_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = trainer()
        .args(["quantize", "--calibration-images", "0", "-o"])
        .arg(dir.path().join("q.safetensors"))
        .arg(dir.path().join("model.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--calibration-images"), "{stderr}");
    let out = trainer()
        .args(["quantize", "-o"])
        .arg(dir.path().join("q.safetensors"))
        .arg(dir.path().join("missing.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.safetensors"), "{stderr}");
    assert!(
        !dir.path().join("q.safetensors").exists(),
        "nothing is written"
    );
}
