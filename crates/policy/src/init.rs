//! Orthogonal initialisation (Saxe et al. 2014, "Exact solutions to the
//! nonlinear dynamics of learning in deep linear neural networks", arXiv
//! 1312.6120), as `torch.nn.init.orthogonal_` does it.
//!
//! candle has neither an orthogonal initialiser nor a QR decomposition, so the
//! QR is done here on the host in f64 by Householder reflections (Golub & Van
//! Loan, *Matrix Computations*, 4th ed., Alg. 5.2.1), which is backward stable
//! and needs no re-orthogonalisation.
//!
//! The gains follow Huang et al., "The 37 implementation details of PPO"
//! (detail 2): √2 for hidden layers, 0.01 for the policy head, 1.0 for the
//! value head; biases are 0.

use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{PolicyError, Result};

/// Gain of hidden layers: √2 (Huang et al., PPO detail 2; torch's
/// `calculate_gain("relu")`, used by OpenAI baselines for tanh layers too).
pub const GAIN_HIDDEN: f64 = std::f64::consts::SQRT_2;
/// Gain of the policy head: 0.01, so that the initial policy is close to
/// uniform (categorical) or to a zero mean (Gaussian) (Huang et al., PPO detail 2).
pub const GAIN_POLICY_HEAD: f64 = 0.01;
/// Gain of the value head: 1.0 (Huang et al., PPO detail 2).
pub const GAIN_VALUE_HEAD: f64 = 1.0;

/// Draws a `rows × cols` matrix (row-major) with orthonormal rows or columns,
/// scaled by `gain`, as `torch.nn.init.orthogonal_(w, gain)` does.
///
/// A standard-normal matrix is drawn from `rng` in row-major order and handed
/// to [`orthogonalize`]. The result `W` satisfies `W Wᵀ = gain² I` when
/// `rows ≤ cols` and `Wᵀ W = gain² I` when `rows ≥ cols`.
///
/// - `rows`, `cols`: the shape, e.g. `[out_features, in_features]` of a
///   linear layer. A zero dimension gives an empty matrix.
/// - `gain`: the scale (see [`GAIN_HIDDEN`], [`GAIN_POLICY_HEAD`], [`GAIN_VALUE_HEAD`]).
/// - `rng`: the random source; the same seed gives the same matrix.
pub fn orthogonal<R: Rng + ?Sized>(rows: usize, cols: usize, gain: f64, rng: &mut R) -> Vec<f64> {
    let gaussian: Vec<f64> = (0..rows * cols)
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect();
    // The length matches by construction, so this cannot fail.
    orthogonalize(&gaussian, rows, cols, gain).unwrap_or_default()
}

/// The deterministic half of [`orthogonal`]: the sign-corrected Q factor of a
/// given matrix, times `gain`.
///
/// Follows `torch.nn.init.orthogonal_`: with `A` the `rows × cols` matrix
/// (row-major), transpose it if `rows < cols`; take the reduced QR
/// decomposition `A = Q R`; multiply column `k` of `Q` by `sign(R_kk)` (which
/// makes the factorisation the unique one with a positive diagonal of `R`, so
/// the result does not depend on the QR algorithm); transpose back; scale by
/// `gain`.
///
/// - `matrix`: `rows × cols` values, row-major. Usually standard normal.
/// - `rows`, `cols`: its shape.
/// - `gain`: the scale of the result.
///
/// Errors: [`PolicyError::InvalidParameter`] when `matrix.len() != rows * cols`
/// or a value is not finite.
pub fn orthogonalize(matrix: &[f64], rows: usize, cols: usize, gain: f64) -> Result<Vec<f64>> {
    if matrix.len() != rows * cols {
        return Err(PolicyError::InvalidParameter {
            param: "matrix",
            reason: format!(
                "has {} values, expected rows × cols = {rows} × {cols}",
                matrix.len()
            ),
        });
    }
    if let Some(x) = matrix.iter().find(|x| !x.is_finite()) {
        return Err(PolicyError::InvalidParameter {
            param: "matrix",
            reason: format!("contains the non-finite value {x}"),
        });
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    // A is m × n with m ≥ n, stored column-major in `a[j][i]` for cheap column access.
    let transpose = rows < cols;
    let (m, n) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            (0..m)
                .map(|i| {
                    if transpose {
                        matrix[j * cols + i]
                    } else {
                        matrix[i * cols + j]
                    }
                })
                .collect()
        })
        .collect();
    let q = householder_q(&mut a, m, n);
    let mut out = vec![0.0; rows * cols];
    for j in 0..n {
        for i in 0..m {
            let v = gain * q[j][i];
            if transpose {
                out[j * cols + i] = v;
            } else {
                out[i * cols + j] = v;
            }
        }
    }
    Ok(out)
}

/// Reduced Householder QR of the `m × n` (`m ≥ n`) matrix held column-major in
/// `a` (overwritten). Returns the columns of `Q · diag(sign(diag R))`.
fn householder_q(a: &mut [Vec<f64>], m: usize, n: usize) -> Vec<Vec<f64>> {
    // Householder vectors v_k (unit norm, zero above k); None when the column
    // below the diagonal is already zero (no reflection needed).
    let mut reflectors: Vec<Option<Vec<f64>>> = Vec::with_capacity(n);
    let mut r_diag = vec![0.0; n];
    for k in 0..n {
        let norm = a[k][k..].iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            reflectors.push(None);
            continue;
        }
        // alpha = −sign(x₀)‖x‖ avoids cancellation in v = x − alpha e₁.
        let alpha = if a[k][k] >= 0.0 { -norm } else { norm };
        let mut v = vec![0.0; m];
        v[k..].copy_from_slice(&a[k][k..]);
        v[k] -= alpha;
        let vnorm = v[k..].iter().map(|x| x * x).sum::<f64>().sqrt();
        if vnorm == 0.0 {
            reflectors.push(None);
            r_diag[k] = a[k][k];
            continue;
        }
        v[k..].iter_mut().for_each(|x| *x /= vnorm);
        // Apply H = I − 2 v vᵀ to the remaining columns.
        for col in a.iter_mut().skip(k) {
            let dot: f64 = v[k..].iter().zip(&col[k..]).map(|(x, y)| x * y).sum();
            col[k..]
                .iter_mut()
                .zip(&v[k..])
                .for_each(|(c, vi)| *c -= 2.0 * dot * vi);
        }
        r_diag[k] = a[k][k];
        reflectors.push(Some(v));
    }
    // Q = H₀ H₁ ⋯ H_{n−1} [I_n; 0], applied right to left.
    let mut q: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let mut e = vec![0.0; m];
            e[j] = 1.0;
            e
        })
        .collect();
    for (k, v) in reflectors.iter().enumerate().rev() {
        let Some(v) = v else { continue };
        for col in q.iter_mut() {
            let dot: f64 = v[k..].iter().zip(&col[k..]).map(|(x, y)| x * y).sum();
            col[k..]
                .iter_mut()
                .zip(&v[k..])
                .for_each(|(c, vi)| *c -= 2.0 * dot * vi);
        }
    }
    // torch multiplies by sign(diag R); a zero diagonal (probability zero for a
    // Gaussian matrix) is treated as positive so no column is lost.
    for (col, &r) in q.iter_mut().zip(&r_diag) {
        if r < 0.0 {
            col.iter_mut().for_each(|x| *x = -*x);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// max |G − gain² I| for G = W Wᵀ (rows ≤ cols) or Wᵀ W.
    fn gram_error(w: &[f64], rows: usize, cols: usize, gain: f64) -> f64 {
        let (k, inner) = if rows <= cols {
            (rows, cols)
        } else {
            (cols, rows)
        };
        let at = |a: usize, b: usize| -> f64 {
            if rows <= cols {
                w[a * cols + b]
            } else {
                w[b * cols + a]
            }
        };
        let mut worst: f64 = 0.0;
        for i in 0..k {
            for j in 0..k {
                let g: f64 = (0..inner).map(|l| at(i, l) * at(j, l)).sum();
                let target = if i == j { gain * gain } else { 0.0 };
                worst = worst.max((g - target).abs());
            }
        }
        worst
    }

    #[test]
    fn square_and_rectangular_are_orthogonal() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for &(r, c) in &[
            (1, 1),
            (2, 2),
            (64, 64),
            (64, 4),
            (4, 64),
            (2, 64),
            (64, 2),
            (3, 7),
        ] {
            let w = orthogonal(r, c, 1.0, &mut rng);
            assert_eq!(w.len(), r * c);
            let e = gram_error(&w, r, c, 1.0);
            assert!(e < 1e-12, "{r}x{c}: max |WᵀW − I| = {e}");
            let w = orthogonal(r, c, GAIN_HIDDEN, &mut rng);
            let e = gram_error(&w, r, c, GAIN_HIDDEN);
            assert!(e < 1e-12, "{r}x{c} gain √2: {e}");
        }
    }

    #[test]
    fn same_seed_same_matrix_other_seed_other_matrix() {
        let a = orthogonal(8, 5, 1.0, &mut ChaCha8Rng::seed_from_u64(11));
        let b = orthogonal(8, 5, 1.0, &mut ChaCha8Rng::seed_from_u64(11));
        let c = orthogonal(8, 5, 1.0, &mut ChaCha8Rng::seed_from_u64(12));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn sign_convention_gives_positive_r_diagonal() {
        // For A = Q R with positive diag(R), diag(Qᵀ A) = diag(R) > 0.
        let a = [
            1.0, 2.0, -3.0, 0.5, -1.0, 4.0, 2.0, 2.0, 1.0, -0.3, 0.7, 0.1,
        ];
        let (m, n) = (4, 3);
        let q = orthogonalize(&a, m, n, 1.0).expect("valid matrix");
        for k in 0..n {
            let rkk: f64 = (0..m).map(|i| q[i * n + k] * a[i * n + k]).sum();
            assert!(rkk > 0.0, "R[{k}][{k}] = {rkk}");
        }
    }

    #[test]
    fn rejects_wrong_length_and_non_finite() {
        assert!(matches!(
            orthogonalize(&[1.0, 2.0, 3.0], 2, 2, 1.0),
            Err(PolicyError::InvalidParameter { .. })
        ));
        assert!(orthogonalize(&[1.0, f64::NAN, 3.0, 4.0], 2, 2, 1.0).is_err());
        assert!(orthogonalize(&[], 0, 3, 1.0).expect("empty").is_empty());
    }
}
