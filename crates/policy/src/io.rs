//! Saving and loading parameters as safetensors files
//! (<https://huggingface.co/docs/safetensors>).
//!
//! Loading is all-or-nothing: every tensor the network needs must be in the
//! file with the network's exact shape and dtype, and the file must hold
//! nothing else; only then are the variables assigned. A mismatch is a typed
//! error naming the tensor and both shapes (or dtypes), and the network is
//! left unchanged.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{Tensor, Var};

use crate::error::{Context, PolicyError, Result};

/// Writes `vars` to `path` under their names (values copied bit for bit).
///
/// Errors: [`PolicyError::File`] if the file cannot be written.
pub fn save_vars(path: &Path, vars: &[(String, Var)]) -> Result<()> {
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(name, v)| (name.clone(), v.as_detached_tensor()))
        .collect();
    candle_core::safetensors::save(&tensors, path).map_err(|source| PolicyError::File {
        path: path.display().to_string(),
        source,
    })
}

/// Reads `path` and assigns its tensors to `vars` by name.
///
/// Errors (nothing is assigned in any of these cases):
/// [`PolicyError::File`] if the file cannot be read or parsed;
/// [`PolicyError::MissingTensor`], [`PolicyError::UnexpectedTensor`],
/// [`PolicyError::TensorShape`], [`PolicyError::TensorDType`] for a file
/// that does not match the network; [`PolicyError::NonFiniteTensor`] for a
/// tensor holding a NaN or an infinity (a network that would only fail later
/// with a "non-finite loss").
pub fn load_vars(path: &Path, vars: &[(String, Var)]) -> Result<()> {
    let p = path.display().to_string();
    let device = vars
        .first()
        .map_or(candle_core::Device::Cpu, |(_, v)| v.device().clone());
    let mut file =
        candle_core::safetensors::load(path, &device).map_err(|source| PolicyError::File {
            path: p.clone(),
            source,
        })?;
    let known: BTreeSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut extra: Vec<&String> = file
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(PolicyError::UnexpectedTensor {
            path: p,
            name: (*name).clone(),
            known: known.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let mut values = Vec::with_capacity(vars.len());
    for (name, var) in vars {
        let Some(t) = file.remove(name) else {
            return Err(PolicyError::MissingTensor {
                path: p,
                name: name.clone(),
            });
        };
        if t.dims() != var.dims() {
            return Err(PolicyError::TensorShape {
                path: p,
                name: name.clone(),
                network: var.dims().to_vec(),
                file: t.dims().to_vec(),
            });
        }
        if t.dtype() != var.dtype() {
            return Err(PolicyError::TensorDType {
                path: p,
                name: name.clone(),
                network: var.dtype(),
                file: t.dtype(),
            });
        }
        let host = crate::flat::tensor_to_f64(&t)?;
        if let Some(index) = host.iter().position(|x| !x.is_finite()) {
            return Err(PolicyError::NonFiniteTensor {
                path: p,
                name: name.clone(),
                index,
                value: host[index],
            });
        }
        values.push(t);
    }
    for ((name, var), t) in vars.iter().zip(&values) {
        var.set(t).ctx(&format!("loading `{name}` from {p}"))?;
    }
    Ok(())
}
