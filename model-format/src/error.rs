//! The reader's errors: small, `Copy`, carrying numbers rather than strings so they fit a
//! microcontroller, and printable with `defmt` there and `Display` on the host.

use core::fmt;

/// Which component of a layer's tensors an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Part {
    Weight,
    Bias,
    Values,
    RowPtr,
    ColIdx,
    /// Int8 models (format 1.3): CSR column deltas, requantization.
    ColDelta,
    Multiplier,
    Shift,
}

/// Everything that can be wrong with a model file. Tensor numbers count entries in the header
/// in file order from 0; layer numbers count the network's layers from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The region holds only 0xFF or 0x00 where a header should start: no model was flashed.
    NoModel,
    /// Fewer than the 8 bytes of the header-length prefix.
    TooShort { len: usize },
    /// The header-length prefix is larger than the reader accepts.
    HeaderTooLarge { header_len: u64 },
    /// The header runs past the end of the file.
    HeaderOutOfBounds { header_len: u64, file_len: usize },
    /// The header is not UTF-8.
    HeaderNotUtf8,
    /// The header is not the JSON this format allows; `offset` is a byte offset into it.
    HeaderSyntax { offset: usize },
    /// More tensors or metadata entries than the reader has room for.
    TooManyEntries { max: usize },
    /// Two tensors share a name.
    DuplicateTensor { tensor: usize },
    /// A dtype this format does not use.
    UnsupportedDtype { tensor: usize },
    /// Rank above 4, or element count overflows.
    BadShape { tensor: usize },
    /// Byte length of `data_offsets` differs from shape × dtype size.
    SizeMismatch {
        tensor: usize,
        expected: usize,
        found: usize,
    },
    /// Tensors' byte ranges overlap or leave a gap at `offset` in the data section.
    DataNotContiguous { offset: usize },
    /// The data section's length differs from the end of the last tensor.
    LengthMismatch { expected: usize, found: usize },
    /// A tensor does not start at a multiple of its element size in memory.
    Misaligned { tensor: usize },
    /// A required `__metadata__` key is missing.
    MissingMetadata { key: MetadataKey },
    /// `format` is not `l1sparse`.
    WrongFormat,
    /// `format_version`'s major number is not one this reader understands.
    UnsupportedVersion { major: u32 },
    /// The network description is malformed at layer `layer`.
    BadNetwork { layer: usize },
    /// The network's layer sizes do not chain (`layer`'s input differs from what comes in).
    NetworkMismatch { layer: usize },
    /// The data section's CRC-32 differs from the one in the metadata.
    ChecksumMismatch { expected: u32, computed: u32 },
    /// The header's CRC-32 (format 1.2) differs from the one in the metadata.
    HeaderChecksumMismatch { expected: u32, computed: u32 },
    /// An encoding name this reader does not know.
    UnknownEncoding { layer: usize, part: Part },
    /// A tensor the network needs is absent.
    MissingTensor { layer: usize, part: Part },
    /// A tensor has the wrong dtype for its role.
    WrongDtype { layer: usize, part: Part },
    /// A tensor has the wrong shape for its layer.
    WrongShape { layer: usize, part: Part },
    /// A tensor in the file that the network does not use.
    UnexpectedTensor { tensor: usize },
    /// Row pointers do not start at 0, decrease, or do not end at the number of values.
    BadRowPointers { layer: usize, row: usize },
    /// A column index is at least the number of columns.
    IndexOutOfRange { layer: usize, row: usize },
    /// Column indices within a row are not strictly increasing.
    IndicesNotIncreasing { layer: usize, row: usize },
    /// A NaN or infinite value.
    NonFiniteValue {
        layer: usize,
        part: Part,
        index: usize,
    },
    /// An int8 model's value outside its range: a weight of −128, a scale ≤ 0, a negative
    /// multiplier, a shift outside 1..=62 (SPEC §4.1).
    ValueOutOfRange {
        layer: usize,
        part: Part,
        index: usize,
    },
    /// An int8 row whose accumulator could leave the `i32` range: |bias| + 255·Σ|w| > 2^31 − 1.
    AccumulatorRange { layer: usize, row: usize },
    /// An int8 model whose hidden layer has no ReLU (its unsigned activations need one).
    Int8NeedsRelu { layer: usize },
    /// `precision` is neither `f32` nor `int8`.
    UnknownPrecision,
    /// A model of a precision the reader was asked not to accept ([`crate::Model::parse_accepting`]:
    /// a firmware image built for the other precision).
    PrecisionNotAccepted { precision: crate::Precision },
}

/// Metadata keys the reader requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MetadataKey {
    Metadata,
    Format,
    FormatVersion,
    Input,
    Layers,
    DataCrc32,
    HeaderCrc32,
    Encoding,
    Precision,
}

impl MetadataKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataKey::Metadata => "__metadata__",
            MetadataKey::Format => "format",
            MetadataKey::FormatVersion => "format_version",
            MetadataKey::Input => "input",
            MetadataKey::Layers => "layers",
            MetadataKey::DataCrc32 => "data_crc32",
            MetadataKey::HeaderCrc32 => "header_crc32",
            MetadataKey::Encoding => "encoding.*",
            MetadataKey::Precision => "precision",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match *self {
            NoModel => write!(f, "no model: the region is erased (all 0xFF or 0x00)"),
            TooShort { len } => write!(
                f,
                "file is {len} bytes, shorter than the 8-byte header length"
            ),
            HeaderTooLarge { header_len } => {
                write!(f, "header length {header_len} exceeds the limit")
            }
            HeaderOutOfBounds {
                header_len,
                file_len,
            } => {
                write!(
                    f,
                    "header of {header_len} bytes runs past the end of a {file_len}-byte file"
                )
            }
            HeaderNotUtf8 => write!(f, "header is not UTF-8"),
            HeaderSyntax { offset } => write!(f, "header JSON invalid at byte {offset}"),
            TooManyEntries { max } => write!(f, "more than {max} header entries"),
            DuplicateTensor { tensor } => write!(f, "tensor #{tensor} repeats a name"),
            UnsupportedDtype { tensor } => write!(f, "tensor #{tensor} has an unsupported dtype"),
            BadShape { tensor } => write!(f, "tensor #{tensor} has an invalid shape"),
            SizeMismatch {
                tensor,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor #{tensor} spans {found} bytes, its shape needs {expected}"
                )
            }
            DataNotContiguous { offset } => write!(
                f,
                "tensor data overlaps or leaves a gap at data offset {offset}"
            ),
            LengthMismatch { expected, found } => {
                write!(
                    f,
                    "data section is {found} bytes, tensors describe {expected}"
                )
            }
            Misaligned { tensor } => {
                write!(f, "tensor #{tensor} is not aligned to its element size")
            }
            MissingMetadata { key } => write!(f, "metadata key {} is missing", key.as_str()),
            WrongFormat => write!(f, "metadata format is not l1sparse"),
            UnsupportedVersion { major } => write!(f, "format version {major} is not supported"),
            BadNetwork { layer } => write!(f, "network description malformed at layer {layer}"),
            NetworkMismatch { layer } => write!(
                f,
                "layer {layer}'s input size does not match the previous output"
            ),
            ChecksumMismatch { expected, computed } => {
                write!(
                    f,
                    "data CRC-32 is {computed:08x}, metadata says {expected:08x}"
                )
            }
            HeaderChecksumMismatch { expected, computed } => {
                write!(
                    f,
                    "header CRC-32 is {computed:08x}, metadata says {expected:08x}"
                )
            }
            UnknownEncoding { layer, part } => {
                write!(f, "layer {layer} {part:?}: unknown encoding")
            }
            MissingTensor { layer, part } => write!(f, "layer {layer} {part:?}: tensor missing"),
            WrongDtype { layer, part } => write!(f, "layer {layer} {part:?}: wrong dtype"),
            WrongShape { layer, part } => write!(f, "layer {layer} {part:?}: wrong shape"),
            UnexpectedTensor { tensor } => write!(f, "tensor #{tensor} is not used by the network"),
            BadRowPointers { layer, row } => {
                write!(f, "layer {layer}: bad row pointer at row {row}")
            }
            IndexOutOfRange { layer, row } => {
                write!(f, "layer {layer}: column index out of range in row {row}")
            }
            IndicesNotIncreasing { layer, row } => {
                write!(
                    f,
                    "layer {layer}: column indices not increasing in row {row}"
                )
            }
            NonFiniteValue { layer, part, index } => {
                write!(f, "layer {layer} {part:?}: value {index} is not finite")
            }
            ValueOutOfRange { layer, part, index } => {
                write!(f, "layer {layer} {part:?}: value {index} is out of range")
            }
            AccumulatorRange { layer, row } => write!(
                f,
                "layer {layer}: row {row}'s accumulator could overflow 32 bits"
            ),
            Int8NeedsRelu { layer } => write!(
                f,
                "layer {layer}: an int8 model needs ReLU after every layer but the last"
            ),
            UnknownPrecision => write!(f, "metadata precision is neither f32 nor int8"),
            PrecisionNotAccepted { precision } => write!(
                f,
                "{} model, and this reader does not accept {} models",
                precision.as_str(),
                precision.as_str()
            ),
        }
    }
}

impl core::error::Error for Error {}
