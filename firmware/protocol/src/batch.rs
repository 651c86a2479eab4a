//! A batch of labelled test images for the firmware: magic `L1SB`, then u16 version (1), u16
//! count, u32 pixels per image (all LE), then `count` label bytes, then the images' pixel bytes
//! one after another.

use crate::Error;

pub const BATCH_MAGIC: [u8; 4] = *b"L1SB";
pub const BATCH_VERSION: u16 = 1;
const HEADER_LEN: usize = 12;

/// A validated batch, borrowed from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    pub pixels: usize,
    pub labels: &'a [u8],
    images: &'a [u8],
}

impl<'a> Batch<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let header = bytes.get(..HEADER_LEN).ok_or(Error::BadBatch)?;
        if header[..4] != BATCH_MAGIC || u16::from_le_bytes([header[4], header[5]]) != BATCH_VERSION
        {
            return Err(Error::BadBatch);
        }
        let count = usize::from(u16::from_le_bytes([header[6], header[7]]));
        let pixels = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let expected = count
            .checked_mul(pixels)
            .and_then(|n| n.checked_add(HEADER_LEN + count))
            .ok_or(Error::BadBatch)?;
        if bytes.len() != expected {
            return Err(Error::BatchLength {
                expected,
                found: bytes.len(),
            });
        }
        let (labels, images) = bytes[HEADER_LEN..].split_at(count);
        Ok(Batch {
            pixels,
            labels,
            images,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`'s pixels and label.
    pub fn get(&self, i: usize) -> Option<(&'a [u8], u8)> {
        let start = i.checked_mul(self.pixels)?;
        Some((
            self.images.get(start..start + self.pixels)?,
            *self.labels.get(i)?,
        ))
    }

    /// Serialises images (each `pixels` bytes) and labels.
    #[cfg(any(test, feature = "std"))]
    pub fn encode(pixels: usize, images: &[&[u8]], labels: &[u8]) -> Vec<u8> {
        let mut out = BATCH_MAGIC.to_vec();
        out.extend_from_slice(&BATCH_VERSION.to_le_bytes());
        out.extend_from_slice(&(labels.len() as u16).to_le_bytes());
        out.extend_from_slice(&(pixels as u32).to_le_bytes());
        out.extend_from_slice(labels);
        for image in images {
            out.extend_from_slice(image);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_reject_bad_headers() {
        let images: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 4]).collect();
        let refs: Vec<&[u8]> = images.iter().map(|v| v.as_slice()).collect();
        let bytes = Batch::encode(4, &refs, &[7, 8, 9]);
        let batch = Batch::parse(&bytes).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.get(2), Some((&[2u8; 4][..], 9)));
        assert_eq!(batch.get(3), None);
        assert_eq!(
            Batch::parse(&bytes[..bytes.len() - 1]),
            Err(Error::BatchLength {
                expected: bytes.len(),
                found: bytes.len() - 1
            })
        );
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(Batch::parse(&bad), Err(Error::BadBatch));
        assert_eq!(Batch::parse(&bytes[..5]), Err(Error::BadBatch));
    }
}
