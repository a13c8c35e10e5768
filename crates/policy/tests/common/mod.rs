//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use klrl_policy::{
    ActionMask, Activation, CategoricalPolicy, DiagGaussianPolicy, GaussianHead, GaussianStd,
    GsdeConfig, MlpConfig, Policy,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

pub const OBS_DIM: usize = 3;
pub const N_ACTIONS: usize = 4;
pub const ACT_DIM: usize = 2;
pub const N_STATES: usize = 16;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn gaussian_vec(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
        .collect()
}

pub fn small_config(activation: Activation) -> MlpConfig {
    MlpConfig {
        hidden: vec![8, 6],
        activation,
    }
}

/// Observations `[N_STATES, OBS_DIM]` in f64.
pub fn observations(rng: &mut ChaCha8Rng, dtype: DType) -> Tensor {
    let v: Vec<f32> = gaussian_vec(rng, N_STATES * OBS_DIM, 1.0)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Tensor::from_vec(v, (N_STATES, OBS_DIM), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("observation tensor")
}

/// A categorical f64 policy whose parameters are moved away from the
/// near-uniform initialisation so that probabilities are far from uniform.
pub fn categorical(activation: Activation, seed: u64) -> CategoricalPolicy {
    let mut r = rng(seed);
    let mut p = CategoricalPolicy::new(
        OBS_DIM,
        N_ACTIONS,
        &small_config(activation),
        DType::F64,
        &Device::Cpu,
        &mut r,
    )
    .expect("policy");
    let theta: Vec<f64> = p
        .get_flat()
        .expect("flat")
        .iter()
        .zip(gaussian_vec(&mut r, p.num_params(), 0.5))
        .map(|(a, b)| a + b)
        .collect();
    p.set_flat(&theta).expect("set");
    p
}

/// A Gaussian f64 policy with perturbed parameters (log_std ≠ 0).
pub fn gaussian(activation: Activation, seed: u64) -> DiagGaussianPolicy {
    let mut r = rng(seed);
    let mut p = DiagGaussianPolicy::new(
        OBS_DIM,
        ACT_DIM,
        &small_config(activation),
        DType::F64,
        &Device::Cpu,
        &mut r,
    )
    .expect("policy");
    let theta: Vec<f64> = p
        .get_flat()
        .expect("flat")
        .iter()
        .zip(gaussian_vec(&mut r, p.num_params(), 0.5))
        .map(|(a, b)| a + b)
        .collect();
    p.set_flat(&theta).expect("set");
    p
}

/// A random mask over N_STATES × N_ACTIONS with at least one legal action per
/// state, some states with a single legal action.
pub fn mask(seed: u64) -> ActionMask {
    let mut r = rng(seed);
    let mut legal = vec![false; N_STATES * N_ACTIONS];
    for s in 0..N_STATES {
        let keep = r.random_range(0..N_ACTIONS);
        for a in 0..N_ACTIONS {
            legal[s * N_ACTIONS + a] = a == keep || (s % 3 != 0 && r.random::<f64>() < 0.5);
        }
    }
    ActionMask::new(legal, N_ACTIONS).expect("mask")
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&d) / norm(b).max(1e-300)
}

/// ∇θ mean KL(π_old ‖ π_θ) at θ (π_old's distributions fixed), by backward.
pub fn kl_grad<P: Policy>(
    policy: &mut P,
    obs: &Tensor,
    mask: Option<&ActionMask>,
    old: &klrl_policy::Dist,
    theta: &[f64],
) -> Vec<f64> {
    policy.set_flat(theta).expect("set");
    let new = policy.dist(obs, mask).expect("dist");
    let kl = old.kl(&new).expect("kl").mean_all().expect("mean");
    policy.flat_grad(&kl).expect("grad")
}

/// A Gaussian f64 policy with σ from `std` (gSDE or the state-dependent
/// head), `log_std_init` −0.3, every parameter perturbed by N(0, 0.5²) so
/// that the features, σ(s) and (with expln) both branches of σ(L) vary.
pub fn gaussian_with(activation: Activation, std: GaussianStd, seed: u64) -> DiagGaussianPolicy {
    let mut r = rng(seed);
    let head = GaussianHead {
        std,
        log_std_init: -0.3,
    };
    let mut p = DiagGaussianPolicy::with_head(
        OBS_DIM,
        ACT_DIM,
        &small_config(activation),
        &head,
        DType::F64,
        &Device::Cpu,
        &mut r,
    )
    .expect("policy");
    let theta: Vec<f64> = p
        .get_flat()
        .expect("flat")
        .iter()
        .zip(gaussian_vec(&mut r, p.num_params(), 0.5))
        .map(|(a, b)| a + b)
        .collect();
    p.set_flat(&theta).expect("set");
    p
}

/// Every gSDE option combination worth testing, and the state-dependent head,
/// with a label.
pub fn state_dependent_kinds() -> Vec<(GaussianStd, &'static str)> {
    let g = |full_std, use_expln, learn_features| {
        GaussianStd::Gsde(GsdeConfig {
            full_std,
            use_expln,
            learn_features,
        })
    };
    vec![
        (g(true, false, false), "gsde (SB3 defaults)"),
        (g(true, false, true), "gsde learn_features"),
        (g(false, true, false), "gsde row std + expln"),
        (g(false, false, true), "gsde row std + learn_features"),
        (g(true, true, true), "gsde expln + learn_features"),
        (GaussianStd::StateDependent, "state-dependent log-std head"),
    ]
}
