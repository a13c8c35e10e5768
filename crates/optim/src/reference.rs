//! KL to a reference policy: keep π_θ close to a fixed π_ref — a production
//! recommender, a pretrained agent, the uniform policy — while improving it.
//!
//! The per-update limits ([`crate::kl_limit`], TRPO's δ) bound each step
//! KL(π_old ‖ π_θ) but not their sum: many small steps can still walk far
//! from where the policy started. Here the distance is measured from a
//! reference that does not move, as in RLHF (Ziegler et al. 2019,
//! "Fine-tuning language models from human preferences", arXiv 1909.08593,
//! eq. 2: R(x, y) = r(x, y) − β log π(y|x)/ρ(y|x)), but with the exact
//! analytic KL at every batch state instead of the sampled log-ratio:
//!
//! D_ref(θ) = Ê_s[KL(π_θ(·|s) ‖ π_ref(·|s))],
//!
//! the direction and its reasons are documented on
//! [`ReferenceConfig`]. Three modes ([`ReferenceMode`]):
//!
//! - **penalty**: every learner's objective becomes J(θ) − c · D_ref(θ), c
//!   fixed (for PPO per minibatch, for TRPO/NPG in the surrogate whose
//!   gradient, natural step and line-search improvement test they use);
//! - **adaptive**: the same, with c moved once per update by Ziegler et
//!   al.'s proportional controller (§2.2): e = clip(D / target − 1, −0.2,
//!   0.2), c ← c (1 + K_β e);
//! - **constraint**: D_ref(θ) ≤ ε_ref on every update. c is the Lagrange
//!   multiplier of the constraint, moved by dual ascent on log c with the D
//!   the update's unconstrained step reached ([`crate::beta::DualBeta`]'s
//!   rule with ε_ref for the target), so the learner learns to stay inside;
//!   and exactness comes from the acceptance test: TRPO's line search accepts
//!   only candidates with D_ref ≤ ε_ref, the first-order learners and NPG pull
//!   an update that leaves the ball back along θ_old → θ
//!   ([`crate::kl_limit::enforce`]). Since D_ref is continuous along that
//!   segment and θ_old is inside, a feasible α always exists (α = 0 at worst).
//!   A run that *starts* outside the ball (a fresh network with a saved
//!   reference) cannot be inside after one update; there an update is held to
//!   max(ε_ref, D_ref(θ_old)) — it may not move further out — until the
//!   multiplier has pulled the policy in.
//!
//! π_ref is evaluated once per update, at every batch state (detached), by
//! the trainer ([`crate::Trainer`]); the learners cut minibatch rows from it.
//! A network reference carries its own frozen observation normaliser and is
//! evaluated on the raw observations, so a run whose own normaliser keeps
//! adapting still compares with the same fixed function of the state.

use candle_core::{DType, Device, Tensor};
use klrl_policy::{ActionMask, Categorical, Dist, Policy, PolicyFisher};

use crate::algorithm::AlgoState;
use crate::beta::DualBeta;
use crate::config::{ReferenceConfig, ReferenceMode};
use crate::diagnostics::UpdateDiagnostics;
use crate::error::{OptimError, Result};
use crate::measure::{max, mean};
use crate::normalize::ObsNormalizer;
use crate::rollout::candle_err;

/// A frozen reference policy π_ref.
pub struct Reference {
    kind: Kind,
}

enum Kind {
    /// A network with its frozen observation normaliser (`None`: it takes raw
    /// observations).
    Network {
        policy: Box<dyn Policy + Send>,
        obs_norm: Option<ObsNormalizer>,
    },
    /// A fixed distribution over discrete actions, as log-probabilities.
    Fixed { log_probs: Vec<f64> },
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Network { policy, obs_norm } => f
                .debug_struct("Reference::Network")
                .field("obs_dim", &policy.obs_dim())
                .field("action_dim", &policy.action_dim())
                .field("params", &policy.num_params())
                .field("obs_norm", &obs_norm.is_some())
                .finish(),
            Kind::Fixed { log_probs } => f
                .debug_struct("Reference::Fixed")
                .field("log_probs", log_probs)
                .finish(),
        }
    }
}

impl Reference {
    /// A network reference: `policy` (frozen: nothing here changes it) with
    /// the observation normaliser it was trained with.
    pub fn network(policy: Box<dyn Policy + Send>, obs_norm: Option<ObsNormalizer>) -> Self {
        Reference {
            kind: Kind::Network { policy, obs_norm },
        }
    }

    /// The uniform distribution over `n` discrete actions.
    pub fn uniform(n: usize) -> Result<Self> {
        Reference::fixed(&vec![1.0 / n.max(1) as f64; n])
    }

    /// A fixed distribution over discrete actions.
    ///
    /// Errors: [`OptimError::Config`] (`algo.reference.probs`) for no
    /// actions, a probability that is not finite and > 0, or a sum not 1.
    pub fn fixed(probs: &[f64]) -> Result<Self> {
        let sum: f64 = probs.iter().sum();
        let valid = !probs.is_empty()
            && probs.iter().all(|p| p.is_finite() && *p > 0.0)
            && (sum - 1.0).abs() <= 1e-6;
        if !valid {
            return Err(OptimError::config(
                "algo.reference.probs",
                format!("must be finite, > 0 and sum to 1, got {probs:?}"),
            ));
        }
        Ok(Reference {
            kind: Kind::Fixed {
                log_probs: probs.iter().map(|p| p.ln()).collect(),
            },
        })
    }

    /// The reference network and its normaliser, if it is one (for
    /// checkpoints).
    pub fn as_network(&self) -> Option<(&dyn Policy, Option<&ObsNormalizer>)> {
        match &self.kind {
            Kind::Network { policy, obs_norm } => Some((policy.as_ref(), obs_norm.as_ref())),
            Kind::Fixed { .. } => None,
        }
    }

    /// Check that π_ref fits a policy with `obs_dim` observations and
    /// `action_dim` actions (or action dimensions) of the kind `discrete`.
    ///
    /// Errors: [`OptimError::Mismatch`] naming both shapes.
    pub fn check_fits(&self, obs_dim: usize, action_dim: usize, discrete: bool) -> Result<()> {
        let (ref_obs, ref_act, ref_discrete) = match &self.kind {
            Kind::Network { policy, .. } => (
                Some(policy.obs_dim()),
                policy.action_dim(),
                matches!(
                    policy.dist(&zeros(policy.as_ref())?, None)?,
                    Dist::Categorical(_)
                ),
            ),
            Kind::Fixed { log_probs } => (None, log_probs.len(), true),
        };
        if ref_discrete != discrete {
            return Err(OptimError::Mismatch(format!(
                "the reference policy is {}, this run's action space is {}",
                if ref_discrete {
                    "discrete"
                } else {
                    "continuous"
                },
                if discrete { "discrete" } else { "continuous" },
            )));
        }
        if ref_act != action_dim || ref_obs.is_some_and(|o| o != obs_dim) {
            return Err(OptimError::Mismatch(format!(
                "the reference policy has {} observations and {ref_act} actions, this run {obs_dim} and {action_dim}",
                ref_obs.map_or("any".to_string(), |o| o.to_string()),
            )));
        }
        Ok(())
    }

    /// π_ref at `n` states, detached: `raw_obs` are the observations as the
    /// environment gave them (`n · obs_dim`), `mask` the action masks of the
    /// states (a masked action has no mass under π_ref either), in `dtype`
    /// on `device`.
    pub fn dist(
        &self,
        raw_obs: &[f32],
        n: usize,
        mask: Option<&ActionMask>,
        dtype: DType,
        device: &Device,
    ) -> Result<Dist> {
        let e = candle_err("reference policy");
        match &self.kind {
            Kind::Network { policy, obs_norm } => {
                let mut obs = raw_obs.to_vec();
                if let Some(norm) = obs_norm {
                    norm.normalize(&mut obs);
                }
                let d = policy.dist_detached(&policy.obs_tensor(&obs)?, mask)?;
                Ok(if policy.dtype() == dtype {
                    d
                } else {
                    convert(&d, dtype, mask)?
                })
            }
            Kind::Fixed { log_probs } => {
                let logits = Tensor::from_vec(log_probs.clone(), (1, log_probs.len()), device)
                    .and_then(|t| t.to_dtype(dtype))
                    .and_then(|t| t.broadcast_as((n, log_probs.len())))
                    .and_then(|t| t.contiguous())
                    .map_err(&e)?;
                Ok(Dist::Categorical(Categorical::from_logits(&logits, mask)?))
            }
        }
    }
}

/// One zero observation for the reference network (to learn its kind).
fn zeros(policy: &dyn Policy) -> Result<Tensor> {
    Ok(policy.obs_tensor(&vec![0.0; policy.obs_dim()])?)
}

/// A distribution in another dtype (a reference saved in f32 used by an f64 run).
fn convert(d: &Dist, dtype: DType, mask: Option<&ActionMask>) -> Result<Dist> {
    let e = candle_err("reference policy dtype");
    Ok(match d {
        Dist::Categorical(c) => {
            // The logits carry the mask's bias already; masking again is idempotent.
            let logits = c.logits().to_dtype(dtype).map_err(&e)?;
            Dist::Categorical(Categorical::from_logits(&logits, mask)?)
        }
        Dist::DiagGaussian(g) => Dist::DiagGaussian(klrl_policy::DiagGaussian::new(
            &g.mean().to_dtype(dtype).map_err(&e)?,
            &g.log_std().to_dtype(dtype).map_err(&e)?,
        )?),
    })
}

/// The reference term of one learner: its configuration and the current
/// coefficient c (fixed, adapted, or the Lagrange multiplier), which the
/// learner's state carries between updates (`ref_coef`).
#[derive(Debug, Clone, PartialEq)]
pub struct RefTerm {
    /// `[algo.reference]`.
    pub config: ReferenceConfig,
    /// The coefficient of D_ref in the loss for the next update.
    pub coef: f64,
    /// D_ref at the end of the previous update, on that update's batch
    /// (NaN before the first).
    pub last_end: f64,
    /// Running mean of the squared rise of D_ref from one batch to the next
    /// at unchanged parameters, D_ref(θ_old) on the new batch minus
    /// `last_end` (0 before the first): how far a new batch's states move
    /// the measured KL by themselves ([`RefCheck::step_limit`]).
    pub shift_ms: f64,
}

/// Weight of the newest rise in [`RefTerm::shift_ms`].
pub const SHIFT_RATE: f64 = 0.1;

impl RefTerm {
    /// The term for `config`, starting at its `coef`.
    pub fn new(config: &ReferenceConfig) -> Self {
        RefTerm {
            coef: config.coef,
            config: config.clone(),
            last_end: f64::NAN,
            shift_ms: 0.0,
        }
    }

    /// Write what the term carries between updates into an optimiser
    /// state: `ref_coef`, `ref_last_end`, `ref_shift_ms`.
    pub fn save(&self, state: &mut AlgoState) {
        state.scalars.insert("ref_coef".into(), self.coef);
        state.scalars.insert("ref_last_end".into(), self.last_end);
        state.scalars.insert("ref_shift_ms".into(), self.shift_ms);
    }

    /// This term with the values [`RefTerm::save`] wrote into `state`.
    ///
    /// Errors: [`OptimError::State`] when one is missing, or `ref_coef` or
    /// `ref_shift_ms` is not finite and ≥ 0 (`ref_last_end` may be NaN:
    /// saved before the first update).
    pub fn restored(&self, state: &AlgoState) -> Result<RefTerm> {
        let (coef, last_end, shift_ms) = (
            state.scalar("ref_coef")?,
            state.scalar("ref_last_end")?,
            state.scalar("ref_shift_ms")?,
        );
        let valid = |x: f64| x.is_finite() && x >= 0.0;
        if !valid(coef) || !valid(shift_ms) || last_end < 0.0 || last_end.is_infinite() {
            return Err(OptimError::State(format!(
                "{}: ref_coef and ref_shift_ms must be finite and >= 0, ref_last_end >= 0 or NaN; \
                 got {coef}, {shift_ms}, {last_end}",
                state.algo
            )));
        }
        Ok(RefTerm {
            coef,
            last_end,
            shift_ms,
            config: self.config.clone(),
        })
    }

    /// c · Ê[KL(π_θ ‖ π_ref)] over the states of `dist` (differentiable in
    /// π_θ), `reference` at the same states. `None` when c = 0.
    pub fn penalty(&self, dist: &Dist, reference: &Dist) -> Result<Option<Tensor>> {
        if self.coef == 0.0 {
            return Ok(None);
        }
        let e = candle_err("reference penalty");
        let kl = dist.kl(reference)?.mean_all().map_err(&e)?;
        Ok(Some(kl.affine(self.coef, 0.0).map_err(&e)?))
    }

    /// The bound ε_ref in constraint mode.
    pub fn limit(&self) -> Option<f64> {
        self.config.limit()
    }

    /// Move the coefficient after an update whose step reached a mean
    /// KL(π_θ ‖ π_ref) of `kl` (for the constraint, before any pull-back).
    pub fn adapt(&mut self, kl: f64) {
        let c = &self.config;
        self.coef = match c.mode {
            ReferenceMode::Penalty => self.coef,
            ReferenceMode::Adaptive => {
                let target = c.target.unwrap_or(f64::NAN);
                // e = clip(KL/target − 1, −0.2, 0.2); a non-finite KL counts as too large.
                let err = if kl.is_finite() {
                    (kl / target - 1.0).clamp(-0.2, 0.2)
                } else {
                    0.2
                };
                (self.coef * (1.0 + c.adapt_rate * err)).clamp(c.coef_min, c.coef_max)
            }
            ReferenceMode::Constraint => DualBeta {
                kl_target: c.max_kl.unwrap_or(f64::NAN),
                lr: c.dual_lr,
                beta_min: c.coef_min,
                beta_max: c.coef_max,
            }
            .next_beta(self.coef, kl),
        };
    }

    /// After an update: move the coefficient ([`RefTerm::adapt`]) and fill
    /// the reference columns of `d` ([`RefTerm::report`]) from the per-state
    /// KL(π_new ‖ π_ref) `per_state`. The constraint's multiplier moves with
    /// the mean KL the step proposed (`proposed`: before a pull-back or at
    /// the line search's full step), the penalties' coefficient with the KL
    /// kept.
    pub fn finish(&mut self, d: &mut UpdateDiagnostics, per_state: &[f64], proposed: Option<f64>) {
        self.last_end = mean(per_state);
        let proposed = match (self.limit(), proposed) {
            (Some(_), Some(p)) => p,
            _ => mean(per_state),
        };
        self.adapt(proposed);
        self.report(d, per_state);
    }

    /// The `kl_ref`, `kl_ref_max`, `kl_ref_limit` and `ref_coef` columns of
    /// `d` from the per-state KL(π_new ‖ π_ref) `per_state` (the limit
    /// column: ε_ref for the constraint, the target for the adaptive mode).
    pub fn report(&self, d: &mut UpdateDiagnostics, per_state: &[f64]) {
        d.kl_ref = mean(per_state);
        d.kl_ref_max = max(per_state);
        d.kl_ref_limit = match self.config.mode {
            ReferenceMode::Penalty => f64::NAN,
            ReferenceMode::Adaptive => self.config.target.unwrap_or(f64::NAN),
            ReferenceMode::Constraint => self.config.max_kl.unwrap_or(f64::NAN),
        };
        d.ref_coef = self.coef;
    }
}

/// Gradient iterations [`restore_within`] may spend.
pub const MAX_RESTORE_STEPS: usize = 20;

/// Conjugate-gradient iterations for a restoration direction.
const RESTORE_CG_ITERS: usize = 10;

/// Damping λ of the Fisher in a restoration direction, (F + λI)⁻¹ ∇D_ref
/// (TRPO's default `cg_damping`).
const RESTORE_DAMPING: f64 = 0.1;

/// Halvings (or doublings) of a restoration step before it is given up.
const MAX_RESTORE_HALVINGS: usize = 12;

/// What [`restore_within`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restoration {
    /// Restoration steps taken.
    pub steps: usize,
    /// The mean KL(π_θ ‖ π_ref) over the batch states at the end.
    pub kl_ref: f64,
}

/// Bring a policy that is outside the reference ball on this batch's states
/// back inside: D_ref(θ) = Ê[KL(π_θ ‖ π_ref)] ≤ `eps`.
///
/// An update can start outside although the previous one ended inside: the
/// mean is over the *new* batch's states. Moving only toward θ (the
/// pull-back of [`crate::kl_limit`], TRPO's line search) cannot then reach
/// the ball, so the policy descends D_ref itself along the natural
/// direction: each iteration takes x ≈ (F + λI)⁻¹ ∇D_ref(θ) by conjugate
/// gradient (F the Fisher at θ, λ = 0.1) and the step θ − t x with
/// t = (D − 0.9 ε) / (∇D_ref · x), where the linear model of D_ref reaches
/// 0.9 ε, doubled while D_ref keeps falling and is still above ε, or halved
/// until D_ref decreases; a step that lands inside is then shortened by
/// bisection to the smallest found with D_ref ≤ ε (within [0.9 ε, ε]). It
/// stops inside the ball, after [`MAX_RESTORE_STEPS`] iterations, or when
/// no step helps — the restoration step of constrained policy optimisation
/// for an infeasible iterate (Achiam et al. 2017, "Constrained policy
/// optimization", §6.2: a step that purely decreases the constraint).
///
/// The reference bound takes precedence over a per-update limit here (a
/// hard `max_kl`, TRPO's δ): with both, no point within δ of π_old need lie
/// inside the ball on the new states, and the bound to a trusted policy is
/// the one a user cannot do without. The update's `kl_old_new` then shows
/// the excess; these updates are the only ones where a per-update limit can
/// be exceeded, and only when a reference constraint is configured.
pub fn restore_within(
    policy: &mut dyn Policy,
    full: &crate::batch::MiniBatch,
    reference: &Dist,
    eps: f64,
) -> Result<Restoration> {
    let e = candle_err("reference restoration");
    let measure = |policy: &dyn Policy| -> Result<f64> {
        let new = policy.dist_detached(&full.obs, full.mask.as_ref())?;
        Ok(mean(&crate::measure::per_state_kl(&new, reference)?))
    };
    let mut d = measure(policy)?;
    let mut steps = 0;
    while (d > eps || d.is_nan()) && steps < MAX_RESTORE_STEPS {
        let (dist, pullback) = policy.dist_with_pullback(&full.obs, full.mask.as_ref())?;
        let loss = dist.kl(reference)?.mean_all().map_err(&e)?;
        let grads = loss.backward().map_err(&e)?;
        let grad = pullback.flat_grad(&grads)?;
        // The natural direction x ≈ (F + λI)⁻¹ ∇D_ref: D_ref is a KL, whose
        // curvature in θ the Fisher captures; plain gradient steps crawl
        // along its badly conditioned valleys (tens of iterations where this
        // takes one to three).
        let fisher = policy.fisher(&full.obs, full.mask.as_ref())?;
        let g = crate::cg::conjugate_gradient(
            |v| fisher.apply_damped(v, RESTORE_DAMPING),
            &grad,
            RESTORE_CG_ITERS,
            1e-10,
        )?
        .x;
        // The directional derivative of D_ref along −x is −∇D_ref · x.
        let gg: f64 = grad.iter().zip(&g).map(|(a, b)| a * b).sum();
        if !(gg.is_finite() && gg > 0.0 && d.is_finite()) {
            break;
        }
        let theta = policy.get_flat()?;
        let mut try_step = |t: f64| -> Result<f64> {
            let candidate: Vec<f64> = theta.iter().zip(&g).map(|(x, gi)| x - t * gi).collect();
            policy.set_flat(&candidate)?;
            measure(policy)
        };
        // The linear model's step, then doubled while D_ref keeps falling
        // and is still outside (the model underestimates the curvature's
        // help far less often than its harm), else halved until it falls.
        let mut t = (d - 0.9 * eps) / gg;
        let mut best = (0.0, d);
        let mut at = try_step(t)?;
        if at < best.1 {
            best = (t, at);
            for _ in 0..MAX_RESTORE_HALVINGS {
                if at <= eps {
                    break;
                }
                t *= 2.0;
                at = try_step(t)?;
                if at >= best.1 || at.is_nan() {
                    break;
                }
                best = (t, at);
            }
        } else {
            for _ in 0..MAX_RESTORE_HALVINGS {
                t *= 0.5;
                at = try_step(t)?;
                if at < best.1 {
                    best = (t, at);
                    break;
                }
            }
        }
        if best.0 == 0.0 {
            policy.set_flat(&theta)?;
            break;
        }
        if best.1 <= eps {
            // Inside: move back toward θ as far as the ball allows (the
            // smallest move in, so the per-update KL grows no more than it
            // must), bisecting between the last step known outside and the
            // step inside until D_ref is within [0.9 ε, ε].
            // The step before the one kept was outside when the kept one is
            // the last tried (doubling or the first try); otherwise only 0 is known.
            let mut outside = if best.0 == t { best.0 / 2.0 } else { 0.0 };
            for _ in 0..MAX_RESTORE_HALVINGS / 2 {
                if best.1 >= 0.9 * eps {
                    break;
                }
                let mid = 0.5 * (outside + best.0);
                let at_mid = try_step(mid)?;
                if at_mid <= eps {
                    best = (mid, at_mid);
                } else {
                    outside = mid;
                }
            }
        }
        // The parameters must be those whose D_ref was measured.
        d = try_step(best.0)?;
        steps += 1;
    }
    Ok(Restoration { steps, kl_ref: d })
}

/// Standard errors of the batch mean kept as a margin by an update's step
/// ([`RefCheck::step_limit`]).
pub const MARGIN_SE: f64 = 2.0;

/// The reference constraint of one update, measured at θ_old on the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefCheck {
    /// ε_ref, the bound every update must end within.
    pub eps: f64,
    /// The bound the update's *step* is held to (pull-back, line search):
    /// ε_ref less a margin, at least ε_ref / 2. The next batch's states are
    /// other states: ending at ε_ref exactly would start about every other
    /// update outside the ball and need a [`restore_within`]. The margin is
    /// [`MARGIN_SE`] times the larger of the batch mean's standard error
    /// s/√N (s the standard deviation of the per-state KL(π_old ‖ π_ref)
    /// over the N batch states: iid sampling noise) and the root mean square
    /// of the rises of D_ref from one batch to the next observed so far
    /// ([`RefTerm::shift_ms`]: consecutive states of a trajectory are
    /// correlated and the visited states drift with the policy, so the
    /// batch-to-batch change is often several standard errors).
    pub step_limit: f64,
    /// D_ref(θ_old), the mean KL(π_old ‖ π_ref) over the batch states.
    pub at_old: f64,
}

/// The reference constraint of an update (`None` unless the learner's term
/// is a constraint), from π_old and π_ref at the batch states; updates the
/// term's record of how much a new batch moves D_ref ([`RefTerm::shift_ms`]).
pub fn check(
    term: Option<&mut RefTerm>,
    old: &Dist,
    reference: Option<&Dist>,
) -> Result<Option<RefCheck>> {
    let (Some(term), Some(r)) = (term, reference) else {
        return Ok(None);
    };
    let Some(eps) = term.limit() else {
        return Ok(None);
    };
    let per_state = crate::measure::per_state_kl(old, r)?;
    let n = per_state.len().max(1) as f64;
    let at_old = mean(&per_state);
    let var = per_state.iter().map(|k| (k - at_old).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let se = (var / n).sqrt();
    let rise = at_old - term.last_end;
    if rise.is_finite() {
        term.shift_ms = (1.0 - SHIFT_RATE) * term.shift_ms + SHIFT_RATE * rise * rise;
    }
    let margin = (MARGIN_SE * se).max(MARGIN_SE * term.shift_ms.sqrt());
    let step_limit = if margin.is_finite() {
        (eps - margin).max(0.5 * eps)
    } else {
        0.5 * eps
    };
    Ok(Some(RefCheck {
        eps,
        step_limit,
        at_old,
    }))
}

impl RefCheck {
    /// Whether θ_old is outside the ball on this batch (a NaN counts as outside).
    pub fn starts_outside(&self) -> bool {
        self.at_old > self.eps || self.at_old.is_nan()
    }

    /// (step limit, D_ref(θ_old)) for [`crate::kl_limit::Guard::arm`].
    pub fn for_guard(&self) -> (f64, f64) {
        (self.step_limit, self.at_old)
    }
}

/// The reference constraint's second stage, after an update's steps and
/// pull-back: when the update started outside the ball on this batch
/// (D_ref(θ_old) > ε_ref), bring the policy in with [`restore_within`].
/// `None` when nothing was needed.
pub fn restore_if_outside(
    policy: &mut dyn Policy,
    full: &crate::batch::MiniBatch,
    reference: Option<&Dist>,
    check: Option<RefCheck>,
) -> Result<Option<Restoration>> {
    match (check, reference) {
        (Some(c), Some(r)) if c.starts_outside() => {
            Ok(Some(restore_within(policy, full, r, c.eps)?))
        }
        _ => Ok(None),
    }
}

/// The reference distributions a learner with `term` needs from the batch:
/// an error naming `algo.reference` when the trainer did not provide them.
pub fn required<'a>(
    term: Option<&RefTerm>,
    batch_ref: Option<&'a Dist>,
) -> Result<Option<&'a Dist>> {
    match (term, batch_ref) {
        (Some(_), None) => Err(OptimError::config(
            "algo.reference",
            "the batch has no reference distributions: set the reference policy \
             (Trainer::set_reference; `klrl train` loads it)",
        )),
        (Some(_), Some(r)) => Ok(Some(r)),
        (None, _) => Ok(None),
    }
}
