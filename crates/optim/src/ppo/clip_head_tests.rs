//! [`crate::clip_head`] against the candle graph it replaces: the policy
//! loss, the clip fraction, the gradient in the logits and the flat
//! gradient, bit for bit.
//!
//! The oracle is the general path of [`Ppo::minibatch_step`] itself:
//! `dist_with_pullback`, [`Ppo::policy_terms`], `backward()`, the pullback.
//! A linear policy with identity weights and zero bias makes the
//! observations the logits exactly, so that any logits can be tested
//! (uniform, ±50, ties).

use candle_core::{DType, Device, Tensor};
use klrl_policy::{Activation, CategoricalPolicy, MlpConfig, Policy, ValueNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Ppo;
use crate::batch::MiniBatch;
use crate::clip_head::clip_head;
use crate::config::{PpoConfig, PpoObjective};
use crate::losses::scalars_to_host;

/// A policy whose logits are its observations: `z = x Iᵀ + 0`.
fn identity_policy(a: usize, dtype: DType) -> CategoricalPolicy {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let config = MlpConfig {
        hidden: vec![],
        activation: Activation::Tanh,
    };
    let mut p = CategoricalPolicy::new(a, a, &config, dtype, &Device::Cpu, &mut rng).unwrap();
    let mut flat = vec![0.0; a * a + a];
    for i in 0..a {
        flat[i * a + i] = 1.0;
    }
    p.set_flat(&flat).unwrap();
    p
}

/// Random logits of one of several kinds per row, actions, log π_old (log
/// π_θ plus a shift: 0, small, around the clip range, past LOG_RATIO_MAX)
/// and advantages of both signs (some 0).
fn minibatch(n: usize, a: usize, dtype: DType, policy: &dyn Policy, seed: u64) -> MiniBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut z = Vec::with_capacity(n * a);
    for _ in 0..n {
        let kind = rng.random_range(0..5);
        for _ in 0..a {
            z.push(match kind {
                0 => rng.random_range(-1.0..1.0),
                1 => rng.random_range(-50.0..50.0),
                2 => 0.0,                                 // uniform: every entry the max
                3 => f64::from(rng.random_range(0..3u8)), // ties at the max
                _ => rng.random_range(-0.01..0.01),
            });
        }
    }
    let dev = Device::Cpu;
    let obs = Tensor::from_vec(z, (n, a), &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let actions: Vec<u32> = (0..n).map(|_| rng.random_range(0..a as u32)).collect();
    let actions = Tensor::from_vec(actions, n, &dev).unwrap();
    let log_p = policy
        .dist_detached(&obs, None)
        .unwrap()
        .log_prob(&actions)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let old: Vec<f64> = log_p
        .iter()
        .map(|&lp| {
            lp + match rng.random_range(0..5) {
                0 => 0.0,
                1 => rng.random_range(-0.1..0.1),
                2 => rng.random_range(-0.5..0.5),
                3 => rng.random_range(-40.0..40.0),
                _ => rng.random_range(-0.25..0.25),
            }
        })
        .collect();
    let adv: Vec<f64> = (0..n)
        .map(|_| match rng.random_range(0..6) {
            0 => 0.0,
            _ => rng.random_range(-3.0..3.0),
        })
        .collect();
    let t = |v: Vec<f64>| {
        Tensor::from_vec(v, n, &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    MiniBatch {
        len: n,
        obs,
        actions,
        old_log_probs: t(old),
        old_values: t(vec![0.0; n]),
        returns: t(vec![0.0; n]),
        advantages: t(adv),
        mask: None,
        reference: None,
    }
}

/// A host head's loss and clip fraction equal the graph's objective, policy
/// loss and clip fraction (`host`, read back in that order), bit for bit;
/// the Gaussian head's tests use it too.
pub(super) fn assert_head_scalars(policy_loss: f64, clip_frac: f64, host: &[f64], ctx: &str) {
    assert_eq!(policy_loss.to_bits(), host[0].to_bits(), "objective: {ctx}");
    assert_eq!(
        policy_loss.to_bits(),
        host[1].to_bits(),
        "policy loss: {ctx}"
    );
    assert_eq!(
        clip_frac.to_bits(),
        host[2].to_bits(),
        "clip fraction: {ctx}"
    );
}

/// A tensor's elements as bits (f32 widened losslessly), for exact
/// comparisons; the Gaussian head's tests use it too.
pub(super) fn bits(t: &Tensor) -> Vec<u64> {
    let v = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => v
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| u64::from(x.to_bits()))
            .collect(),
        _ => v
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
    }
}

fn check(n: usize, a: usize, dtype: DType, clip_eps: f64, seed: u64) {
    let policy = identity_policy(a, dtype);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let value = ValueNet::new(a, &MlpConfig::default(), dtype, &Device::Cpu, &mut rng).unwrap();
    let config = PpoConfig {
        objective: PpoObjective::Clip,
        clip_eps,
        ent_coef: 0.0,
        ..PpoConfig::default()
    };
    let ppo = Ppo::new(config, &policy, &value);
    let mb = minibatch(n, a, dtype, &policy, seed);
    let ctx = format!("n = {n}, A = {a}, {dtype:?}, ε = {clip_eps}, seed {seed}");

    // The candle graph (Ppo::minibatch_step's general path).
    let (dist, pullback) = policy.dist_with_pullback(&mb.obs, None).unwrap();
    let old = dist.detach();
    let p = ppo
        .policy_terms(&dist, &mb, &old, clip_eps, false, false)
        .unwrap();
    let clip_frac = p.clip_frac.as_ref().unwrap();
    let host = scalars_to_host(&[&p.objective, &p.policy, clip_frac]).unwrap();
    let grads = p.objective.backward().unwrap();
    let d_logits = grads.get(pullback.outputs().as_tensor()).unwrap();
    let flat = pullback.flat_grad(&grads).unwrap();

    // The host head.
    let (logits, host_pullback) = policy.logits_with_pullback(&mb.obs).unwrap().unwrap();
    assert_eq!(
        bits(&logits),
        bits(&mb.obs),
        "logits are the observations: {ctx}"
    );
    let head = clip_head(
        &logits,
        &mb.actions,
        &mb.old_log_probs,
        &mb.advantages,
        clip_eps,
    )
    .unwrap();
    let host_flat = host_pullback
        .flat_grad_from_outputs(Some(&head.d_logits), None)
        .unwrap();

    assert_head_scalars(head.policy_loss, head.clip_frac, &host, &ctx);
    assert_eq!(head.d_logits.dims(), d_logits.dims(), "{ctx}");
    assert_eq!(head.d_logits.dtype(), d_logits.dtype(), "{ctx}");
    let (got, want) = (bits(&head.d_logits), bits(d_logits));
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "∂/∂logits differ at {i} (row {}, action {}): host {:#x}, candle {:#x}: {ctx}",
            i / a,
            i % a,
            got[i],
            want[i]
        );
    }
    let flat_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        flat_bits(&host_flat),
        flat_bits(&flat),
        "flat gradient: {ctx}"
    );
}

#[test]
fn clip_head_matches_the_candle_graph_bit_for_bit() {
    let mut seed = 0;
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 7, 256, 2049] {
            for a in [2, 3, 6] {
                for clip_eps in [0.2, 0.1] {
                    seed += 1;
                    check(n, a, dtype, clip_eps, seed);
                }
            }
        }
    }
}

#[test]
fn clip_head_matches_with_wide_rows() {
    // A ≥ 32: candle's f32 row sums take their blocked (AVX2) order.
    for (i, a) in [31, 32, 33, 70].into_iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            check(65, a, dtype, 0.2, 100 + i as u64);
        }
    }
}

#[test]
fn clip_head_rejects_out_of_range_actions() {
    let policy = identity_policy(3, DType::F32);
    let mut mb = minibatch(4, 3, DType::F32, &policy, 7);
    mb.actions = Tensor::from_vec(vec![0u32, 1, 3, 2], 4, &Device::Cpu).unwrap();
    let (logits, _) = policy.logits_with_pullback(&mb.obs).unwrap().unwrap();
    let err = clip_head(&logits, &mb.actions, &mb.old_log_probs, &mb.advantages, 0.2);
    assert!(matches!(
        err,
        Err(crate::OptimError::Policy(
            klrl_policy::PolicyError::ActionOutOfRange {
                action: 3,
                n_actions: 3
            }
        ))
    ));
}
