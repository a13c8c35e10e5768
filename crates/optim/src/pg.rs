//! The vanilla policy gradient, A2C-style (Williams 1992, "Simple statistical
//! gradient-following algorithms"; Mnih et al. 2016, "Asynchronous methods for
//! deep reinforcement learning", synchronous variant): one gradient step per
//! batch on
//!
//! loss = −Ê[log π_θ(a|s) Â] − c_e Ê[H(π_θ)] + c_v Ê[(R − V(s))²]
//!
//! with GAE advantages Â, Adam at a fixed learning rate and no control of how
//! far the policy moves — the baseline the KL-constrained methods improve on.

use candle_core::Tensor;
use klrl_policy::{Dist, Policy, ValueNet};
use rand_chacha::ChaCha8Rng;

use crate::adam::{widen, Adam};
use crate::algorithm::{AlgoState, Algorithm};
use crate::batch::{Batch, MiniBatch};
use crate::config::PgConfig;
use crate::diagnostics::{explained_variance, UpdateDiagnostics};
use crate::error::{OptimError, Result};
use crate::kl_limit::Guard;
use crate::losses::{scalars_to_host, trainable_vars, value_loss};
use crate::measure::{diagnostics_from, measure_update};
use crate::reference::{self, RefTerm};
use crate::rollout::candle_err;
use crate::value_fit::alongside_value_grad;

/// Vanilla policy gradient: the configuration and one Adam over the policy
/// and value parameters.
#[derive(Debug, Clone)]
pub struct VanillaPg {
    config: PgConfig,
    adam: Adam,
    /// The KL-to-reference term of `[algo.reference]`, with its coefficient.
    reference: Option<RefTerm>,
}

/// The terms of the vanilla policy-gradient loss, differentiable scalars.
#[derive(Debug, Clone)]
pub struct PgLoss {
    /// What Adam minimises: `policy + vf_coef · value − ent_coef · entropy`.
    pub total: Tensor,
    /// −Ê[log π_θ(a|s) Â].
    pub policy: Tensor,
    /// Ê[(R − V(s))²].
    pub value: Tensor,
    /// Ê[H(π_θ(·|s))].
    pub entropy: Tensor,
}

impl VanillaPg {
    /// The vanilla policy gradient for these networks, with fresh Adam
    /// moments over [`trainable_vars`]`(policy, value)`.
    pub fn new(config: PgConfig, policy: &dyn Policy, value: &ValueNet) -> Self {
        let n = klrl_policy::flat::flat_len(&trainable_vars(policy, value));
        VanillaPg {
            adam: Adam::new(n, config.adam_eps),
            reference: config.reference.as_ref().map(RefTerm::new),
            config,
        }
    }

    /// The loss on `mb` (advantages as given: normalise them when building `mb`).
    pub fn loss(&self, policy: &dyn Policy, value: &ValueNet, mb: &MiniBatch) -> Result<PgLoss> {
        let c = &self.config;
        let e = candle_err("policy-gradient loss");
        let dist = policy.dist(&mb.obs, mb.mask.as_ref())?;
        let (objective, policy_loss, entropy) = self.policy_terms(&dist, mb)?;
        let value_loss = value_loss(value, mb, None)?;
        let total = (&objective + value_loss.affine(c.vf_coef, 0.0).map_err(&e)?).map_err(&e)?;
        Ok(PgLoss {
            total,
            policy: policy_loss,
            value: value_loss,
            entropy,
        })
    }

    /// The policy's part of the loss for π_θ's distributions `dist` at the
    /// states of `mb`: (−Ê[log π Â] − c_e Ê[H], −Ê[log π Â], Ê[H]).
    fn policy_terms(&self, dist: &Dist, mb: &MiniBatch) -> Result<(Tensor, Tensor, Tensor)> {
        let e = candle_err("policy-gradient loss");
        // ∇J = Ê[∇ log π_θ(a|s) Â]  (the policy-gradient theorem)
        let mut policy_loss = (dist.log_prob(&mb.actions)? * &mb.advantages)
            .and_then(|x| x.mean_all())
            .and_then(|x| x.neg())
            .map_err(&e)?;
        if let (Some(term), Some(reference)) = (&self.reference, &mb.reference) {
            // + c Ê[KL(π_θ ‖ π_ref)], the reference term (crate::reference)
            if let Some(p) = term.penalty(dist, reference)? {
                policy_loss = (policy_loss + p).map_err(&e)?;
            }
        }
        let entropy = dist.entropy()?.mean_all().map_err(&e)?;
        let objective =
            (&policy_loss - entropy.affine(self.config.ent_coef, 0.0).map_err(&e)?).map_err(&e)?;
        Ok((objective, policy_loss, entropy))
    }

    /// The loss's value (total, policy, value) and its flat gradient over
    /// [`trainable_vars`] for a separate value network, without candle's
    /// backward through either network: the policy part by
    /// [`Policy::dist_with_pullback`], the value part by
    /// [`crate::value_fit::value_loss_and_grad`], alongside (the same gradient as a backward of
    /// [`VanillaPg::loss`]'s total).
    fn loss_and_grad_separate(
        &self,
        policy: &dyn Policy,
        value: &ValueNet,
        mb: &MiniBatch,
    ) -> Result<([f64; 3], Vec<f64>)> {
        let c = &self.config;
        // The policy's gradient on this thread, the value network's alongside.
        let mut v_grad = Vec::new();
        let (policy_part, value_part) = alongside_value_grad(
            value,
            &mb.obs,
            &mb.returns,
            c.vf_coef,
            &mut v_grad,
            || -> Result<_> {
                let (dist, pullback) = policy.dist_with_pullback(&mb.obs, mb.mask.as_ref())?;
                let (objective, policy_loss, _) = self.policy_terms(&dist, mb)?;
                let host = scalars_to_host(&[&objective, &policy_loss])?;
                let grads = objective
                    .backward()
                    .map_err(candle_err("policy-gradient backward"))?;
                Ok((host, pullback.flat_grad(&grads)?))
            },
        );
        let (host, mut grad) = policy_part?;
        let v_loss = value_part?;
        grad.extend_from_slice(&v_grad);
        Ok(([host[0] + c.vf_coef * v_loss, host[1], v_loss], grad))
    }
}

/// The error for a non-finite loss at update `update`.
fn check_finite_loss(total: f64, update: u64) -> Result<()> {
    if total.is_finite() {
        Ok(())
    } else {
        Err(OptimError::NonFinite {
            what: "loss",
            update,
        })
    }
}

impl Algorithm for VanillaPg {
    fn name(&self) -> &'static str {
        "vanilla-pg"
    }

    /// One Adam step on the whole batch; the KL columns measure how far that
    /// step moved the policy. With `max_kl`, the step is then held to the
    /// limit by [`Guard::enforce`] (as PPO's). `beta`, `clip_frac` and the
    /// CG/line-search columns are NaN, `epochs_run` is 1.
    fn update(
        &mut self,
        policy: &mut dyn Policy,
        value: &mut ValueNet,
        batch: &Batch,
        _rng: &mut ChaCha8Rng,
    ) -> Result<UpdateDiagnostics> {
        let c = &self.config;
        if batch.is_empty() {
            return Err(OptimError::Mismatch("vanilla PG got an empty batch".into()));
        }
        let explained_var = explained_variance(&batch.old_values, &batch.returns);
        let mut mb = batch.minibatch(policy, None, c.normalize_advantages)?;
        let old_dist = policy.dist_detached(&mb.obs, mb.mask.as_ref())?;
        // log π_old(a|s) in the run's dtype (not the collector's f32 copy), for
        // the sample KL estimates k1 and k3.
        mb.old_log_probs = old_dist.log_prob(&mb.actions)?;
        let vars = trainable_vars(policy, value);
        let (lr, max_grad_norm) = (c.lr, c.max_grad_norm);
        let reference = reference::required(self.reference.as_ref(), mb.reference.as_ref())?;
        let ref_check = reference::check(self.reference.as_mut(), &old_dist, reference)?;
        let guard = Guard::arm(
            policy,
            Some(&self.adam),
            c.kl_limit(),
            ref_check.map(|r| r.for_guard()),
        )?;
        let (host, grad_norm) = if value.is_shared() {
            // The value loss reaches the shared trunk: one backward through everything.
            let loss = self.loss(policy, value, &mb)?;
            let host = scalars_to_host(&[&loss.total, &loss.policy, &loss.value])?;
            check_finite_loss(host[0], batch.update)?;
            let grads = loss
                .total
                .backward()
                .map_err(candle_err("policy-gradient backward"))?;
            let norm = self
                .adam
                .step_vars(&vars, &grads, lr, max_grad_norm, batch.update)?;
            (host.to_vec(), norm)
        } else {
            let (host, grad) = self.loss_and_grad_separate(policy, value, &mb)?;
            check_finite_loss(host[0], batch.update)?;
            let norm = self
                .adam
                .step_flat(&vars, &grad, lr, max_grad_norm, batch.update)?;
            (host.to_vec(), norm)
        };
        let outcome = match guard {
            Some(g) => Some(g.enforce(
                policy,
                Some(&mut self.adam),
                &mb,
                &old_dist,
                reference,
                batch.update,
            )?),
            None => None,
        };
        let step_frac = outcome.map_or(f64::NAN, |o| o.step_frac);
        reference::restore_if_outside(policy, &mb, reference, ref_check)?;
        let (kl, kl_ref) = measure_update(policy, &mb, &old_dist, reference)?;
        let mut d = diagnostics_from(&kl);
        d.step_frac = step_frac;
        d.kl_limit = c.kl_limit().map_or(f64::NAN, |l| l.value);
        d.policy_loss = host[1];
        d.value_loss = host[2];
        d.explained_var = explained_var;
        d.grad_norm = grad_norm;
        d.accepted = if step_frac == 0.0 { 0.0 } else { 1.0 };
        d.lr = lr;
        d.epochs_run = 1.0;
        if let Some(term) = &mut self.reference {
            term.finish(&mut d, &kl_ref, outcome.map(|o| o.proposed_ref));
        }
        Ok(d)
    }

    /// Adam's step count `adam_t`, its moments `adam_m`, `adam_v`, and with
    /// a reference its state (`ref_coef`, `ref_last_end`, `ref_shift_ms`).
    fn state(&self) -> AlgoState {
        let mut s = AlgoState::new(self.name());
        if let Some(r) = &self.reference {
            r.save(&mut s);
        }
        s.scalars.insert("adam_t".into(), self.adam.t as f64);
        s.vectors.insert("adam_m".into(), widen(&self.adam.m));
        s.vectors.insert("adam_v".into(), widen(&self.adam.v));
        s
    }

    fn load_state(&mut self, state: &AlgoState) -> Result<()> {
        state.expect_algo(self.name())?;
        let t = state.scalar("adam_t")?;
        let n = self.adam.len();
        let m = state.vector_f32("adam_m", n)?;
        let v = state.vector_f32("adam_v", n)?;
        if !(t >= 0.0 && t.fract() == 0.0) {
            return Err(OptimError::State(format!(
                "vanilla-pg: adam_t must be a whole number >= 0, got {t}"
            )));
        }
        let reference = self
            .reference
            .as_ref()
            .map(|r| r.restored(state))
            .transpose()?;
        self.adam.t = t as u64;
        self.adam.m = m;
        self.adam.v = v;
        self.reference = reference;
        Ok(())
    }
}
