//! Image classification data: 28x28 grayscale images with labels 0..=9, loaded from IDX files.

pub mod datasets;
pub mod idx;

use crate::data::idx::{locate, read_idx, IdxError};
use candle_core::{Device, Tensor};
use std::path::Path;

pub const ROWS: usize = 28;
pub const COLS: usize = 28;
pub const PIXELS: usize = ROWS * COLS;
pub const CLASSES: usize = 10;

/// Images (row-major bytes, one image after another) and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

/// Which half of a standard IDX pair of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn file_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * PIXELS..(index + 1) * PIXELS]
    }

    /// Loads `train-*` or `t10k-*` IDX files (raw or `.gz`) from `dir`, checking that images are
    /// 28x28, that counts agree and that labels are classes 0..=9.
    pub fn load_split(dir: &Path, split: Split) -> Result<Self, IdxError> {
        let prefix = split.file_prefix();
        let images_path = locate(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = locate(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_idx(&images_path, 3)?;
        let labels = read_idx(&labels_path, 1)?;
        let (rows, cols) = (images.dims[1], images.dims[2]);
        if rows as usize != ROWS || cols as usize != COLS {
            return Err(IdxError::WrongImageSize {
                path: images_path,
                rows,
                cols,
            });
        }
        let (n_images, n_labels) = (images.dims[0] as usize, labels.dims[0] as usize);
        if n_images != n_labels {
            return Err(IdxError::CountMismatch {
                images: images_path,
                n_images,
                labels: labels_path,
                n_labels,
            });
        }
        if let Some((index, &label)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= CLASSES)
        {
            return Err(IdxError::BadLabel {
                path: labels_path,
                index,
                label,
            });
        }
        Ok(Dataset {
            images: images.data,
            labels: labels.data,
        })
    }

    /// The first `n` samples (all of them when `n` is larger).
    pub fn truncated(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Images at `indices` as an `(n, 1, 28, 28)` f32 tensor scaled to [0, 1], and their labels
    /// as a u32 tensor.
    pub fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut pixels = Vec::with_capacity(indices.len() * PIXELS);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend(self.image(i).iter().map(|&p| pixel_to_f32(p)));
            labels.push(u32::from(self.labels[i]));
        }
        let x = Tensor::from_vec(pixels, (indices.len(), 1, ROWS, COLS), device)?;
        let y = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((x, y))
    }
}

/// The input scaling shared by training, export and the firmware: byte / 255.
pub fn pixel_to_f32(p: u8) -> f32 {
    f32::from(p) / 255.0
}
