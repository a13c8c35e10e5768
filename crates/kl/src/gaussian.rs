//! KL divergence between Gaussians with scalar or diagonal covariance, and the
//! VAE regulariser KL(N(μ, σ²) ‖ N(0, 1)).
//!
//! Full covariance matrices are in [`crate::multivariate`].

use crate::error::{InputProblem, KlError};

/// Check that a scalar is finite.
fn check_finite(arg: &'static str, index: usize, value: f64) -> Result<(), KlError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(KlError::Invalid {
            arg,
            problem: InputProblem::NotFinite { index, value },
        })
    }
}

/// Check that a standard deviation is finite and > 0.
fn check_sigma(arg: &'static str, index: usize, value: f64) -> Result<(), KlError> {
    check_finite(arg, index, value)?;
    if value > 0.0 {
        Ok(())
    } else {
        Err(KlError::Invalid {
            arg,
            problem: InputProblem::NonPositiveSigma { index, value },
        })
    }
}

/// One-dimensional Gaussian KL on validated input.
fn univariate_unchecked(mu_p: f64, sigma_p: f64, mu_q: f64, sigma_q: f64) -> f64 {
    let ratio = sigma_p / sigma_q;
    let z = (mu_p - mu_q) / sigma_q;
    // ln(σq/σp) + (σp² + (μp−μq)²)/(2σq²) − ½, written with ratios to avoid
    // overflow of the squares.
    -ratio.ln() + 0.5 * (ratio * ratio + z * z) - 0.5
}

/// KL between univariate Gaussians, in nats:
/// KL(N(μp, σp²) ‖ N(μq, σq²)) = ln(σq/σp) + (σp² + (μp − μq)²) / (2σq²) − ½.
///
/// Derivation: e.g. Bishop, *Pattern Recognition and Machine Learning*, ex. 1.30;
/// the k = 1 case of [`crate::multivariate::mvn_kl`].
///
/// `mu_p`, `mu_q`: means (finite); `sigma_p`, `sigma_q`: standard deviations
/// (not variances), finite and > 0.
///
/// # Errors
/// [`KlError::Invalid`] naming `mu_p`, `sigma_p`, `mu_q` or `sigma_q` for a
/// non-finite value or σ ≤ 0.
pub fn univariate_kl(mu_p: f64, sigma_p: f64, mu_q: f64, sigma_q: f64) -> Result<f64, KlError> {
    check_finite("mu_p", 0, mu_p)?;
    check_sigma("sigma_p", 0, sigma_p)?;
    check_finite("mu_q", 0, mu_q)?;
    check_sigma("sigma_q", 0, sigma_q)?;
    Ok(univariate_unchecked(mu_p, sigma_p, mu_q, sigma_q))
}

/// KL between Gaussians with diagonal covariances diag(σp²) and diag(σq²), in
/// nats: the sum over dimensions of the univariate formula,
/// Σᵢ [ln(σq,ᵢ/σp,ᵢ) + (σp,ᵢ² + (μp,ᵢ − μq,ᵢ)²) / (2σq,ᵢ²) − ½].
///
/// This is the KL between two diagonal-Gaussian policies at one state.
///
/// `mu_p`, `sigma_p`, `mu_q`, `sigma_q`: slices of one common length k ≥ 1;
/// means finite, standard deviations finite and > 0.
///
/// # Errors
/// [`KlError::LengthMismatch`] when the lengths differ, [`KlError::Invalid`]
/// with [`InputProblem::Empty`] for k = 0, or naming the argument and index of a
/// non-finite value or σ ≤ 0.
pub fn diagonal_kl(
    mu_p: &[f64],
    sigma_p: &[f64],
    mu_q: &[f64],
    sigma_q: &[f64],
) -> Result<f64, KlError> {
    if mu_p.is_empty() {
        return Err(KlError::Invalid {
            arg: "mu_p",
            problem: InputProblem::Empty,
        });
    }
    let k = mu_p.len();
    KlError::check_len("mu_p", k, "sigma_p", sigma_p.len())?;
    KlError::check_len("mu_p", k, "mu_q", mu_q.len())?;
    KlError::check_len("mu_p", k, "sigma_q", sigma_q.len())?;
    let mut total = 0.0;
    for i in 0..k {
        check_finite("mu_p", i, mu_p[i])?;
        check_sigma("sigma_p", i, sigma_p[i])?;
        check_finite("mu_q", i, mu_q[i])?;
        check_sigma("sigma_q", i, sigma_q[i])?;
        total += univariate_unchecked(mu_p[i], sigma_p[i], mu_q[i], sigma_q[i]);
    }
    Ok(total)
}

/// The VAE regulariser per latent dimension (Kingma & Welling 2014,
/// "Auto-Encoding Variational Bayes", appendix B), in nats:
/// KL(N(μᵢ, exp(log_varᵢ)) ‖ N(0, 1)) = −½ (1 + log_varᵢ − μᵢ² − exp(log_varᵢ)).
///
/// `mu`: encoder means; `log_var`: encoder log-variances ln σ², both finite and
/// of one common length k ≥ 1.
///
/// # Errors
/// [`KlError::LengthMismatch`] when the lengths differ, [`KlError::Invalid`] for
/// an empty input or a non-finite element (naming `mu` or `log_var` and the index).
pub fn vae_kl_per_dim(mu: &[f64], log_var: &[f64]) -> Result<Vec<f64>, KlError> {
    if mu.is_empty() {
        return Err(KlError::Invalid {
            arg: "mu",
            problem: InputProblem::Empty,
        });
    }
    KlError::check_len("mu", mu.len(), "log_var", log_var.len())?;
    mu.iter()
        .zip(log_var)
        .enumerate()
        .map(|(i, (&m, &lv))| {
            check_finite("mu", i, m)?;
            check_finite("log_var", i, lv)?;
            // exp(lv) − 1 − lv loses digits for small lv; exp_m1 keeps them.
            Ok(0.5 * (m * m + (lv.exp_m1() - lv)))
        })
        .collect()
}

/// The VAE regulariser summed over latent dimensions:
/// KL(N(μ, diag(exp(log_var))) ‖ N(0, I)) = −½ Σᵢ (1 + log_varᵢ − μᵢ² − exp(log_varᵢ)).
///
/// Arguments and errors as [`vae_kl_per_dim`].
pub fn vae_kl(mu: &[f64], log_var: &[f64]) -> Result<f64, KlError> {
    Ok(vae_kl_per_dim(mu, log_var)?.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn univariate_known_values() {
        assert_eq!(univariate_kl(0.0, 1.0, 0.0, 1.0).unwrap(), 0.0);
        // Mean shift only: (Δμ)² / (2σ²).
        let kl = univariate_kl(1.0, 2.0, 0.0, 2.0).unwrap();
        assert!((kl - 0.125).abs() < 1e-15);
        // Scale only: ln 2 + 1/8 − 1/2.
        let kl = univariate_kl(0.0, 1.0, 0.0, 2.0).unwrap();
        assert!((kl - (std::f64::consts::LN_2 + 0.125 - 0.5)).abs() < 1e-15);
    }

    #[test]
    fn invalid_sigma_is_an_error() {
        assert_eq!(
            univariate_kl(0.0, 1.0, 0.0, 0.0).unwrap_err().to_string(),
            "sigma_q: index 0: standard deviation must be > 0 (got 0)"
        );
        assert!(univariate_kl(0.0, -1.0, 0.0, 1.0).is_err());
        assert!(univariate_kl(f64::NAN, 1.0, 0.0, 1.0).is_err());
        assert!(univariate_kl(0.0, f64::INFINITY, 0.0, 1.0).is_err());
        assert!(matches!(
            diagonal_kl(&[0.0, 0.0], &[1.0, -2.0], &[0.0, 0.0], &[1.0, 1.0]),
            Err(KlError::Invalid {
                arg: "sigma_p",
                problem: InputProblem::NonPositiveSigma { index: 1, .. }
            })
        ));
        assert!(diagonal_kl(&[0.0], &[1.0, 1.0], &[0.0], &[1.0]).is_err());
    }

    #[test]
    fn vae_matches_univariate_against_standard_normal() {
        let mu = [0.5, -1.0, 0.0];
        let lv = [-0.5, 0.3, 1e-9];
        let per = vae_kl_per_dim(&mu, &lv).unwrap();
        for i in 0..3 {
            let u = univariate_kl(mu[i], (0.5 * lv[i]).exp(), 0.0, 1.0).unwrap();
            assert!((per[i] - u).abs() < 1e-14, "{i}: {} vs {u}", per[i]);
        }
        assert!((vae_kl(&mu, &lv).unwrap() - per.iter().sum::<f64>()).abs() < 1e-15);
        assert!(vae_kl(&[0.0], &[f64::NAN]).is_err());
        assert!(vae_kl(&[], &[]).is_err());
        assert!(vae_kl(&[0.0, 1.0], &[0.0]).is_err());
    }
}
