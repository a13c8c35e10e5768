//! A multilayer perceptron built from candle [`Var`]s it owns, with a
//! forward-mode tangent pass (J·v) and a hand-written reverse pass (Jᵀ·u)
//! used by the Fisher-vector product.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::error::{Context, PolicyError, Result};
use crate::flat::{check_float_dtype, tensor_from_f64};
use crate::init::{orthogonal, GAIN_HIDDEN};

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
        let c = "mlp linearize";
        let weights = self
            .layers
            .iter()
            .map(|l| {
                Ok((
                    l.weight.as_detached_tensor().copy().ctx(c)?,
                    l.bias.as_detached_tensor().copy().ctx(c)?,
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
                let a = activate(&z, self.activation).ctx(c)?;
                dact.push(activation_derivative(&z, &a, self.activation).ctx(c)?);
                a
            } else {
                z
            };
        }
        let ones = Tensor::ones((1, x.dims()[0]), self.dtype, &self.device).ctx(c)?;
        Ok((
            h,
            MlpLinearization {
                weights,
                inputs,
                dact,
                ones,
            },
        ))
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
fn split_flat(
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

/// The MLP linearised at fixed parameters and inputs: everything the
/// Jacobian-vector product `J v` and the vector-Jacobian product `Jᵀ u` need,
/// where `J = ∂f(x; θ)/∂θ` stacks the Jacobians of all N rows.
///
/// Built by [`Mlp::linearize`]; reusable for many products (conjugate
/// gradient calls it ~10 times per TRPO update).
#[derive(Debug, Clone)]
pub struct MlpLinearization {
    /// `(W_l, b_l)` copied at linearisation time.
    weights: Vec<(Tensor, Tensor)>,
    /// Input of each layer: `h_0 = x`, `h_l = σ(z_l)`.
    inputs: Vec<Tensor>,
    /// `σ'(z_l)` of each hidden layer: `1 − h²` (tanh) or `[z ≥ 0]` (relu).
    dact: Vec<Tensor>,
    /// `[1, N]` of ones, for row sums by matmul.
    ones: Tensor,
}

impl MlpLinearization {
    /// Number of rows N of the linearisation's input.
    pub fn batch_size(&self) -> usize {
        self.inputs[0].dims()[0]
    }

    /// Splits a flat vector (order of [`Mlp::vars`]) into per-layer tangents
    /// matching this linearisation.
    ///
    /// Errors: [`PolicyError::FlatLength`] for a wrong length.
    pub fn tangents_from_flat(&self, flat: &[f64]) -> Result<Vec<LinearTangent>> {
        let shapes: Vec<(&[usize], &[usize])> = self
            .weights
            .iter()
            .map(|(w, b)| (w.dims(), b.dims()))
            .collect();
        let w = &self.weights[0].0;
        split_flat(flat, &shapes, w.dtype(), w.device())
    }

    /// Number of parameters of the linearised network.
    pub fn num_params(&self) -> usize {
        self.weights
            .iter()
            .map(|(w, b)| w.elem_count() + b.elem_count())
            .sum()
    }

    /// The head's input `z` at the linearisation point, `[N, features]` (see
    /// [`Mlp::forward_with_features`]).
    pub fn features(&self) -> &Tensor {
        &self.inputs[self.inputs.len() - 1]
    }

    /// `J v`: propagates the parameter tangent `tangents` forward.
    ///
    /// Per layer (Baydin et al. 2018, "Automatic differentiation in machine
    /// learning: a survey", §3.1): `dz_l = dh_{l−1} W_lᵀ + h_{l−1} dW_lᵀ + db_l`
    /// with `dh_0 = 0` (the input does not depend on θ), then `dh_l = σ'(z_l) ⊙ dz_l`:
    /// `(1 − h_l²) ⊙ dz_l` for tanh, `[z_l ≥ 0] ⊙ dz_l` for relu. Returns
    /// `dz` of the head, shape `[N, out_dim]`.
    ///
    /// Errors: [`PolicyError::Shape`] if the tangents do not match the layers.
    pub fn jvp(&self, tangents: &[LinearTangent]) -> Result<Tensor> {
        self.jvp_with_features(tangents).map(|(d_out, _)| d_out)
    }

    /// [`MlpLinearization::jvp`] that also returns the tangent of the
    /// features `dz` (`[N, features]`), or `None` when there is no hidden
    /// layer (the features are then the observations, whose tangent is 0).
    ///
    /// Errors: as [`MlpLinearization::jvp`].
    pub fn jvp_with_features(
        &self,
        tangents: &[LinearTangent],
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.check_tangents(tangents)?;
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
        // weights is non-empty (an Mlp has at least one layer).
        let d_out = d.ok_or_else(|| PolicyError::InvalidParameter {
            param: "layers",
            reason: "empty MLP".to_string(),
        })?;
        Ok((d_out, d_features))
    }

    /// `Jᵀ u`: back-propagates the output cotangent `u [N, out_dim]` to the parameters.
    ///
    /// Per layer, from the head down, with `δ_L = u`: `∂W_l = δ_lᵀ h_{l−1}`,
    /// `∂b_l = Σ_rows δ_l`, `δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})`. This is the
    /// gradient of `Σ f(x; θ) ⊙ u` that `backward()` would give, computed
    /// without building a graph.
    ///
    /// Errors: [`PolicyError::Shape`] if `u` is not `[N, out_dim]`.
    pub fn vjp(&self, u: &Tensor) -> Result<Vec<LinearTangent>> {
        self.vjp_with_features(u, None)
    }

    /// `Jᵀ u + J_zᵀ g`: [`MlpLinearization::vjp`] with an extra cotangent
    /// `g [N, features]` at the features (the head's input), added to
    /// `δ_L W_L` before the last hidden layer's `σ'` (a function of the
    /// outputs and the features, as gSDE's variance with `learn_features`).
    /// With no hidden layer the features are the observations and `g` is
    /// dropped.
    ///
    /// Errors: [`PolicyError::Shape`] if `u` is not `[N, out_dim]` or `g`
    /// not `[N, features]`.
    pub fn vjp_with_features(&self, u: &Tensor, g: Option<&Tensor>) -> Result<Vec<LinearTangent>> {
        let n = self.batch_size();
        let out = self.weights[self.weights.len() - 1].0.dims()[0];
        if u.dims() != [n, out] {
            return Err(PolicyError::Shape {
                what: "vjp cotangent",
                expected: format!("[{n}, {out}]"),
                got: u.dims().to_vec(),
            });
        }
        if let Some(g) = g {
            let f = self.features().dims()[1];
            if g.dims() != [n, f] {
                return Err(PolicyError::Shape {
                    what: "vjp feature cotangent",
                    expected: format!("[{n}, {f}]"),
                    got: g.dims().to_vec(),
                });
            }
        }
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

    fn check_tangents(&self, tangents: &[LinearTangent]) -> Result<()> {
        if tangents.len() != self.weights.len() {
            return Err(PolicyError::Shape {
                what: "mlp tangents",
                expected: format!("{} layers", self.weights.len()),
                got: vec![tangents.len()],
            });
        }
        for ((w, b), t) in self.weights.iter().zip(tangents) {
            if t.weight.dims() != w.dims() || t.bias.dims() != b.dims() {
                return Err(PolicyError::Shape {
                    what: "mlp tangent",
                    expected: format!("weight {:?}, bias {:?}", w.dims(), b.dims()),
                    got: t.weight.dims().to_vec(),
                });
            }
        }
        Ok(())
    }
}

/// `σ(z)`.
fn activate(z: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Tanh => crate::tanh::tanh(z),
        Activation::Relu => z.relu(),
    }
}

/// `σ'(z)` given `z` and `a = σ(z)`.
fn activation_derivative(
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
