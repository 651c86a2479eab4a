//! Row streaming through the leading conv layers, for any activation type: each conv layer keeps
//! a four-row window of its input and fills it row by row, from the image or by asking the layer
//! before it for its next pooled rows, so no feature map between conv layers is stored whole.
//! The f32 and the int8 engines both run their conv layers through [`produce_row`].

use crate::ops::conv::{ConvShape, RowSink};
use crate::{EngineError, Probe};
use model_format::{Flatten, LayerKind, Network, Shape3};

/// A conv layer's kernel as the streaming sees it: its geometry and one pooled output row from
/// a window of its input rows.
pub(crate) trait RowKernel {
    /// The activation type of its window and output.
    type Act: Copy;
    /// The padding value.
    const ZERO: Self::Act;
    fn shape(&self) -> &ConvShape;
    /// An input image byte as an activation.
    fn pixel(px: u8) -> Self::Act;
    /// Pooled output row `p` of every channel, from a window of input rows `2p − 1 ..= 2p + 2`,
    /// with `scratch` for kernels that need working memory (shared: one row at a time).
    fn pooled_row(
        &self,
        window: &[Self::Act],
        p: usize,
        out: &mut [Self::Act],
        sink: RowSink,
        scratch: &mut [u32],
    );
}

/// A streamed conv layer and its input window.
pub(crate) struct Stage<'b, K: RowKernel> {
    pub layer: K,
    pub window: &'b mut [K::Act],
}

/// Copies `src` into `dst` (as much as fits) eight values at a time: fixed-size copies become
/// load/store-multiple instructions, about a third of the cost of a `memmove` call here.
fn copy_values<T: Copy>(dst: &mut [T], src: &[T]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let [a, b, c, e, f, g, h, i] = [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]];
        d[0] = a;
        d[1] = b;
        d[2] = c;
        d[3] = e;
        d[4] = f;
        d[5] = g;
        d[6] = h;
        d[7] = i;
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Computes pooled row `p` of the last of `stages` into `out` as `sink` says, first filling its
/// window with the input rows it needs: from the image for the first conv layer, else by
/// producing them with the stages before it. Rows must be asked for in order, from 0.
pub(crate) fn produce_row<K: RowKernel>(
    stages: &mut [Stage<'_, K>],
    (p, image): (usize, &[u8]),
    out: &mut [K::Act],
    sink: RowSink,
    scratch: &mut [u32],
    probe: &mut impl Probe,
) {
    let Some((stage, lower)) = stages.split_last_mut() else {
        return;
    };
    let index = lower.len();
    let shape = *stage.layer.shape();
    let (slot, pw, w) = (shape.slot_len(), shape.padded_width(), shape.width);
    probe.layer_start(index);
    // Window slot s holds input row 2p − 1 + s: rows 2p − 1 and 2p were the last two slots.
    let first_new = match stage.window.split_at_mut_checked(2 * slot) {
        Some((kept, newer)) if p > 0 => {
            copy_values(kept, newer);
            2
        }
        _ => 0,
    };
    for s in first_new..4 {
        let row = (2 * p + s).checked_sub(1).filter(|&r| r < shape.height);
        let Some(dst) = stage.window.get_mut(s * slot..(s + 1) * slot) else {
            return;
        };
        match row {
            None => dst.fill(K::ZERO),
            Some(r) if lower.is_empty() => {
                // The image, channel-major: channel ci's row r starts at (ci·h + r)·w.
                // A padded row is never empty (`max(1)`: no panic path either way).
                for (ci, d) in dst.chunks_exact_mut(pw.max(1)).enumerate() {
                    let start = (ci * shape.height + r) * w;
                    let src = image.get(start..start + w).unwrap_or(&[]);
                    for (d, &px) in d.iter_mut().skip(1).zip(src) {
                        *d = K::pixel(px);
                    }
                }
            }
            Some(r) => {
                probe.layer_end(index);
                let into = RowSink {
                    base: s * slot + 1,
                    stride: pw,
                };
                produce_row(lower, (r, image), stage.window, into, scratch, probe);
                probe.layer_start(index);
            }
        }
    }
    stage.layer.pooled_row(stage.window, p, out, sink, scratch);
    probe.layer_end(index);
}

/// With no conv layer, the image goes to `map` as the first linear layer (`first`) reads it:
/// channel-major, or row-major across channels for a `*_hcw` layer.
pub(crate) fn image_into_map<T>(
    input: Shape3,
    first: Option<LayerKind>,
    image: &[u8],
    map: &mut [T],
    pixel: impl Fn(u8) -> T,
) {
    let hcw = matches!(
        first,
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
        if let Some(dst) = map.get_mut(at) {
            *dst = pixel(px);
        }
    }
}

/// Every pooled row of the last of `stages` into `map`, channel-major (the whole feature map,
/// for a linear layer that does not take it row by row).
pub(crate) fn rows_into_map<K: RowKernel>(
    stages: &mut [Stage<'_, K>],
    image: &[u8],
    map: &mut [K::Act],
    scratch: &mut [u32],
    probe: &mut impl Probe,
) {
    let Some(last) = stages.last().map(|s| *s.layer.shape()) else {
        return;
    };
    let (h, w) = (last.height / 2, last.width / 2);
    for p in 0..h {
        let sink = RowSink {
            base: p * w,
            stride: h * w,
        };
        produce_row(stages, (p, image), map, sink, scratch, probe);
    }
}

/// An image of the network's input size and a logits slice of its output size, or the error
/// that names which is wrong.
pub(crate) fn check_io(
    network: &Network<'_>,
    image: usize,
    logits: usize,
) -> Result<(), EngineError> {
    let expected = network.input.len();
    if image != expected {
        return Err(EngineError::InputSize {
            expected,
            found: image,
        });
    }
    let classes = network.output().len();
    if logits != classes {
        return Err(EngineError::OutputSize {
            expected: classes,
            found: logits,
        });
    }
    Ok(())
}
