//! The reference recipe's CNN, with PyTorch's parameter names and layouts.
//!
//! conv1 1→32 3x3 pad 1 → ReLU → maxpool 2 → conv2 32→64 3x3 pad 1 → ReLU → maxpool 2 →
//! fc1 3136→128 → ReLU → fc2 128→10. Conv weights are `[out, in, 3, 3]`, linear weights
//! `[out, in]`, and the flatten before fc1 is channel-major (`c·49 + y·7 + x`), as in PyTorch.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// Name and shape of every parameter, in the order of the network.
pub const PARAM_SHAPES: [(&str, &[usize]); 8] = [
    ("conv1.weight", &[32, 1, 3, 3]),
    ("conv1.bias", &[32]),
    ("conv2.weight", &[64, 32, 3, 3]),
    ("conv2.bias", &[64]),
    ("fc1.weight", &[128, 3136]),
    ("fc1.bias", &[128]),
    ("fc2.weight", &[10, 128]),
    ("fc2.bias", &[10]),
];

/// 421,642: the recipe's parameter count.
pub fn param_count() -> usize {
    PARAM_SHAPES
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

pub fn is_weight(name: &str) -> bool {
    name.ends_with(".weight")
}

/// The CNN's parameters as trainable variables, in network order.
pub struct Cnn {
    params: Vec<(String, Var)>,
}

impl Cnn {
    /// PyTorch's default initialisation (uniform in ±1/sqrt(fan_in) for weights and biases),
    /// drawn from a seeded ChaCha8 stream so a seed reproduces a run exactly.
    pub fn new_seeded(seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::new();
        for (name, shape) in PARAM_SHAPES {
            let fan_in: usize = match shape {
                [_, rest @ ..] if is_weight(name) => rest.iter().product(),
                _ => fan_in_of_layer(name),
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?;
            params.push((name.to_string(), var));
        }
        Ok(Cnn { params })
    }

    /// Builds the model from named tensors, checking every name and shape.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let mut params = Vec::new();
        for (name, shape) in PARAM_SHAPES {
            let t = tensors
                .get(name)
                .with_context(|| format!("model has no tensor {name}"))?;
            if t.dims() != shape {
                bail!("{name} has shape {:?}, expected {shape:?}", t.dims());
            }
            params.push((
                name.to_string(),
                Var::from_tensor(&t.to_dtype(DType::F32)?)?,
            ));
        }
        if let Some(extra) = tensors
            .keys()
            .find(|k| !PARAM_SHAPES.iter().any(|(n, _)| n == k))
        {
            bail!("unexpected tensor {extra} in model");
        }
        Ok(Cnn { params })
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
        Ok(Cnn { params })
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

    fn p(&self, i: usize) -> &Tensor {
        self.params[i].1.as_tensor()
    }

    /// Logits for a batch `(n, 1, 28, 28)` → `(n, 10)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
            crate::conv::conv3x3_relu_pool(x, w, b)
        };
        let x = conv(x, self.p(0), self.p(1))?;
        let x = conv(&x, self.p(2), self.p(3))?;
        let x = x.flatten_from(1)?;
        let x = crate::linear::linear(&x, self.p(4), self.p(5), true)?;
        crate::linear::linear(&x, self.p(6), self.p(7), false)
    }
}

fn fan_in_of_layer(bias_name: &str) -> usize {
    let layer = bias_name.trim_end_matches(".bias");
    PARAM_SHAPES
        .iter()
        .find(|(n, _)| n.strip_suffix(".weight") == Some(layer))
        .map(|(_, s)| s[1..].iter().product())
        .unwrap_or(1)
}

impl Cnn {
    /// The parameters as host tensors, in network order.
    pub fn to_named(&self) -> Result<Vec<crate::tensor_file::NamedTensor>> {
        self.to_vecs()?
            .into_iter()
            .zip(PARAM_SHAPES)
            .map(|((name, values), (_, shape))| {
                Ok(crate::tensor_file::NamedTensor {
                    name,
                    shape: shape.to_vec(),
                    values,
                })
            })
            .collect()
    }

    /// A model with the same shapes and new values, given by name (as [`Cnn::to_vecs`] returns).
    pub fn with_values(&self, values: Vec<(String, Vec<f32>)>) -> Result<Self> {
        let named: Vec<_> = PARAM_SHAPES
            .iter()
            .map(|(name, shape)| {
                let values = values
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .with_context(|| format!("no values for {name}"))?;
                Ok(crate::tensor_file::NamedTensor {
                    name: name.to_string(),
                    shape: shape.to_vec(),
                    values,
                })
            })
            .collect::<Result<_>>()?;
        Self::from_named(&named, &Device::Cpu)
    }

    /// Builds the model from host tensors (any order; names and shapes checked).
    pub fn from_named(
        tensors: &[crate::tensor_file::NamedTensor],
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
        Self::from_tensors(&map)
    }

    /// Saves the model as a plain safetensors state dict (PyTorch names) with metadata.
    pub fn save(
        &self,
        path: &std::path::Path,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        crate::tensor_file::save(path, &self.to_named()?, metadata)
    }

    /// Loads a model saved by [`Cnn::save`] (or any f32 state dict with the recipe's names).
    pub fn load(
        path: &std::path::Path,
        device: &Device,
    ) -> Result<(Self, std::collections::BTreeMap<String, String>)> {
        let (tensors, meta) = crate::tensor_file::load(path)?;
        let model = Self::from_named(&tensors, device)
            .with_context(|| format!("{}: not a model of the recipe's CNN", path.display()))?;
        Ok((model, meta))
    }
}
