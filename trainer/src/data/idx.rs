//! Reading and writing IDX files (the MNIST container), raw or gzipped.
//!
//! Every rejection names the file and what is wrong with it, so a user with a damaged download
//! knows which file to replace.

use std::io::Read;
use std::path::{Path, PathBuf};

/// IDX magic for unsigned bytes: two zero bytes, then the data type 0x08.
const UBYTE: u8 = 0x08;
/// Refuse absurd headers before allocating (60k MNIST images are 47 MB).
const MAX_PAYLOAD_BYTES: u64 = 1 << 31;

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: file is {len} bytes, too short for an IDX header")]
    TooShort { path: PathBuf, len: usize },
    #[error("{path}: bad magic {found:02x?}: expected 00 00 08 NN (unsigned-byte IDX)")]
    BadMagic { path: PathBuf, found: [u8; 4] },
    #[error("{path}: expected {expected} dimensions, header says {found}")]
    WrongRank {
        path: PathBuf,
        expected: u8,
        found: u8,
    },
    #[error("{path}: header promises {expected} data bytes, file holds {found}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: {extra} bytes after the data the header describes")]
    TrailingBytes { path: PathBuf, extra: u64 },
    #[error("{path}: images are {rows}x{cols}: empty")]
    WrongImageSize { path: PathBuf, rows: u32, cols: u32 },
    #[error("{path}: header dimensions {dims:?} describe more than 2 GiB of data")]
    TooLarge { path: PathBuf, dims: Vec<u32> },
    #[error("{images}: {n_images} images, but {labels}: {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
    #[error("{dir}: no {name} (or {name}.gz) in this folder")]
    Missing { dir: PathBuf, name: String },
}

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<u32>,
    pub data: Vec<u8>,
}

/// Reads a file, transparently un-gzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes of unsigned-byte data with exactly `rank` dimensions.
pub fn parse_idx(path: &Path, bytes: &[u8], rank: u8) -> Result<IdxArray, IdxError> {
    let path_buf = || path.to_owned();
    let magic: [u8; 4] =
        bytes
            .get(..4)
            .and_then(|m| m.try_into().ok())
            .ok_or(IdxError::TooShort {
                path: path_buf(),
                len: bytes.len(),
            })?;
    if magic[0] != 0 || magic[1] != 0 || magic[2] != UBYTE {
        return Err(IdxError::BadMagic {
            path: path_buf(),
            found: magic,
        });
    }
    if magic[3] != rank {
        return Err(IdxError::WrongRank {
            path: path_buf(),
            expected: rank,
            found: magic[3],
        });
    }
    let header_len = 4 + 4 * usize::from(rank);
    let dims_bytes = bytes.get(4..header_len).ok_or(IdxError::TooShort {
        path: path_buf(),
        len: bytes.len(),
    })?;
    let dims: Vec<u32> = dims_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .filter(|&n| n <= MAX_PAYLOAD_BYTES)
        .ok_or_else(|| IdxError::TooLarge {
            path: path_buf(),
            dims: dims.clone(),
        })?;
    let found = (bytes.len() - header_len) as u64;
    if found < expected {
        return Err(IdxError::Truncated {
            path: path_buf(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(IdxError::TrailingBytes {
            path: path_buf(),
            extra: found - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Reads an IDX file (raw or gzipped) with the given rank.
pub fn read_idx(path: &Path, rank: u8) -> Result<IdxArray, IdxError> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(path, &bytes, rank)
}

/// Serialises unsigned-byte data as IDX (uncompressed).
pub fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, UBYTE, dims.len() as u8]);
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Finds `name` or `name.gz` in `dir`.
pub fn locate(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    [name.to_string(), format!("{name}.gz")]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| IdxError::Missing {
            dir: dir.to_owned(),
            name: name.to_string(),
        })
}
