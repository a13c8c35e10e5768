//! Compare the toolbox against reference values computed by scipy, numpy and
//! scikit-learn (`fixtures/make_kl_fixture.py` writes `fixtures/kl_reference.json`).

use klrl_kl::{
    cross_entropy, entropy, js_divergence, k1_mean, k2_mean, k3_mean, kl_divergence,
    mutual_information, mvn_kl, univariate_kl, vae_kl, vae_kl_per_dim, Base, DiscreteComparison,
};
use serde_json::Value;

const RTOL: f64 = 1e-12;

fn fixture() -> Value {
    let text = include_str!("fixtures/kl_reference.json");
    serde_json::from_str(text).expect("fixture is valid JSON")
}

/// A number from the fixture; the string "inf" is +∞.
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        _ => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

fn vec(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

#[track_caller]
fn assert_close(got: f64, want: f64, what: &str) {
    let ok = if want.is_infinite() || got.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= RTOL * got.abs().max(want.abs())
    };
    assert!(
        ok,
        "{what}: got {got:e}, reference {want:e} (rel diff {:e})",
        ((got - want) / want).abs()
    );
}

#[test]
fn discrete_matches_scipy() {
    let f = fixture();
    let cases = f["discrete"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut saw_inf = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (p, q) = (vec(&c["p"]), vec(&c["q"]));
        let at = |k: &str| format!("{name}: {k}");
        assert_close(
            kl_divergence(&p, &q).unwrap(),
            num(&c["kl_pq"]),
            &at("kl_pq"),
        );
        assert_close(
            kl_divergence(&q, &p).unwrap(),
            num(&c["kl_qp"]),
            &at("kl_qp"),
        );
        assert_close(js_divergence(&p, &q).unwrap(), num(&c["js"]), &at("js"));
        assert_close(entropy(&p).unwrap(), num(&c["entropy_p"]), &at("entropy_p"));
        assert_close(entropy(&q).unwrap(), num(&c["entropy_q"]), &at("entropy_q"));
        assert_close(
            cross_entropy(&p, &q).unwrap(),
            num(&c["cross_entropy_pq"]),
            &at("cross_entropy_pq"),
        );
        assert_close(
            cross_entropy(&q, &p).unwrap(),
            num(&c["cross_entropy_qp"]),
            &at("cross_entropy_qp"),
        );

        let nats = DiscreteComparison::new(&p, &q, Base::Nats).unwrap();
        assert_close(nats.kl_pq, num(&c["kl_pq"]), &at("comparison kl_pq"));
        assert_close(nats.kl_qp, num(&c["kl_qp"]), &at("comparison kl_qp"));
        assert_close(nats.js, num(&c["js"]), &at("comparison js"));
        let bits = DiscreteComparison::new(&p, &q, Base::Bits).unwrap();
        assert_close(bits.kl_pq, num(&c["kl_pq_bits"]), &at("kl_pq_bits"));
        assert_close(bits.js, num(&c["js_bits"]), &at("js_bits"));
        assert_close(
            bits.entropy_p,
            num(&c["entropy_p_bits"]),
            &at("entropy_p_bits"),
        );
        assert_close(
            bits.cross_entropy_pq,
            num(&c["cross_entropy_pq"]) / std::f64::consts::LN_2,
            &at("cross_entropy_pq bits"),
        );
        saw_inf += usize::from(nats.kl_pq.is_infinite() || nats.kl_qp.is_infinite());
    }
    // The zero-in-P, zero-in-Q and disjoint cases each have an infinite direction.
    assert!(saw_inf >= 3, "only {saw_inf} cases with an infinite KL");
}

#[test]
fn named_examples_are_present_with_expected_shape() {
    let f = fixture();
    let find = |name: &str| {
        f["discrete"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("missing case {name}"))
            .clone()
    };
    let die = find("fair die vs loaded die");
    assert!(num(&die["kl_qp"]) > num(&die["kl_pq"]));
    let zero_q = find("zero in Q");
    assert_eq!(num(&zero_q["kl_pq"]), f64::INFINITY);
    assert!(num(&zero_q["kl_qp"]).is_finite());
    let zero_p = find("zero in P");
    assert!(num(&zero_p["kl_pq"]).is_finite());
    assert_eq!(num(&zero_p["kl_qp"]), f64::INFINITY);
    let ab = find("A/B click histogram");
    assert!(num(&ab["kl_pq"]).is_finite() && num(&ab["kl_pq"]) > 0.0);
}

#[test]
fn univariate_gaussian_matches_numpy() {
    for c in fixture()["univariate"].as_array().unwrap() {
        let got = univariate_kl(
            num(&c["mu_p"]),
            num(&c["sigma_p"]),
            num(&c["mu_q"]),
            num(&c["sigma_q"]),
        )
        .unwrap();
        assert_close(got, num(&c["kl"]), &format!("univariate {c}"));
    }
}

#[test]
fn multivariate_gaussian_matches_numpy() {
    let f = fixture();
    let cases = f["multivariate"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let (mu_p, cov_p) = (vec(&c["mu_p"]), vec(&c["cov_p"]));
        let (mu_q, cov_q) = (vec(&c["mu_q"]), vec(&c["cov_q"]));
        let k = mu_p.len();
        assert_close(
            mvn_kl(&mu_p, &cov_p, &mu_q, &cov_q).unwrap(),
            num(&c["kl_pq"]),
            &format!("mvn k={k} kl_pq"),
        );
        assert_close(
            mvn_kl(&mu_q, &cov_q, &mu_p, &cov_p).unwrap(),
            num(&c["kl_qp"]),
            &format!("mvn k={k} kl_qp"),
        );
    }
}

#[test]
fn vae_term_matches_numpy() {
    for c in fixture()["vae"].as_array().unwrap() {
        let (mu, lv) = (vec(&c["mu"]), vec(&c["log_var"]));
        let per = vae_kl_per_dim(&mu, &lv).unwrap();
        for (i, (g, w)) in per.iter().zip(vec(&c["kl_per_dim"])).enumerate() {
            assert_close(*g, w, &format!("vae dim {i}"));
        }
        assert_close(vae_kl(&mu, &lv).unwrap(), num(&c["kl"]), "vae sum");
    }
}

#[test]
fn mutual_information_matches_numpy_and_sklearn() {
    for c in fixture()["mutual_information"].as_array().unwrap() {
        let table: Vec<Vec<f64>> = c["joint"].as_array().unwrap().iter().map(vec).collect();
        assert_close(
            mutual_information(&table).unwrap(),
            num(&c["mi"]),
            &format!("mi {}", c["joint"]),
        );
    }
}

#[test]
fn estimators_match_numpy() {
    for c in fixture()["estimators"].as_array().unwrap() {
        let lr = vec(&c["log_ratios"]);
        let n = lr.len();
        assert_close(k1_mean(&lr).unwrap(), num(&c["k1"]), &format!("k1 n={n}"));
        assert_close(k2_mean(&lr).unwrap(), num(&c["k2"]), &format!("k2 n={n}"));
        assert_close(k3_mean(&lr).unwrap(), num(&c["k3"]), &format!("k3 n={n}"));
    }
}
