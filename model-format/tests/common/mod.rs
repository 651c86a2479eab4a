//! A small two-layer network used across the format's tests.
#![allow(dead_code)]

use model_format::writer::{write, AlignedBytes, Encoding, LayerDef};
use model_format::{data_crc32, header_crc32, LayerKind, Shape3};
use std::collections::{BTreeMap, HashMap};

pub fn input() -> Shape3 {
    Shape3 {
        channels: 1,
        height: 4,
        width: 4,
    }
}

pub fn layers() -> Vec<LayerDef> {
    vec![
        LayerDef {
            name: "c1".into(),
            kind: LayerKind::Conv3x3ReluMaxPool2,
            inputs: 1,
            outputs: 2,
        },
        LayerDef {
            name: "f1".into(),
            kind: LayerKind::Linear {
                relu: false,
                order: model_format::Flatten::Chw,
            },
            inputs: 8,
            outputs: 3,
        },
    ]
}

/// Deterministic values with exact zeros at every third position.
pub fn tensors() -> HashMap<String, Vec<f32>> {
    let ramp = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    (i as f32 - n as f32 / 2.0) * scale
                }
            })
            .collect()
    };
    HashMap::from([
        ("c1.weight".to_string(), ramp(18, 0.125)),
        ("c1.bias".to_string(), vec![0.5, -0.25]),
        ("f1.weight".to_string(), ramp(24, 0.0625)),
        ("f1.bias".to_string(), vec![1.0, 0.0, -1.0]),
    ])
}

pub fn provenance() -> BTreeMap<String, String> {
    BTreeMap::from([("dataset".to_string(), "unit-test".to_string())])
}

pub fn model_bytes(encoding: Encoding) -> Vec<u8> {
    write(
        &model_format::NetworkDef::new(input(), layers().to_vec()).unwrap(),
        &tensors(),
        encoding,
        &provenance(),
    )
    .unwrap()
}

/// Splits a file into (header JSON, data section).
pub fn split(bytes: &[u8]) -> (String, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        String::from_utf8(bytes[8..8 + n].to_vec()).unwrap(),
        bytes[8 + n..].to_vec(),
    )
}

/// Reassembles a file from a header and data, padding the header with spaces to 8 bytes and,
/// when `fix_crc`, rewriting `data_crc32` and `header_crc32` to match.
pub fn assemble(header: &str, data: &[u8], fix_crc: bool) -> AlignedBytes {
    let mut header = header.to_string();
    if fix_crc {
        if let Some(pos) = header.find("\"data_crc32\":\"") {
            let start = pos + "\"data_crc32\":\"".len();
            header.replace_range(start..start + 8, &format!("{:08x}", data_crc32(data)));
        }
    }
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    if fix_crc {
        let key = "\"header_crc32\":\"";
        if let Some(pos) = header.find(key) {
            let at = 8 + pos + key.len();
            let crc = header_crc32(&bytes, bytes.len(), at).unwrap();
            bytes[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
        }
    }
    bytes.extend_from_slice(data);
    AlignedBytes::from(bytes.as_slice())
}
