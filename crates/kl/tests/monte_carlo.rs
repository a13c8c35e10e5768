//! Closed forms against seeded Monte Carlo estimates, and the sample
//! estimators k1/k3 against the exact KL they estimate.
//!
//! Each check accepts the estimate when it lies within 5 standard errors of the
//! exact value; with fixed seeds the tests are deterministic.

use klrl_kl::{k1, k2, k3, kl_divergence, mvn_kl, univariate_kl, Cholesky};
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};

const N: usize = 200_000;

/// Sample mean and its standard error.
fn mean_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[track_caller]
fn assert_within_5se(xs: &[f64], exact: f64, what: &str) {
    let (m, se) = mean_se(xs);
    assert!(
        (m - exact).abs() <= 5.0 * se,
        "{what}: Monte Carlo {m} ± {se} vs exact {exact} ({:.1} s.e.)",
        (m - exact).abs() / se
    );
}

fn normal_log_pdf(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / sigma;
    -0.5 * z * z - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

#[test]
fn univariate_closed_form_matches_monte_carlo() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(mu_p, s_p, mu_q, s_q) in &[
        (0.0, 1.0, 1.0, 1.0),
        (0.3, 0.5, -0.2, 1.7),
        (1.0, 2.0, 0.0, 1.5),
    ] {
        let dist = Normal::new(mu_p, s_p).unwrap();
        let samples: Vec<f64> = (0..N)
            .map(|_| {
                let x = dist.sample(&mut rng);
                normal_log_pdf(x, mu_p, s_p) - normal_log_pdf(x, mu_q, s_q)
            })
            .collect();
        let exact = univariate_kl(mu_p, s_p, mu_q, s_q).unwrap();
        assert_within_5se(
            &samples,
            exact,
            &format!("N({mu_p},{s_p}²)‖N({mu_q},{s_q}²)"),
        );
    }
}

fn mvn_log_pdf(x: &[f64], mu: &[f64], chol: &Cholesky) -> f64 {
    let k = mu.len() as f64;
    let d: Vec<f64> = x.iter().zip(mu).map(|(a, b)| a - b).collect();
    -0.5 * (k * (2.0 * std::f64::consts::PI).ln()
        + chol.log_det()
        + chol.mahalanobis_sq(&d).unwrap())
}

#[test]
fn multivariate_closed_form_matches_monte_carlo() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let k = 3;
    let mu_p = [0.2, -0.5, 1.0];
    let cov_p = [1.0, 0.3, -0.2, 0.3, 0.8, 0.1, -0.2, 0.1, 1.5];
    let mu_q = [0.0, 0.0, 0.5];
    let cov_q = [2.0, -0.4, 0.0, -0.4, 1.0, 0.3, 0.0, 0.3, 0.7];
    let chol_p = Cholesky::new(&cov_p, k).unwrap();
    let chol_q = Cholesky::new(&cov_q, k).unwrap();
    let lp = chol_p.factor();
    let samples: Vec<f64> = (0..N)
        .map(|_| {
            let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            // x = μp + Lp z has covariance Lp Lpᵀ = Σp.
            let x: Vec<f64> = (0..k)
                .map(|i| mu_p[i] + (0..=i).map(|j| lp[i * k + j] * z[j]).sum::<f64>())
                .collect();
            mvn_log_pdf(&x, &mu_p, &chol_p) - mvn_log_pdf(&x, &mu_q, &chol_q)
        })
        .collect();
    let exact = mvn_kl(&mu_p, &cov_p, &mu_q, &cov_q).unwrap();
    assert!(exact > 0.1);
    assert_within_5se(&samples, exact, "3-d Gaussian");
}

/// Log-ratios log π_new(a) − log π_old(a) for a ~ π_old, categorical policies.
fn categorical_log_ratios(old: &[f64], new: &[f64], rng: &mut ChaCha8Rng) -> Vec<f64> {
    let dist = WeightedIndex::new(old).unwrap();
    (0..N)
        .map(|_| {
            let a = dist.sample(rng);
            new[a].ln() - old[a].ln()
        })
        .collect()
}

/// Log-ratios for Gaussian policies with a ~ N(mu_old, s_old²).
fn gaussian_log_ratios(old: (f64, f64), new: (f64, f64), rng: &mut ChaCha8Rng) -> Vec<f64> {
    let dist = Normal::new(old.0, old.1).unwrap();
    (0..N)
        .map(|_| {
            let a = dist.sample(rng);
            normal_log_pdf(a, new.0, new.1) - normal_log_pdf(a, old.0, old.1)
        })
        .collect()
}

#[test]
fn k1_and_k3_are_unbiased_for_categorical_policies() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (old, new) in [
        (vec![0.2, 0.3, 0.5], vec![0.25, 0.25, 0.5]),
        (vec![0.1, 0.1, 0.1, 0.1, 0.6], vec![0.3, 0.2, 0.2, 0.2, 0.1]),
    ] {
        let exact = kl_divergence(&old, &new).unwrap();
        let lr = categorical_log_ratios(&old, &new, &mut rng);
        let k1s: Vec<f64> = lr.iter().map(|&x| k1(x)).collect();
        let k3s: Vec<f64> = lr.iter().map(|&x| k3(x)).collect();
        assert_within_5se(&k1s, exact, "k1 categorical");
        assert_within_5se(&k3s, exact, "k3 categorical");
        assert!(k3s.iter().all(|&x| x >= 0.0));
        // k3 has the lower variance of the two unbiased estimators here.
        assert!(mean_se(&k3s).1 < mean_se(&k1s).1);
    }
}

#[test]
fn k1_and_k3_are_unbiased_for_gaussian_policies_and_k2_is_not() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (old, new) = ((0.0, 1.0), (0.3, 1.2));
    let exact = univariate_kl(old.0, old.1, new.0, new.1).unwrap();
    let lr = gaussian_log_ratios(old, new, &mut rng);
    let k1s: Vec<f64> = lr.iter().map(|&x| k1(x)).collect();
    let k3s: Vec<f64> = lr.iter().map(|&x| k3(x)).collect();
    assert_within_5se(&k1s, exact, "k1 gaussian");
    assert_within_5se(&k3s, exact, "k3 gaussian");

    // Far apart, k2 = ½ (log r)² is visibly biased: its mean is many standard
    // errors away from the exact KL.
    let (old, new) = ((0.0, 1.0), (1.0, 0.5));
    let exact = univariate_kl(old.0, old.1, new.0, new.1).unwrap();
    let lr = gaussian_log_ratios(old, new, &mut rng);
    let k2s: Vec<f64> = lr.iter().map(|&x| k2(x)).collect();
    let (m, se) = mean_se(&k2s);
    assert!(
        (m - exact).abs() > 20.0 * se,
        "k2 {m} ± {se} vs exact {exact}"
    );
    let k3s: Vec<f64> = lr.iter().map(|&x| k3(x)).collect();
    assert_within_5se(&k3s, exact, "k3 gaussian, far apart");
}
