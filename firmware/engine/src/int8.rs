//! The int8 engine (SPEC §4.1): the f32 engine's streaming with byte activations, `i32`
//! accumulators and integer-only requantization, so its logits (`i32`) are the same integers on
//! every machine. Activations are held as `i16` (values 0..=255): the Cortex-M4's dual 16-bit
//! multiply-accumulates then read two per load, with no unpacking.
//!
//! Memory, laid out by an [`Int8Plan`]: each leading conv layer's window of input rows;
//! one pooled row of the last conv layer, which a `*_hcw` linear layer adds into its `i32`
//! accumulators as it comes (with a [`Cursor`] per row for CSR weights); then two buffers
//! that the remaining linear layers use in turn. The last layer writes the logits directly.

use crate::ops::conv::{ConvShape, RowSink};
use crate::ops::conv_i8::ConvLayerI8;
use crate::ops::linear_i8::{linear_block_i8, linear_i8, requantize_rows, Cursor, Output};
use crate::stream::{self, produce_row, Stage};
use crate::{cost, EngineError, Int8Plan, Probe, Stats};
use model_format::network::MAX_LAYERS;
use model_format::{Layer, LayerParamsI8, Model, Shape3};

/// An int8 model bound to its memory, ready to run, with room for `CONVS` conv layers (any
/// network's, unless a firmware built for one network says how many it has).
pub struct Int8Engine<'m, 'b, const CONVS: usize = MAX_LAYERS> {
    model: &'m Model<'m>,
    convs: heapless::Vec<Stage<'b, ConvLayerI8<'m, 'b>>, CONVS>,
    stream_linear: bool,
    /// One pooled row of the last conv layer (every channel), when streaming.
    row: &'b mut [i16],
    /// The last conv layer's output (or the image) unless streaming, then every other linear
    /// layer's.
    map: &'b mut [i16],
    /// The other linear layers' outputs.
    lin: &'b mut [i16],
    /// The streamed linear layer's sums.
    acc: &'b mut [i32],
    cursors: &'b mut [Cursor],
    /// The dense conv kernel's working memory.
    scratch: &'b mut [u32],
}

/// The engine's memory: at least an [`Int8Plan`]'s lengths of each.
pub struct Int8Memory<'b> {
    pub activations: &'b mut [i16],
    pub accumulators: &'b mut [i32],
    pub tap_offsets: &'b mut [u16],
    pub cursors: &'b mut [Cursor],
    pub scratch: &'b mut [u32],
}

impl<'m, 'b> Int8Engine<'m, 'b> {
    /// Lays an int8 model out in `memory` and checks every layer against its shape.
    pub fn new(model: &'m Model<'m>, memory: Int8Memory<'b>) -> Result<Self, EngineError> {
        Self::with_stages(model, memory)
    }
}

impl<'m, 'b, const CONVS: usize> Int8Engine<'m, 'b, CONVS> {
    /// [`Int8Engine::new`] with room for `CONVS` conv layers (each a stage of about 40 bytes
    /// held in the engine); a model with more is refused.
    pub fn with_stages(model: &'m Model<'m>, memory: Int8Memory<'b>) -> Result<Self, EngineError> {
        let plan = Int8Plan::for_model(model)?;
        if plan.layout.convs > CONVS {
            return Err(EngineError::TooManyConvLayers {
                found: plan.layout.convs,
                capacity: CONVS,
            });
        }
        let Int8Memory {
            activations,
            accumulators,
            tap_offsets,
            cursors,
            scratch,
        } = memory;
        plan.check([
            activations.len(),
            accumulators.len(),
            tap_offsets.len(),
            cursors.len(),
            scratch.len(),
        ])?;
        let too_small = EngineError::BufferTooSmall {
            buffer: 2,
            needed: plan.activations,
            available: 0,
        };
        let (mut values, mut offsets) = (activations, tap_offsets);
        let mut convs = heapless::Vec::new();
        let layers = model.int8_with_shapes();
        for (i, (layer, params)) in layers.enumerate().take(plan.layout.convs) {
            let shape = ConvShape::of(layer);
            let window_len = shape
                .window_len()
                .ok_or(EngineError::WindowTooLarge { layer: i })?;
            let (window, rest) = core::mem::take(&mut values)
                .split_at_mut_checked(window_len)
                .ok_or(too_small)?;
            values = rest;
            window.fill(0);
            let (table, rest) = core::mem::take(&mut offsets)
                .split_at_mut_checked(shape.taps())
                .ok_or(too_small)?;
            offsets = rest;
            let layer =
                ConvLayerI8::new(shape, params, table).ok_or(EngineError::BadLayer { layer: i })?;
            convs
                .push(Stage { layer, window })
                .map_err(|_| EngineError::BadLayer { layer: i })?;
        }
        let layout = plan.layout;
        let (row, rest) = values.split_at_mut_checked(layout.row).ok_or(too_small)?;
        let (map, rest) = rest.split_at_mut_checked(layout.map).ok_or(too_small)?;
        let lin = rest.get_mut(..layout.lin).ok_or(too_small)?;
        Ok(Int8Engine {
            model,
            convs,
            stream_linear: layout.stream_linear,
            row,
            map,
            lin,
            acc: accumulators.get_mut(..plan.accumulators).ok_or(too_small)?,
            cursors: cursors.get_mut(..plan.cursors).ok_or(too_small)?,
            scratch: scratch.get_mut(..plan.scratch).ok_or(too_small)?,
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
        let layers = self.model.int8_with_shapes();
        Stats::of(layers.map(|(layer, p)| cost::performed_macs_i8(layer, p)))
    }

    /// Runs one image (bytes, used as they are: the input scale is 1/255) and writes the logits.
    pub fn infer(
        &mut self,
        image: &[u8],
        logits: &mut [i32],
        probe: &mut impl Probe,
    ) -> Result<(), EngineError> {
        stream::check_io(&self.model.network, image.len(), logits.len())?;
        let convs = self.convs.len();
        let mut first_linear = convs;
        // Where the next linear layer reads: the map buffer, or the linear buffer.
        let mut from_map = true;
        match self.convs.last().map(|s| *s.layer.shape()) {
            Some(last) if self.stream_linear => {
                let model = self.model;
                let (Some(layer), Some(params)) =
                    (model.network.layers.get(convs), model.int8().get(convs))
                else {
                    return Err(EngineError::BadLayer { layer: convs });
                };
                let last_layer = convs + 1 == model.int8().len();
                self.stream_into_linear(last, (layer, params), image, probe);
                match last_layer {
                    true => requantize_rows(params, self.acc, Output::Logits(logits)),
                    false => requantize_rows(params, self.acc, Output::Bytes(self.lin)),
                }
                first_linear += 1;
                from_map = false;
            }
            Some(_) => stream::rows_into_map(&mut self.convs, image, self.map, self.scratch, probe),
            None => {
                let first = self.model.network.layers.first().map(|l| l.kind);
                let input = self.model.network.input;
                stream::image_into_map(input, first, image, self.map, i16::from);
            }
        }
        self.run_linears(first_linear, from_map, logits, probe);
        Ok(())
    }

    /// Runs the linear layers from `first`, alternating between the two byte buffers starting
    /// from the map (`from_map`) or the linear buffer; the last writes `logits`.
    fn run_linears(
        &mut self,
        first: usize,
        mut from_map: bool,
        logits: &mut [i32],
        probe: &mut impl Probe,
    ) {
        let last = self.model.int8().len().saturating_sub(1);
        let layers = self.model.int8_with_shapes();
        for (i, (layer, params)) in layers.enumerate().skip(first) {
            let (src, dst): (&[i16], &mut [i16]) = if from_map {
                (&*self.map, &mut *self.lin)
            } else {
                (&*self.lin, &mut *self.map)
            };
            // The plan made both buffers long enough; `min` only keeps this total.
            let input = &src[..layer.input.len().min(src.len())];
            let out_len = layer.output.len().min(dst.len());
            probe.layer_start(i);
            let out = match i == last {
                true => Output::Logits(&mut *logits),
                false => Output::Bytes(&mut dst[..out_len]),
            };
            linear_i8(input, params, out);
            probe.layer_end(i);
            from_map = !from_map;
        }
    }

    /// Runs the conv layers row by row, adding each pooled row of the last one (every channel:
    /// one contiguous block of a `*_hcw` layer's columns) to `params`' sums at once.
    fn stream_into_linear(
        &mut self,
        last: ConvShape,
        (layer, params): (&Layer<'_>, &LayerParamsI8<'_>),
        image: &[u8],
        probe: &mut impl Probe,
    ) {
        let index = self.convs.len();
        let (h, w) = (last.height / 2, last.width / 2);
        let block = last.out_channels * w;
        let rows = layer.output.len().min(self.acc.len());
        let acc = &mut self.acc[..rows];
        acc.iter_mut().zip(params.bias).for_each(|(a, &b)| *a = b);
        self.cursors.fill(Cursor::default());
        let cols = layer.cols();
        for p in 0..h {
            let sink = RowSink { base: 0, stride: w };
            produce_row(
                &mut self.convs,
                (p, image),
                self.row,
                sink,
                self.scratch,
                probe,
            );
            probe.layer_start(index);
            let x = self.row.get(..block).unwrap_or(&[]);
            linear_block_i8(&params.weights, cols, p * block, x, acc, self.cursors);
            probe.layer_end(index);
        }
    }
}
