//! Policies and value functions for KL-constrained policy optimisation, in
//! [candle](https://github.com/huggingface/candle).
//!
//! - [`CategoricalPolicy`] (softmax over discrete actions, optional
//!   per-state [`ActionMask`]) and [`DiagGaussianPolicy`] (mean MLP plus a
//!   state-independent `log_std`, gSDE's state-dependent exploration
//!   ([`gsde`]) or a state-dependent log-std head, [`GaussianStd`]), both
//!   behind one [`Policy`] trait so that vanilla PG, PPO (KL penalty or
//!   clipping), TRPO and NPG are written once.
//! - [`Dist`]: the action distributions at a batch of states, with
//!   differentiable `log_prob`, `entropy` and exact analytic `kl`, and
//!   host-side `sample` from a passed-in RNG.
//! - [`FisherOperator`] (`policy.fisher(obs, mask)`, [`PolicyFisher`]): the
//!   exact Fisher-vector product `F v` of the mean KL in Gauss–Newton form,
//!   `Jᵀ M J v / N`, by a forward-mode tangent pass and one reverse pass (no
//!   double backward), for conjugate gradient.
//! - [`OutputPullback`] ([`Policy::dist_with_pullback`]): the gradient of a
//!   loss of the distributions by candle's autograd over the head only and
//!   the MLP's hand-written reverse pass for the rest.
//! - [`KlProjection`] ([`projection`]): the differentiable per-state KL
//!   trust-region projection of Otto et al. (2021) for both distribution
//!   kinds, `KL(π_old ‖ π̃) ≤ ε` at every state.
//! - [`Mlp`] with its tangent pass ([`Mlp::jvp`]), orthogonal initialisation
//!   ([`init`]), flat parameter vectors ([`flat`]), [`ValueNet`] (separate or
//!   on a shared trunk) and all-or-nothing safetensors checkpoints ([`io`]).
//!
//! Not here: the optimisers, advantages and rollouts (`klrl-optim`), KL
//! estimators on plain `f64` samples (`klrl-kl`), environments (`klrl-envs`).
//!
//! Parameters are `f32` by default (`f64` on request, as the numerical tests
//! use) on any candle `Device` (`cuda` feature for GPUs). RNGs are always
//! passed in; nothing is global. candle's element-wise ops run on a thread
//! pool: for the small networks of classic control, set
//! `RAYON_NUM_THREADS=1` (measurements in the crate README).
//!
//! # Example
//!
//! ```
//! use candle_core::{DType, Device};
//! use klrl_policy::{CategoricalPolicy, MlpConfig, Policy, PolicyFisher};
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! // CartPole: 4 observations, 2 actions, 64-64 tanh.
//! let policy = CategoricalPolicy::new(4, 2, &MlpConfig::default(), DType::F32, &Device::Cpu, &mut rng)?;
//!
//! // Act in 3 environments at once.
//! let obs = policy.obs_tensor(&[0.01, 0.0, -0.02, 0.0, 0.03, 0.1, 0.0, -0.1, 0.0, 0.0, 0.0, 0.0])?;
//! let dist = policy.dist(&obs, None)?;
//! let actions = dist.sample(&mut rng)?;
//! assert_eq!(actions.len(), 3);
//! let log_p = dist.log_prob(&actions.to_tensor(policy.dtype(), policy.device())?)?;
//!
//! // A KL-penalised surrogate and its gradient as a flat vector:
//! // L = mean(r Â) − β mean KL(π_old ‖ π_θ) with r = 1 and Â = 1 here.
//! let old = dist.detach();
//! let kl = old.kl(&policy.dist(&obs, None)?)?.mean_all()?;
//! let loss = ((log_p.mean_all()? - (kl * 1.0)?)? * -1.0)?;
//! let grad = policy.flat_grad(&loss)?;
//! assert_eq!(grad.len(), policy.num_params());
//!
//! // The Fisher-vector product for conjugate gradient (TRPO).
//! let fisher = policy.fisher(&obs, None)?;
//! let fv = fisher.apply_damped(&grad, 0.1)?;
//! assert_eq!(fv.len(), grad.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod categorical;
pub mod categorical_policy;
pub mod error;
pub mod fisher;
pub mod flat;
pub mod gaussian;
pub mod gaussian_policy;
pub mod gsde;
mod host;
pub mod init;
pub mod io;
mod linearization;
pub mod mlp;
mod mlp_host;
mod mlp_tensor;
pub mod policy;
pub mod projection;
pub mod pullback;
mod tanh;
pub mod value;

pub use categorical::{ActionMask, Categorical, MASKED_LOGIT};
pub use categorical_policy::CategoricalPolicy;
pub use error::{PolicyError, Result};
pub use fisher::{FisherOperator, PolicyFisher};
pub use gaussian::DiagGaussian;
pub use gaussian_policy::{DiagGaussianPolicy, GaussianHead, GaussianStd};
pub use gsde::{GsdeConfig, GsdeLinearization, SdeNoise};
pub use mlp::{Activation, Linear, LinearTangent, Mlp, MlpConfig, MlpLinearization};
pub use policy::{Actions, Dist, Policy};
pub use projection::KlProjection;
pub use pullback::OutputPullback;
pub use value::ValueNet;
