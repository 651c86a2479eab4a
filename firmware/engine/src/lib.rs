//! The sparse CNN inference engine: `no_std`, no heap, the same code on the Cortex-M4F firmware
//! and on the host (where the trainer uses it to measure an exported model's accuracy).
//!
//! It runs a [`model_format::Model`] in caller-provided memory sized by a [`BufferPlan`]. The
//! leading conv layers are streamed: each keeps only a four-row window of its input, filled row
//! by row from the image or from the previous conv layer as it produces pooled rows, so the
//! feature maps between conv layers are never stored whole (in the recipe's CNN, four rows of
//! conv2's input instead of conv1's whole output; [`BufferPlan::bytes`] counts it, the report
//! shows it). The last conv layer's map and the fully connected layers use two buffers in turn.
//!
//! Weights stored sparse run through kernels that skip zeros; weights stored dense run through
//! dense kernels. Every f32 kernel adds a sum's non-zero products in the same order (a zero
//! product only changes the sign of an exact zero, which the ReLU clears), so a sparse and a
//! dense file of one model give the same logits bit for bit. Host and MCU run the same
//! operations in the same order (IEEE single precision, no fused multiply-add), so they agree
//! bit for bit.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod cost;
mod error;
mod int8;
pub mod ops;
mod plan;
mod stream;

use model_format::network::MAX_LAYERS;
use model_format::{Layer, LayerKind, LayerParams, Model, Shape3};
use ops::conv::{ConvLayer, ConvShape, RowSink, TapTable};
use ops::linear::{linear, linear_block, relu};
use stream::{produce_row, Stage};

pub use error::EngineError;
pub use int8::{Int8Engine, Int8Memory};
pub use ops::activation::{argmax, softmax};
pub use ops::linear_i8::Cursor;
pub use plan::{BufferPlan, Int8Plan};

/// Per-layer multiply-accumulates of one inference (on real inputs: taps that fall on a conv's
/// zero padding are not counted, zero weights stored sparse are not performed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    pub layer_macs: [u64; MAX_LAYERS],
    pub layers: usize,
}

impl Stats {
    /// Each layer's MACs, in order (at most `MAX_LAYERS`).
    fn of(macs: impl ExactSizeIterator<Item = u64>) -> Self {
        let mut stats = Stats {
            layers: macs.len().min(MAX_LAYERS),
            ..Stats::default()
        };
        stats
            .layer_macs
            .iter_mut()
            .zip(macs)
            .for_each(|(m, v)| *m = v);
        stats
    }

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

/// A model bound to its activation memory, ready to run, with room for `CONVS` conv layers (any
/// network's, unless a firmware built for one network says how many it has).
pub struct Engine<'m, 'b, const CONVS: usize = MAX_LAYERS> {
    model: &'m Model<'m>,
    convs: heapless::Vec<Stage<'b, ConvLayer<'m, 'b>>, CONVS>,
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
}

impl<'m, 'b> Engine<'m, 'b> {
    /// Lays the model out in `activations` and `tap_offsets` (at least the [`BufferPlan`]'s
    /// sizes) and checks every layer's weights against its shape.
    pub fn new(
        model: &'m Model<'m>,
        activations: &'b mut [f32],
        tap_offsets: &'b mut [u16],
    ) -> Result<Self, EngineError> {
        Self::with_stages(model, activations, tap_offsets)
    }
}

impl<'m, 'b, const CONVS: usize> Engine<'m, 'b, CONVS> {
    /// [`Engine::new`] with room for `CONVS` conv layers (each a stage of about 60 bytes held
    /// in the engine); a model with more is refused.
    pub fn with_stages(
        model: &'m Model<'m>,
        activations: &'b mut [f32],
        tap_offsets: &'b mut [u16],
    ) -> Result<Self, EngineError> {
        if model.precision() != model_format::Precision::F32 {
            return Err(EngineError::WrongPrecision);
        }
        let plan = BufferPlan::for_model(model)?;
        if plan.convs > CONVS {
            return Err(EngineError::TooManyConvLayers {
                found: plan.convs,
                capacity: CONVS,
            });
        }
        plan.check(activations.len(), tap_offsets.len())?;
        let (mut floats, mut offsets) = (activations, tap_offsets);
        let mut convs = heapless::Vec::new();
        let too_small = EngineError::BufferTooSmall {
            buffer: 0,
            needed: plan.activations,
            available: 0,
        };
        let layers = model.layers_with_shapes();
        for (i, (layer, params)) in layers.enumerate().take(plan.convs) {
            let shape = ConvShape::of(layer);
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
            let layer =
                ConvLayer::new(shape, params, table).ok_or(EngineError::BadLayer { layer: i })?;
            convs
                .push(Stage { layer, window })
                .map_err(|_| EngineError::BadLayer { layer: i })?;
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
        })
    }

    pub fn input_shape(&self) -> Shape3 {
        self.model.network.input
    }

    pub fn classes(&self) -> usize {
        self.model.network.output().len()
    }

    /// Per-layer MACs of one inference, the same for every image: they follow from the
    /// weights as stored. Counted on each call (every stored weight is visited): call it once,
    /// not per image. (Not kept in the engine, which the firmware holds on its stack.)
    pub fn stats(&self) -> Stats {
        let layers = self.model.layers_with_shapes();
        Stats::of(layers.map(|(layer, p)| cost::performed_macs(layer, &p.weights)))
    }

    /// Runs one image (bytes, scaled by 1/255 as in training) and writes the logits.
    pub fn infer(
        &mut self,
        image: &[u8],
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<(), EngineError> {
        stream::check_io(&self.model.network, image.len(), logits.len())?;
        let convs = self.convs.len();
        // Where the next linear layer reads: the map buffer, or the linear buffer.
        let mut from_map = true;
        let mut first_linear = convs;
        match self.convs.last().map(|s| *s.layer.shape()) {
            Some(last) if self.stream_linear => {
                let model = self.model;
                if let (Some(layer), Some(params)) =
                    (model.network.layers.get(convs), model.layers().get(convs))
                {
                    self.stream_into_linear(last, (layer, params), image, probe);
                }
                first_linear += 1;
                from_map = false;
            }
            Some(_) => stream::rows_into_map(&mut self.convs, image, self.map, &mut [], probe),
            None => self.image_into_map(image),
        }
        let from_map = self.run_linears(first_linear, from_map, probe);
        let last: &[f32] = if from_map { self.map } else { self.lin };
        for (l, &v) in logits.iter_mut().zip(last) {
            *l = v;
        }
        Ok(())
    }

    /// With no conv layer, the image goes to the map buffer as the first linear layer reads it.
    fn image_into_map(&mut self, image: &[u8]) {
        let first = self.model.network.layers.first().map(|l| l.kind);
        let input = self.model.network.input;
        stream::image_into_map(input, first, image, self.map, |px| f32::from(px) / 255.0);
    }

    /// Runs the linear layers from `first`, alternating between the two buffers starting from
    /// the map (`from_map`) or the linear buffer; returns where the last output is.
    fn run_linears(&mut self, first: usize, mut from_map: bool, probe: &mut impl Probe) -> bool {
        let layers = self.model.layers_with_shapes();
        for (i, (layer, params)) in layers.enumerate().skip(first) {
            let LayerKind::Linear { relu, .. } = layer.kind else {
                continue;
            };
            let (src, dst): (&[f32], &mut [f32]) = if from_map {
                (&*self.map, &mut *self.lin)
            } else {
                (&*self.lin, &mut *self.map)
            };
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

impl<const CONVS: usize> Engine<'_, '_, CONVS> {
    /// Runs the conv layers row by row, adding each pooled row of the last one (every channel:
    /// one contiguous block of a `*_hcw` layer's columns) to the linear layer `params` at once.
    fn stream_into_linear(
        &mut self,
        last: ConvShape,
        (layer, params): (&Layer<'_>, &LayerParams<'_>),
        image: &[u8],
        probe: &mut impl Probe,
    ) {
        let index = self.convs.len();
        let (h, w) = (last.height / 2, last.width / 2);
        let block = last.out_channels * w;
        let rows = layer.output.len().min(self.lin.len());
        let acc = &mut self.lin[..rows];
        acc.iter_mut().zip(params.bias).for_each(|(a, &b)| *a = b);
        self.cursors.fill(0);
        let cols = layer.cols();
        for p in 0..h {
            let sink = RowSink { base: 0, stride: w };
            produce_row(&mut self.convs, (p, image), self.row, sink, &mut [], probe);
            probe.layer_start(index);
            let x = self.row.get(..block).unwrap_or(&[]);
            let cursors = Some(&mut *self.cursors).filter(|c| !c.is_empty());
            linear_block(&params.weights, cols, p * block, x, acc, cursors);
            probe.layer_end(index);
        }
        if let LayerKind::Linear { relu: true, .. } = layer.kind {
            relu(acc);
        }
    }
}
