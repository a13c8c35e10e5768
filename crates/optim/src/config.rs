//! Hyperparameters, with the papers' names, their defaults and where the
//! defaults come from. Every struct deserialises from TOML with unknown fields
//! rejected, and [`ExperimentConfig::validate`] checks every range before
//! anything runs, naming the field (`algo.max_kl: must be > 0, got -0.01`).

use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::threads::Threads;

/// Which environment to train on: a registry name and its parameter table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Registry name, e.g. `CartPole-v1` (see `klrl envs`).
    pub name: String,
    /// Parameters of the environment (checked by the environment itself),
    /// plus `max_episode_steps` to override the time limit.
    #[serde(default)]
    pub params: toml::Table,
}

/// The rollout and advantage settings shared by every algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Total environment steps (summed over copies). Default 100 000.
    pub total_steps: u64,
    /// Environment copies stepped together. Default 8.
    pub n_envs: usize,
    /// Steps per copy per rollout; a batch has `n_envs · n_steps`
    /// transitions. Default 32 (the rl-baselines3-zoo CartPole PPO setting).
    pub n_steps: usize,
    /// Discount γ in [0, 1]. Default 0.99. γ = 0 is a bandit: every return
    /// is the immediate reward and GAE reads no next-state value.
    pub gamma: f64,
    /// GAE λ in [0, 1] (Schulman et al. 2016). Default 0.95.
    pub gae_lambda: f64,
    /// Normalise observations with running statistics (Huang et al. detail
    /// "observation normalisation"); helps MountainCar/Acrobot. Default false.
    pub normalize_obs: bool,
    /// Divide rewards by the running standard deviation of the discounted
    /// return. Default false.
    pub scale_rewards: bool,
    /// Seed of everything random in the run (environment copy i gets
    /// `seed + i`). Default 0.
    pub seed: u64,
    /// Parameter precision: `"f32"` (default) or `"f64"`.
    pub dtype: String,
    /// Compute threads of the trainer: every rollout, update and
    /// evaluation runs on a thread pool of its own of this size, whatever
    /// `RAYON_NUM_THREADS` says, so a library user gets the fast path
    /// without setting environment variables. Default 1. `"auto"` takes
    /// the machine's cores, at most 2 (the trainer's parallelism is
    /// two-way: the policy and value networks side by side; see
    /// [`Threads`]): the zoo PPO CartPole update runs 1.6× faster than on
    /// one thread on the 2-core machine, but the peak memory of a TRPO run
    /// then grows with its length (CartPole TRPO 47–58 MiB at 100k steps,
    /// 57–64 MiB at 1M, against a flat 38.9 / 38.7 MiB on one thread), so
    /// it is not the default. `klrl compare` gives each of its parallel
    /// `"auto"` runs its share of the cores. A count (1 ..= 1024) is used as
    /// given. Results are bit-identical for any count.
    pub threads: Threads,
    /// Rejected updates in a row after which the run stops with an error.
    /// An update is rejected when a loss, gradient, new parameter or its
    /// measured KL is not finite: the policy, the value network and the
    /// optimiser state are restored bit for bit, the rollout still counts,
    /// and the metrics column `rejected` is 1. Isolated rejections are
    /// survived; a run that keeps diverging stops, naming the quantity, with
    /// its last good state checkpointed. Default 5, at least 1.
    pub max_rejected_updates: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            total_steps: 100_000,
            n_envs: 8,
            n_steps: 32,
            gamma: 0.99,
            gae_lambda: 0.95,
            normalize_obs: false,
            scale_rewards: false,
            seed: 0,
            dtype: "f32".to_string(),
            threads: Threads::Count(1),
            max_rejected_updates: 5,
        }
    }
}

/// Network shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Hidden layer widths. Default `[64, 64]`.
    pub hidden: Vec<usize>,
    /// `"tanh"` (default) or `"relu"`.
    pub activation: String,
    /// Value head on the policy's hidden layers instead of a separate
    /// network. Default false (separate networks, as in CleanRL and SB3 for
    /// classic control).
    pub shared_trunk: bool,
    /// Continuous actions: explore with gSDE (Raffin, Kober & Stulp 2021,
    /// arXiv 2005.05719; `klrl_policy::gsde`): the noise θ_εᵀ z(s) of the
    /// policy's last hidden features, θ_ε ~ N(0, σ²) held for
    /// `sde_sample_freq` steps, one matrix per environment copy. Default
    /// false (SB3's `use_sde`).
    pub use_sde: bool,
    /// gSDE: draw new noise matrices every this many steps of each rollout,
    /// or −1 only at the start of each rollout. Must be ≥ 1 or −1. Default −1
    /// (SB3's `sde_sample_freq`; the zoo uses 4 on Pendulum).
    pub sde_sample_freq: i64,
    /// The initial log σ of a Gaussian policy: the shared vector, every
    /// entry of gSDE's `[latent, d]` matrix, or the bias of the
    /// state-dependent head's log-std outputs. Default 0.0 (SB3's
    /// `log_std_init`).
    pub log_std_init: f64,
    /// gSDE: one σ per (feature, action) pair (true) or one per feature,
    /// shared by the action dimensions (false). Default true (SB3's
    /// `full_std`).
    pub full_std: bool,
    /// gSDE: σ = exp(L) for L ≤ 0 and ln(1 + L) + 1 above (the paper's
    /// expln, slower growth) instead of exp(L). Default false (SB3's
    /// `use_expln`).
    pub use_expln: bool,
    /// gSDE: let the variance's gradient reach the policy network through
    /// the features z(s). Default false (SB3's `learn_features`: detached).
    pub learn_features: bool,
    /// Continuous actions: log σ(s) as d extra outputs of the mean network's
    /// head instead of a state-independent vector (`klrl_policy::GaussianStd::StateDependent`).
    /// Not with `use_sde`. Default false.
    pub state_dependent_std: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            hidden: vec![64, 64],
            activation: "tanh".to_string(),
            shared_trunk: false,
            use_sde: false,
            sde_sample_freq: -1,
            log_std_init: 0.0,
            full_std: true,
            use_expln: false,
            learn_features: false,
            state_dependent_std: false,
        }
    }
}

impl NetConfig {
    /// The policy crate's MLP shape.
    pub fn mlp(&self) -> klrl_policy::MlpConfig {
        klrl_policy::MlpConfig {
            hidden: self.hidden.clone(),
            activation: if self.activation == "relu" {
                klrl_policy::Activation::Relu
            } else {
                klrl_policy::Activation::Tanh
            },
        }
    }

    /// Where a Gaussian policy's σ comes from, and its initial log σ.
    pub fn gaussian_head(&self) -> klrl_policy::GaussianHead {
        let std = if self.use_sde {
            klrl_policy::GaussianStd::Gsde(klrl_policy::GsdeConfig {
                full_std: self.full_std,
                use_expln: self.use_expln,
                learn_features: self.learn_features,
            })
        } else if self.state_dependent_std {
            klrl_policy::GaussianStd::StateDependent
        } else {
            klrl_policy::GaussianStd::StateIndependent
        };
        klrl_policy::GaussianHead {
            std,
            log_std_init: self.log_std_init,
        }
    }

    /// Whether the policy's σ depends on the state (gSDE or the log-std
    /// head): only for continuous actions.
    pub fn state_dependent(&self) -> Option<&'static str> {
        if self.use_sde {
            Some("policy.use_sde")
        } else if self.state_dependent_std {
            Some("policy.state_dependent_std")
        } else {
            None
        }
    }
}

/// The PPO objective (Schulman et al. 2017).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PpoObjective {
    /// L = Ê[min(r Â, clip(r, 1 − ε, 1 + ε) Â)] (§3).
    Clip,
    /// L = Ê[r Â − β KL(π_old ‖ π_θ)] with a fixed β (§4).
    KlPenalty,
    /// The same with β adapted after every batch towards `kl_target` (§4).
    KlAdaptive,
    /// Clipping and the adaptive penalty together.
    ClipKlAdaptive,
    /// The penalty with β a Lagrange multiplier of the constraint
    /// Ê[KL(π_old ‖ π_θ)] ≤ `kl_target`, raised and lowered by dual ascent on
    /// the exact KL inside the update (after every step with one minibatch per
    /// epoch, after every epoch with several), with a floor `dual_beta_min`
    /// ([`crate::beta::DualBeta`]), and the epochs stopped before a step
    /// predicted to pass 1.5 `kl_target`.
    KlDual,
    /// Differentiable trust-region projection (Otto et al. 2021): each
    /// state's distribution is projected onto {π : KL(π_old ‖ π) ≤
    /// `proj_eps`} before the surrogate Ê[r̃ Â] is taken, plus a regression
    /// term pulling the network toward its projection
    /// ([`klrl_policy::KlProjection`]).
    Projection,
}

impl PpoObjective {
    /// Whether the objective clips the ratio.
    pub fn clips(self) -> bool {
        matches!(self, PpoObjective::Clip | PpoObjective::ClipKlAdaptive)
    }
    /// Whether the objective has a KL penalty β Ê[KL(π_old ‖ π_θ)].
    pub fn penalises(self) -> bool {
        !matches!(self, PpoObjective::Clip | PpoObjective::Projection)
    }
    /// Whether β follows the dual-ascent rule within the update.
    pub fn dual(self) -> bool {
        matches!(self, PpoObjective::KlDual)
    }
    /// Whether the surrogate is taken on the projected distributions.
    pub fn projects(self) -> bool {
        matches!(self, PpoObjective::Projection)
    }
    /// The name in configs.
    pub fn name(self) -> &'static str {
        match self {
            PpoObjective::Clip => "clip",
            PpoObjective::KlPenalty => "kl_penalty",
            PpoObjective::KlAdaptive => "kl_adaptive",
            PpoObjective::ClipKlAdaptive => "clip_kl_adaptive",
            PpoObjective::KlDual => "kl_dual",
            PpoObjective::Projection => "projection",
        }
    }
    /// Whether β adapts.
    pub fn adapts(self) -> bool {
        matches!(
            self,
            PpoObjective::KlAdaptive | PpoObjective::ClipKlAdaptive
        )
    }
}

/// PPO's hyperparameters. Defaults follow Stable-Baselines3's PPO and the
/// PPO paper; the CartPole zoo settings are in `configs/bench/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Which objective. Default `kl_adaptive`.
    pub objective: PpoObjective,
    /// Clip range ε of the ratio. Default 0.2 (paper, SB3).
    pub clip_eps: f64,
    /// Anneal ε linearly to 0 over the run. Default false.
    pub clip_anneal: bool,
    /// Initial (or fixed) KL-penalty coefficient β. Default 1.0 (paper §4).
    pub beta: f64,
    /// d_targ, the target mean KL in nats of the adaptive rule and of the
    /// dual control. Default 0.01 (paper §6.1).
    pub kl_target: f64,
    /// Lower clamp for the adaptive β. Default 1e-4.
    pub beta_min: f64,
    /// Upper clamp for the adaptive β. Default 1e3.
    pub beta_max: f64,
    /// Passes over the batch per update. Default 10 (SB3).
    pub n_epochs: usize,
    /// Transitions per minibatch; must divide into the batch at least once.
    /// Default 64 (SB3).
    pub minibatch_size: usize,
    /// Adam learning rate. Default 3e-4 (SB3).
    pub lr: f64,
    /// Anneal the learning rate linearly to 0 over the run. Default false.
    pub lr_anneal: bool,
    /// Adam ε. Default 1e-5 (Huang et al. detail 3).
    pub adam_eps: f64,
    /// Weight of the value loss. Default 0.5.
    pub vf_coef: f64,
    /// Clip value predictions to ± this around the old values; `None`
    /// (default) for no value clipping.
    pub clip_vf: Option<f64>,
    /// Weight of the entropy bonus. Default 0.0.
    pub ent_coef: f64,
    /// Global gradient-norm clip. Default 0.5.
    pub max_grad_norm: f64,
    /// Stop the epochs once the measured mean KL(π_old ‖ π_θ) exceeds this,
    /// checked before each minibatch step; `None` (default) never stops early.
    pub early_stop_kl: Option<f64>,
    /// Normalise advantages per minibatch. Default true.
    pub normalize_advantages: bool,
    /// A hard limit on the exact mean KL(π_old ‖ π_θ) over the batch states
    /// of every update, for any objective: after the epochs, a policy that
    /// moved further is pulled back along the segment θ_old → θ until it is
    /// within the limit, or restored to θ_old bit for bit
    /// ([`crate::kl_limit`]). `None` (default): no limit.
    pub max_kl: Option<f64>,
    /// `kl_dual`: step size η of the dual ascent on log β, log β ← log β +
    /// η (d / d_targ − 1) after every policy step (with one minibatch per
    /// epoch; after every epoch with several). Default 0.5 (chosen over
    /// 1.0 on CartPole seeds 0–2; see `configs/cartpole-ppo-kl-dual.toml`).
    pub dual_lr: f64,
    /// `kl_dual`: the floor of β. Dual ascent lowers β while the KL stays
    /// under target; the floor keeps a long quiet stretch from erasing the
    /// penalty, so the first large step after it is still resisted.
    /// Default 0.1.
    pub dual_beta_min: f64,
    /// `projection`: ε, the bound on every state's KL(π_old ‖ π̃). Required
    /// by (and only accepted with) `objective = "projection"`.
    pub proj_eps: Option<f64>,
    /// `projection`, Gaussian policies: the share of ε given to the variance
    /// part of the KL (the rest bounds the mean part), in (0, 1). Default
    /// [`klrl_policy::projection::DEFAULT_COV_FRAC`] (0.1).
    pub proj_cov_frac: f64,
    /// `projection`: weight of the regression term Ê[KL(π̃ ‖ π_θ)] (π̃
    /// detached) that pulls the network toward its projection (Otto et al.
    /// 2021, §4.1). Default 10 (on CartPole seeds 0–2 it reached a return of
    /// 475 after 24k / 23k / 31k steps, against 38k / 28k / 37k with 1).
    pub proj_reg_coef: f64,
    /// KL to a reference policy (`[algo.reference]`); `None` (default): none.
    pub reference: Option<ReferenceConfig>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            objective: PpoObjective::KlAdaptive,
            clip_eps: 0.2,
            clip_anneal: false,
            beta: 1.0,
            kl_target: 0.01,
            beta_min: 1e-4,
            beta_max: 1e3,
            n_epochs: 10,
            minibatch_size: 64,
            lr: 3e-4,
            lr_anneal: false,
            adam_eps: 1e-5,
            vf_coef: 0.5,
            clip_vf: None,
            ent_coef: 0.0,
            max_grad_norm: 0.5,
            early_stop_kl: None,
            normalize_advantages: true,
            max_kl: None,
            dual_lr: 0.5,
            dual_beta_min: 0.1,
            proj_eps: None,
            proj_cov_frac: klrl_policy::projection::DEFAULT_COV_FRAC,
            proj_reg_coef: 10.0,
            reference: None,
        }
    }
}

/// TRPO's (and NPG's) hyperparameters. Defaults follow sb3-contrib's TRPO
/// and Spinning Up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrpoConfig {
    /// δ, the trust region: the largest mean KL(π_old ‖ π_new) an update may
    /// have. Default 0.01.
    pub max_kl: f64,
    /// Conjugate-gradient iterations. Default 15 (sb3-contrib).
    pub cg_iters: usize,
    /// Damping λ added to the Fisher: (F + λI) x = g. Default 0.1.
    pub cg_damping: f64,
    /// Stop CG when ‖r‖² falls below this. Default 1e-10.
    pub cg_residual_tol: f64,
    /// Backtracking factor α of the line search. Default 0.8 (Spinning Up, sb3-contrib).
    pub ls_shrink: f64,
    /// Line-search candidates tried. Default 10.
    pub ls_max_steps: usize,
    /// Fraction of the batch's states used for Fisher-vector products, in
    /// (0, 1]. Default 1.0 (the whole batch).
    pub fvp_subsample: f64,
    /// Value-function Adam learning rate. Default 1e-3.
    pub vf_lr: f64,
    /// Value-function epochs per update. Default 10 (sb3-contrib `n_critic_updates`).
    pub vf_epochs: usize,
    /// Value-function minibatch size. Default 128 (sb3-contrib `batch_size`).
    pub vf_minibatch_size: usize,
    /// Normalise advantages over the batch. Default true.
    pub normalize_advantages: bool,
    /// Adam ε of the value function. Default 1e-5.
    pub adam_eps: f64,
    /// KL to a reference policy (`[algo.reference]`); `None` (default): none.
    pub reference: Option<ReferenceConfig>,
}

impl Default for TrpoConfig {
    fn default() -> Self {
        TrpoConfig {
            max_kl: 0.01,
            cg_iters: 15,
            cg_damping: 0.1,
            cg_residual_tol: 1e-10,
            ls_shrink: 0.8,
            ls_max_steps: 10,
            fvp_subsample: 1.0,
            vf_lr: 1e-3,
            vf_epochs: 10,
            vf_minibatch_size: 128,
            normalize_advantages: true,
            adam_eps: 1e-5,
            reference: None,
        }
    }
}

/// Vanilla policy gradient (A2C-style): one gradient step per batch on
/// −Ê[log π(a|s) Â] + c_v (V − R)², no KL control. Defaults follow SB3's A2C
/// (with Adam instead of RMSprop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgConfig {
    /// Adam learning rate. Default 7e-4 (SB3 A2C).
    pub lr: f64,
    /// Adam ε. Default 1e-5.
    pub adam_eps: f64,
    /// Weight of the value loss. Default 0.5.
    pub vf_coef: f64,
    /// Weight of the entropy bonus. Default 0.0.
    pub ent_coef: f64,
    /// Global gradient-norm clip; `f64::INFINITY` disables. Default 0.5.
    pub max_grad_norm: f64,
    /// Normalise advantages over the batch. Default false (SB3 A2C).
    pub normalize_advantages: bool,
    /// A hard limit on the exact mean KL(π_old ‖ π_θ) of every update (as
    /// PPO's `max_kl`); `None` (default): unconstrained.
    pub max_kl: Option<f64>,
    /// KL to a reference policy (`[algo.reference]`); `None` (default): none.
    pub reference: Option<ReferenceConfig>,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            lr: 7e-4,
            adam_eps: 1e-5,
            vf_coef: 0.5,
            ent_coef: 0.0,
            max_grad_norm: 0.5,
            normalize_advantages: false,
            max_kl: None,
            reference: None,
        }
    }
}

/// Where the reference policy π_ref of `[algo.reference]` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceSource {
    /// The policy at the start of the run, frozen (with `klrl train
    /// --init-from`, the policy loaded from there).
    Initial,
    /// The uniform distribution over a discrete action space (then
    /// KL(π ‖ π_ref) = log n − H(π): a floor on the entropy).
    Uniform,
    /// A fixed distribution over a discrete action space, `probs`.
    Fixed,
    /// A policy saved by `klrl train`: a run directory (its newest
    /// checkpoint) or a checkpoint directory, `path`. Any network shape, as
    /// long as the observation and action spaces match.
    Saved,
}

/// How KL(π_θ ‖ π_ref) enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceMode {
    /// The objective minus `coef` · Ê[KL(π_θ ‖ π_ref)], `coef` fixed (the
    /// KL penalty of RLHF, Ziegler et al. 2019, eq. 2).
    Penalty,
    /// The same with `coef` steered toward Ê\[KL\] = `target` once per update
    /// by Ziegler et al.'s proportional controller (2019, §2.2).
    Adaptive,
    /// Ê[KL(π_θ ‖ π_ref)] ≤ `max_kl` on every update, exactly: a Lagrange
    /// multiplier in the objective plus, for the first-order learners and
    /// NPG, a pull-back along θ_old → θ, for TRPO a condition of the line
    /// search.
    Constraint,
}

impl ReferenceMode {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            ReferenceMode::Penalty => "penalty",
            ReferenceMode::Adaptive => "adaptive",
            ReferenceMode::Constraint => "constraint",
        }
    }
}

/// `[algo.reference]`: keep the policy close to a reference policy π_ref,
/// measured by the exact mean over the batch states of KL(π_θ(·|s) ‖
/// π_ref(·|s)).
///
/// The direction is RLHF's (Ziegler et al. 2019; Ouyang et al. 2022), the
/// reverse of the per-update KL(π_old ‖ π_θ): the expectation is under the
/// policy being trained, so the bound limits what the policy *does* — the
/// log-likelihood ratio log π_θ/π_ref of the actions it takes, in
/// expectation — and it is finite whenever π_θ puts no mass where π_ref has
/// none (a deterministic production policy as π_ref forces π_θ to stay
/// deterministic where it is; the other direction would be infinite for any
/// π_θ that drops an action π_ref uses). With the uniform reference it is
/// log n − H(π_θ): the constraint is a floor on the entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceConfig {
    /// Where π_ref comes from. Default `initial`.
    pub source: ReferenceSource,
    /// `saved`: the run directory or checkpoint directory of π_ref
    /// (relative paths from the directory `klrl` runs in).
    pub path: Option<String>,
    /// `fixed`: the probability of each discrete action (positive, sum 1).
    pub probs: Option<Vec<f64>>,
    /// Penalty, adaptive coefficient or constraint. Default `penalty`.
    pub mode: ReferenceMode,
    /// The coefficient of Ê[KL(π_θ ‖ π_ref)] in the loss (advantages are
    /// normalised, so it is in units of advantage standard deviations per
    /// nat): fixed for `penalty`, the initial value for `adaptive` and the
    /// initial Lagrange multiplier for `constraint`. Default 0.1 (TRL's
    /// `init_kl_coef` 0.2 and `kl_coef` 0.05 bracket it).
    pub coef: f64,
    /// `adaptive`: the mean KL(π_θ ‖ π_ref) the coefficient steers toward.
    pub target: Option<f64>,
    /// `constraint`: ε_ref, the bound on the mean KL(π_θ ‖ π_ref) over the
    /// batch states of every update.
    pub max_kl: Option<f64>,
    /// `adaptive`: K_β of the controller coef ← coef · (1 + K_β e),
    /// e = clip(KL / target − 1, −0.2, 0.2). Default 0.1 (Ziegler et al.
    /// 2019, §2.2).
    pub adapt_rate: f64,
    /// `constraint`: step size η of the dual ascent on the multiplier,
    /// log coef ← log coef + η (KL / ε_ref − 1) with KL the mean
    /// KL(π_θ ‖ π_ref) the update's unconstrained step reached. Default 0.5
    /// (as PPO's `dual_lr`).
    pub dual_lr: f64,
    /// Lower clamp of the coefficient (adaptive and constraint). Default 1e-4.
    pub coef_min: f64,
    /// Upper clamp of the coefficient (adaptive and constraint). Default 1e3.
    pub coef_max: f64,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        ReferenceConfig {
            source: ReferenceSource::Initial,
            path: None,
            probs: None,
            mode: ReferenceMode::Penalty,
            coef: 0.1,
            target: None,
            max_kl: None,
            adapt_rate: 0.1,
            dual_lr: 0.5,
            coef_min: 1e-4,
            coef_max: 1e3,
        }
    }
}

impl ReferenceConfig {
    /// ε_ref when the mode is `constraint`.
    pub fn limit(&self) -> Option<f64> {
        match self.mode {
            ReferenceMode::Constraint => self.max_kl,
            _ => None,
        }
    }
}

/// The algorithm and its hyperparameters: the `[algo]` table, selected by
/// `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum AlgoConfig {
    /// PPO with the objective chosen by `objective`.
    Ppo(PpoConfig),
    /// TRPO: natural gradient step scaled to the trust region, backtracking
    /// line search on the exact KL and the surrogate.
    Trpo(TrpoConfig),
    /// Natural policy gradient: TRPO's full step without line search.
    Npg(TrpoConfig),
    /// Unconstrained vanilla policy gradient (the baseline).
    VanillaPg(PgConfig),
}

impl Default for AlgoConfig {
    fn default() -> Self {
        AlgoConfig::Ppo(PpoConfig::default())
    }
}

impl AlgoConfig {
    /// The `[algo.reference]` table, if any.
    pub fn reference(&self) -> Option<&ReferenceConfig> {
        match self {
            AlgoConfig::Ppo(p) => p.reference.as_ref(),
            AlgoConfig::Trpo(t) | AlgoConfig::Npg(t) => t.reference.as_ref(),
            AlgoConfig::VanillaPg(p) => p.reference.as_ref(),
        }
    }

    /// The `[algo.reference]` table to change, if any.
    pub fn reference_mut(&mut self) -> Option<&mut ReferenceConfig> {
        match self {
            AlgoConfig::Ppo(p) => p.reference.as_mut(),
            AlgoConfig::Trpo(t) | AlgoConfig::Npg(t) => t.reference.as_mut(),
            AlgoConfig::VanillaPg(p) => p.reference.as_mut(),
        }
    }

    /// The name used in configs and reports: `ppo`, `trpo`, `npg`, `vanilla-pg`.
    pub fn name(&self) -> &'static str {
        match self {
            AlgoConfig::Ppo(_) => "ppo",
            AlgoConfig::Trpo(_) => "trpo",
            AlgoConfig::Npg(_) => "npg",
            AlgoConfig::VanillaPg(_) => "vanilla-pg",
        }
    }
}

/// What an algorithm promises about how far one update moves the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlLimitKind {
    /// A target for the mean KL that a controller steers toward but does not
    /// enforce (PPO's penalties, NPG's step size).
    Target,
    /// A hard bound on the mean KL over the batch states, kept on every
    /// update (TRPO's δ, `max_kl`).
    Mean,
    /// A hard bound on every state's KL (the projection's ε).
    PerState,
}

/// The KL limit in force for an algorithm: its value in nats and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlLimit {
    /// The limit, in nats of KL(π_old ‖ π_new).
    pub value: f64,
    /// Target, mean bound or per-state bound.
    pub kind: KlLimitKind,
}

impl KlLimit {
    /// Whether the bound holds on every update by construction.
    pub fn is_hard(&self) -> bool {
        self.kind != KlLimitKind::Target
    }
}

impl PpoConfig {
    /// The projection's per-state ε; else a hard `max_kl` on the mean; else,
    /// for the penalties, `kl_target` as a target; `None` for plain clip.
    pub fn kl_limit(&self) -> Option<KlLimit> {
        let limit = |value, kind| Some(KlLimit { value, kind });
        if self.objective.projects() {
            return self.proj_eps.and_then(|e| limit(e, KlLimitKind::PerState));
        }
        match self.max_kl {
            Some(m) => limit(m, KlLimitKind::Mean),
            None if self.objective.penalises() => limit(self.kl_target, KlLimitKind::Target),
            None => None,
        }
    }
}

impl PgConfig {
    /// A hard `max_kl` on the mean, if set.
    pub fn kl_limit(&self) -> Option<KlLimit> {
        self.max_kl.map(|value| KlLimit {
            value,
            kind: KlLimitKind::Mean,
        })
    }
}

impl AlgoConfig {
    /// The limit an update of this algorithm is held to (or steered toward):
    /// PPO's and vanilla PG's (their `kl_limit`); TRPO's δ as a hard bound;
    /// NPG's δ as a target (the full natural step is not checked).
    pub fn kl_limit(&self) -> Option<KlLimit> {
        match self {
            AlgoConfig::Ppo(p) => p.kl_limit(),
            AlgoConfig::VanillaPg(p) => p.kl_limit(),
            AlgoConfig::Trpo(t) => Some(KlLimit {
                value: t.max_kl,
                kind: KlLimitKind::Mean,
            }),
            AlgoConfig::Npg(t) => Some(KlLimit {
                value: t.max_kl,
                kind: KlLimitKind::Target,
            }),
        }
    }
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The environment.
    pub env: EnvConfig,
    /// Rollouts, advantages, seed.
    #[serde(default)]
    pub train: TrainConfig,
    /// The policy network (and the value network, which has the same shape).
    #[serde(default)]
    pub policy: NetConfig,
    /// The algorithm.
    #[serde(default)]
    pub algo: AlgoConfig,
}

/// Most environment copies a config may ask for (`train.n_envs`): 100 000
/// CartPole copies take about 1 GB; far more would exhaust memory instead of
/// failing with a message.
pub const MAX_ENVS: usize = 100_000;

pub use crate::threads::MAX_THREADS;

/// Most transitions per batch (`train.n_envs × train.n_steps`): the rollout
/// buffer holds every one of them.
pub const MAX_BATCH: usize = 10_000_000;

/// Most weights between hidden layers (Σ hᵢ·hᵢ₊₁ + Σ hᵢ over `policy.hidden`):
/// 10⁸ f32 weights are 400 MB per network, before gradients and Adam moments.
pub const MAX_HIDDEN_WEIGHTS: usize = 100_000_000;

/// Range checks, each naming its field.
struct Check(Vec<OptimError>);

impl Check {
    fn that(&mut self, ok: bool, field: &str, reason: impl FnOnce() -> String) {
        if !ok {
            self.0.push(OptimError::config(field, reason()));
        }
    }
    fn positive(&mut self, field: &str, x: f64) {
        self.that(x.is_finite() && x > 0.0, field, || {
            format!("must be > 0, got {x}")
        });
    }
    fn non_negative(&mut self, field: &str, x: f64) {
        self.that(x.is_finite() && x >= 0.0, field, || {
            format!("must be >= 0, got {x}")
        });
    }
    fn at_least_one(&mut self, field: &str, x: usize) {
        self.that(x >= 1, field, || format!("must be >= 1, got {x}"));
    }
    fn unit_open_closed(&mut self, field: &str, x: f64) {
        self.that(x > 0.0 && x <= 1.0, field, || {
            format!("must be in (0, 1], got {x}")
        });
    }
}

/// The checks of `[algo.reference]`: each mode's own field required and the
/// others' refused, as for the PPO objectives.
fn check_reference(c: &mut Check, r: &ReferenceConfig) {
    let mode = r.mode.name();
    let own = |c: &mut Check, field: &str, value: Option<f64>, wanted: bool, why: &str| match (
        wanted, value,
    ) {
        (true, Some(v)) => c.positive(field, v),
        (true, None) => c.that(false, field, || {
            format!("required by mode = \"{mode}\" ({why})")
        }),
        (false, Some(_)) => c.that(false, field, || {
            format!("not used by mode = \"{mode}\"; remove it")
        }),
        (false, None) => {}
    };
    own(
        c,
        "algo.reference.target",
        r.target,
        r.mode == ReferenceMode::Adaptive,
        "the mean KL(π ‖ π_ref) the coefficient steers toward",
    );
    own(
        c,
        "algo.reference.max_kl",
        r.max_kl,
        r.mode == ReferenceMode::Constraint,
        "the bound ε_ref on the mean KL(π ‖ π_ref)",
    );
    c.non_negative("algo.reference.coef", r.coef);
    if r.mode != ReferenceMode::Penalty {
        c.positive("algo.reference.coef", r.coef);
    }
    c.positive("algo.reference.adapt_rate", r.adapt_rate);
    c.positive("algo.reference.dual_lr", r.dual_lr);
    c.positive("algo.reference.coef_min", r.coef_min);
    c.that(r.coef_max >= r.coef_min, "algo.reference.coef_max", || {
        format!("must be >= coef_min ({}), got {}", r.coef_min, r.coef_max)
    });
    let source = match r.source {
        ReferenceSource::Initial => "initial",
        ReferenceSource::Uniform => "uniform",
        ReferenceSource::Fixed => "fixed",
        ReferenceSource::Saved => "saved",
    };
    match (r.source, &r.path) {
        (ReferenceSource::Saved, None) => c.that(false, "algo.reference.path", || {
            "required by source = \"saved\" (a run or checkpoint directory)".into()
        }),
        (ReferenceSource::Saved, Some(p)) => c.that(!p.is_empty(), "algo.reference.path", || {
            "must not be empty".into()
        }),
        (_, Some(_)) => c.that(false, "algo.reference.path", || {
            format!("only source = \"saved\" uses it, the source is \"{source}\"")
        }),
        (_, None) => {}
    }
    match (r.source, &r.probs) {
        (ReferenceSource::Fixed, None) => c.that(false, "algo.reference.probs", || {
            "required by source = \"fixed\" (one probability per action)".into()
        }),
        (ReferenceSource::Fixed, Some(p)) => {
            let sum: f64 = p.iter().sum();
            c.that(
                !p.is_empty() && p.iter().all(|x| x.is_finite() && *x > 0.0),
                "algo.reference.probs",
                || {
                    format!(
                        "every probability must be finite and > 0 (KL(π ‖ π_ref) is infinite \
                         where π_ref has no mass), got {p:?}"
                    )
                },
            );
            c.that((sum - 1.0).abs() <= 1e-6, "algo.reference.probs", || {
                format!("must sum to 1, sum to {sum}")
            });
        }
        (_, Some(_)) => c.that(false, "algo.reference.probs", || {
            format!("only source = \"fixed\" uses it, the source is \"{source}\"")
        }),
        (_, None) => {}
    }
}

impl ExperimentConfig {
    /// Check every field's range and the fields' consistency. Returns the
    /// first problem found (in declaration order).
    pub fn validate(&self) -> Result<()> {
        let mut c = Check(Vec::new());
        let t = &self.train;
        c.that(!self.env.name.is_empty(), "env.name", || {
            "must not be empty".into()
        });
        c.at_least_one("train.total_steps", t.total_steps as usize);
        c.at_least_one("train.n_envs", t.n_envs);
        c.at_least_one("train.n_steps", t.n_steps);
        c.that(t.n_envs <= MAX_ENVS, "train.n_envs", || {
            format!("must be <= {MAX_ENVS}, got {}", t.n_envs)
        });
        let batch = t.n_envs.saturating_mul(t.n_steps);
        c.that(batch <= MAX_BATCH, "train.n_steps", || {
            format!(
                "the batch train.n_envs × train.n_steps = {} × {} must be <= {MAX_BATCH}",
                t.n_envs, t.n_steps
            )
        });
        c.that((0.0..=1.0).contains(&t.gamma), "train.gamma", || {
            format!("must be in [0, 1], got {}", t.gamma)
        });
        c.that(
            (0.0..=1.0).contains(&t.gae_lambda),
            "train.gae_lambda",
            || format!("must be in [0, 1], got {}", t.gae_lambda),
        );
        c.that(
            match t.threads {
                Threads::Auto => true,
                Threads::Count(n) => (1..=MAX_THREADS).contains(&n),
            },
            "train.threads",
            || {
                format!(
                    "must be \"auto\" or in [1, {MAX_THREADS}], got {}",
                    t.threads
                )
            },
        );
        c.that(
            t.max_rejected_updates >= 1,
            "train.max_rejected_updates",
            || format!("must be >= 1, got {}", t.max_rejected_updates),
        );
        c.that(t.dtype == "f32" || t.dtype == "f64", "train.dtype", || {
            format!("must be \"f32\" or \"f64\", got \"{}\"", t.dtype)
        });
        let p = &self.policy;
        c.that(p.hidden.iter().all(|&h| h >= 1), "policy.hidden", || {
            format!("every width must be >= 1, got {:?}", p.hidden)
        });
        let weights = p.hidden.windows(2).fold(
            p.hidden.iter().fold(0usize, |a, &h| a.saturating_add(h)),
            |a, w| a.saturating_add(w[0].saturating_mul(w[1])),
        );
        c.that(weights <= MAX_HIDDEN_WEIGHTS, "policy.hidden", || {
            format!(
                "too large: {:?} has more than {MAX_HIDDEN_WEIGHTS} weights between hidden layers",
                p.hidden
            )
        });
        c.that(
            p.activation == "tanh" || p.activation == "relu",
            "policy.activation",
            || format!("must be \"tanh\" or \"relu\", got \"{}\"", p.activation),
        );
        c.that(
            p.sde_sample_freq >= 1 || p.sde_sample_freq == -1,
            "policy.sde_sample_freq",
            || format!("must be >= 1 or -1, got {}", p.sde_sample_freq),
        );
        c.that(p.log_std_init.is_finite(), "policy.log_std_init", || {
            format!("must be finite, got {}", p.log_std_init)
        });
        if !p.use_sde {
            let only_sde = "only policy.use_sde = true uses it";
            c.that(p.sde_sample_freq == -1, "policy.sde_sample_freq", || {
                only_sde.into()
            });
            c.that(p.full_std, "policy.full_std", || only_sde.into());
            c.that(!p.use_expln, "policy.use_expln", || only_sde.into());
            c.that(!p.learn_features, "policy.learn_features", || {
                only_sde.into()
            });
        }
        c.that(
            !(p.use_sde && p.state_dependent_std),
            "policy.state_dependent_std",
            || "gSDE (policy.use_sde) already makes σ state-dependent; choose one".into(),
        );
        match &self.algo {
            AlgoConfig::Ppo(a) => {
                c.that(
                    a.clip_eps > 0.0 && a.clip_eps < 1.0,
                    "algo.clip_eps",
                    || format!("must be in (0, 1), got {}", a.clip_eps),
                );
                c.non_negative("algo.beta", a.beta);
                if a.objective.adapts() {
                    c.positive("algo.beta", a.beta);
                }
                c.positive("algo.kl_target", a.kl_target);
                c.positive("algo.beta_min", a.beta_min);
                c.that(a.beta_max >= a.beta_min, "algo.beta_max", || {
                    format!("must be >= beta_min ({}), got {}", a.beta_min, a.beta_max)
                });
                c.at_least_one("algo.n_epochs", a.n_epochs);
                c.at_least_one("algo.minibatch_size", a.minibatch_size);
                c.that(a.minibatch_size <= batch, "algo.minibatch_size", || {
                    format!(
                        "must be <= the batch size train.n_envs × train.n_steps = {batch}, got {}",
                        a.minibatch_size
                    )
                });
                c.positive("algo.lr", a.lr);
                c.positive("algo.adam_eps", a.adam_eps);
                c.non_negative("algo.vf_coef", a.vf_coef);
                if let Some(v) = a.clip_vf {
                    c.positive("algo.clip_vf", v);
                }
                c.non_negative("algo.ent_coef", a.ent_coef);
                c.that(a.max_grad_norm > 0.0, "algo.max_grad_norm", || {
                    format!("must be > 0, got {}", a.max_grad_norm)
                });
                if let Some(k) = a.early_stop_kl {
                    c.positive("algo.early_stop_kl", k);
                }
                if let Some(m) = a.max_kl {
                    c.positive("algo.max_kl", m);
                    c.that(!a.objective.projects(), "algo.max_kl", || {
                        "objective = \"projection\" already bounds every state's KL by \
                         proj_eps; remove max_kl"
                            .into()
                    });
                }
                if a.objective.dual() {
                    c.positive("algo.dual_lr", a.dual_lr);
                    c.positive("algo.dual_beta_min", a.dual_beta_min);
                    c.that(a.dual_beta_min <= a.beta_max, "algo.dual_beta_min", || {
                        format!(
                            "must be <= beta_max ({}), got {}",
                            a.beta_max, a.dual_beta_min
                        )
                    });
                }
                match (a.objective.projects(), a.proj_eps) {
                    (true, Some(e)) => c.positive("algo.proj_eps", e),
                    (true, None) => c.that(false, "algo.proj_eps", || {
                        "required by objective = \"projection\" (the per-state KL bound ε)".into()
                    }),
                    (false, Some(_)) => c.that(false, "algo.proj_eps", || {
                        format!(
                            "only objective = \"projection\" uses it, the objective is \"{}\"",
                            a.objective.name()
                        )
                    }),
                    (false, None) => {}
                }
                c.that(
                    a.proj_cov_frac > 0.0 && a.proj_cov_frac < 1.0,
                    "algo.proj_cov_frac",
                    || format!("must be in (0, 1), got {}", a.proj_cov_frac),
                );
                c.non_negative("algo.proj_reg_coef", a.proj_reg_coef);
            }
            AlgoConfig::Trpo(a) | AlgoConfig::Npg(a) => {
                c.positive("algo.max_kl", a.max_kl);
                c.at_least_one("algo.cg_iters", a.cg_iters);
                c.non_negative("algo.cg_damping", a.cg_damping);
                c.non_negative("algo.cg_residual_tol", a.cg_residual_tol);
                c.that(
                    a.ls_shrink > 0.0 && a.ls_shrink < 1.0,
                    "algo.ls_shrink",
                    || format!("must be in (0, 1), got {}", a.ls_shrink),
                );
                c.at_least_one("algo.ls_max_steps", a.ls_max_steps);
                c.unit_open_closed("algo.fvp_subsample", a.fvp_subsample);
                c.positive("algo.vf_lr", a.vf_lr);
                c.non_negative("algo.vf_epochs", a.vf_epochs as f64);
                c.at_least_one("algo.vf_minibatch_size", a.vf_minibatch_size);
                c.positive("algo.adam_eps", a.adam_eps);
            }
            AlgoConfig::VanillaPg(a) => {
                c.positive("algo.lr", a.lr);
                c.positive("algo.adam_eps", a.adam_eps);
                c.non_negative("algo.vf_coef", a.vf_coef);
                c.non_negative("algo.ent_coef", a.ent_coef);
                c.that(a.max_grad_norm > 0.0, "algo.max_grad_norm", || {
                    format!("must be > 0, got {}", a.max_grad_norm)
                });
                if let Some(m) = a.max_kl {
                    c.positive("algo.max_kl", m);
                }
            }
        }
        if let Some(r) = self.algo.reference() {
            check_reference(&mut c, r);
        }
        match c.0.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<ExperimentConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = parse("[env]\nname = \"CartPole-v1\"\n").unwrap();
        assert_eq!(c.train, TrainConfig::default());
        assert_eq!(c.algo, AlgoConfig::Ppo(PpoConfig::default()));
        c.validate().unwrap();
    }

    #[test]
    fn algorithms_are_selected_by_name() {
        let c = parse("[env]\nname = \"X\"\n[algo]\nname = \"trpo\"\nmax_kl = 0.02\n").unwrap();
        let AlgoConfig::Trpo(t) = &c.algo else {
            panic!("{c:?}")
        };
        assert_eq!(t.max_kl, 0.02);
        assert_eq!(t.cg_iters, 15);
        let c = parse("[env]\nname = \"X\"\n[algo]\nname = \"npg\"\n").unwrap();
        assert!(matches!(c.algo, AlgoConfig::Npg(_)));
        let c = parse("[env]\nname = \"X\"\n[algo]\nname = \"vanilla-pg\"\nlr = 0.01\n").unwrap();
        assert!(matches!(c.algo, AlgoConfig::VanillaPg(PgConfig { lr, .. }) if lr == 0.01));
        let c = parse(
            "[env]\nname = \"X\"\n[algo]\nname = \"ppo\"\nobjective = \"kl_penalty\"\nbeta = 3.0\n",
        )
        .unwrap();
        assert!(
            matches!(c.algo, AlgoConfig::Ppo(PpoConfig { objective: PpoObjective::KlPenalty, beta, .. }) if beta == 3.0)
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e =
            parse("[env]\nname = \"X\"\n[algo]\nname = \"trpo\"\nmax_kll = 0.02\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `max_kll`"), "{e}");
        let e = parse("[env]\nname = \"X\"\n[train]\ngama = 0.9\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `gama`"), "{e}");
        let e = parse("[env]\nname = \"X\"\n[algo]\nname = \"sac\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `sac`"), "{e}");
    }

    /// γ's range is closed at both ends: 0 is a bandit, 1 an undiscounted task.
    #[test]
    fn gamma_zero_and_one_are_valid() {
        for gamma in ["0.0", "1.0"] {
            let c = parse(&format!(
                "[env]\nname = \"CartPole-v1\"\n[train]\ngamma = {gamma}\n"
            ))
            .unwrap();
            c.validate().unwrap();
        }
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases = [
            ("[algo]\nname = \"trpo\"\nmax_kl = -0.01", "algo.max_kl: must be > 0, got -0.01"),
            ("[train]\ngamma = 1.5", "train.gamma: must be in [0, 1], got 1.5"),
            ("[train]\ngamma = -0.1", "train.gamma: must be in [0, 1], got -0.1"),
            ("[train]\ngamma = nan", "train.gamma: must be in [0, 1], got NaN"),
            ("[train]\ngae_lambda = -0.1", "train.gae_lambda: must be in [0, 1], got -0.1"),
            ("[train]\nn_envs = 0", "train.n_envs: must be >= 1, got 0"),
            ("[algo]\nname = \"ppo\"\nkl_target = 0.0", "algo.kl_target: must be > 0, got 0"),
            ("[algo]\nname = \"ppo\"\nlr = -1.0", "algo.lr: must be > 0, got -1"),
            (
                "[train]\nn_envs = 2\nn_steps = 8\n[algo]\nname = \"ppo\"\nminibatch_size = 64",
                "algo.minibatch_size: must be <= the batch size train.n_envs × train.n_steps = 16, got 64",
            ),
            ("[algo]\nname = \"npg\"\nls_shrink = 1.0", "algo.ls_shrink: must be in (0, 1), got 1"),
            ("[train]\ndtype = \"f16\"", "train.dtype: must be \"f32\" or \"f64\", got \"f16\""),
            ("[train]\nthreads = 0", "train.threads: must be \"auto\" or in [1, 1024], got 0"),
            ("[train]\nthreads = 5000", "train.threads: must be \"auto\" or in [1, 1024], got 5000"),
            (
                "[train]\nmax_rejected_updates = 0",
                "train.max_rejected_updates: must be >= 1, got 0",
            ),
            ("[train]\nn_envs = 100000000", "train.n_envs: must be <= 100000, got 100000000"),
            (
                "[train]\nn_envs = 8\nn_steps = 4611686018427387904",
                "train.n_steps: the batch train.n_envs × train.n_steps = 8 × 4611686018427387904 must be <= 10000000",
            ),
            ("[algo]\nname = \"ppo\"\nmax_kl = 0.0", "algo.max_kl: must be > 0, got 0"),
            ("[algo]\nname = \"ppo\"\nmax_kl = nan", "algo.max_kl: must be > 0, got NaN"),
            ("[algo]\nname = \"vanilla-pg\"\nmax_kl = -1.0", "algo.max_kl: must be > 0, got -1"),
            (
                "[algo]\nname = \"ppo\"\nobjective = \"projection\"",
                "algo.proj_eps: required by objective = \"projection\" (the per-state KL bound ε)",
            ),
            (
                "[algo]\nname = \"ppo\"\nobjective = \"clip\"\nproj_eps = 0.01",
                "algo.proj_eps: only objective = \"projection\" uses it, the objective is \"clip\"",
            ),
            (
                "[algo]\nname = \"ppo\"\nobjective = \"projection\"\nproj_eps = inf",
                "algo.proj_eps: must be > 0, got inf",
            ),
            (
                "[algo]\nname = \"ppo\"\nobjective = \"projection\"\nproj_eps = 0.01\nmax_kl = 0.01",
                "algo.max_kl: objective = \"projection\" already bounds every state's KL by proj_eps; remove max_kl",
            ),
            (
                "[algo]\nname = \"ppo\"\nobjective = \"projection\"\nproj_eps = 0.01\nproj_cov_frac = 1.0",
                "algo.proj_cov_frac: must be in (0, 1), got 1",
            ),
            (
                "[algo]\nname = \"ppo\"\nobjective = \"kl_dual\"\ndual_lr = 0.0",
                "algo.dual_lr: must be > 0, got 0",
            ),
            (
                "[policy]\nuse_sde = true\nsde_sample_freq = 0",
                "policy.sde_sample_freq: must be >= 1 or -1, got 0",
            ),
            (
                "[policy]\nuse_sde = true\nsde_sample_freq = -2",
                "policy.sde_sample_freq: must be >= 1 or -1, got -2",
            ),
            (
                "[policy]\nuse_sde = true\nlog_std_init = nan",
                "policy.log_std_init: must be finite, got NaN",
            ),
            (
                "[policy]\nlog_std_init = -inf",
                "policy.log_std_init: must be finite, got -inf",
            ),
            (
                "[policy]\nsde_sample_freq = 4",
                "policy.sde_sample_freq: only policy.use_sde = true uses it",
            ),
            (
                "[policy]\nlearn_features = true",
                "policy.learn_features: only policy.use_sde = true uses it",
            ),
            (
                "[policy]\nuse_sde = true\nstate_dependent_std = true",
                "policy.state_dependent_std: gSDE (policy.use_sde) already makes σ state-dependent; choose one",
            ),
            (
                "[policy]\nhidden = [100000, 100000]",
                "policy.hidden: too large: [100000, 100000] has more than 100000000 weights between hidden layers",
            ),
        ];
        for (body, expected) in cases {
            let c = parse(&format!("[env]\nname = \"CartPole-v1\"\n{body}\n")).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
    }

    /// `[algo.reference]`: each bad field is named with its reason, for
    /// every learner (the table is the same under ppo, trpo, npg and
    /// vanilla-pg); the good tables validate.
    #[test]
    fn reference_fields_name_the_field() {
        let cases = [
            (
                "mode = \"constraint\"\nmax_kl = 0.0",
                "algo.reference.max_kl: must be > 0, got 0",
            ),
            (
                "mode = \"constraint\"\nmax_kl = -0.1",
                "algo.reference.max_kl: must be > 0, got -0.1",
            ),
            (
                "mode = \"constraint\"\nmax_kl = nan",
                "algo.reference.max_kl: must be > 0, got NaN",
            ),
            (
                "mode = \"constraint\"",
                "algo.reference.max_kl: required by mode = \"constraint\" (the bound ε_ref on the mean KL(π ‖ π_ref))",
            ),
            (
                "mode = \"adaptive\"",
                "algo.reference.target: required by mode = \"adaptive\" (the mean KL(π ‖ π_ref) the coefficient steers toward)",
            ),
            (
                "mode = \"adaptive\"\ntarget = 0.0",
                "algo.reference.target: must be > 0, got 0",
            ),
            (
                "mode = \"penalty\"\nmax_kl = 0.01",
                "algo.reference.max_kl: not used by mode = \"penalty\"; remove it",
            ),
            (
                "max_kl = 0.01",
                "algo.reference.max_kl: not used by mode = \"penalty\"; remove it",
            ),
            (
                "mode = \"constraint\"\nmax_kl = 0.01\ntarget = 0.01",
                "algo.reference.target: not used by mode = \"constraint\"; remove it",
            ),
            ("coef = -1.0", "algo.reference.coef: must be >= 0, got -1"),
            (
                "mode = \"adaptive\"\ntarget = 0.01\ncoef = 0.0",
                "algo.reference.coef: must be > 0, got 0",
            ),
            ("adapt_rate = 0.0", "algo.reference.adapt_rate: must be > 0, got 0"),
            ("dual_lr = -1.0", "algo.reference.dual_lr: must be > 0, got -1"),
            ("coef_min = 0.0", "algo.reference.coef_min: must be > 0, got 0"),
            (
                "coef_min = 1.0\ncoef_max = 0.5",
                "algo.reference.coef_max: must be >= coef_min (1), got 0.5",
            ),
            (
                "source = \"saved\"",
                "algo.reference.path: required by source = \"saved\" (a run or checkpoint directory)",
            ),
            (
                "source = \"saved\"\npath = \"\"",
                "algo.reference.path: must not be empty",
            ),
            (
                "path = \"runs/a\"",
                "algo.reference.path: only source = \"saved\" uses it, the source is \"initial\"",
            ),
            (
                "source = \"fixed\"",
                "algo.reference.probs: required by source = \"fixed\" (one probability per action)",
            ),
            (
                "source = \"fixed\"\nprobs = [0.5, 0.4]",
                "algo.reference.probs: must sum to 1, sum to 0.9",
            ),
            (
                "source = \"fixed\"\nprobs = [1.0, 0.0]",
                "algo.reference.probs: every probability must be finite and > 0 (KL(π ‖ π_ref) is infinite where π_ref has no mass), got [1.0, 0.0]",
            ),
            (
                "source = \"fixed\"\nprobs = []",
                "algo.reference.probs: every probability must be finite and > 0 (KL(π ‖ π_ref) is infinite where π_ref has no mass), got []",
            ),
            (
                "source = \"uniform\"\nprobs = [0.5, 0.5]",
                "algo.reference.probs: only source = \"fixed\" uses it, the source is \"uniform\"",
            ),
        ];
        for algo in [
            "name = \"ppo\"",
            "name = \"trpo\"",
            "name = \"npg\"",
            "name = \"vanilla-pg\"",
        ] {
            for (body, expected) in cases {
                let text = format!(
                    "[env]\nname = \"CartPole-v1\"\n[algo]\n{algo}\n[algo.reference]\n{body}\n"
                );
                let c = parse(&text).unwrap();
                assert!(c.algo.reference().is_some(), "{text}");
                let e = c.validate().unwrap_err();
                assert_eq!(e.to_string(), expected, "{algo}");
            }
            for good in [
                "",
                "mode = \"constraint\"\nmax_kl = 0.05",
                "mode = \"adaptive\"\ntarget = 0.02",
                "source = \"uniform\"\nmode = \"constraint\"\nmax_kl = 0.1",
                "source = \"fixed\"\nprobs = [0.25, 0.75]",
                "source = \"saved\"\npath = \"runs/a\"\ncoef = 0.0",
            ] {
                let c = parse(&format!(
                    "[env]\nname = \"CartPole-v1\"\n[algo]\n{algo}\n[algo.reference]\n{good}\n"
                ))
                .unwrap();
                c.validate().unwrap();
            }
            // Unknown fields and values are refused by the parser, naming them.
            for (body, expected) in [
                ("max_kll = 0.01", "unknown field `max_kll`"),
                ("mode = \"hard\"", "unknown variant `hard`"),
                ("source = \"file\"", "unknown variant `file`"),
            ] {
                let e = parse(&format!(
                    "[env]\nname = \"X\"\n[algo]\n{algo}\n[algo.reference]\n{body}\n"
                ))
                .unwrap_err();
                assert!(e.to_string().contains(expected), "{algo}: {e}");
            }
        }
    }
}
