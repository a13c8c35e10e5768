//! The Fisher-vector product against finite differences of the KL gradient,
//! symmetry and positive semi-definiteness, and the tangent / reverse passes
//! against finite differences and candle's backward.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use klrl_policy::{ActionMask, Activation, GaussianStd, Mlp, Policy, PolicyFisher};

/// Central differences of ∇ mean KL(π_old ‖ π_θ) at θ_old ± εv, over 2ε.
fn fd_fvp<P: Policy>(
    policy: &mut P,
    obs: &Tensor,
    mask: Option<&ActionMask>,
    v: &[f64],
) -> Vec<f64> {
    let eps = 1e-5;
    let theta = policy.get_flat().expect("flat");
    let old = policy.dist(obs, mask).expect("dist").detach();
    let plus: Vec<f64> = theta.iter().zip(v).map(|(t, x)| t + eps * x).collect();
    let minus: Vec<f64> = theta.iter().zip(v).map(|(t, x)| t - eps * x).collect();
    let gp = kl_grad(policy, obs, mask, &old, &plus);
    let gm = kl_grad(policy, obs, mask, &old, &minus);
    policy.set_flat(&theta).expect("restore");
    gp.iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * eps))
        .collect()
}

fn check_against_finite_differences<P: Policy>(
    policy: &mut P,
    mask: Option<&ActionMask>,
    seed: u64,
    label: &str,
) {
    check_directions(policy, mask, seed, label, 0);
}

/// The check along directions `v` whose first `frozen` entries are 0.
fn check_directions<P: Policy>(
    policy: &mut P,
    mask: Option<&ActionMask>,
    seed: u64,
    label: &str,
    frozen: usize,
) {
    let mut r = rng(seed);
    let obs = observations(&mut r, DType::F64);
    let theta = policy.get_flat().expect("flat");
    let fisher = policy.fisher(&obs, mask).expect("fisher");
    for trial in 0..3 {
        let mut v = gaussian_vec(&mut r, policy.num_params(), 1.0);
        v[..frozen].iter_mut().for_each(|x| *x = 0.0);
        let fv = fisher.apply(&v).expect("fvp");
        assert!(fv.iter().all(|x| x.is_finite()), "{label}: non-finite F v");
        let fd = fd_fvp(policy, &obs, mask, &v);
        let e = rel_err(&fv, &fd);
        eprintln!("{label} trial {trial}: ‖Fv − FD‖/‖FD‖ = {e:e}");
        assert!(e <= 1e-6, "{label} trial {trial}: ‖Fv − FD‖/‖FD‖ = {e:e}");
        // the one-shot trait method agrees with the prebuilt operator
        let fv2 = policy.fisher_vector_product(&obs, mask, &v).expect("fvp");
        assert_eq!(fv, fv2);
    }
    // the operator is a snapshot: finite differences moved θ and restored it
    assert_eq!(policy.get_flat().expect("flat"), theta);
}

fn check_symmetric_psd<P: Policy>(policy: &P, mask: Option<&ActionMask>, seed: u64, label: &str) {
    let mut r = rng(seed);
    let obs = observations(&mut r, DType::F64);
    let fisher = policy.fisher(&obs, mask).expect("fisher");
    let n = policy.num_params();
    for _ in 0..20 {
        let u = gaussian_vec(&mut r, n, 1.0);
        let v = gaussian_vec(&mut r, n, 1.0);
        let fu = fisher.apply(&u).expect("fvp");
        let fv = fisher.apply(&v).expect("fvp");
        let (ufv, vfu) = (dot(&u, &fv), dot(&v, &fu));
        assert!(
            (ufv - vfu).abs() <= 1e-10 * ufv.abs().max(vfu.abs()).max(1e-12),
            "{label}: uᵀFv = {ufv}, vᵀFu = {vfu}"
        );
        let vfv = dot(&v, &fv);
        assert!(vfv >= -1e-12 * dot(&v, &v), "{label}: vᵀFv = {vfv} < 0");
    }
    // linearity: F(2u + v) = 2Fu + Fv
    let u = gaussian_vec(&mut r, n, 1.0);
    let v = gaussian_vec(&mut r, n, 1.0);
    let w: Vec<f64> = u.iter().zip(&v).map(|(a, b)| 2.0 * a + b).collect();
    let (fu, fv, fw) = (
        fisher.apply(&u).expect("fvp"),
        fisher.apply(&v).expect("fvp"),
        fisher.apply(&w).expect("fvp"),
    );
    let lin: Vec<f64> = fu.iter().zip(&fv).map(|(a, b)| 2.0 * a + b).collect();
    assert!(rel_err(&fw, &lin) < 1e-12, "{label}: not linear");
}

#[test]
fn categorical_fvp_matches_finite_differences() {
    for (act, seed) in [(Activation::Tanh, 1), (Activation::Relu, 2)] {
        let mut p = categorical(act, seed);
        check_against_finite_differences(&mut p, None, 10 + seed, &format!("categorical {act:?}"));
    }
}

#[test]
fn masked_categorical_fvp_matches_finite_differences() {
    let mut p = categorical(Activation::Tanh, 3);
    let m = mask(4);
    check_against_finite_differences(&mut p, Some(&m), 13, "masked categorical");
}

#[test]
fn gaussian_fvp_matches_finite_differences() {
    for (act, seed) in [(Activation::Tanh, 5), (Activation::Relu, 6)] {
        let mut p = gaussian(act, seed);
        check_against_finite_differences(&mut p, None, 20 + seed, &format!("gaussian {act:?}"));
    }
}

#[test]
fn fisher_is_symmetric_and_psd() {
    check_symmetric_psd(&categorical(Activation::Tanh, 7), None, 30, "categorical");
    check_symmetric_psd(
        &categorical(Activation::Tanh, 7),
        Some(&mask(8)),
        31,
        "masked",
    );
    check_symmetric_psd(&gaussian(Activation::Tanh, 9), None, 32, "gaussian");
}

#[test]
fn gaussian_log_std_block_is_two_identity() {
    let p = gaussian(Activation::Tanh, 11);
    let mut r = rng(40);
    let obs = observations(&mut r, DType::F64);
    let n = p.num_params();
    let mut v = vec![0.0; n];
    v[n - 2] = 1.0;
    v[n - 1] = -3.0;
    let fv = p.fisher_vector_product(&obs, None, &v).expect("fvp");
    assert!(fv[..n - 2].iter().all(|&x| x == 0.0));
    assert_eq!(&fv[n - 2..], &[2.0, -6.0]);
}

#[test]
fn fully_masked_but_one_states_contribute_nothing() {
    // Every state has exactly one legal action: the policy is deterministic,
    // the KL is identically 0, and F must be exactly 0 (no NaN from p = 0).
    let p = categorical(Activation::Tanh, 12);
    let legal: Vec<bool> = (0..N_STATES * N_ACTIONS)
        .map(|i| i % N_ACTIONS == (i / N_ACTIONS) % N_ACTIONS)
        .collect();
    let m = ActionMask::new(legal, N_ACTIONS).expect("mask");
    let mut r = rng(41);
    let obs = observations(&mut r, DType::F64);
    let v = gaussian_vec(&mut r, p.num_params(), 1.0);
    let fv = p.fisher_vector_product(&obs, Some(&m), &v).expect("fvp");
    assert!(
        fv.iter().all(|&x| x == 0.0),
        "max |Fv| = {}",
        fv.iter().fold(0.0f64, |a, x| a.max(x.abs()))
    );
}

#[test]
fn damping_adds_lambda_v_and_bad_input_is_rejected() {
    let p = categorical(Activation::Tanh, 13);
    let mut r = rng(42);
    let obs = observations(&mut r, DType::F64);
    let f = p.fisher(&obs, None).expect("fisher");
    let v = gaussian_vec(&mut r, p.num_params(), 1.0);
    let fv = f.apply(&v).expect("fvp");
    let dv = f.apply_damped(&v, 0.1).expect("damped");
    for i in 0..v.len() {
        assert!((dv[i] - (fv[i] + 0.1 * v[i])).abs() <= 1e-15 * (1.0 + dv[i].abs()));
    }
    assert!(f.apply(&v[1..]).is_err());
    assert!(f.apply_damped(&v, -1.0).is_err());
    let mut bad = v.clone();
    bad[3] = f64::NAN;
    assert!(f.apply(&bad).is_err());
    assert!(p
        .fisher(&obs, Some(&mask(1).rows(&[0, 1]).expect("rows")))
        .is_err());
}

#[test]
fn f32_fvp_is_close_to_f64() {
    let p64 = categorical(Activation::Tanh, 14);
    let mut r = rng(43);
    let obs = observations(&mut r, DType::F64);
    let v = gaussian_vec(&mut r, p64.num_params(), 1.0);
    let fv64 = p64.fisher_vector_product(&obs, None, &v).expect("fvp");
    let mut p32 = klrl_policy::CategoricalPolicy::new(
        OBS_DIM,
        N_ACTIONS,
        &small_config(Activation::Tanh),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("policy");
    p32.set_flat(&p64.get_flat().expect("flat")).expect("set");
    let obs32 = obs.to_dtype(DType::F32).expect("f32");
    let fv32 = p32.fisher_vector_product(&obs32, None, &v).expect("fvp");
    let e = rel_err(&fv32, &fv64);
    assert!(e < 1e-4, "f32 vs f64: {e:e}");
}

fn mlp_tangent_case(act: Activation, seed: u64) {
    let p = categorical(act, seed);
    let mlp: &Mlp = p.mlp();
    let mut r = rng(seed + 100);
    let obs = observations(&mut r, DType::F64);
    let n = mlp.num_params();
    let v = gaussian_vec(&mut r, n, 1.0);
    let tangents = mlp.tangents_from_flat(&v).expect("tangents");
    let (out, d_out) = mlp.jvp(&obs, &tangents).expect("jvp");
    let forward = mlp.forward(&obs).expect("forward");
    let diff = (&out - &forward)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f64>());
    assert!(
        diff.expect("diff") < 1e-14,
        "linearize output differs from forward"
    );

    // J v against central differences of the forward pass.
    let theta = klrl_policy::flat::get_flat(&mlp.vars()).expect("flat");
    let eps = 1e-6;
    let at = |t: &[f64]| -> Vec<f64> {
        klrl_policy::flat::set_flat(&mlp.vars(), t).expect("set");
        let out = mlp.forward(&obs).expect("forward");
        out.flatten_all()
            .and_then(|o| o.to_vec1::<f64>())
            .expect("out")
    };
    let plus: Vec<f64> = theta.iter().zip(&v).map(|(a, b)| a + eps * b).collect();
    let minus: Vec<f64> = theta.iter().zip(&v).map(|(a, b)| a - eps * b).collect();
    let (fp, fm) = (at(&plus), at(&minus));
    klrl_policy::flat::set_flat(&mlp.vars(), &theta).expect("restore");
    let fd: Vec<f64> = fp
        .iter()
        .zip(&fm)
        .map(|(a, b)| (a - b) / (2.0 * eps))
        .collect();
    let jv = d_out
        .flatten_all()
        .and_then(|t| t.to_vec1::<f64>())
        .expect("jv");
    let e = rel_err(&jv, &fd);
    assert!(e < 1e-7, "{act:?}: J v vs finite differences {e:e}");

    // Jᵀ u against candle's backward of Σ f ⊙ u.
    let u = Tensor::from_vec(
        gaussian_vec(&mut r, N_STATES * N_ACTIONS, 1.0),
        (N_STATES, N_ACTIONS),
        &Device::Cpu,
    )
    .expect("u");
    let (_, lin) = mlp.linearize(&obs).expect("lin");
    let jtu = lin.vjp(&u).expect("vjp");
    let mut ours = Vec::new();
    for g in &jtu {
        ours.extend(
            g.weight
                .flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("w"),
        );
        ours.extend(g.bias.to_vec1::<f64>().expect("b"));
    }
    let loss = (mlp.forward(&obs).expect("f") * &u)
        .and_then(|x| x.sum_all())
        .expect("loss");
    let reference = klrl_policy::flat::flat_grad(&mlp.vars(), &loss).expect("grad");
    let e = rel_err(&ours, &reference);
    assert!(e < 1e-13, "{act:?}: Jᵀu vs backward {e:e}");
    // and the adjoint identity ⟨J v, u⟩ = ⟨v, Jᵀ u⟩
    let u_host = u.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("u");
    let (a, b) = (dot(&jv, &u_host), dot(&v, &ours));
    assert!(
        (a - b).abs() < 1e-12 * a.abs().max(1.0),
        "adjoint: {a} vs {b}"
    );
}

#[test]
fn tangent_and_reverse_passes_are_exact() {
    mlp_tangent_case(Activation::Tanh, 50);
    mlp_tangent_case(Activation::Relu, 51);
}

/// gSDE (every option) and the state-dependent head: F v against central
/// differences of the KL gradient, symmetry and PSD.
///
/// Without `learn_features` the variance sees the features as constants
/// (SB3's detach): the KL "gradient" is then not the gradient of the KL as a
/// function of θ along directions that move the hidden layers (moving them
/// changes the features), so finite differences of it are compared along
/// directions in the head's and gSDE's parameters only (the hidden layers
/// frozen); the double-backward test (`fisher_double_backward.rs`) covers
/// every direction.
#[test]
fn state_dependent_std_fvp_matches_finite_differences() {
    for (i, (std, name)) in state_dependent_kinds().into_iter().enumerate() {
        for (act, an) in [(Activation::Tanh, "tanh"), (Activation::Relu, "relu")] {
            let mut p = gaussian_with(act, std, 70 + i as u64);
            let label = format!("{name} {an}");
            let frozen = match std {
                GaussianStd::Gsde(c) if !c.learn_features => {
                    let layers = p.mlp().layers();
                    layers[..layers.len() - 1]
                        .iter()
                        .map(|l| l.weight().elem_count() + l.bias().elem_count())
                        .sum()
                }
                _ => 0,
            };
            check_directions(&mut p, None, 80 + i as u64, &label, frozen);
            check_symmetric_psd(&p, None, 90 + i as u64, &label);
        }
    }
}
