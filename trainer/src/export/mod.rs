//! Between the trainer's dense models and the sparse `l1sparse` file: export, inspection and
//! densification.

use crate::model::tensor_file::NamedTensor;
use crate::model::Cnn;
use anyhow::{Context, Result};
use model_format::writer::{self, AlignedBytes, Encoding};
use model_format::{
    Dtype, Flatten, Indices, Layer, LayerKind, LayerParams, Model, NetworkDef, Precision, Shape3,
    Weights,
};

mod int8;
use std::collections::{BTreeMap, HashMap};

/// Provenance for the export, from the dense model's own metadata and its sparsity.
pub fn provenance(
    model: &Cnn,
    source_meta: &BTreeMap<String, String>,
    source: &str,
) -> Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    meta.insert("input_scaling".into(), "u8/255".into());
    meta.insert("source".into(), source.into());
    for key in ["dataset", "test_accuracy", "pruned_from"] {
        if let Some(v) = source_meta.get(key) {
            meta.insert(key.into(), v.clone());
        }
    }
    if let Some(training) = source_meta.get("training") {
        meta.insert("training".into(), training.clone());
    }
    let (zeros, total) = crate::eval::count_zeros(model)?;
    meta.insert(
        "zero_fraction".into(),
        format!("{:.6}", zeros as f64 / total as f64),
    );
    // Keep interpreted-free values escape-free: JSON text is stored with single quotes.
    for v in meta.values_mut() {
        *v = v.replace('"', "'").replace('\\', "/");
    }
    Ok(meta)
}

/// The sparse file's bytes for a model, laid out as its network says (the columns of `*_hcw`
/// layers moved to row-major order).
pub fn export_bytes(
    model: &Cnn,
    provenance: &BTreeMap<String, String>,
    encoding: Encoding,
) -> Result<Vec<u8>> {
    let tensors = file_order_tensors(model)?;
    Ok(writer::write(
        model.network(),
        &tensors,
        encoding,
        provenance,
    )?)
}

/// The model's tensors by name, each weight matrix with its columns in the file's order (those
/// of `*_hcw` layers moved to row-major order).
pub fn file_order_tensors(model: &Cnn) -> Result<HashMap<String, Vec<f32>>> {
    let mut tensors: HashMap<String, Vec<f32>> = model.to_vecs()?.into_iter().collect();
    for layer in model.network().layers() {
        if is_hcw(layer.kind) {
            if let Some(w) = tensors.get_mut(&format!("{}.weight", layer.name)) {
                *w = permute_columns(w, layer.input, Direction::ToHcw);
            }
        }
    }
    Ok(tensors)
}

fn is_hcw(kind: LayerKind) -> bool {
    matches!(
        kind,
        LayerKind::Linear {
            order: Flatten::Hcw,
            ..
        }
    )
}

#[derive(Clone, Copy)]
enum Direction {
    ToHcw,
    ToChw,
}

/// A linear weight matrix with its columns moved between PyTorch's channel-major flattening of
/// `map`, `(c·H + y)·W + x`, and the row-major one of `*_hcw` layers, `(y·C + c)·W + x`.
fn permute_columns(weights: &[f32], map: Shape3, direction: Direction) -> Vec<f32> {
    let (c, h, w) = (map.channels, map.height, map.width);
    let cols = map.len();
    let mut out = vec![0f32; weights.len()];
    for (src, dst) in weights.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (chw, hcw) = ((ci * h + y) * w + x, (y * c + ci) * w + x);
                    match direction {
                        Direction::ToHcw => dst[hcw] = src[chw],
                        Direction::ToChw => dst[chw] = src[hcw],
                    }
                }
            }
        }
    }
    out
}

/// Reads and validates a model file, keeping it in aligned memory.
pub fn read_model_file(path: &std::path::Path) -> Result<AlignedBytes> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let aligned = AlignedBytes::from(bytes.as_slice());
    Model::parse(&aligned)
        .map_err(|e| anyhow::anyhow!("{}: invalid model file: {e}", path.display()))?;
    Ok(aligned)
}

/// One row of `trainer inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorRow {
    pub tensor: String,
    pub encoding: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub nonzeros: usize,
    pub bytes: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub file_bytes: usize,
    pub header_bytes: usize,
    pub data_bytes: usize,
    pub dense_f32_bytes: usize,
    pub parameters: usize,
    pub nonzeros: usize,
    pub compression: f64,
    pub bytes_per_nonzero: f64,
    pub tensors: Vec<TensorRow>,
    pub metadata: BTreeMap<String, String>,
}

pub fn inspect(bytes: &[u8]) -> Result<Inspection> {
    let model = Model::parse(bytes).map_err(|e| anyhow::anyhow!("invalid model file: {e}"))?;
    let (rows, parameters, nonzeros) = match model.precision() {
        Precision::F32 => f32_rows(&model),
        Precision::Int8 => int8::tensor_rows(&model),
    };
    let data_bytes = model.data.len();
    Ok(Inspection {
        file_bytes: bytes.len(),
        header_bytes: bytes.len() - data_bytes,
        data_bytes,
        dense_f32_bytes: parameters * 4,
        parameters,
        nonzeros,
        compression: (parameters * 4) as f64 / bytes.len() as f64,
        bytes_per_nonzero: bytes.len() as f64 / nonzeros.max(1) as f64,
        tensors: rows,
        metadata: model
            .metadata_entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// An f32 model's tensor rows, parameters and non-zero parameters.
fn f32_rows(model: &Model<'_>) -> (Vec<TensorRow>, usize, usize) {
    let mut rows = Vec::new();
    let mut parameters = 0;
    let mut nonzeros = 0;
    for (layer, params) in model.layers_with_shapes() {
        let name = layer.name;
        let (r, c) = (layer.rows(), layer.cols());
        parameters += r * c + params.bias.len();
        let weight_nnz = params.weights.nnz();
        let bias_nnz = params.bias.iter().filter(|&&b| b != 0.0).count();
        nonzeros += weight_nnz + bias_nnz;
        let idx_row = |suffix: &str, ix: &Indices<'_>| TensorRow {
            tensor: format!("{name}.weight.{suffix}"),
            encoding: "csr".into(),
            dtype: ix.dtype().name().into(),
            shape: vec![ix.len()],
            nonzeros: 0,
            bytes: ix.len() * ix.dtype().size(),
        };
        match params.weights {
            Weights::Dense(v) => rows.push(TensorRow {
                tensor: format!("{name}.weight"),
                encoding: "dense".into(),
                dtype: Dtype::F32.name().into(),
                shape: layer.weight_shape().0[..layer.weight_shape().1].to_vec(),
                nonzeros: weight_nnz,
                bytes: v.len() * 4,
            }),
            Weights::Csr(csr) => {
                rows.push(TensorRow {
                    tensor: format!("{name}.weight.values"),
                    encoding: "csr".into(),
                    dtype: Dtype::F32.name().into(),
                    shape: vec![csr.nnz()],
                    nonzeros: weight_nnz,
                    bytes: csr.nnz() * 4,
                });
                rows.push(idx_row("row_ptr", &csr.row_ptr));
                rows.push(idx_row("col_idx", &csr.col_idx));
            }
        }
        rows.push(TensorRow {
            tensor: format!("{name}.bias"),
            encoding: "dense".into(),
            dtype: Dtype::F32.name().into(),
            shape: vec![params.bias.len()],
            nonzeros: bias_nnz,
            bytes: params.bias.len() * 4,
        });
    }
    (rows, parameters, nonzeros)
}

/// The file's network, and every parameter as a dense tensor with PyTorch's names and layout
/// (the columns of `*_hcw` layers moved back to channel-major order), as the trainer's model
/// holds them.
pub fn densify(bytes: &[u8]) -> Result<(NetworkDef, Vec<NamedTensor>)> {
    let model = Model::parse(bytes).map_err(|e| anyhow::anyhow!("invalid model file: {e}"))?;
    let layers = match model.precision() {
        Precision::F32 => model
            .layers_with_shapes()
            .map(|(layer, p)| (*layer, f32_dense(layer, p), p.bias.to_vec()))
            .collect(),
        Precision::Int8 => int8::real_layers(&model)?,
    };
    let mut out = Vec::new();
    for (layer, mut dense, bias) in layers {
        if is_hcw(layer.kind) {
            dense = permute_columns(&dense, layer.input, Direction::ToChw);
        }
        let (shape, rank) = layer.weight_shape();
        out.push(NamedTensor {
            name: format!("{}.weight", layer.name),
            shape: shape[..rank].to_vec(),
            values: dense,
        });
        out.push(NamedTensor {
            name: format!("{}.bias", layer.name),
            shape: vec![layer.rows()],
            values: bias,
        });
    }
    Ok((NetworkDef::from_network(&model.network), out))
}

/// An f32 layer's weights as a dense row-major matrix in the file's column order.
fn f32_dense(layer: &Layer<'_>, params: &LayerParams<'_>) -> Vec<f32> {
    let (rows, cols) = (layer.rows(), layer.cols());
    let mut dense = vec![0f32; rows * cols];
    match params.weights {
        Weights::Dense(v) => dense.copy_from_slice(v),
        Weights::Csr(csr) => {
            for row in 0..rows {
                let (start, end) = (
                    csr.row_ptr.get(row).unwrap_or(0),
                    csr.row_ptr.get(row + 1).unwrap_or(0),
                );
                for k in start..end {
                    if let (Some(col), Some(&v)) = (csr.col_idx.get(k), csr.values.get(k)) {
                        dense[row * cols + col] = v;
                    }
                }
            }
        }
    }
    dense
}
