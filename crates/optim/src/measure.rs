//! Exact and sampled KL between the policy before and after an update, the
//! quantities every update reports.

use candle_core::{DType, Tensor};
use klrl_policy::{Dist, Policy};

use crate::batch::MiniBatch;
use crate::diagnostics::UpdateDiagnostics;
use crate::error::Result;
use crate::rollout::candle_err;

/// KL and entropy statistics of an update over a batch of states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlStats {
    /// Mean over states of the exact KL(π_old ‖ π_new).
    pub kl_old_new: f64,
    /// Mean over states of the exact KL(π_new ‖ π_old).
    pub kl_new_old: f64,
    /// Largest per-state KL(π_old ‖ π_new).
    pub kl_max: f64,
    /// k1 = mean(−log r), r = π_new(a)/π_old(a), a ~ π_old (unbiased).
    pub kl_k1: f64,
    /// k3 = mean((r − 1) − log r) (unbiased, never negative).
    pub kl_k3: f64,
    /// Mean entropy of π_new.
    pub entropy: f64,
}

/// Measure how far `new` moved from `old` over the same states;
/// `new_log_probs` and `old_log_probs` are log π(a|s) of the batch's actions.
pub fn kl_stats(
    old: &Dist,
    new: &Dist,
    old_log_probs: &Tensor,
    new_log_probs: &Tensor,
) -> Result<KlStats> {
    let host = |t: Tensor| -> Result<Vec<f64>> {
        t.detach()
            .to_dtype(DType::F64)
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(candle_err("KL statistics to host"))
    };
    let old = old.detach();
    let new = new.detach();
    let forward = per_state_kl(&old, &new)?;
    let reverse = host(new.kl(&old)?)?;
    let entropy = host(new.entropy()?)?;
    let old_lp = host(old_log_probs.clone())?;
    let new_lp = host(new_log_probs.clone())?;
    let log_ratios: Vec<f64> = new_lp.iter().zip(&old_lp).map(|(n, o)| n - o).collect();
    Ok(KlStats {
        kl_old_new: mean(&forward),
        kl_new_old: mean(&reverse),
        kl_max: max(&forward),
        kl_k1: klrl_kl::k1_mean(&log_ratios).unwrap_or(f64::NAN),
        kl_k3: klrl_kl::k3_mean(&log_ratios).unwrap_or(f64::NAN),
        entropy: mean(&entropy),
    })
}

/// The exact KL(old(·|s) ‖ new(·|s)) of every state, on the host in f64.
/// Every KL that is compared with a limit goes through this function and
/// [`mean`] / [`max`], so the number a check accepted is the number reported.
pub fn per_state_kl(old: &Dist, new: &Dist) -> Result<Vec<f64>> {
    old.kl(new)?
        .detach()
        .to_dtype(DType::F64)
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(candle_err("per-state KL to host"))
}

/// The mean of per-state values (0 for none), summed in order.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The largest per-state value (0 for none); NaN if any value is NaN, so a
/// non-finite KL never passes a limit.
pub fn max(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m: f64, &x| {
        if x.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(x)
        }
    })
}

/// The distributions of `dist` at the states `rows` (a minibatch of π_old).
pub fn select_rows(dist: &Dist, rows: &[usize]) -> Result<Dist> {
    let e = candle_err("selecting rows of π_old");
    let pick = |t: &Tensor| -> Result<Tensor> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), t.device()).map_err(&e)?;
        t.index_select(&idx, 0).map_err(&e)
    };
    Ok(match dist {
        // The logits carry the mask bias already: no mask again.
        Dist::Categorical(d) => Dist::Categorical(klrl_policy::Categorical::from_logits(
            &pick(d.logits())?,
            None,
        )?),
        // A per-state σ (gSDE, a state-dependent head) is picked with the means.
        Dist::DiagGaussian(d) => Dist::DiagGaussian(klrl_policy::DiagGaussian::new(
            &pick(d.mean())?,
            &if d.is_state_dependent() {
                pick(d.log_std())?
            } else {
                d.log_std().clone()
            },
        )?),
    })
}

/// The exact mean KL(π_old ‖ π_θ) over the states of `full` at the current
/// parameters (one detached forward pass).
pub fn batch_mean_kl(policy: &dyn Policy, full: &MiniBatch, old: &Dist) -> Result<f64> {
    let new = policy.dist_detached(&full.obs, full.mask.as_ref())?;
    Ok(mean(&per_state_kl(old, &new)?))
}

/// [`kl_stats`] between `old` and the current policy over the states and
/// actions of `full` — what every update reports about how far it moved —
/// and, with π_ref at those states, the per-state KL(π_new ‖ π_ref) (empty
/// without), from the same forward pass.
pub fn measure_update(
    policy: &dyn Policy,
    full: &MiniBatch,
    old: &Dist,
    reference: Option<&Dist>,
) -> Result<(KlStats, Vec<f64>)> {
    let new = policy.dist_detached(&full.obs, full.mask.as_ref())?;
    let new_log_probs = new.log_prob(&full.actions)?;
    let stats = kl_stats(old, &new, &full.old_log_probs, &new_log_probs)?;
    let kl_ref = match reference {
        Some(r) => per_state_kl(&new, r)?,
        None => Vec::new(),
    };
    Ok((stats, kl_ref))
}

/// Diagnostics with the KL and entropy columns of `kl` filled in and every
/// other column NaN.
pub fn diagnostics_from(kl: &KlStats) -> UpdateDiagnostics {
    let mut d = UpdateDiagnostics::empty();
    d.kl_old_new = kl.kl_old_new;
    d.kl_new_old = kl.kl_new_old;
    d.kl_max = kl.kl_max;
    d.kl_k1 = kl.kl_k1;
    d.kl_k3 = kl.kl_k3;
    d.entropy = kl.entropy;
    d
}
