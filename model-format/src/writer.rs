//! Building model files from dense tensors (host only).

use crate::model::{data_crc32, FORMAT_NAME};
use crate::network::Layer;
pub use crate::network_def::{LayerDef, NetworkDef};
use crate::Model;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::{BTreeMap, HashMap};

/// Metadata keys the format reserves; provenance may not use them.
pub const RESERVED_KEYS: [&str; 8] = [
    "format",
    "format_version",
    "input",
    "layers",
    "data_crc32",
    "header_crc32",
    "precision",
    crate::quant::OUTPUT_SCALES,
];
/// The version written for `f32` models: 1.2, the first whose header carries its own checksum.
pub const FORMAT_VERSION: &str = "1.2";
/// The version written for int8 models: 1.3, the first with int8 layers.
pub const FORMAT_VERSION_INT8: &str = "1.3";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("network description invalid: {0}")]
    Network(crate::Error),
    #[error("tensor {name} missing")]
    MissingTensor { name: String },
    #[error("tensor {name} has {found} values, its layer needs {expected}")]
    WrongLength {
        name: String,
        expected: usize,
        found: usize,
    },
    #[error("tensor {name} holds a NaN or infinity at {index}")]
    NonFinite { name: String, index: usize },
    #[error("layer {layer}: its output scale must be finite and positive")]
    BadScale { layer: String },
    #[error("metadata key {0} is reserved by the format")]
    ReservedKey(String),
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error("written file does not read back: {0}")]
    ReadBack(crate::Error),
}

/// How to store a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Whichever of dense and CSR takes fewer bytes.
    Smallest,
    Dense,
    Csr,
}

/// Narrowest index width (bytes) that holds values up to `max`.
pub fn index_width(max: usize) -> usize {
    match max {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        _ => 4,
    }
}

/// Bytes a weight matrix takes in each encoding: (dense, csr).
pub fn encoded_sizes(rows: usize, cols: usize, nnz: usize) -> (usize, usize) {
    let dense = rows * cols * 4;
    let csr = nnz * 4 + (rows + 1) * index_width(nnz) + nnz * index_width(cols.saturating_sub(1));
    (dense, csr)
}

pub(crate) struct Owned {
    name: String,
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

pub(crate) fn index_tensor(name: String, values: &[usize], width: usize) -> Owned {
    let (dtype, bytes): (StDtype, Vec<u8>) = match width {
        1 => (StDtype::U8, values.iter().map(|&v| v as u8).collect()),
        2 => (
            StDtype::U16,
            values
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
        ),
        _ => (
            StDtype::U32,
            values
                .iter()
                .flat_map(|&v| (v as u32).to_le_bytes())
                .collect(),
        ),
    };
    Owned {
        name,
        dtype,
        shape: vec![values.len()],
        bytes,
    }
}

pub(crate) fn f32_tensor(name: String, shape: Vec<usize>, values: &[f32]) -> Owned {
    Owned {
        name,
        dtype: StDtype::F32,
        shape,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

mod int8;
pub use int8::{write_int8, QuantizedLayer};

/// Writes a model file. `tensors` maps `<layer>.weight` (PyTorch layout, row-major) and
/// `<layer>.bias` to values; `provenance` adds free-form metadata.
pub fn write(
    net: &NetworkDef,
    tensors: &HashMap<String, Vec<f32>>,
    encoding: Encoding,
    provenance: &BTreeMap<String, String>,
) -> Result<Vec<u8>, WriteError> {
    let network = net.network().map_err(WriteError::Network)?;
    let mut metadata = header_metadata(net, provenance, FORMAT_VERSION)?;
    let mut owned = Vec::new();
    for layer in &network.layers {
        owned.extend(layer_tensors(layer, tensors, encoding, &mut metadata)?);
    }
    finish(&owned, metadata)
}

/// Checksums, seals and reads back a file of `owned` tensors.
fn finish(owned: &[Owned], mut metadata: HashMap<String, String>) -> Result<Vec<u8>, WriteError> {
    // The checksum covers only the data section, whose layout does not depend on the metadata:
    // serialise once to learn it, then again with the real value (same fixed width).
    metadata.insert("data_crc32".into(), "00000000".into());
    let first = serialize(owned, &metadata)?;
    let header_len = u64::from_le_bytes(first[..8].try_into().expect("8-byte prefix")) as usize;
    let crc = data_crc32(&first[8 + header_len..]);
    metadata.insert("data_crc32".into(), format!("{crc:08x}"));
    metadata.insert(HEADER_CRC_KEY.into(), "00000000".into());
    let mut bytes = serialize(owned, &metadata)?;
    seal_header(&mut bytes)?;
    Model::parse(&AlignedBytes::from(bytes.as_slice())).map_err(WriteError::ReadBack)?;
    Ok(bytes)
}

/// The format's own metadata (format, version, network) plus the provenance.
fn header_metadata(
    net: &NetworkDef,
    provenance: &BTreeMap<String, String>,
    version: &str,
) -> Result<HashMap<String, String>, WriteError> {
    let mut metadata: HashMap<String, String> = HashMap::new();
    for (k, v) in provenance {
        if RESERVED_KEYS.contains(&k.as_str()) || k.starts_with("encoding.") {
            return Err(WriteError::ReservedKey(k.clone()));
        }
        metadata.insert(k.clone(), v.clone());
    }
    metadata.insert("format".into(), FORMAT_NAME.into());
    // Every layer kind is from 1.0 or 1.1, so 1.2 (header checksum) describes any f32 file.
    metadata.insert("format_version".into(), version.into());
    let (input, layers) = net.describe();
    metadata.insert("input".into(), input);
    metadata.insert("layers".into(), layers);
    Ok(metadata)
}

/// One layer's values, checked against its shape.
fn layer_values<'t>(
    layer: &Layer<'_>,
    tensors: &'t HashMap<String, Vec<f32>>,
    suffix: &str,
    expected: usize,
) -> Result<&'t [f32], WriteError> {
    let name = format!("{}{suffix}", layer.name);
    let values = tensors
        .get(&name)
        .ok_or(WriteError::MissingTensor { name: name.clone() })?;
    if values.len() != expected {
        return Err(WriteError::WrongLength {
            name,
            expected,
            found: values.len(),
        });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(WriteError::NonFinite { name, index });
    }
    Ok(values)
}

/// A layer's tensors in the chosen encoding; records the encoding in `metadata`.
fn layer_tensors(
    layer: &Layer<'_>,
    tensors: &HashMap<String, Vec<f32>>,
    encoding: Encoding,
    metadata: &mut HashMap<String, String>,
) -> Result<Vec<Owned>, WriteError> {
    let (rows, cols) = (layer.rows(), layer.cols());
    let weights = layer_values(layer, tensors, ".weight", rows * cols)?;
    let bias = layer_values(layer, tensors, ".bias", rows)?;
    let mut owned = vec![f32_tensor(format!("{}.bias", layer.name), vec![rows], bias)];
    let nnz = weights.iter().filter(|&&w| w != 0.0).count();
    let (dense_bytes, csr_bytes) = encoded_sizes(rows, cols, nnz);
    let use_csr = match encoding {
        Encoding::Smallest => csr_bytes < dense_bytes,
        Encoding::Dense => false,
        Encoding::Csr => true,
    };
    let weight_name = format!("{}.weight", layer.name);
    if use_csr {
        owned.extend(csr_tensors(&weight_name, weights, cols, nnz));
        metadata.insert(format!("encoding.{weight_name}"), "csr".into());
    } else {
        let (shape, rank) = layer.weight_shape();
        owned.push(f32_tensor(
            weight_name.clone(),
            shape[..rank].to_vec(),
            weights,
        ));
        metadata.insert(format!("encoding.{weight_name}"), "dense".into());
    }
    Ok(owned)
}

/// The three CSR tensors of a `rows x cols` matrix with `nnz` non-zeros.
fn csr_tensors(weight_name: &str, weights: &[f32], cols: usize, nnz: usize) -> [Owned; 3] {
    let mut row_ptr = vec![0usize];
    let mut col_idx = Vec::with_capacity(nnz);
    let mut values = Vec::with_capacity(nnz);
    for row in weights.chunks_exact(cols) {
        for (col, &w) in row.iter().enumerate().filter(|(_, &w)| w != 0.0) {
            col_idx.push(col);
            values.push(w);
        }
        row_ptr.push(values.len());
    }
    [
        f32_tensor(format!("{weight_name}.values"), vec![nnz], &values),
        index_tensor(format!("{weight_name}.row_ptr"), &row_ptr, index_width(nnz)),
        index_tensor(
            format!("{weight_name}.col_idx"),
            &col_idx,
            index_width(cols.saturating_sub(1)),
        ),
    ]
}

const HEADER_CRC_KEY: &str = "header_crc32";

/// Writes `header_crc32` into its `00000000` placeholder (same width, so nothing moves).
fn seal_header(file: &mut [u8]) -> Result<(), WriteError> {
    let bad = || WriteError::Safetensors(safetensors::SafeTensorError::InvalidHeaderLength);
    let header_len = u64::from_le_bytes(file[..8].try_into().expect("8-byte prefix")) as usize;
    let header_end = 8 + header_len;
    let placeholder = format!("\"{HEADER_CRC_KEY}\":\"00000000\"");
    let at = file[..header_end]
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .ok_or_else(bad)?
        + placeholder.len()
        - 9;
    let crc = crate::model::header_crc32(file, header_end, at).ok_or_else(bad)?;
    file[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    Ok(())
}

fn serialize(owned: &[Owned], metadata: &HashMap<String, String>) -> Result<Vec<u8>, WriteError> {
    let views = owned
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, WriteError>>()?;
    canonical_header(&safetensors::serialize(views, Some(metadata.clone()))?)
}

/// Rewrites the header with sorted keys (the crate takes metadata as a `HashMap`, whose order
/// changes from run to run), so the same model always gives the same bytes. The data section,
/// laid out by the safetensors crate, is kept as it is.
fn canonical_header(file: &[u8]) -> Result<Vec<u8>, WriteError> {
    let bad = |_| WriteError::Safetensors(safetensors::SafeTensorError::InvalidHeaderLength);
    let header_len = u64::from_le_bytes(file[..8].try_into().expect("8-byte prefix")) as usize;
    // serde_json's default map is ordered by key.
    let header: serde_json::Value =
        serde_json::from_slice(&file[8..8 + header_len]).map_err(bad)?;
    let mut text = serde_json::to_string(&header).map_err(bad)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&file[8 + header_len..]);
    Ok(out)
}

/// File bytes copied into 4-byte-aligned memory, as a model needs to be read in place.
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl From<&[u8]> for AlignedBytes {
    fn from(bytes: &[u8]) -> Self {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}
