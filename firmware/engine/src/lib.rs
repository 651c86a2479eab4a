//! The sparse CNN inference engine: `no_std`, no heap, the same code on the Cortex-M4F firmware
//! and on the host (where the trainer uses it to measure an exported model's accuracy).
//!
//! It runs a [`model_format::Model`] in caller-provided memory sized by a [`BufferPlan`]. The
//! leading conv layers are streamed: each keeps only a four-row window of its input, filled row
//! by row from the image or from the previous conv layer as it produces pooled rows, so the
//! feature maps between conv layers are never stored whole (the recipe's CNN needs 21.7 KB of
//! activations instead of 37.6 KB). The last conv layer's map and the fully connected layers use
//! two buffers in turn.
//!
//! Weights stored sparse run through kernels that skip zeros; weights stored dense run through
//! dense kernels (a sparse and a dense file of one model agree to float rounding: the conv
//! kernels treat padding differently). Host and MCU run the same operations in the same order
//! (IEEE single precision, no fused multiply-add), so they agree bit for bit.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod cost;
mod error;
pub mod ops;
mod plan;

use model_format::network::MAX_LAYERS;
use model_format::{Flatten, LayerKind, LayerParams, Model, Shape3};
use ops::conv::{ConvLayer, ConvShape, RowSink, TapTable};
use ops::linear::{linear, linear_block, relu};

pub use error::EngineError;
pub use ops::activation::{argmax, softmax};
pub use plan::BufferPlan;

/// Per-layer multiply-accumulates of one inference (on real inputs: taps that fall on a conv's
/// zero padding are not counted, zero weights stored sparse are not performed).
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

/// Hooks around the work of each layer, for timing on the device. Streamed conv layers
/// interleave, so a layer's work comes in several start/end pairs: sum them. `()` does nothing.
pub trait Probe {
    fn layer_start(&mut self, _layer: usize) {}
    fn layer_end(&mut self, _layer: usize) {}
}

impl Probe for () {}

/// A streamed conv layer and its input window.
struct Stage<'m, 'b> {
    layer: ConvLayer<'m, 'b>,
    window: &'b mut [f32],
}

/// A model bound to its activation memory, ready to run.
pub struct Engine<'m, 'b> {
    model: &'m Model<'m>,
    convs: heapless::Vec<Stage<'m, 'b>, MAX_LAYERS>,
    /// Whether the first linear layer takes the last conv layer's pooled rows one by one.
    stream_linear: bool,
    /// One pooled row of the last conv layer (every channel), when streaming.
    row: &'b mut [f32],
    /// The last conv layer's output (or the image) unless streaming, then every other linear
    /// layer's.
    map: &'b mut [f32],
    /// The other linear layers' outputs.
    lin: &'b mut [f32],
    /// Per-row progress of a streamed CSR linear layer.
    cursors: &'b mut [u16],
    stats: Stats,
}

impl<'m, 'b> Engine<'m, 'b> {
    /// Lays the model out in `activations` and `tap_offsets` (at least the [`BufferPlan`]'s
    /// sizes) and checks every layer's weights against its shape.
    pub fn new(
        model: &'m Model<'m>,
        activations: &'b mut [f32],
        tap_offsets: &'b mut [u16],
    ) -> Result<Self, EngineError> {
        if model.precision != model_format::Precision::F32 {
            return Err(EngineError::WrongPrecision);
        }
        let plan = BufferPlan::for_model(model)?;
        plan.check(activations.len(), tap_offsets.len())?;
        let (mut floats, mut offsets) = (activations, tap_offsets);
        let mut convs = heapless::Vec::new();
        let mut stats = Stats {
            layers: model.layers.len(),
            ..Stats::default()
        };
        let too_small = EngineError::BufferTooSmall {
            buffer: 0,
            needed: plan.activations,
            available: 0,
        };
        for (i, params) in model.layers.iter().enumerate().take(plan.convs) {
            let shape = ConvShape::of(&params.layer);
            let window_len = shape
                .window_len()
                .ok_or(EngineError::WindowTooLarge { layer: i })?;
            let (window, rest) = core::mem::take(&mut floats)
                .split_at_mut_checked(window_len)
                .ok_or(too_small)?;
            floats = rest;
            window.fill(0.0);
            let (table, rest) = core::mem::take(&mut offsets)
                .split_at_mut_checked(shape.taps())
                .ok_or(too_small)?;
            offsets = rest;
            let table =
                TapTable::new(&shape, table).ok_or(EngineError::WindowTooLarge { layer: i })?;
            let layer = ConvLayer::new(shape, params.weights, params.bias, table)
                .ok_or(EngineError::BadLayer { layer: i })?;
            convs
                .push(Stage { layer, window })
                .map_err(|_| EngineError::BadLayer { layer: i })?;
        }
        for (params, macs) in model.layers.iter().zip(&mut stats.layer_macs) {
            *macs = cost::performed_macs(&params.layer, &params.weights);
        }
        let (row, rest) = floats.split_at_mut_checked(plan.row).ok_or(too_small)?;
        let (map, rest) = rest.split_at_mut_checked(plan.map).ok_or(too_small)?;
        let lin = rest.get_mut(..plan.lin).ok_or(too_small)?;
        let cursors = offsets.get_mut(..plan.cursors).ok_or(too_small)?;
        Ok(Engine {
            model,
            convs,
            stream_linear: plan.stream_linear,
            row,
            map,
            lin,
            cursors,
            stats,
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
        self.check_io(image, logits)?;
        let convs = self.convs.len();
        // Where the next linear layer reads: the map buffer, or the linear buffer.
        let mut from_map = true;
        let mut first_linear = convs;
        match self.convs.last().map(|s| *s.layer.shape()) {
            Some(last) if self.stream_linear => {
                if let Some(params) = self.model.layers.get(convs) {
                    self.stream_into_linear(last, params, image, probe);
                }
                first_linear += 1;
                from_map = false;
            }
            Some(last) => {
                let (h, w) = (last.height / 2, last.width / 2);
                for p in 0..h {
                    let sink = RowSink {
                        base: p * w,
                        stride: h * w,
                    };
                    produce_row(&mut self.convs, p, image, self.map, sink, probe);
                }
            }
            None => self.image_into_map(image),
        }
        let from_map = self.run_linears(first_linear, from_map, probe);
        let last: &[f32] = if from_map { self.map } else { self.lin };
        for (l, &v) in logits.iter_mut().zip(last) {
            *l = v;
        }
        Ok(self.stats)
    }

    fn check_io(&self, image: &[u8], logits: &[f32]) -> Result<(), EngineError> {
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
        Ok(())
    }

    /// With no conv layer, the image goes to the map buffer as the first linear layer reads it.
    fn image_into_map(&mut self, image: &[u8]) {
        let input = self.model.network.input;
        let hcw = matches!(
            self.model.layers.first().map(|l| l.layer.kind),
            Some(LayerKind::Linear {
                order: Flatten::Hcw,
                ..
            })
        );
        let (c, h, w) = (input.channels, input.height, input.width);
        for (i, &px) in image.iter().enumerate() {
            // Image index i = (ci·h + y)·w + x; a `*_hcw` layer reads (y·c + ci)·w + x.
            let (ci, y, x) = (i / (h * w), i / w % h, i % w);
            let at = if hcw { (y * c + ci) * w + x } else { i };
            if let Some(dst) = self.map.get_mut(at) {
                *dst = f32::from(px) / 255.0;
            }
        }
    }

    /// Runs the linear layers from `first`, alternating between the two buffers starting from
    /// the map (`from_map`) or the linear buffer; returns where the last output is.
    fn run_linears(&mut self, first: usize, mut from_map: bool, probe: &mut impl Probe) -> bool {
        for (i, params) in self.model.layers.iter().enumerate().skip(first) {
            let LayerKind::Linear { relu, .. } = params.layer.kind else {
                continue;
            };
            let (src, dst): (&[f32], &mut [f32]) = if from_map {
                (&*self.map, &mut *self.lin)
            } else {
                (&*self.lin, &mut *self.map)
            };
            let layer = params.layer;
            // The plan made both buffers long enough; `min` only keeps this total.
            let input = &src[..layer.input.len().min(src.len())];
            let out_len = layer.output.len().min(dst.len());
            probe.layer_start(i);
            linear(
                input,
                &params.weights,
                params.bias,
                relu,
                &mut dst[..out_len],
            );
            probe.layer_end(i);
            from_map = !from_map;
        }
        from_map
    }
}

impl Engine<'_, '_> {
    /// Runs the conv layers row by row, adding each pooled row of the last one (every channel:
    /// one contiguous block of a `*_hcw` layer's columns) to the linear layer `params` at once.
    fn stream_into_linear(
        &mut self,
        last: ConvShape,
        params: &LayerParams<'_>,
        image: &[u8],
        probe: &mut impl Probe,
    ) {
        let index = self.convs.len();
        let (h, w) = (last.height / 2, last.width / 2);
        let block = last.out_channels * w;
        let rows = params.layer.output.len().min(self.lin.len());
        let acc = &mut self.lin[..rows];
        acc.iter_mut().zip(params.bias).for_each(|(a, &b)| *a = b);
        self.cursors.fill(0);
        let cols = params.layer.cols();
        for p in 0..h {
            let sink = RowSink { base: 0, stride: w };
            produce_row(&mut self.convs, p, image, self.row, sink, probe);
            probe.layer_start(index);
            let x = self.row.get(..block).unwrap_or(&[]);
            let cursors = Some(&mut *self.cursors).filter(|c| !c.is_empty());
            linear_block(&params.weights, cols, p * block, x, acc, cursors);
            probe.layer_end(index);
        }
        if let LayerKind::Linear { relu: true, .. } = params.layer.kind {
            relu(acc);
        }
    }
}

/// Copies `src` into `dst` (as much as fits) eight values at a time: fixed-size copies become
/// load/store-multiple instructions, about a third of the cost of a `memmove` call here.
fn copy_floats(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Computes pooled row `p` of the last of `stages` into `out` as `sink` says, first filling its
/// window with the input rows it needs: from the image for the first conv layer, else by
/// producing them with the stages before it. Rows must be asked for in order, from 0.
fn produce_row(
    stages: &mut [Stage<'_, '_>],
    p: usize,
    image: &[u8],
    out: &mut [f32],
    sink: RowSink,
    probe: &mut impl Probe,
) {
    let Some((stage, lower)) = stages.split_last_mut() else {
        return;
    };
    let index = lower.len();
    let layer = stage.layer;
    let shape = *layer.shape();
    let (slot, pw, w) = (shape.slot_len(), shape.padded_width(), shape.width);
    probe.layer_start(index);
    // Window slot s holds input row 2p − 1 + s: rows 2p − 1 and 2p were the last two slots.
    let first_new = if p == 0 {
        0
    } else {
        let (kept, newer) = stage.window.split_at_mut(2 * slot);
        copy_floats(kept, newer);
        2
    };
    for s in first_new..4 {
        let row = (2 * p + s).checked_sub(1).filter(|&r| r < shape.height);
        let Some(dst) = stage.window.get_mut(s * slot..(s + 1) * slot) else {
            return;
        };
        match row {
            None => dst.fill(0.0),
            Some(r) if lower.is_empty() => {
                // The image, channel-major: channel ci's row r starts at (ci·h + r)·w.
                for (ci, d) in dst.chunks_exact_mut(pw).enumerate() {
                    let start = (ci * shape.height + r) * w;
                    let src = image.get(start..start + w).unwrap_or(&[]);
                    for (d, &px) in d.iter_mut().skip(1).zip(src) {
                        *d = f32::from(px) / 255.0;
                    }
                }
            }
            Some(r) => {
                probe.layer_end(index);
                let into = RowSink {
                    base: s * slot + 1,
                    stride: pw,
                };
                produce_row(lower, r, image, stage.window, into, probe);
                probe.layer_start(index);
            }
        }
    }
    layer.pooled_row(stage.window, p, out, sink);
    probe.layer_end(index);
}
