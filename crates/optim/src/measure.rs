//! Exact and sampled KL between the policy before and after an update, the
//! quantities every update reports.

use candle_core::{DType, Tensor};
use klrl_policy::Dist;

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
    let forward = host(old.kl(&new)?)?;
    let reverse = host(new.kl(&old)?)?;
    let entropy = host(new.entropy()?)?;
    let old_lp = host(old_log_probs.clone())?;
    let new_lp = host(new_log_probs.clone())?;
    let log_ratios: Vec<f64> = new_lp.iter().zip(&old_lp).map(|(n, o)| n - o).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(KlStats {
        kl_old_new: mean(&forward),
        kl_new_old: mean(&reverse),
        kl_max: forward.iter().cloned().fold(0.0, f64::max),
        kl_k1: klrl_kl::k1_mean(&log_ratios).unwrap_or(f64::NAN),
        kl_k3: klrl_kl::k3_mean(&log_ratios).unwrap_or(f64::NAN),
        entropy: mean(&entropy),
    })
}
