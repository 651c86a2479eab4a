//! How much memory a model needs, and how the engine lays it out.

use crate::error::EngineError;
use crate::ops::conv::ConvShape;
use model_format::{LayerKind, Model};

/// Memory for one model: the activations (`f32`) are, in order, each leading conv layer's input
/// window, the map buffer (the last conv layer's output, or the image when there is no conv
/// layer, then the output of every second linear layer) and the linear buffer (the other linear
/// layers' outputs); the tap offsets (`u16`) are one table per conv layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferPlan {
    /// `f32` values of activation memory.
    pub activations: usize,
    /// `u16` entries of tap offset tables.
    pub tap_offsets: usize,
    /// Leading conv layers (streamed).
    pub convs: usize,
    /// Of `activations`: the conv windows, the map buffer, the linear buffer.
    pub windows: usize,
    pub map: usize,
    pub lin: usize,
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
            let shape = ConvShape {
                in_channels: l.input.channels,
                out_channels: l.output.channels,
                height: l.input.height,
                width: l.input.width,
            };
            let too_large = EngineError::WindowTooLarge { layer: i };
            let window = shape.window_len().ok_or(too_large)?;
            windows = windows.checked_add(window).ok_or(too_large)?;
            tap_offsets = tap_offsets.checked_add(shape.taps()).ok_or(too_large)?;
        }
        let mut map = layers
            .get(convs.wrapping_sub(1))
            .map_or(model.network.input.len(), |l| l.output.len());
        let mut lin = 0;
        for (j, (i, l)) in layers.iter().enumerate().skip(convs).enumerate() {
            if l.kind == LayerKind::Conv3x3ReluMaxPool2 {
                return Err(EngineError::BadLayer { layer: i });
            }
            let dst = if j % 2 == 0 { &mut lin } else { &mut map };
            *dst = (*dst).max(l.output.len());
        }
        let activations = windows
            .checked_add(map)
            .and_then(|n| n.checked_add(lin))
            .ok_or(EngineError::WindowTooLarge { layer: 0 })?;
        Ok(BufferPlan {
            activations,
            tap_offsets,
            convs,
            windows,
            map,
            lin,
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
