//! A multilayer perceptron built from candle [`Var`]s it owns, with a
//! forward-mode tangent pass (J·v) and a hand-written reverse pass (Jᵀ·u)
//! used by the Fisher-vector product and the policy gradients (through
//! [`MlpLinearization`]).

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::error::{Context, PolicyError, Result};
use crate::flat::{check_float_dtype, tensor_from_f64};
use crate::init::{orthogonal, GAIN_HIDDEN};
use crate::linearization::host_forward;
pub use crate::linearization::MlpLinearization;

/// The nonlinearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `tanh` (default): the choice of Schulman et al. (TRPO, PPO) and of
    /// CleanRL / SB3 for classic control.
    #[default]
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// Shape of an MLP's hidden part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlpConfig {
    /// Widths of the hidden layers, input side first. Default `[64, 64]`
    /// (PPO paper §6.1, Huang et al. for classic control). May be empty (a
    /// linear model); every width must be ≥ 1.
    pub hidden: Vec<usize>,
    /// Nonlinearity after each hidden layer. Default [`Activation::Tanh`].
    pub activation: Activation,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: vec![64, 64],
            activation: Activation::Tanh,
        }
    }
}

/// One affine layer `y = x Wᵀ + b`, with `W` of shape `[out, in]` (torch's
/// and candle-nn's layout) and `b` of shape `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    /// A layer with orthogonal weights times `gain` (see [`crate::init`]) and zero bias.
    ///
    /// - `in_features`, `out_features`: sizes, both ≥ 1.
    /// - `gain`: scale of the orthogonal weights.
    /// - `dtype`: F32 or F64; `device`: where the parameters live.
    /// - `rng`: random source for the weights.
    pub fn new<R: Rng + ?Sized>(
        in_features: usize,
        out_features: usize,
        gain: f64,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        check_float_dtype(dtype)?;
        if in_features == 0 || out_features == 0 {
            return Err(PolicyError::InvalidParameter {
                param: "layer size",
                reason: format!(
                    "a layer of {in_features} → {out_features} features; sizes must be ≥ 1"
                ),
            });
        }
        let w = orthogonal(out_features, in_features, gain, rng);
        let w = tensor_from_f64(&w, &[out_features, in_features], dtype, device)?;
        let b = Tensor::zeros(out_features, dtype, device).ctx("linear bias")?;
        Ok(Linear {
            weight: Var::from_tensor(&w).ctx("linear weight")?,
            bias: Var::from_tensor(&b).ctx("linear bias")?,
        })
    }

    /// A layer from existing variables (shared with another network when cloned).
    ///
    /// Errors: [`PolicyError::Shape`] unless `weight` is `[out, in]` and `bias` is `[out]`.
    pub fn from_vars(weight: Var, bias: Var) -> Result<Self> {
        let (out, _) = weight.dims2().map_err(|_| PolicyError::Shape {
            what: "linear weight",
            expected: "[out, in]".to_string(),
            got: weight.dims().to_vec(),
        })?;
        if bias.dims() != [out] {
            return Err(PolicyError::Shape {
                what: "linear bias",
                expected: format!("[{out}]"),
                got: bias.dims().to_vec(),
            });
        }
        Ok(Linear { weight, bias })
    }

    /// The weight `W`, shape `[out, in]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias `b`, shape `[out]`.
    pub fn bias(&self) -> &Var {
        &self.bias
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// A tangent (or cotangent) of one [`Linear`] layer's parameters: `dW` of
/// shape `[out, in]`, `db` of shape `[out]`.
///
/// Used both as the direction `v` of a Jacobian-vector product and as the
/// result `Jᵀu` of a vector-Jacobian product.
#[derive(Debug, Clone)]
pub struct LinearTangent {
    /// `dW`, shape `[out, in]`.
    pub weight: Tensor,
    /// `db`, shape `[out]`.
    pub bias: Tensor,
}

/// A multilayer perceptron: affine layers with an [`Activation`] between
/// them and none after the last (the head).
///
/// Parameter order (for [`Mlp::vars`] and flat vectors): layer 0 weight,
/// layer 0 bias, layer 1 weight, layer 1 bias, ..., the head last.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
    dtype: DType,
    device: Device,
}

impl Mlp {
    /// An MLP `in_dim → config.hidden… → out_dim`, orthogonally initialised:
    /// hidden layers with gain √2, the head with `head_gain`, biases 0.
    ///
    /// - `in_dim`, `out_dim`: input and output widths, ≥ 1.
    /// - `config`: hidden widths and activation ([`MlpConfig::default`]: 64-64 tanh).
    /// - `head_gain`: [`crate::init::GAIN_POLICY_HEAD`] (0.01) for a policy,
    ///   [`crate::init::GAIN_VALUE_HEAD`] (1.0) for a value function.
    /// - `dtype`: F32 (default elsewhere in the crate) or F64.
    /// - `device`: where the parameters live (`Device::Cpu`, or a CUDA device
    ///   with the `cuda` feature).
    /// - `rng`: random source; layers are drawn input side first.
    pub fn new<R: Rng + ?Sized>(
        in_dim: usize,
        out_dim: usize,
        config: &MlpConfig,
        head_gain: f64,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        check_float_dtype(dtype)?;
        if let Some(i) = config.hidden.iter().position(|&h| h == 0) {
            return Err(PolicyError::InvalidParameter {
                param: "hidden",
                reason: format!("hidden layer {i} has width 0; widths must be ≥ 1"),
            });
        }
        let mut sizes = vec![in_dim];
        sizes.extend(&config.hidden);
        sizes.push(out_dim);
        let n = sizes.len() - 1;
        let layers = (0..n)
            .map(|i| {
                let gain = if i + 1 == n { head_gain } else { GAIN_HIDDEN };
                Linear::new(sizes[i], sizes[i + 1], gain, dtype, device, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp {
            layers,
            activation: config.activation,
            dtype,
            device: device.clone(),
        })
    }

    /// An MLP from existing layers (e.g. a value head on a policy's trunk, see
    /// [`crate::ValueNet::with_shared_trunk`]).
    ///
    /// Errors: [`PolicyError::InvalidParameter`] for no layers, widths that do
    /// not chain, or layers of different dtypes.
    pub fn from_layers(layers: Vec<Linear>, activation: Activation) -> Result<Self> {
        let Some(first) = layers.first() else {
            return Err(PolicyError::InvalidParameter {
                param: "layers",
                reason: "an MLP needs at least one layer".to_string(),
            });
        };
        let dtype = first.weight.dtype();
        let device = first.weight.device().clone();
        check_float_dtype(dtype)?;
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[0].out_features() != pair[1].in_features() {
                return Err(PolicyError::InvalidParameter {
                    param: "layers",
                    reason: format!(
                        "layer {i} has {} outputs but layer {} has {} inputs",
                        pair[0].out_features(),
                        i + 1,
                        pair[1].in_features()
                    ),
                });
            }
        }
        for l in &layers {
            if l.weight.dtype() != dtype || l.bias.dtype() != dtype {
                return Err(PolicyError::InvalidParameter {
                    param: "layers",
                    reason: "all layers must have the same dtype".to_string(),
                });
            }
        }
        Ok(Mlp {
            layers,
            activation,
            dtype,
            device,
        })
    }

    /// The layers, input side first; the last is the head.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The activation between layers.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.layers[0].in_features()
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.layers[self.layers.len() - 1].out_features()
    }

    /// Element type of the parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device of the parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters in flat order: layer 0 weight, layer 0 bias, ..., head bias.
    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| [l.weight.clone(), l.bias.clone()])
            .collect()
    }

    /// The parameters with their names `{prefix}.{i}.weight`, `{prefix}.{i}.bias`.
    pub fn named_vars(&self, prefix: &str) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    (format!("{prefix}.{i}.weight"), l.weight.clone()),
                    (format!("{prefix}.{i}.bias"), l.bias.clone()),
                ]
            })
            .collect()
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.elem_count() + l.bias.elem_count())
            .sum()
    }

    /// Checks that `x` is `[N, in_dim]`, N ≥ 1, of the network's dtype.
    pub(crate) fn check_input(&self, x: &Tensor) -> Result<usize> {
        let in_dim = self.in_dim();
        match x.dims() {
            &[n, d] if d == in_dim && n > 0 => {
                if x.dtype() != self.dtype {
                    return Err(PolicyError::DType {
                        what: "observations",
                        expected: self.dtype,
                        got: x.dtype(),
                    });
                }
                Ok(n)
            }
            got => Err(PolicyError::Shape {
                what: "observations",
                expected: format!("[N, {in_dim}] (N ≥ 1 states × observation width)"),
                got: got.to_vec(),
            }),
        }
    }

    /// The differentiable forward pass: `x [N, in_dim] → [N, out_dim]`.
    ///
    /// Errors: [`PolicyError::Shape`] / [`PolicyError::DType`] for a wrong
    /// input (including an empty batch, N = 0).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            let z = h
                .matmul(&l.weight.t().ctx("mlp forward")?)
                .and_then(|z| z.broadcast_add(&l.bias))
                .ctx("mlp forward")?;
            h = if i < last {
                activate(&z, self.activation).ctx("mlp forward")?
            } else {
                z
            };
        }
        Ok(h)
    }

    /// The differentiable forward pass that also returns the head's input
    /// `z(x)`, `[N, features]`: the last hidden layer's activations (the
    /// observations themselves when there is no hidden layer). gSDE's noise and
    /// variance are built on these features (Raffin et al. 2021, §3).
    ///
    /// Errors: as [`Mlp::forward`].
    pub fn forward_with_features(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(x)?;
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for l in &self.layers[..last] {
            let z = h
                .matmul(&l.weight.t().ctx("mlp forward")?)
                .and_then(|z| z.broadcast_add(&l.bias))
                .ctx("mlp forward")?;
            h = activate(&z, self.activation).ctx("mlp forward")?;
        }
        let head = &self.layers[last];
        let out = h
            .matmul(&head.weight.t().ctx("mlp forward")?)
            .and_then(|z| z.broadcast_add(&head.bias))
            .ctx("mlp forward")?;
        Ok((out, h))
    }

    /// [`Mlp::forward`] without a gradient graph: the same values, bit for
    /// bit, computed on host memory for a CPU network (no candle op per
    /// layer), for acting, evaluating and measuring KL.
    ///
    /// Errors: as [`Mlp::forward`].
    pub fn forward_detached(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        match host_forward(&self.layers, self.activation, x, false)? {
            Some((out, _)) => Ok(out),
            None => Ok(self.forward(x)?.detach()),
        }
    }

    /// [`Mlp::forward_with_features`] without a gradient graph (see
    /// [`Mlp::forward_detached`]).
    ///
    /// Errors: as [`Mlp::forward`].
    pub fn forward_with_features_detached(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(x)?;
        match host_forward(&self.layers, self.activation, x, true)? {
            Some((out, Some(features))) => Ok((out, features)),
            _ => {
                let (out, features) = self.forward_with_features(x)?;
                Ok((out.detach(), features.detach()))
            }
        }
    }

    /// Width of the head's input (the features of
    /// [`Mlp::forward_with_features`]).
    pub fn feature_dim(&self) -> usize {
        self.layers[self.layers.len() - 1].in_features()
    }

    /// A detached forward pass that keeps what the tangent and reverse passes
    /// need: returns the output `[N, out_dim]` (no gradient graph) and an
    /// [`MlpLinearization`] at the current parameters.
    ///
    /// The linearisation holds a copy of the parameters, so it stays the
    /// linearisation at these parameters even if the variables change later
    /// (e.g. during a line search).
    pub fn linearize(&self, x: &Tensor) -> Result<(Tensor, MlpLinearization)> {
        self.check_input(x)?;
        MlpLinearization::new(&self.layers, self.activation, x)
    }

    /// Forward-mode tangent pass: the output `f(x; θ)` and its directional
    /// derivative `d_out = J v = ∂f/∂θ · v` for the parameter direction
    /// `tangents` (one [`LinearTangent`] per layer). Neither output carries a
    /// gradient graph. See [`MlpLinearization::jvp`] for the recurrences.
    pub fn jvp(&self, x: &Tensor, tangents: &[LinearTangent]) -> Result<(Tensor, Tensor)> {
        let (out, lin) = self.linearize(x)?;
        let d_out = lin.jvp(tangents)?;
        Ok((out, d_out))
    }

    /// Splits a flat vector (order of [`Mlp::vars`]) into per-layer tensors of
    /// the network's dtype and device.
    ///
    /// Errors: [`PolicyError::FlatLength`] if `flat.len() != num_params()`.
    pub fn tangents_from_flat(&self, flat: &[f64]) -> Result<Vec<LinearTangent>> {
        let shapes: Vec<(&[usize], &[usize])> = self
            .layers
            .iter()
            .map(|l| (l.weight.dims(), l.bias.dims()))
            .collect();
        split_flat(flat, &shapes, self.dtype, &self.device)
    }
}

/// Splits `flat` into one [`LinearTangent`] per `(weight shape, bias shape)`.
pub(crate) fn split_flat(
    flat: &[f64],
    shapes: &[(&[usize], &[usize])],
    dtype: DType,
    device: &Device,
) -> Result<Vec<LinearTangent>> {
    let expected: usize = shapes
        .iter()
        .map(|(w, b)| w.iter().product::<usize>() + b.iter().product::<usize>())
        .sum();
    if flat.len() != expected {
        return Err(PolicyError::FlatLength {
            what: "mlp tangent",
            expected,
            got: flat.len(),
        });
    }
    let mut offset = 0;
    let mut take = |shape: &[usize]| {
        let k: usize = shape.iter().product();
        let t = tensor_from_f64(&flat[offset..offset + k], shape, dtype, device);
        offset += k;
        t
    };
    shapes
        .iter()
        .map(|(w, b)| {
            Ok(LinearTangent {
                weight: take(w)?,
                bias: take(b)?,
            })
        })
        .collect()
}

/// `σ(z)`.
pub(crate) fn activate(z: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Tanh => crate::tanh::tanh(z),
        Activation::Relu => z.relu(),
    }
}

/// `σ'(z)` given `z` and `a = σ(z)`.
pub(crate) fn activation_derivative(
    z: &Tensor,
    a: &Tensor,
    activation: Activation,
) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Tanh => a.sqr()?.affine(-1.0, 1.0),
        // [z ≥ 0]: candle's convention for the derivative at 0 (its
        // backprop.rs), so the hand-written passes and autograd agree exactly.
        Activation::Relu => z.ge(0.0)?.to_dtype(z.dtype()),
    }
}
