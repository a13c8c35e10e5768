//! The MLP's linearisation in candle tensor ops: the implementation for
//! networks off the CPU (CUDA), and the oracle the host passes of
//! [`crate::mlp_host`] are tested against bit for bit. The recurrences are
//! documented on [`crate::MlpLinearization`].

use candle_core::Tensor;

use crate::error::{Context, PolicyError, Result};
use crate::mlp::{activate, activation_derivative, Activation, Linear, LinearTangent};

/// Everything `J v` and `Jᵀ u` need, as tensors.
#[derive(Debug, Clone)]
pub(crate) struct TensorLinearization {
    /// `(W_l, b_l)` copied at linearisation time.
    weights: Vec<(Tensor, Tensor)>,
    /// Input of each layer: `h_0 = x`, `h_l = σ(z_l)`.
    inputs: Vec<Tensor>,
    /// `σ'(z_l)` of each hidden layer: `1 − h²` (tanh) or `[z ≥ 0]` (relu).
    dact: Vec<Tensor>,
    /// `[1, N]` of ones, for row sums by matmul.
    ones: Tensor,
}

impl TensorLinearization {
    /// The detached forward pass through `layers` at `x [N, in]`: the output
    /// and the linearisation.
    pub fn new(layers: &[Linear], activation: Activation, x: &Tensor) -> Result<(Tensor, Self)> {
        let c = "mlp linearize";
        let weights = layers
            .iter()
            .map(|l| {
                Ok((
                    l.weight().as_detached_tensor().copy().ctx(c)?,
                    l.bias().as_detached_tensor().copy().ctx(c)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let last = weights.len() - 1;
        let mut inputs = Vec::with_capacity(weights.len());
        let mut dact = Vec::with_capacity(last);
        let mut h = x.detach();
        for (i, (w, b)) in weights.iter().enumerate() {
            let z = h
                .matmul(&w.t().ctx(c)?)
                .and_then(|z| z.broadcast_add(b))
                .ctx(c)?;
            inputs.push(h);
            h = if i < last {
                let a = activate(&z, activation).ctx(c)?;
                dact.push(activation_derivative(&z, &a, activation).ctx(c)?);
                a
            } else {
                z
            };
        }
        let ones = Tensor::ones((1, x.dims()[0]), x.dtype(), x.device()).ctx(c)?;
        Ok((
            h,
            TensorLinearization {
                weights,
                inputs,
                dact,
                ones,
            },
        ))
    }

    /// The head's input at the linearisation point.
    pub fn features(&self) -> &Tensor {
        &self.inputs[self.inputs.len() - 1]
    }

    /// `J v` and the tangent of the features (shapes checked by the caller).
    pub fn jvp_with_features(
        &self,
        tangents: &[LinearTangent],
    ) -> Result<(Tensor, Option<Tensor>)> {
        let c = "mlp jvp";
        let last = self.weights.len() - 1;
        let mut d: Option<Tensor> = None;
        let mut d_features = None;
        for (l, ((w, _), t)) in self.weights.iter().zip(tangents).enumerate() {
            let mut dz = self.inputs[l]
                .matmul(&t.weight.t().ctx(c)?)
                .and_then(|z| z.broadcast_add(&t.bias))
                .ctx(c)?;
            if let Some(dh) = d {
                dz = dh.matmul(&w.t().ctx(c)?).and_then(|x| x + dz).ctx(c)?;
                if l == last {
                    d_features = Some(dh);
                }
            }
            if l < last {
                dz = (dz * &self.dact[l]).ctx(c)?;
            }
            d = Some(dz);
        }
        let d_out = d.ok_or_else(|| PolicyError::InvalidParameter {
            param: "layers",
            reason: "empty MLP".to_string(),
        })?;
        Ok((d_out, d_features))
    }

    /// `Jᵀ u + J_zᵀ g` (shapes checked by the caller).
    pub fn vjp_with_features(&self, u: &Tensor, g: Option<&Tensor>) -> Result<Vec<LinearTangent>> {
        let c = "mlp vjp";
        let last = self.weights.len() - 1;
        let mut grads = Vec::with_capacity(self.weights.len());
        let mut delta = u.clone();
        for l in (0..self.weights.len()).rev() {
            let gw = delta.t().and_then(|d| d.matmul(&self.inputs[l])).ctx(c)?;
            // Σ_rows δ as ones[1, N] · δ: candle's sum over dim 0 is strided
            // and ~40× slower than this matmul for N = 2048.
            let gb = self.ones.matmul(&delta).and_then(|g| g.squeeze(0)).ctx(c)?;
            if l > 0 {
                let mut back = delta.matmul(&self.weights[l].0).ctx(c)?;
                if let (true, Some(g)) = (l == last, g) {
                    back = (back + g).ctx(c)?;
                }
                delta = (back * &self.dact[l - 1]).ctx(c)?;
            }
            grads.push(LinearTangent {
                weight: gw,
                bias: gb,
            });
        }
        grads.reverse();
        Ok(grads)
    }
}
