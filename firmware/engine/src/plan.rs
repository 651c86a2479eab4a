//! How much memory a model needs, and how the engine lays it out.

use crate::error::EngineError;
use crate::ops::conv::ConvShape;
use model_format::{Flatten, LayerKind, Model, Weights};

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
    pub fn for_model(model: &Model<'_>) -> Result<Self, EngineError> {
        let layers = &model.network.layers;
        let convs = layers
            .iter()
            .take_while(|l| l.kind == LayerKind::Conv3x3ReluMaxPool2)
            .count();
        let (mut windows, mut tap_offsets) = (0usize, 0usize);
        for (i, l) in layers.iter().enumerate().take(convs) {
            let shape = ConvShape::of(l);
            let too_large = EngineError::WindowTooLarge { layer: i };
            let window = shape.window_len().ok_or(too_large)?;
            windows = windows.checked_add(window).ok_or(too_large)?;
            tap_offsets = tap_offsets.checked_add(shape.taps()).ok_or(too_large)?;
        }
        let last_conv = layers.get(convs.wrapping_sub(1));
        let stream_linear = last_conv.is_some()
            && matches!(
                layers.get(convs).map(|l| l.kind),
                Some(LayerKind::Linear {
                    order: Flatten::Hcw,
                    ..
                })
            );
        let (mut row, mut map, mut cursors) = (0, 0, 0);
        match last_conv {
            Some(l) if stream_linear => {
                row = l.output.channels * l.output.width;
                if let (Some(linear), Some(Weights::Csr(csr))) = (
                    model.layers.get(convs),
                    model.layers.get(convs).map(|p| p.weights),
                ) {
                    // Cursors count a row's non-zeros so far, as u16.
                    let longest = (0..csr.rows)
                        .map(|r| {
                            csr.row_ptr
                                .get(r + 1)
                                .unwrap_or(0)
                                .saturating_sub(csr.row_ptr.get(r).unwrap_or(0))
                        })
                        .max()
                        .unwrap_or(0);
                    if longest > usize::from(u16::MAX) {
                        return Err(EngineError::BadLayer { layer: convs });
                    }
                    cursors = linear.layer.output.len();
                }
            }
            Some(l) => map = l.output.len(),
            None => map = model.network.input.len(),
        }
        let mut lin = 0;
        for (j, (i, l)) in layers.iter().enumerate().skip(convs).enumerate() {
            if l.kind == LayerKind::Conv3x3ReluMaxPool2 {
                return Err(EngineError::BadLayer { layer: i });
            }
            let dst = if j % 2 == 0 { &mut lin } else { &mut map };
            *dst = (*dst).max(l.output.len());
        }
        let tap_offsets = tap_offsets
            .checked_add(cursors)
            .ok_or(EngineError::BadLayer { layer: convs })?;
        let activations = windows
            .checked_add(row)
            .and_then(|n| n.checked_add(map))
            .and_then(|n| n.checked_add(lin))
            .ok_or(EngineError::WindowTooLarge { layer: 0 })?;
        Ok(BufferPlan {
            activations,
            tap_offsets,
            convs,
            stream_linear,
            windows,
            row,
            map,
            lin,
            cursors,
        })
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
