//! Why a model cannot run with the given memory or input.

use crate::ops::conv::MAX_WINDOW;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EngineError {
    /// Buffer `buffer` (0: activations in `f32`, 1: tap offsets in `u16`; int8: 2 activations
    /// in `i16`, 3 accumulators, 4 tap offsets, 5 row cursors, 6 kernel scratch) holds `available` values, the plan needs
    /// `needed`.
    BufferTooSmall {
        buffer: u8,
        needed: usize,
        available: usize,
    },
    /// A conv layer's four-row input window exceeds [`MAX_WINDOW`] floats.
    WindowTooLarge { layer: usize },
    /// A layer's weights or bias do not match its shape, or a conv layer follows a linear one
    /// (possible only for a `Model` not made by `Model::parse`).
    BadLayer { layer: usize },
    /// The model's precision is not the one this engine runs (`Engine`: f32, `Int8Engine`:
    /// int8).
    WrongPrecision,
    /// The model has `found` leading conv layers; the engine was built with room for
    /// `capacity` (a firmware sizes it for its network).
    TooManyConvLayers { found: usize, capacity: usize },
    /// The input image has the wrong number of pixels.
    InputSize { expected: usize, found: usize },
    /// The logits slice has the wrong length.
    OutputSize { expected: usize, found: usize },
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EngineError::BufferTooSmall {
                buffer,
                needed,
                available,
            } => {
                let what = match buffer {
                    0 => "activation buffer (f32)",
                    1 => "tap offset buffer (u16)",
                    2 => "activation buffer (i16)",
                    3 => "accumulator buffer (i32)",
                    4 => "tap offset buffer (u16)",
                    5 => "row cursor buffer",
                    _ => "kernel scratch buffer (u32)",
                };
                write!(f, "{what} holds {available} values, the model needs {needed}")
            }
            EngineError::WindowTooLarge { layer } => write!(
                f,
                "layer {layer}: its input window (4 rows of every channel) exceeds {MAX_WINDOW} values"
            ),
            EngineError::WrongPrecision => {
                write!(f, "the model's precision is not the one this engine runs")
            }
            EngineError::BadLayer { layer } => write!(
                f,
                "layer {layer}: weights, bias or position do not fit the network"
            ),
            EngineError::TooManyConvLayers { found, capacity } => write!(
                f,
                "the model has {found} conv layers, the engine room for {capacity}"
            ),
            EngineError::InputSize { expected, found } => {
                write!(f, "input has {found} values, expected {expected}")
            }
            EngineError::OutputSize { expected, found } => {
                write!(f, "output has {found} values, expected {expected}")
            }
        }
    }
}

impl core::error::Error for EngineError {}
