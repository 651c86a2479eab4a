//! Image classification data: grayscale images (28x28 for the built-in datasets, any size from
//! IDX files) with byte labels, loaded from IDX files.

pub mod datasets;
pub mod idx;

use crate::data::idx::{locate, read_idx, IdxError};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Images (row-major bytes, one image after another) and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    pub labels: Vec<u8>,
    rows: usize,
    cols: usize,
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
    /// `labels.len()` images of `rows x cols` bytes each; `None` if `images` has another length
    /// or the images are empty.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize) -> Option<Self> {
        let pixels = rows.checked_mul(cols).filter(|&p| p > 0)?;
        (images.len() == labels.len().checked_mul(pixels)?).then_some(Dataset {
            images,
            labels,
            rows,
            cols,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image height and width.
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Checks that a network reading `input` reads these images.
    pub fn check_input(&self, input: model_format::Shape3) -> anyhow::Result<()> {
        let (rows, cols) = self.image_size();
        if (input.channels, input.height, input.width) != (1, rows, cols) {
            anyhow::bail!(
                "the network reads {}x{}x{} inputs, the data set has 1x{rows}x{cols} images",
                input.channels,
                input.height,
                input.width
            );
        }
        Ok(())
    }

    /// Classes the labels name: the largest label + 1.
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&l| usize::from(l) + 1)
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[index * p..(index + 1) * p]
    }

    /// Loads `train-*` or `t10k-*` IDX files (raw or `.gz`) from `dir`, checking that the images
    /// are not empty and that the counts agree.
    pub fn load_split(dir: &Path, split: Split) -> Result<Self, IdxError> {
        let prefix = split.file_prefix();
        let images_path = locate(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = locate(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_idx(&images_path, 3)?;
        let labels = read_idx(&labels_path, 1)?;
        let (rows, cols) = (images.dims[1], images.dims[2]);
        if rows == 0 || cols == 0 {
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
        Ok(Dataset {
            images: images.data,
            labels: labels.data,
            rows: rows as usize,
            cols: cols as usize,
        })
    }

    /// The first `n` samples (all of them when `n` is larger).
    pub fn truncated(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.pixels()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..*self
        }
    }

    /// Images at `indices` as an `(n, 1, rows, cols)` f32 tensor scaled to [0, 1], and their
    /// labels as a u32 tensor.
    pub fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut pixels = Vec::with_capacity(indices.len() * self.pixels());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend(self.image(i).iter().map(|&p| pixel_to_f32(p)));
            labels.push(u32::from(self.labels[i]));
        }
        let shape = (indices.len(), 1, self.rows, self.cols);
        let x = Tensor::from_vec(pixels, shape, device)?;
        let y = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((x, y))
    }
}

/// The input scaling shared by training, export and the firmware: byte / 255.
pub fn pixel_to_f32(p: u8) -> f32 {
    f32::from(p) / 255.0
}
