//! A hard limit on how far one update moves the policy, for the first-order
//! optimisers (PPO with any objective, the vanilla policy gradient).
//!
//! After the optimiser's steps the policy is at θ = θ_old + Δ. If the exact
//! KL between π_old and π_θ over the batch states is above the limit (the
//! mean for `max_kl`, the largest per-state value for the projection's ε),
//! the parameters are moved back along the segment θ(α) = θ_old + α Δ,
//! α ∈ [0, 1], to the largest α found whose KL is within the limit — the
//! same acceptance test as TRPO's line search (Schulman et al. 2015,
//! Appendix C), applied to a first-order step. If no α > 0 is found, θ_old
//! is restored bit for bit.
//!
//! The search needs only forward passes. Near θ_old the KL is quadratic in
//! the step, KL(α) ≈ ½ α² Δᵀ F Δ, so √KL(α) is close to linear in α:
//! the search brackets α between a feasible `lo` (initially 0, where KL = 0)
//! and an infeasible `hi` (initially 1) and proposes the α at which the
//! straight line through (lo, √KL(lo)) and (hi, √KL(hi)) reaches
//! √(ρ · limit) with ρ = [`AIM`] (regula falsi on √KL), kept inside the
//! middle 90 % of the bracket so that the bracket always shrinks. It stops
//! at the first feasible α whose KL is at least [`GOOD_ENOUGH`] · limit,
//! or after `max_evals` evaluations. Typically one or two forward passes.
//!
//! The KL compared with the limit is computed by
//! [`crate::measure::per_state_kl`] and [`crate::measure::mean`] /
//! [`crate::measure::max`], the functions that produce the reported
//! `kl_old_new` and `kl_max`: an accepted update never reports a KL above
//! its limit.

use klrl_policy::{Dist, Policy};

use crate::adam::Adam;
use crate::batch::MiniBatch;
use crate::config::{KlLimit, KlLimitKind};
use crate::error::{OptimError, Result};
use crate::measure::{max, mean, per_state_kl};

/// The search aims at this fraction of the limit, leaving room for the
/// error of the √KL-linear model.
pub const AIM: f64 = 0.95;

/// A feasible α whose KL reaches this fraction of the limit ends the search.
pub const GOOD_ENOUGH: f64 = 0.8;

/// Forward passes the search may spend (after the one at α = 1).
pub const MAX_EVALS: usize = 10;

/// What the search did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitOutcome {
    /// The fraction α of the step that was kept: 1 when the update was
    /// within the limit, 0 when θ_old was restored.
    pub step_frac: f64,
    /// Forward passes spent after the first check (0 when within the limit).
    pub evals: usize,
}

/// The statistic of the KL between `old` and the current policy over the
/// states of `full` that a limit of `kind` bounds: the largest per-state
/// value for a per-state bound, the mean otherwise.
fn kl_at(policy: &dyn Policy, full: &MiniBatch, old: &Dist, kind: KlLimitKind) -> Result<f64> {
    let new = policy.dist(&full.obs, full.mask.as_ref())?.detach();
    let kl = per_state_kl(old, &new)?;
    Ok(match kind {
        KlLimitKind::PerState => max(&kl),
        KlLimitKind::Mean | KlLimitKind::Target => mean(&kl),
    })
}

/// Enforce `limit` on the policy's move from `theta_old` (its flat
/// parameters when the batch was collected; π_old = `old` at the states of
/// `full`) to its current parameters, as described in the module docs.
///
/// On return the policy holds parameters whose KL statistic is ≤ `limit`
/// (or exactly `theta_old`). A non-finite KL counts as above the limit.
///
/// Errors: [`OptimError::NonFinite`] when the current parameters are not
/// finite (nothing is searched; the caller restores), policy errors from the
/// forward passes.
pub fn enforce(
    policy: &mut dyn Policy,
    theta_old: &[f64],
    full: &MiniBatch,
    old: &Dist,
    limit: KlLimit,
    update: u64,
) -> Result<LimitOutcome> {
    let (kind, limit) = (limit.kind, limit.value);
    let kl_full = kl_at(policy, full, old, kind)?;
    if kl_full <= limit {
        return Ok(LimitOutcome {
            step_frac: 1.0,
            evals: 0,
        });
    }
    let theta = policy.get_flat()?;
    if theta.iter().any(|t| !t.is_finite()) {
        policy.set_flat(theta_old)?;
        return Err(OptimError::NonFinite {
            what: "parameters after the policy steps",
            update,
        });
    }
    let at = |alpha: f64| -> Vec<f64> {
        theta_old
            .iter()
            .zip(&theta)
            .map(|(o, t)| o + alpha * (t - o))
            .collect()
    };
    // Bracket: lo feasible (α = 0, KL = 0), hi infeasible (α = 1).
    let (mut lo, mut g_lo) = (0.0_f64, 0.0_f64);
    let mut best: Option<Vec<f64>> = None;
    let (mut hi, mut g_hi) = (
        1.0_f64,
        if kl_full.is_finite() {
            kl_full.sqrt()
        } else {
            f64::INFINITY
        },
    );
    let target = (AIM * limit).sqrt();
    let mut evals = 0;
    while evals < MAX_EVALS {
        let width = hi - lo;
        let guess = if g_hi.is_finite() && g_hi > g_lo {
            lo + width * (target - g_lo) / (g_hi - g_lo)
        } else {
            lo + 0.5 * width
        };
        let alpha = guess.clamp(lo + 0.05 * width, hi - 0.05 * width);
        let candidate = at(alpha);
        policy.set_flat(&candidate)?;
        let kl = kl_at(policy, full, old, kind)?;
        evals += 1;
        if kl <= limit {
            (lo, g_lo) = (alpha, kl.sqrt());
            best = Some(candidate);
            if kl >= GOOD_ENOUGH * limit {
                break;
            }
        } else {
            (hi, g_hi) = (
                alpha,
                if kl.is_finite() {
                    kl.sqrt()
                } else {
                    f64::INFINITY
                },
            );
        }
    }
    // The parameters must be those whose KL was measured: set the kept
    // candidate (or θ_old) again from the same f64 vector.
    match best {
        Some(candidate) => {
            policy.set_flat(&candidate)?;
            // A step so short that every parameter rounds back to θ_old's
            // value (f32) is a rejection, and reported as one.
            if policy.get_flat()? == theta_old {
                lo = 0.0;
            }
        }
        None => {
            lo = 0.0;
            policy.set_flat(theta_old)?;
        }
    }
    Ok(LimitOutcome {
        step_frac: lo,
        evals,
    })
}

/// A hard limit armed for one update of a first-order optimiser: θ_old and
/// the policy's slice of the Adam moments (the policy's parameters come
/// first in [`crate::losses::trainable_vars`]), taken before the steps.
#[derive(Debug, Clone)]
pub struct Guard {
    limit: KlLimit,
    theta_old: Vec<f64>,
    adam_m: Vec<f64>,
    adam_v: Vec<f64>,
}

impl Guard {
    /// Arm `limit` before an update's steps, if it is a hard one (a target
    /// is steered toward, not enforced: `None`, as without a limit).
    pub fn arm(policy: &dyn Policy, adam: &Adam, limit: Option<KlLimit>) -> Result<Option<Self>> {
        let Some(limit) = limit.filter(KlLimit::is_hard) else {
            return Ok(None);
        };
        let theta_old = policy.get_flat()?;
        let k = theta_old.len();
        Ok(Some(Guard {
            limit,
            adam_m: adam.m[..k].to_vec(),
            adam_v: adam.v[..k].to_vec(),
            theta_old,
        }))
    }

    /// After the steps: [`enforce`] the limit; when θ_old is restored, the
    /// policy's Adam moments are restored bit for bit too, so the optimiser
    /// state is the one that goes with the parameters kept (the value
    /// network, which has no limit, keeps its steps and moments). A partial
    /// step keeps the moments: they are statistics of gradients that were
    /// observed. Returns the fraction of the step kept.
    pub fn enforce(
        self,
        policy: &mut dyn Policy,
        adam: &mut Adam,
        full: &MiniBatch,
        old: &Dist,
        update: u64,
    ) -> Result<f64> {
        let restore = |adam: &mut Adam| {
            let k = self.adam_m.len();
            adam.m[..k].copy_from_slice(&self.adam_m);
            adam.v[..k].copy_from_slice(&self.adam_v);
        };
        match enforce(policy, &self.theta_old, full, old, self.limit, update) {
            Ok(outcome) => {
                if outcome.step_frac == 0.0 {
                    restore(adam);
                }
                Ok(outcome.step_frac)
            }
            Err(e) => {
                // Parameters are back at θ_old on every error path of the search.
                restore(adam);
                Err(e)
            }
        }
    }
}
