//! The network description carried in the metadata: the input's shape and the layer sequence.
//!
//! `input` is `CxHxW` (e.g. `1x28x28`). `layers` is a comma-separated list of
//! `name:kind:inputs:outputs`, where kind is `conv3x3_relu_maxpool2` (3x3 convolution, padding 1,
//! stride 1, then ReLU and 2x2 max-pool with stride 2; inputs/outputs are channels) or `linear` /
//! `linear_relu` (inputs/outputs are features; the input is the previous output flattened
//! channel-major, as PyTorch's `view(n, -1)`), or `linear_hcw` / `linear_relu_hcw` (format 1.1:
//! the same with the input flattened row-major across channels, `(y·C + c)·W + x`, so a
//! layer can consume a feature map row by row as it is produced).

use crate::error::Error;

pub const MAX_LAYERS: usize = 8;
pub const MAX_NAME_LEN: usize = 24;
/// Largest feature map (elements): keeps every size product within 32 bits.
pub const MAX_FEATURE_MAP: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayerKind {
    /// 3x3 convolution (padding 1), ReLU, 2x2 max-pool (stride 2).
    Conv3x3ReluMaxPool2,
    /// Fully connected, optionally followed by ReLU, on the input flattened in `order`.
    Linear { relu: bool, order: Flatten },
}

/// How a linear layer's input vector is read from a feature map `C x H x W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Flatten {
    /// Channel-major, `(c·H + y)·W + x` (PyTorch's `view(n, -1)`).
    Chw,
    /// Row-major across channels, `(y·C + c)·W + x`: each input row of every channel is one
    /// contiguous block of columns (format 1.1).
    Hcw,
}

impl LayerKind {
    pub fn name(self) -> &'static str {
        use Flatten::{Chw, Hcw};
        match self {
            LayerKind::Conv3x3ReluMaxPool2 => "conv3x3_relu_maxpool2",
            LayerKind::Linear {
                relu: false,
                order: Chw,
            } => "linear",
            LayerKind::Linear {
                relu: true,
                order: Chw,
            } => "linear_relu",
            LayerKind::Linear {
                relu: false,
                order: Hcw,
            } => "linear_hcw",
            LayerKind::Linear {
                relu: true,
                order: Hcw,
            } => "linear_relu_hcw",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let linear = |relu, order| LayerKind::Linear { relu, order };
        [
            LayerKind::Conv3x3ReluMaxPool2,
            linear(false, Flatten::Chw),
            linear(true, Flatten::Chw),
            linear(false, Flatten::Hcw),
            linear(true, Flatten::Hcw),
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }

    /// The format version that introduced this kind.
    pub fn since_minor_version(self) -> u32 {
        match self {
            LayerKind::Linear {
                order: Flatten::Hcw,
                ..
            } => 1,
            _ => 0,
        }
    }
}

/// A feature map's shape: channels, height, width (a vector is `n x 1 x 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape3 {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape3 {
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer, with the shapes it consumes and produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer<'a> {
    pub name: &'a str,
    pub kind: LayerKind,
    pub input: Shape3,
    pub output: Shape3,
}

impl Layer<'_> {
    /// Rows of the weight matrix: output channels or features.
    pub fn rows(&self) -> usize {
        self.output.channels
    }

    /// Columns of the weight matrix: `in_channels · 9` taps (`ci·9 + ky·3 + kx`) or input features.
    pub fn cols(&self) -> usize {
        match self.kind {
            LayerKind::Conv3x3ReluMaxPool2 => self.input.channels * 9,
            LayerKind::Linear { .. } => self.input.len(),
        }
    }

    /// The dense weight tensor's shape (PyTorch's layout) and rank.
    pub fn weight_shape(&self) -> ([usize; 4], usize) {
        match self.kind {
            LayerKind::Conv3x3ReluMaxPool2 => {
                ([self.output.channels, self.input.channels, 3, 3], 4)
            }
            LayerKind::Linear { .. } => ([self.output.channels, self.input.len(), 0, 0], 2),
        }
    }
}

/// The input shape and the layers, checked to chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network<'a> {
    pub input: Shape3,
    pub layers: heapless::Vec<Layer<'a>, MAX_LAYERS>,
}

/// What a layer of `kind` with `outputs` channels or features produces from `input`
/// (before any check: see [`Network::push`]).
pub const fn output_shape(kind: LayerKind, input: Shape3, outputs: usize) -> Shape3 {
    match kind {
        LayerKind::Conv3x3ReluMaxPool2 => Shape3 {
            channels: outputs,
            height: input.height / 2,
            width: input.width / 2,
        },
        LayerKind::Linear { .. } => Shape3 {
            channels: outputs,
            height: 1,
            width: 1,
        },
    }
}

/// What a layer of `kind` reading `input` declares as its inputs: channels for a convolution,
/// `C·H·W` features for a linear layer.
pub const fn declared_inputs(kind: LayerKind, input: Shape3) -> usize {
    match kind {
        LayerKind::Conv3x3ReluMaxPool2 => input.channels,
        LayerKind::Linear { .. } => input.channels * input.height * input.width,
    }
}

impl<'a> Network<'a> {
    pub fn output(&self) -> Shape3 {
        self.layers.last().map_or(self.input, |l| l.output)
    }

    /// An empty network on `input`, to [`push`](Self::push) layers onto.
    pub fn new(input: Shape3) -> Self {
        Network {
            input,
            layers: heapless::Vec::new(),
        }
    }

    /// Parses `input` (`CxHxW`) and `layers` and checks every layer's input against the
    /// previous layer's output.
    pub fn parse(input: &str, layers: &'a str) -> Result<Self, Error> {
        let input = parse_shape(input).ok_or(Error::BadNetwork { layer: 0 })?;
        let mut network = Network::new(input);
        for (index, spec) in fields(layers, b',').enumerate() {
            let bad = Error::BadNetwork { layer: index };
            let mut parts = fields(spec, b':');
            let mut next = || parts.next().ok_or(bad);
            let name = next()?;
            let kind = LayerKind::parse(next()?).ok_or(bad)?;
            let inputs = parse_dim(next()?).ok_or(bad)?;
            let outputs = parse_dim(next()?).ok_or(bad)?;
            if parts.next().is_some() {
                return Err(bad);
            }
            network.push(name, kind, inputs, outputs)?;
        }
        Ok(network)
    }

    /// Appends a layer after checking its name, its sizes and that `inputs` is what the previous
    /// layer (or the input) produces.
    pub fn push(
        &mut self,
        name: &'a str,
        kind: LayerKind,
        inputs: usize,
        outputs: usize,
    ) -> Result<(), Error> {
        let index = self.layers.len();
        let bad = Error::BadNetwork { layer: index };
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || self.layers.iter().any(|l| l.name == name)
            || !(1..=65536).contains(&outputs)
        {
            return Err(bad);
        }
        let current = self.output();
        let pools = current.height.is_multiple_of(2)
            && current.width.is_multiple_of(2)
            && current.height > 0;
        if inputs != declared_inputs(kind, current)
            || (kind == LayerKind::Conv3x3ReluMaxPool2 && !pools)
        {
            return Err(Error::NetworkMismatch { layer: index });
        }
        let output = output_shape(kind, current, outputs);
        if output.channels as u64 * output.height as u64 * output.width as u64
            > MAX_FEATURE_MAP as u64
        {
            return Err(bad);
        }
        self.layers
            .push(Layer {
                name,
                kind,
                input: current,
                output,
            })
            .map_err(|_| Error::TooManyEntries { max: MAX_LAYERS })
    }
}

/// A layer as code writes it: the inputs follow from the layer before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec<'a> {
    pub name: &'a str,
    pub kind: LayerKind,
    /// Output channels (convolution) or features (linear).
    pub outputs: usize,
}

/// A network as a constant (see [`crate::recipe::RECIPE`]): usable in `const` code, such as the
/// engine's memory bound the firmware sizes its buffers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSpec<'a> {
    pub input: Shape3,
    pub layers: &'a [LayerSpec<'a>],
}

impl<'a> NetworkSpec<'a> {
    /// The checked network (same checks as a file's description).
    pub fn network(&self) -> Result<Network<'a>, Error> {
        let mut network = Network::new(self.input);
        for l in self.layers {
            let inputs = declared_inputs(l.kind, network.output());
            network.push(l.name, l.kind, inputs, l.outputs)?;
        }
        Ok(network)
    }
}

/// Dimensions are 1..=65536: enough for any MCU model, and small enough that products of a few
/// of them cannot overflow `usize` on a 32-bit target.
fn parse_dim(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok().filter(|&d| (1..=65536).contains(&d))
}

/// The pieces of `s` between the ASCII byte `sep`, as `s.split(sep)` gives them. A byte scan:
/// `str::split`'s searcher took 360 bytes of the firmware's flash.
pub(crate) fn fields(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    core::iter::from_fn(move || {
        let s = rest?;
        match s.bytes().position(|b| b == sep) {
            // An ASCII byte is a character of its own: both sides are on char boundaries.
            Some(i) => {
                rest = s.get(i + 1..);
                s.get(..i)
            }
            None => rest.take(),
        }
    })
}

fn parse_shape(s: &str) -> Option<Shape3> {
    let mut it = fields(s, b'x');
    let shape = Shape3 {
        channels: parse_dim(it.next()?)?,
        height: parse_dim(it.next()?)?,
        width: parse_dim(it.next()?)?,
    };
    let elements = shape.channels as u64 * shape.height as u64 * shape.width as u64;
    (it.next().is_none() && elements <= MAX_FEATURE_MAP as u64).then_some(shape)
}

#[cfg(test)]
mod tests {
    use super::fields;
    use proptest::prelude::*;

    proptest! {
        /// `fields` splits as `str::split` does, empty pieces and non-ASCII text included.
        #[test]
        fn fields_split_as_str_split(s in "[a-cx:,.é]{0,12}", sep in prop::sample::select(vec![b',', b':', b'x', b'.'])) {
            let ours: Vec<&str> = fields(&s, sep).collect();
            let theirs: Vec<&str> = s.split(char::from(sep)).collect();
            prop_assert_eq!(ours, theirs);
        }
    }
}
