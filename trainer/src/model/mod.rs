//! The CNN in Candle, built from a network description ([`NetworkDef`]; the recipe's by
//! default), with PyTorch's parameter names and layouts.
//!
//! Each layer of the description becomes a weight and a bias named `<layer>.weight` and
//! `<layer>.bias`: conv weights `[out, in, 3, 3]`, linear weights `[out, in]`. The trainer always
//! flattens a feature map channel-major (`c·H·W + y·W + x`) as PyTorch does; a `*_hcw` layer
//! differs only in how export lays out its columns in the file.

pub mod conv;
pub mod gemm;
pub mod linear;
pub mod tensor_file;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use model_format::{LayerKind, NetworkDef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Metadata keys of a saved model that hold its network (the file format's own syntax).
const INPUT_KEY: &str = "input";
const LAYERS_KEY: &str = "layers";

/// Name and shape of every parameter of `network`, in network order (weight, then bias).
pub fn param_shapes(network: &NetworkDef) -> Vec<(String, Vec<usize>)> {
    network
        .layers()
        .iter()
        .flat_map(|l| {
            let (shape, rank) = l.weight_shape();
            [
                (format!("{}.weight", l.name), shape[..rank].to_vec()),
                (format!("{}.bias", l.name), vec![l.rows()]),
            ]
        })
        .collect()
}

/// How many parameters `network` has (421,642 for the recipe).
pub fn param_count(network: &NetworkDef) -> usize {
    param_shapes(network)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

pub fn is_weight(name: &str) -> bool {
    name.ends_with(".weight")
}

/// One layer's trainable parameters (shared with [`Cnn::params`]: a `Var` clone is the same
/// storage).
struct LayerVars {
    kind: LayerKind,
    weight: Var,
    bias: Var,
}

impl LayerVars {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (w, b) = (self.weight.as_tensor(), self.bias.as_tensor());
        match self.kind {
            LayerKind::Conv3x3ReluMaxPool2 => crate::model::conv::conv3x3_relu_pool(x, w, b),
            LayerKind::Linear { relu, .. } => {
                let flat = if x.rank() > 2 {
                    x.flatten_from(1)?
                } else {
                    x.clone()
                };
                crate::model::linear::linear(&flat, w, b, relu)
            }
        }
    }
}

/// The CNN's parameters as trainable variables, laid out by its network.
pub struct Cnn {
    network: NetworkDef,
    layers: Vec<LayerVars>,
    params: Vec<(String, Var)>,
}

impl Cnn {
    /// The recipe's CNN, initialised from `seed` (see [`Cnn::seeded`]).
    pub fn new_seeded(seed: u64, device: &Device) -> Result<Self> {
        Self::seeded(&NetworkDef::recipe(), seed, device)
    }

    /// PyTorch's default initialisation (uniform in ±1/sqrt(fan_in) for weights and biases),
    /// drawn from a seeded ChaCha8 stream in parameter order so a seed reproduces a run exactly.
    pub fn seeded(network: &NetworkDef, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for layer in network.layers() {
            let (shape, rank) = layer.weight_shape();
            let bound = 1.0 / (layer.cols() as f32).sqrt();
            let mut draw = |shape: &[usize]| -> Result<Tensor> {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                Ok(Tensor::from_vec(values, shape, device)?)
            };
            tensors.insert(format!("{}.weight", layer.name), draw(&shape[..rank])?);
            tensors.insert(format!("{}.bias", layer.name), draw(&[layer.rows()])?);
        }
        Self::from_tensors(network, &tensors)
    }

    /// Builds the model of `network` from named tensors, checking every name and shape.
    pub fn from_tensors(network: &NetworkDef, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let shapes = param_shapes(network);
        let mut params = Vec::new();
        for (name, shape) in &shapes {
            let t = tensors
                .get(name)
                .with_context(|| format!("model has no tensor {name} (network: {network})"))?;
            if t.dims() != shape.as_slice() {
                bail!("{name} has shape {:?}, expected {shape:?}", t.dims());
            }
            let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
            params.push((name.clone(), var));
        }
        if let Some(extra) = tensors
            .keys()
            .find(|k| !shapes.iter().any(|(n, _)| n == *k))
        {
            bail!("unexpected tensor {extra} in model (network: {network})");
        }
        Ok(Self::assemble(network.clone(), params))
    }

    /// Groups `params` (weight, bias per layer, in network order) into layers.
    fn assemble(network: NetworkDef, params: Vec<(String, Var)>) -> Self {
        let layers = network
            .layer_defs()
            .iter()
            .zip(params.chunks_exact(2))
            .map(|(def, pair)| LayerVars {
                kind: def.kind,
                weight: pair[0].1.clone(),
                bias: pair[1].1.clone(),
            })
            .collect();
        Cnn {
            network,
            layers,
            params,
        }
    }

    pub fn network(&self) -> &NetworkDef {
        &self.network
    }

    /// A copy of the model in another float type (f64 for precise gradient checks).
    pub fn with_dtype(&self, dtype: DType) -> Result<Self> {
        let params = self
            .params
            .iter()
            .map(|(n, v)| {
                Ok((
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self::assemble(self.network.clone(), params))
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    pub fn param(&self, name: &str) -> Option<&Var> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Copies of all parameters, by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Values of all parameters as f32 vectors, in network order.
    pub fn to_vecs(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    /// Logits for a batch `(n, C, H, W)` of the network's input shape → `(n, classes)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// Every layer's output (the last one is the logits), for calibrating quantization.
    pub fn forward_layers(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut outputs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let input = outputs.last().unwrap_or(x);
            outputs.push(layer.forward(input)?);
        }
        Ok(outputs)
    }

    /// The parameters as host tensors, in network order.
    pub fn to_named(&self) -> Result<Vec<crate::model::tensor_file::NamedTensor>> {
        self.params
            .iter()
            .map(|(name, v)| {
                Ok(crate::model::tensor_file::NamedTensor {
                    name: name.clone(),
                    shape: v.dims().to_vec(),
                    values: v.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                })
            })
            .collect()
    }

    /// Overwrites the parameters named in `values` (as [`Cnn::to_vecs`] returns them) in place.
    pub fn set_values(&self, values: &[(String, Vec<f32>)]) -> Result<()> {
        for (name, vals) in values {
            let var = self
                .param(name)
                .with_context(|| format!("no parameter {name}"))?;
            var.set(&Tensor::from_vec(vals.clone(), var.dims(), var.device())?)?;
        }
        Ok(())
    }

    /// A model with the same network and new values, given by name (as [`Cnn::to_vecs`]
    /// returns).
    pub fn with_values(&self, values: Vec<(String, Vec<f32>)>) -> Result<Self> {
        let named: Vec<_> = param_shapes(&self.network)
            .into_iter()
            .map(|(name, shape)| {
                let values = values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .with_context(|| format!("no values for {name}"))?;
                Ok(crate::model::tensor_file::NamedTensor {
                    name,
                    shape,
                    values,
                })
            })
            .collect::<Result<_>>()?;
        Self::from_named(&self.network, &named, &Device::Cpu)
    }

    /// Builds the model of `network` from host tensors (any order; names and shapes checked).
    pub fn from_named(
        network: &NetworkDef,
        tensors: &[crate::model::tensor_file::NamedTensor],
        device: &Device,
    ) -> Result<Self> {
        let map = tensors
            .iter()
            .map(|t| {
                Ok((
                    t.name.clone(),
                    Tensor::from_vec(t.values.clone(), t.shape.as_slice(), device)?,
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Self::from_tensors(network, &map)
    }

    /// Saves the model as a plain safetensors state dict (PyTorch names) with metadata, its
    /// network included (`input`, `layers`).
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        let mut metadata = metadata.clone();
        let (input, layers) = self.network.describe();
        metadata.insert(INPUT_KEY.into(), input);
        metadata.insert(LAYERS_KEY.into(), layers);
        crate::model::tensor_file::save(path, &self.to_named()?, &metadata)
    }

    /// Loads a model saved by [`Cnn::save`], or any f32 state dict of the recipe's CNN (a file
    /// without a network description is taken to be the recipe's).
    pub fn load(path: &Path, device: &Device) -> Result<(Self, BTreeMap<String, String>)> {
        let (tensors, meta) = crate::model::tensor_file::load(path)?;
        let network = match (meta.get(INPUT_KEY), meta.get(LAYERS_KEY)) {
            (Some(input), Some(layers)) => NetworkDef::parse(input, layers).map_err(|e| {
                anyhow::anyhow!("{}: network description invalid: {e}", path.display())
            })?,
            _ => NetworkDef::recipe(),
        };
        let model = Self::from_named(&network, &tensors, device)
            .with_context(|| format!("{}: not a model of its network", path.display()))?;
        Ok((model, meta))
    }
}
