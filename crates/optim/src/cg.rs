//! Conjugate gradient for F x = g (Hestenes & Stiefel 1952; TRPO, Schulman et
//! al. 2015, appendix C), with F given only through matrix-vector products.

/// What conjugate gradient returns.
#[derive(Debug, Clone, PartialEq)]
pub struct CgSolution {
    /// The approximate solution x.
    pub x: Vec<f64>,
    /// Iterations run (each costs one product with F).
    pub iters: usize,
    /// ‖g − F x‖₂ at the end, as tracked by the recursion.
    pub residual: f64,
}

/// Solve F x = b for symmetric positive-definite F from x₀ = 0.
///
/// Stops after `max_iters` iterations or once the squared residual norm
/// ‖r‖² falls below `residual_tol` (the convention of OpenAI baselines and
/// Stable-Baselines3-contrib: `residual_tol` 1e-10). `fvp(v)` returns F v and
/// may fail; its error is passed through. A non-positive curvature pᵀFp (F not
/// positive definite along p, or a NaN) stops the iteration with the current x.
pub fn conjugate_gradient<E>(
    mut fvp: impl FnMut(&[f64]) -> Result<Vec<f64>, E>,
    b: &[f64],
    max_iters: usize,
    residual_tol: f64,
) -> Result<CgSolution, E> {
    let mut x = vec![0.0; b.len()];
    let mut r = b.to_vec();
    let mut p = b.to_vec();
    let mut rr = dot(&r, &r);
    let mut iters = 0;
    while iters < max_iters && rr >= residual_tol {
        let fp = fvp(&p)?;
        let curvature = dot(&p, &fp);
        if curvature.is_nan() || curvature <= 0.0 {
            break;
        }
        let alpha = rr / curvature;
        for i in 0..x.len() {
            x[i] += alpha * p[i];
            r[i] -= alpha * fp[i];
        }
        let rr_new = dot(&r, &r);
        let mu = rr_new / rr;
        for i in 0..p.len() {
            p[i] = r[i] + mu * p[i];
        }
        rr = rr_new;
        iters += 1;
    }
    Ok(CgSolution {
        x,
        iters,
        residual: rr.sqrt(),
    })
}

/// Dot product, accumulated in f64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn matvec(a: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
        a.iter().map(|row| dot(row, v)).collect()
    }

    /// A = Bᵀ B + 0.1 I, symmetric positive definite.
    fn random_spd(n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
        let b: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (0..n).map(|k| b[k][i] * b[k][j]).sum::<f64>() + 0.1 * (i == j) as u8 as f64
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn solves_random_spd_systems_to_tolerance() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for n in [1, 2, 5, 20, 50] {
            let a = random_spd(n, &mut rng);
            let b: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            // In exact arithmetic CG converges in n steps; allow 3n for rounding.
            let sol = conjugate_gradient(|v| Ok::<_, ()>(matvec(&a, v)), &b, 3 * n, 1e-20).unwrap();
            let r: Vec<f64> = matvec(&a, &sol.x)
                .iter()
                .zip(&b)
                .map(|(ax, b)| b - ax)
                .collect();
            let true_residual = dot(&r, &r).sqrt();
            assert!(true_residual < 1e-8, "n={n}: residual {true_residual}");
            assert!((sol.residual - true_residual).abs() < 1e-7);
            assert!(sol.iters <= 3 * n);
        }
    }

    #[test]
    fn respects_the_iteration_limit_and_reports_the_residual() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = random_spd(30, &mut rng);
        let b: Vec<f64> = (0..30).map(|_| rng.random_range(-1.0..1.0)).collect();
        let sol = conjugate_gradient(|v| Ok::<_, ()>(matvec(&a, v)), &b, 3, 0.0).unwrap();
        assert_eq!(sol.iters, 3);
        let r: Vec<f64> = matvec(&a, &sol.x)
            .iter()
            .zip(&b)
            .map(|(ax, b)| b - ax)
            .collect();
        assert!((sol.residual - dot(&r, &r).sqrt()).abs() < 1e-9);
        assert!(
            sol.residual > 1e-6,
            "3 iterations cannot solve a 30-d system"
        );
    }

    #[test]
    fn stops_on_non_positive_curvature_and_passes_errors_through() {
        let sol = conjugate_gradient(
            |v| Ok::<_, ()>(v.iter().map(|x| -x).collect()),
            &[1.0, 2.0],
            10,
            0.0,
        )
        .unwrap();
        assert_eq!(sol.iters, 0);
        assert_eq!(sol.x, vec![0.0, 0.0]);
        let err = conjugate_gradient(|_| Err::<Vec<f64>, _>("boom"), &[1.0], 10, 0.0).unwrap_err();
        assert_eq!(err, "boom");
    }

    #[test]
    fn zero_right_hand_side_needs_no_iterations() {
        let sol = conjugate_gradient(|v| Ok::<_, ()>(v.to_vec()), &[0.0; 4], 10, 1e-10).unwrap();
        assert_eq!(sol.iters, 0);
        assert_eq!(sol.x, vec![0.0; 4]);
    }
}
