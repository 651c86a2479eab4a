//! IDX parsing: valid files load, and every malformed file is rejected with a named error.

use std::io::Write;
use std::path::Path;
use trainer::data::idx::{encode_idx, parse_idx, read_idx, IdxError};
use trainer::data::{Dataset, Split};

fn write_pair(dir: &Path, prefix: &str, n_images: u32, n_labels: u32, rows: u32, labels: &[u8]) {
    let pixels = vec![7u8; (n_images * rows * 28) as usize];
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte")),
        encode_idx(&[n_images, rows, 28], &pixels),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte")),
        encode_idx(&[n_labels], labels),
    )
    .unwrap();
}

#[test]
fn round_trip_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<u8> = (0..5).collect();
    write_pair(dir.path(), "train", 5, 5, 28, &labels);
    // Gzip the labels file to show both encodings are accepted side by side.
    let raw = std::fs::read(dir.path().join("train-labels-idx1-ubyte")).unwrap();
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte")).unwrap();
    let gz = std::fs::File::create(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap();

    let data = Dataset::load_split(dir.path(), Split::Train).unwrap();
    assert_eq!(data.len(), 5);
    assert_eq!(data.labels, labels);
    assert_eq!(data.image(4), &[7u8; 784][..]);
}

#[test]
fn rejects_short_file() {
    let err = parse_idx(Path::new("f"), &[0, 0, 8], 1).unwrap_err();
    assert!(matches!(err, IdxError::TooShort { len: 3, .. }), "{err}");
    let err = parse_idx(Path::new("f"), &[0, 0, 8, 3, 0, 0], 3).unwrap_err();
    assert!(matches!(err, IdxError::TooShort { .. }), "{err}");
}

#[test]
fn rejects_bad_magic() {
    let mut bytes = encode_idx(&[2], &[1, 2]);
    bytes[2] = 0x0d; // float data
    let err = parse_idx(Path::new("labels"), &bytes, 1).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { .. }));
    assert!(err.to_string().starts_with("labels: bad magic"), "{err}");
}

#[test]
fn rejects_wrong_rank() {
    let bytes = encode_idx(&[2], &[1, 2]);
    let err = parse_idx(Path::new("f"), &bytes, 3).unwrap_err();
    assert!(matches!(
        err,
        IdxError::WrongRank {
            expected: 3,
            found: 1,
            ..
        }
    ));
}

#[test]
fn rejects_truncated_and_trailing_data() {
    let mut bytes = encode_idx(&[4], &[1, 2, 3, 4]);
    bytes.pop();
    let err = parse_idx(Path::new("f"), &bytes, 1).unwrap_err();
    assert!(matches!(
        err,
        IdxError::Truncated {
            expected: 4,
            found: 3,
            ..
        }
    ));
    bytes.extend_from_slice(&[4, 5]);
    let err = parse_idx(Path::new("f"), &bytes, 1).unwrap_err();
    assert!(matches!(err, IdxError::TrailingBytes { extra: 1, .. }));
}

#[test]
fn rejects_absurd_dimensions_without_allocating() {
    let bytes = encode_idx(&[u32::MAX, u32::MAX, 28], &[]);
    let err = parse_idx(Path::new("f"), &bytes, 3).unwrap_err();
    assert!(matches!(err, IdxError::TooLarge { .. }));
}

#[test]
fn images_of_any_size_load_and_empty_ones_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "t10k", 2, 2, 27, &[0, 1]);
    let data = Dataset::load_split(dir.path(), Split::Test).unwrap();
    assert_eq!((data.image_size(), data.len()), ((27, 28), 2));
    write_pair(dir.path(), "train", 2, 2, 0, &[0, 1]);
    let err = Dataset::load_split(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::WrongImageSize {
                rows: 0,
                cols: 28,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_network_refuses_data_of_another_size_or_with_more_classes() {
    use candle_core::Device;
    use trainer::model::Cnn;
    use trainer::pipeline::check_fits;
    let model = Cnn::new_seeded(0, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "t10k", 2, 2, 27, &[0, 1]);
    let small = Dataset::load_split(dir.path(), Split::Test).unwrap();
    let err = check_fits(&model, &small).unwrap_err().to_string();
    assert!(err.contains("1x28x28") && err.contains("1x27x28"), "{err}");
    write_pair(dir.path(), "train", 2, 2, 28, &[3, 10]);
    let eleven = Dataset::load_split(dir.path(), Split::Train).unwrap();
    let err = check_fits(&model, &eleven).unwrap_err().to_string();
    assert!(err.contains("label 10 of sample 1"), "{err}");
    write_pair(dir.path(), "train", 2, 2, 28, &[3, 9]);
    let ok = Dataset::load_split(dir.path(), Split::Train).unwrap();
    check_fits(&model, &ok).unwrap();
}

#[test]
fn rejects_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "train", 3, 2, 28, &[0, 1]);
    let err = Dataset::load_split(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::CountMismatch {
                n_images: 3,
                n_labels: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_missing_file_and_corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load_split(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, IdxError::Missing { .. }), "{err}");
    let path = dir.path().join("x.gz");
    std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let err = read_idx(&path, 1).unwrap_err();
    assert!(matches!(err, IdxError::Io { .. }), "{err}");
    assert!(err.to_string().contains("x.gz"), "{err}");
}

proptest::proptest! {
    /// Arbitrary bytes never panic the parser, and whatever it accepts re-encodes to the input.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), rank in 1u8..4) {
        if let Ok(arr) = parse_idx(Path::new("f"), &bytes, rank) {
            proptest::prop_assert_eq!(encode_idx(&arr.dims, &arr.data), bytes);
        }
    }
}
