//! Why a flash slot or a batch of test images cannot be used: small, `Copy`, numbers not
//! strings, printable with `defmt` on the device and `Display` on the host.

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The region holds only 0xFF or 0x00 where a slot header should start: nothing was flashed.
    Erased,
    /// The region is shorter than a slot header.
    TooShort { len: usize },
    /// A flash slot's header is not this project's, or holds another kind of payload.
    BadSlot,
    /// A flash slot claims more bytes than its region holds.
    SlotOverflow { len: usize, capacity: usize },
    /// A test-image batch's header is malformed.
    BadBatch,
    /// A batch's length differs from what its header says.
    BatchLength { expected: usize, found: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Erased => write!(
                f,
                "nothing flashed: the region is erased (all 0xFF or 0x00)"
            ),
            Error::TooShort { len } => {
                write!(f, "region of {len} bytes is shorter than a slot header")
            }
            Error::BadSlot => write!(
                f,
                "flash slot header is not an l1sparse slot of the expected kind"
            ),
            Error::SlotOverflow { len, capacity } => {
                write!(f, "slot claims {len} bytes, the region holds {capacity}")
            }
            Error::BadBatch => write!(f, "test-image batch header is malformed"),
            Error::BatchLength { expected, found } => {
                write!(
                    f,
                    "test-image batch has {found} bytes, its header says {expected}"
                )
            }
        }
    }
}

impl core::error::Error for Error {}
