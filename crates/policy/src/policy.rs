//! The [`Policy`] trait the optimisers are written against, the [`Dist`]
//! value it returns, and host-side [`Actions`].

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, RngCore};

use crate::categorical::{ActionMask, Categorical};
use crate::error::{Context, PolicyError, Result};
use crate::gaussian::DiagGaussian;
use crate::gsde::SdeNoise;
use crate::pullback::OutputPullback;

/// Actions on the host, one per state, in the form environments take them.
#[derive(Debug, Clone, PartialEq)]
pub enum Actions {
    /// One action index per state.
    Discrete(Vec<usize>),
    /// `action_dim` values per state, state-major.
    Continuous {
        /// The values, `N × action_dim`.
        values: Vec<f32>,
        /// Values per state.
        action_dim: usize,
    },
}

impl Actions {
    /// Number of states N.
    pub fn len(&self) -> usize {
        match self {
            Actions::Discrete(a) => a.len(),
            Actions::Continuous { values, action_dim } => values.len() / (*action_dim).max(1),
        }
    }

    /// Whether there are no actions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The action indices, if discrete.
    pub fn as_discrete(&self) -> Option<&[usize]> {
        match self {
            Actions::Discrete(a) => Some(a),
            Actions::Continuous { .. } => None,
        }
    }

    /// The flat values, if continuous.
    pub fn as_continuous(&self) -> Option<&[f32]> {
        match self {
            Actions::Discrete(_) => None,
            Actions::Continuous { values, .. } => Some(values),
        }
    }

    /// The tensor [`Dist::log_prob`] takes: U32 `[N]` for discrete actions;
    /// `[N, action_dim]` of `dtype` (the policy's) for continuous ones.
    ///
    /// Errors: [`PolicyError::ActionOutOfRange`] for an index above `u32::MAX`;
    /// [`PolicyError::Shape`] if the continuous values are not a whole number of rows.
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            Actions::Discrete(a) => {
                let idx = a
                    .iter()
                    .map(|&x| {
                        u32::try_from(x).map_err(|_| PolicyError::ActionOutOfRange {
                            action: x as u64,
                            n_actions: u32::MAX as usize,
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?;
                Tensor::from_vec(idx, a.len(), device).ctx("actions to tensor")
            }
            Actions::Continuous { values, action_dim } => {
                if *action_dim == 0 || values.len() % action_dim != 0 {
                    return Err(PolicyError::Shape {
                        what: "continuous actions",
                        expected: format!("a multiple of action_dim = {action_dim} values"),
                        got: vec![values.len()],
                    });
                }
                let n = values.len() / action_dim;
                let v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
                crate::flat::tensor_from_f64(&v, &[n, *action_dim], dtype, device)
            }
        }
    }

    /// The inverse of [`Actions::to_tensor`]: an integer tensor `[N]` gives
    /// discrete actions, a float tensor `[N, d]` continuous ones.
    ///
    /// Errors: [`PolicyError::Shape`] for any other shape.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let c = "actions from tensor";
        match (t.dims(), t.dtype().is_int()) {
            (&[_], true) => {
                let v = t
                    .to_dtype(DType::I64)
                    .and_then(|x| x.to_vec1::<i64>())
                    .ctx(c)?;
                let v = v
                    .into_iter()
                    .map(|x| {
                        usize::try_from(x).map_err(|_| PolicyError::ActionOutOfRange {
                            action: x as u64,
                            n_actions: 0,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Actions::Discrete(v))
            }
            (&[_, d], false) => {
                let values = t
                    .flatten_all()
                    .and_then(|x| x.to_dtype(DType::F32))
                    .and_then(|x| x.to_vec1::<f32>())
                    .ctx(c)?;
                Ok(Actions::Continuous {
                    values,
                    action_dim: d,
                })
            }
            (got, _) => Err(PolicyError::Shape {
                what: "actions",
                expected: "an integer [N] or a float [N, d] tensor".to_string(),
                got: got.to_vec(),
            }),
        }
    }
}

/// The action distributions of a policy at N states, holding differentiable
/// tensors: gradients of `log_prob`, `entropy` and `kl` flow to the policy's
/// parameters (unless [`Dist::detach`]ed).
#[derive(Debug, Clone)]
pub enum Dist {
    /// Softmax over discrete actions ([`crate::CategoricalPolicy`]).
    Categorical(Categorical),
    /// Diagonal Gaussian over continuous actions ([`crate::DiagGaussianPolicy`]).
    DiagGaussian(DiagGaussian),
}

impl Dist {
    /// Number of states N.
    pub fn batch_size(&self) -> usize {
        match self {
            Dist::Categorical(d) => d.batch_size(),
            Dist::DiagGaussian(d) => d.batch_size(),
        }
    }

    /// `log π(a_s | s)` per state, `[N]`. `actions` as made by
    /// [`Actions::to_tensor`]: U32 `[N]` (categorical) or `[N, d]` (Gaussian).
    pub fn log_prob(&self, actions: &Tensor) -> Result<Tensor> {
        match self {
            Dist::Categorical(d) => d.log_prob(actions),
            Dist::DiagGaussian(d) => d.log_prob(actions),
        }
    }

    /// Entropy per state, `[N]`.
    pub fn entropy(&self) -> Result<Tensor> {
        match self {
            Dist::Categorical(d) => d.entropy(),
            Dist::DiagGaussian(d) => d.entropy(),
        }
    }

    /// Exact analytic `KL(self ‖ other)` per state, `[N]`. For the KL penalty
    /// of PPO and TRPO's constraint, `self` is π_old (detached) and `other` π_θ.
    ///
    /// Errors: [`PolicyError::Mismatch`] for distributions of different kinds or sizes.
    pub fn kl(&self, other: &Dist) -> Result<Tensor> {
        match (self, other) {
            (Dist::Categorical(p), Dist::Categorical(q)) => p.kl(q),
            (Dist::DiagGaussian(p), Dist::DiagGaussian(q)) => p.kl(q),
            _ => Err(PolicyError::Mismatch {
                reason: "KL between a categorical and a Gaussian distribution".to_string(),
            }),
        }
    }

    /// The same distributions cut from the gradient graph.
    pub fn detach(&self) -> Dist {
        match self {
            Dist::Categorical(d) => Dist::Categorical(d.detach()),
            Dist::DiagGaussian(d) => Dist::DiagGaussian(d.detach()),
        }
    }

    /// One action per state drawn with `rng` (on the host).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Actions> {
        match self {
            Dist::Categorical(d) => Ok(Actions::Discrete(d.sample(rng)?)),
            Dist::DiagGaussian(d) => Ok(Actions::Continuous {
                values: d.sample(rng)?,
                action_dim: d.action_dim(),
            }),
        }
    }

    /// The deterministic action per state: argmax (categorical) or mean (Gaussian).
    pub fn mode(&self) -> Result<Actions> {
        match self {
            Dist::Categorical(d) => Ok(Actions::Discrete(d.mode()?)),
            Dist::DiagGaussian(d) => Ok(Actions::Continuous {
                values: d.mode()?,
                action_dim: d.action_dim(),
            }),
        }
    }
}

/// A stochastic policy π_θ(a | s) with everything the on-policy optimisers
/// (vanilla PG, PPO with KL penalty or clipping, TRPO, NPG) need, so that each
/// is written once for [`crate::CategoricalPolicy`] and
/// [`crate::DiagGaussianPolicy`].
///
/// Observations are tensors `[N, obs_dim]` of the policy's dtype and device
/// ([`Policy::obs_tensor`] builds one from the environment's `f32` buffer).
/// Flat vectors follow the order of [`Policy::vars`], documented by each
/// implementation. The Fisher of the mean KL, `policy.fisher(obs, mask)`, is
/// [`crate::PolicyFisher`]'s, built from [`Policy::dist_with_pullback`].
pub trait Policy {
    /// Observation width.
    fn obs_dim(&self) -> usize;

    /// Number of actions (categorical) or action dimension (Gaussian).
    fn action_dim(&self) -> usize;

    /// Element type of parameters and observations.
    fn dtype(&self) -> DType;

    /// Device of parameters and observations.
    fn device(&self) -> &Device;

    /// The action distributions at observations `obs [N, obs_dim]`, with an
    /// optional [`ActionMask`] (categorical policies only).
    ///
    /// Errors: [`PolicyError::Shape`] / [`PolicyError::DType`] for wrong
    /// observations; [`PolicyError::Mask`] for a mask of the wrong size or
    /// given to a Gaussian policy.
    fn dist(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Dist>;

    /// [`Policy::dist`] without a gradient graph (`dist(..)?.detach()`, the
    /// same values bit for bit): for acting, evaluating and measuring KL.
    /// The policies of this crate compute it without candle's per-layer ops
    /// on the CPU ([`crate::Mlp::forward_detached`]).
    ///
    /// Errors: as [`Policy::dist`].
    fn dist_detached(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Dist> {
        Ok(self.dist(obs, mask)?.detach())
    }

    /// The action distributions at `obs` as [`Policy::dist`] gives them, but
    /// built on leaf copies of the network's outputs (and of `log σ` for a
    /// Gaussian), with the [`OutputPullback`] that turns the gradients of a
    /// loss at those leaves into `∂L/∂θ` by the MLP's hand-written reverse
    /// pass (see [`crate::pullback`]).
    ///
    /// Use it instead of [`Policy::dist`] + [`Policy::flat_grad`] when only
    /// the gradient is needed: `loss.backward()` then walks the distribution
    /// head only, and [`OutputPullback::flat_grad`] gives the same flat
    /// gradient (in the order of [`Policy::vars`]) faster.
    ///
    /// Errors: as [`Policy::dist`].
    fn dist_with_pullback(
        &self,
        obs: &Tensor,
        mask: Option<&ActionMask>,
    ) -> Result<(Dist, OutputPullback)>;

    /// For a categorical policy, the raw logits `[N, A]` at `obs` (without
    /// action mask) as the leaf of an [`OutputPullback`], without building
    /// the distributions: for a loss head computed outside candle's graph
    /// (PPO's clipped surrogate on host memory), whose gradient in the
    /// logits goes to [`OutputPullback::flat_grad_from_outputs`]. The
    /// logits are those [`Policy::dist_with_pullback`] builds its
    /// distributions on, bit for bit. `None` for other policies (the
    /// default).
    ///
    /// Errors: as [`Policy::dist`].
    fn logits_with_pullback(&self, _obs: &Tensor) -> Result<Option<(Tensor, OutputPullback)>> {
        Ok(None)
    }

    /// For a diagonal Gaussian policy with a state-independent σ, the means
    /// `[N, d]` at `obs` and `log σ [d]`, as the leaves of an
    /// [`OutputPullback`] (returned as `(means, log σ, pullback)`), without
    /// building the distributions: for a loss head computed outside candle's
    /// graph (PPO's clipped surrogate on host memory), whose gradients in the
    /// means and in `log σ` go to [`OutputPullback::flat_grad_from_outputs`].
    /// The values are those [`Policy::dist_with_pullback`] builds its
    /// distributions on, bit for bit. `None` for other policies (categorical,
    /// gSDE, a state-dependent σ; the default).
    ///
    /// Errors: as [`Policy::dist`].
    fn gaussian_with_pullback(
        &self,
        _obs: &Tensor,
    ) -> Result<Option<(Tensor, Tensor, OutputPullback)>> {
        Ok(None)
    }

    /// gSDE ([`crate::gsde`]): fresh exploration matrices `θ_ε ~ N(0, σ²)`,
    /// one per environment copy, drawn from `rng`; `None` for a policy that
    /// does not explore with gSDE (the default).
    fn sample_sde_noise(&self, copies: usize, rng: &mut dyn RngCore) -> Result<Option<SdeNoise>> {
        let _ = (copies, rng);
        Ok(None)
    }

    /// gSDE: the distributions at `obs` (one state per copy, detached) and the
    /// exploring actions `μ(s_e) + θ_ε[e]ᵀ z(s_e)`, with copy e's matrix for
    /// row e.
    ///
    /// Errors: [`PolicyError::Mismatch`] for a policy without gSDE (the
    /// default) or noise of another size.
    fn sample_with_sde_noise(&self, obs: &Tensor, noise: &SdeNoise) -> Result<(Dist, Actions)> {
        let _ = (obs, noise);
        Err(PolicyError::Mismatch {
            reason: "gSDE noise given to a policy without gSDE".to_string(),
        })
    }

    /// The parameters with their names in parameter files ([`Policy::save`]).
    fn named_vars(&self) -> Vec<(String, Var)>;

    /// The parameters, in flat order (hand them to `candle_nn::AdamW`).
    fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// Number of scalar parameters (the length of flat vectors).
    fn num_params(&self) -> usize {
        crate::flat::flat_len(&self.vars())
    }

    /// The parameters as one flat vector θ.
    fn get_flat(&self) -> Result<Vec<f64>> {
        crate::flat::get_flat(&self.vars())
    }

    /// Sets the parameters from a flat vector θ; on error nothing changes.
    fn set_flat(&mut self, flat: &[f64]) -> Result<()> {
        crate::flat::set_flat(&self.vars(), flat)
    }

    /// `∇_θ loss` as a flat vector, by one `backward()` of the scalar `loss`.
    fn flat_grad(&self, loss: &Tensor) -> Result<Vec<f64>> {
        crate::flat::flat_grad(&self.vars(), loss)
    }

    /// Observations `[N, obs_dim]` of the policy's dtype and device from an
    /// environment's state-major `f32` buffer (`N · obs_dim` values).
    ///
    /// Errors: [`PolicyError::Shape`] if the length is not a multiple of `obs_dim`.
    fn obs_tensor(&self, obs: &[f32]) -> Result<Tensor> {
        obs_tensor(obs, self.obs_dim(), self.dtype(), self.device())
    }

    /// Writes the parameters to a safetensors file.
    fn save(&self, path: &Path) -> Result<()> {
        crate::io::save_vars(path, &self.named_vars())
    }

    /// Reads the parameters from a safetensors file written by [`Policy::save`]
    /// for a network of the same architecture and dtype; all tensors are
    /// checked before any is assigned (see [`crate::io::load_vars`]).
    fn load(&mut self, path: &Path) -> Result<()> {
        crate::io::load_vars(path, &self.named_vars())
    }
}

/// `[N, obs_dim]` tensor from a state-major `f32` buffer.
pub(crate) fn obs_tensor(
    obs: &[f32],
    obs_dim: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if obs_dim == 0 || !obs.len().is_multiple_of(obs_dim) {
        return Err(PolicyError::Shape {
            what: "observation buffer",
            expected: format!("a multiple of obs_dim = {obs_dim} values"),
            got: vec![obs.len()],
        });
    }
    let n = obs.len() / obs_dim;
    let t = Tensor::from_slice(obs, (n, obs_dim), device).ctx("observations to tensor")?;
    if dtype == DType::F32 {
        Ok(t)
    } else {
        t.to_dtype(dtype).ctx("observations to tensor")
    }
}
