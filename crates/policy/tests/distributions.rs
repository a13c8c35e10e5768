//! Categorical and Gaussian distributions against scipy (fixture written by
//! fixtures/make_reference.py), closed forms, extreme logits, masks and
//! sampling frequencies.

mod common;

use candle_core::{DType, Device, Tensor};
use common::rng;
use klrl_policy::{ActionMask, Actions, Categorical, DiagGaussian, Dist, MASKED_LOGIT};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed};
use rand::Rng;
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference.json"
    ))
    .expect("fixture file");
    serde_json::from_str(&text).expect("fixture json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("to host")
}

fn tensor(v: Vec<f64>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: got {got}, expected {want}"
    );
}

#[test]
fn categorical_matches_scipy_in_f64_and_f32() {
    let fx = fixture();
    for (case_idx, case) in fx["categorical"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let n = case["n"].as_u64().expect("n") as usize;
        let k = case["k"].as_u64().expect("k") as usize;
        let legal: Vec<bool> = case["legal"]
            .as_array()
            .expect("legal")
            .iter()
            .map(|b| b.as_bool().expect("bool"))
            .collect();
        let mask = ActionMask::new(legal.clone(), k).expect("mask");
        let actions: Vec<usize> = case["actions"]
            .as_array()
            .expect("a")
            .iter()
            .map(|a| a.as_u64().expect("u") as usize)
            .collect();
        // Each value is a handful of floating-point operations on logits that
        // are exact in the dtype (the ±1e4 cases are integers, so their
        // differences are exact too) or rounded once (|logit| ≤ 4.4 in the
        // random cases): a few ε of max(|value|, 1). 8 ε leaves a margin over
        // the worst measured, 1.6 ε in f32 (a KL of the ±1e4 case) and 1.2 ε
        // in f64.
        for (dtype, tol) in [
            (DType::F64, 8.0 * f64::EPSILON),
            (DType::F32, 8.0 * f32::EPSILON as f64),
        ] {
            let p = Categorical::from_logits(
                &tensor(floats(&case["logits_p"]), &[n, k], dtype),
                Some(&mask),
            )
            .expect("p");
            let q = Categorical::from_logits(
                &tensor(floats(&case["logits_q"]), &[n, k], dtype),
                Some(&mask),
            )
            .expect("q");
            let a = Actions::Discrete(actions.clone())
                .to_tensor(dtype, &Device::Cpu)
                .expect("actions");
            let label = format!("case {case_idx} {dtype:?}");
            let lp = host(&p.log_prob(&a).expect("log_prob"));
            let ent = host(&p.entropy().expect("entropy"));
            let kl = host(&p.kl(&q).expect("kl"));
            let probs = host(&p.probs().expect("probs"));
            for s in 0..n {
                close(
                    lp[s],
                    floats(&case["log_prob_p"])[s],
                    tol,
                    &format!("{label} log_prob[{s}]"),
                );
                close(
                    ent[s],
                    floats(&case["entropy_p"])[s],
                    tol,
                    &format!("{label} entropy[{s}]"),
                );
                close(
                    kl[s],
                    floats(&case["kl_pq"])[s],
                    tol,
                    &format!("{label} kl[{s}]"),
                );
                assert!(
                    kl[s] >= 0.0 || kl[s].abs() < 1e-6,
                    "{label}: negative KL {}",
                    kl[s]
                );
            }
            let want_probs = floats(&case["probs_p"]);
            for i in 0..n * k {
                if !legal[i] {
                    assert_eq!(
                        probs[i], 0.0,
                        "{label}: masked action has probability {}",
                        probs[i]
                    );
                } else {
                    close(probs[i], want_probs[i], tol, &format!("{label} prob[{i}]"));
                }
            }
            // KL(p ‖ p) = 0
            let self_kl = host(&p.kl(&p).expect("kl"));
            assert!(
                self_kl.iter().all(|&x| x == 0.0),
                "{label}: KL(p‖p) = {self_kl:?}"
            );
        }
    }
}

#[test]
fn extreme_logits_give_finite_gradients() {
    // logits ±1e4, with and without a mask: KL, entropy and their gradients stay finite.
    for masked in [false, true] {
        let raw = vec![1e4, -1e4, 0.0, -1e4, -1e4, -1e4 + 3.0, 1e4, 1e4 - 1.0, -1e4];
        for dtype in [DType::F32, DType::F64] {
            let var =
                candle_core::Var::from_tensor(&tensor(raw.clone(), &[3, 3], dtype)).expect("var");
            let mask = ActionMask::new(
                vec![!masked, true, true, true, true, true, true, !masked, true],
                3,
            )
            .expect("mask");
            let m = masked.then_some(&mask);
            let p = Categorical::from_logits(var.as_tensor(), m).expect("p");
            let q = Categorical::from_logits(&tensor(vec![0.0; 9], &[3, 3], dtype), m).expect("q");
            let loss = (q.kl(&p).expect("kl").sum_all().expect("s")
                + p.entropy().expect("e").sum_all().expect("s"))
            .expect("loss");
            let lp = p
                .log_prob(&Tensor::new(&[1u32, 2, 0], &Device::Cpu).expect("a"))
                .expect("lp");
            let loss = (loss + lp.sum_all().expect("s")).expect("loss");
            assert!(
                host(&loss)[0].is_finite(),
                "masked={masked} {dtype:?}: loss {:?}",
                host(&loss)
            );
            let grads = loss.backward().expect("backward");
            let g = host(grads.get(var.as_tensor()).expect("grad"));
            assert!(
                g.iter().all(|x| x.is_finite()),
                "masked={masked} {dtype:?}: gradient {g:?}"
            );
            if masked {
                // no gradient reaches a masked logit
                assert_eq!(g[0], 0.0);
                assert_eq!(g[7], 0.0);
            }
        }
    }
}

#[test]
fn masked_actions_are_never_sampled_and_frequencies_match() {
    // 10 000 states with the same logits, two actions masked: one sample call
    // gives 10 000 independent draws.
    let n = 10_000;
    let logits = [0.3, -1.0, 2.0, 0.0, 0.5];
    let legal_row = [true, false, true, true, false];
    let raw: Vec<f64> = (0..n).flat_map(|_| logits).collect();
    let legal: Vec<bool> = (0..n).flat_map(|_| legal_row).collect();
    let mask = ActionMask::new(legal, 5).expect("mask");
    let d = Categorical::from_logits(&tensor(raw, &[n, 5], DType::F32), Some(&mask)).expect("dist");
    let mut r = rng(77);
    let draws = d.sample(&mut r).expect("sample");
    let mut counts = [0usize; 5];
    for &a in &draws {
        counts[a] += 1;
    }
    assert_eq!(counts[1], 0);
    assert_eq!(counts[4], 0);
    // expected probabilities over the legal actions, computed here in f64
    let z: f64 = [0, 2, 3].iter().map(|&i| f64::exp(logits[i])).sum();
    for i in [0, 2, 3] {
        let p = f64::exp(logits[i]) / z;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        let dev = (counts[i] as f64 - n as f64 * p).abs();
        assert!(
            dev <= 5.0 * sd,
            "action {i}: {} draws, expected {:.1} ± {:.1}",
            counts[i],
            n as f64 * p,
            sd
        );
    }
    // mode: argmax of the legal actions
    assert!(d.mode().expect("mode").iter().all(|&a| a == 2));
    // same seed, same draws
    assert_eq!(d.sample(&mut rng(77)).expect("sample"), draws);
}

#[test]
fn masked_logit_gives_exactly_zero_probability_next_to_huge_logits() {
    // legal logits as low as −1e4 still leave masked actions at exactly 0
    let raw = vec![-1e4, 0.0, -1e4 - 5.0, 1e4, 1e4, -1e4];
    let mask = ActionMask::new(vec![true, false, true, true, false, true], 3).expect("mask");
    for dtype in [DType::F32, DType::F64] {
        let d =
            Categorical::from_logits(&tensor(raw.clone(), &[2, 3], dtype), Some(&mask)).expect("d");
        let p = host(&d.probs().expect("p"));
        assert_eq!(p[1], 0.0);
        assert_eq!(p[4], 0.0);
        assert!((p[0] + p[2] - 1.0).abs() < 1e-6 && (p[3] + p[5] - 1.0).abs() < 1e-6);
        let lp = host(d.log_probs());
        assert!(lp[1] <= MASKED_LOGIT / 2.0 && lp[1].is_finite());
    }
}

#[test]
fn gaussian_matches_scipy_and_closed_forms() {
    let fx = fixture();
    let g = &fx["gaussian"];
    let n = g["n"].as_u64().expect("n") as usize;
    let d = g["d"].as_u64().expect("d") as usize;
    for (dtype, tol) in [(DType::F64, 1e-9), (DType::F32, 1e-4)] {
        let p = DiagGaussian::new(
            &tensor(floats(&g["mean_p"]), &[n, d], dtype),
            &tensor(floats(&g["log_std_p"]), &[d], dtype),
        )
        .expect("p");
        let q = DiagGaussian::new(
            &tensor(floats(&g["mean_q"]), &[n, d], dtype),
            &tensor(floats(&g["log_std_q"]), &[d], dtype),
        )
        .expect("q");
        let a = tensor(floats(&g["actions"]), &[n, d], dtype);
        let lp = host(&p.log_prob(&a).expect("lp"));
        let ent = host(&p.entropy().expect("ent"));
        let kl = host(&p.kl(&q).expect("kl"));
        let self_kl = host(&p.kl(&p).expect("kl"));
        for s in 0..n {
            close(
                lp[s],
                floats(&g["log_prob_p"])[s],
                tol,
                &format!("{dtype:?} log_prob[{s}]"),
            );
            close(
                ent[s],
                g["entropy_p"].as_f64().expect("e"),
                tol,
                &format!("{dtype:?} entropy[{s}]"),
            );
            close(
                kl[s],
                floats(&g["kl_pq"])[s],
                tol,
                &format!("{dtype:?} kl[{s}]"),
            );
            assert!(self_kl[s].abs() < tol, "KL(p‖p) = {}", self_kl[s]);
        }
    }
    // a one-dimensional case by hand: N(1, 2²) vs N(−1, 0.5²)
    let p = DiagGaussian::new(
        &tensor(vec![1.0], &[1, 1], DType::F64),
        &tensor(vec![2f64.ln()], &[1], DType::F64),
    )
    .expect("p");
    let q = DiagGaussian::new(
        &tensor(vec![-1.0], &[1, 1], DType::F64),
        &tensor(vec![0.5f64.ln()], &[1], DType::F64),
    )
    .expect("q");
    // KL = ln(0.5/2) + (4 + 4) / (2 · 0.25) − ½ = −ln 4 + 16 − ½
    close(
        host(&p.kl(&q).expect("kl"))[0],
        15.5 - 4f64.ln(),
        1e-14,
        "hand KL",
    );
    // log N(2; 1, 4) = −(1/2)(1/4) − ln 2 − ½ ln 2π
    let lp = host(
        &p.log_prob(&tensor(vec![2.0], &[1, 1], DType::F64))
            .expect("lp"),
    )[0];
    close(
        lp,
        -0.125 - 2f64.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln(),
        1e-14,
        "hand log_prob",
    );
    // H = ln 2 + ½ (1 + ln 2π)
    let h = host(&p.entropy().expect("h"))[0];
    close(
        h,
        2f64.ln() + 0.5 * (1.0 + (2.0 * std::f64::consts::PI).ln()),
        1e-14,
        "hand entropy",
    );
}

#[test]
fn gaussian_samples_have_the_right_moments() {
    let n = 20_000;
    let mean = [0.5, -2.0];
    let log_std = [0.0, (0.1f64).ln()];
    let m: Vec<f64> = (0..n).flat_map(|_| mean).collect();
    let d = DiagGaussian::new(
        &tensor(m, &[n, 2], DType::F64),
        &tensor(log_std.to_vec(), &[2], DType::F64),
    )
    .expect("d");
    let x = d.sample(&mut rng(5)).expect("sample");
    for j in 0..2 {
        let col: Vec<f64> = (0..n).map(|i| f64::from(x[2 * i + j])).collect();
        let mu = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = log_std[j].exp();
        assert!(
            (mu - mean[j]).abs() <= 5.0 * sd / (n as f64).sqrt(),
            "mean {j}: {mu}"
        );
        // var of the sample variance ≈ 2σ⁴/n
        assert!(
            (var - sd * sd).abs() <= 5.0 * sd * sd * (2.0 / n as f64).sqrt(),
            "var {j}: {var}"
        );
    }
    let mode = d.mode().expect("mode");
    assert_eq!(&mode[..2], &[0.5, -2.0]);
}

#[test]
fn dist_enum_dispatch_and_mismatch_errors() {
    let c = Dist::Categorical(
        Categorical::from_logits(&tensor(vec![0.0, 1.0], &[1, 2], DType::F32), None).expect("c"),
    );
    let g = Dist::DiagGaussian(
        DiagGaussian::new(
            &tensor(vec![0.0], &[1, 1], DType::F32),
            &tensor(vec![0.0], &[1], DType::F32),
        )
        .expect("g"),
    );
    assert!(c.kl(&g).is_err());
    assert!(g.kl(&c).is_err());
    // out-of-range and wrongly typed actions are errors, not panics
    let bad = Tensor::new(&[2u32], &Device::Cpu).expect("t");
    assert!(matches!(
        c.log_prob(&bad),
        Err(klrl_policy::PolicyError::ActionOutOfRange {
            action: 2,
            n_actions: 2
        })
    ));
    let wrong_type = Tensor::new(&[1i64], &Device::Cpu).expect("t");
    assert!(c.log_prob(&wrong_type).is_err());
    assert!(g
        .log_prob(&tensor(vec![0.0, 1.0], &[1, 2], DType::F32))
        .is_err());
    assert_eq!(c.sample(&mut rng(0)).expect("s").len(), 1);
    assert!(matches!(
        g.sample(&mut rng(0)).expect("s"),
        Actions::Continuous { action_dim: 1, .. }
    ));
    // round trip host ↔ tensor
    let a = Actions::Continuous {
        values: vec![0.25, -1.5, 3.0, 4.0],
        action_dim: 2,
    };
    let t = a.to_tensor(DType::F64, &Device::Cpu).expect("t");
    assert_eq!(t.dims(), &[2, 2]);
    assert_eq!(Actions::from_tensor(&t).expect("back"), a);
    let a = Actions::Discrete(vec![3, 0, 2]);
    assert_eq!(
        Actions::from_tensor(&a.to_tensor(DType::F32, &Device::Cpu).expect("t")).expect("back"),
        a
    );
}

proptest! {
    // A fixed seed (proptest's default draws a fresh one each run, and
    // PROPTEST_RNG_SEED cannot override it here): every run checks the same
    // cases, so a failure reproduces as it is, and no regressions file is needed.
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(14),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// KL ≥ 0 and KL(p‖p) = 0 for random logits (scale up to 1e4) and masks.
    #[test]
    fn kl_is_nonnegative(seed in 0u64..1_000_000, scale in prop::sample::select(vec![0.1, 3.0, 100.0, 1e4])) {
        let mut r = rng(seed);
        let (n, k) = (8, 5);
        let mut legal: Vec<bool> = (0..n * k).map(|_| r.random::<f64>() < 0.7).collect();
        for s in 0..n { legal[s * k + r.random_range(0..k)] = true; }
        let mask = ActionMask::new(legal, k).expect("mask");
        let lp: Vec<f64> = (0..n * k).map(|_| scale * (2.0 * r.random::<f64>() - 1.0)).collect();
        let lq: Vec<f64> = (0..n * k).map(|_| scale * (2.0 * r.random::<f64>() - 1.0)).collect();
        for dtype in [DType::F32, DType::F64] {
            let p = Categorical::from_logits(&tensor(lp.clone(), &[n, k], dtype), Some(&mask)).expect("p");
            let q = Categorical::from_logits(&tensor(lq.clone(), &[n, k], dtype), Some(&mask)).expect("q");
            let kl = host(&p.kl(&q).expect("kl"));
            let ent = host(&p.entropy().expect("h"));
            // f32 rounding can make a zero KL slightly negative: |KL| ≤ ε · scale
            let slack = if dtype == DType::F32 { 1e-6 * scale.max(1.0) * 4.0 } else { 1e-12 * scale.max(1.0) };
            for s in 0..n {
                prop_assert!(kl[s].is_finite() && kl[s] >= -slack, "KL[{}] = {}", s, kl[s]);
                prop_assert!(ent[s].is_finite() && ent[s] >= -slack && ent[s] <= (k as f64).ln() + 1e-5);
            }
            let zero = host(&p.kl(&p).expect("kl"));
            prop_assert!(zero.iter().all(|&x| x == 0.0));
        }
    }
}
