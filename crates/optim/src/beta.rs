//! The KL-penalty coefficient β of PPO's penalised objective (Schulman et al.
//! 2017, "Proximal policy optimization algorithms", §4).

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
}
