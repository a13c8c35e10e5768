//! The KL-penalty coefficient β of PPO's penalised objective (Schulman et al.
//! 2017, "Proximal policy optimization algorithms", §4): the paper's adaptive
//! rule, applied once per batch, and a dual-ascent control applied inside
//! the update.

use serde::{Deserialize, Serialize};

/// The adaptive-β rule, applied once per batch after the policy epochs, with
/// d = Ê[KL(π_old ‖ π_θ)] the measured mean KL:
///
/// - d < d_targ / 1.5 → β ← β / 2 (the policy moved too little: penalise less);
/// - d > d_targ × 1.5 → β ← β × 2 (it moved too much: penalise more);
/// - otherwise β is kept.
///
/// β is clamped to `[beta_min, beta_max]` so a long run of small or large KLs
/// cannot drive it to 0 or to infinity. The paper starts at β = 1 and notes
/// that the starting value matters little because the rule adapts it quickly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveBeta {
    /// d_targ, the target mean KL per update in nats (the paper's best: 0.01).
    pub kl_target: f64,
    /// Lower clamp for β; default 1e-4.
    pub beta_min: f64,
    /// Upper clamp for β; default 1e3.
    pub beta_max: f64,
}

impl AdaptiveBeta {
    /// β after a batch whose measured mean KL was `kl`. A non-finite KL is
    /// treated as "too large" (β doubles), so a diverging update is damped.
    pub fn next_beta(&self, beta: f64, kl: f64) -> f64 {
        let next = if !kl.is_finite() || kl > self.kl_target * 1.5 {
            beta * 2.0
        } else if kl < self.kl_target / 1.5 {
            beta / 2.0
        } else {
            beta
        };
        next.clamp(self.beta_min, self.beta_max)
    }
}

/// β as the Lagrange multiplier of the constraint Ê[KL(π_old ‖ π_θ)] ≤ d_targ.
///
/// PPO's penalised objective L(θ) − β Ê\[KL\] is the Lagrangian of
/// max_θ L(θ) subject to Ê[KL(π_old ‖ π_θ)] ≤ d_targ (Schulman et al. 2017,
/// §4, who motivate the penalty by this constraint). Dual ascent moves the
/// multiplier along the dual gradient, the constraint's violation d − d_targ
/// (Boyd & Vandenberghe 2004, §5.5.5; used for KL-constrained RL by e.g.
/// Tessler et al. 2019, "Reward constrained policy optimization"). klrl
/// takes the step on log β with the violation relative to the target, so
/// that the rule is free of the KL's scale and β stays positive:
///
/// log β ← log β + η (d / d_targ − 1),  β clamped to [beta_min, beta_max],
///
/// applied inside the update — after **every policy step** with the KL d of
/// that step's states when an epoch is one minibatch, after every epoch with
/// the batch's KL otherwise — not once per batch as the paper's rule: β
/// rises as soon as the policy starts to overshoot, and falls while it has
/// not moved. At d = 0 one step lowers β by e^(−η); the floor `beta_min`
/// keeps a long quiet stretch (β halved and halved again by the paper's rule
/// down to 1e-4) from leaving the next large step unresisted. A non-finite
/// d raises β by the largest step the rule allows for d = 10 d_targ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DualBeta {
    /// d_targ, the mean KL the control steers toward (nats).
    pub kl_target: f64,
    /// η, the dual step size on log β.
    pub lr: f64,
    /// The floor of β.
    pub beta_min: f64,
    /// The ceiling of β.
    pub beta_max: f64,
}

impl DualBeta {
    /// β after a step whose measured mean KL was `kl`.
    pub fn next_beta(&self, beta: f64, kl: f64) -> f64 {
        let violation = if kl.is_finite() {
            kl / self.kl_target - 1.0
        } else {
            9.0
        };
        (beta.max(self.beta_min).ln() + self.lr * violation)
            .exp()
            .clamp(self.beta_min, self.beta_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: AdaptiveBeta = AdaptiveBeta {
        kl_target: 0.01,
        beta_min: 1e-4,
        beta_max: 1e3,
    };

    #[test]
    fn halves_below_doubles_above_keeps_inside_the_band() {
        assert_eq!(RULE.next_beta(1.0, 0.001), 0.5);
        assert_eq!(RULE.next_beta(1.0, 0.0066), 0.5); // just below 0.01 / 1.5
        assert_eq!(RULE.next_beta(1.0, 0.0067), 1.0); // just above it
        assert_eq!(RULE.next_beta(1.0, 0.01), 1.0);
        assert_eq!(RULE.next_beta(1.0, 0.015), 1.0); // the band's edge is kept
        assert_eq!(RULE.next_beta(1.0, 0.0151), 2.0);
        assert_eq!(RULE.next_beta(3.0, 1.0), 6.0);
        assert_eq!(RULE.next_beta(3.0, f64::NAN), 6.0);
        assert_eq!(RULE.next_beta(3.0, f64::INFINITY), 6.0);
    }

    #[test]
    fn clamps_to_the_configured_range() {
        assert_eq!(RULE.next_beta(1e-4, 0.0), 1e-4);
        assert_eq!(RULE.next_beta(800.0, 1.0), 1e3);
        let mut beta = 1.0;
        for _ in 0..100 {
            beta = RULE.next_beta(beta, 0.0);
        }
        assert_eq!(beta, 1e-4);
    }

    const DUAL: DualBeta = DualBeta {
        kl_target: 0.01,
        lr: 0.5,
        beta_min: 0.1,
        beta_max: 1e3,
    };

    #[test]
    fn dual_ascent_moves_log_beta_by_the_relative_violation() {
        // On target: unchanged (to rounding).
        assert!((DUAL.next_beta(2.0, 0.01) - 2.0).abs() < 1e-12);
        // d = 3 d_targ: log β += 0.5 · 2.
        let up = DUAL.next_beta(2.0, 0.03);
        assert!((up - 2.0 * 1f64.exp()).abs() < 1e-12, "{up}");
        // d = 0: log β −= 0.5.
        let down = DUAL.next_beta(2.0, 0.0);
        assert!((down - 2.0 * (-0.5f64).exp()).abs() < 1e-12, "{down}");
        // Non-finite KL: the step of d = 10 d_targ.
        let nan = DUAL.next_beta(2.0, f64::NAN);
        assert!((nan - 2.0 * 4.5f64.exp()).abs() < 1e-9, "{nan}");
    }

    #[test]
    fn dual_floor_survives_a_quiet_stretch_and_recovers_in_a_few_steps() {
        let mut beta = 1.0;
        for _ in 0..10_000 {
            beta = DUAL.next_beta(beta, 0.0);
        }
        assert_eq!(beta, 0.1);
        // One overshooting step at 5 d_targ multiplies β by e².
        let after = DUAL.next_beta(beta, 0.05);
        assert!((after - 0.1 * 2f64.exp()).abs() < 1e-12, "{after}");
        assert_eq!(DUAL.next_beta(900.0, 1.0), 1e3);
        // Below the floor (e.g. a state saved by another rule): lifted to it first.
        assert!((DUAL.next_beta(1e-4, 0.01) - 0.1).abs() < 1e-12);
    }
}
