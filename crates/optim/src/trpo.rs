//! Trust Region Policy Optimization (Schulman et al. 2015, "Trust region
//! policy optimization", ICML, arXiv 1502.05477) and the natural policy
//! gradient (Kakade 2001; TRPO's full step without the line search).
//!
//! One update, top-down (the equation numbers are the TRPO paper's):
//!
//! 1. advantages Â over the batch (normalised when configured), and π_old,
//!    the policy that collected the batch, at every state of the batch;
//! 2. the surrogate L(θ) = Ê[r_θ Â], r_θ = π_θ(a|s) / π_old(a|s) (eq. 14), and
//!    its gradient g = ∇L(θ_old);
//! 3. Fisher-vector products (F + λI) v of the mean KL (Appendix C) from
//!    [`PolicyFisher::fisher`], optionally on a random subset of the
//!    states;
//! 4. conjugate gradient for (F + λI) x = g, x ≈ (F + λI)⁻¹ g, the natural
//!    gradient (Appendix C);
//! 5. the full step s = √(2δ / xᵀ(F + λI)x) · x, which has ½ sᵀ(F + λI)s = δ,
//!    the quadratic model of the constraint KL ≤ δ (eq. 12);
//! 6. TRPO: a backtracking line search θ_old + αʲ s, j = 0, 1, …, accepting the
//!    first candidate whose *exact* mean KL(π_old ‖ π_θ) over the batch is at
//!    most δ and whose surrogate improved (Appendix C); if none is accepted,
//!    θ_old is restored bit for bit. NPG takes θ_old + s.
//! 7. the value function fitted separately by Adam on mean (R − V)²
//!    (sb3-contrib's TRPO, Spinning Up).
//!
//! Hyperparameters and their defaults are documented in
//! [`TrpoConfig`].

use candle_core::{DType, Tensor};
use klrl_policy::{ActionMask, Dist, FisherOperator, Policy, PolicyFisher, ValueNet};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::adam::{widen, Adam};
use crate::algorithm::{AlgoState, Algorithm};
use crate::batch::{Batch, MiniBatch};
use crate::cg::{conjugate_gradient, dot, CgSolution};
use crate::config::TrpoConfig;
use crate::diagnostics::{explained_variance, UpdateDiagnostics};
use crate::error::{OptimError, Result};
use crate::kl_limit::{ref_limit, Guard};
use crate::measure::{diagnostics_from, kl_stats, mean, per_state_kl};
use crate::reference::{self, RefCheck, RefTerm};
use crate::rollout::candle_err;
use crate::value_fit::alongside;

/// TRPO or NPG, with the Adam state of the separately fitted value function.
#[derive(Debug, Clone)]
pub struct Trpo {
    /// The hyperparameters (validated by
    /// [`ExperimentConfig::validate`](crate::ExperimentConfig::validate)).
    pub config: TrpoConfig,
    /// `true` for TRPO (backtracking line search), `false` for NPG (the full
    /// natural step, always taken).
    pub line_search: bool,
    /// Adam over the value function's own parameters
    /// ([`ValueNet::unshared_vars`]).
    vf_adam: Adam,
    /// The KL-to-reference term of `[algo.reference]`, with its coefficient.
    reference: Option<RefTerm>,
}

/// What the policy step (steps 2–6) did, for the diagnostics.
#[derive(Debug, Clone)]
struct PolicyStep {
    /// The conjugate-gradient solve of (F + λI) x = g.
    cg: CgSolution,
    /// ‖g‖, the norm of the surrogate's gradient at θ_old.
    grad_norm: f64,
    /// Line-search candidates evaluated (0 for NPG).
    ls_steps: usize,
    /// Whether the parameters moved.
    accepted: bool,
    /// L(θ) at the parameters the update ends with.
    surrogate: f64,
    /// The mean KL(π_θ ‖ π_ref) at the full step (before the line search
    /// or pull-back), for the reference constraint's multiplier.
    proposed_ref: Option<f64>,
}

impl Trpo {
    /// A TRPO (`line_search = true`) or NPG (`false`) optimiser for a value
    /// network `value`, with fresh Adam moments for its own parameters.
    pub fn new(config: TrpoConfig, line_search: bool, value: &ValueNet) -> Self {
        let n = klrl_policy::flat::flat_len(&value.unshared_vars());
        let vf_adam = Adam::new(n, config.adam_eps);
        Trpo {
            reference: config.reference.as_ref().map(RefTerm::new),
            config,
            line_search,
            vf_adam,
        }
    }

    /// Steps 2–6: the natural-gradient step of the policy on the whole batch
    /// `mb`, scaled to the trust region and (TRPO) line-searched. `dist` is
    /// π_θ_old at the batch's states with its gradient graph, `old_log_probs`
    /// log π_old(a|s) of the batch's actions. On return the policy holds the
    /// accepted parameters, or exactly θ_old; the accepted distribution and
    /// log-probabilities come back for the diagnostics (`None`: unchanged).
    /// `ref_check`: the reference constraint, if any: a
    /// condition of TRPO's line search, a pull-back (and restoration) of
    /// NPG's step.
    #[allow(clippy::too_many_arguments)]
    fn policy_step(
        &self,
        policy: &mut dyn Policy,
        mb: &MiniBatch,
        dist: &Dist,
        old_log_probs: &Tensor,
        ref_check: Option<RefCheck>,
        rng: &mut ChaCha8Rng,
        update: u64,
    ) -> Result<(PolicyStep, Option<(Dist, Tensor)>)> {
        let c = &self.config;
        let mask = mb.mask.as_ref();
        let old = dist.detach();
        // 2. L(θ) = Ê[π_θ(a|s)/π_old(a|s) · Â] (eq. 14) and g = ∇_θ L at θ_old;
        //    with a reference, L(θ) − c Ê[KL(π_θ ‖ π_ref)] (crate::reference).
        let term = self.reference.as_ref().zip(mb.reference.as_ref());
        let (l_old, _) = surrogate(dist, mb, old_log_probs)?;
        let mut surrogate_old = scalar(&l_old, "surrogate")?;
        let mut objective = l_old;
        if let Some((t, r)) = term {
            if let Some(p) = t.penalty(dist, r)? {
                objective = (objective - p).map_err(candle_err("surrogate"))?;
            }
            surrogate_old -= t.coef * mean(&per_state_kl(&old, r)?);
        }
        let g = policy.flat_grad(&objective)?;
        let grad_norm = dot(&g, &g).sqrt();
        if !surrogate_old.is_finite() || !grad_norm.is_finite() {
            return Err(OptimError::NonFinite {
                what: "policy gradient",
                update,
            });
        }
        // 3. F v of the mean KL at θ_old (Appendix C), on a subset of states if asked.
        let fisher = self.fisher(policy, mb, rng)?;
        if let (true, Some(rc), Some((_, r))) = (self.line_search, ref_check, term) {
            if rc.starts_outside() {
                // Outside the reference ball on this batch: a recovery step.
                return self.recovery_step(policy, mb, dist, old_log_probs, r, &fisher, grad_norm);
            }
        }
        // 4. x ≈ (F + λI)⁻¹ g by conjugate gradient.
        let cg = natural_gradient(&fisher, &g, c)?;
        // 5. s = √(2δ / xᵀ(F + λI)x) · x, so that ½ sᵀ(F + λI)s = δ (eq. 12's quadratic model).
        let x_fx = dot(&cg.x, &fisher.apply_damped(&cg.x, c.cg_damping)?);
        let mut step = PolicyStep {
            grad_norm,
            cg,
            ls_steps: 0,
            accepted: false,
            surrogate: surrogate_old,
            proposed_ref: None,
        };
        if !(x_fx.is_finite() && x_fx > 0.0) {
            // g = 0 (e.g. all advantages equal) or a degenerate Fisher: no direction to take.
            return Ok((step, None));
        }
        let scale = (2.0 * c.max_kl / x_fx).sqrt();
        let full_step: Vec<f64> = step.cg.x.iter().map(|x| scale * x).collect();
        let theta_old = policy.get_flat()?;
        let candidate = |coef: f64| -> Vec<f64> {
            theta_old
                .iter()
                .zip(&full_step)
                .map(|(t, s)| t + coef * s)
                .collect()
        };
        if !self.line_search {
            // NPG: the full natural step, no line search; a reference
            // constraint pulls it back along θ_old → θ (crate::kl_limit).
            let theta = candidate(1.0);
            if theta.iter().any(|t| !t.is_finite()) {
                return Err(OptimError::NonFinite {
                    what: "natural gradient step",
                    update,
                });
            }
            let guard = Guard::arm(policy, None, None, ref_check.map(|r| r.for_guard()))?;
            policy.set_flat(&theta)?;
            if let Some(g) = guard {
                let outcome = g.enforce(policy, None, mb, &old, mb.reference.as_ref(), update)?;
                step.proposed_ref = Some(outcome.proposed_ref);
            }
            reference::restore_if_outside(policy, mb, mb.reference.as_ref(), ref_check)?;
            let new = policy.dist_detached(&mb.obs, mask)?;
            let (l, logp) = surrogate(&new, mb, old_log_probs)?;
            step.surrogate = scalar(&l, "surrogate")?;
            if let Some((t, r)) = term {
                step.surrogate -= t.coef * mean(&per_state_kl(&new, r)?);
            }
            step.accepted = policy.get_flat()? != theta_old;
            return Ok((step, Some((new, logp))));
        }
        // 6. Backtracking: θ_old + αʲ s, accept the first candidate with exact
        //    mean KL(π_old ‖ π_θ) ≤ δ and L(θ) > L(θ_old) (Appendix C); with a
        //    reference constraint also Ê[KL(π_θ ‖ π_ref)] ≤ ε_ref.
        let ref_limit = ref_check.map(|r| ref_limit(r.step_limit, r.at_old));
        let mut coef = 1.0;
        for j in 0..c.ls_max_steps {
            step.ls_steps = j + 1;
            let theta = candidate(coef);
            coef *= c.ls_shrink;
            if theta.iter().any(|t| !t.is_finite()) {
                continue;
            }
            // Every error path leaves the policy at θ_old.
            let measured = try_candidate(policy, &theta, mb, &old, old_log_probs, term);
            let (kl, l, kl_ref, new, logp) = match measured {
                Ok(measured) => measured,
                Err(e) => {
                    policy.set_flat(&theta_old)?;
                    return Err(e);
                }
            };
            if j == 0 {
                step.proposed_ref = Some(kl_ref);
            }
            // NaN compares false: a non-finite KL or surrogate rejects the candidate.
            let ref_ok = ref_limit.is_none_or(|limit| kl_ref <= limit);
            if kl <= c.max_kl && ref_ok && l > surrogate_old && l.is_finite() {
                step.accepted = true;
                step.surrogate = l;
                return Ok((step, Some((new, logp))));
            }
        }
        // Nothing accepted: restore θ_old exactly (an f32 value read as f64
        // and written back is the same f32).
        policy.set_flat(&theta_old)?;
        Ok((step, None))
    }

    /// TRPO's update when θ_old is outside the reference ball on this batch
    /// (D_ref(θ_old) > ε_ref): the recovery step of constrained policy
    /// optimisation (Achiam et al. 2017, §6.2, eq. 14 with the constraint
    /// alone): with b = ∇D_ref(θ_old) and x ≈ (F + λI)⁻¹ b by conjugate
    /// gradient, θ = θ_old − √(2δ / xᵀ(F + λI)x) · x, the step of KL ≈ δ that
    /// decreases D_ref the most to first order, backtracked until the exact
    /// KL(π_old ‖ π_θ) ≤ δ and D_ref decreased. The surrogate is not
    /// consulted. What δ could not reach is left to
    /// [`reference::restore_if_outside`].
    #[allow(clippy::too_many_arguments)]
    fn recovery_step(
        &self,
        policy: &mut dyn Policy,
        mb: &MiniBatch,
        dist: &Dist,
        old_log_probs: &Tensor,
        reference: &Dist,
        fisher: &FisherOperator,
        grad_norm: f64,
    ) -> Result<(PolicyStep, Option<(Dist, Tensor)>)> {
        let c = &self.config;
        let old = dist.detach();
        let e = candle_err("reference recovery");
        let d_old = mean(&per_state_kl(&old, reference)?);
        let b = policy.flat_grad(&dist.kl(reference)?.mean_all().map_err(&e)?)?;
        let cg = natural_gradient(fisher, &b, c)?;
        let x_fx = dot(&cg.x, &fisher.apply_damped(&cg.x, c.cg_damping)?);
        let (l, _) = surrogate(&old, mb, old_log_probs)?;
        let mut step = PolicyStep {
            cg,
            grad_norm,
            ls_steps: 0,
            accepted: false,
            surrogate: scalar(&l, "surrogate")?,
            proposed_ref: Some(d_old),
        };
        if !(x_fx.is_finite() && x_fx > 0.0) {
            return Ok((step, None));
        }
        let theta_old = policy.get_flat()?;
        let scale = (2.0 * c.max_kl / x_fx).sqrt();
        let mut coef = 1.0;
        for j in 0..c.ls_max_steps {
            step.ls_steps = j + 1;
            let theta: Vec<f64> = theta_old
                .iter()
                .zip(&step.cg.x)
                .map(|(t, x)| t - coef * scale * x)
                .collect();
            coef *= c.ls_shrink;
            if theta.iter().any(|t| !t.is_finite()) {
                continue;
            }
            let measured = try_candidate(policy, &theta, mb, &old, old_log_probs, None);
            let (kl, l, _, new, logp) = match measured {
                Ok(m) => m,
                Err(err) => {
                    policy.set_flat(&theta_old)?;
                    return Err(err);
                }
            };
            let d = mean(&per_state_kl(&new, reference)?);
            if kl <= c.max_kl && d < d_old {
                step.accepted = true;
                step.surrogate = l;
                return Ok((step, Some((new, logp))));
            }
        }
        policy.set_flat(&theta_old)?;
        Ok((step, None))
    }

    /// The Fisher operator at θ_old over all states of `mb`, or over a random
    /// `fvp_subsample` fraction of them (at least one) drawn with `rng`.
    fn fisher(
        &self,
        policy: &dyn Policy,
        mb: &MiniBatch,
        rng: &mut ChaCha8Rng,
    ) -> Result<FisherOperator> {
        let n = mb.len;
        let frac = self.config.fvp_subsample;
        if frac >= 1.0 || n <= 1 {
            return Ok(policy.fisher(&mb.obs, mb.mask.as_ref())?);
        }
        let k = ((frac * n as f64).ceil() as usize).clamp(1, n);
        let mut rows: Vec<usize> = rand::seq::index::sample(rng, n, k).into_vec();
        rows.sort_unstable();
        let mask = mb.mask.as_ref().map(|m| m.rows(&rows)).transpose()?;
        let idx = index_tensor(&rows, &mb.obs)?;
        let obs = mb
            .obs
            .index_select(&idx, 0)
            .map_err(candle_err("Fisher subsample"))?;
        Ok(policy.fisher(&obs, mask.as_ref())?)
    }
}

/// Step 7: fit V to the returns by Adam on mean (R − V)², `vf_epochs`
/// passes of shuffled minibatches of `vf_minibatch_size`. Only the value
/// network's own parameters move (with a shared trunk, the head), so the
/// fit cannot change the policy. No gradient clipping (as sb3-contrib's
/// TRPO). A minibatch step whose loss, gradient or new parameters are
/// not finite is skipped (parameters and Adam state untouched) and
/// counted. Returns the mean loss over the last epoch's applied steps
/// (NaN when `vf_epochs` is 0 or none was applied) and the number of
/// skipped steps.
fn fit_value(
    adam: &mut Adam,
    c: &TrpoConfig,
    value: &ValueNet,
    obs: &Tensor,
    returns: &Tensor,
    rng: &mut ChaCha8Rng,
) -> Result<(f64, u64)> {
    let vars = value.unshared_vars();
    let n = obs.dims().first().copied().unwrap_or(0);
    let size = c.vf_minibatch_size.clamp(1, n.max(1));
    let dtype = value.mlp().dtype();
    let e = candle_err("value fit");
    let obs = obs.to_dtype(dtype).map_err(&e)?;
    let returns = returns.to_dtype(dtype).map_err(&e)?;
    let mut order: Vec<usize> = (0..n).collect();
    let limit = crate::adam::largest_value(&vars);
    let (mut last_epoch_loss, mut skipped) = (f64::NAN, 0u64);
    for _ in 0..c.vf_epochs {
        order.shuffle(rng);
        let (mut sum, mut count) = (0.0, 0usize);
        for chunk in order.chunks(size) {
            let (o, r) = if chunk.len() == n {
                // One minibatch holds the whole batch: no gather needed.
                (obs.clone(), returns.clone())
            } else {
                let idx = index_tensor(chunk, &obs)?;
                (
                    obs.index_select(&idx, 0).map_err(&e)?,
                    returns.index_select(&idx, 0).map_err(&e)?,
                )
            };
            let (loss, grad) = value_loss_and_grad(value, &o, &r)?;
            let finite = loss.is_finite() && grad.iter().all(|g| g.is_finite());
            // A non-finite loss or gradient never reaches Adam's moments.
            if !(finite && adam.try_step_vars(&vars, &grad, 1.0, c.vf_lr, limit)?) {
                skipped += 1;
                continue;
            }
            sum += loss;
            count += 1;
        }
        last_epoch_loss = if count > 0 {
            sum / count as f64
        } else {
            f64::NAN
        };
    }
    Ok((last_epoch_loss, skipped))
}

/// The value loss and its gradient by the value network's reverse pass,
/// shared with PPO (see [`crate::value_fit`]).
pub use crate::value_fit::value_loss_and_grad;

/// Step 4: x ≈ (F + λI)⁻¹ g by conjugate gradient from x₀ = 0 (TRPO Appendix
/// C), with `cg_iters`, `cg_residual_tol` and λ = `cg_damping` from `config`.
pub fn natural_gradient(
    fisher: &FisherOperator,
    g: &[f64],
    config: &TrpoConfig,
) -> Result<CgSolution> {
    conjugate_gradient(
        |v| fisher.apply_damped(v, config.cg_damping),
        g,
        config.cg_iters,
        config.cg_residual_tol,
    )
    .map_err(OptimError::from)
}

/// L = mean(exp(log π(a|s) − log π_old(a|s)) · Â) over the batch, with the
/// log-probabilities `log π(a|s)` of `dist`.
fn surrogate(dist: &Dist, mb: &MiniBatch, old_log_probs: &Tensor) -> Result<(Tensor, Tensor)> {
    let log_probs = dist.log_prob(&mb.actions)?;
    let l = (&log_probs - old_log_probs)
        .and_then(|d| d.exp())
        .and_then(|r| r * &mb.advantages)
        .and_then(|x| x.mean_all())
        .map_err(candle_err("surrogate"))?;
    Ok((l, log_probs))
}

/// Set the policy to the line-search candidate `theta` and measure it: the
/// exact mean KL(π_old ‖ π_θ), the surrogate (minus c Ê[KL(π_θ ‖ π_ref)]
/// with a reference `term`), the mean KL(π_θ ‖ π_ref) (0 without), the
/// distributions and the batch actions' log-probabilities.
fn try_candidate(
    policy: &mut dyn Policy,
    theta: &[f64],
    mb: &MiniBatch,
    old: &Dist,
    old_log_probs: &Tensor,
    term: Option<(&RefTerm, &Dist)>,
) -> Result<(f64, f64, f64, Dist, Tensor)> {
    policy.set_flat(theta)?;
    let new = policy.dist_detached(&mb.obs, mb.mask.as_ref())?;
    let kl = mean(&per_state_kl(old, &new)?);
    let (l, logp) = surrogate(&new, mb, old_log_probs)?;
    let mut l = scalar(&l, "surrogate")?;
    let mut kl_ref = 0.0;
    if let Some((t, r)) = term {
        kl_ref = mean(&per_state_kl(&new, r)?);
        l -= t.coef * kl_ref;
    }
    Ok((kl, l, kl_ref, new, logp))
}

/// A one-element tensor as f64.
fn scalar(t: &Tensor, what: &'static str) -> Result<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .map_err(candle_err(what))
}

/// Row indices as a U32 tensor on the device of `like`.
fn index_tensor(rows: &[usize], like: &Tensor) -> Result<Tensor> {
    let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(idx, rows.len(), like.device()).map_err(candle_err("row indices"))
}

impl Algorithm for Trpo {
    fn name(&self) -> &'static str {
        if self.line_search {
            "trpo"
        } else {
            "npg"
        }
    }

    fn update(
        &mut self,
        policy: &mut dyn Policy,
        value: &mut ValueNet,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> Result<UpdateDiagnostics> {
        let explained_var = explained_variance(&batch.old_values, &batch.returns);
        // 1. Advantages over the whole batch; π_old at every state of the batch.
        let mb = batch.minibatch(policy, None, self.config.normalize_advantages)?;
        let reference = reference::required(self.reference.as_ref(), mb.reference.as_ref())?;
        let mask: Option<&ActionMask> = mb.mask.as_ref();
        let dist = policy.dist(&mb.obs, mask)?;
        let old = dist.detach();
        // log π_old recomputed (not the collector's copy) so that r(θ_old) = 1 exactly.
        let old_log_probs = old.log_prob(&mb.actions)?;
        // The reference constraint: ε_ref and D_ref(θ_old) on this batch
        // (crate::reference).
        let ref_check = reference::check(self.reference.as_mut(), &old, reference)?;
        // 2.–6. The policy step, measured.
        let mut policy_part = |rng: &mut ChaCha8Rng| -> Result<_> {
            let (step, new) = self.policy_step(
                policy,
                &mb,
                &dist,
                &old_log_probs,
                ref_check,
                rng,
                batch.update,
            )?;
            let (mut new, mut new_log_probs) =
                new.unwrap_or_else(|| (old.clone(), old_log_probs.clone()));
            if self.line_search {
                // Started outside the reference ball on this batch: restore (NPG
                // restores inside its step).
                if let Some(r) = reference::restore_if_outside(policy, &mb, reference, ref_check)? {
                    if r.steps > 0 {
                        new = policy.dist_detached(&mb.obs, mask)?;
                        new_log_probs = new.log_prob(&mb.actions)?;
                    }
                }
            }
            let kl = kl_stats(&old, &new, &old_log_probs, &new_log_probs)?;
            let kl_ref = match reference {
                Some(r) => per_state_kl(&new, r)?,
                None => Vec::new(),
            };
            Ok((step, kl, kl_ref))
        };
        // 7. The value function, fitted separately: alongside steps 2–6, as a
        //    task of the pool (on a second thread when `train.threads` ≥ 2),
        //    when that changes nothing — the value network shares no
        //    parameter with the policy and steps 2–6 draw no random number
        //    (no Fisher subsampling), so the fit gets the run's RNG exactly as
        //    it would after them. Otherwise after them, as written.
        let (config, obs, returns) = (&self.config, &mb.obs, &mb.returns);
        let mut vf_adam = self.vf_adam.clone();
        let concurrent = !value.is_shared() && config.fvp_subsample >= 1.0;
        let value_net: &ValueNet = value;
        let (policy_result, value_result) = if concurrent {
            let mut unused = rng.clone();
            alongside(
                || fit_value(&mut vf_adam, config, value_net, obs, returns, rng),
                || policy_part(&mut unused),
            )
        } else {
            let p = policy_part(rng);
            let fit = match &p {
                Ok(_) => fit_value(&mut vf_adam, config, value_net, obs, returns, rng),
                Err(_) => Ok((f64::NAN, 0)),
            };
            (p, fit)
        };
        let (step, kl, kl_ref) = policy_result?;
        let (value_loss, skipped) = value_result?;
        self.vf_adam = vf_adam;
        let mut d = diagnostics_from(&kl);
        d.policy_loss = -step.surrogate;
        d.value_loss = value_loss;
        d.explained_var = explained_var;
        d.grad_norm = step.grad_norm;
        d.cg_iters = step.cg.iters as f64;
        d.cg_residual = step.cg.residual;
        d.ls_steps = step.ls_steps as f64;
        d.accepted = if step.accepted { 1.0 } else { 0.0 };
        d.kl_limit = self.config.max_kl;
        d.lr = self.config.vf_lr;
        d.epochs_run = self.config.vf_epochs as f64;
        d.rejected_steps = skipped as f64;
        if let Some(term) = &mut self.reference {
            term.finish(&mut d, &kl_ref, step.proposed_ref);
        }
        Ok(d)
    }

    fn state(&self) -> AlgoState {
        let mut s = AlgoState::new(self.name());
        if let Some(r) = &self.reference {
            r.save(&mut s);
        }
        s.scalars.insert("vf_adam_t".into(), self.vf_adam.t as f64);
        s.vectors.insert("vf_adam_m".into(), widen(&self.vf_adam.m));
        s.vectors.insert("vf_adam_v".into(), widen(&self.vf_adam.v));
        s
    }

    fn load_state(&mut self, state: &AlgoState) -> Result<()> {
        state.expect_algo(self.name())?;
        let n = self.vf_adam.len();
        let t = state.scalar("vf_adam_t")?;
        if !(t >= 0.0 && t.fract() == 0.0 && t <= u64::MAX as f64) {
            return Err(OptimError::State(format!(
                "{}: `vf_adam_t` must be a whole number >= 0, got {t}",
                self.name()
            )));
        }
        let m = state.vector_f32("vf_adam_m", n)?;
        let v = state.vector_f32("vf_adam_v", n)?;
        let reference = self
            .reference
            .as_ref()
            .map(|r| r.restored(state))
            .transpose()?;
        self.reference = reference;
        self.vf_adam.m = m;
        self.vf_adam.v = v;
        self.vf_adam.t = t as u64;
        Ok(())
    }
}
