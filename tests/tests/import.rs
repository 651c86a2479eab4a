//! `trainer import`: a state dict written by the official safetensors library in PyTorch's names
//! and layouts runs in our engine as in a numpy reference of PyTorch's forward pass, and
//! mismatched state dicts are refused by name.

use candle_core::Device;
use model_format::writer::AlignedBytes;
use model_format::NetworkDef;
use std::path::{Path, PathBuf};
use std::process::Command;
use trainer::data::datasets::{ensure, BuiltinDataset};
use trainer::data::{Dataset, Split};
use trainer::eval::engine::run_engine;
use trainer::export::densify;
use trainer::model::tensor_file::{save, NamedTensor};
use trainer::pipeline;

const IMAGES: usize = 200;

fn data_dir() -> PathBuf {
    ensure(BuiltinDataset::Mnist, &xtask::root().join("data")).expect("MNIST digits")
}

#[derive(serde::Deserialize)]
struct Reference {
    predictions: Vec<usize>,
    logits: Vec<Vec<f64>>,
}

/// Writes the reference state dict and its numpy results (needs numpy and safetensors: a venv
/// under target/ is made once).
fn numpy_reference(dir: &Path) -> (PathBuf, Reference) {
    let py = xtask::python::venv(
        "python3",
        "numpy-venv",
        &["numpy", "safetensors"],
        "numpy, safetensors",
    )
    .unwrap();
    let (state, result) = (dir.join("state.safetensors"), dir.join("reference.json"));
    let status = Command::new(py)
        .arg(xtask::python::script("numpy_reference.py"))
        .arg(data_dir())
        .args([&state, &result])
        .args(["--images", &IMAGES.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reference = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    (state, reference)
}

#[test]
fn an_imported_state_dict_predicts_as_pytorchs_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (state, reference) = numpy_reference(dir.path());
    let model = pipeline::import_state_dict(&state, &NetworkDef::recipe()).unwrap();
    let file = pipeline::export(&model, &Default::default(), "import", Default::default()).unwrap();
    let aligned = AlignedBytes::from(file.as_slice());
    let images = Dataset::load_split(&data_dir(), Split::Test)
        .unwrap()
        .truncated(IMAGES);
    let run = run_engine(&aligned, &images).unwrap();
    let ours: Vec<usize> = run
        .logits
        .chunks_exact(run.classes)
        .map(sparse_engine::argmax)
        .collect();
    assert_eq!(ours, reference.predictions, "engine vs numpy reference");
    for (got, want) in run.logits.chunks_exact(run.classes).zip(&reference.logits) {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }
    // densify of the export gives the state dict back, bit for bit.
    let (network, back) = densify(&aligned).unwrap();
    assert_eq!(network, NetworkDef::recipe());
    let (original, _) = trainer::model::tensor_file::load(&state).unwrap();
    for t in &original {
        let b = back.iter().find(|b| b.name == t.name).unwrap();
        assert_eq!(b.shape, t.shape, "{}", t.name);
        assert!(
            b.values
                .iter()
                .zip(&t.values)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            t.name
        );
    }
}

/// The recipe's state dict from a seeded model, edited by `edit`, saved; the import's error.
fn import_error(edit: impl FnOnce(&mut Vec<NamedTensor>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let model = trainer::model::Cnn::new_seeded(0, &Device::Cpu).unwrap();
    let mut tensors = model.to_named().unwrap();
    edit(&mut tensors);
    let path = dir.path().join("state.safetensors");
    save(&path, &tensors, &Default::default()).unwrap();
    let Err(err) = pipeline::import_state_dict(&path, &NetworkDef::recipe()) else {
        panic!("imported");
    };
    format!("{err:#}")
}

#[test]
fn mismatched_state_dicts_are_refused_by_name() {
    let err = import_error(|t| t.retain(|t| t.name != "fc1.bias"));
    assert!(err.contains("no tensor fc1.bias"), "{err}");
    let err = import_error(|t| {
        let w = t.iter_mut().find(|t| t.name == "fc1.weight").unwrap();
        w.shape = vec![128, 3136 / 4, 4];
    });
    assert!(
        err.contains("fc1.weight has shape [128, 784, 4], expected [128, 3136]"),
        "{err}"
    );
    let err = import_error(|t| {
        t.push(NamedTensor {
            name: "bn.running_mean".into(),
            shape: vec![2],
            values: vec![0.0; 2],
        })
    });
    assert!(err.contains("unexpected tensor bn.running_mean"), "{err}");
    // A float64 tensor (a state dict saved without `.float()`).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f64.safetensors");
    let data = vec![0u8; 8 * 10];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![10], &data).unwrap();
    std::fs::write(
        &path,
        safetensors::serialize([("fc2.bias", view)], None).unwrap(),
    )
    .unwrap();
    let Err(err) = pipeline::import_state_dict(&path, &NetworkDef::recipe()) else {
        panic!("imported");
    };
    let err = format!("{err:#}");
    assert!(err.contains("fc2.bias is F64, expected F32"), "{err}");
}
