//! The sparse CNN inference engine: `no_std`, no heap, the same code on the Cortex-M4F firmware
//! and on the host (where the trainer uses it to measure an exported model's accuracy).
//!
//! It runs a [`model_format::Model`] — already validated, so the kernels trust its shapes and
//! indices — layer by layer through two caller-provided `f32` buffers used in turn
//! ([`BufferPlan`]). Weights stored sparse run through kernels that skip zeros; weights stored
//! dense run through dense kernels (a sparse and a dense file of one model agree to float
//! rounding: the conv kernels sum in different orders). Host and MCU run the same operations in
//! the same order (IEEE single precision, no fused multiply-add), so they agree bit for bit.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod ops;

use model_format::network::MAX_LAYERS;
use model_format::{LayerKind, Model, Shape3};
use ops::conv::{conv3x3_relu_maxpool2, ConvShape, MAX_WIDTH};
use ops::linear::linear;

pub use ops::activation::{argmax, softmax};

/// Why a model cannot run with the given buffers or input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EngineError {
    /// Buffer `buffer` (0 or 1) holds `available` values, the plan needs `needed`.
    BufferTooSmall {
        buffer: u8,
        needed: usize,
        available: usize,
    },
    /// A convolution's feature map is wider than the kernels support.
    MapTooWide { layer: usize, width: usize },
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
                write!(
                    f,
                    "buffer {buffer} holds {available} values, the model needs {needed}"
                )
            }
            EngineError::MapTooWide { layer, width } => {
                write!(
                    f,
                    "layer {layer}: feature map width {width} exceeds {MAX_WIDTH}"
                )
            }
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

/// How many `f32` values each of the two ping-pong buffers must hold: layer `i` reads buffer
/// `i % 2` and writes buffer `(i + 1) % 2`; the input starts in buffer 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferPlan {
    pub sizes: [usize; 2],
}

impl BufferPlan {
    pub fn for_model(model: &Model<'_>) -> Result<Self, EngineError> {
        let mut sizes = [model.network.input.len(), 0];
        for (i, layer) in model.network.layers.iter().enumerate() {
            if layer.kind == LayerKind::Conv3x3ReluMaxPool2 && layer.input.width > MAX_WIDTH {
                return Err(EngineError::MapTooWide {
                    layer: i,
                    width: layer.input.width,
                });
            }
            let dst = &mut sizes[(i + 1) % 2];
            *dst = (*dst).max(layer.output.len());
        }
        Ok(BufferPlan { sizes })
    }

    /// Bytes of activation memory the plan uses.
    pub fn bytes(&self) -> usize {
        (self.sizes[0] + self.sizes[1]) * core::mem::size_of::<f32>()
    }
}

/// Per-layer multiply-accumulates of one inference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    pub layer_macs: [u64; MAX_LAYERS],
    pub layers: usize,
}

impl Stats {
    pub fn total_macs(&self) -> u64 {
        self.layer_macs.iter().take(self.layers).sum()
    }
}

/// Hooks around each layer, for timing on the device. `()` does nothing.
pub trait Probe {
    fn layer_start(&mut self, _layer: usize) {}
    fn layer_end(&mut self, _layer: usize, _macs: u64) {}
}

impl Probe for () {}

/// A model bound to its activation buffers, ready to run.
pub struct Engine<'m, 'b> {
    model: &'m Model<'m>,
    buffers: [&'b mut [f32]; 2],
}

impl<'m, 'b> Engine<'m, 'b> {
    /// Checks the buffers against the model's [`BufferPlan`].
    pub fn new(
        model: &'m Model<'m>,
        buffer0: &'b mut [f32],
        buffer1: &'b mut [f32],
    ) -> Result<Self, EngineError> {
        let plan = BufferPlan::for_model(model)?;
        for (i, (needed, available)) in plan
            .sizes
            .iter()
            .zip([buffer0.len(), buffer1.len()])
            .enumerate()
        {
            if available < *needed {
                return Err(EngineError::BufferTooSmall {
                    buffer: i as u8,
                    needed: *needed,
                    available,
                });
            }
        }
        Ok(Engine {
            model,
            buffers: [buffer0, buffer1],
        })
    }

    pub fn input_shape(&self) -> Shape3 {
        self.model.network.input
    }

    pub fn classes(&self) -> usize {
        self.model.network.output().len()
    }

    /// Runs one image (bytes, scaled by 1/255 as in training) and writes the logits.
    pub fn infer(
        &mut self,
        image: &[u8],
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<Stats, EngineError> {
        let expected = self.model.network.input.len();
        if image.len() != expected {
            return Err(EngineError::InputSize {
                expected,
                found: image.len(),
            });
        }
        if logits.len() != self.classes() {
            return Err(EngineError::OutputSize {
                expected: self.classes(),
                found: logits.len(),
            });
        }
        for (dst, &p) in self.buffers[0].iter_mut().zip(image) {
            *dst = f32::from(p) / 255.0;
        }
        let mut stats = Stats {
            layers: self.model.layers.len(),
            ..Stats::default()
        };
        let [b0, b1] = &mut self.buffers;
        for (i, params) in self.model.layers.iter().enumerate() {
            let (src, dst): (&[f32], &mut [f32]) = if i % 2 == 0 {
                (&**b0, &mut **b1)
            } else {
                (&**b1, &mut **b0)
            };
            let layer = params.layer;
            // The plan checked in `new` makes both buffers long enough; `min` only keeps this total.
            let input = &src[..layer.input.len().min(src.len())];
            let out_len = layer.output.len().min(dst.len());
            let output = &mut dst[..out_len];
            probe.layer_start(i);
            let macs = match layer.kind {
                LayerKind::Conv3x3ReluMaxPool2 => {
                    let shape = ConvShape {
                        in_channels: layer.input.channels,
                        out_channels: layer.output.channels,
                        height: layer.input.height,
                        width: layer.input.width,
                    };
                    conv3x3_relu_maxpool2(input, &shape, &params.weights, params.bias, output)
                }
                LayerKind::Linear { relu } => {
                    linear(input, &params.weights, params.bias, relu, output)
                }
            };
            probe.layer_end(i, macs);
            if let Some(m) = stats.layer_macs.get_mut(i) {
                *m = macs;
            }
        }
        let last: &[f32] = if self.model.layers.len().is_multiple_of(2) {
            b0
        } else {
            b1
        };
        for (l, &v) in logits.iter_mut().zip(last) {
            *l = v;
        }
        Ok(stats)
    }
}
