//! How much memory a model needs, and how the engine lays it out.

use crate::error::EngineError;
use crate::ops::conv::ConvShape;
use crate::ops::conv_i8::{scratch_needed, scratch_words};
use crate::ops::linear_i8::Cursor;
use model_format::network::{output_shape, MAX_LAYERS};
use model_format::{
    Flatten, Indices, LayerKind, LayerSpec, Model, Network, NetworkSpec, Precision, Shape3,
    Weights, WeightsI8,
};

const fn is_conv(kind: LayerKind) -> bool {
    matches!(kind, LayerKind::Conv3x3ReluMaxPool2)
}

/// Entries of a CSR matrix's longest row.
pub(crate) fn longest_row(row_ptr: Indices<'_>, rows: usize) -> usize {
    (0..rows)
        .map(|r| {
            let end = row_ptr.get(r + 1).unwrap_or(0);
            end.saturating_sub(row_ptr.get(r).unwrap_or(0))
        })
        .max()
        .unwrap_or(0)
}

/// A validated network's layers as specs (the first `network.layers.len()` entries).
fn layer_specs<'a>(network: &Network<'a>) -> [LayerSpec<'a>; MAX_LAYERS] {
    let mut specs = [LayerSpec {
        name: "",
        kind: LayerKind::Conv3x3ReluMaxPool2,
        outputs: 0,
    }; MAX_LAYERS];
    for (s, l) in specs.iter_mut().zip(&network.layers) {
        *s = LayerSpec {
            name: l.name,
            kind: l.kind,
            outputs: l.output.channels,
        };
    }
    specs
}

/// Memory for one model. The activations (`f32`) are, in order: each leading conv layer's input
/// window; the row buffer (one pooled row of the last conv layer, when a `*_hcw` linear layer
/// follows and consumes the map row by row); the map buffer (otherwise the last conv layer's
/// whole output, or the image when there is no conv layer; then the output of every second
/// linear layer); the linear buffer (the other linear layers' outputs). The `u16` scratch holds
/// one tap offset table per conv layer, then, for a streamed CSR linear layer, a cursor per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferPlan {
    /// `f32` values of activation memory.
    pub activations: usize,
    /// `u16` entries of tap offset tables and row cursors.
    pub tap_offsets: usize,
    /// Leading conv layers (streamed).
    pub convs: usize,
    /// Whether the first linear layer consumes the last conv layer's rows as they come.
    pub stream_linear: bool,
    /// Of `activations`: the conv windows, the row buffer, the map buffer, the linear buffer.
    pub windows: usize,
    pub row: usize,
    pub map: usize,
    pub lin: usize,
    /// Of `tap_offsets`: the row cursors.
    pub cursors: usize,
}

impl BufferPlan {
    /// The plan for a validated model (its first streamed linear layer needs row cursors only
    /// when stored as CSR).
    pub fn for_model(model: &Model<'_>) -> Result<Self, EngineError> {
        let network = &model.network;
        let specs = layer_specs(network);
        let layers = specs.get(..network.layers.len()).unwrap_or(&[]);
        // The layer after the leading convs is the one a plan may stream into.
        let convs = layers.iter().take_while(|l| is_conv(l.kind)).count();
        let streamed = model.layers().get(convs).map(|p| p.weights);
        let csr = matches!(streamed, Some(Weights::Csr(_)));
        let plan = Self::plan(network.input, layers, csr)?;
        match streamed {
            Some(Weights::Csr(csr)) if plan.stream_linear => {
                // Cursors count a row's non-zeros so far, as u16.
                if longest_row(csr.row_ptr, csr.rows) > usize::from(u16::MAX) {
                    return Err(EngineError::BadLayer { layer: plan.convs });
                }
                Ok(plan)
            }
            _ => Ok(plan),
        }
    }

    /// The memory any model of `spec`'s network needs, whichever way its weights are stored: a
    /// `const` bound the firmware sizes its buffers from.
    pub const fn for_spec(spec: &NetworkSpec<'_>) -> Result<Self, EngineError> {
        Self::plan(spec.input, spec.layers, true)
    }

    /// The plan for `layers` on `input`, with row cursors for a streamed first linear layer if
    /// `cursors`. `const`, so loops instead of iterators.
    const fn plan(
        input: Shape3,
        layers: &[LayerSpec<'_>],
        cursors: bool,
    ) -> Result<Self, EngineError> {
        let mut convs = 0;
        while convs < layers.len() && is_conv(layers[convs].kind) {
            convs += 1;
        }
        let (windows, tap_offsets, current) = match Self::conv_windows(input, layers, convs) {
            Ok(sums) => sums,
            Err(e) => return Err(e),
        };
        // `current` is the last conv layer's output (or the input).
        let stream_linear = convs > 0
            && convs < layers.len()
            && matches!(
                layers[convs].kind,
                LayerKind::Linear {
                    order: Flatten::Hcw,
                    ..
                }
            );
        let (mut row, mut map, mut cursor_count) = (0, 0, 0);
        if stream_linear {
            row = current.channels * current.width;
            if cursors {
                cursor_count = layers[convs].outputs;
            }
        } else {
            map = current.channels * current.height * current.width;
        }
        let mut lin = 0;
        let mut j = convs;
        while j < layers.len() {
            if is_conv(layers[j].kind) {
                return Err(EngineError::BadLayer { layer: j });
            }
            let out = layers[j].outputs;
            if (j - convs) % 2 == 0 {
                lin = if out > lin { out } else { lin };
            } else {
                map = if out > map { out } else { map };
            }
            j += 1;
        }
        let Some(tap_offsets) = tap_offsets.checked_add(cursor_count) else {
            return Err(EngineError::BadLayer { layer: convs });
        };
        let activations = match windows.checked_add(row) {
            Some(n) => match n.checked_add(map) {
                Some(n) => n.checked_add(lin),
                None => None,
            },
            None => None,
        };
        let Some(activations) = activations else {
            return Err(EngineError::WindowTooLarge { layer: 0 });
        };
        Ok(BufferPlan {
            activations,
            tap_offsets,
            convs,
            stream_linear,
            windows,
            row,
            map,
            lin,
            cursors: cursor_count,
        })
    }

    /// The leading `convs` layers' window values and tap offsets, summed, and the last one's
    /// output shape (`input` when there is none).
    const fn conv_windows(
        input: Shape3,
        layers: &[LayerSpec<'_>],
        convs: usize,
    ) -> Result<(usize, usize, Shape3), EngineError> {
        let (mut windows, mut tap_offsets) = (0usize, 0usize);
        let mut current = input;
        let mut i = 0;
        while i < convs {
            let shape = ConvShape::reading(current, layers[i].outputs);
            let too_large = EngineError::WindowTooLarge { layer: i };
            let Some(window) = shape.window_len() else {
                return Err(too_large);
            };
            let (Some(w), Some(t)) = (
                windows.checked_add(window),
                tap_offsets.checked_add(shape.taps()),
            ) else {
                return Err(too_large);
            };
            (windows, tap_offsets) = (w, t);
            current = output_shape(layers[i].kind, current, layers[i].outputs);
            i += 1;
        }
        Ok((windows, tap_offsets, current))
    }

    /// Bytes of memory the plan uses.
    pub fn bytes(&self) -> usize {
        self.activations * core::mem::size_of::<f32>()
            + self.tap_offsets * core::mem::size_of::<u16>()
    }

    /// Checks buffer lengths against the plan.
    pub fn check(&self, activations: usize, tap_offsets: usize) -> Result<(), EngineError> {
        for (buffer, needed, available) in [
            (0, self.activations, activations),
            (1, self.tap_offsets, tap_offsets),
        ] {
            if available < needed {
                return Err(EngineError::BufferTooSmall {
                    buffer,
                    needed,
                    available,
                });
            }
        }
        Ok(())
    }
}

/// Memory for one int8 model: the f32 plan's layout with `i16` activations (bytes widened),
/// plus `i32` accumulators for a streamed linear layer's rows (requantized only after its last
/// block). Buffers: `activations` (windows, row, map, linear outputs as in [`BufferPlan`]),
/// `accumulators`, `tap_offsets` (`u16`, one table per conv layer) and `cursors` (one per
/// streamed CSR row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8Plan {
    pub layout: BufferPlan,
    pub activations: usize,
    pub accumulators: usize,
    pub tap_offsets: usize,
    pub cursors: usize,
    /// Working memory of the conv kernels (`u32`), the most any conv layer needs: for a
    /// network, what any model of it may need; for a model, what its layers as stored need.
    pub scratch: usize,
}

impl Int8Plan {
    /// The memory any int8 model of `spec`'s network needs: a `const` bound for the firmware.
    pub const fn for_spec(spec: &NetworkSpec<'_>) -> Result<Self, EngineError> {
        match BufferPlan::plan(spec.input, spec.layers, true) {
            Ok(layout) => Ok(Self::from_layout(layout, scratch(spec.input, spec.layers))),
            Err(e) => Err(e),
        }
    }

    /// The plan for a validated int8 model; a streamed CSR layer's rows and columns must fit
    /// its cursors (`u16`).
    pub fn for_model(model: &Model<'_>) -> Result<Self, EngineError> {
        if model.precision() != Precision::Int8 {
            return Err(EngineError::WrongPrecision);
        }
        let network = &model.network;
        let specs = layer_specs(network);
        let layers = specs.get(..network.layers.len()).unwrap_or(&[]);
        let layout = BufferPlan::plan(network.input, layers, true)?;
        let convs = model.int8_with_shapes().take(layout.convs);
        let scratch = convs
            .map(|(layer, p)| scratch_needed(&ConvShape::of(layer), p))
            .max()
            .unwrap_or(0);
        let plan = Self::from_layout(layout, scratch);
        let streamed = model.int8().get(plan.layout.convs).map(|p| p.weights);
        if let (true, Some(WeightsI8::Csr(csr))) = (plan.layout.stream_linear, streamed) {
            let longest = longest_row(csr.row_ptr, csr.rows);
            if longest > usize::from(u16::MAX) || csr.cols > usize::from(u16::MAX) + 1 {
                return Err(EngineError::BadLayer {
                    layer: plan.layout.convs,
                });
            }
        }
        Ok(plan)
    }

    /// The plan with its scratch cut to `words` when given and smaller: the firmware's bound
    /// for the one model built into it (`for_model`'s scratch), where `for_spec` would size
    /// it for any model of the network.
    pub const fn with_scratch_at_most(self, words: Option<usize>) -> Self {
        match words {
            Some(words) if words < self.scratch => Int8Plan {
                scratch: words,
                ..self
            },
            _ => self,
        }
    }

    const fn from_layout(layout: BufferPlan, scratch: usize) -> Self {
        Int8Plan {
            layout,
            activations: layout.activations,
            accumulators: layout.cursors,
            tap_offsets: layout.tap_offsets - layout.cursors,
            cursors: layout.cursors,
            scratch,
        }
    }

    /// Bytes of memory the plan uses.
    pub fn total_bytes(&self) -> usize {
        self.activations * core::mem::size_of::<i16>()
            + self.accumulators * core::mem::size_of::<i32>()
            + self.tap_offsets * core::mem::size_of::<u16>()
            + self.cursors * core::mem::size_of::<Cursor>()
            + self.scratch * core::mem::size_of::<u32>()
    }

    /// Checks buffer lengths (activations, accumulators, tap offsets, cursors, scratch)
    /// against the plan.
    pub fn check(&self, lengths: [usize; 5]) -> Result<(), EngineError> {
        let needed = [
            self.activations,
            self.accumulators,
            self.tap_offsets,
            self.cursors,
            self.scratch,
        ];
        for (buffer, (&needed, available)) in needed.iter().zip(lengths).enumerate() {
            if available < needed {
                return Err(EngineError::BufferTooSmall {
                    buffer: buffer as u8 + 2,
                    needed,
                    available,
                });
            }
        }
        Ok(())
    }
}

/// The dense int8 conv kernel's working memory for the leading conv layers of `layers` (the
/// most any one needs: layers run one pooled row at a time).
const fn scratch(input: Shape3, layers: &[LayerSpec<'_>]) -> usize {
    let (mut most, mut current, mut i) = (0, input, 0);
    while i < layers.len() && is_conv(layers[i].kind) {
        let words = scratch_words(current.channels * 9);
        most = if words > most { words } else { most };
        current = output_shape(layers[i].kind, current, layers[i].outputs);
        i += 1;
    }
    most
}
