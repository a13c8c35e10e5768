//! The diagonal Gaussian policy for continuous actions, with a
//! state-independent log standard deviation (Schulman et al. 2015, TRPO §8;
//! Spinning Up's `MLPGaussianActor`).

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::categorical::ActionMask;
use crate::error::{Context, PolicyError, Result};
use crate::fisher::FisherOperator;
use crate::flat::tensor_to_f64;
use crate::init::GAIN_POLICY_HEAD;
use crate::mlp::{Mlp, MlpConfig};
use crate::policy::{Dist, Policy};
use crate::pullback::OutputPullback;

/// `ln(2π)`.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A batch of N diagonal Gaussians `N(μ_s, diag(σ²))` over d-dimensional
/// actions, with a log standard deviation shared by all states.
#[derive(Debug, Clone)]
pub struct DiagGaussian {
    mean: Tensor,
    log_std: Tensor,
}

impl DiagGaussian {
    /// The distributions with means `mean [N, d]` and log standard deviations
    /// `log_std [d]` (shared by all N states). Both are copied (the copies
    /// stay in the gradient graph), so later changes to the variables they
    /// came from do not change the distribution.
    ///
    /// Errors: [`PolicyError::Shape`] unless the shapes are `[N, d]` and `[d]`,
    /// [`PolicyError::DType`] if their dtypes differ.
    pub fn new(mean: &Tensor, log_std: &Tensor) -> Result<Self> {
        let d = match mean.dims() {
            &[_, d] if d >= 1 => d,
            got => {
                return Err(PolicyError::Shape {
                    what: "mean",
                    expected: "[N, d] with d ≥ 1".to_string(),
                    got: got.to_vec(),
                })
            }
        };
        if log_std.dims() != [d] {
            return Err(PolicyError::Shape {
                what: "log_std",
                expected: format!("[{d}]"),
                got: log_std.dims().to_vec(),
            });
        }
        crate::flat::check_float_dtype(mean.dtype())?;
        if log_std.dtype() != mean.dtype() {
            return Err(PolicyError::DType {
                what: "log_std",
                expected: mean.dtype(),
                got: log_std.dtype(),
            });
        }
        // Own copies (still differentiable): a tensor that shares storage with
        // a Var would change when the Var is set, and `detach()` must give a
        // snapshot (π_old) that survives a parameter update.
        Ok(DiagGaussian {
            mean: mean.copy().ctx("gaussian mean")?,
            log_std: log_std.copy().ctx("gaussian log_std")?,
        })
    }

    /// Means `[N, d]`.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// Log standard deviations `[d]`.
    pub fn log_std(&self) -> &Tensor {
        &self.log_std
    }

    /// Number of states N.
    pub fn batch_size(&self) -> usize {
        self.mean.dims()[0]
    }

    /// Action dimension d.
    pub fn action_dim(&self) -> usize {
        self.mean.dims()[1]
    }

    /// `log N(a; μ, σ²) = −½ Σ_j ((a_j − μ_j)/σ_j)² − Σ_j log σ_j − (d/2) ln 2π`, `[N]`.
    ///
    /// - `actions`: `[N, d]` of the distribution's dtype.
    ///
    /// Errors: [`PolicyError::Shape`] / [`PolicyError::DType`] for a wrong tensor.
    pub fn log_prob(&self, actions: &Tensor) -> Result<Tensor> {
        if actions.dims() != self.mean.dims() {
            return Err(PolicyError::Shape {
                what: "actions",
                expected: format!("{:?} (states × action dimension)", self.mean.dims()),
                got: actions.dims().to_vec(),
            });
        }
        if actions.dtype() != self.mean.dtype() {
            return Err(PolicyError::DType {
                what: "actions",
                expected: self.mean.dtype(),
                got: actions.dtype(),
            });
        }
        let c = "gaussian log_prob";
        let d = self.action_dim() as f64;
        let inv_std = self.log_std.neg().and_then(|x| x.exp()).ctx(c)?;
        let z = (actions - &self.mean)
            .and_then(|x| x.broadcast_mul(&inv_std))
            .ctx(c)?;
        let norm = self
            .log_std
            .sum_all()
            .and_then(|s| s.affine(1.0, 0.5 * d * LN_2PI))
            .ctx(c)?;
        z.sqr()
            .and_then(|x| x.sum(1))
            .and_then(|x| x.affine(-0.5, 0.0))
            .and_then(|x| x.broadcast_sub(&norm))
            .ctx(c)
    }

    /// Entropy `Σ_j log σ_j + (d/2)(1 + ln 2π)`, the same for every state, `[N]`.
    pub fn entropy(&self) -> Result<Tensor> {
        let d = self.action_dim() as f64;
        self.log_std
            .sum_all()
            .and_then(|s| s.affine(1.0, 0.5 * d * (1.0 + LN_2PI)))
            .and_then(|s| s.broadcast_as(self.batch_size()))
            .ctx("gaussian entropy")
    }

    /// Exact `KL(self ‖ other)` per state, `[N]`:
    /// `Σ_j [log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½]`.
    ///
    /// Errors: [`PolicyError::Mismatch`] for different N or d.
    pub fn kl(&self, other: &DiagGaussian) -> Result<Tensor> {
        if self.mean.dims() != other.mean.dims() {
            return Err(PolicyError::Mismatch {
                reason: format!(
                    "KL between Gaussian batches of shapes {:?} and {:?}",
                    self.mean.dims(),
                    other.mean.dims()
                ),
            });
        }
        let c = "gaussian kl";
        // 1 / (2σ_q²) = ½ exp(−2 log σ_q)
        let half_inv_var_q = other
            .log_std
            .affine(-2.0, 0.0)
            .and_then(|x| x.exp())
            .and_then(|x| x.affine(0.5, 0.0))
            .ctx(c)?;
        // state-independent part: Σ_j log σ_q − log σ_p + σ_p²/(2σ_q²) − ½
        let var_p = self.log_std.affine(2.0, 0.0).and_then(|x| x.exp()).ctx(c)?;
        let constant = (&other.log_std - &self.log_std)
            .and_then(|x| x + (var_p * &half_inv_var_q)?)
            .and_then(|x| x.affine(1.0, -0.5))
            .and_then(|x| x.sum_all())
            .ctx(c)?;
        (&self.mean - &other.mean)
            .and_then(|d| d.sqr())
            .and_then(|d| d.broadcast_mul(&half_inv_var_q))
            .and_then(|d| d.sum(1))
            .and_then(|d| d.broadcast_add(&constant))
            .ctx(c)
    }

    /// The same distributions without gradient graph (π_old in a KL).
    pub fn detach(&self) -> Self {
        DiagGaussian {
            mean: self.mean.detach(),
            log_std: self.log_std.detach(),
        }
    }

    /// Draws `a = μ + σ ⊙ ε`, `ε ~ N(0, I)` from `rng` (state-major, d values
    /// per state), on the host in f64, returned as f32 for the environment.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Vec<f32>> {
        let mean = tensor_to_f64(&self.mean)?;
        let std: Vec<f64> = tensor_to_f64(&self.log_std)?
            .into_iter()
            .map(f64::exp)
            .collect();
        let d = std.len();
        Ok(mean
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let eps: f64 = rng.sample(StandardNormal);
                (m + std[i % d] * eps) as f32
            })
            .collect())
    }

    /// The means, state-major, as f32 (the deterministic action).
    pub fn mode(&self) -> Result<Vec<f32>> {
        Ok(tensor_to_f64(&self.mean)?
            .into_iter()
            .map(|x| x as f32)
            .collect())
    }
}

/// A Gaussian policy `π(a | s) = N(f(s; θ), diag(exp(2 log_std)))`: an
/// [`Mlp`] gives the mean, and `log_std` is a learned vector that does not
/// depend on the state, initialised to 0 (σ = 1), as in TRPO §8, Spinning Up
/// and SB3.
///
/// Parameter order (flat vectors, [`Policy::vars`]): the MLP's layers
/// (weight, bias, input side first), then `log_std`; names
/// `policy.{i}.weight`, `policy.{i}.bias`, `policy.log_std`.
#[derive(Debug, Clone)]
pub struct DiagGaussianPolicy {
    mlp: Mlp,
    log_std: Var,
}

impl DiagGaussianPolicy {
    /// A policy for observations of width `obs_dim` and actions of dimension
    /// `action_dim`, orthogonally initialised (hidden gain √2, mean head gain
    /// 0.01, biases 0) with `log_std = 0`.
    ///
    /// - `obs_dim`: observation width, ≥ 1.
    /// - `action_dim`: action dimension d, ≥ 1.
    /// - `config`: hidden layers ([`MlpConfig::default`]: 64-64 tanh).
    /// - `dtype`: `DType::F32` (usual) or `DType::F64`.
    /// - `device`: `Device::Cpu`, or a CUDA device with the `cuda` feature.
    /// - `rng`: random source for the initial weights.
    pub fn new<R: Rng + ?Sized>(
        obs_dim: usize,
        action_dim: usize,
        config: &MlpConfig,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        let mlp = Mlp::new(
            obs_dim,
            action_dim,
            config,
            GAIN_POLICY_HEAD,
            dtype,
            device,
            rng,
        )?;
        let log_std = Var::zeros(action_dim, dtype, device).ctx("gaussian log_std")?;
        Ok(DiagGaussianPolicy { mlp, log_std })
    }

    /// The mean network.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// The log standard deviation `[d]`.
    pub fn log_std(&self) -> &Var {
        &self.log_std
    }
}

impl Policy for DiagGaussianPolicy {
    fn obs_dim(&self) -> usize {
        self.mlp.in_dim()
    }

    fn action_dim(&self) -> usize {
        self.mlp.out_dim()
    }

    fn dtype(&self) -> DType {
        self.mlp.dtype()
    }

    fn device(&self) -> &Device {
        self.mlp.device()
    }

    /// Errors also with [`PolicyError::Mask`] if a mask is given (a Gaussian
    /// policy has no discrete actions to mask).
    fn dist(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Dist> {
        reject_mask(mask)?;
        let mean = self.mlp.forward(obs)?;
        Ok(Dist::DiagGaussian(DiagGaussian::new(
            &mean,
            self.log_std.as_tensor(),
        )?))
    }

    /// Errors also with [`PolicyError::Mask`] if a mask is given.
    fn dist_with_pullback(
        &self,
        obs: &Tensor,
        mask: Option<&ActionMask>,
    ) -> Result<(Dist, OutputPullback)> {
        reject_mask(mask)?;
        let (mean, lin) = self.mlp.linearize(obs)?;
        let mean = crate::pullback::leaf(&mean)?;
        let log_std = crate::pullback::leaf(self.log_std.as_tensor())?;
        let dist = DiagGaussian::new(mean.as_tensor(), log_std.as_tensor())?;
        Ok((
            Dist::DiagGaussian(dist),
            OutputPullback::new(lin, mean, Some(log_std)),
        ))
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.mlp.named_vars("policy");
        v.push(("policy.log_std".to_string(), self.log_std.clone()));
        v
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = self.mlp.vars();
        v.push(self.log_std.clone());
        v
    }

    fn fisher(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<FisherOperator> {
        reject_mask(mask)?;
        FisherOperator::diag_gaussian(&self.mlp, self.log_std.as_tensor(), obs)
    }
}

fn reject_mask(mask: Option<&ActionMask>) -> Result<()> {
    match mask {
        None => Ok(()),
        Some(_) => Err(PolicyError::Mask {
            reason: "a Gaussian policy takes no action mask".to_string(),
        }),
    }
}
