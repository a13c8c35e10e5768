//! The diagonal Gaussian policy for continuous actions: a network's outputs
//! are the means of a [`DiagGaussian`], with by default a state-independent
//! log standard deviation (Schulman et al. 2015, TRPO §8; Spinning Up's
//! `MLPGaussianActor`), or with gSDE's state-dependent exploration
//! ([`crate::gsde`]), or with a state-dependent log-std head ([`GaussianStd`]).

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, RngCore};

use crate::categorical::ActionMask;
use crate::error::{Context, PolicyError, Result};
use crate::flat::{tensor_from_f64, tensor_to_f64};
use crate::gaussian::DiagGaussian;
use crate::gsde::{
    rollout_log_std_and_noise, state_log_std, std_matrix_host, GsdeConfig, GsdeLinearization,
    SdeNoise,
};
use crate::init::GAIN_POLICY_HEAD;
use crate::mlp::{Mlp, MlpConfig};
use crate::policy::{Actions, Dist, Policy};
use crate::pullback::OutputPullback;

/// Where a [`DiagGaussianPolicy`]'s standard deviation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GaussianStd {
    /// A learned `log σ [d]` shared by every state (TRPO §8, Spinning Up,
    /// SB3's default). The default.
    #[default]
    StateIndependent,
    /// gSDE ([`crate::gsde`]): `log σ_j(s) = ½ log(Σ_i z_i(s)² σ_ij² + ε)`
    /// with the learned `log σ` of shape `[latent, d]` (or `[latent, 1]`),
    /// and rollouts that explore with `μ(s) + θ_εᵀ z(s)`.
    Gsde(GsdeConfig),
    /// A state-dependent log-std head: the mean network's head has 2d
    /// outputs, the first d are the mean and the last d `log σ(s)` (one
    /// network, as SAC's actor, Haarnoja et al. 2018, §4.2; without SAC's
    /// clamp of `log σ` to [−20, 2], whose zero derivative outside the box
    /// would hide those states from the KL and the Fisher). Chosen over a
    /// separate head so that the hand-written passes stay those of one MLP.
    StateDependent,
}

/// How a [`DiagGaussianPolicy`] makes its standard deviation, and its initial value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianHead {
    /// Where σ comes from. Default [`GaussianStd::StateIndependent`].
    pub std: GaussianStd,
    /// The initial `log σ`: every entry of the shared vector or of gSDE's
    /// `[latent, d]` parameter, or the bias of the state-dependent head's
    /// log-std outputs (whose weights start at gain 0.01, so `log σ(s) ≈
    /// log_std_init` everywhere). Default 0.0 (σ = 1; SB3's `log_std_init`).
    pub log_std_init: f64,
}

impl Default for GaussianHead {
    fn default() -> Self {
        GaussianHead {
            std: GaussianStd::StateIndependent,
            log_std_init: 0.0,
        }
    }
}

/// The standard-deviation parameters of a [`DiagGaussianPolicy`].
#[derive(Debug, Clone)]
enum StdParams {
    /// `log σ [d]`.
    Shared(Var),
    /// gSDE's `log σ [latent, d or 1]`.
    Gsde { log_std: Var, config: GsdeConfig },
    /// The last d outputs of the MLP.
    Head,
}

/// A Gaussian policy `π(a | s) = N(μ(s; θ), diag(σ(s)²))`: an [`Mlp`] gives
/// the mean and σ comes from one of the [`GaussianStd`] kinds — by default a
/// learned vector `log_std` that does not depend on the state, initialised to
/// 0 (σ = 1), as in TRPO §8, Spinning Up and SB3.
///
/// Parameter order (flat vectors, [`Policy::vars`]): the MLP's layers
/// (weight, bias, input side first), then `log_std` (`[d]`, or gSDE's
/// `[latent, d]` / `[latent, 1]`; none for the state-dependent head, whose
/// log-std outputs are the MLP head's last d rows); names
/// `policy.{i}.weight`, `policy.{i}.bias`, `policy.log_std`.
#[derive(Debug, Clone)]
pub struct DiagGaussianPolicy {
    mlp: Mlp,
    std: StdParams,
    action_dim: usize,
}

impl DiagGaussianPolicy {
    /// The distributions at `obs`, through [`Mlp::forward`] or (`detached`)
    /// [`Mlp::forward_detached`], which computes the same values without a
    /// graph.
    fn dist_at(&self, obs: &Tensor, detached: bool) -> Result<Dist> {
        let forward = |x: &Tensor| {
            if detached {
                self.mlp.forward_detached(x)
            } else {
                self.mlp.forward(x)
            }
        };
        let dist = match &self.std {
            StdParams::Shared(log_std) => DiagGaussian::new(&forward(obs)?, log_std.as_tensor())?,
            StdParams::Gsde { log_std, config } => {
                let (mean, z) = if detached {
                    self.mlp.forward_with_features_detached(obs)?
                } else {
                    self.mlp.forward_with_features(obs)?
                };
                let ls = state_log_std(&z, log_std.as_tensor(), self.action_dim, config)?;
                DiagGaussian::new(&mean, &ls)?
            }
            StdParams::Head => {
                let (mean, ls) = self.split_head(&forward(obs)?)?;
                DiagGaussian::new(&mean, &ls)?
            }
        };
        Ok(Dist::DiagGaussian(dist))
    }

    /// A policy for observations of width `obs_dim` and actions of dimension
    /// `action_dim`, orthogonally initialised (hidden gain √2, mean head gain
    /// 0.01, biases 0) with a state-independent `log_std = 0`.
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
        Self::with_head(
            obs_dim,
            action_dim,
            config,
            &GaussianHead::default(),
            dtype,
            device,
            rng,
        )
    }

    /// As [`DiagGaussianPolicy::new`], with the standard deviation of `head`
    /// (gSDE, a state-dependent head, or the shared vector) starting at
    /// `head.log_std_init`. The MLP is drawn from `rng` exactly as by `new`
    /// (the state-dependent head draws its 2d head rows at once).
    ///
    /// Errors: as `new`, and [`PolicyError::InvalidParameter`] for a
    /// non-finite `log_std_init`.
    pub fn with_head<R: Rng + ?Sized>(
        obs_dim: usize,
        action_dim: usize,
        config: &MlpConfig,
        head: &GaussianHead,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        if !head.log_std_init.is_finite() {
            return Err(PolicyError::InvalidParameter {
                param: "log_std_init",
                reason: format!("must be finite, got {}", head.log_std_init),
            });
        }
        let out_dim = match head.std {
            GaussianStd::StateDependent => 2 * action_dim,
            _ => action_dim,
        };
        let mlp = Mlp::new(
            obs_dim,
            out_dim,
            config,
            GAIN_POLICY_HEAD,
            dtype,
            device,
            rng,
        )?;
        let init = |dims: &[usize]| -> Result<Var> {
            let n: usize = dims.iter().product();
            let t = tensor_from_f64(&vec![head.log_std_init; n], dims, dtype, device)?;
            Var::from_tensor(&t).ctx("gaussian log_std")
        };
        let std = match head.std {
            GaussianStd::StateIndependent => StdParams::Shared(init(&[action_dim])?),
            GaussianStd::Gsde(config) => StdParams::Gsde {
                log_std: init(&[mlp.feature_dim(), config.log_std_cols(action_dim)])?,
                config,
            },
            GaussianStd::StateDependent => {
                let bias = mlp.layers()[mlp.layers().len() - 1].bias();
                let mut b = vec![0.0; action_dim];
                b.extend(std::iter::repeat_n(head.log_std_init, action_dim));
                bias.set(&tensor_from_f64(&b, &[2 * action_dim], dtype, device)?)
                    .ctx("gaussian log-std head bias")?;
                StdParams::Head
            }
        };
        Ok(DiagGaussianPolicy {
            mlp,
            std,
            action_dim,
        })
    }

    /// The mean network (for the state-dependent head: mean and log σ).
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// The learned `log σ`: `[d]` (state-independent), gSDE's `[latent, d]`
    /// or `[latent, 1]`; `None` for the state-dependent head.
    pub fn log_std(&self) -> Option<&Var> {
        match &self.std {
            StdParams::Shared(v) | StdParams::Gsde { log_std: v, .. } => Some(v),
            StdParams::Head => None,
        }
    }

    /// Where the standard deviation comes from.
    pub fn std_kind(&self) -> GaussianStd {
        match &self.std {
            StdParams::Shared(_) => GaussianStd::StateIndependent,
            StdParams::Gsde { config, .. } => GaussianStd::Gsde(*config),
            StdParams::Head => GaussianStd::StateDependent,
        }
    }

    /// Mean and log-std `[N, d]` columns of the state-dependent head's outputs.
    fn split_head(&self, out: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = self.action_dim;
        let c = "gaussian log-std head";
        Ok((out.narrow(1, 0, d).ctx(c)?, out.narrow(1, d, d).ctx(c)?))
    }
}

impl Policy for DiagGaussianPolicy {
    fn obs_dim(&self) -> usize {
        self.mlp.in_dim()
    }

    fn action_dim(&self) -> usize {
        self.action_dim
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
        self.dist_at(obs, false)
    }

    fn dist_detached(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Dist> {
        reject_mask(mask)?;
        Ok(self.dist_at(obs, true)?.detach())
    }

    /// Errors also with [`PolicyError::Mask`] if a mask is given.
    fn dist_with_pullback(
        &self,
        obs: &Tensor,
        mask: Option<&ActionMask>,
    ) -> Result<(Dist, OutputPullback)> {
        reject_mask(mask)?;
        let (out, lin) = self.mlp.linearize(obs)?;
        let out = crate::pullback::leaf(&out)?;
        match &self.std {
            StdParams::Shared(log_std) => {
                let log_std = crate::pullback::leaf(log_std.as_tensor())?;
                let dist = DiagGaussian::new(out.as_tensor(), log_std.as_tensor())?;
                Ok((
                    Dist::DiagGaussian(dist),
                    OutputPullback::new(lin, out, Some(log_std)),
                ))
            }
            StdParams::Gsde { log_std, config } => {
                let head = GsdeLinearization::new(
                    &lin.features()?,
                    log_std.as_tensor(),
                    self.action_dim,
                    config,
                )?;
                let ls = crate::pullback::leaf(head.log_std())?;
                let dist = DiagGaussian::new(out.as_tensor(), ls.as_tensor())?;
                Ok((
                    Dist::DiagGaussian(dist),
                    OutputPullback::gsde(lin, out, ls, head),
                ))
            }
            StdParams::Head => {
                let (mean, ls) = self.split_head(out.as_tensor())?;
                let dist = DiagGaussian::new(&mean, &ls)?;
                Ok((
                    Dist::DiagGaussian(dist),
                    OutputPullback::new(lin, out, None),
                ))
            }
        }
    }

    /// The state-independent σ only: gSDE and the state-dependent head give
    /// `None`.
    fn gaussian_with_pullback(
        &self,
        obs: &Tensor,
    ) -> Result<Option<(Tensor, Tensor, OutputPullback)>> {
        let StdParams::Shared(log_std) = &self.std else {
            return Ok(None);
        };
        let (out, lin) = self.mlp.linearize(obs)?;
        let out = crate::pullback::leaf(&out)?;
        let log_std = crate::pullback::leaf(log_std.as_tensor())?;
        Ok(Some((
            out.as_tensor().clone(),
            log_std.as_tensor().clone(),
            OutputPullback::new(lin, out, Some(log_std)),
        )))
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.mlp.named_vars("policy");
        if let Some(ls) = self.log_std() {
            v.push(("policy.log_std".to_string(), ls.clone()));
        }
        v
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = self.mlp.vars();
        if let Some(ls) = self.log_std() {
            v.push(ls.clone());
        }
        v
    }

    fn sample_sde_noise(&self, copies: usize, rng: &mut dyn RngCore) -> Result<Option<SdeNoise>> {
        let StdParams::Gsde { log_std, config } = &self.std else {
            return Ok(None);
        };
        let std = std_matrix_host(log_std.as_tensor(), self.action_dim, config)?;
        let latent = self.mlp.feature_dim();
        SdeNoise::sample(&std, latent, self.action_dim, copies, rng).map(Some)
    }

    /// Errors also with [`PolicyError::Mismatch`] for a policy without gSDE,
    /// or noise for another number of states or feature width.
    fn sample_with_sde_noise(&self, obs: &Tensor, noise: &SdeNoise) -> Result<(Dist, Actions)> {
        let StdParams::Gsde { log_std, config } = &self.std else {
            return Err(PolicyError::Mismatch {
                reason: "gSDE noise given to a Gaussian policy without gSDE".to_string(),
            });
        };
        let (mean, z) = self.mlp.forward_with_features_detached(obs)?;
        let n = mean.dims()[0];
        if noise.copies() != n
            || noise.latent() != self.mlp.feature_dim()
            || noise.action_dim() != self.action_dim
        {
            return Err(PolicyError::Mismatch {
                reason: format!(
                    "gSDE noise for {} copies of {}×{} matrices, applied to {n} states of a \
                     policy with {} features and {} action dimensions",
                    noise.copies(),
                    noise.latent(),
                    noise.action_dim(),
                    self.mlp.feature_dim(),
                    self.action_dim
                ),
            });
        }
        let (ls, eps) =
            rollout_log_std_and_noise(&tensor_to_f64(&z)?, log_std.as_tensor(), noise, config)?;
        let ls = tensor_from_f64(&ls, &[n, self.action_dim], mean.dtype(), mean.device())?;
        let dist = DiagGaussian::new(&mean, &ls)?;
        let values = tensor_to_f64(&mean)?
            .into_iter()
            .zip(eps)
            .map(|(m, e)| (m + e) as f32)
            .collect();
        Ok((
            Dist::DiagGaussian(dist),
            Actions::Continuous {
                values,
                action_dim: self.action_dim,
            },
        ))
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
