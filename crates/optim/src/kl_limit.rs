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
//! The same search holds a bound on the mean KL(π_θ ‖ π_ref) to a reference
//! policy ([`crate::reference`], constraint mode) — alone or together with a
//! per-update limit ([`Bounds`]): a candidate is feasible when it is within
//! every bound, the search line lives in √ of the binding statistic scaled
//! to the first bound's units, and α = 0 is feasible because θ_old's D_ref
//! is within its bound (or, when a new batch puts θ_old outside, the bound
//! is D_ref(θ_old) itself, and [`crate::reference::restore_within`] then
//! brings the policy in).
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
    /// The mean KL(π_θ ‖ π_ref) at the step as proposed (α = 1), before any
    /// pull-back: what the constraint's multiplier is moved by (0 without a
    /// reference bound).
    pub proposed_ref: f64,
}

/// The bounds one update is held to: a hard per-update limit on
/// KL(π_old ‖ π_θ) and/or a bound on the mean KL(π_θ ‖ π_ref) to a
/// reference policy ([`crate::reference`]).
#[derive(Debug, Clone, Copy)]
pub struct Bounds<'a> {
    /// The per-update limit (mean or per-state), if hard.
    pub update: Option<KlLimit>,
    /// The reference bound, if any.
    pub reference: Option<RefBound<'a>>,
}

/// A bound on the mean KL(π_θ ‖ π_ref) over the batch states.
#[derive(Debug, Clone, Copy)]
pub struct RefBound<'a> {
    /// The bound in force: ε_ref, or D_ref(θ_old) if that is larger (an
    /// update may not move a policy that is outside the ball further out).
    pub limit: f64,
    /// π_ref at the batch states.
    pub dist: &'a Dist,
    /// D_ref(θ_old), the mean KL to the reference before the update.
    pub at_old: f64,
}

impl<'a> RefBound<'a> {
    /// The bound ε_ref for a policy whose D_ref before the update was `at_old`.
    pub fn new(eps: f64, dist: &'a Dist, at_old: f64) -> Self {
        RefBound {
            limit: ref_limit(eps, at_old),
            dist,
            at_old,
        }
    }
}

/// The reference bound in force for an update that starts at D_ref(θ_old) =
/// `at_old`: ε_ref, or `at_old` when the policy is outside the ball already
/// (it may not move further out).
pub fn ref_limit(eps: f64, at_old: f64) -> f64 {
    if at_old.is_finite() {
        eps.max(at_old)
    } else {
        eps
    }
}

/// The statistics the bounds compare at the current parameters, from one
/// forward pass: the per-update KL statistic its limit bounds (the largest
/// per-state value for a per-state bound, the mean otherwise) and the mean
/// KL to the reference.
#[derive(Debug, Clone, Copy)]
struct Measured {
    update: f64,
    reference: f64,
}

impl Bounds<'_> {
    fn measure(&self, policy: &dyn Policy, full: &MiniBatch, old: &Dist) -> Result<Measured> {
        let new = policy.dist_detached(&full.obs, full.mask.as_ref())?;
        let update = match self.update {
            Some(l) => {
                let kl = per_state_kl(old, &new)?;
                match l.kind {
                    KlLimitKind::PerState => max(&kl),
                    KlLimitKind::Mean | KlLimitKind::Target => mean(&kl),
                }
            }
            None => 0.0,
        };
        let reference = match &self.reference {
            Some(r) => mean(&per_state_kl(&new, r.dist)?),
            None => 0.0,
        };
        Ok(Measured { update, reference })
    }

    /// Whether `m` is within every bound (NaN never is).
    fn within(&self, m: Measured) -> bool {
        self.update.is_none_or(|l| m.update <= l.value)
            && self.reference.is_none_or(|r| m.reference <= r.limit)
    }

    /// Whether `m` is close enough to a bound to stop searching.
    fn good_enough(&self, m: Measured) -> bool {
        self.update
            .is_some_and(|l| m.update >= GOOD_ENOUGH * l.value)
            || self
                .reference
                .is_some_and(|r| m.reference >= GOOD_ENOUGH * r.limit)
    }

    /// The unit the search's line lives in: the per-update limit if there is
    /// one, else the reference bound.
    fn unit(&self) -> f64 {
        match (self.update, &self.reference) {
            (Some(l), _) => l.value,
            (None, Some(r)) => r.limit,
            (None, None) => 1.0,
        }
    }

    /// √ of the binding statistic in the search's unit (+∞ when not finite):
    /// √KL is close to linear in α near θ_old.
    fn height(&self, m: Measured) -> f64 {
        let unit = self.unit();
        let mut h: f64 = 0.0;
        if self.update.is_some() {
            h = h.max(m.update.sqrt());
        }
        if let Some(r) = &self.reference {
            h = h.max((m.reference * unit / r.limit).sqrt());
        }
        if h.is_finite() && !m.update.is_nan() && !m.reference.is_nan() {
            h
        } else {
            f64::INFINITY
        }
    }
}

/// Enforce `bounds` on the policy's move from `theta_old` (its flat
/// parameters when the batch was collected; π_old = `old` at the states of
/// `full`) to its current parameters, as described in the module docs.
///
/// On return the policy holds parameters within every bound (or exactly
/// `theta_old`). A non-finite KL counts as outside.
///
/// Errors: [`OptimError::NonFinite`] when the current parameters are not
/// finite (θ_old is set back), policy errors from the forward passes.
pub fn enforce(
    policy: &mut dyn Policy,
    theta_old: &[f64],
    full: &MiniBatch,
    old: &Dist,
    bounds: &Bounds<'_>,
    update: u64,
) -> Result<LimitOutcome> {
    let at_full = bounds.measure(policy, full, old)?;
    let proposed_ref = at_full.reference;
    if bounds.within(at_full) {
        return Ok(LimitOutcome {
            step_frac: 1.0,
            evals: 0,
            proposed_ref,
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
    // Bracket: lo feasible (α = 0: KL(π_old ‖ π_old) = 0, D_ref(θ_old) within
    // its bound by construction), hi infeasible (α = 1).
    let at_zero = Measured {
        update: 0.0,
        reference: bounds.reference.map_or(0.0, |r| r.at_old),
    };
    let (mut lo, mut g_lo) = (0.0_f64, bounds.height(at_zero));
    if !g_lo.is_finite() {
        g_lo = 0.0;
    }
    let mut best: Option<Vec<f64>> = None;
    let (mut hi, mut g_hi) = (1.0_f64, bounds.height(at_full));
    let target = (AIM * bounds.unit()).sqrt();
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
        let m = bounds.measure(policy, full, old)?;
        evals += 1;
        if bounds.within(m) {
            (lo, g_lo) = (alpha, bounds.height(m));
            best = Some(candidate);
            if bounds.good_enough(m) {
                break;
            }
        } else {
            (hi, g_hi) = (alpha, bounds.height(m));
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
        proposed_ref,
    })
}

/// Hard bounds armed for one update of a first-order optimiser (or NPG):
/// θ_old and the policy's slice of the Adam moments (the policy's parameters
/// come first in [`crate::losses::trainable_vars`]), taken before the steps.
#[derive(Debug, Clone)]
pub struct Guard {
    limit: Option<KlLimit>,
    reference: Option<(f64, f64)>,
    theta_old: Vec<f64>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
}

impl Guard {
    /// Arm the bounds of an update before its steps: `limit` if it is a hard
    /// one (a target is steered toward, not enforced) and `reference` =
    /// (ε_ref, D_ref(θ_old)) for a reference constraint. `None` when neither
    /// applies. `adam`: the optimiser whose policy moments are restored with
    /// θ_old (none for NPG).
    pub fn arm(
        policy: &dyn Policy,
        adam: Option<&Adam>,
        limit: Option<KlLimit>,
        reference: Option<(f64, f64)>,
    ) -> Result<Option<Self>> {
        let limit = limit.filter(KlLimit::is_hard);
        if limit.is_none() && reference.is_none() {
            return Ok(None);
        }
        let theta_old = policy.get_flat()?;
        let k = theta_old.len();
        Ok(Some(Guard {
            limit,
            reference,
            adam_m: adam.map_or(Vec::new(), |a| a.m[..k].to_vec()),
            adam_v: adam.map_or(Vec::new(), |a| a.v[..k].to_vec()),
            theta_old,
        }))
    }

    /// After the steps: [`enforce`] the bounds (`reference`: π_ref at the
    /// batch states, required when a reference bound was armed); when θ_old
    /// is restored, the policy's Adam moments are restored bit for bit too,
    /// so the optimiser state is the one that goes with the parameters kept
    /// (the value network, which has no limit, keeps its steps and moments).
    /// A partial step keeps the moments: they are statistics of gradients
    /// that were observed.
    pub fn enforce(
        self,
        policy: &mut dyn Policy,
        adam: Option<&mut Adam>,
        full: &MiniBatch,
        old: &Dist,
        reference: Option<&Dist>,
        update: u64,
    ) -> Result<LimitOutcome> {
        let restore = |adam: Option<&mut Adam>| {
            if let Some(adam) = adam {
                let k = self.adam_m.len();
                adam.m[..k].copy_from_slice(&self.adam_m);
                adam.v[..k].copy_from_slice(&self.adam_v);
            }
        };
        let bounds = Bounds {
            update: self.limit,
            reference: match (self.reference, reference) {
                (Some((eps, at_old)), Some(dist)) => Some(RefBound::new(eps, dist, at_old)),
                (Some(_), None) => {
                    return Err(OptimError::config(
                        "algo.reference",
                        "a reference bound was armed without the reference distributions",
                    ))
                }
                (None, _) => None,
            },
        };
        match enforce(policy, &self.theta_old, full, old, &bounds, update) {
            Ok(outcome) => {
                if outcome.step_frac == 0.0 {
                    restore(adam);
                }
                Ok(outcome)
            }
            Err(e) => {
                // Parameters are back at θ_old on every error path of the search.
                restore(adam);
                Err(e)
            }
        }
    }
}
