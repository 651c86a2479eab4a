//! What an int8 model computes (SPEC §4.1), written as plainly as possible: whole feature maps,
//! every tap of every weight, no streaming, no sparsity. It is the reference the engine's int8
//! kernels are tested against and the trainer's int8 evaluation, so "the engine agrees with the
//! quantized model" means agreement with this definition.

use crate::network::{Flatten, LayerKind};
use crate::network_def::NetworkDef;
use crate::quant::{requantize_i32, requantize_u8};
use crate::writer::QuantizedLayer;
use std::collections::HashMap;

/// The logits of `image` (bytes, channel-major) through the quantized layers of `net`, `None`
/// if a layer is missing, mis-sized, or the image is not the network's input size.
pub fn int8_logits(
    net: &NetworkDef,
    layers: &HashMap<String, QuantizedLayer>,
    image: &[u8],
) -> Option<Vec<i32>> {
    let network = net.network().ok()?;
    if image.len() != network.input.len() {
        return None;
    }
    let mut map = image.to_vec();
    let last = network.layers.len().checked_sub(1)?;
    for (i, layer) in network.layers.iter().enumerate() {
        let q = layers.get(layer.name)?;
        let rows = layer.rows();
        let per_row_lens = [q.bias.len(), q.multiplier.len(), q.shift.len()];
        if q.weights.len() != rows * layer.cols() || per_row_lens.iter().any(|&n| n != rows) {
            return None;
        }
        let acc = match layer.kind {
            LayerKind::Conv3x3ReluMaxPool2 => {
                let (c, h, w) = (layer.input.channels, layer.input.height, layer.input.width);
                conv_pool_acc(q, &map, (c, h, w))
            }
            LayerKind::Linear { order, .. } => {
                let x = match order {
                    Flatten::Chw => map.clone(),
                    Flatten::Hcw => to_hcw(&map, layer.input),
                };
                linear_acc(q, &x)
            }
        };
        // One requantization per output, with its row's (channel's) multiplier.
        let per_row = acc.len() / layer.rows();
        let row = |k: usize| k / per_row.max(1);
        if i == last {
            return Some(
                acc.iter()
                    .enumerate()
                    .map(|(k, &a)| requantize_i32(a, q.multiplier[row(k)], q.shift[row(k)]))
                    .collect(),
            );
        }
        map = acc
            .iter()
            .enumerate()
            .map(|(k, &a)| requantize_u8(a, q.multiplier[row(k)], q.shift[row(k)]))
            .collect();
    }
    None
}

/// Conv (bias included) then the max of each 2x2 block, as accumulators, channel-major. Weight
/// by weight over the whole map (zero weights add nothing and are passed over).
fn conv_pool_acc(q: &QuantizedLayer, input: &[u8], (c, h, w): (usize, usize, usize)) -> Vec<i32> {
    let outs = q.bias.len();
    let mut out = Vec::with_capacity(outs * (h / 2) * (w / 2));
    let mut conv = vec![0i32; h * w];
    for co in 0..outs {
        conv.fill(q.bias[co]);
        for ci in 0..c {
            let plane = &input[ci * h * w..(ci + 1) * h * w];
            for (k, &wt) in q.weights[(co * c + ci) * 9..][..9].iter().enumerate() {
                if wt == 0 {
                    continue;
                }
                // Output (y, x) reads input (y + ky − 1, x + kx − 1) where that is inside.
                let (dy, dx) = (k / 3, k % 3);
                for y in (1usize.saturating_sub(dy))..(h + 1 - dy).min(h) {
                    let iy = y + dy - 1;
                    for x in (1usize.saturating_sub(dx))..(w + 1 - dx).min(w) {
                        conv[y * w + x] += i32::from(wt) * i32::from(plane[iy * w + x + dx - 1]);
                    }
                }
            }
        }
        for py in 0..h / 2 {
            for px in 0..w / 2 {
                let at = |y: usize, x: usize| conv[(2 * py + y) * w + 2 * px + x];
                out.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    out
}

/// `W·x + b`, one accumulator per row.
fn linear_acc(q: &QuantizedLayer, x: &[u8]) -> Vec<i32> {
    q.weights
        .chunks_exact(x.len().max(1))
        .zip(&q.bias)
        .map(|(row, &b)| {
            row.iter()
                .zip(x)
                .fold(b, |s, (&w, &v)| s + i32::from(w) * i32::from(v))
        })
        .collect()
}

/// A channel-major map flattened row-major across channels, `(y·C + c)·W + x`.
fn to_hcw(map: &[u8], shape: crate::network::Shape3) -> Vec<u8> {
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let mut out = vec![0u8; map.len()];
    for ci in 0..c {
        for y in 0..h {
            for x in 0..w {
                out[(y * c + ci) * w + x] = map[(ci * h + y) * w + x];
            }
        }
    }
    out
}

/// Random int8 layers for `net`, for testing kernels against [`int8_logits`]: weights anywhere
/// in −127..=127 (each kept with probability `density`), biases within ±10,000, and each row's
/// requantization scaled so that typical outputs spread over the byte range. The same `seed`
/// gives the same layers.
pub fn random_layers(net: &NetworkDef, density: f64, seed: u64) -> HashMap<String, QuantizedLayer> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut layers = HashMap::new();
    for layer in net.layers() {
        let (rows, cols) = (layer.rows(), layer.cols());
        let weights: Vec<i8> = (0..rows * cols)
            .map(|_| {
                let keep = (next() % 10_000) as f64 / 10_000.0 < density;
                let v = (next() % 255) as i32 - 127;
                if keep {
                    v as i8
                } else {
                    0
                }
            })
            .collect();
        // Typical accumulator ~ 127 · 128 · sqrt(non-zeros per row): scale that to ~100.
        let per_row = (density * cols as f64).max(1.0);
        let real = 100.0 / (127.0 * 128.0 * per_row.sqrt());
        let mut requant = || {
            let factor = real * (0.5 + (next() % 1000) as f64 / 1000.0);
            crate::quant::multiplier_for(factor).unwrap_or((1 << 30, 40))
        };
        let (multiplier, shift) = (0..rows).map(|_| requant()).unzip();
        let bias = (0..rows)
            .map(|_| (next() % 20_001) as i32 - 10_000)
            .collect();
        let q = QuantizedLayer {
            weights,
            bias,
            output_scale: 0.01,
            multiplier,
            shift,
        };
        layers.insert(layer.name.to_string(), q);
    }
    layers
}
