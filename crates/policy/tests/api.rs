//! The policy API: construction, initialisation, determinism, flat vectors,
//! input validation, value networks and shared trunks.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use klrl_policy::init::{orthogonalize, GAIN_HIDDEN, GAIN_POLICY_HEAD, GAIN_VALUE_HEAD};
use klrl_policy::{
    ActionMask, Activation, CategoricalPolicy, DiagGaussianPolicy, MlpConfig, Policy, PolicyError,
    PolicyFisher, ValueNet,
};
use serde_json::Value;

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("to host")
}

#[test]
fn orthogonalize_matches_numpy_qr_with_torch_sign_convention() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference.json"
    ))
    .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    for case in fx["orthogonal"].as_array().expect("cases") {
        let get = |k: &str| -> Vec<f64> {
            case[k]
                .as_array()
                .expect("arr")
                .iter()
                .map(|x| x.as_f64().expect("f"))
                .collect()
        };
        let rows = case["rows"].as_u64().expect("r") as usize;
        let cols = case["cols"].as_u64().expect("c") as usize;
        let gain = case["gain"].as_f64().expect("g");
        let ours = orthogonalize(&get("matrix"), rows, cols, gain).expect("q");
        let want = get("expected");
        let err = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-12 * gain.max(1.0),
            "{rows}x{cols}: max |ours − numpy| = {err}"
        );
    }
}

/// max |W Wᵀ − g² I| (rows ≤ cols) or |Wᵀ W − g² I|.
fn gram_error(w: &[f64], rows: usize, cols: usize, gain: f64) -> f64 {
    let wide = rows <= cols;
    let (k, inner) = if wide { (rows, cols) } else { (cols, rows) };
    let at = |a: usize, b: usize| {
        if wide {
            w[a * cols + b]
        } else {
            w[b * cols + a]
        }
    };
    let mut worst: f64 = 0.0;
    for i in 0..k {
        for j in 0..k {
            let g: f64 = (0..inner).map(|l| at(i, l) * at(j, l)).sum();
            worst = worst.max((g - if i == j { gain * gain } else { 0.0 }).abs());
        }
    }
    worst
}

#[test]
fn layers_are_orthogonal_with_the_ppo_gains_and_zero_biases() {
    let p = CategoricalPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(3),
    )
    .expect("p");
    let v = ValueNet::new(
        4,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(3),
    )
    .expect("v");
    for (net, head_gain) in [(p.mlp(), GAIN_POLICY_HEAD), (v.mlp(), GAIN_VALUE_HEAD)] {
        let n = net.layers().len();
        for (i, l) in net.layers().iter().enumerate() {
            let w = host(l.weight().as_tensor());
            let gain = if i + 1 == n { head_gain } else { GAIN_HIDDEN };
            let e = gram_error(&w, l.out_features(), l.in_features(), gain);
            assert!(e < 1e-5, "layer {i}: |WWᵀ − g²I| = {e}");
            assert!(host(l.bias().as_tensor()).iter().all(|&b| b == 0.0));
        }
    }
    let g = DiagGaussianPolicy::new(
        4,
        3,
        &MlpConfig::default(),
        DType::F64,
        &Device::Cpu,
        &mut rng(3),
    )
    .expect("g");
    assert_eq!(
        host(g.log_std().expect("log_std").as_tensor()),
        vec![0.0; 3]
    );
}

#[test]
fn same_seed_gives_identical_parameters() {
    let cfg = MlpConfig::default();
    let make = |seed| {
        CategoricalPolicy::new(4, 2, &cfg, DType::F32, &Device::Cpu, &mut rng(seed)).expect("p")
    };
    assert_eq!(
        make(9).get_flat().expect("a"),
        make(9).get_flat().expect("b")
    );
    assert_ne!(
        make(9).get_flat().expect("a"),
        make(10).get_flat().expect("b")
    );
    let g = |seed| {
        DiagGaussianPolicy::new(3, 1, &cfg, DType::F64, &Device::Cpu, &mut rng(seed)).expect("g")
    };
    assert_eq!(g(4).get_flat().expect("a"), g(4).get_flat().expect("b"));
    let v = |seed| ValueNet::new(3, &cfg, DType::F64, &Device::Cpu, &mut rng(seed)).expect("v");
    assert_eq!(
        klrl_policy::flat::get_flat(&v(4).vars()).expect("a"),
        klrl_policy::flat::get_flat(&v(4).vars()).expect("b")
    );
}

#[test]
fn parameter_counts_and_flat_order() {
    let p = CategoricalPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("p");
    assert_eq!(p.num_params(), 4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2);
    let names: Vec<String> = p.named_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "policy.0.weight",
            "policy.0.bias",
            "policy.1.weight",
            "policy.1.bias",
            "policy.2.weight",
            "policy.2.bias"
        ]
    );
    let g = DiagGaussianPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("g");
    assert_eq!(g.num_params(), p.num_params() + 2);
    // flat order: the last two entries are log_std
    let mut g = g;
    let mut theta = g.get_flat().expect("flat");
    let n = theta.len();
    theta[n - 2] = 0.5;
    theta[n - 1] = -0.25;
    g.set_flat(&theta).expect("set");
    assert_eq!(
        host(g.log_std().expect("log_std").as_tensor()),
        vec![0.5, -0.25]
    );
    // the first entries are policy.0.weight row-major
    let w = host(g.mlp().layers()[0].weight().as_tensor());
    assert_eq!(&theta[..w.len()], &w[..]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut p = CategoricalPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("p");
    // observation width
    let wide = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).expect("t");
    let err = p.dist(&wide, None).expect_err("width");
    assert!(
        matches!(
            err,
            PolicyError::Shape {
                what: "observations",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("[N, 4]") && err.to_string().contains("[3, 5]"),
        "{err}"
    );
    // dtype
    let f64_obs = Tensor::zeros((3, 4), DType::F64, &Device::Cpu).expect("t");
    assert!(matches!(
        p.dist(&f64_obs, None),
        Err(PolicyError::DType { .. })
    ));
    // 1-D observations
    let flat = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("t");
    assert!(matches!(
        p.dist(&flat, None),
        Err(PolicyError::Shape { .. })
    ));
    assert!(p.obs_tensor(&[0.0; 7]).is_err());
    // mask of the wrong size
    let obs = p.obs_tensor(&[0.0; 8]).expect("obs");
    let m = ActionMask::new(vec![true; 6], 2).expect("m");
    assert!(matches!(
        p.dist(&obs, Some(&m)),
        Err(PolicyError::Mask { .. })
    ));
    // flat vectors: wrong length or NaN leave the parameters unchanged
    let before = p.get_flat().expect("flat");
    assert!(matches!(
        p.set_flat(&before[1..]),
        Err(PolicyError::FlatLength { .. })
    ));
    let mut nan = before.clone();
    nan[100] = f64::NAN;
    assert!(matches!(
        p.set_flat(&nan),
        Err(PolicyError::NonFinite { index: 100, .. })
    ));
    assert_eq!(p.get_flat().expect("flat"), before);
    // a non-scalar loss
    let d = p.dist(&obs, None).expect("d");
    assert!(matches!(
        p.flat_grad(&d.entropy().expect("h")),
        Err(PolicyError::Shape { .. })
    ));
    // configurations
    let zero = MlpConfig {
        hidden: vec![64, 0],
        activation: Activation::Tanh,
    };
    assert!(CategoricalPolicy::new(4, 2, &zero, DType::F32, &Device::Cpu, &mut rng(0)).is_err());
    assert!(CategoricalPolicy::new(
        0,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0)
    )
    .is_err());
    assert!(CategoricalPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::U8,
        &Device::Cpu,
        &mut rng(0)
    )
    .is_err());
    // a Gaussian policy takes no mask
    let g = DiagGaussianPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("g");
    let m2 = ActionMask::new(vec![true; 4], 2).expect("m");
    assert!(matches!(
        g.dist(&obs, Some(&m2)),
        Err(PolicyError::Mask { .. })
    ));
}

#[test]
fn initial_categorical_policy_is_nearly_uniform_and_gradients_flow() {
    let p = CategoricalPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("p");
    let obs = p
        .obs_tensor(&[0.1, -0.2, 0.03, 0.5, 1.0, 2.0, -1.0, 0.0])
        .expect("obs");
    let d = p.dist(&obs, None).expect("d");
    let klrl_policy::Dist::Categorical(c) = &d else {
        panic!("categorical")
    };
    for x in host(&c.probs().expect("p")) {
        assert!((x - 0.5).abs() < 0.05, "initial probability {x}");
    }
    let actions = d
        .sample(&mut rng(1))
        .expect("a")
        .to_tensor(p.dtype(), p.device())
        .expect("t");
    let loss = d.log_prob(&actions).expect("lp").mean_all().expect("m");
    let g = p.flat_grad(&loss).expect("grad");
    assert_eq!(g.len(), p.num_params());
    assert!(g.iter().any(|&x| x != 0.0) && g.iter().all(|x| x.is_finite()));
}

#[test]
fn value_net_and_shared_trunk() {
    let mut r = rng(0);
    let mut p = categorical(Activation::Tanh, 0);
    let v = ValueNet::new(
        OBS_DIM,
        &small_config(Activation::Tanh),
        DType::F64,
        &Device::Cpu,
        &mut r,
    )
    .expect("v");
    let obs = observations(&mut r, DType::F64);
    let out = v.forward(&obs).expect("forward");
    assert_eq!(out.dims(), &[N_STATES]);
    assert!(!v.is_shared());
    assert_eq!(v.unshared_vars().len(), v.vars().len());

    let shared = ValueNet::with_shared_trunk(p.mlp(), &mut r).expect("shared");
    assert!(shared.is_shared());
    assert_eq!(shared.vars().len(), 6);
    assert_eq!(shared.unshared_vars().len(), 2); // the head only
    assert_eq!(shared.num_params(), 3 * 8 + 8 + 8 * 6 + 6 + 6 + 1);
    // the trunk is the policy's: changing the policy changes V
    let before = host(&shared.forward(&obs).expect("v"));
    let theta: Vec<f64> = p
        .get_flat()
        .expect("flat")
        .iter()
        .map(|x| x * 0.5)
        .collect();
    p.set_flat(&theta).expect("set");
    let after = host(&shared.forward(&obs).expect("v"));
    assert!(before.iter().zip(&after).any(|(a, b)| a != b));
    // V's gradient reaches the shared trunk
    let loss = shared
        .forward(&obs)
        .expect("v")
        .sqr()
        .expect("sq")
        .mean_all()
        .expect("m");
    let g = loss.backward().expect("backward");
    assert!(g.get(p.mlp().layers()[0].weight().as_tensor()).is_some());
}

#[test]
fn policy_is_object_safe_and_empty_batches_are_errors() {
    let policies: Vec<Box<dyn Policy>> = vec![
        Box::new(categorical(Activation::Tanh, 1)),
        Box::new(gaussian(Activation::Tanh, 2)),
    ];
    for p in &policies {
        let empty = Tensor::zeros((0, OBS_DIM), DType::F64, &Device::Cpu).expect("empty");
        let v = vec![1.0; p.num_params()];
        assert!(matches!(
            p.fisher_vector_product(&empty, None, &v),
            Err(PolicyError::Shape { .. })
        ));
        assert!(matches!(
            p.dist(&empty, None),
            Err(PolicyError::Shape { .. })
        ));
        let obs = observations(&mut rng(0), DType::F64);
        assert_eq!(p.dist(&obs, None).expect("dist").batch_size(), N_STATES);
    }
}
