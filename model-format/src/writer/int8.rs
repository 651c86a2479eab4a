//! Writing int8 models (format 1.3, SPEC §4.1) from quantized tensors.

use super::{
    finish, header_metadata, index_tensor, index_width, Encoding, NetworkDef, Owned, WriteError,
    FORMAT_VERSION_INT8,
};
use crate::network::Layer;
use crate::quant::OUTPUT_SCALES;
use safetensors::tensor::Dtype as StDtype;
use std::collections::{BTreeMap, HashMap};

/// One quantized layer, `rows x cols` weights row-major in the file's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLayer {
    pub weights: Vec<i8>,
    /// In accumulator units (input scale × the row's weight scale).
    pub bias: Vec<i32>,
    /// Requantization of each row's accumulator to the layer's output.
    pub multiplier: Vec<i32>,
    pub shift: Vec<u8>,
    /// The layer's output scale: real value = stored activation (or logit) × this. With the
    /// input's 1/255 it gives every weight's real scale ([`crate::quant::weight_scale`]).
    pub output_scale: f32,
}

/// A CSR-delta matrix: row pointers, column steps, values (zero bridges included).
struct DeltaCsr {
    row_ptr: Vec<usize>,
    col_delta: Vec<u8>,
    values: Vec<i8>,
}

/// Compresses rows of `cols` weights, bridging gaps longer than 255 columns with zero entries.
fn delta_csr(weights: &[i8], cols: usize) -> DeltaCsr {
    let mut csr = DeltaCsr {
        row_ptr: vec![0],
        col_delta: Vec::new(),
        values: Vec::new(),
    };
    for row in weights.chunks_exact(cols) {
        let mut at = 0usize;
        for (col, &w) in row.iter().enumerate().filter(|(_, &w)| w != 0) {
            while col - at > 255 {
                at += 255;
                csr.col_delta.push(255);
                csr.values.push(0);
            }
            csr.col_delta.push((col - at) as u8);
            csr.values.push(w);
            at = col;
        }
        csr.row_ptr.push(csr.values.len());
    }
    csr
}

fn bytes_tensor(name: String, dtype: StDtype, shape: Vec<usize>, bytes: Vec<u8>) -> Owned {
    Owned {
        name,
        dtype,
        shape,
        bytes,
    }
}

fn i8_bytes(values: &[i8]) -> Vec<u8> {
    values.iter().map(|&v| v as u8).collect()
}

fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn check_len(name: &str, expected: usize, found: usize) -> Result<(), WriteError> {
    if expected == found {
        return Ok(());
    }
    Err(WriteError::WrongLength {
        name: name.into(),
        expected,
        found,
    })
}

/// One layer's tensors; records its encoding (`dense` or `csr-delta`) in `metadata`.
fn layer_tensors(
    layer: &Layer<'_>,
    q: &QuantizedLayer,
    encoding: Encoding,
    metadata: &mut HashMap<String, String>,
) -> Result<Vec<Owned>, WriteError> {
    let (rows, cols, name) = (layer.rows(), layer.cols(), layer.name);
    check_len(&format!("{name}.weight"), rows * cols, q.weights.len())?;
    for (part, len) in [
        ("bias", q.bias.len()),
        ("output.multiplier", q.multiplier.len()),
        ("output.shift", q.shift.len()),
    ] {
        check_len(&format!("{name}.{part}"), rows, len)?;
    }
    let mut owned = vec![
        bytes_tensor(
            format!("{name}.bias"),
            StDtype::I32,
            vec![rows],
            i32_bytes(&q.bias),
        ),
        bytes_tensor(
            format!("{name}.output.multiplier"),
            StDtype::I32,
            vec![rows],
            i32_bytes(&q.multiplier),
        ),
        bytes_tensor(
            format!("{name}.output.shift"),
            StDtype::U8,
            vec![rows],
            q.shift.clone(),
        ),
    ];
    let csr = delta_csr(&q.weights, cols);
    let entries = csr.values.len();
    let csr_bytes = entries * 2 + (rows + 1) * index_width(entries);
    let use_csr = match encoding {
        Encoding::Smallest => csr_bytes < rows * cols,
        Encoding::Dense => false,
        Encoding::Csr => true,
    };
    let weight = format!("{name}.weight");
    if use_csr {
        owned.push(bytes_tensor(
            format!("{weight}.values"),
            StDtype::I8,
            vec![entries],
            i8_bytes(&csr.values),
        ));
        owned.push(bytes_tensor(
            format!("{weight}.col_delta"),
            StDtype::U8,
            vec![entries],
            csr.col_delta,
        ));
        owned.push(index_tensor(
            format!("{weight}.row_ptr"),
            &csr.row_ptr,
            index_width(entries),
        ));
        metadata.insert(format!("encoding.{weight}"), "csr-delta".into());
    } else {
        let (shape, rank) = layer.weight_shape();
        owned.push(bytes_tensor(
            weight.clone(),
            StDtype::I8,
            shape[..rank].to_vec(),
            i8_bytes(&q.weights),
        ));
        metadata.insert(format!("encoding.{weight}"), "dense".into());
    }
    Ok(owned)
}

/// Writes an int8 model file (format 1.3): `layers` maps each layer's name to its quantized
/// tensors; `provenance` adds free-form metadata. The file is read back and validated (weight
/// range, accumulator bound, requantization parameters) before it is returned.
pub fn write_int8(
    net: &NetworkDef,
    layers: &HashMap<String, QuantizedLayer>,
    encoding: Encoding,
    provenance: &BTreeMap<String, String>,
) -> Result<Vec<u8>, WriteError> {
    let network = net.network().map_err(WriteError::Network)?;
    let mut metadata = header_metadata(net, provenance, FORMAT_VERSION_INT8)?;
    metadata.insert("precision".into(), "int8".into());
    let mut owned = Vec::new();
    let mut scales = Vec::new();
    for layer in &network.layers {
        let q = layers.get(layer.name).ok_or(WriteError::MissingTensor {
            name: layer.name.into(),
        })?;
        if !(q.output_scale.is_finite() && q.output_scale > 0.0) {
            return Err(WriteError::BadScale {
                layer: layer.name.into(),
            });
        }
        scales.push(q.output_scale.to_string());
        owned.extend(layer_tensors(layer, q, encoding, &mut metadata)?);
    }
    metadata.insert(OUTPUT_SCALES.into(), scales.join(","));
    finish(&owned, metadata)
}
