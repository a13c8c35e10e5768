//! Property tests: the identities and inequalities every divergence must satisfy.

use klrl_kl::{
    cross_entropy, diagonal_kl, entropy, js_divergence, k3, kl_divergence, mutual_information,
    mvn_kl, normalize, smooth, univariate_kl, Base, DiscreteComparison, InputProblem, KlError,
};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed};

/// A weight: often exactly zero, otherwise spread over several magnitudes.
fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        4 => 0.0f64..10.0,
        1 => 1e-6f64..1e-3,
    ]
}

/// Strictly positive weights (finite KL in both directions).
fn positive_weight() -> impl Strategy<Value = f64> {
    prop_oneof![1e-4f64..10.0, 1e-8f64..1e-4]
}

fn has_mass(v: &[f64]) -> bool {
    v.iter().sum::<f64>() > 0.0
}

/// Two weight vectors of one length in 1..12, each with positive total.
fn pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..12).prop_flat_map(|n| {
        (
            prop::collection::vec(weight(), n).prop_filter("mass", |v| has_mass(v)),
            prop::collection::vec(weight(), n).prop_filter("mass", |v| has_mass(v)),
        )
    })
}

fn positive_pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..12).prop_flat_map(|n| {
        (
            prop::collection::vec(positive_weight(), n),
            prop::collection::vec(positive_weight(), n),
        )
    })
}

/// A random symmetric positive definite k×k matrix A Aᵀ + c I (row-major).
fn spd(k: usize) -> impl Strategy<Value = Vec<f64>> {
    (prop::collection::vec(-2.0f64..2.0, k * k), 0.05f64..2.0).prop_map(move |(a, c)| {
        let mut m = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                m[i * k + j] = (0..k).map(|t| a[i * k + t] * a[j * k + t]).sum::<f64>();
            }
            m[i * k + i] += c;
        }
        m
    })
}

fn mean(k: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-3.0f64..3.0, k)
}

fn sigma() -> impl Strategy<Value = f64> {
    prop_oneof![0.05f64..5.0, 1e-3f64..0.05]
}

fn rel_close(a: f64, b: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * a.abs().max(b.abs()).max(1e-300) || a == b
}

proptest! {
    // A fixed seed (proptest's default draws a fresh one each run, and
    // PROPTEST_RNG_SEED cannot override it here): every run checks the same
    // cases, so a failure reproduces as it is, and no regressions file is needed.
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(14),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn kl_is_nonnegative((p, q) in pair()) {
        prop_assert!(kl_divergence(&p, &q).unwrap() >= 0.0);
        prop_assert!(kl_divergence(&q, &p).unwrap() >= 0.0);
    }

    #[test]
    fn kl_of_a_distribution_with_itself_is_zero((p, _q) in pair(), scale in 1e-3f64..1e3) {
        // Scaling the weights does not change the distribution.
        let scaled: Vec<f64> = p.iter().map(|x| x * scale).collect();
        prop_assert!(kl_divergence(&p, &scaled).unwrap() < 1e-14);
        prop_assert_eq!(kl_divergence(&p, &p).unwrap(), 0.0);
        prop_assert_eq!(js_divergence(&p, &p).unwrap(), 0.0);
    }

    /// KL = 0 only when P = Q, in the quantitative form of Pinsker's inequality:
    /// TV(P, Q) = ½ Σ |pᵢ − qᵢ| ≤ √(KL / 2).
    #[test]
    fn pinsker_inequality((p, q) in pair()) {
        let kl = kl_divergence(&p, &q).unwrap();
        let (pn, qn) = (normalize(&p).unwrap(), normalize(&q).unwrap());
        let tv = 0.5 * pn.iter().zip(&qn).map(|(a, b)| (a - b).abs()).sum::<f64>();
        prop_assert!(tv <= (kl / 2.0).sqrt() + 1e-12, "tv {} kl {}", tv, kl);
    }

    #[test]
    fn kl_is_cross_entropy_minus_entropy((p, q) in pair()) {
        let kl = kl_divergence(&p, &q).unwrap();
        let h = entropy(&p).unwrap();
        let hpq = cross_entropy(&p, &q).unwrap();
        if kl.is_infinite() {
            prop_assert_eq!(hpq, f64::INFINITY);
        } else {
            prop_assert!((kl - (hpq - h)).abs() <= 1e-12 * (1.0 + hpq), "{} vs {} - {}", kl, hpq, h);
        }
    }

    #[test]
    fn infinite_exactly_when_q_misses_p_mass((p, q) in pair()) {
        let (pn, qn) = (normalize(&p).unwrap(), normalize(&q).unwrap());
        let misses = pn.iter().zip(&qn).any(|(&a, &b)| a > 0.0 && b == 0.0);
        prop_assert_eq!(kl_divergence(&p, &q).unwrap().is_infinite(), misses);
    }

    #[test]
    fn js_is_symmetric_and_bounded((p, q) in pair()) {
        let a = js_divergence(&p, &q).unwrap();
        let b = js_divergence(&q, &p).unwrap();
        prop_assert_eq!(a, b);
        prop_assert!((0.0..=std::f64::consts::LN_2 + 1e-15).contains(&a), "js {}", a);
    }

    #[test]
    fn bits_are_nats_over_ln2((p, q) in pair()) {
        let n = DiscreteComparison::new(&p, &q, Base::Nats).unwrap();
        let b = DiscreteComparison::new(&p, &q, Base::Bits).unwrap();
        let ln2 = std::f64::consts::LN_2;
        for (x, y) in [
            (n.kl_pq, b.kl_pq), (n.kl_qp, b.kl_qp), (n.js, b.js),
            (n.entropy_p, b.entropy_p), (n.entropy_q, b.entropy_q),
            (n.cross_entropy_pq, b.cross_entropy_pq), (n.cross_entropy_qp, b.cross_entropy_qp),
        ] {
            prop_assert!(rel_close(y, x / ln2, 1e-15), "{} vs {}", y, x / ln2);
        }
        prop_assert!(b.js <= 1.0 + 1e-15);
    }

    #[test]
    fn entropy_is_between_zero_and_ln_n((p, _q) in pair()) {
        let h = entropy(&p).unwrap();
        prop_assert!(h >= 0.0 && h <= (p.len() as f64).ln() + 1e-12);
    }

    #[test]
    fn smoothing_makes_kl_finite((p, q) in pair(), eps in 1e-12f64..0.1) {
        let qs = smooth(&q, eps).unwrap();
        prop_assert!((qs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        prop_assert!(kl_divergence(&p, &qs).unwrap().is_finite());
    }

    #[test]
    fn a_negative_weight_is_reported_at_its_index((p, _q) in pair(), at in 0usize..12, v in -5.0f64..-1e-12) {
        let mut p = p;
        let index = at % p.len();
        p[index] = v;
        prop_assert_eq!(
            kl_divergence(&p, &vec![1.0; p.len()]).unwrap_err(),
            KlError::Invalid { arg: "p", problem: InputProblem::Negative { index, value: v } }
        );
    }

    #[test]
    fn positive_pairs_have_finite_divergences((p, q) in positive_pair()) {
        let c = DiscreteComparison::new(&p, &q, Base::Nats).unwrap();
        prop_assert!(c.kl_pq.is_finite() && c.kl_qp.is_finite());
        prop_assert!((c.cross_entropy_qp - c.entropy_q - c.kl_qp).abs() <= 1e-12 * (1.0 + c.cross_entropy_qp));
    }

    #[test]
    fn mutual_information_is_nonnegative_and_bounded(
        table in (1usize..6, 1usize..6).prop_flat_map(|(r, c)| {
            prop::collection::vec(prop::collection::vec(weight(), c), r)
        }).prop_filter("mass", |t| t.iter().flatten().sum::<f64>() > 0.0)
    ) {
        let mi = mutual_information(&table).unwrap();
        let px: Vec<f64> = table.iter().map(|r| r.iter().sum()).collect();
        let py: Vec<f64> = (0..table[0].len()).map(|j| table.iter().map(|r| r[j]).sum()).collect();
        let bound = entropy(&px).unwrap().min(entropy(&py).unwrap());
        prop_assert!(mi >= 0.0 && mi <= bound + 1e-12, "mi {} bound {}", mi, bound);
    }

    #[test]
    fn mutual_information_of_a_product_table_is_zero(
        (px, py) in (1usize..6, 1usize..6).prop_flat_map(|(r, c)| {
            (prop::collection::vec(positive_weight(), r), prop::collection::vec(weight(), c)
                .prop_filter("mass", |v| has_mass(v)))
        })
    ) {
        let table: Vec<Vec<f64>> = px.iter().map(|a| py.iter().map(|b| a * b).collect()).collect();
        prop_assert!(mutual_information(&table).unwrap() < 1e-12);
    }

    #[test]
    fn univariate_equals_one_dimensional_multivariate(
        mu_p in -5.0f64..5.0, s_p in sigma(), mu_q in -5.0f64..5.0, s_q in sigma()
    ) {
        let u = univariate_kl(mu_p, s_p, mu_q, s_q).unwrap();
        let m = mvn_kl(&[mu_p], &[s_p * s_p], &[mu_q], &[s_q * s_q]).unwrap();
        prop_assert!(u >= 0.0);
        prop_assert!((u - m).abs() <= 1e-12 * u.max(1.0), "{} vs {}", u, m);
    }

    #[test]
    fn multivariate_with_diagonal_covariance_equals_diagonal_formula(
        (mu_p, s_p, mu_q, s_q) in (1usize..7).prop_flat_map(|k| (
            mean(k), prop::collection::vec(sigma(), k), mean(k), prop::collection::vec(sigma(), k)
        ))
    ) {
        let k = mu_p.len();
        let diag = |s: &[f64]| {
            let mut m = vec![0.0; k * k];
            for i in 0..k { m[i * k + i] = s[i] * s[i]; }
            m
        };
        let d = diagonal_kl(&mu_p, &s_p, &mu_q, &s_q).unwrap();
        let m = mvn_kl(&mu_p, &diag(&s_p), &mu_q, &diag(&s_q)).unwrap();
        prop_assert!((d - m).abs() <= 1e-11 * d.max(1.0), "{} vs {}", d, m);
    }

    #[test]
    fn multivariate_is_nonnegative_and_zero_on_itself(
        (mu_p, cov_p, mu_q, cov_q) in (1usize..6).prop_flat_map(|k| (mean(k), spd(k), mean(k), spd(k)))
    ) {
        let kl = mvn_kl(&mu_p, &cov_p, &mu_q, &cov_q).unwrap();
        prop_assert!(kl >= 0.0);
        let selfkl = mvn_kl(&mu_p, &cov_p, &mu_p, &cov_p).unwrap();
        prop_assert!(selfkl < 1e-9, "KL(P‖P) = {}", selfkl);
    }

    #[test]
    fn k3_is_nonnegative(lr in -50.0f64..50.0) {
        prop_assert!(k3(lr) >= 0.0);
    }
}
