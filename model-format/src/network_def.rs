//! The network description as an owned value (host only): what the trainer builds its model
//! from, stores beside its weights and hands to the writer.

use crate::error::Error;
use crate::network::{declared_inputs, Layer, LayerKind, Network, NetworkSpec, Shape3};

/// One layer: name, kind and sizes as in the file's `layers` metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDef {
    pub name: String,
    pub kind: LayerKind,
    pub inputs: usize,
    pub outputs: usize,
}

/// A network: the input shape and the layers, checked to chain when it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    input: Shape3,
    layers: Vec<LayerDef>,
}

impl NetworkDef {
    /// Checks that `layers` chain from `input` (the same checks a file's description gets).
    pub fn new(input: Shape3, layers: Vec<LayerDef>) -> Result<Self, Error> {
        let def = NetworkDef { input, layers };
        def.network()?;
        Ok(def)
    }

    /// The reference recipe's CNN ([`crate::recipe::RECIPE`]).
    pub fn recipe() -> Self {
        // The recipe is a valid network (tested).
        Self::from_spec(&crate::recipe::RECIPE).unwrap_or_else(|_| unreachable!())
    }

    pub fn from_spec(spec: &NetworkSpec<'_>) -> Result<Self, Error> {
        let network = spec.network()?;
        Ok(Self::from_network(&network))
    }

    pub fn from_network(network: &Network<'_>) -> Self {
        NetworkDef {
            input: network.input,
            layers: network
                .layers
                .iter()
                .map(|l| LayerDef {
                    name: l.name.to_string(),
                    kind: l.kind,
                    inputs: declared_inputs(l.kind, l.input),
                    outputs: l.output.channels,
                })
                .collect(),
        }
    }

    /// Parses the `input` (`CxHxW`) and `layers` metadata syntax (SPEC §3).
    pub fn parse(input: &str, layers: &str) -> Result<Self, Error> {
        Ok(Self::from_network(&Network::parse(input, layers)?))
    }

    pub fn input(&self) -> Shape3 {
        self.input
    }

    pub fn layer_defs(&self) -> &[LayerDef] {
        &self.layers
    }

    /// The checked network, with every layer's input and output shapes.
    pub fn network(&self) -> Result<Network<'_>, Error> {
        let mut network = Network::new(self.input);
        for l in &self.layers {
            network.push(&l.name, l.kind, l.inputs, l.outputs)?;
        }
        Ok(network)
    }

    /// The layers with their shapes (the description was checked when it was made).
    pub fn layers(&self) -> Vec<Layer<'_>> {
        self.network()
            .map(|n| n.layers.into_iter().collect())
            .unwrap_or_default()
    }

    /// The `input` and `layers` metadata strings.
    pub fn describe(&self) -> (String, String) {
        let i = self.input;
        let input = format!("{}x{}x{}", i.channels, i.height, i.width);
        let layers = self
            .layers
            .iter()
            .map(|l| format!("{}:{}:{}:{}", l.name, l.kind.name(), l.inputs, l.outputs))
            .collect::<Vec<_>>()
            .join(",");
        (input, layers)
    }

    /// Logits the network produces.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(self.input.len(), |l| l.outputs)
    }
}

impl std::fmt::Display for NetworkDef {
    /// `input=CxHxW layers=...`, the metadata syntax.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (input, layers) = self.describe();
        write!(f, "input {input}, layers {layers}")
    }
}
