//! PPO's clipped surrogate on a diagonal Gaussian policy with a
//! state-independent log σ, with or without the reference term of
//! `[algo.reference]`, and its gradient in the means and in log σ, computed
//! on host memory: the loss head of [`crate::Ppo`]'s minibatch step for the
//! common continuous-action case (any objective but the projection — `clip`,
//! or the KL-penalised ones —, no entropy bonus, CPU f32 or f64; gSDE and a
//! state-dependent σ, of the policy, of π_old or of π_ref, keep the graph).
//!
//! For means `μ [N, d]`, `log σ [d]`, actions `a [N, d]`, log π_old(a|s)
//! and advantages Â:
//!
//! 1. log π_θ(a|s) = −½ Σ_j ((a_j − μ_j) e^{−log σ_j})² − (Σ_j log σ_j +
//!    (d/2) ln 2π)   ([`klrl_policy::DiagGaussian::log_prob`]);
//! 2. the clipped surrogate of [`crate::clip_surrogate`]: r (eq. 6),
//!    min(r Â, clip(r, 1 − ε, 1 + ε) Â) (eq. 7), the policy loss −L^CLIP,
//!    the clip fraction, and g = ∂(−L^CLIP)/∂log π_θ(a|s) per sample;
//! 3. back through 1: with z_j = (a_j − μ_j) e^{−log σ_j},
//!    ∂/∂μ_j = g z_j e^{−log σ_j} and ∂/∂log σ_j = Σ_s g_s z_sj² − Σ_s g_s,
//!    which candle's backward forms as
//!    (−Σ_s g_s) − (Σ_s (−½ g_s) · 2 z_sj · (a_sj − μ_sj)) · e^{−log σ_j}
//!    (the log-normaliser's path, then the one through e^{−log σ}).
//!
//! With a reference term ([`GaussianRefPenalty`]: π_ref's means μ_q, its
//! state-independent log σ_q, and c), the loss is −L^CLIP +
//! c Ê[KL(π_θ ‖ π_ref)] ([`crate::reference::RefTerm::penalty`]), with
//! `DiagGaussian::kl`'s closed form KL_s = Σ_j (μ_sj − μ_qsj)² h_j + K,
//! h_j = e^{−2 log σ_qj} / 2 and K = Σ_j (log σ_qj − log σ_j) + e^{2 log σ_j}
//! h_j − ½; with g_k = c/n per state, ∂/∂μ_sj gains 2 (μ_sj − μ_qsj) h_j g_k
//! and ∂/∂log σ_j gains 2 e^{2 log σ_j} h_j Σ_s g_k − Σ_s g_k.
//!
//! With KL(π_old ‖ π_θ) ([`GaussianOldKl`], [`gaussian_clip_head_with`]: the
//! KL-penalised objectives, or a KL asked for by a stop rule) the per-state
//! KL is the same closed form with π_old on the left (`Dist::kl`,
//! `old.kl(dist)`): KL_s = Σ_j (μ_osj − μ_sj)² h_j + K, now with h_j =
//! e^{−2 log σ_j} / 2 of π_θ and K = Σ_j (log σ_j − log σ_oj) +
//! e^{2 log σ_oj} h_j − ½. Its mean is reported, and with β the loss gains
//! β Ê\[KL\] after −L (before the reference term; eq. 8). With g_β = β/n
//! per state, ∂/∂μ_sj gains −2 (μ_osj − μ_sj) h_j g_β, and ∂/∂log σ_j gains
//! Σ_s g_β − 2 h_j (e^{2 log σ_oj} Σ_s g_β + Σ_s (μ_osj − μ_sj)² g_β)
//! (through the difference log σ − log σ_o, then through h). The objectives
//! that do not clip use r Â (eq. 6) for the surrogate (`Surrogate::clipping`).
//!
//! **Same bits as the candle graph.** [`crate::Ppo`]'s general path builds
//! step 1 with the candle 0.11.1 ops of `DiagGaussian::new` and `log_prob`
//! (`copy` of each leaf, `neg`, `exp`, `sub`, `broadcast_mul`, `sqr`,
//! `sum(1)`, `affine(−½, 0)`, `sum_all`, `affine(1, (d/2) ln 2π)`,
//! `broadcast_sub`) and differentiates it with `backward()`; this module
//! performs those floating-point operations in their order on plain slices.
//! Besides what [`crate::clip_head`] lists (scalars converted with `as`,
//! sums over a contiguous last dimension in candle's `vec_sum` order, every
//! gradient reaching its tensor as `0 + g`), matching it means:
//!
//! - `sqr`'s backward is `(z · g) · 2 + 0` (a `mul` then an `affine`), an
//!   `affine`'s is `g · mul + 0`, a `neg`'s `0 − g`, a `copy`'s `0 + g`;
//! - `broadcast_mul`'s gradient for the broadcast `e^{−log σ} [d]` is the
//!   `[N, d]` product summed over the rows by candle's generic reduction
//!   (column by column, rows in order, from 0 — not `vec_sum`), and the
//!   log-normaliser's `[N]` gradient is summed by `vec_sum`;
//! - log σ gets two gradients: the log-normaliser's first (candle's
//!   topological order), then the one through `neg`, subtracted;
//! - with a reference term, the KL's gradients reach μ and log σ before
//!   the clip term's (the loss `−L^CLIP + c Ê[KL]` is walked left operand
//!   first, so the KL's nodes finish last and are differentiated first):
//!   μ gets the KL's `0 + g`, then the clip term's subtracted; log σ the
//!   KL's path through e^{2 log σ} first (`0 + g`), then the difference
//!   log σ_q − log σ's (subtracted) — in `K` the product is walked after
//!   the difference, so it is differentiated first — then the clip term's
//!   two; the KL's Σ_s g_k is the broadcast K's sum over the states
//!   (`vec_sum`);
//! - with KL(π_old ‖ π_θ) in the loss `(−L + β Ê[KL_old]) + c Ê[KL_ref]`,
//!   the walk finishes the clip term, then KL_old, then KL_ref, so the
//!   gradients reach μ and log σ in the reverse order: the reference term's,
//!   then KL_old's, then the clip term's. μ gets KL_old's subtracted (μ is
//!   the right operand of μ_o − μ). log σ gets the difference
//!   log σ − log σ_o's gradient first (K is walked after the quadratic term,
//!   where h's path to log σ finishes), then the path through
//!   h = e^{−2 log σ} · ½, whose gradient is the product's in K (`0 + g
//!   e^{2 log σ_o}`: walked after the quadratic term's) plus the broadcast
//!   h's in the quadratic term summed over the rows by the generic reduction
//!   (rows in order, from 0). candle walks no further than an `affine` of
//!   factor 0: at β = 0 the KL is in the loss (its value times 0) but sends
//!   no gradient, and the head sends none.
//!
//! `ppo/gaussian_clip_head_tests.rs` checks the two against each other bit
//! for bit.

use candle_core::{DType, Tensor};
use klrl_policy::gaussian::LN_2PI;

use crate::clip_surrogate::{supported, KlPenalty, Real, Surrogate};
use crate::error::{OptimError, Result};
use crate::rollout::candle_err;

/// What the head computes for one minibatch.
#[derive(Debug, Clone)]
pub struct GaussianClipHead {
    /// −L^CLIP, plus c Ê[KL(π_θ ‖ π_ref)] with a reference term (the
    /// objective of the step without an entropy bonus), in the means'
    /// dtype, widened to f64.
    pub policy_loss: f64,
    /// The fraction of samples with |r − 1| > ε.
    pub clip_frac: f64,
    /// ∂(policy_loss)/∂μ, `[N, d]`, of the means' dtype and device.
    pub d_mean: Tensor,
    /// ∂(policy_loss)/∂log σ, `[d]`, of the means' dtype and device.
    pub d_log_std: Tensor,
    /// Ê[KL(π_old ‖ π_θ)] in the dtype, widened to f64, with a
    /// [`GaussianOldKl`].
    pub kl: Option<f64>,
}

/// KL(π_old ‖ π_θ) per state as `Dist::kl` builds it (`old.kl(dist)`, the
/// closed form of [`crate::gaussian_clip_head`]'s doc), its mean reported,
/// and with `beta` the penalty β Ê[KL(π_old ‖ π_θ)] of the KL-penalised
/// objectives (`Ppo::policy_terms`, eq. 8) added to the loss after −L; for a
/// π_old with a state-independent σ.
#[derive(Debug, Clone, Copy)]
pub struct GaussianOldKl<'a> {
    /// π_old's means at the minibatch's states, `[N, d]`, of the means' dtype.
    pub mean: &'a Tensor,
    /// π_old's log σ, `[d]`, of the means' dtype.
    pub log_std: &'a Tensor,
    /// β, for a penalised objective (the term is added even at β = 0, as in
    /// the graph, whose gradient then stops at the factor 0); `None`
    /// measures the KL only.
    pub beta: Option<f64>,
}

/// The reference term c · Ê[KL(π_θ ‖ π_ref)] added to the head's loss, as
/// [`crate::reference::RefTerm::penalty`] builds it, for a π_ref with a
/// state-independent σ.
#[derive(Debug, Clone, Copy)]
pub struct GaussianRefPenalty<'a> {
    /// π_ref's means at the minibatch's states, `[N, d]`, of the means' dtype.
    pub mean: &'a Tensor,
    /// π_ref's log σ, `[d]`, of the means' dtype.
    pub log_std: &'a Tensor,
    /// c; 0 adds no term (as `RefTerm::penalty`, which then returns none).
    pub coef: f64,
}

/// The clipped surrogate of the Gaussians with means `mean [N, d]` and the
/// state-independent `log_std [d]` (CPU tensors of one dtype), for the
/// actions `actions [N, d]`, `old_log_probs` and `advantages` (`[N]`), all of
/// the means' dtype, with clip range `clip_eps`, plus the reference term
/// `reference` if any; and its gradients in the means and in `log_std`.
///
/// Errors: [`OptimError::Mismatch`] for shapes or dtypes that do not fit (or
/// a dtype or device [`supported`] rejects).
pub fn gaussian_clip_head(
    mean: &Tensor,
    log_std: &Tensor,
    actions: &Tensor,
    old_log_probs: &Tensor,
    advantages: &Tensor,
    clip_eps: f64,
    reference: Option<GaussianRefPenalty<'_>>,
) -> Result<GaussianClipHead> {
    gaussian_clip_head_with(
        mean,
        log_std,
        actions,
        old_log_probs,
        advantages,
        clip_eps,
        true,
        None,
        reference,
    )
}

/// [`gaussian_clip_head`] for any of PPO's surrogates: the clipped one
/// (eq. 7) if `clips`, else r Â (eq. 6, no clip fraction: 0), with
/// KL(π_old ‖ π_θ) (`old_kl`: measured, and with β added as the penalty)
/// before the reference term.
///
/// Errors: as [`gaussian_clip_head`], and [`OptimError::Mismatch`] for a
/// π_old whose means or log σ do not fit.
#[allow(clippy::too_many_arguments)]
pub fn gaussian_clip_head_with(
    mean: &Tensor,
    log_std: &Tensor,
    actions: &Tensor,
    old_log_probs: &Tensor,
    advantages: &Tensor,
    clip_eps: f64,
    clips: bool,
    old_kl: Option<GaussianOldKl<'_>>,
    reference: Option<GaussianRefPenalty<'_>>,
) -> Result<GaussianClipHead> {
    let dtype = mean.dtype();
    let reference = reference.filter(|r| r.coef != 0.0);
    let fits = match *mean.dims() {
        [n, d] => {
            n > 0
                && d > 0
                && log_std.dims() == [d]
                && actions.dims() == [n, d]
                && old_log_probs.dims() == [n]
                && advantages.dims() == [n]
                && reference.is_none_or(|r| r.mean.dims() == [n, d] && r.log_std.dims() == [d])
                && old_kl.is_none_or(|o| o.mean.dims() == [n, d] && o.log_std.dims() == [d])
                && [log_std, actions, old_log_probs, advantages]
                    .into_iter()
                    .chain(reference.iter().flat_map(|r| [r.mean, r.log_std]))
                    .chain(old_kl.iter().flat_map(|o| [o.mean, o.log_std]))
                    .all(|t| t.dtype() == dtype && t.device().same_device(mean.device()))
                && supported(dtype, mean.device())
        }
        _ => false,
    };
    if !fits {
        return Err(OptimError::Mismatch(format!(
            "gaussian clip head: means {:?} {dtype:?}, log σ {:?} {:?}, actions {:?} {:?}, \
             old log-probs {:?} {:?}, advantages {:?} {:?}, reference means and log σ {:?}, \
             π_old's means and log σ {:?}",
            mean.dims(),
            log_std.dims(),
            log_std.dtype(),
            actions.dims(),
            actions.dtype(),
            old_log_probs.dims(),
            old_log_probs.dtype(),
            advantages.dims(),
            advantages.dtype(),
            reference.map(|r| (
                r.mean.dims(),
                r.log_std.dims(),
                r.mean.dtype(),
                r.log_std.dtype()
            )),
            old_kl.map(|o| (
                o.mean.dims(),
                o.log_std.dims(),
                o.mean.dtype(),
                o.log_std.dtype()
            )),
        )));
    }
    let inputs = [mean, log_std, actions, old_log_probs, advantages];
    let reference = reference.map(|r| (r.mean, r.log_std, r.coef));
    let old_kl = old_kl.map(|o| (o.mean, o.log_std, o.beta));
    match dtype {
        DType::F32 => Host::<f32>::read(inputs, reference, old_kl)?.run(clip_eps, clips, mean),
        _ => Host::<f64>::read(inputs, reference, old_kl)?.run(clip_eps, clips, mean),
    }
}

/// The inputs on the host.
struct Host<T> {
    mean: Vec<T>,
    log_std: Vec<T>,
    actions: Vec<T>,
    old: Vec<T>,
    adv: Vec<T>,
    /// π_ref's means `[N · d]`, its log σ `[d]`, and c, with a reference term.
    reference: Option<(Vec<T>, Vec<T>, f64)>,
    /// π_old's means `[N · d]`, its log σ `[d]`, and β, with KL(π_old ‖ π_θ).
    old_kl: Option<(Vec<T>, Vec<T>, Option<f64>)>,
}

impl<T: Real> Host<T> {
    /// Reads `[mean, log_std, actions, old_log_probs, advantages]`, the
    /// reference's means, log σ and coefficient, and π_old's means, log σ
    /// and β.
    fn read(
        inputs: [&Tensor; 5],
        reference: Option<(&Tensor, &Tensor, f64)>,
        old_kl: Option<(&Tensor, &Tensor, Option<f64>)>,
    ) -> Result<Self> {
        let e = candle_err("gaussian clip head to host");
        let host = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<T>()).map_err(&e);
        let [mean, log_std, actions, old, adv] = inputs;
        Ok(Host {
            mean: host(mean)?,
            log_std: host(log_std)?,
            actions: host(actions)?,
            old: host(old)?,
            adv: host(adv)?,
            reference: match reference {
                Some((m, l, c)) => Some((host(m)?, host(l)?, c)),
                None => None,
            },
            old_kl: match old_kl {
                Some((m, l, beta)) => Some((host(m)?, host(l)?, beta)),
                None => None,
            },
        })
    }

    /// The policy loss, the clip fraction, Ê[KL(π_old ‖ π_θ)] if asked for
    /// and the loss's gradients in μ and log σ (on the device of `mean`).
    fn run(&self, clip_eps: f64, clips: bool, mean: &Tensor) -> Result<GaussianClipHead> {
        let (n, d) = (self.old.len(), self.log_std.len());
        let zero = T::ZERO;
        let clip = Surrogate::<T>::new(clip_eps, n).clipping(clips);
        // affine(−½, 0) and its backward's factor, as candle converts them
        let minus_half = T::from_f64(-0.5);
        let two = T::from_f64(2.0);
        let reference = self.reference.as_ref().map(|(mean_q, log_std_q, coef)| {
            RefKl::new(&self.log_std, mean_q, log_std_q, *coef, n)
        });
        // KL(π_θ ‖ π_ref) per state, with a reference term.
        let mut kl = Vec::with_capacity(if reference.is_some() { n } else { 0 });
        let with_kl = reference.is_some() || self.old_kl.is_some();
        let mut kl_terms = vec![zero; if with_kl { d } else { 0 }];
        let old_kl = self.old_kl.as_ref().map(|(mean_o, log_std_o, beta)| {
            OldKlTerm::new(&self.log_std, mean_o, log_std_o, *beta, n)
        });
        // KL(π_old ‖ π_θ) per state, and Σ_s of ∂/∂(broadcast h) per column.
        let mut kl_old = Vec::with_capacity(if old_kl.is_some() { n } else { 0 });
        let mut g_half_inv_var = vec![zero; if old_kl.is_some() { d } else { 0 }];

        // 1. The state-independent parts of log π: e^{−log σ_j}, and the
        //    log-normaliser Σ_j log σ_j · 1 + (d/2) ln 2π.
        let inv_std: Vec<T> = self.log_std.iter().map(|&l| (-l).exp()).collect();
        let norm = T::sum(&self.log_std) * T::ONE + T::from_f64(0.5 * d as f64 * LN_2PI);

        let mut surrogate = Vec::with_capacity(n);
        let mut clipped = Vec::with_capacity(n);
        let mut d_mean = vec![zero; n * d];
        // ∂/∂(broadcast log-normaliser) per sample; Σ_s of ∂/∂(broadcast
        // e^{−log σ}) per column; one row's (a − μ), z and z².
        let mut g_norm_rows = Vec::with_capacity(n);
        let mut g_inv_std = vec![zero; d];
        let (mut diff, mut z, mut z2) = (vec![zero; d], vec![zero; d], vec![zero; d]);
        for i in 0..n {
            let row = i * d..(i + 1) * d;
            let (mu, act) = (&self.mean[row.clone()], &self.actions[row.clone()]);
            for j in 0..d {
                diff[j] = act[j] - mu[j];
                z[j] = diff[j] * inv_std[j];
                z2[j] = z[j] * z[j];
            }
            // log p = (Σ_j z_j²) · (−½) + 0 − norm
            let log_p = (T::sum(&z2) * minus_half + zero) - norm;

            // 2. the clipped surrogate and ∂/∂log p (crate::clip_surrogate)
            let sample = clip.sample(log_p, self.old[i], self.adv[i]);
            surrogate.push(sample.surrogate);
            clipped.push(sample.clipped);
            let g_log_p = sample.d_log_p;

            // 3. backward through 1, in candle's topological order.
            // log p = h − B(norm): the subtraction's two sides
            let g_h = zero + g_log_p;
            g_norm_rows.push(zero - g_log_p);
            // h = q · (−½) + 0, q = Σ_j z_j² (its gradient broadcast back)
            let g_q = zero + (g_h * minus_half + zero);
            let g_z2 = zero + (zero + g_q);
            // The KL's gradient in μ (first: see the module doc), else 0.
            if let Some(r) = &reference {
                let mu_q = &r.mean_q[row.clone()];
                kl.push(r.state(mu, mu_q, &mut kl_terms, &mut d_mean[row.clone()]));
            }
            // KL(π_old ‖ π_θ)'s, after the reference term's.
            if let Some(o) = &old_kl {
                let g_mean = &mut d_mean[row.clone()];
                kl_old.push(o.state(i, mu, &mut kl_terms, g_mean, &mut g_half_inv_var));
            }
            let g_mean = &mut d_mean[row];
            for j in 0..d {
                // sqr: (z · g) · 2 + 0
                let g_z = zero + ((z[j] * g_z2) * two + zero);
                // z = (a − μ) · B(e^{−log σ}): to (a − μ), then μ through
                // the subtraction (0 − g) and the leaf's copy (0 + g)
                let g_diff = zero + g_z * inv_std[j];
                g_mean[j] = zero + (g_mean[j] - g_diff);
                // to the broadcast e^{−log σ}: summed over the rows in order
                g_inv_std[j] += zero + g_z * diff[j];
            }
        }
        // The log-normaliser: the broadcast's sum over the samples, the
        // affine's · 1 + 0, sum_all's reshape (0 + g) and its broadcast back
        // to log σ (0 + g, below).
        let g_norm = zero + T::sum(&g_norm_rows);
        let g_sum_log_std = zero + (zero + (g_norm * T::ONE + zero));
        // log σ's gradient before the clip term's: the reference term's, then
        // KL(π_old ‖ π_θ)'s, or 0.
        let mut g_log_std_kl = match &reference {
            Some(r) => r.d_log_std(n),
            None => vec![zero; d],
        };
        if let Some(o) = &old_kl {
            o.add_d_log_std(n, &g_half_inv_var, &mut g_log_std_kl);
        }
        let d_log_std: Vec<T> = g_inv_std
            .iter()
            .zip(&inv_std)
            .zip(&g_log_std_kl)
            .map(|((&g_inv, &inv), &g_kl)| {
                // e^{x}: g · e^{x}; neg: subtracted from log σ's gradient,
                // which holds the log-normaliser's part already; the leaf's
                // copy: 0 + g
                let g_neg = zero + (zero + g_inv) * inv;
                zero + ((g_kl + g_sum_log_std) - g_neg)
            })
            .collect();

        // −L (+ β Ê[KL(π_old ‖ π_θ)]) (+ c Ê[KL(π_θ ‖ π_ref)]), added in the
        // dtype
        let mut loss = clip.loss(&surrogate);
        let mut kl_mean = None;
        if let Some(o) = &old_kl {
            kl_mean = Some(o.penalty.mean(&kl_old).to_f64());
            if o.penalised {
                loss += o.penalty.loss(&kl_old);
            }
        }
        if let Some(r) = &reference {
            loss += r.penalty.loss(&kl);
        }
        let e = candle_err("gaussian clip head gradient");
        let device = mean.device();
        Ok(GaussianClipHead {
            policy_loss: loss.to_f64(),
            clip_frac: clip.clip_frac(&clipped),
            d_mean: Tensor::from_vec(d_mean, (n, d), device).map_err(&e)?,
            d_log_std: Tensor::from_vec(d_log_std, d, device).map_err(&e)?,
            kl: kl_mean,
        })
    }
}

/// The state-independent parts of KL(p ‖ q) between diagonal Gaussians
/// with state-independent σ, as `DiagGaussian::kl` builds them (shared by
/// the reference term, p = π_θ, and KL(π_old ‖ π_θ), p = π_old).
struct StdParts;

impl StdParts {
    /// For `log σ_p`, `log σ_q`: (e^{−2 log σ_qj} (`affine(−2, 0)`, `exp`),
    /// h_j = that · ½ (`affine(½, 0)`), e^{2 log σ_pj} (`affine(2, 0)`,
    /// `exp`), K = Σ_j ((log σ_qj − log σ_pj) + e^{2 log σ_pj} h_j) · 1 − ½).
    #[allow(clippy::type_complexity)]
    fn of<T: Real>(log_std_p: &[T], log_std_q: &[T]) -> (Vec<T>, Vec<T>, Vec<T>, T) {
        let zero = T::ZERO;
        let inv_var_q: Vec<T> = log_std_q
            .iter()
            .map(|&l| (l * T::from_f64(-2.0) + zero).exp())
            .collect();
        let half_inv_var_q: Vec<T> = inv_var_q
            .iter()
            .map(|&v| v * T::from_f64(0.5) + zero)
            .collect();
        let var_p: Vec<T> = log_std_p
            .iter()
            .map(|&l| (l * T::from_f64(2.0) + zero).exp())
            .collect();
        let terms: Vec<T> = (0..log_std_p.len())
            .map(|j| {
                ((log_std_q[j] - log_std_p[j]) + var_p[j] * half_inv_var_q[j]) * T::ONE
                    + T::from_f64(-0.5)
            })
            .collect();
        (inv_var_q, half_inv_var_q, var_p, T::sum(&terms))
    }
}

/// The reference term's closed-form KL(π_θ ‖ π_ref) between diagonal
/// Gaussians with state-independent σ (`DiagGaussian::kl`): its
/// state-independent parts and the gradient per state, in candle's ops.
struct RefKl<'a, T> {
    /// π_ref's means `[N · d]`.
    mean_q: &'a [T],
    /// h_j = e^{−2 log σ_qj} · ½ (`affine(−2, 0)`, `exp`, `affine(½, 0)`).
    half_inv_var_q: Vec<T>,
    /// e^{2 log σ_j} (`affine(2, 0)`, `exp`).
    var_p: Vec<T>,
    /// K = Σ_j ((log σ_qj − log σ_j) + e^{2 log σ_j} h_j) · 1 − ½.
    constant: T,
    penalty: KlPenalty<T>,
}

impl<'a, T: Real> RefKl<'a, T> {
    fn new(log_std: &[T], mean_q: &'a [T], log_std_q: &[T], coef: f64, n: usize) -> Self {
        let (_, half_inv_var_q, var_p, constant) = StdParts::of(log_std, log_std_q);
        RefKl {
            mean_q,
            half_inv_var_q,
            var_p,
            constant,
            penalty: KlPenalty::new(coef, n),
        }
    }

    /// One state's KL = Σ_j (μ_j − μ_qj)² h_j + K, with π_θ's means `mu`
    /// and π_ref's `mu_q`; writes the KL's gradient in the means, as candle
    /// forms it (each to a zero), to `g_mean` (`terms`: room for d values).
    fn state(&self, mu: &[T], mu_q: &[T], terms: &mut [T], g_mean: &mut [T]) -> T {
        let zero = T::ZERO;
        let two = T::from_f64(2.0);
        // The row sum's and the broadcast add's backward pass g_kl on.
        let g_row = zero + self.penalty.g_kl;
        for j in 0..mu.len() {
            let s = mu[j] - mu_q[j];
            terms[j] = (s * s) * self.half_inv_var_q[j];
            // broadcast_mul: g · h; sqr: (s · g) · 2 + 0; the difference: 0 + g
            let g_sq = zero + g_row * self.half_inv_var_q[j];
            g_mean[j] = zero + (zero + ((s * g_sq) * two + zero));
        }
        T::sum(terms) + self.constant
    }

    /// The KL's gradient in log σ over `n` states, as candle forms it: the
    /// broadcast K's sum over the states, back through `sum_all` and
    /// `affine(1, −½)`; then the product's path through e^{2 log σ}, then the
    /// difference's (subtracted).
    fn d_log_std(&self, n: usize) -> Vec<T> {
        let zero = T::ZERO;
        let two = T::from_f64(2.0);
        let g_constant = zero + T::sum(&vec![self.penalty.g_kl; n]);
        // sum_all's reshape and its broadcast back (0 + g each), the affine's
        // g · 1 + 0
        let g_terms = zero + ((zero + (zero + g_constant)) * T::ONE + zero);
        self.var_p
            .iter()
            .zip(&self.half_inv_var_q)
            .map(|(&var_p, &h)| {
                let g_var_p = zero + g_terms * h;
                let g_exp = zero + g_var_p * var_p;
                (zero + (g_exp * two + zero)) - (zero + g_terms)
            })
            .collect()
    }
}

/// KL(π_old ‖ π_θ) between diagonal Gaussians with state-independent σ
/// (`DiagGaussian::kl` with π_old on the left): its state-independent parts
/// and the gradient per state, in candle's ops.
struct OldKlTerm<'a, T> {
    /// π_old's means `[N · d]`.
    mean_o: &'a [T],
    /// e^{−2 log σ_j} of π_θ (`affine(−2, 0)`, `exp`).
    inv_var: Vec<T>,
    /// h_j = e^{−2 log σ_j} · ½ (`affine(½, 0)`).
    half_inv_var: Vec<T>,
    /// e^{2 log σ_oj} of π_old (`affine(2, 0)`, `exp`).
    var_o: Vec<T>,
    /// K = Σ_j ((log σ_j − log σ_oj) + e^{2 log σ_oj} h_j) · 1 − ½.
    constant: T,
    /// β (0 when the KL is measured only) over the minibatch.
    penalty: KlPenalty<T>,
    /// Whether the term is in the loss (a penalised objective).
    penalised: bool,
    /// Whether its gradient is: in the loss with β ≠ 0 (candle's backward
    /// does not walk through an `affine` of factor 0).
    differentiated: bool,
}

impl<'a, T: Real> OldKlTerm<'a, T> {
    fn new(log_std: &[T], mean_o: &'a [T], log_std_o: &[T], beta: Option<f64>, n: usize) -> Self {
        // KL(π_old ‖ π_θ): π_old on the left.
        let (inv_var, half_inv_var, var_o, constant) = StdParts::of(log_std_o, log_std);
        OldKlTerm {
            mean_o,
            inv_var,
            half_inv_var,
            var_o,
            constant,
            penalty: KlPenalty::new(beta.unwrap_or(0.0), n),
            penalised: beta.is_some(),
            differentiated: beta.is_some_and(|b| b != 0.0),
        }
    }

    /// State `i`'s KL = Σ_j (μ_oj − μ_j)² h_j + K, with π_θ's means `mu`;
    /// when differentiated, subtracts the KL's gradient in the means, as
    /// candle forms it, from `g_mean`, and adds the broadcast h's gradient
    /// to `g_half_inv_var` (the rows' sum in order) (`terms`: room for d
    /// values).
    fn state(
        &self,
        i: usize,
        mu: &[T],
        terms: &mut [T],
        g_mean: &mut [T],
        g_half_inv_var: &mut [T],
    ) -> T {
        let zero = T::ZERO;
        let two = T::from_f64(2.0);
        let d = mu.len();
        let mu_o = &self.mean_o[i * d..(i + 1) * d];
        // The row sum's and the broadcast add's backward pass g_β on.
        let g_row = zero + self.penalty.g_kl;
        for j in 0..d {
            let s = mu_o[j] - mu[j];
            let sq = s * s;
            terms[j] = sq * self.half_inv_var[j];
            if self.differentiated {
                // broadcast_mul: g · h to the square, g · s² to h
                let g_sq = zero + g_row * self.half_inv_var[j];
                g_half_inv_var[j] += zero + g_row * sq;
                // sqr: (s · g) · 2 + 0; μ is the difference's right operand
                g_mean[j] -= zero + ((s * g_sq) * two + zero);
            }
        }
        T::sum(terms) + self.constant
    }

    /// Adds the KL's gradient in log σ over `n` states, as candle forms it,
    /// to `g_log_std`: the broadcast K's sum over the states, back through
    /// `sum_all` and `affine(1, −½)` to the difference (log σ − log σ_o:
    /// added) and to h (the product's gradient, then the quadratic term's
    /// `g_half_inv_var`), then back through h's `affine(½, 0)`, `exp`,
    /// `affine(−2, 0)`.
    fn add_d_log_std(&self, n: usize, g_half_inv_var: &[T], g_log_std: &mut [T]) {
        if !self.differentiated {
            return;
        }
        let zero = T::ZERO;
        let g_constant = zero + T::sum(&vec![self.penalty.g_kl; n]);
        // sum_all's reshape and its broadcast back (0 + g each), the affine's
        // g · 1 + 0
        let g_terms = zero + ((zero + (zero + g_constant)) * T::ONE + zero);
        for j in 0..g_log_std.len() {
            let g_h = (zero + g_terms * self.var_o[j]) + g_half_inv_var[j];
            let g_inv_var = zero + (g_h * T::from_f64(0.5) + zero);
            let g_exp = zero + g_inv_var * self.inv_var[j];
            g_log_std[j] = (g_log_std[j] + (zero + g_terms)) + (g_exp * T::from_f64(-2.0) + zero);
        }
    }
}
