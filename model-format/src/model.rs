//! The validated model: the network, and per layer typed views of its weights and biases that
//! kernels can use without further checks.

use crate::container::{self, Container, Dtype, RawTensor};
use crate::error::{Error, MetadataKey, Part};
use crate::int8::LayerParamsI8;
use crate::network::{Layer, Network, MAX_LAYERS};

pub const FORMAT_NAME: &str = "l1sparse";
pub const FORMAT_MAJOR: u32 = 1;
/// The first minor version whose files carry `header_crc32` (and must).
pub const HEADER_CRC_SINCE_MINOR: u32 = 2;

/// CRC-32 (IEEE 802.3, as zlib's `crc32`) of the data section.
pub fn data_crc32(data: &[u8]) -> u32 {
    crate::crc32::checksum(data)
}

/// CRC-32 of a file's length prefix and header (`file[..header_end]`) with the 8 hex digits of
/// `header_crc32`'s own value, at `value_at`, read as `00000000` (SPEC §2).
pub fn header_crc32(file: &[u8], header_end: usize, value_at: usize) -> Option<u32> {
    let before = file.get(..value_at)?;
    let after = file.get(value_at.checked_add(8)?..header_end)?;
    let mut digest = crate::crc32::Crc32::new();
    digest.update(before);
    digest.update(b"00000000");
    digest.update(after);
    Some(digest.finish())
}

/// Integer indices stored at the narrowest width that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indices<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl Indices<'_> {
    pub fn len(&self) -> usize {
        match self {
            Indices::U8(s) => s.len(),
            Indices::U16(s) => s.len(),
            Indices::U32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<usize> {
        match self {
            Indices::U8(s) => s.get(i).map(|&v| usize::from(v)),
            Indices::U16(s) => s.get(i).map(|&v| usize::from(v)),
            Indices::U32(s) => s.get(i).map(|&v| v as usize),
        }
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            Indices::U8(_) => Dtype::U8,
            Indices::U16(_) => Dtype::U16,
            Indices::U32(_) => Dtype::U32,
        }
    }
}

/// Compressed sparse rows: row `r`'s non-zeros are `values[row_ptr[r]..row_ptr[r+1]]` at columns
/// `col_idx[..]` (strictly increasing within a row). Validated: `row_ptr` has `rows + 1`
/// non-decreasing entries from 0 to `values.len()`, every column is `< cols`, values are finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Csr<'a> {
    pub rows: usize,
    pub cols: usize,
    pub row_ptr: Indices<'a>,
    pub col_idx: Indices<'a>,
    pub values: &'a [f32],
}

impl Csr<'_> {
    pub fn nnz(&self) -> usize {
        self.values.len()
    }
}

/// A layer's weight matrix, `rows x cols` (see [`Layer::cols`] for the column order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weights<'a> {
    /// Row-major, `rows · cols` values.
    Dense(&'a [f32]),
    Csr(Csr<'a>),
}

impl Weights<'_> {
    pub fn nnz(&self) -> usize {
        match self {
            Weights::Dense(v) => v.iter().filter(|&&x| x != 0.0).count(),
            Weights::Csr(c) => c.values.iter().filter(|&&x| x != 0.0).count(),
        }
    }

    /// The weight at (row, col); zero where a sparse matrix stores nothing.
    pub fn get(&self, row: usize, col: usize, cols: usize) -> f32 {
        match self {
            Weights::Dense(v) => v.get(row * cols + col).copied().unwrap_or(0.0),
            Weights::Csr(c) => {
                let (Some(start), Some(end)) = (c.row_ptr.get(row), c.row_ptr.get(row + 1)) else {
                    return 0.0;
                };
                (start..end)
                    .find(|&k| c.col_idx.get(k) == Some(col))
                    .and_then(|k| c.values.get(k).copied())
                    .unwrap_or(0.0)
            }
        }
    }
}

/// A layer's validated parameters (its shape is the network's layer of the same index: one
/// copy of it in a [`Model`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerParams<'a> {
    pub weights: Weights<'a>,
    pub bias: &'a [f32],
}

/// What a model's numbers are (metadata `precision`, format 1.3; absent means `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Precision {
    F32,
    /// Int8 weights, unsigned 8-bit activations, integer-only inference (SPEC §4.1).
    Int8,
}

impl Precision {
    /// From the `precision` metadata value (absent: `f32`).
    fn parse(value: Option<&str>) -> Result<Self, Error> {
        match value {
            None | Some("f32") => Ok(Precision::F32),
            Some("int8") => Ok(Precision::Int8),
            Some(_) => Err(Error::UnknownPrecision),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// A model file, checked once; everything reachable from it can be trusted by kernels.
///
/// Kept small (a microcontroller holds it on its stack while it runs): one precision's layers,
/// and no copy of the metadata, which [`Model::metadata`] reads from the file when asked.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    pub network: Network<'a>,
    /// The layers, of the file's precision ([`Model::precision`]).
    params: Params<'a>,
    /// The whole file, for [`Model::metadata`].
    file: &'a [u8],
    /// The data section.
    pub data: &'a [u8],
}

/// The layers of one precision.
#[derive(Debug, Clone)]
enum Params<'a> {
    F32(heapless::Vec<LayerParams<'a>, MAX_LAYERS>),
    Int8(heapless::Vec<LayerParamsI8<'a>, MAX_LAYERS>),
}

impl<'a> Model<'a> {
    /// Parses and validates a model file: container, metadata, network, checksum, then every
    /// tensor's dtype, shape, indices and values. The bytes must be 4-byte aligned in memory.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_accepting::<true, true>(bytes)
    }

    /// [`Model::parse`], accepting only the precisions whose flag is set: any other is
    /// [`Error::PrecisionNotAccepted`], checked before its tensors. The flags are constants, so
    /// a firmware image that runs one precision carries no code that validates the other.
    #[inline(never)]
    pub fn parse_accepting<const F32: bool, const INT8: bool>(
        bytes: &'a [u8],
    ) -> Result<Self, Error> {
        let mut container = Container::empty();
        container::parse_into(bytes, &mut container)?;
        let meta = |key: MetadataKey| {
            container
                .metadata(key.as_str())
                .ok_or(Error::MissingMetadata { key })
        };
        if container.metadata.is_empty() {
            return Err(Error::MissingMetadata {
                key: MetadataKey::Metadata,
            });
        }
        if meta(MetadataKey::Format)? != FORMAT_NAME {
            return Err(Error::WrongFormat);
        }
        check_version(bytes, &container, meta(MetadataKey::FormatVersion)?)?;
        let network = Network::parse(meta(MetadataKey::Input)?, meta(MetadataKey::Layers)?)?;
        let expected_crc = parse_crc(meta(MetadataKey::DataCrc32)?, MetadataKey::DataCrc32)?;
        let computed = data_crc32(container.data);
        if computed != expected_crc {
            return Err(Error::ChecksumMismatch {
                expected: expected_crc,
                computed,
            });
        }

        let precision = Precision::parse(container.metadata(MetadataKey::Precision.as_str()))?;
        let mut used: u64 = 0;
        let mut params = match precision {
            Precision::F32 => Params::F32(heapless::Vec::new()),
            Precision::Int8 => Params::Int8(heapless::Vec::new()),
        };
        let last = network.layers.len().saturating_sub(1);
        for (index, layer) in network.layers.iter().enumerate() {
            let builder = LayerBuilder {
                container: &container,
                index,
                layer: *layer,
                used: &mut used,
            };
            // Cannot overflow: the network has at most MAX_LAYERS layers. A precision not
            // accepted is refused here, at the first layer, before any of its tensors is read.
            match &mut params {
                Params::F32(layers) if F32 => {
                    let _ = layers.push(builder.build()?);
                }
                Params::Int8(layers) if INT8 => {
                    let _ = layers.push(builder.build_int8(index == last)?);
                }
                _ => return Err(Error::PrecisionNotAccepted { precision }),
            }
        }
        if let Some(tensor) = (0..container.tensors.len()).find(|&t| used & (1 << t) == 0) {
            return Err(Error::UnexpectedTensor { tensor });
        }
        Ok(Model {
            network,
            params,
            file: bytes,
            data: container.data,
        })
    }

    /// The precision of the file's weights (and of the layers it holds).
    pub fn precision(&self) -> Precision {
        match self.params {
            Params::F32(_) => Precision::F32,
            Params::Int8(_) => Precision::Int8,
        }
    }

    /// The layers of an `f32` model (empty for an int8 one).
    pub fn layers(&self) -> &[LayerParams<'a>] {
        match &self.params {
            Params::F32(layers) => layers,
            Params::Int8(_) => &[],
        }
    }

    /// The layers of an int8 model (empty for an `f32` one).
    pub fn int8(&self) -> &[LayerParamsI8<'a>] {
        match &self.params {
            Params::Int8(layers) => layers,
            Params::F32(_) => &[],
        }
    }

    /// The f32 layers, each with its shape (the network's layer).
    pub fn layers_with_shapes(
        &self,
    ) -> impl ExactSizeIterator<Item = (&Layer<'a>, &LayerParams<'a>)> {
        self.network.layers.iter().zip(self.layers())
    }

    /// The int8 layers, each with its shape (the network's layer).
    pub fn int8_with_shapes(
        &self,
    ) -> impl ExactSizeIterator<Item = (&Layer<'a>, &LayerParamsI8<'a>)> {
        self.network.layers.iter().zip(self.int8())
    }

    /// A provenance or other metadata value, as stored (JSON escapes not decoded), read from
    /// the file's header (parsed again: for tools, not for a hot path).
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        container::parse(self.file).ok()?.metadata(key)
    }

    /// Every `__metadata__` entry in the header's order, as stored (read as [`Model::metadata`]).
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let entries = container::parse(self.file).map(|c| c.metadata);
        entries.into_iter().flatten()
    }
}

/// A CRC value: exactly 8 lowercase hex digits (an uppercase digit, one bit away from its
/// lowercase twin, would otherwise read as the same number).
/// The format version (`major.minor[.anything]`): the major must be ours; from minor
/// [`HEADER_CRC_SINCE_MINOR`] on the header carries a CRC, checked whenever present so a flipped
/// version cannot switch the check off.
fn check_version(bytes: &[u8], container: &Container<'_>, version: &str) -> Result<(), Error> {
    let mut numbers = crate::network::fields(version, b'.');
    let major: u32 = numbers
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(Error::UnsupportedVersion { major: 0 })?;
    if major != FORMAT_MAJOR {
        return Err(Error::UnsupportedVersion { major });
    }
    let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    match container.metadata(MetadataKey::HeaderCrc32.as_str()) {
        Some(value) => check_header(bytes, container.data.len(), value)?,
        None if minor >= HEADER_CRC_SINCE_MINOR => {
            return Err(Error::MissingMetadata {
                key: MetadataKey::HeaderCrc32,
            })
        }
        None => {}
    }
    Ok(())
}

fn parse_crc(s: &str, key: MetadataKey) -> Result<u32, Error> {
    let bad = Error::MissingMetadata { key };
    if s.len() != 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad);
    }
    u32::from_str_radix(s, 16).map_err(|_| bad)
}

/// Checks `header_crc32`, whose value `value` lies in the header of `bytes` (before the data
/// section of `data_len` bytes).
fn check_header(bytes: &[u8], data_len: usize, value: &str) -> Result<(), Error> {
    let expected = parse_crc(value, MetadataKey::HeaderCrc32)?;
    let header_end = bytes.len() - data_len;
    // The value is a slice of `bytes` (the container borrows it): its offset is the distance.
    let value_at = (value.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
    let computed = header_crc32(bytes, header_end, value_at).ok_or(Error::MissingMetadata {
        key: MetadataKey::HeaderCrc32,
    })?;
    if computed != expected {
        return Err(Error::HeaderChecksumMismatch { expected, computed });
    }
    Ok(())
}

pub(crate) struct LayerBuilder<'c, 'a> {
    pub(crate) container: &'c Container<'a>,
    pub(crate) index: usize,
    pub(crate) layer: Layer<'a>,
    pub(crate) used: &'c mut u64,
}

impl<'a> LayerBuilder<'_, 'a> {
    pub(crate) fn name<'n>(&self, buf: &'n mut heapless::String<64>, suffix: &str) -> &'n str {
        buf.clear();
        // Names are at most MAX_NAME_LEN + a short suffix: they fit.
        let _ = buf.push_str(self.layer.name);
        let _ = buf.push_str(suffix);
        buf.as_str()
    }

    /// Finds a tensor, marks it used, checks its dtype family and shape.
    pub(crate) fn tensor(
        &mut self,
        suffix: &str,
        part: Part,
        shape: &[usize],
    ) -> Result<(usize, RawTensor<'a>), Error> {
        let mut buf = heapless::String::new();
        let name = self.name(&mut buf, suffix);
        let (t, raw) =
            self.container
                .tensor(name)
                .map(|(t, r)| (t, *r))
                .ok_or(Error::MissingTensor {
                    layer: self.index,
                    part,
                })?;
        *self.used |= 1 << t;
        if raw.shape() != shape {
            return Err(Error::WrongShape {
                layer: self.index,
                part,
            });
        }
        Ok((t, raw))
    }

    pub(crate) fn f32s(
        &mut self,
        suffix: &str,
        part: Part,
        shape: &[usize],
    ) -> Result<&'a [f32], Error> {
        let (t, raw) = self.tensor(suffix, part, shape)?;
        if raw.dtype != Dtype::F32 {
            return Err(Error::WrongDtype {
                layer: self.index,
                part,
            });
        }
        let values: &'a [f32] =
            bytemuck::try_cast_slice(raw.data).map_err(|_| Error::Misaligned { tensor: t })?;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteValue {
                layer: self.index,
                part,
                index,
            });
        }
        Ok(values)
    }

    pub(crate) fn indices(
        &mut self,
        suffix: &str,
        part: Part,
        len: usize,
    ) -> Result<Indices<'a>, Error> {
        let (t, raw) = self.tensor(suffix, part, &[len])?;
        let misaligned = |_| Error::Misaligned { tensor: t };
        Ok(match raw.dtype {
            Dtype::U8 => Indices::U8(raw.data),
            Dtype::U16 => Indices::U16(bytemuck::try_cast_slice(raw.data).map_err(misaligned)?),
            Dtype::U32 => Indices::U32(bytemuck::try_cast_slice(raw.data).map_err(misaligned)?),
            _ => {
                return Err(Error::WrongDtype {
                    layer: self.index,
                    part,
                })
            }
        })
    }

    /// The value of `encoding.<layer>.weight`.
    pub(crate) fn encoding(&self) -> Result<&'a str, Error> {
        let mut buf = heapless::String::new();
        let mut key: heapless::String<72> = heapless::String::new();
        let _ = key.push_str("encoding.");
        let _ = key.push_str(self.name(&mut buf, ".weight"));
        self.container.metadata(&key).ok_or(Error::MissingMetadata {
            key: MetadataKey::Encoding,
        })
    }

    fn build(mut self) -> Result<LayerParams<'a>, Error> {
        let (rows, cols) = (self.layer.rows(), self.layer.cols());
        let bias = self.f32s(".bias", Part::Bias, &[rows])?;
        let weights = match self.encoding()? {
            "dense" => {
                let (shape, rank) = self.layer.weight_shape();
                Weights::Dense(self.f32s(".weight", Part::Weight, &shape[..rank])?)
            }
            "csr" => Weights::Csr(self.csr(rows, cols)?),
            _ => {
                return Err(Error::UnknownEncoding {
                    layer: self.index,
                    part: Part::Weight,
                })
            }
        };
        Ok(LayerParams { weights, bias })
    }

    fn csr(&mut self, rows: usize, cols: usize) -> Result<Csr<'a>, Error> {
        let layer = self.index;
        // The values' length defines nnz; the other components must agree with it.
        let mut buf = heapless::String::new();
        let values_name = self.name(&mut buf, ".weight.values");
        let nnz = self
            .container
            .tensor(values_name)
            .map(|(_, r)| r.shape().first().copied().unwrap_or(0))
            .ok_or(Error::MissingTensor {
                layer,
                part: Part::Values,
            })?;
        let values = self.f32s(".weight.values", Part::Values, &[nnz])?;
        let row_ptr = self.indices(".weight.row_ptr", Part::RowPtr, rows + 1)?;
        let col_idx = self.indices(".weight.col_idx", Part::ColIdx, nnz)?;
        if row_ptr.get(0) != Some(0) || row_ptr.get(rows) != Some(nnz) {
            return Err(Error::BadRowPointers { layer, row: 0 });
        }
        for row in 0..rows {
            let (start, end) = match (row_ptr.get(row), row_ptr.get(row + 1)) {
                (Some(s), Some(e)) if s <= e && e <= nnz => (s, e),
                _ => return Err(Error::BadRowPointers { layer, row }),
            };
            let mut previous: Option<usize> = None;
            for k in start..end {
                let col = col_idx
                    .get(k)
                    .ok_or(Error::IndexOutOfRange { layer, row })?;
                if col >= cols {
                    return Err(Error::IndexOutOfRange { layer, row });
                }
                if previous.is_some_and(|p| col <= p) {
                    return Err(Error::IndicesNotIncreasing { layer, row });
                }
                previous = Some(col);
            }
        }
        Ok(Csr {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        })
    }
}
