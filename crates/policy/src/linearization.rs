//! [`MlpLinearization`]: an MLP linearised at fixed parameters and inputs,
//! for Jacobian-vector and vector-Jacobian products without candle's graph.

use candle_core::{DType, Device, Storage, Tensor};

use crate::error::{Context, PolicyError, Result};
use crate::host::{to_host, to_tensor, HostFloat};
use crate::mlp::{split_flat, Activation, Linear, LinearTangent};
use crate::mlp_host::{HostLayer, HostLinearization};
use crate::mlp_tensor::TensorLinearization;

/// The MLP linearised at fixed parameters and inputs: everything the
/// Jacobian-vector product `J v` and the vector-Jacobian product `Jᵀ u` need,
/// where `J = ∂f(x; θ)/∂θ` stacks the Jacobians of all N rows.
///
/// Built by [`crate::Mlp::linearize`]; reusable for many products
/// (conjugate gradient calls it ~10 times per TRPO update). It holds a copy
/// of the parameters, so it stays the linearisation at these parameters
/// even if the variables change later (e.g. during a line search).
///
/// On the CPU the passes run on host memory (`host.rs`, `mlp_host.rs`: direct
/// matrix products, one fused pass per layer for the bias and activation);
/// elsewhere in candle tensor ops. Both give the same bits.
#[derive(Debug, Clone)]
pub struct MlpLinearization {
    /// Widths: `sizes[0]` the input, `sizes[l + 1]` the output of layer l.
    sizes: Vec<usize>,
    /// Rows N.
    n: usize,
    imp: Imp,
}

#[derive(Debug, Clone)]
enum Imp {
    F32(HostLinearization<f32>),
    F64(HostLinearization<f64>),
    Tensor(TensorLinearization),
}

/// `$body` with `$h` bound to the host linearisation of either dtype, or
/// `$tensor` for the tensor one.
macro_rules! on_host {
    ($self:expr, $h:ident => $body:expr, $t:ident => $tensor:expr) => {
        match &$self.imp {
            Imp::F32($h) => $body,
            Imp::F64($h) => $body,
            Imp::Tensor($t) => $tensor,
        }
    };
}

impl MlpLinearization {
    /// The detached forward pass through `layers` (with `activation` between
    /// them) at `x [N, in]`, already checked against the network: the
    /// output `[N, out]` and the linearisation.
    pub(crate) fn new(
        layers: &[Linear],
        activation: Activation,
        x: &Tensor,
    ) -> Result<(Tensor, Self)> {
        let (n, sizes) = shape_of(layers, x);
        let device = x.device();
        let out_shape = [n, sizes[sizes.len() - 1]];
        let (out, imp) = match (x.dtype(), device.is_cpu()) {
            (DType::F32, true) => {
                let (out, h) = host_new::<f32>(layers, activation, x)?;
                (
                    to_tensor(out, &out_shape, device, "mlp linearize")?,
                    Imp::F32(h),
                )
            }
            (DType::F64, true) => {
                let (out, h) = host_new::<f64>(layers, activation, x)?;
                (
                    to_tensor(out, &out_shape, device, "mlp linearize")?,
                    Imp::F64(h),
                )
            }
            _ => {
                let (out, t) = TensorLinearization::new(layers, activation, x)?;
                (out, Imp::Tensor(t))
            }
        };
        Ok((out, MlpLinearization { sizes, n, imp }))
    }

    /// The tensor-op implementation on any device, CPU included: the
    /// oracle the host passes are tested against (`tests/host_linearization.rs`).
    #[doc(hidden)]
    pub fn with_tensor_ops(
        layers: &[Linear],
        activation: Activation,
        x: &Tensor,
    ) -> Result<(Tensor, Self)> {
        let (n, sizes) = shape_of(layers, x);
        let (out, t) = TensorLinearization::new(layers, activation, x)?;
        Ok((
            out,
            MlpLinearization {
                sizes,
                n,
                imp: Imp::Tensor(t),
            },
        ))
    }

    /// Number of rows N of the linearisation's input.
    pub fn batch_size(&self) -> usize {
        self.n
    }

    /// Number of parameters of the linearised network.
    pub fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    fn dtype(&self) -> DType {
        match &self.imp {
            Imp::F32(_) => DType::F32,
            Imp::F64(_) => DType::F64,
            Imp::Tensor(t) => t.features().dtype(),
        }
    }

    fn device(&self) -> Device {
        match &self.imp {
            Imp::Tensor(t) => t.features().device().clone(),
            _ => Device::Cpu,
        }
    }

    /// Splits a flat vector (order of [`crate::Mlp::vars`]) into per-layer
    /// tangents matching this linearisation.
    ///
    /// Errors: [`PolicyError::FlatLength`] for a wrong length.
    pub fn tangents_from_flat(&self, flat: &[f64]) -> Result<Vec<LinearTangent>> {
        let shapes: Vec<([usize; 2], [usize; 1])> = self
            .sizes
            .windows(2)
            .map(|w| ([w[1], w[0]], [w[1]]))
            .collect();
        let shapes: Vec<(&[usize], &[usize])> =
            shapes.iter().map(|(w, b)| (&w[..], &b[..])).collect();
        split_flat(flat, &shapes, self.dtype(), &self.device())
    }

    /// The head's input `z` at the linearisation point, `[N, features]` (see
    /// [`crate::Mlp::forward_with_features`]).
    ///
    /// Errors: [`PolicyError::Candle`] if the tensor cannot be built.
    pub fn features(&self) -> Result<Tensor> {
        let f = self.sizes[self.sizes.len() - 2];
        on_host!(self,
            h => to_tensor(h.inputs[h.inputs.len() - 1].clone(), &[self.n, f], &Device::Cpu, "mlp features"),
            t => Ok(t.features().clone()))
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
        on_host!(self,
            h => {
                let t = tangents
                    .iter()
                    .map(|t| Ok(HostLayer { w: to_host(&t.weight, "mlp jvp")?, b: to_host(&t.bias, "mlp jvp")? }))
                    .collect::<Result<Vec<_>>>()?;
                self.host_jvp_tensors(h.jvp(&t))
            },
            t => t.jvp_with_features(tangents))
    }

    /// [`MlpLinearization::jvp_with_features`] for a tangent given as a flat
    /// vector in the order of [`crate::Mlp::vars`] (what conjugate gradient
    /// holds), without building per-layer tensors on the CPU.
    ///
    /// Errors: [`PolicyError::FlatLength`] for a wrong length.
    pub fn jvp_flat(&self, flat: &[f64]) -> Result<(Tensor, Option<Tensor>)> {
        self.check_flat(flat)?;
        on_host!(self,
            h => self.host_jvp_tensors(h.jvp(&host_layers(&self.sizes, flat))),
            t => t.jvp_with_features(&self.tangents_from_flat(flat)?))
    }

    /// The host jvp's outputs as tensors.
    fn host_jvp_tensors<T: HostFloat>(
        &self,
        (d_out, d_features): (Vec<T>, Option<Vec<T>>),
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (out, f) = (
            self.sizes[self.sizes.len() - 1],
            self.sizes[self.sizes.len() - 2],
        );
        let d_out = to_tensor(d_out, &[self.n, out], &Device::Cpu, "mlp jvp")?;
        let d_features = d_features
            .map(|d| to_tensor(d, &[self.n, f], &Device::Cpu, "mlp jvp"))
            .transpose()?;
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
        self.check_cotangents(u, g)?;
        on_host!(self,
            h => h
                .vjp(to_host(u, "mlp vjp")?, host_opt(g)?.as_deref())
                .into_iter()
                .zip(self.sizes.windows(2))
                .map(|(l, w)| {
                    Ok(LinearTangent {
                        weight: to_tensor(l.w, &[w[1], w[0]], &Device::Cpu, "mlp vjp")?,
                        bias: to_tensor(l.b, &[w[1]], &Device::Cpu, "mlp vjp")?,
                    })
                })
                .collect(),
            t => t.vjp_with_features(u, g))
    }

    /// [`MlpLinearization::vjp_with_features`] appended to `out` as one flat
    /// f64 vector in the order of [`crate::Mlp::vars`] (what optimisers and
    /// conjugate gradient hold), without per-layer tensors on the CPU.
    ///
    /// Errors: as [`MlpLinearization::vjp_with_features`].
    pub fn vjp_flat_into(&self, u: &Tensor, g: Option<&Tensor>, out: &mut Vec<f64>) -> Result<()> {
        self.check_cotangents(u, g)?;
        let c = "mlp vjp";
        match &self.imp {
            Imp::F32(h) => {
                // The f32 gradient in one buffer, then widened in one pass.
                let mut flat = vec![0.0f32; h.num_params()];
                h.vjp_into(to_host(u, c)?, host_opt(g)?.as_deref(), &mut flat);
                out.extend(flat.iter().map(|&x| f64::from(x)));
            }
            Imp::F64(h) => {
                let start = out.len();
                out.resize(start + h.num_params(), 0.0);
                h.vjp_into(to_host(u, c)?, host_opt(g)?.as_deref(), &mut out[start..]);
            }
            Imp::Tensor(t) => {
                out.reserve(self.num_params());
                for l in t.vjp_with_features(u, g)? {
                    crate::flat::extend_f64(out, &l.weight)?;
                    crate::flat::extend_f64(out, &l.bias)?;
                }
            }
        }
        Ok(())
    }

    /// [`MlpLinearization::vjp_flat_into`] for an f32 CPU network, written
    /// into `out` (exactly [`MlpLinearization::num_params`] entries, its old
    /// values neither read nor kept) in f32, the precision it is computed
    /// in: each layer's products go straight into their place, with no
    /// widening pass and no zero-filling (half the memory of the f64
    /// vector for the optimiser to read).
    ///
    /// Errors: as [`MlpLinearization::vjp_with_features`];
    /// [`PolicyError::DType`] for a network that is not f32 on the CPU;
    /// [`PolicyError::FlatLength`] for an `out` of another length.
    pub fn vjp_flat_f32_into(&self, u: &Tensor, g: Option<&Tensor>, out: &mut [f32]) -> Result<()> {
        self.check_cotangents(u, g)?;
        let Imp::F32(h) = &self.imp else {
            return Err(PolicyError::DType {
                what: "vjp_flat_f32_into (an f32 CPU network)",
                expected: DType::F32,
                got: u.dtype(),
            });
        };
        if out.len() != h.num_params() {
            return Err(PolicyError::FlatLength {
                what: "vjp_flat_f32_into",
                expected: h.num_params(),
                got: out.len(),
            });
        }
        h.vjp_into(to_host(u, "mlp vjp")?, host_opt(g)?.as_deref(), out);
        Ok(())
    }

    fn check_flat(&self, flat: &[f64]) -> Result<()> {
        if flat.len() != self.num_params() {
            return Err(PolicyError::FlatLength {
                what: "mlp tangent",
                expected: self.num_params(),
                got: flat.len(),
            });
        }
        Ok(())
    }

    fn check_cotangents(&self, u: &Tensor, g: Option<&Tensor>) -> Result<()> {
        let n = self.n;
        let out = self.sizes[self.sizes.len() - 1];
        if u.dims() != [n, out] {
            return Err(PolicyError::Shape {
                what: "vjp cotangent",
                expected: format!("[{n}, {out}]"),
                got: u.dims().to_vec(),
            });
        }
        if let Some(g) = g {
            let f = self.sizes[self.sizes.len() - 2];
            if g.dims() != [n, f] {
                return Err(PolicyError::Shape {
                    what: "vjp feature cotangent",
                    expected: format!("[{n}, {f}]"),
                    got: g.dims().to_vec(),
                });
            }
        }
        Ok(())
    }

    fn check_tangents(&self, tangents: &[LinearTangent]) -> Result<()> {
        let layers = self.sizes.len() - 1;
        if tangents.len() != layers {
            return Err(PolicyError::Shape {
                what: "mlp tangents",
                expected: format!("{layers} layers"),
                got: vec![tangents.len()],
            });
        }
        for (w, t) in self.sizes.windows(2).zip(tangents) {
            if t.weight.dims() != [w[1], w[0]] || t.bias.dims() != [w[1]] {
                return Err(PolicyError::Shape {
                    what: "mlp tangent",
                    expected: format!("weight [{}, {}], bias [{}]", w[1], w[0], w[1]),
                    got: t.weight.dims().to_vec(),
                });
            }
        }
        Ok(())
    }
}

/// The forward pass of `layers` at `x` (checked) on host memory, reading
/// the parameters where they are stored: the output and, with
/// `keep_features`, the head's input; `None` for a network off the CPU.
pub(crate) fn host_forward(
    layers: &[Linear],
    activation: Activation,
    x: &Tensor,
    keep_features: bool,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    match (x.dtype(), x.device().is_cpu()) {
        (DType::F32, true) => {
            host_forward_as::<f32>(layers, activation, x, keep_features).map(Some)
        }
        (DType::F64, true) => {
            host_forward_as::<f64>(layers, activation, x, keep_features).map(Some)
        }
        _ => Ok(None),
    }
}

fn host_forward_as<T: HostFloat>(
    layers: &[Linear],
    activation: Activation,
    x: &Tensor,
    keep_features: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let c = "mlp forward";
    let n = x.dims()[0];
    let guards: Vec<_> = layers
        .iter()
        .flat_map(|l| {
            [
                l.weight().storage_and_layout(),
                l.bias().storage_and_layout(),
            ]
        })
        .collect();
    let slices = guards
        .iter()
        .map(
            |(storage, layout)| match (&**storage, layout.contiguous_offsets()) {
                (Storage::Cpu(cpu), Some((start, end))) => {
                    Ok(&cpu.as_slice::<T>().ctx(c)?[start..end])
                }
                _ => Err(PolicyError::InvalidParameter {
                    param: "layers",
                    reason: "a parameter that is not a contiguous CPU tensor".to_string(),
                }),
            },
        )
        .collect::<Result<Vec<&[T]>>>()?;
    let pairs: Vec<(&[T], &[T])> = slices.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let (out, features) =
        crate::mlp_host::forward(to_host(x, c)?, n, &pairs, activation, keep_features);
    drop(guards);
    let out_dim = layers[layers.len() - 1].out_features();
    let f = layers[layers.len() - 1].in_features();
    Ok((
        to_tensor(out, &[n, out_dim], x.device(), c)?,
        features
            .map(|z| to_tensor(z, &[n, f], x.device(), c))
            .transpose()?,
    ))
}

/// The rows N of `x` and the widths: the input's, then each layer's output.
fn shape_of(layers: &[Linear], x: &Tensor) -> (usize, Vec<usize>) {
    let mut sizes = vec![x.dims()[1]];
    sizes.extend(layers.iter().map(Linear::out_features));
    (x.dims()[0], sizes)
}

/// The host forward pass: copies the parameters and `x` to host memory.
fn host_new<T: HostFloat>(
    layers: &[Linear],
    activation: Activation,
    x: &Tensor,
) -> Result<(Vec<T>, HostLinearization<T>)> {
    let c = "mlp linearize";
    let host_layers = layers
        .iter()
        .map(|l| {
            Ok(HostLayer {
                w: to_host(l.weight().as_tensor(), c)?,
                b: to_host(l.bias().as_tensor(), c)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n = x.dims()[0];
    Ok(HostLinearization::new(
        to_host(x, c)?,
        n,
        host_layers,
        activation,
    ))
}

/// A flat f64 tangent split into host layers of `T`.
fn host_layers<T: HostFloat>(sizes: &[usize], flat: &[f64]) -> Vec<HostLayer<T>> {
    HostLayer::split(sizes, flat, T::narrow)
}

/// An optional tensor as host data.
fn host_opt<T: HostFloat>(g: Option<&Tensor>) -> Result<Option<Vec<T>>> {
    g.map(|g| to_host(g, "mlp vjp")).transpose()
}
