//! KL divergence between multivariate Gaussians with full covariance matrices,
//! computed through a Cholesky factorisation (no explicit inverse).
//!
//! Matrices are flat row-major slices of length k·k, where k is the length of
//! the mean vector.

use crate::error::{InputProblem, KlError};

/// Relative tolerance of the symmetry check: |aᵢⱼ − aⱼᵢ| ≤ 1e-10 · max(|aᵢⱼ|, |aⱼᵢ|).
/// Loose enough for matrices assembled in floating point (e.g. X Xᵀ / n), tight
/// enough to catch a transposed or mistyped entry.
const SYMMETRY_RTOL: f64 = 1e-10;

/// The Cholesky factorisation A = L Lᵀ of a symmetric positive definite matrix,
/// with L lower triangular with a positive diagonal.
///
/// Computed by the Cholesky–Banachiewicz recurrence (Golub & Van Loan,
/// *Matrix Computations*, 4th ed., Alg. 4.2.1):
/// lⱼⱼ = √(aⱼⱼ − Σ_{m<j} lⱼₘ²), lᵢⱼ = (aᵢⱼ − Σ_{m<j} lᵢₘ lⱼₘ) / lⱼⱼ for i > j.
#[derive(Debug, Clone, PartialEq)]
pub struct Cholesky {
    dim: usize,
    /// Row-major k×k lower-triangular factor (the upper triangle holds zeros).
    l: Vec<f64>,
}

impl Cholesky {
    /// Factorise the k×k matrix `a` (row-major, `a.len() == dim * dim`).
    ///
    /// `a`: finite entries, symmetric to a relative tolerance of 1e-10, positive
    /// definite; `dim`: k ≥ 1.
    ///
    /// # Errors
    /// [`InputProblem::Empty`] for k = 0, [`InputProblem::NotSquare`] when the
    /// length is not k², [`InputProblem::NotFinite`] (with the flat row-major
    /// index) for NaN or ±∞, [`InputProblem::NotSymmetric`], and
    /// [`InputProblem::NotPositiveDefinite`] when a pivot is ≤ 0 (singular or
    /// indefinite matrix).
    pub fn new(a: &[f64], dim: usize) -> Result<Self, InputProblem> {
        if dim == 0 {
            return Err(InputProblem::Empty);
        }
        if a.len() != dim * dim {
            return Err(InputProblem::NotSquare { dim, len: a.len() });
        }
        if let Some((index, &value)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(InputProblem::NotFinite { index, value });
        }
        for row in 0..dim {
            for col in row + 1..dim {
                let upper = a[row * dim + col];
                let lower = a[col * dim + row];
                if (upper - lower).abs() > SYMMETRY_RTOL * upper.abs().max(lower.abs()) {
                    return Err(InputProblem::NotSymmetric {
                        row,
                        col,
                        upper,
                        lower,
                    });
                }
            }
        }
        let mut l = vec![0.0; dim * dim];
        for j in 0..dim {
            let mut pivot = a[j * dim + j];
            for m in 0..j {
                pivot -= l[j * dim + m] * l[j * dim + m];
            }
            if !(pivot > 0.0 && pivot.is_finite()) {
                return Err(InputProblem::NotPositiveDefinite {
                    pivot: j,
                    value: pivot,
                });
            }
            let d = pivot.sqrt();
            l[j * dim + j] = d;
            for i in j + 1..dim {
                let mut s = a[i * dim + j];
                for m in 0..j {
                    s -= l[i * dim + m] * l[j * dim + m];
                }
                l[i * dim + j] = s / d;
            }
        }
        Ok(Cholesky { dim, l })
    }

    /// The dimension k.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The factor L as a row-major k×k slice (zeros above the diagonal).
    pub fn factor(&self) -> &[f64] {
        &self.l
    }

    /// ln det A = 2 Σⱼ ln lⱼⱼ (det A = det L · det Lᵀ = Πⱼ lⱼⱼ²).
    pub fn log_det(&self) -> f64 {
        2.0 * (0..self.dim)
            .map(|j| self.l[j * self.dim + j].ln())
            .sum::<f64>()
    }

    /// Solve L x = b by forward substitution: xᵢ = (bᵢ − Σ_{m<i} lᵢₘ xₘ) / lᵢᵢ.
    ///
    /// `b`: right-hand side of length k.
    ///
    /// # Errors
    /// [`KlError::LengthMismatch`] when `b.len() != k`.
    pub fn solve_lower(&self, b: &[f64]) -> Result<Vec<f64>, KlError> {
        KlError::check_len("b", b.len(), "factor dimension", self.dim)?;
        Ok(self.forward(b))
    }

    /// Forward substitution without the length check (b.len() == dim).
    fn forward(&self, b: &[f64]) -> Vec<f64> {
        let k = self.dim;
        let mut x = vec![0.0; k];
        for i in 0..k {
            let row = &self.l[i * k..i * k + i];
            let s = b[i] - row.iter().zip(&x[..i]).map(|(l, x)| l * x).sum::<f64>();
            x[i] = s / self.l[i * k + i];
        }
        x
    }

    /// The squared Mahalanobis norm vᵀ A⁻¹ v = ‖L⁻¹ v‖².
    ///
    /// `v`: vector of length k.
    ///
    /// # Errors
    /// [`KlError::LengthMismatch`] when `v.len() != k`.
    pub fn mahalanobis_sq(&self, v: &[f64]) -> Result<f64, KlError> {
        Ok(self.solve_lower(v)?.iter().map(|x| x * x).sum())
    }
}

/// KL between k-variate Gaussians with full covariances, in nats
/// (e.g. Duchi, "Derivations for Linear Algebra and Optimization", §9; Rasmussen
/// & Williams, *Gaussian Processes for ML*, eq. A.23):
///
/// KL(N(μp, Σp) ‖ N(μq, Σq)) = ½ [tr(Σq⁻¹ Σp) + (μq − μp)ᵀ Σq⁻¹ (μq − μp) − k + ln det Σq − ln det Σp].
///
/// With Σp = Lp Lpᵀ and Σq = Lq Lqᵀ: tr(Σq⁻¹Σp) = ‖Lq⁻¹ Lp‖²_F, the quadratic form is
/// ‖Lq⁻¹(μq − μp)‖², and ln det Σ = 2 Σⱼ ln lⱼⱼ; only triangular solves are needed.
///
/// `mu_p`, `mu_q`: finite means of length k ≥ 1; `cov_p`, `cov_q`: row-major k×k
/// symmetric positive definite covariance matrices (length k²).
///
/// # Errors
/// [`KlError::Invalid`] naming `mu_p`/`mu_q` (empty or non-finite) or
/// `cov_p`/`cov_q` (see [`Cholesky::new`]); [`KlError::LengthMismatch`] when the
/// means differ in length.
pub fn mvn_kl(mu_p: &[f64], cov_p: &[f64], mu_q: &[f64], cov_q: &[f64]) -> Result<f64, KlError> {
    let k = mu_p.len();
    if k == 0 {
        return Err(KlError::Invalid {
            arg: "mu_p",
            problem: InputProblem::Empty,
        });
    }
    KlError::check_len("mu_p", k, "mu_q", mu_q.len())?;
    for (arg, mu) in [("mu_p", mu_p), ("mu_q", mu_q)] {
        if let Some((index, &value)) = mu.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KlError::Invalid {
                arg,
                problem: InputProblem::NotFinite { index, value },
            });
        }
    }
    let chol_p = Cholesky::new(cov_p, k).map_err(KlError::invalid("cov_p"))?;
    let chol_q = Cholesky::new(cov_q, k).map_err(KlError::invalid("cov_q"))?;

    // tr(Σq⁻¹ Σp) = Σ over columns j of Lp of ‖Lq⁻¹ Lp[:, j]‖².
    let lp = chol_p.factor();
    let mut trace = 0.0;
    let mut column = vec![0.0; k];
    for j in 0..k {
        for (i, c) in column.iter_mut().enumerate() {
            *c = lp[i * k + j];
        }
        trace += chol_q.forward(&column).iter().map(|x| x * x).sum::<f64>();
    }
    let diff: Vec<f64> = mu_q.iter().zip(mu_p).map(|(a, b)| a - b).collect();
    let mahalanobis: f64 = chol_q.forward(&diff).iter().map(|x| x * x).sum();
    let log_det_ratio = chol_q.log_det() - chol_p.log_det();
    let kl = 0.5 * (trace + mahalanobis - k as f64 + log_det_ratio);
    // The exact value is ≥ 0; rounding may leave a tiny negative for P ≈ Q.
    Ok(kl.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_of_known_matrix() {
        // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]].
        let c = Cholesky::new(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let l = c.factor();
        assert_eq!(&l[..3], &[2.0, 0.0, 1.0]);
        assert!((l[3] - 2f64.sqrt()).abs() < 1e-15);
        assert!((c.log_det() - 8f64.ln()).abs() < 1e-15);
        let x = c.solve_lower(&[2.0, 1.0 + 2f64.sqrt()]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-15 && (x[1] - 1.0).abs() < 1e-15);
        assert!(c.solve_lower(&[1.0]).is_err());
    }

    #[test]
    fn cholesky_rejects_bad_matrices() {
        assert_eq!(
            Cholesky::new(&[1.0, 2.0, 2.0, 1.0], 2),
            Err(InputProblem::NotPositiveDefinite {
                pivot: 1,
                value: -3.0
            })
        );
        assert!(matches!(
            Cholesky::new(&[1.0, 0.5, 0.4, 1.0], 2),
            Err(InputProblem::NotSymmetric { row: 0, col: 1, .. })
        ));
        assert!(matches!(
            Cholesky::new(&[1.0, 0.0, 0.0], 2),
            Err(InputProblem::NotSquare { dim: 2, len: 3 })
        ));
        assert!(matches!(
            Cholesky::new(&[1.0, 0.0, 0.0, f64::NAN], 2),
            Err(InputProblem::NotFinite { index: 3, .. })
        ));
        assert!(matches!(
            Cholesky::new(&[0.0], 1),
            Err(InputProblem::NotPositiveDefinite { pivot: 0, .. })
        ));
    }

    #[test]
    fn mvn_errors_name_the_argument() {
        let e = mvn_kl(
            &[0.0, 0.0],
            &[1.0, 0.0, 0.0, 1.0],
            &[0.0, 0.0],
            &[1.0, 2.0, 2.0, 1.0],
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("cov_q: not positive definite"),
            "{e}"
        );
        assert!(matches!(
            mvn_kl(&[0.0], &[1.0], &[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0]),
            Err(KlError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn mvn_of_identical_gaussians_is_zero() {
        let cov = [2.0, 0.3, 0.1, 0.3, 1.0, -0.2, 0.1, -0.2, 0.5];
        let mu = [0.1, -0.2, 0.3];
        assert!(mvn_kl(&mu, &cov, &mu, &cov).unwrap().abs() < 1e-14);
    }
}
