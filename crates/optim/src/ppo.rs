//! Proximal policy optimisation (Schulman, Wolski, Dhariwal, Radford & Klimov
//! 2017, "Proximal policy optimization algorithms", arXiv 1707.06347), with
//! every objective of the paper behind one implementation:
//!
//! - `clip` (§3, eq. 7): L = Ê[min(r Â, clip(r, 1 − ε, 1 + ε) Â)];
//! - `kl_penalty` (§4, eq. 8): L = Ê[r Â] − β Ê[KL(π_old ‖ π_θ)], fixed β;
//! - `kl_adaptive` (§4): the same, with β halved or doubled after every batch
//!   depending on the measured KL ([`AdaptiveBeta`]);
//! - `clip_kl_adaptive`: the clipped surrogate minus the adaptive penalty;
//! - `kl_dual`: the penalty with β a Lagrange multiplier driven by dual ascent
//!   after every policy step ([`DualBeta`]);
//! - `projection`: the surrogate on per-state projections of π_θ onto the KL
//!   ball around π_old (Otto et al. 2021), see [`Ppo::loss`].
//!
//! Any objective can be given a hard limit `max_kl` on the update's mean
//! KL(π_old ‖ π_θ), enforced after the epochs by [`crate::kl_limit`]; the
//! projection's per-state bound is enforced the same way on the largest
//! per-state KL.
//!
//! with r = π_θ(a|s) / π_old(a|s). The KL of the penalty is the exact analytic
//! KL between the action distributions at each state, never a sample estimate.
//! The full loss adds the value loss and the entropy bonus (eq. 9):
//! loss = −L + c_v Ê[(R − V)²] − c_e Ê[H(π_θ)], minimised by Adam over the
//! policy and value parameters together, with the global gradient norm clipped
//! (the practical details of Huang et al. 2022, "The 37 implementation details
//! of proximal policy optimization").
//!

use candle_core::{Tensor, Var};
use klrl_policy::{Dist, KlProjection, OutputPullback, Policy, ValueNet};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::adam::{widen, Adam, GradPart, SquaredNorm};
use crate::algorithm::{AlgoState, Algorithm};
use crate::batch::{Batch, MiniBatch};
use crate::beta::{AdaptiveBeta, DualBeta};
use crate::clip_head::{clip_head_with, OldKl, RefPenalty};
use crate::clip_surrogate;
use crate::config::PpoConfig;
use crate::diagnostics::{explained_variance, UpdateDiagnostics};
use crate::error::{OptimError, Result};
use crate::gaussian_clip_head::{gaussian_clip_head_with, GaussianOldKl, GaussianRefPenalty};
use crate::kl_limit::Guard;
use crate::losses::{scalars_to_host, trainable_vars, value_loss};
use crate::measure::{batch_mean_kl, diagnostics_from, measure_update, select_rows};
use crate::reference::{self, RefTerm};
use crate::rollout::candle_err;
use crate::value_fit::{
    alongside_value_part, value_loss_and_grad_into, value_loss_and_grad_into_f32,
};

/// PPO: the configuration, one Adam over the policy and value parameters, and
/// the KL-penalty coefficient β that the adaptive objectives carry from one
/// update to the next.
#[derive(Debug, Clone)]
pub struct Ppo {
    config: PpoConfig,
    adam: Adam,
    beta: f64,
    /// The KL-to-reference term of `[algo.reference]`, with its coefficient.
    reference: Option<RefTerm>,
    /// The flat gradient of the policy and value parameters and the value
    /// network's part, kept between minibatch steps so that their memory is
    /// allocated once (not state).
    grad_buffers: GradBuffers,
    /// Tests only: keep the loss head in candle's graph even where a host
    /// head ([`Ppo::host_clip_head`]) would take it, to compare the two.
    #[cfg(test)]
    graph_head_only: bool,
}

/// The policy's and the value network's parts of the flat gradient, in f64
/// or (f32 networks) f32, kept between minibatch steps.
#[derive(Debug, Clone, Default)]
struct GradBuffers {
    policy: Vec<f64>,
    value: Vec<f64>,
    policy_f32: Vec<f32>,
    value_f32: Vec<f32>,
}

/// Whether every variable is an f32 CPU tensor.
fn all_f32_cpu(vars: &[Var]) -> bool {
    vars.iter()
        .all(|v| v.device().is_cpu() && v.dtype() == candle_core::DType::F32)
}

/// The terms of PPO's loss on one minibatch, as differentiable scalar tensors
/// (the graph reaches the policy and value parameters).
#[derive(Debug, Clone)]
pub struct PpoLoss {
    /// What Adam minimises: `policy + vf_coef · value − ent_coef · entropy`.
    pub total: Tensor,
    /// The negated surrogate, plus `β · kl` for the penalised objectives.
    pub policy: Tensor,
    /// Ê[(R − V)²], or with `clip_vf` the larger of that and the clipped loss
    /// per sample (before `vf_coef`).
    pub value: Tensor,
    /// Ê[H(π_θ(·|s))] over the minibatch's states.
    pub entropy: Tensor,
    /// Ê[KL(π_old ‖ π_θ)], exact, over the minibatch's states (computed for
    /// the penalised objectives and when asked for; `None` otherwise).
    pub kl: Option<Tensor>,
    /// Fraction of samples with |r − 1| > ε (clipping objectives only).
    pub clip_frac: Option<Tensor>,
}

impl Ppo {
    /// PPO for these networks: fresh Adam moments over
    /// [`trainable_vars`]`(policy, value)` and β = `config.beta`.
    pub fn new(config: PpoConfig, policy: &dyn Policy, value: &ValueNet) -> Self {
        let n = klrl_policy::flat::flat_len(&trainable_vars(policy, value));
        Ppo {
            adam: Adam::new(n, config.adam_eps),
            beta: config.beta,
            reference: config.reference.as_ref().map(RefTerm::new),
            config,
            grad_buffers: GradBuffers::default(),
            #[cfg(test)]
            graph_head_only: false,
        }
    }

    /// The KL-penalty coefficient the next update will use.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// The configuration.
    pub fn config(&self) -> &PpoConfig {
        &self.config
    }

    /// The coefficient of the KL to the reference the next update uses.
    pub fn ref_coef(&self) -> Option<f64> {
        self.reference.as_ref().map(|r| r.coef)
    }

    /// PPO's loss on the minibatch `mb`, with `old` the distributions of
    /// π_old at the minibatch's states (detached) and `clip_eps` the current ε.
    /// `want_kl` computes the exact mean KL even for the plain clip objective
    /// (for early stopping).
    ///
    /// The ratio uses the log-probabilities recorded at collection time,
    /// r = exp(log π_θ(a|s) − log π_old(a|s)).
    pub fn loss(
        &self,
        policy: &dyn Policy,
        value: &ValueNet,
        mb: &MiniBatch,
        old: &Dist,
        clip_eps: f64,
        want_kl: bool,
    ) -> Result<PpoLoss> {
        let e = candle_err("PPO loss");
        let dist = policy.dist(&mb.obs, mb.mask.as_ref())?;
        let p = self.policy_terms(&dist, mb, old, clip_eps, want_kl, true)?;
        let value_loss = value_loss(value, mb, self.config.clip_vf)?;
        // −L^{CLIP+VF+S} = −L + c_v L^VF − c_e S  (eq. 9)
        let total = (&p.objective + value_loss.affine(self.config.vf_coef, 0.0).map_err(&e)?)
            .map_err(&e)?;
        Ok(PpoLoss {
            total,
            policy: p.policy,
            value: value_loss,
            entropy: match p.entropy {
                Some(h) => h,
                None => dist.entropy()?.mean_all().map_err(&e)?,
            },
            kl: p.kl,
            clip_frac: p.clip_frac,
        })
    }

    /// The policy's part of the loss: −L (+ β KL) − c_e S, for π_θ's
    /// distributions `dist` at the minibatch's states.
    pub(crate) fn policy_terms(
        &self,
        dist: &Dist,
        mb: &MiniBatch,
        old: &Dist,
        clip_eps: f64,
        want_kl: bool,
        with_entropy: bool,
    ) -> Result<PolicyTerms> {
        let c = &self.config;
        let e = candle_err("PPO loss");
        // projection: π̃ = argmin_q KL(π_θ ‖ q) s.t. KL(π_old ‖ q) ≤ ε per
        // state (Otto et al. 2021, eq. 4, in klrl's direction; the derivation
        // is in klrl_policy::projection), differentiable in θ.
        let projected = match (c.objective.projects(), c.proj_eps) {
            (true, Some(eps)) => Some(
                KlProjection {
                    eps,
                    cov_frac: c.proj_cov_frac,
                }
                .project(dist, old)?,
            ),
            _ => None,
        };
        let acting = projected.as_ref().unwrap_or(dist);
        let log_prob = acting.log_prob(&mb.actions)?;
        // r_t(θ) = π_θ(a_t|s_t) / π_old(a_t|s_t)  (eq. 6), with π̃ for π_θ
        // under the projection
        // The log-ratio is clamped to ±LOG_RATIO_MAX before exp: a policy
        // that moved absurdly far gives a large finite ratio (and no
        // gradient through that sample), not inf · Â.
        let ratio = (log_prob - &mb.old_log_probs)
            .and_then(|x| x.clamp(-LOG_RATIO_MAX, LOG_RATIO_MAX))
            .and_then(|x| x.exp())
            .map_err(&e)?;
        let unclipped = (&ratio * &mb.advantages).map_err(&e)?;
        let (surrogate, clip_frac) = if c.objective.clips() {
            // min(r Â, clip(r, 1 − ε, 1 + ε) Â)  (eq. 7)
            let clipped = ratio
                .clamp(1.0 - clip_eps, 1.0 + clip_eps)
                .and_then(|r| r * &mb.advantages)
                .and_then(|x| x.minimum(&unclipped))
                .map_err(&e)?;
            let frac = ratio
                .affine(1.0, -1.0)
                .and_then(|x| x.abs())
                .and_then(|x| x.gt(clip_eps))
                .and_then(|x| x.to_dtype(ratio.dtype()))
                .and_then(|x| x.mean_all())
                .map_err(&e)?;
            (clipped, Some(frac))
        } else {
            // r Â, the conservative policy iteration surrogate (eq. 6)
            (unclipped, None)
        };
        let mut policy_loss = surrogate.mean_all().and_then(|x| x.neg()).map_err(&e)?;
        let kl = if c.objective.penalises() || want_kl {
            Some(old.kl(dist)?.mean_all().map_err(&e)?)
        } else {
            None
        };
        if c.objective.penalises() {
            if let Some(kl) = &kl {
                // − L^KLPEN = −Ê[r Â] + β Ê[KL(π_old ‖ π_θ)]  (eq. 8)
                policy_loss = (policy_loss + kl.affine(self.beta, 0.0).map_err(&e)?).map_err(&e)?;
            }
        }
        if let (Some(term), Some(reference)) = (&self.reference, &mb.reference) {
            // + c Ê[KL(π_θ ‖ π_ref)], the reference term (crate::reference)
            if let Some(p) = term.penalty(dist, reference)? {
                policy_loss = (policy_loss + p).map_err(&e)?;
            }
        }
        if let Some(projected) = &projected {
            // The trust-region regression term α Ê[KL(π̃ ‖ π_θ)], π̃ detached:
            // pulls the network's own output toward its projection, so that
            // the policy the next rollout uses is (nearly) inside the trust
            // region without a projection (Otto et al. 2021, §4.1, eq. 7).
            let regression = projected.detach().kl(dist)?.mean_all().map_err(&e)?;
            policy_loss =
                (policy_loss + regression.affine(c.proj_reg_coef, 0.0).map_err(&e)?).map_err(&e)?;
        }
        // − c_e Ê[H(π_θ)]. Without a bonus (c_e = 0, the usual setting) the
        // entropy is left out of the graph unless asked for: the term is 0
        // and its gradient 0, so the step is the same, minus ~10 candle ops
        // and their backward per minibatch.
        let (objective, entropy) = if with_entropy || c.ent_coef != 0.0 {
            let entropy = dist.entropy()?.mean_all().map_err(&e)?;
            let objective =
                (&policy_loss - entropy.affine(c.ent_coef, 0.0).map_err(&e)?).map_err(&e)?;
            (objective, Some(entropy))
        } else {
            (policy_loss.clone(), None)
        };
        Ok(PolicyTerms {
            objective,
            policy: policy_loss,
            entropy,
            kl,
            clip_frac,
        })
    }
}

impl Ppo {
    /// One Adam step on the minibatch `mb` (π_old's distributions `old`):
    /// the loss, the checks, the gradient of the policy and value parameters
    /// together, the clipped step. Returns `None`, without stepping, when
    /// `args.stop_above` is set and the minibatch's exact mean KL exceeds it.
    ///
    /// With a separate value network and no value clipping (the usual
    /// setting), neither network goes through candle's backward: the policy
    /// loss is built on the leaves of [`Policy::dist_with_pullback`] (candle
    /// differentiates the distribution head only, the MLP's reverse pass does
    /// the rest) and the value part, c_v ∇ Ê[(R − V)²], comes from
    /// [`crate::value_fit::value_loss_and_grad`], computed alongside on a
    /// second thread when the pool has one. The gradient is the same (the two networks
    /// share no parameter) at well under half the cost. A shared trunk or a
    /// clipped value loss takes one backward through the whole loss.
    ///
    /// For the `clip` objective and the KL-penalised ones (with a KL asked
    /// for or not), with nothing added to it but a reference term
    /// ([`Ppo::host_clip_head`]) on a categorical policy or a Gaussian one
    /// with a state-independent σ, not even the head goes
    /// through candle: [`crate::clip_head`] / [`crate::gaussian_clip_head`]
    /// compute the loss, the clip fraction and its gradient in the network's
    /// outputs (and log σ) on host memory, the same bits as the graph.
    fn minibatch_step(
        &mut self,
        policy: &dyn Policy,
        value: &ValueNet,
        vars: &[Var],
        mb: &MiniBatch,
        old: &OldRows,
        args: &StepArgs,
    ) -> Result<Option<StepStats>> {
        let c = &self.config;
        let want_kl =
            args.stop_above.is_some() || args.stop_predicted_above.is_some() || args.measure_kl;
        if value.is_shared() || c.clip_vf.is_some() {
            // One backward through the whole loss.
            let l = self.loss(policy, value, mb, old.dist()?, args.clip_eps, want_kl)?;
            let terms = (l.policy, Some(l.value), l.kl, l.clip_frac);
            let Some(h) = self.step_host(&l.total, &terms, want_kl, args)? else {
                return Ok(None);
            };
            let grads = l.total.backward().map_err(candle_err("PPO backward"))?;
            let grad_norm =
                self.adam
                    .step_vars(vars, &grads, args.lr, c.max_grad_norm, args.update)?;
            return Ok(Some(h.stats(grad_norm)));
        }
        // The policy's gradient on this thread, the value network's alongside.
        // An f32 CPU network's gradient stays in f32 as computed (the value
        // part's c_v applied as Adam reads it, `GradPart::F32`): the same
        // values as widened to f64, in half the memory.
        let mut bufs = std::mem::take(&mut self.grad_buffers);
        let host_head = self.host_clip_head(policy, mb);
        // (`vars` are both networks' parameters, of the run's one dtype.)
        let value_f32 = all_f32_cpu(vars);
        let policy_f32 = host_head && value_f32;
        let value_grad = || -> Result<f64> {
            if value_f32 {
                value_loss_and_grad_into_f32(value, &mb.obs, &mb.returns, &mut bufs.value_f32)
            } else {
                let v = &mut bufs.value;
                let loss = value_loss_and_grad_into(value, &mb.obs, &mb.returns, v)?;
                v.iter_mut().for_each(|g| *g *= c.vf_coef);
                Ok(loss)
            }
        };
        let (policy_part, value_part) =
            alongside_value_part(value, &mb.obs, value_grad, || -> Result<_> {
                if host_head {
                    // The clipped surrogate and its gradient in the outputs
                    // on host memory, the same bits as the graph below.
                    let reference = self.host_reference(mb);
                    // KL(π_old ‖ π_θ): β with a penalty, else measured only
                    let old_kl = if c.objective.penalises() {
                        Some((old.dist()?, Some(self.beta)))
                    } else if want_kl {
                        Some((old.dist()?, None))
                    } else {
                        None
                    };
                    let clips = c.objective.clips();
                    if let Some((head, pullback)) =
                        host_loss_head(policy, mb, args.clip_eps, clips, old_kl, reference)?
                    {
                        let read = HostTerms {
                            objective: head.policy_loss,
                            policy: head.policy_loss,
                            value: None,
                            clip_frac: clips.then_some(head.clip_frac),
                            kl: if want_kl { head.kl } else { None },
                        };
                        let Some(h) = self.step_checks(read, args)? else {
                            return Ok(None);
                        };
                        let (d_out, d_log_std) = (Some(&head.d_outputs), head.d_log_std.as_ref());
                        let mut squares = SquaredNorm::default();
                        if policy_f32 {
                            let g = &mut bufs.policy_f32;
                            pullback.flat_grad_from_outputs_f32_into(d_out, d_log_std, g)?;
                            squares.add_part(GradPart::F32 {
                                grad: g,
                                scale: 1.0,
                            });
                        } else {
                            let g = &mut bufs.policy;
                            g.clear();
                            pullback.flat_grad_from_outputs_into(d_out, d_log_std, g)?;
                            squares.add(g);
                        }
                        // Σ g² of the policy's part while the value
                        // network's is still being computed.
                        return Ok(Some((h, squares, policy_f32)));
                    }
                }
                let (dist, pullback) = policy.dist_with_pullback(&mb.obs, mb.mask.as_ref())?;
                let p = self.policy_terms(&dist, mb, old.dist()?, args.clip_eps, want_kl, false)?;
                let terms = (p.policy, None, p.kl, p.clip_frac);
                let Some(h) = self.step_host(&p.objective, &terms, want_kl, args)? else {
                    return Ok(None);
                };
                let grads = p.objective.backward().map_err(candle_err("PPO backward"))?;
                bufs.policy.clear();
                pullback.flat_grad_into(&grads, &mut bufs.policy)?;
                Ok(Some((h, SquaredNorm::of(&bufs.policy), false)))
            });
        let stepped = (|| {
            let Some((mut h, mut squares, policy_in_f32)) = policy_part? else {
                return Ok(None);
            };
            let v_loss = value_part?;
            // total = policy objective + c_v · value loss
            h.total += c.vf_coef * v_loss;
            h.value_loss = v_loss;
            if !h.total.is_finite() {
                return Err(OptimError::NonFinite {
                    what: "loss",
                    update: args.update,
                });
            }
            // The gradient of the total: the policy's part, then c_v times
            // the value network's (scaled on its thread, or as Adam reads it).
            let policy_grad = if policy_in_f32 {
                GradPart::F32 {
                    grad: &bufs.policy_f32,
                    scale: 1.0,
                }
            } else {
                GradPart::F64(&bufs.policy)
            };
            let value_grad = if value_f32 {
                GradPart::F32 {
                    grad: &bufs.value_f32,
                    scale: c.vf_coef,
                }
            } else {
                GradPart::F64(&bufs.value)
            };
            squares.add_part(value_grad);
            let grad_norm = self.adam.step_parts(
                vars,
                &[policy_grad, value_grad],
                squares,
                args.lr,
                c.max_grad_norm,
                args.update,
            )?;
            Ok(Some(h.stats(grad_norm)))
        })();
        self.grad_buffers = bufs;
        stepped
    }

    /// The minibatch's losses on the host, and the stop rules: `None` when
    /// the step is to be skipped (its KL is above `args.stop_above`, or the KL
    /// it predicts above `args.stop_predicted_above`); an error when the loss
    /// is not finite. `terms` = (policy loss, value loss if in the graph, KL,
    /// clip fraction).
    fn step_host(
        &self,
        objective: &Tensor,
        terms: &(Tensor, Option<Tensor>, Option<Tensor>, Option<Tensor>),
        want_kl: bool,
        args: &StepArgs,
    ) -> Result<Option<StepHost>> {
        let (policy_loss, value_tensor, kl, clip_frac) = terms;
        let mut report = vec![objective, policy_loss];
        report.extend(value_tensor.as_ref());
        report.extend(clip_frac.as_ref());
        report.extend(kl.as_ref().filter(|_| want_kl));
        let host = scalars_to_host(&report)?;
        let mut next = host[2..].iter().copied();
        let read = HostTerms {
            objective: host[0],
            policy: host[1],
            value: value_tensor
                .as_ref()
                .map(|_| next.next().unwrap_or(f64::NAN)),
            clip_frac: clip_frac.as_ref().map(|_| next.next().unwrap_or(f64::NAN)),
            kl: if want_kl { next.next() } else { None },
        };
        self.step_checks(read, args)
    }

    /// The stop rules and the finiteness check of [`Ppo::step_host`] on the
    /// losses read back (or computed on the host).
    fn step_checks(&self, read: HostTerms, args: &StepArgs) -> Result<Option<StepHost>> {
        let value_loss = read.value.unwrap_or(f64::NAN);
        let clip_frac = read.clip_frac.unwrap_or(0.0);
        let kl_before = read.kl;
        if let (Some(limit), Some(kl)) = (args.stop_above, kl_before) {
            if kl > limit {
                return Ok(None);
            }
        }
        if let (Some((limit, prev_sqrt)), Some(kl)) = (args.stop_predicted_above, kl_before) {
            if predicted_kl(kl, prev_sqrt) > limit || !kl.is_finite() {
                return Ok(None);
            }
        }
        // The value part, when computed apart, is checked once it is added.
        if !(read.objective.is_finite() && (read.value.is_none() || value_loss.is_finite())) {
            return Err(OptimError::NonFinite {
                what: "loss",
                update: args.update,
            });
        }
        Ok(Some(StepHost {
            total: read.objective,
            policy_loss: read.policy,
            value_loss,
            clip_frac,
            kl_before,
        }))
    }

    /// Whether the minibatch step can take the policy's loss head on the
    /// host ([`host_loss_head`]): any objective but the projection, with no
    /// entropy bonus, no action mask, a dtype and device the heads support.
    /// The policy must further be categorical
    /// ([`Policy::logits_with_pullback`]) or Gaussian with a
    /// state-independent σ ([`Policy::gaussian_with_pullback`]), for every
    /// such objective with the KL penalty β Ê[KL(π_old ‖ π_θ)] and the KL
    /// asked for, and π_ref (and, for a KL, π_old) of the same kind;
    /// otherwise [`host_loss_head`] answers `None` and the step builds the
    /// graph.
    fn host_clip_head(&self, policy: &dyn Policy, mb: &MiniBatch) -> bool {
        #[cfg(test)]
        if self.graph_head_only {
            return false;
        }
        let c = &self.config;
        // A π_ref with a per-state σ (gSDE) keeps the graph.
        let reference_on_host = match (&self.reference, &mb.reference) {
            (Some(term), Some(Dist::DiagGaussian(r))) => {
                term.coef == 0.0 || !r.is_state_dependent()
            }
            _ => true,
        };
        !c.objective.projects()
            && c.ent_coef == 0.0
            && reference_on_host
            && mb.mask.is_none()
            && clip_surrogate::supported(policy.dtype(), policy.device())
    }

    /// The reference term for a host head: π_ref at the minibatch's states
    /// and c, as [`RefTerm::penalty`] adds it to the graph (`None` without a
    /// term or with c = 0).
    fn host_reference<'a>(&self, mb: &'a MiniBatch) -> Option<(&'a Dist, f64)> {
        match (&self.reference, &mb.reference) {
            (Some(term), Some(r)) if term.coef != 0.0 => Some((r, term.coef)),
            _ => None,
        }
    }
}

/// What a host loss head computed for one minibatch: −L^CLIP (plus the
/// reference term), the clip fraction, and the loss's gradients at the
/// leaves of the policy's pullback.
struct HostHead {
    policy_loss: f64,
    clip_frac: f64,
    /// ∂(policy_loss)/∂(logits or means), `[N, out]`.
    d_outputs: Tensor,
    /// ∂(policy_loss)/∂log σ, `[d]` (Gaussian policies).
    d_log_std: Option<Tensor>,
    /// Ê[KL(π_old ‖ π_θ)], where computed.
    kl: Option<f64>,
}

/// The surrogate of the minibatch `mb` (clipped if `clips`), plus
/// β Ê[KL(π_old ‖ π_θ)] for `old_kl` = (π_old, Some(β)) (with `None` the KL
/// is measured only) and c Ê[KL(π_θ ‖ π_ref)] for `reference` = (π_ref, c),
/// and its gradient at the network's outputs,
/// on host memory ([`crate::clip_head`] for a categorical policy,
/// [`crate::gaussian_clip_head`] for a Gaussian one with a state-independent
/// σ), with the pullback that carries it to the parameters; `None` for the
/// other policies and references. For [`Ppo::minibatch_step`] when
/// [`Ppo::host_clip_head`] allows it.
fn host_loss_head(
    policy: &dyn Policy,
    mb: &MiniBatch,
    clip_eps: f64,
    clips: bool,
    old_kl: Option<(&Dist, Option<f64>)>,
    reference: Option<(&Dist, f64)>,
) -> Result<Option<(HostHead, OutputPullback)>> {
    if let Some((logits, pullback)) = policy.logits_with_pullback(&mb.obs)? {
        let old_kl = match old_kl {
            None => None,
            Some((Dist::Categorical(o), beta)) => Some(OldKl {
                log_probs: o.log_probs(),
                beta,
            }),
            Some(_) => return Ok(None),
        };
        let reference = match reference {
            None => None,
            Some((r, coef)) => match RefPenalty::of(r, coef) {
                Some(p) => Some(p),
                None => return Ok(None),
            },
        };
        let head = clip_head_with(
            &logits,
            &mb.actions,
            &mb.old_log_probs,
            &mb.advantages,
            clip_eps,
            clips,
            old_kl,
            reference,
        )?;
        let head = HostHead {
            policy_loss: head.policy_loss,
            clip_frac: head.clip_frac,
            d_outputs: head.d_logits,
            d_log_std: None,
            kl: head.kl,
        };
        return Ok(Some((head, pullback)));
    }
    // KL(π_old ‖ π_θ) on the Gaussian head needs a π_old with a
    // state-independent σ (as π_θ's must be); otherwise the graph.
    let old_kl = match old_kl {
        None => None,
        Some((Dist::DiagGaussian(o), beta)) if !o.is_state_dependent() => Some(GaussianOldKl {
            mean: o.mean(),
            log_std: o.log_std(),
            beta,
        }),
        Some(_) => return Ok(None),
    };
    if let Some((mean, log_std, pullback)) = policy.gaussian_with_pullback(&mb.obs)? {
        let reference = match reference {
            None => None,
            Some((Dist::DiagGaussian(r), coef)) if !r.is_state_dependent() => {
                Some(GaussianRefPenalty {
                    mean: r.mean(),
                    log_std: r.log_std(),
                    coef,
                })
            }
            Some(_) => return Ok(None),
        };
        let head = gaussian_clip_head_with(
            &mean,
            &log_std,
            &mb.actions,
            &mb.old_log_probs,
            &mb.advantages,
            clip_eps,
            clips,
            old_kl,
            reference,
        )?;
        let head = HostHead {
            policy_loss: head.policy_loss,
            clip_frac: head.clip_frac,
            d_outputs: head.d_mean,
            d_log_std: Some(head.d_log_std),
            kl: head.kl,
        };
        return Ok(Some((head, pullback)));
    }
    Ok(None)
}

/// The scalars of a minibatch step's loss on the host: the objective, the
/// policy loss, and where they were computed the value loss, the clip
/// fraction and the KL.
struct HostTerms {
    objective: f64,
    policy: f64,
    value: Option<f64>,
    clip_frac: Option<f64>,
    kl: Option<f64>,
}

/// What [`Ppo::step_host`] read back before a step.
struct StepHost {
    total: f64,
    policy_loss: f64,
    value_loss: f64,
    clip_frac: f64,
    kl_before: Option<f64>,
}

impl StepHost {
    fn stats(&self, grad_norm: f64) -> StepStats {
        StepStats {
            policy_loss: self.policy_loss,
            value_loss: self.value_loss,
            clip_frac: self.clip_frac,
            grad_norm,
            kl_before: self.kl_before,
        }
    }
}

/// The bound on |log r| before r = exp(log r) is taken: e^20 ≈ 4.9e8, far
/// beyond any ratio a working update produces, far below f32's overflow at
/// e^88. Inside the bound the clamp changes neither values nor gradients.
pub const LOG_RATIO_MAX: f64 = 20.0;

/// `kl_dual` stops the epochs before a step predicted to take the mean KL
/// above this multiple of `kl_target` (the upper edge of the paper's band
/// d_targ / 1.5 … 1.5 d_targ).
pub const DUAL_STOP: f64 = 1.5;

/// The KL one more step (or epoch) is expected to reach, from the KL `kl`
/// now and `prev_sqrt`, √KL at the previous measurement: KL is quadratic in
/// the displacement and consecutive Adam steps have similar lengths, so √KL
/// grows about linearly, √d_next ≈ √d + (√d − √d_prev).
pub fn predicted_kl(kl: f64, prev_sqrt: f64) -> f64 {
    let now = kl.max(0.0).sqrt();
    (now + (now - prev_sqrt).max(0.0)).powi(2)
}

/// The per-step settings of [`Ppo::minibatch_step`].
struct StepArgs {
    clip_eps: f64,
    lr: f64,
    /// Skip the step when the minibatch's mean KL exceeds this.
    stop_above: Option<f64>,
    /// `kl_dual`: skip the step when the KL it would lead to,
    /// [`predicted_kl`] from this step's KL and the previous step's √KL (the
    /// second value), exceeds the first value.
    stop_predicted_above: Option<(f64, f64)>,
    /// Measure the minibatch's KL before the step even without a stop rule.
    measure_kl: bool,
    update: u64,
}

/// What one minibatch step measured (losses before the step).
struct StepStats {
    policy_loss: f64,
    value_loss: f64,
    /// 0 for the unclipped objectives.
    clip_frac: f64,
    grad_norm: f64,
    /// The minibatch's exact mean KL(π_old ‖ π_θ) before the step (when
    /// early stopping or the dual control asked for it).
    kl_before: Option<f64>,
}

/// [`PpoLoss`] without the value terms.
pub(crate) struct PolicyTerms {
    /// `policy − ent_coef · entropy`.
    objective: Tensor,
    policy: Tensor,
    /// Ê[H(π_θ)]; `None` when it was not asked for and has no weight.
    entropy: Option<Tensor>,
    kl: Option<Tensor>,
    clip_frac: Option<Tensor>,
}

impl Algorithm for Ppo {
    fn name(&self) -> &'static str {
        "ppo"
    }

    /// One PPO update (Algorithm 1 of the paper): `n_epochs` passes over the
    /// batch in shuffled minibatches, one Adam step per minibatch, then (for
    /// the adaptive objectives) one β adaptation from the measured KL.
    ///
    /// - Annealing: lr ← lr · (1 − progress) with `lr_anneal`, ε ← ε · (1 −
    ///   progress) with `clip_anneal`.
    /// - Early stopping (`early_stop_kl`): before every minibatch step but the
    ///   first, the exact mean KL(π_old ‖ π_θ) over the **whole batch** is
    ///   measured (by a forward pass over the batch, or, when one minibatch is
    ///   the whole batch, from that minibatch's own forward pass); the epochs
    ///   stop once it exceeds `early_stop_kl` (no 1.5 factor: the threshold
    ///   is the configured value). `epochs_run` is then fractional: minibatch
    ///   steps done / minibatches per epoch.
    /// - `clip_frac` is the mean over all minibatch steps of the fraction of
    ///   samples with |r − 1| > ε (NaN for the unclipped objectives);
    ///   `policy_loss`, `value_loss` and `grad_norm` are those of the last step.
    /// - `kl_dual`: after every minibatch step, β ← [`DualBeta::next_beta`]
    ///   with the exact KL of that step's minibatch measured by its forward
    ///   pass (so at the parameters before the step: the control lags one
    ///   step, at no extra cost), and once more after the epochs with the
    ///   batch's KL.
    /// - Hard limit (`max_kl`; for `projection`, `proj_eps` on every state):
    ///   after the epochs, [`Guard::enforce`] pulls the policy back along
    ///   θ_old → θ into the limit (restoring θ_old and the policy's Adam
    ///   moments bit for bit if nothing fits).
    /// - Numerical faults: a minibatch step whose loss, gradient or new
    ///   parameters are not finite is skipped (parameters and Adam state as
    ///   they were) and counted in `rejected_steps`; if every step was
    ///   skipped the update fails with [`OptimError::NonFinite`], which the
    ///   trainer turns into a rejected update.
    /// - `beta` is the value the next update will use (NaN for plain clip).
    fn update(
        &mut self,
        policy: &mut dyn Policy,
        value: &mut ValueNet,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> Result<UpdateDiagnostics> {
        let c = self.config.clone();
        let n = batch.len();
        if n == 0 {
            return Err(OptimError::Mismatch("PPO got an empty batch".into()));
        }
        let remaining = 1.0 - batch.progress;
        let lr = if c.lr_anneal { c.lr * remaining } else { c.lr };
        let clip_eps = if c.clip_anneal {
            c.clip_eps * remaining
        } else {
            c.clip_eps
        };
        let explained_var = explained_variance(&batch.old_values, &batch.returns);

        // π_old at every state of the batch, once per update; minibatches take
        // rows of it. log π_old(a|s) is recomputed from it in the run's dtype
        // (not the collector's f32 copy), so that r(θ_old) = 1 exactly.
        let mut full = batch.minibatch(policy, None, false)?;
        let old_dist = policy.dist_detached(&full.obs, full.mask.as_ref())?;
        full.old_log_probs = old_dist.log_prob(&full.actions)?;
        let vars = trainable_vars(policy, value);
        // π_ref at the batch states (evaluated by the trainer) and D_ref(θ_old).
        let reference = reference::required(self.reference.as_ref(), batch.reference.as_ref())?;
        let ref_check = reference::check(self.reference.as_mut(), &old_dist, reference)?;
        let guard = Guard::arm(
            policy,
            Some(&self.adam),
            c.kl_limit(),
            ref_check.map(|r| r.for_guard()),
        )?;
        let dual = DualBeta {
            kl_target: c.kl_target,
            lr: c.dual_lr,
            beta_min: c.dual_beta_min,
            beta_max: c.beta_max,
        };

        let mb_size = c.minibatch_size.clamp(1, n);
        let per_epoch = n.div_ceil(mb_size);
        // One minibatch per epoch: every term of the loss is a mean over the
        // batch, so the order is irrelevant and the tensors (advantages
        // normalised over the batch) are built once for all epochs.
        let whole = if per_epoch == 1 {
            let mut mb = batch.minibatch(policy, None, c.normalize_advantages)?;
            mb.old_log_probs = full.old_log_probs.clone();
            Some(mb)
        } else {
            None
        };
        let mut order: Vec<usize> = (0..n).collect();
        let mut steps = 0usize;
        // Skipped steps, and the quantity that was not finite in the last.
        let (mut skipped, mut last_fault) = (0usize, None);
        let (mut last_policy, mut last_value, mut grad_norm) = (f64::NAN, f64::NAN, f64::NAN);
        let mut clip_frac_sum = 0.0;
        // kl_dual: √KL at the previous measurement, for the predicted stop.
        let mut prev_sqrt_kl = 0.0;
        'epochs: for epoch in 0..c.n_epochs {
            if c.objective.dual() && whole.is_none() && epoch > 0 {
                // Several minibatches per epoch: β and the stop rule act per
                // epoch, on the batch's exact KL (one forward pass).
                let kl = batch_mean_kl(policy, &full, &old_dist)?;
                self.beta = dual.next_beta(self.beta, kl);
                let within = predicted_kl(kl, prev_sqrt_kl) <= DUAL_STOP * c.kl_target;
                if !within {
                    break 'epochs;
                }
                prev_sqrt_kl = kl.sqrt();
            }
            // Shuffled minibatches covering the batch; the last partial one is kept.
            order.shuffle(rng);
            for chunk in order.chunks(mb_size) {
                if let (Some(limit), true) = (c.early_stop_kl, steps > 0 && whole.is_none()) {
                    if batch_mean_kl(policy, &full, &old_dist)? > limit {
                        break 'epochs;
                    }
                }
                let owned_mb;
                let (mb, old) = match &whole {
                    Some(mb) => (mb, OldRows::new(&old_dist, None)),
                    None => {
                        let mut mb =
                            batch.minibatch(policy, Some(chunk), c.normalize_advantages)?;
                        // log π_old(a|s) is per state: the batch's rows (the
                        // same values as computed from the minibatch's rows).
                        mb.old_log_probs = pick_rows(&full.old_log_probs, chunk)?;
                        owned_mb = mb;
                        (&owned_mb, OldRows::new(&old_dist, Some(chunk)))
                    }
                };
                // With one minibatch per epoch its KL is the batch's, checked before the step.
                let stop_above = c.early_stop_kl.filter(|_| whole.is_some() && steps > 0);
                // One minibatch per epoch: β and the stop rule act per step, on
                // the KL its forward pass measures (at no extra cost).
                let dual_per_step = c.objective.dual() && whole.is_some();
                let stop_predicted_above =
                    (dual_per_step && steps > 0).then_some((DUAL_STOP * c.kl_target, prev_sqrt_kl));
                let args = StepArgs {
                    clip_eps,
                    lr,
                    stop_above,
                    stop_predicted_above,
                    measure_kl: dual_per_step,
                    update: batch.update,
                };
                let s = match self.minibatch_step(policy, value, &vars, mb, &old, &args) {
                    Ok(Some(s)) => s,
                    Ok(None) => break 'epochs,
                    // A step whose loss, gradient or new parameters are not
                    // finite is skipped: nothing moved (Adam::step_flat).
                    Err(OptimError::NonFinite { what, .. }) => {
                        skipped += 1;
                        last_fault = Some(what);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if let (true, Some(kl)) = (dual_per_step, s.kl_before) {
                    self.beta = dual.next_beta(self.beta, kl);
                    prev_sqrt_kl = kl.max(0.0).sqrt();
                }
                grad_norm = s.grad_norm;
                last_policy = s.policy_loss;
                last_value = s.value_loss;
                clip_frac_sum += s.clip_frac;
                steps += 1;
            }
        }

        if let (0, Some(what)) = (steps, last_fault) {
            // Every step tried was rejected: the update as a whole is (the
            // trainer restores β and the rest of the state).
            return Err(OptimError::NonFinite {
                what,
                update: batch.update,
            });
        }
        let outcome = match guard {
            Some(g) => Some(g.enforce(
                policy,
                Some(&mut self.adam),
                &full,
                &old_dist,
                reference,
                batch.update,
            )?),
            None => None,
        };
        let step_frac = outcome.map_or(f64::NAN, |o| o.step_frac);
        reference::restore_if_outside(policy, &full, reference, ref_check)?;

        let (kl, kl_ref) = measure_update(policy, &full, &old_dist, reference)?;
        let beta = if c.objective.dual() {
            self.beta = dual.next_beta(self.beta, kl.kl_old_new);
            self.beta
        } else if c.objective.adapts() {
            // d < d_targ / 1.5 → β/2; d > 1.5 d_targ → 2β  (§4)
            let rule = AdaptiveBeta {
                kl_target: c.kl_target,
                beta_min: c.beta_min,
                beta_max: c.beta_max,
            };
            self.beta = rule.next_beta(self.beta, kl.kl_old_new);
            self.beta
        } else if c.objective.penalises() {
            self.beta
        } else {
            f64::NAN
        };
        let mut d = diagnostics_from(&kl);
        d.beta = beta;
        d.clip_frac = if c.objective.clips() && steps > 0 {
            clip_frac_sum / steps as f64
        } else {
            f64::NAN
        };
        d.policy_loss = last_policy;
        d.value_loss = last_value;
        d.explained_var = explained_var;
        d.grad_norm = grad_norm;
        d.accepted = if step_frac == 0.0 { 0.0 } else { 1.0 };
        d.step_frac = step_frac;
        d.kl_limit = c.kl_limit().map_or(f64::NAN, |l| l.value);
        d.lr = lr;
        d.epochs_run = steps as f64 / per_epoch as f64;
        d.rejected_steps = skipped as f64;
        if let Some(term) = &mut self.reference {
            term.finish(&mut d, &kl_ref, outcome.map(|o| o.proposed_ref));
        }
        Ok(d)
    }

    /// `beta`, Adam's step count `adam_t`, its moments `adam_m`, `adam_v`,
    /// and with a reference its state (`ref_coef`, `ref_last_end`,
    /// `ref_shift_ms`).
    fn state(&self) -> AlgoState {
        let mut s = AlgoState::new(self.name());
        if let Some(r) = &self.reference {
            r.save(&mut s);
        }
        s.scalars.insert("beta".into(), self.beta);
        s.scalars.insert("adam_t".into(), self.adam.t as f64);
        s.vectors.insert("adam_m".into(), widen(&self.adam.m));
        s.vectors.insert("adam_v".into(), widen(&self.adam.v));
        s
    }

    fn load_state(&mut self, state: &AlgoState) -> Result<()> {
        state.expect_algo(self.name())?;
        let (beta, t) = (state.scalar("beta")?, state.scalar("adam_t")?);
        let n = self.adam.len();
        let m = state.vector_f32("adam_m", n)?;
        let v = state.vector_f32("adam_v", n)?;
        let valid = beta.is_finite() && beta >= 0.0 && t >= 0.0 && t.fract() == 0.0;
        if !valid {
            return Err(OptimError::State(format!(
                "ppo: beta must be finite and >= 0 and adam_t a whole number >= 0, got beta = {beta}, adam_t = {t}"
            )));
        }
        let reference = self
            .reference
            .as_ref()
            .map(|r| r.restored(state))
            .transpose()?;
        self.beta = beta;
        self.adam.t = t as u64;
        self.adam.m = m;
        self.adam.v = v;
        self.reference = reference;
        Ok(())
    }
}

#[cfg(test)]
mod clip_head_tests;
#[cfg(test)]
mod gaussian_clip_head_tests;

/// π_old at a minibatch's states, selected from the batch's only if a step
/// asks for it (a KL term or the graph's loss head; the host heads need
/// only log π_old(a|s)).
struct OldRows<'a> {
    full: &'a Dist,
    /// The minibatch's rows of the batch; `None` for all of them.
    rows: Option<&'a [usize]>,
    picked: std::cell::OnceCell<Dist>,
}

impl<'a> OldRows<'a> {
    fn new(full: &'a Dist, rows: Option<&'a [usize]>) -> Self {
        OldRows {
            full,
            rows,
            picked: std::cell::OnceCell::new(),
        }
    }

    /// The distributions at the minibatch's states.
    fn dist(&self) -> Result<&Dist> {
        let Some(rows) = self.rows else {
            return Ok(self.full);
        };
        if let Some(d) = self.picked.get() {
            return Ok(d);
        }
        let d = select_rows(self.full, rows)?;
        Ok(self.picked.get_or_init(|| d))
    }
}

/// Rows `rows` of a `[N]` tensor.
fn pick_rows(t: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let e = candle_err("selecting rows of log π_old");
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let idx = Tensor::from_vec(idx, rows.len(), t.device()).map_err(&e)?;
    t.index_select(&idx, 0).map_err(&e)
}
