//! PPO's clipped surrogate on a categorical policy, with or without the
//! reference term of `[algo.reference]`, and its gradient in the logits,
//! computed on host memory: the loss head of [`crate::Ppo`]'s minibatch step
//! for the common case (any objective but the projection — `clip`, or the
//! KL-penalised ones —, no entropy bonus, no action mask, CPU f32 or f64).
//!
//! For logits `z [N, A]`, actions `a`, log π_old(a|s) and advantages Â:
//!
//! 1. log π_θ(·|s) = z − max z − log Σ exp(z − max z)   (log-softmax);
//! 2. r = exp(clamp(log π_θ(a|s) − log π_old(a|s), ±LOG_RATIO_MAX))   (eq. 6);
//! 3. L^CLIP = Ê[min(r Â, clip(r, 1 − ε, 1 + ε) Â)]   (eq. 7), the policy
//!    loss −L^CLIP, and the clip fraction Ê[|r − 1| > ε];
//! 4. ∂(−L^CLIP)/∂z by the chain rule back through 3, 2 and 1: per sample,
//!    ∂/∂r min(r Â, clip(r) Â) = Â where r Â is the minimum and r is not
//!    clipped (Â/2 from each side where the two terms are equal, the usual
//!    case inside the range), 0 where the clipped term is the smaller;
//!    ∂r/∂log p = r inside ±LOG_RATIO_MAX; ∂log p_a/∂z_j = δ_aj − p_j,
//!    which candle's backward forms as δ_aj·g − (g/Σ) exp(z_j − max z) (plus
//!    the max's path, which cancels in exact arithmetic but not in bits);
//!    each sample's term carries the mean's −1/n.
//!
//! With a reference term ([`RefPenalty`]: log π_ref(·|s) and c), the loss
//! is −L^CLIP + c Ê[KL(π_θ ‖ π_ref)] ([`crate::reference::RefTerm::penalty`]),
//! the KL per state Σ_j p_j (log p_j − log q_j) with p_j = exp(log p_j) from
//! step 1, and ∂/∂log p_j gains, before the clip term's entry,
//! g_k p_j + (g_k (log p_j − log q_j)) p_j with g_k = c/n (the difference's
//! path first, then the exp's: candle's topological order).
//!
//! With KL(π_old ‖ π_θ) ([`OldKl`], [`clip_head_with`]: the KL-penalised
//! objectives, or a KL asked for by a stop rule) the per-state KL is
//! Σ_j exp(log o_j) (log o_j − log p_j) (`Dist::kl`, π_old on the left), its
//! mean is reported, and with β the loss gains β Ê\[KL\] after −L (before the
//! reference term) and ∂/∂log p_j gains −(0 + g_β exp(log o_j)), g_β = β/n
//! as candle forms it: after the reference term's entries, before the
//! gathered one (candle's walk finishes the gather, then this subtraction,
//! then the reference term's ops). The objectives that do not clip use
//! r Â (eq. 6) for the surrogate (`Surrogate::clipping`).
//!
//! **Same bits as the candle graph.** [`crate::Ppo`]'s general path builds
//! these terms with candle 0.11.1 ops and differentiates them with its
//! `backward()`; this module performs that computation's floating-point
//! operations, in its order, on plain slices — about 15 candle ops and their
//! backward (each an allocation and a dispatch) become one pass over the
//! rows. Matching it means matching, besides the ops themselves:
//!
//! - `candle_nn::ops::log_softmax` is composite: `max_keepdim` (the first
//!   maximum under `<`), `broadcast_sub`, `exp`, `sum_keepdim`, `log`,
//!   `broadcast_sub`; its backward runs through each of those ops;
//! - a scalar (a clamp bound, ε) is converted to the tensor's dtype with
//!   `as`, `mean_all` is a sum times `1/n` (an `affine`: `x · m + 0`);
//! - candle's CPU sums (`sum_keepdim`, `sum_all`) of f32 go through its
//!   `vec_sum`, which with AVX2 keeps 32 partial sums and adds them as a
//!   tree (replayed in `crate::clip_surrogate`); f64 sums in order;
//! - `minimum` / `maximum` pass the gradient to the argument equal to the
//!   result, halved when both are (candle's rule), and every gradient
//!   reaches its tensor as `0 + g` (candle's `GradStore` starts from
//!   zeros), which turns −0 into +0;
//! - with a reference term, log π_θ(·|s) has three consumers, whose
//!   gradients candle adds in the reverse of the order its depth-first walk
//!   from the loss finished them: the walk enters `−L^CLIP + c Ê[KL]` by the
//!   left operand, so the gather (the clip term) is finished first and added
//!   last; in the KL, `exp(log p) · (log p − log q)`, the walk finishes the
//!   `exp` before the difference, so the difference's gradient is added
//!   first: g_j = ((0 + g_diff,j) + g_exp,j · p_j), then g_a += g_log p(a)
//!   (`scatter_add`).
//!
//! Steps 2 and 3, and the derivative in log π_θ(a|s), are
//! [`crate::clip_surrogate`]'s (shared with the Gaussian head), as are the
//! kernels and the gradient rule above. Where the CPU's sum is one they do
//! not reproduce (ARM's NEON path), [`supported`] says no and the caller
//! keeps candle's graph. `ppo/clip_head_tests.rs` checks the two against
//! each other bit for bit.

use candle_core::{DType, Tensor};
use klrl_policy::PolicyError;

pub use crate::clip_surrogate::supported;
use crate::clip_surrogate::{KlPenalty, Real, Surrogate};
use crate::error::{OptimError, Result};
use crate::rollout::candle_err;

/// What the head computes for one minibatch.
#[derive(Debug, Clone)]
pub struct ClipHead {
    /// −L^CLIP, plus c Ê[KL(π_θ ‖ π_ref)] with a reference term (the
    /// objective of the step without an entropy bonus), in the logits'
    /// dtype, widened to f64.
    pub policy_loss: f64,
    /// The fraction of samples with |r − 1| > ε.
    pub clip_frac: f64,
    /// ∂(policy_loss)/∂z, `[N, A]`, of the logits' dtype and device.
    pub d_logits: Tensor,
    /// Ê[KL(π_old ‖ π_θ)] in the dtype, widened to f64, with an
    /// [`OldKl`].
    pub kl: Option<f64>,
}

/// KL(π_old ‖ π_θ) per state, `Σ_j exp(log o_j) · (log o_j − log p_j)` as
/// `Dist::kl` builds it (`old.kl(dist)`), its mean reported, and with
/// `beta` the penalty β Ê[KL(π_old ‖ π_θ)] of the KL-penalised objectives
/// (`Ppo::policy_terms`, eq. 8) added to the loss after −L.
#[derive(Debug, Clone, Copy)]
pub struct OldKl<'a> {
    /// log π_old(·|s) at the minibatch's states, `[N, A]`, of the logits'
    /// dtype.
    pub log_probs: &'a Tensor,
    /// β, for a penalised objective (the term and its gradient are added
    /// even at β = 0, as in the graph); `None` measures the KL only.
    pub beta: Option<f64>,
}

/// The reference term c · Ê[KL(π_θ ‖ π_ref)] added to the head's loss, as
/// [`crate::reference::RefTerm::penalty`] builds it.
#[derive(Debug, Clone, Copy)]
pub struct RefPenalty<'a> {
    /// log π_ref(·|s) at the minibatch's states, `[N, A]`, of the logits'
    /// dtype (the reference's `Categorical::log_probs`).
    pub log_probs: &'a Tensor,
    /// c; 0 adds no term (as `RefTerm::penalty`, which then returns none).
    pub coef: f64,
}

impl<'a> RefPenalty<'a> {
    /// The term of a categorical π_ref (its log-probabilities) with
    /// coefficient c; `None` for a Gaussian π_ref (the Gaussian head's).
    pub fn of(reference: &'a klrl_policy::Dist, coef: f64) -> Option<Self> {
        match reference {
            klrl_policy::Dist::Categorical(r) => Some(RefPenalty {
                log_probs: r.log_probs(),
                coef,
            }),
            _ => None,
        }
    }
}

/// The clipped surrogate of the logits `logits [N, A]` (a contiguous CPU
/// tensor), the actions `actions` (U32 `[N]`), `old_log_probs` and
/// `advantages` (`[N]`, of the logits' dtype) with clip range `clip_eps`,
/// plus the reference term `reference` if any, and its gradient in the
/// logits.
///
/// Errors: [`OptimError::Mismatch`] for shapes or dtypes that do not fit (or
/// a dtype [`supported`] rejects); [`PolicyError::ActionOutOfRange`] for an
/// action ≥ A.
pub fn clip_head(
    logits: &Tensor,
    actions: &Tensor,
    old_log_probs: &Tensor,
    advantages: &Tensor,
    clip_eps: f64,
    reference: Option<RefPenalty<'_>>,
) -> Result<ClipHead> {
    clip_head_with(
        logits,
        actions,
        old_log_probs,
        advantages,
        clip_eps,
        true,
        None,
        reference,
    )
}

/// [`clip_head`] for any of PPO's surrogates: the clipped one (eq. 7) if
/// `clips`, else r Â (eq. 6, no clip fraction: 0), with KL(π_old ‖ π_θ)
/// (`old_kl`: measured, and with β added as the penalty) before the
/// reference term.
#[allow(clippy::too_many_arguments)]
pub fn clip_head_with(
    logits: &Tensor,
    actions: &Tensor,
    old_log_probs: &Tensor,
    advantages: &Tensor,
    clip_eps: f64,
    clips: bool,
    old_kl: Option<OldKl<'_>>,
    reference: Option<RefPenalty<'_>>,
) -> Result<ClipHead> {
    let (n, a) = logits.dims2().map_err(candle_err("clip head logits"))?;
    let dtype = logits.dtype();
    let reference = reference.filter(|r| r.coef != 0.0);
    let fits = n > 0
        && actions.dims() == [n]
        && actions.dtype() == DType::U32
        && old_log_probs.dims() == [n]
        && advantages.dims() == [n]
        && old_log_probs.dtype() == dtype
        && advantages.dtype() == dtype
        && reference.is_none_or(|r| r.log_probs.dims() == [n, a] && r.log_probs.dtype() == dtype)
        && old_kl.is_none_or(|o| o.log_probs.dims() == [n, a] && o.log_probs.dtype() == dtype)
        && supported(dtype, logits.device());
    if !fits {
        return Err(OptimError::Mismatch(format!(
            "clip head: logits {:?} {dtype:?}, actions {:?} {:?}, old log-probs {:?} {:?}, \
             advantages {:?} {:?}, reference log-probs {:?}",
            logits.dims(),
            actions.dims(),
            actions.dtype(),
            old_log_probs.dims(),
            old_log_probs.dtype(),
            advantages.dims(),
            advantages.dtype(),
            reference.map(|r| (r.log_probs.dims().to_vec(), r.log_probs.dtype())),
        )));
    }
    let e = candle_err("clip head to host");
    let acts = actions.to_vec1::<u32>().map_err(&e)?;
    if let Some(&max) = acts.iter().max().filter(|&&m| m as usize >= a) {
        return Err(PolicyError::ActionOutOfRange {
            action: u64::from(max),
            n_actions: a,
        }
        .into());
    }
    let inputs = |t: &Tensor| t.flatten_all().map_err(&e);
    let (z, old, adv) = (inputs(logits)?, inputs(old_log_probs)?, inputs(advantages)?);
    let q = reference.map(|r| inputs(r.log_probs)).transpose()?;
    let coef = reference.map(|r| r.coef);
    let q = q.as_ref().zip(coef);
    let o = old_kl.map(|o| inputs(o.log_probs)).transpose()?;
    let o = o.as_ref().zip(old_kl.map(|o| o.beta));
    match dtype {
        DType::F32 => {
            Host::<f32>::read(&z, &acts, &old, &adv, q, o, a)?.run(clip_eps, clips, logits)
        }
        _ => Host::<f64>::read(&z, &acts, &old, &adv, q, o, a)?.run(clip_eps, clips, logits),
    }
}

/// The inputs on the host.
struct Host<'a, T> {
    z: Vec<T>,
    actions: &'a [u32],
    old: Vec<T>,
    adv: Vec<T>,
    /// log π_ref(·|s) `[N · A]` and c, with a reference term.
    reference: Option<(Vec<T>, f64)>,
    /// log π_old(·|s) `[N · A]` and β, with KL(π_old ‖ π_θ).
    old_kl: Option<(Vec<T>, Option<f64>)>,
    n_actions: usize,
}

impl<'a, T: Real> Host<'a, T> {
    fn read(
        z: &Tensor,
        actions: &'a [u32],
        old: &Tensor,
        adv: &Tensor,
        reference: Option<(&Tensor, f64)>,
        old_kl: Option<(&Tensor, Option<f64>)>,
        n_actions: usize,
    ) -> Result<Self> {
        let e = candle_err("clip head to host");
        Ok(Host {
            z: z.to_vec1::<T>().map_err(&e)?,
            actions,
            old: old.to_vec1::<T>().map_err(&e)?,
            adv: adv.to_vec1::<T>().map_err(&e)?,
            reference: reference
                .map(|(q, c)| Ok((q.to_vec1::<T>()?, c)))
                .transpose()
                .map_err(&e)?,
            old_kl: old_kl
                .map(|(o, beta)| Ok((o.to_vec1::<T>()?, beta)))
                .transpose()
                .map_err(&e)?,
            n_actions,
        })
    }

    /// The policy loss, the clip fraction and the loss's gradient in the
    /// logits (on the device of `logits`).
    fn run(&self, clip_eps: f64, clips: bool, logits: &Tensor) -> Result<ClipHead> {
        let (n, a) = (self.actions.len(), self.n_actions);
        let zero = T::ZERO;
        let clip = Surrogate::<T>::new(clip_eps, n).clipping(clips);
        // KL(π_old ‖ π_θ): log π_old's rows, the term (β or 0 for the mean
        // only) and whether it is in the loss.
        let old_kl = self.old_kl.as_ref().map(|(o, beta)| {
            let pen = KlPenalty::<T>::new(beta.unwrap_or(0.0), n);
            (o.as_slice(), pen, beta.is_some())
        });
        let mut kl_old = Vec::with_capacity(if old_kl.is_some() { n } else { 0 });
        let mut old_terms = vec![zero; if old_kl.is_some() { a } else { 0 }];
        let penalty = self
            .reference
            .as_ref()
            .map(|(q, coef)| (q.as_slice(), KlPenalty::<T>::new(*coef, n)));

        let mut surrogate = Vec::with_capacity(n);
        let mut clipped = Vec::with_capacity(n);
        // KL(π_θ ‖ π_ref) per state, with a reference term.
        let mut kl = Vec::with_capacity(if penalty.is_some() { n } else { 0 });
        let mut grad = vec![zero; n * a];
        // One row's exp(z − max z), the row of a broadcast's gradient, and
        // one row's terms p_j (log p_j − log q_j) of the KL.
        let mut e = vec![zero; a];
        let mut row = vec![zero; a];
        let mut kl_terms = vec![zero; if penalty.is_some() { a } else { 0 }];
        for i in 0..n {
            let z = &self.z[i * a..(i + 1) * a];
            let act = self.actions[i] as usize;

            // 1. log-softmax: log p = (z − max z) − log Σ exp(z − max z)
            let mut max = z[0];
            for &s in z {
                if max < s {
                    max = s;
                }
            }
            for (e, &z) in e.iter_mut().zip(z) {
                *e = (z - max).exp();
            }
            let sum = T::sum(&e);
            let log_sum = sum.ln();
            let log_p = (z[act] - max) - log_sum;

            // 2.–4. the clipped surrogate and ∂/∂log p(a|s)
            // (crate::clip_surrogate)
            let sample = clip.sample(log_p, self.old[i], self.adv[i]);
            surrogate.push(sample.surrogate);
            clipped.push(sample.clipped);
            // log p(a|s) is gathered from the row (scatter_add into zeros).
            let g_log_p = sample.d_log_p;

            let g = &mut grad[i * a..(i + 1) * a];
            match penalty {
                None if old_kl.is_some() => g.fill(zero),
                None => {
                    // ∂/∂log p_j: the gathered entry only.
                    for (j, g) in g.iter_mut().enumerate() {
                        *g = if j == act { zero + g_log_p } else { zero };
                    }
                }
                Some((q, pen)) => {
                    // KL(π_θ ‖ π_ref) = Σ_j p_j (log p_j − log q_j) and its
                    // ∂/∂log p_j, then the gathered entry's (scatter_add).
                    let q = &q[i * a..(i + 1) * a];
                    for (j, (g, t)) in g.iter_mut().zip(kl_terms.iter_mut()).enumerate() {
                        let log_p = (z[j] - max) - log_sum;
                        let p = log_p.exp();
                        let diff = log_p - q[j];
                        *t = p * diff;
                        // the difference's path, then the exp's
                        *g = (zero + (zero + pen.g_kl * p)) + (zero + pen.g_kl * diff) * p;
                    }
                    kl.push(T::sum(&kl_terms));
                }
            }
            if let Some((o, pen, penalised)) = old_kl {
                // KL(π_old ‖ π_θ) = Σ_j exp(log o_j) · (log o_j − log p_j);
                // with the penalty, ∂/∂log p_j −= (0 + g_β exp(log o_j))
                // (the subtraction's right operand; candle finishes this
                // term after the reference term's and before the gather).
                let o = &o[i * a..(i + 1) * a];
                for (j, (g, t)) in g.iter_mut().zip(old_terms.iter_mut()).enumerate() {
                    let log_p = (z[j] - max) - log_sum;
                    let e_o = o[j].exp();
                    *t = e_o * (o[j] - log_p);
                    if penalised {
                        *g -= zero + pen.g_kl * e_o;
                    }
                }
                kl_old.push(T::sum(&old_terms));
            }
            if penalty.is_some() || old_kl.is_some() {
                g[act] += g_log_p;
            }

            // Log-softmax backward: log p = δ − B(log Σ exp δ), δ = z − B(max).
            // ∂/∂log Σ: −Σ_j ∂/∂log p_j (the broadcast's row sum)
            for (b, &g) in row.iter_mut().zip(g.iter()) {
                *b = zero - g;
            }
            let g_log_sum = zero + T::sum(&row);
            // ∂/∂Σ = ∂/∂log Σ / Σ, and ∂/∂δ_j += ∂/∂Σ · exp δ_j
            let g_sum = zero + g_log_sum / sum;
            for (g, &e) in g.iter_mut().zip(e.iter()) {
                *g = (zero + *g) + (zero + g_sum) * e;
            }
            // δ = z − B(max): ∂/∂z_j = ∂/∂δ_j, ∂/∂max = −Σ_j ∂/∂δ_j
            for (b, g) in row.iter_mut().zip(g.iter_mut()) {
                *b = zero - *g;
                *g = zero + *g;
            }
            let g_max = zero + T::sum(&row);
            // max: to the entries equal to it
            for (g, &z) in g.iter_mut().zip(z) {
                *g += T::indicator(max == z) * g_max;
            }
        }
        let d_logits = Tensor::from_vec(grad, (n, a), logits.device())
            .map_err(candle_err("clip head gradient"))?;
        // −L^CLIP (+ c Ê[KL(π_θ ‖ π_ref)]), added in the dtype
        let mut loss = clip.loss(&surrogate);
        let mut kl_mean = None;
        if let Some((_, pen, penalised)) = old_kl {
            kl_mean = Some(pen.mean(&kl_old).to_f64());
            if penalised {
                loss += pen.loss(&kl_old);
            }
        }
        if let Some((_, pen)) = penalty {
            loss += pen.loss(&kl);
        }
        Ok(ClipHead {
            policy_loss: loss.to_f64(),
            clip_frac: clip.clip_frac(&clipped),
            d_logits,
            kl: kl_mean,
        })
    }
}
