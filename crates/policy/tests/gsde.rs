//! gSDE and the state-dependent log-std head: the per-state Gaussian against
//! closed forms, the exploration noise against its marginal distribution,
//! and the typed errors. (Derivatives: `pullback.rs`, `fisher.rs`,
//! `fisher_double_backward.rs`.)

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use klrl_policy::{
    Activation, DiagGaussian, DiagGaussianPolicy, Dist, GaussianHead, GaussianStd, GsdeConfig,
    Policy, PolicyError,
};

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|x| x.to_dtype(DType::F64))
        .and_then(|x| x.to_vec1::<f64>())
        .expect("host")
}

fn gauss(d: &Dist) -> &DiagGaussian {
    match d {
        Dist::DiagGaussian(g) => g,
        Dist::Categorical(_) => panic!("not Gaussian"),
    }
}

/// log σ(s) of a gSDE policy is ½ log(Σ_i z_i² σ_ij² + 1e-6), computed here
/// on the host from the features and the parameter; log-prob, entropy and
/// KL follow the per-state closed forms.
#[test]
fn gsde_distribution_is_the_closed_form_per_state() {
    for full_std in [true, false] {
        let std = GaussianStd::Gsde(GsdeConfig {
            full_std,
            use_expln: false,
            learn_features: false,
        });
        let p = gaussian_with(Activation::Tanh, std, 1);
        let mut r = rng(2);
        let obs = observations(&mut r, DType::F64);
        let dist = p.dist(&obs, None).expect("dist");
        let g = gauss(&dist);
        assert!(g.is_state_dependent());
        let (_, z) = p.mlp().forward_with_features(&obs).expect("features");
        let z = host(&z);
        let l = host(p.log_std().expect("log_std").as_tensor());
        let latent = p.mlp().feature_dim();
        let cols = if full_std { ACT_DIM } else { 1 };
        assert_eq!(l.len(), latent * cols);
        let ls = host(g.log_std());
        let mean = host(g.mean());
        for s in 0..N_STATES {
            for j in 0..ACT_DIM {
                let v: f64 = (0..latent)
                    .map(|i| {
                        let sigma = l[i * cols + if full_std { j } else { 0 }].exp();
                        (z[s * latent + i] * sigma).powi(2)
                    })
                    .sum::<f64>()
                    + 1e-6;
                let got = ls[s * ACT_DIM + j];
                assert!((got - 0.5 * v.ln()).abs() <= 1e-13, "{s} {j}");
            }
        }
        // log-prob, entropy, KL against the per-state formulas
        let a: Vec<f64> = gaussian_vec(&mut r, N_STATES * ACT_DIM, 1.0);
        let at = Tensor::from_vec(a.clone(), (N_STATES, ACT_DIM), &Device::Cpu).expect("a");
        let lp = host(&g.log_prob(&at).expect("log_prob"));
        let ent = host(&g.entropy().expect("entropy"));
        let other = gaussian_with(Activation::Tanh, std, 3);
        let od = other.dist(&obs, None).expect("other");
        let o = gauss(&od);
        let kl = host(&g.kl(o).expect("kl"));
        let (om, ol) = (host(o.mean()), host(o.log_std()));
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        for s in 0..N_STATES {
            let (mut lp_s, mut ent_s, mut kl_s) = (0.0, 0.0, 0.0);
            for j in 0..ACT_DIM {
                let k = s * ACT_DIM + j;
                let (m, l) = (mean[k], ls[k]);
                lp_s += -0.5 * ((a[k] - m) / l.exp()).powi(2) - l - 0.5 * ln2pi;
                ent_s += l + 0.5 * (1.0 + ln2pi);
                kl_s += ol[k] - l
                    + ((2.0 * l).exp() + (m - om[k]).powi(2)) / (2.0 * (2.0 * ol[k]).exp())
                    - 0.5;
            }
            assert!(
                (lp[s] - lp_s).abs() <= 1e-12 * lp_s.abs().max(1.0),
                "log_prob {s}"
            );
            assert!((ent[s] - ent_s).abs() <= 1e-12, "entropy {s}");
            assert!((kl[s] - kl_s).abs() <= 1e-12 * kl_s.max(1.0), "kl {s}");
        }
        // a per-state and a shared σ mix in the KL (both directions)
        let shared = gaussian(Activation::Tanh, 4);
        let sd = shared.dist(&obs, None).expect("shared");
        let sg = gauss(&sd);
        let sl = host(sg.log_std());
        let sm = host(sg.mean());
        let kl_ps = host(&g.kl(sg).expect("kl"));
        let kl_sp = host(&sg.kl(g).expect("kl"));
        for s in 0..N_STATES {
            let (mut a_, mut b_) = (0.0, 0.0);
            for (j, &slj) in sl.iter().enumerate() {
                let k = s * ACT_DIM + j;
                let kl1 = |m1: f64, l1: f64, m2: f64, l2: f64| {
                    l2 - l1 + ((2.0 * l1).exp() + (m1 - m2).powi(2)) / (2.0 * (2.0 * l2).exp())
                        - 0.5
                };
                a_ += kl1(mean[k], ls[k], sm[k], slj);
                b_ += kl1(sm[k], slj, mean[k], ls[k]);
            }
            assert!((kl_ps[s] - a_).abs() <= 1e-12 * a_.max(1.0));
            assert!((kl_sp[s] - b_).abs() <= 1e-12 * b_.max(1.0));
        }
        // rows of π_old keep their own σ
        let idx = Tensor::new(&[3u32, 0, 3], &Device::Cpu).expect("idx");
        let rows = g.select_rows(&idx).expect("rows");
        let rl = host(rows.log_std());
        assert_eq!(&rl[..ACT_DIM], &ls[3 * ACT_DIM..4 * ACT_DIM]);
        assert_eq!(&rl[ACT_DIM..2 * ACT_DIM], &ls[..ACT_DIM]);
    }
}

/// The state-dependent head: μ and log σ are the two halves of the MLP's
/// outputs, and its distributions (built on strided column views) can be
/// cut into minibatch rows.
#[test]
fn the_log_std_head_splits_the_outputs() {
    let p = gaussian_with(Activation::Relu, GaussianStd::StateDependent, 12);
    let mut r = rng(13);
    let obs = observations(&mut r, DType::F64);
    let out = host(&p.mlp().forward(&obs).expect("forward"));
    let d = p.dist(&obs, None).expect("dist");
    let g = gauss(&d);
    assert!(g.is_state_dependent());
    let (m, l) = (host(g.mean()), host(g.log_std()));
    for s in 0..N_STATES {
        for j in 0..ACT_DIM {
            assert_eq!(m[s * ACT_DIM + j], out[s * 2 * ACT_DIM + j]);
            assert_eq!(l[s * ACT_DIM + j], out[s * 2 * ACT_DIM + ACT_DIM + j]);
        }
    }
    let idx = Tensor::new(&[5u32, 1], &Device::Cpu).expect("idx");
    let rows = g.select_rows(&idx).expect("rows");
    assert_eq!(host(rows.log_std())[..ACT_DIM], l[5 * ACT_DIM..6 * ACT_DIM]);
    assert_eq!(host(rows.mean())[ACT_DIM..], m[ACT_DIM..2 * ACT_DIM]);
}

/// The exploring action is μ(s) + θ_εᵀ z(s); over many draws of θ_ε its
/// distribution at a fixed state is the policy's N(μ(s), σ(s)²): the sample
/// mean and variance are within their 99.99 % bands, and log π(a|s) is the
/// Gaussian's.
#[test]
fn gsde_noise_has_the_policys_marginal() {
    let std = GaussianStd::Gsde(GsdeConfig::sb3());
    let p = gaussian_with(Activation::Tanh, std, 5);
    let mut r = rng(6);
    let one = observations(&mut r, DType::F64)
        .narrow(0, 0, 1)
        .expect("one state");
    let k = 4000;
    let obs = one.repeat((k, 1)).expect("repeat");
    let noise = p
        .sample_sde_noise(k, &mut r)
        .expect("noise")
        .expect("gSDE policy");
    assert_eq!((noise.copies(), noise.latent()), (k, p.mlp().feature_dim()));
    let (dist, actions) = p.sample_with_sde_noise(&obs, &noise).expect("act");
    let g = gauss(&dist);
    let mean = host(g.mean());
    let sigma: Vec<f64> = host(g.log_std()).iter().map(|l| l.exp()).collect();
    let a = actions.as_continuous().expect("continuous");
    for j in 0..ACT_DIM {
        let xs: Vec<f64> = (0..k).map(|e| f64::from(a[e * ACT_DIM + j])).collect();
        let m = xs.iter().sum::<f64>() / k as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1) as f64;
        let (mu, s2) = (mean[j], sigma[j].powi(2));
        // 4 standard errors of the mean and of the variance (≈ s² √(2/k))
        assert!(
            (m - mu).abs() <= 4.0 * (s2 / k as f64).sqrt(),
            "mean {j}: {m} vs {mu}"
        );
        assert!(
            (v - s2).abs() <= 4.0 * s2 * (2.0 / k as f64).sqrt(),
            "var {j}: {v} vs {s2}"
        );
    }
    // the rollout's log σ(s) (computed on the host) is the policy's
    let reference = p.dist(&obs, None).expect("dist");
    let want = host(gauss(&reference).log_std());
    for (a, b) in host(g.log_std()).iter().zip(&want) {
        assert!((a - b).abs() <= 1e-13, "{a} vs {b}");
    }
    // deterministic given the noise: the same matrices give the same actions
    let (_, again) = p.sample_with_sde_noise(&obs, &noise).expect("act");
    assert_eq!(actions, again);
    // and the noise of copy e is θ_e ᵀ z(s_e), exactly
    let (_, z) = p.mlp().forward_with_features(&obs).expect("z");
    let eps = noise.noise(&host(&z)).expect("noise");
    for (i, (&x, e)) in a.iter().zip(&eps).enumerate() {
        assert_eq!(x, (mean[i % ACT_DIM] + e) as f32);
    }
}

#[test]
fn bad_gsde_use_is_a_typed_error() {
    let mut r = rng(7);
    let obs = observations(&mut r, DType::F64);
    // noise from a policy without gSDE: none, and using some is an error
    let plain = gaussian(Activation::Tanh, 8);
    assert!(plain.sample_sde_noise(2, &mut r).expect("none").is_none());
    let head = gaussian_with(Activation::Tanh, GaussianStd::StateDependent, 8);
    assert!(head.sample_sde_noise(2, &mut r).expect("none").is_none());
    let g = gaussian_with(Activation::Tanh, GaussianStd::Gsde(GsdeConfig::sb3()), 9);
    let noise = g
        .sample_sde_noise(N_STATES, &mut r)
        .expect("noise")
        .expect("some");
    assert!(matches!(
        plain.sample_with_sde_noise(&obs, &noise),
        Err(PolicyError::Mismatch { .. })
    ));
    // noise for another number of copies
    let few = g.sample_sde_noise(3, &mut r).expect("noise").expect("some");
    assert!(matches!(
        g.sample_with_sde_noise(&obs, &few),
        Err(PolicyError::Mismatch { .. })
    ));
    // a non-finite initial log σ
    for bad in [f64::NAN, f64::INFINITY] {
        let e = DiagGaussianPolicy::with_head(
            OBS_DIM,
            ACT_DIM,
            &small_config(Activation::Tanh),
            &GaussianHead {
                std: GaussianStd::Gsde(GsdeConfig::sb3()),
                log_std_init: bad,
            },
            DType::F64,
            &Device::Cpu,
            &mut r,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::InvalidParameter {
                    param: "log_std_init",
                    ..
                }
            ),
            "{e}"
        );
    }
    // a log_std of neither [d] nor [N, d]
    let m = Tensor::zeros((4, 2), DType::F64, &Device::Cpu).expect("m");
    let l = Tensor::zeros((3, 2), DType::F64, &Device::Cpu).expect("l");
    assert!(matches!(
        DiagGaussian::new(&m, &l),
        Err(PolicyError::Shape { .. })
    ));
}

/// The parameter shapes and initial values of each σ kind, and that the
/// default constructor draws the same MLP as before (the state-independent
/// policy is unchanged).
#[test]
fn heads_start_where_they_say() {
    let cfg = small_config(Activation::Tanh);
    let make = |std| {
        DiagGaussianPolicy::with_head(
            OBS_DIM,
            ACT_DIM,
            &cfg,
            &GaussianHead {
                std,
                log_std_init: -2.0,
            },
            DType::F64,
            &Device::Cpu,
            &mut rng(10),
        )
        .expect("policy")
    };
    let full = make(GaussianStd::Gsde(GsdeConfig::sb3()));
    let ls = full.log_std().expect("log_std");
    assert_eq!(ls.dims(), &[6, ACT_DIM]);
    assert!(host(ls.as_tensor()).iter().all(|&x| x == -2.0));
    let row = make(GaussianStd::Gsde(GsdeConfig {
        full_std: false,
        ..GsdeConfig::sb3()
    }));
    assert_eq!(row.log_std().expect("log_std").dims(), &[6, 1]);
    let head = make(GaussianStd::StateDependent);
    assert!(head.log_std().is_none());
    assert_eq!(head.mlp().out_dim(), 2 * ACT_DIM);
    let mut r = rng(11);
    let obs = observations(&mut r, DType::F64);
    let d = head.dist(&obs, None).expect("dist");
    // head weights at gain 0.01: log σ(s) within 0.1 of the bias −2
    assert!(host(gauss(&d).log_std())
        .iter()
        .all(|&x| (x + 2.0).abs() < 0.1));
    // the default policy's MLP is the one `new` draws
    let plain = DiagGaussianPolicy::new(
        OBS_DIM,
        ACT_DIM,
        &cfg,
        DType::F64,
        &Device::Cpu,
        &mut rng(10),
    )
    .expect("plain");
    let shared = make(GaussianStd::StateIndependent);
    assert_eq!(
        plain.mlp().layers()[0]
            .weight()
            .as_tensor()
            .to_vec2::<f64>()
            .expect("w"),
        shared.mlp().layers()[0]
            .weight()
            .as_tensor()
            .to_vec2::<f64>()
            .expect("w")
    );
    assert_eq!(full.num_params(), full.mlp().num_params() + 6 * ACT_DIM);
}
