//! Sample estimators of KL(π_old ‖ π_new) from log-probability ratios
//! (J. Schulman, "Approximating KL Divergence", 2020,
//! <http://joschu.net/blog/kl-approx.html>).
//!
//! For actions a ~ π_old with log r = ln π_new(a) − ln π_old(a):
//! - k1 = −log r: unbiased, high variance, can be negative per sample;
//! - k2 = ½ (log r)²: biased, low variance, ≥ 0 (accurate when π_new ≈ π_old);
//! - k3 = (r − 1) − log r: unbiased (E\[r\] = 1 under π_old), low variance, ≥ 0
//!   since eˣ − 1 ≥ x.
//!
//! Unbiasedness needs the samples to come from π_old; with samples from π_new
//! these estimate the reverse direction with the opposite sign convention.

use crate::error::{InputProblem, KlError};

/// k1 for one sample: −log r. Unbiased for KL(π_old‖π_new).
pub fn k1(log_ratio: f64) -> f64 {
    -log_ratio
}

/// k2 for one sample: ½ (log r)². Biased; ≥ 0.
pub fn k2(log_ratio: f64) -> f64 {
    0.5 * log_ratio * log_ratio
}

/// k3 for one sample: (r − 1) − log r with r = exp(log r), computed as
/// expm1(log r) − log r to keep precision when log r ≈ 0. Unbiased and ≥ 0.
/// log r = −∞ (π_new(a) = 0) gives +∞.
pub fn k3(log_ratio: f64) -> f64 {
    if log_ratio == f64::NEG_INFINITY {
        return f64::INFINITY;
    }
    (log_ratio.exp_m1() - log_ratio).max(0.0)
}

/// Check the slice and return the mean of `f` over it.
fn mean_of(log_ratios: &[f64], f: fn(f64) -> f64) -> Result<f64, KlError> {
    validate(log_ratios)?;
    Ok(log_ratios.iter().map(|&x| f(x)).sum::<f64>() / log_ratios.len() as f64)
}

fn validate(log_ratios: &[f64]) -> Result<(), KlError> {
    let err = KlError::invalid("log_ratios");
    if log_ratios.is_empty() {
        return Err(err(InputProblem::Empty));
    }
    if let Some((index, &value)) = log_ratios
        .iter()
        .enumerate()
        .find(|(_, v)| v.is_nan() || **v == f64::INFINITY)
    {
        return Err(err(InputProblem::InvalidLogRatio { index, value }));
    }
    Ok(())
}

/// Mean of k1 = −log r over the samples: (1/N) Σ −log rᵢ.
///
/// `log_ratios`: ln π_new(aᵢ) − ln π_old(aᵢ) for aᵢ ~ π_old; at least one; −∞
/// is allowed (π_new(a) = 0, giving +∞).
///
/// # Errors
/// [`KlError::Invalid`] with `arg = "log_ratios"`: empty, or NaN / +∞ at an index.
pub fn k1_mean(log_ratios: &[f64]) -> Result<f64, KlError> {
    mean_of(log_ratios, k1)
}

/// Mean of k2 = ½ (log r)² over the samples. Arguments and errors as [`k1_mean`].
pub fn k2_mean(log_ratios: &[f64]) -> Result<f64, KlError> {
    mean_of(log_ratios, k2)
}

/// Mean of k3 = (r − 1) − log r over the samples. Arguments and errors as
/// [`k1_mean`].
pub fn k3_mean(log_ratios: &[f64]) -> Result<f64, KlError> {
    mean_of(log_ratios, k3)
}

/// The three estimators' means over one batch of log-ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlEstimates {
    /// Mean of −log r.
    pub k1: f64,
    /// Mean of ½ (log r)².
    pub k2: f64,
    /// Mean of (r − 1) − log r.
    pub k3: f64,
}

impl KlEstimates {
    /// Compute all three means. Arguments and errors as [`k1_mean`].
    pub fn new(log_ratios: &[f64]) -> Result<Self, KlError> {
        validate(log_ratios)?;
        Ok(KlEstimates {
            k1: mean_of(log_ratios, k1)?,
            k2: mean_of(log_ratios, k2)?,
            k3: mean_of(log_ratios, k3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_sample_values() {
        let lr = 0.2f64;
        assert_eq!(k1(lr), -0.2);
        assert!((k2(lr) - 0.02).abs() < 1e-17);
        assert!((k3(lr) - (lr.exp() - 1.0 - lr)).abs() < 1e-15);
        assert_eq!(k3(0.0), 0.0);
        assert_eq!(k3(f64::NEG_INFINITY), f64::INFINITY);
        // Small log r: k3 ≈ ½ (log r)² without cancellation.
        assert!((k3(1e-9) / k2(1e-9) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn means_and_errors() {
        let e = KlEstimates::new(&[0.1, -0.1]).unwrap();
        assert_eq!(e.k1, 0.0);
        assert!((e.k2 - 0.005).abs() < 1e-17);
        assert!(e.k3 > 0.0);
        assert!(k1_mean(&[]).is_err());
        assert_eq!(
            k3_mean(&[0.0, f64::NAN]).unwrap_err().to_string(),
            "log_ratios: index 1 is not a valid log-ratio (NaN)"
        );
        assert!(k2_mean(&[f64::INFINITY]).is_err());
        assert_eq!(k1_mean(&[f64::NEG_INFINITY]).unwrap(), f64::INFINITY);
    }
}
