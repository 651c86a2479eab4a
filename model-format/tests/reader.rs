//! The reader: golden files, official-crate compatibility, and one negative test per error.

mod common;

use common::{assemble, model_bytes, split};
use model_format::writer::{write, AlignedBytes, Encoding};
use model_format::{Error, Flatten, LayerKind, MetadataKey, Model, Part, Weights};

fn parse(bytes: &[u8]) -> Result<(), Error> {
    Model::parse(&AlignedBytes::from(bytes)).map(|_| ())
}

/// Applies a textual edit to the header of the CSR model, fixes the checksum, and parses.
fn with_header_edit(from: &str, to: &str) -> Result<(), Error> {
    let (header, data) = split(&model_bytes(Encoding::Csr));
    assert!(header.contains(from), "edit target {from:?} not in header");
    Model::parse(&assemble(&header.replacen(from, to, 1), &data, true)).map(|_| ())
}

/// Replaces the data section (same length), fixes the checksum, and parses.
fn with_data_edit(encoding: Encoding, edit: impl FnOnce(&mut Vec<u8>)) -> Result<(), Error> {
    let (header, mut data) = split(&model_bytes(encoding));
    edit(&mut data);
    Model::parse(&assemble(&header, &data, true)).map(|_| ())
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Checks a fixture of `common`'s network: every weight and bias, the encoding, the version.
fn check_fixture(name: &str, encoding: Encoding, version: &str) {
    let golden = std::fs::read(fixture(name)).unwrap();
    let aligned = AlignedBytes::from(golden.as_slice());
    let model = Model::parse(&aligned).unwrap();
    let tensors = common::tensors();
    for (layer, params) in model.layers_with_shapes() {
        let w = &tensors[&format!("{}.weight", layer.name)];
        let cols = layer.cols();
        for (i, &expected) in w.iter().enumerate() {
            let got = params.weights.get(i / cols, i % cols, cols);
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "{name} {}[{i}]",
                layer.name
            );
        }
        assert_eq!(params.bias, &tensors[&format!("{}.bias", layer.name)][..]);
        match (encoding, params.weights) {
            (Encoding::Dense, Weights::Dense(_)) | (Encoding::Csr, Weights::Csr(_)) => {}
            other => panic!("{name}: unexpected encoding {other:?}"),
        }
    }
    assert_eq!(model.metadata("dataset"), Some("unit-test"));
    assert_eq!(model.metadata("format_version"), Some(version));
}

#[test]
fn frozen_v1_0_files_still_read() {
    check_fixture("v1-dense.safetensors", Encoding::Dense, "1.0");
    check_fixture("v1-csr.safetensors", Encoding::Csr, "1.0");
}

#[test]
fn golden_v1_2_files_read_and_the_writer_still_produces_them() {
    for (name, encoding) in [
        ("v1.2-dense.safetensors", Encoding::Dense),
        ("v1.2-csr.safetensors", Encoding::Csr),
    ] {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(fixture(name), model_bytes(encoding)).unwrap();
        }
        let golden = std::fs::read(fixture(name)).unwrap();
        assert_eq!(
            golden,
            model_bytes(encoding),
            "{name}: writer output changed (UPDATE_GOLDEN=1 to accept)"
        );
        check_fixture(name, encoding, "1.2");
    }
}

#[test]
fn every_single_bit_flip_is_a_typed_error() {
    for name in ["v1.2-csr.safetensors", "v1.2-dense.safetensors"] {
        let golden = std::fs::read(fixture(name)).unwrap();
        let mut flipped = golden.clone();
        for bit in 0..golden.len() * 8 {
            flipped[bit / 8] ^= 1 << (bit % 8);
            let result = parse(&flipped);
            assert!(
                result.is_err(),
                "{name}: bit {bit} (byte {}) flipped is accepted",
                bit / 8
            );
            flipped[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

#[test]
fn header_checksum_errors() {
    let bytes = model_bytes(Encoding::Csr);
    let (header, data) = split(&bytes);
    // A provenance value changed without resealing the header.
    let edited = header.replacen("unit-test", "unit-tesu", 1);
    assert!(matches!(
        Model::parse(&assemble(&edited, &data, false)),
        Err(Error::HeaderChecksumMismatch { .. })
    ));
    // An uppercase digit reads as the same number: refused.
    let key = "\"header_crc32\":\"";
    let at = header.find(key).unwrap() + key.len();
    let value = &header[at..at + 8];
    if let Some(i) = value.find(|c: char| c.is_ascii_lowercase()) {
        let mut upper = header.clone();
        upper.replace_range(at + i..at + i + 1, &value[i..i + 1].to_uppercase());
        assert_eq!(
            Model::parse(&assemble(&upper, &data, false)).map(|_| ()),
            Err(Error::MissingMetadata {
                key: MetadataKey::HeaderCrc32
            })
        );
    }
    // A 1.2 file must carry the checksum; any file that carries one is checked.
    let without = header.replacen("\"header_crc32\"", "\"header_crc_x\"", 1);
    assert_eq!(
        Model::parse(&assemble(&without, &data, true)).map(|_| ()),
        Err(Error::MissingMetadata {
            key: MetadataKey::HeaderCrc32
        })
    );
    let older = header.replacen("\"1.2\"", "\"1.0\"", 1);
    assert!(matches!(
        Model::parse(&assemble(&older, &data, false)),
        Err(Error::HeaderChecksumMismatch { .. })
    ));
    assert_eq!(
        Error::HeaderChecksumMismatch {
            expected: 1,
            computed: 2
        }
        .to_string(),
        "header CRC-32 is 00000002, metadata says 00000001"
    );
}

#[test]
fn export_opens_with_the_official_safetensors_crate() {
    let bytes = model_bytes(Encoding::Csr);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 8);
    let values = st.tensor("f1.weight.values").unwrap();
    assert_eq!(values.dtype(), safetensors::Dtype::F32);
    assert_eq!(values.shape(), &[16]);
}

#[test]
fn smallest_encoding_picks_per_tensor() {
    // A conv without zeros stays dense (72 bytes vs 93 as CSR); an all-zero fc becomes CSR.
    let mut tensors = common::tensors();
    tensors.insert("c1.weight".into(), (1..=18).map(|i| i as f32).collect());
    tensors.insert("f1.weight".into(), vec![0.0; 24]);
    let bytes = write(
        &model_format::NetworkDef::new(common::input(), common::layers().to_vec()).unwrap(),
        &tensors,
        Encoding::Smallest,
        &common::provenance(),
    )
    .unwrap();
    let aligned = AlignedBytes::from(bytes.as_slice());
    let model = Model::parse(&aligned).unwrap();
    assert!(matches!(model.layers()[0].weights, Weights::Dense(_)));
    assert!(matches!(model.layers()[1].weights, Weights::Csr(c) if c.nnz() == 0));
}

#[test]
fn erased_or_empty_flash_is_no_model() {
    assert_eq!(parse(&[0xFF; 4096]), Err(Error::NoModel));
    assert_eq!(parse(&[0x00; 64]), Err(Error::NoModel));
    assert_eq!(parse(&[1, 2, 3]), Err(Error::TooShort { len: 3 }));
}

#[test]
fn header_length_errors() {
    let mut bytes = model_bytes(Encoding::Csr);
    bytes[..8].copy_from_slice(&(2u64 << 20).to_le_bytes());
    assert_eq!(
        parse(&bytes),
        Err(Error::HeaderTooLarge {
            header_len: 2 << 20
        })
    );
    let bytes = model_bytes(Encoding::Csr);
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let truncated = &bytes[..(8 + header_len as usize - 1)];
    assert_eq!(
        parse(truncated),
        Err(Error::HeaderOutOfBounds {
            header_len,
            file_len: truncated.len()
        })
    );
}

#[test]
fn header_not_utf8() {
    let mut bytes = model_bytes(Encoding::Csr);
    bytes[9] = 0xC3; // a lone UTF-8 lead byte inside `"__metadata__"`
    bytes[10] = b'"';
    assert_eq!(parse(&bytes), Err(Error::HeaderNotUtf8));
}

#[test]
fn header_syntax() {
    assert!(matches!(
        with_header_edit("\"dtype\":\"F32\"", "\"dtype\":F32"),
        Err(Error::HeaderSyntax { .. })
    ));
    assert!(matches!(
        with_header_edit("\"shape\":[2]", "\"shape\":[2],\"extra\":1"),
        Err(Error::HeaderSyntax { .. })
    ));
    assert!(matches!(
        with_header_edit("[0,8]", "[0,08]"),
        Err(Error::HeaderSyntax { .. })
    ));
}

#[test]
fn too_many_entries() {
    let many: String = (0..60).map(|i| format!("\"k{i}\":\"v\",")).collect();
    let err = with_header_edit("{\"data_crc32\"", &format!("{{{many}\"data_crc32\""));
    assert_eq!(
        err,
        Err(Error::TooManyEntries {
            max: model_format::container::MAX_METADATA
        })
    );
}

#[test]
fn duplicate_tensor() {
    let err = with_header_edit("\"c1.weight.col_idx\"", "\"c1.bias\"");
    assert_eq!(err, Err(Error::DuplicateTensor { tensor: 1 }));
}

#[test]
fn unsupported_dtype_and_bad_shape() {
    assert_eq!(
        with_header_edit("\"F32\"", "\"F16\""),
        Err(Error::UnsupportedDtype { tensor: 0 })
    );
    assert_eq!(
        with_header_edit("\"shape\":[2]", "\"shape\":[1,1,1,1,2]"),
        Err(Error::BadShape { tensor: 0 })
    );
    assert_eq!(
        with_header_edit(
            "\"shape\":[2]",
            "\"shape\":[4294967296,4294967296,4294967296]"
        ),
        Err(Error::BadShape { tensor: 0 })
    );
}

#[test]
fn size_mismatch() {
    assert_eq!(
        with_header_edit("\"shape\":[2]", "\"shape\":[3]"),
        Err(Error::SizeMismatch {
            tensor: 0,
            expected: 12,
            found: 8
        })
    );
}

#[test]
fn data_not_contiguous_and_length_mismatch() {
    // c1.bias claims bytes 4..12, overlapping c1.weight.values at 8.
    let err = with_header_edit("\"data_offsets\":[0,8]", "\"data_offsets\":[4,12]");
    assert_eq!(err, Err(Error::DataNotContiguous { offset: 0 }));
    let (header, mut data) = split(&model_bytes(Encoding::Csr));
    data.push(0);
    assert_eq!(
        Model::parse(&assemble(&header, &data, true)).map(|_| ()),
        Err(Error::LengthMismatch {
            expected: data.len() - 1,
            found: data.len()
        })
    );
}

#[test]
fn misaligned_model_is_rejected_not_read() {
    let bytes = model_bytes(Encoding::Csr);
    let mut shifted = AlignedBytes::from(&[&[0u8][..], &bytes].concat()[..]).to_vec();
    shifted.push(0);
    let aligned = AlignedBytes::from(shifted.as_slice());
    let err = Model::parse(&aligned[1..1 + bytes.len()]).map(|_| ());
    assert!(matches!(err, Err(Error::Misaligned { .. })), "{err:?}");
}

#[test]
fn missing_metadata() {
    assert_eq!(
        with_header_edit("\"format\":\"l1sparse\"", "\"formats\":\"l1sparse\""),
        Err(Error::MissingMetadata {
            key: MetadataKey::Format
        })
    );
    assert_eq!(
        with_header_edit("\"encoding.f1.weight\"", "\"encodings.f1.weight\""),
        Err(Error::MissingMetadata {
            key: MetadataKey::Encoding
        })
    );
    let (header, data) = split(&model_bytes(Encoding::Csr));
    let start = header.find("{\"data_crc32").unwrap() + 1;
    let end = header.find("},\"c1.bias\"").unwrap();
    let stripped = format!("{}{}", &header[..start], &header[end..]);
    assert_eq!(
        Model::parse(&assemble(&stripped, &data, false)).map(|_| ()),
        Err(Error::MissingMetadata {
            key: MetadataKey::Metadata
        })
    );
}

#[test]
fn wrong_format_and_version() {
    assert_eq!(
        with_header_edit("\"l1sparse\"", "\"l2dense\""),
        Err(Error::WrongFormat)
    );
    assert_eq!(
        with_header_edit("\"1.2\"", "\"2.0\""),
        Err(Error::UnsupportedVersion { major: 2 })
    );
    assert_eq!(
        with_header_edit("\"1.2\"", "\"1.7\""),
        Ok(()),
        "minor versions stay readable"
    );
}

#[test]
fn bad_network_and_mismatch() {
    assert_eq!(
        with_header_edit(":linear:8:3", ":softmax:8:3"),
        Err(Error::BadNetwork { layer: 1 })
    );
    assert_eq!(
        with_header_edit("\"1x4x4\"", "\"1x4\""),
        Err(Error::BadNetwork { layer: 0 })
    );
    assert_eq!(
        with_header_edit(":linear:8:3", ":linear:9:3"),
        Err(Error::NetworkMismatch { layer: 1 })
    );
    assert_eq!(
        with_header_edit("\"1x4x4\"", "\"1x5x4\""),
        Err(Error::NetworkMismatch { layer: 0 })
    );
}

#[test]
fn checksum_mismatch_on_any_flipped_data_bit() {
    let bytes = model_bytes(Encoding::Csr);
    let (header, _) = split(&bytes);
    let data_start = 8 + header.len();
    for byte in data_start..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[byte] ^= 0x10;
        assert!(
            matches!(parse(&corrupt), Err(Error::ChecksumMismatch { .. })),
            "flip at {byte} not caught"
        );
    }
}

#[test]
fn unknown_encoding() {
    assert_eq!(
        with_header_edit(
            "\"encoding.c1.weight\":\"csr\"",
            "\"encoding.c1.weight\":\"rle\""
        ),
        Err(Error::UnknownEncoding {
            layer: 0,
            part: Part::Weight
        })
    );
}

#[test]
fn missing_tensor_and_unexpected_tensor() {
    assert_eq!(
        with_header_edit("\"c1.bias\"", "\"c2.bias\""),
        Err(Error::MissingTensor {
            layer: 0,
            part: Part::Bias
        })
    );
    // Declaring the conv dense leaves its CSR components unused and its dense tensor missing.
    assert_eq!(
        with_header_edit(
            "\"encoding.c1.weight\":\"csr\"",
            "\"encoding.c1.weight\":\"dense\""
        ),
        Err(Error::MissingTensor {
            layer: 0,
            part: Part::Weight
        })
    );
    assert_eq!(
        with_header_edit("\"f1.weight.values\"", "\"f1.weight.valuez\""),
        Err(Error::MissingTensor {
            layer: 1,
            part: Part::Values
        })
    );
    let (header, data) = split(&model_bytes(Encoding::Csr));
    let extra = header.replacen(
        "\"c1.bias\":",
        &format!("\"zz.extra\":{{\"data_offsets\":[{0},{0}],\"dtype\":\"U8\",\"shape\":[0]}},\"c1.bias\":", data.len()),
        1,
    );
    assert_eq!(
        Model::parse(&assemble(&extra, &data, true)).map(|_| ()),
        Err(Error::UnexpectedTensor { tensor: 0 })
    );
}

#[test]
fn wrong_dtype_and_wrong_shape() {
    // Retype the U8 row pointers of c1 as I8 (same size, wrong role).
    let err = with_header_edit(
        "\"c1.weight.row_ptr\":{\"data_offsets\":[144,147],\"dtype\":\"U8\"",
        "\"c1.weight.row_ptr\":{\"data_offsets\":[144,147],\"dtype\":\"I8\"",
    );
    assert_eq!(
        err,
        Err(Error::WrongDtype {
            layer: 0,
            part: Part::RowPtr
        })
    );
    let (header, data) = split(&model_bytes(Encoding::Dense));
    let reshaped = header.replacen("\"shape\":[2,1,3,3]", "\"shape\":[2,9]", 1);
    assert_eq!(
        Model::parse(&assemble(&reshaped, &data, true)).map(|_| ()),
        Err(Error::WrongShape {
            layer: 0,
            part: Part::Weight
        })
    );
}

/// Byte offset of a tensor's data within the data section, from the CSR fixture's header.
const C1_ROW_PTR: usize = 144;
const C1_COL_IDX: usize = 132;

#[test]
fn bad_row_pointers() {
    let err = with_data_edit(Encoding::Csr, |d| d[C1_ROW_PTR] = 1);
    assert_eq!(err, Err(Error::BadRowPointers { layer: 0, row: 0 }));
    let err = with_data_edit(Encoding::Csr, |d| d[C1_ROW_PTR + 1] = 13);
    assert_eq!(err, Err(Error::BadRowPointers { layer: 0, row: 0 }));
}

#[test]
fn index_out_of_range_and_not_increasing() {
    let err = with_data_edit(Encoding::Csr, |d| d[C1_COL_IDX] = 9);
    assert_eq!(err, Err(Error::IndexOutOfRange { layer: 0, row: 0 }));
    let err = with_data_edit(Encoding::Csr, |d| d[C1_COL_IDX + 1] = d[C1_COL_IDX]);
    assert_eq!(err, Err(Error::IndicesNotIncreasing { layer: 0, row: 0 }));
}

#[test]
fn non_finite_values() {
    let err = with_data_edit(Encoding::Csr, |d| {
        d[8..12].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    assert_eq!(
        err,
        Err(Error::NonFiniteValue {
            layer: 0,
            part: Part::Values,
            index: 0
        })
    );
    let err = with_data_edit(Encoding::Dense, |d| {
        d[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes())
    });
    assert!(matches!(err, Err(Error::NonFiniteValue { .. })), "{err:?}");
}

#[test]
fn errors_display_what_is_wrong() {
    assert_eq!(
        Error::ChecksumMismatch {
            expected: 1,
            computed: 2
        }
        .to_string(),
        "data CRC-32 is 00000002, metadata says 00000001"
    );
    assert_eq!(
        Error::NoModel.to_string(),
        "no model: the region is erased (all 0xFF or 0x00)"
    );
}

#[test]
fn hcw_layers_parse_and_every_new_file_is_version_1_2() {
    let mut layers = common::layers();
    layers[1].kind = LayerKind::Linear {
        relu: true,
        order: Flatten::Hcw,
    };
    let bytes = write(
        &model_format::NetworkDef::new(common::input(), layers.to_vec()).unwrap(),
        &common::tensors(),
        Encoding::Csr,
        &common::provenance(),
    )
    .unwrap();
    let aligned = AlignedBytes::from(bytes.as_slice());
    let model = Model::parse(&aligned).unwrap();
    assert_eq!(model.network.layers[1].kind, layers[1].kind);
    assert_eq!(model.metadata("format_version"), Some("1.2"));
    let plain = model_bytes(Encoding::Csr);
    let aligned = AlignedBytes::from(plain.as_slice());
    let model = Model::parse(&aligned).unwrap();
    assert_eq!(model.metadata("format_version"), Some("1.2"));
    assert_eq!(
        with_header_edit(":linear:8:3", ":linear_relu_hcw:8:3"),
        Ok(())
    );
    assert_eq!(
        with_header_edit(":linear:8:3", ":linear_hwc:8:3"),
        Err(Error::BadNetwork { layer: 1 })
    );
}
