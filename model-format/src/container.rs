//! The safetensors container: an 8-byte little-endian header length, a JSON header, and a data
//! section that the tensors' byte ranges cover exactly, without gaps or overlaps.

use crate::error::Error;
use crate::json::Scanner;

/// Largest header the reader accepts (ours are a few KiB).
pub const MAX_HEADER_LEN: u64 = 1 << 20;
/// Most tensors in one file (a layer needs at most four).
pub const MAX_TENSORS: usize = 32;
/// Most `__metadata__` entries.
pub const MAX_METADATA: usize = 32;
/// Highest tensor rank.
pub const MAX_RANK: usize = 4;

/// The element types this format uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dtype {
    F32,
    U32,
    U16,
    U8,
    I8,
    /// Int8 models' biases (format 1.3).
    I32,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::U32 | Dtype::I32 => 4,
            Dtype::U16 => 2,
            Dtype::U8 | Dtype::I8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::I32 => "I32",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Dtype::F32,
            Dtype::U32,
            Dtype::U16,
            Dtype::U8,
            Dtype::I8,
            Dtype::I32,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }
}

/// One tensor of the container, its bytes borrowed from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTensor<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    rank: usize,
    dims: [usize; MAX_RANK],
    pub data: &'a [u8],
}

impl<'a> RawTensor<'a> {
    pub fn shape(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    pub fn elements(&self) -> usize {
        self.data.len() / self.dtype.size()
    }
}

/// A parsed container: tensors in header order and the string metadata.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    pub tensors: heapless::Vec<RawTensor<'a>, MAX_TENSORS>,
    pub metadata: heapless::Vec<(&'a str, &'a str), MAX_METADATA>,
    /// The data section (after the header).
    pub data: &'a [u8],
}

impl<'a> Container<'a> {
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn tensor(&self, name: &str) -> Option<(usize, &RawTensor<'a>)> {
        self.tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
    }
}

/// A tensor entry and where its bytes lie, before they are cut from the data section.
struct Pending<'a> {
    tensor: RawTensor<'a>,
    begin: usize,
    end: usize,
}

/// Parses and checks the container: lengths, header syntax, dtypes, shapes against byte sizes,
/// and that the byte ranges tile the data section exactly.
pub fn parse(bytes: &[u8]) -> Result<Container<'_>, Error> {
    let mut container = Container::empty();
    parse_into(bytes, &mut container)?;
    Ok(container)
}

impl Container<'_> {
    /// No tensors, no metadata, no data: what [`parse_into`] fills.
    pub const fn empty() -> Self {
        Container {
            tensors: heapless::Vec::new(),
            metadata: heapless::Vec::new(),
            data: &[],
        }
    }
}

/// [`parse`] into `container` (emptied first), which the caller holds: on a microcontroller the
/// container (1.8 KB) is then not built here and copied out. Kept out of line so its working
/// memory is off the stack once it returns.
#[inline(never)]
pub fn parse_into<'a>(bytes: &'a [u8], container: &mut Container<'a>) -> Result<(), Error> {
    container.tensors.clear();
    container.metadata.clear();
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|p| p.try_into().ok())
        .ok_or(Error::TooShort { len: bytes.len() })?;
    if prefix.iter().all(|&b| b == 0xFF) || prefix.iter().all(|&b| b == 0) {
        return Err(Error::NoModel);
    }
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_LEN {
        return Err(Error::HeaderTooLarge { header_len });
    }
    let header_end = 8 + header_len as usize;
    let header = bytes.get(8..header_end).ok_or(Error::HeaderOutOfBounds {
        header_len,
        file_len: bytes.len(),
    })?;
    let header = core::str::from_utf8(header).map_err(|_| Error::HeaderNotUtf8)?;
    let data = bytes.get(header_end..).unwrap_or(&[]);

    // Entries are collected in place; their byte ranges wait beside them until the tiling
    // check.
    container.data = data;
    let mut ranges = [(0usize, 0usize); MAX_TENSORS];
    let (tensors, metadata) = (&mut container.tensors, &mut container.metadata);
    let mut scanner = Scanner::new(header);
    scanner.object(|s, key| {
        if key == "__metadata__" {
            if !metadata.is_empty() {
                return Err(Error::HeaderSyntax { offset: s.offset() });
            }
            s.object(|s, k| {
                let v = s.string()?;
                metadata
                    .push((k, v))
                    .map_err(|_| Error::TooManyEntries { max: MAX_METADATA })
            })
        } else {
            let tensor = tensors.len();
            if tensors.iter().any(|t| t.name == key) {
                return Err(Error::DuplicateTensor { tensor });
            }
            let entry = tensor_entry(s, key, tensor)?;
            let slot = ranges
                .get_mut(tensor)
                .ok_or(Error::TooManyEntries { max: MAX_TENSORS })?;
            *slot = (entry.begin, entry.end);
            tensors
                .push(entry.tensor)
                .map_err(|_| Error::TooManyEntries { max: MAX_TENSORS })
        }
    })?;
    scanner.end()?;

    // Each tensor's bytes (empty where out of bounds: the check below refuses those files), then
    // the ranges, taken in order of their start, must tile [0, data.len()).
    for (t, &(begin, end)) in tensors.iter_mut().zip(&ranges) {
        t.data = data.get(begin..end).unwrap_or(&[]);
    }
    let sorted = ranges.get_mut(..tensors.len()).unwrap_or_default();
    insertion_sort(sorted);
    let mut offset = 0;
    for &(begin, end) in &*sorted {
        if begin != offset {
            return Err(Error::DataNotContiguous { offset });
        }
        offset = end;
    }
    if offset != data.len() {
        return Err(Error::LengthMismatch {
            expected: offset,
            found: data.len(),
        });
    }
    Ok(())
}

fn tensor_entry<'a>(
    s: &mut Scanner<'a>,
    name: &'a str,
    tensor: usize,
) -> Result<Pending<'a>, Error> {
    let mut dtype = None;
    let mut shape = None;
    let mut offsets = None;
    s.object(|s, key| {
        match key {
            "dtype" if dtype.is_none() => {
                let d = s.string()?;
                dtype = Some(Dtype::parse(d).ok_or(Error::UnsupportedDtype { tensor })?);
            }
            "shape" if shape.is_none() => {
                let mut dims = [0u64; MAX_RANK];
                let rank = s
                    .uint_array(&mut dims)
                    .map_err(|_| Error::BadShape { tensor })?;
                shape = Some((rank, dims));
            }
            "data_offsets" if offsets.is_none() => {
                let mut pair = [0u64; 2];
                if s.uint_array(&mut pair)? != 2 {
                    return Err(Error::HeaderSyntax { offset: s.offset() });
                }
                offsets = Some(pair);
            }
            _ => return Err(Error::HeaderSyntax { offset: s.offset() }),
        }
        Ok(())
    })?;
    let syntax = Error::HeaderSyntax { offset: s.offset() };
    let (dtype, (rank, dims64), [begin, end]) = match (dtype, shape, offsets) {
        (Some(d), Some(sh), Some(o)) => (d, sh, o),
        _ => return Err(syntax),
    };
    let mut dims = [0usize; MAX_RANK];
    let mut elements: usize = 1;
    for (d, &d64) in dims.iter_mut().zip(&dims64[..rank]) {
        *d = usize::try_from(d64).map_err(|_| Error::BadShape { tensor })?;
        elements = elements.checked_mul(*d).ok_or(Error::BadShape { tensor })?;
    }
    let expected = elements
        .checked_mul(dtype.size())
        .ok_or(Error::BadShape { tensor })?;
    let (begin, end) = (
        usize::try_from(begin).map_err(|_| syntax)?,
        usize::try_from(end).map_err(|_| syntax)?,
    );
    let found = end.checked_sub(begin).ok_or(Error::SizeMismatch {
        tensor,
        expected,
        found: 0,
    })?;
    if found != expected {
        return Err(Error::SizeMismatch {
            tensor,
            expected,
            found,
        });
    }
    Ok(Pending {
        tensor: RawTensor {
            name,
            dtype,
            rank,
            dims,
            data: &[],
        },
        begin,
        end,
    })
}

/// Sorts a few ranges (at most `MAX_TENSORS`) by start. Not `sort_unstable`: on the MCU, core's
/// sort is about 3.5 KB of code, a fifth of the firmware's budget, for a dozen entries.
fn insertion_sort(v: &mut [(usize, usize)]) {
    for i in 1..v.len() {
        let mut j = i;
        while let (Some(a), Some(b)) = (v.get(j.wrapping_sub(1)), v.get(j)) {
            if a <= b {
                break;
            }
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::insertion_sort;

    #[test]
    fn insertion_sort_sorts_like_core() {
        let mut seed = 0x2545_f491_u32;
        for len in 0..=super::MAX_TENSORS {
            let mut v: Vec<(usize, usize)> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    ((seed % 8) as usize, (seed % 5) as usize)
                })
                .collect();
            let mut expected = v.clone();
            expected.sort();
            insertion_sort(&mut v);
            assert_eq!(v, expected);
        }
    }
}
