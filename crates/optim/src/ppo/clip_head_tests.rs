//! [`crate::clip_head`] against the candle graph it replaces: the policy
//! loss, the clip fraction, the gradient in the logits and the flat
//! gradient, bit for bit, without and with the reference term of
//! `[algo.reference]`; and whole PPO updates with a reference term (every
//! mode, categorical and Gaussian policies) with the host heads on and off.
//!
//! The oracle is the general path of [`Ppo::minibatch_step`] itself:
//! `dist_with_pullback`, [`Ppo::policy_terms`], `backward()`, the pullback.
//! A linear policy with identity weights and zero bias makes the
//! observations the logits exactly, so that any logits can be tested
//! (uniform, ±50, ties).

use candle_core::{DType, Device, Tensor};
use klrl_policy::{
    Activation, Categorical, CategoricalPolicy, DiagGaussianPolicy, Dist, GaussianHead,
    GaussianStd, MlpConfig, Policy, ValueNet,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Ppo;
use crate::algorithm::Algorithm;
use crate::batch::{Batch, MiniBatch};
use crate::clip_head::{clip_head, clip_head_with, OldKl, RefPenalty};
use crate::config::{PpoConfig, PpoObjective, ReferenceConfig, ReferenceMode};
use crate::losses::{scalars_to_host, trainable_vars};

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

/// π_ref at the minibatch's states: rows of one of several kinds (near
/// π_θ, far from it, equal to it, uniform, nearly deterministic, with ties).
fn reference_at(mb: &MiniBatch, seed: u64) -> Dist {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let (n, a) = mb.obs.dims2().unwrap();
    let z = mb
        .obs
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let mut q = Vec::with_capacity(n * a);
    for row in z.chunks(a) {
        let kind = rng.random_range(0..6);
        let top = rng.random_range(0..a);
        for (j, &z) in row.iter().enumerate() {
            q.push(match kind {
                0 => z + rng.random_range(-0.3..0.3),
                1 => rng.random_range(-20.0..20.0),
                2 => z,
                3 => 0.0,
                4 if j == top => 0.0,
                4 => -30.0,
                _ => f64::from(rng.random_range(0..2u8)),
            });
        }
    }
    let logits = Tensor::from_vec(q, (n, a), &Device::Cpu)
        .unwrap()
        .to_dtype(mb.obs.dtype())
        .unwrap();
    Dist::Categorical(Categorical::from_logits(&logits, None).unwrap())
}

fn check(n: usize, a: usize, dtype: DType, clip_eps: f64, seed: u64) {
    check_with_reference(n, a, dtype, clip_eps, seed, None);
}

/// The host head against the graph, with the reference term of coefficient
/// `ref_coef` to a random π_ref if given.
fn check_with_reference(
    n: usize,
    a: usize,
    dtype: DType,
    clip_eps: f64,
    seed: u64,
    ref_coef: Option<f64>,
) {
    let policy = identity_policy(a, dtype);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let value = ValueNet::new(a, &MlpConfig::default(), dtype, &Device::Cpu, &mut rng).unwrap();
    let config = PpoConfig {
        objective: PpoObjective::Clip,
        clip_eps,
        ent_coef: 0.0,
        reference: ref_coef.map(|coef| ReferenceConfig {
            coef,
            ..ReferenceConfig::default()
        }),
        ..PpoConfig::default()
    };
    let ppo = Ppo::new(config, &policy, &value);
    let mut mb = minibatch(n, a, dtype, &policy, seed);
    if ref_coef.is_some() {
        mb.reference = Some(reference_at(&mb, seed));
    }
    let ctx = format!("n = {n}, A = {a}, {dtype:?}, ε = {clip_eps}, seed {seed}, c = {ref_coef:?}");
    assert!(ppo.host_clip_head(&policy, &mb), "host head: {ctx}");

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
        ppo.host_reference(&mb)
            .map(|(r, coef)| RefPenalty::of(r, coef).expect("a categorical reference")),
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
fn clip_head_with_a_reference_matches_the_candle_graph_bit_for_bit() {
    // c: the default 0.1, 1, the adaptive and dual coefficients' clamps
    // (1e-4, 1e3) and values between them as dual ascent leaves them
    // (exp of a sum of steps), and 0 (no term).
    let coefs = [
        0.1,
        1.0,
        1e-4,
        1e3,
        0.0,
        0.5f64.exp() * 0.1,
        0.73 * 0.1f64.exp(),
    ];
    let mut seed = 200;
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 7, 256, 513] {
            for a in [2, 3, 6] {
                for &coef in &coefs {
                    seed += 1;
                    check_with_reference(n, a, dtype, 0.2, seed, Some(coef));
                }
            }
        }
    }
}

#[test]
fn clip_head_with_a_reference_matches_with_wide_rows() {
    // 20: the recommender's number of movies (MovieRec-v0's default); A ≥
    // 32: the KL's row sums in candle's blocked f32 order too.
    for (i, a) in [20, 31, 32, 33, 70].into_iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            for coef in [0.1, 3.7] {
                check_with_reference(65, a, dtype, 0.2, 300 + i as u64, Some(coef));
                check_with_reference(256, a, dtype, 0.1, 310 + i as u64, Some(coef));
            }
        }
    }
}

#[test]
fn clip_head_rejects_out_of_range_actions() {
    let policy = identity_policy(3, DType::F32);
    let mut mb = minibatch(4, 3, DType::F32, &policy, 7);
    mb.actions = Tensor::from_vec(vec![0u32, 1, 3, 2], 4, &Device::Cpu).unwrap();
    let (logits, _) = policy.logits_with_pullback(&mb.obs).unwrap().unwrap();
    let err = clip_head(
        &logits,
        &mb.actions,
        &mb.old_log_probs,
        &mb.advantages,
        0.2,
        None,
    );
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

/// A batch of `n` random transitions of `policy` (actions drawn from it; the
/// recorded log-probabilities are recomputed by the update) with π_ref, the
/// frozen `reference` network, at its states.
fn batch_with_reference(
    policy: &dyn Policy,
    reference: &dyn Policy,
    n: usize,
    update: u64,
    rng: &mut ChaCha8Rng,
) -> Batch {
    let obs_dim = policy.obs_dim();
    let obs: Vec<f32> = (0..n * obs_dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let obs_tensor = policy.obs_tensor(&obs).unwrap();
    let actions = policy
        .dist_detached(&obs_tensor, None)
        .unwrap()
        .sample(rng)
        .unwrap();
    Batch {
        obs_dim,
        obs,
        actions,
        old_log_probs: vec![0.0; n],
        old_values: (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        advantages: (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
        returns: (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect(),
        masks: None,
        progress: 0.25,
        update,
        reference: Some(reference.dist_detached(&obs_tensor, None).unwrap()),
    }
}

/// A policy from a seed.
type MakePolicy<'a> = dyn Fn(u64) -> Box<dyn Policy> + 'a;

/// Three PPO updates of the policy `make` builds from a seed (3
/// observations) with the reference term `reference` (π_ref: the initial
/// policy, or another network far from it), with the host heads on and
/// forced off: the diagnostics (the reference's columns included), the
/// parameters, Adam's state and the reference term's state must be the
/// same bits.
fn reference_updates_match(
    make: &MakePolicy<'_>,
    reference: &ReferenceConfig,
    initial: bool,
    minibatch_size: usize,
    label: &str,
) {
    let net = MlpConfig {
        hidden: vec![32, 32],
        activation: Activation::Tanh,
    };
    let mut pi_ref = make(if initial { 22 } else { 23 });
    if !initial {
        // far from the policy: KLs of tenths of a nat, updates that start
        // outside a tight ball
        let theta: Vec<f64> = pi_ref.get_flat().unwrap().iter().map(|x| 3.0 * x).collect();
        pi_ref.set_flat(&theta).unwrap();
    }
    let run = |graph_head_only: bool| {
        let mut policy = make(22);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let dtype = policy.dtype();
        let mut value = ValueNet::new(3, &net, dtype, &Device::Cpu, &mut rng).unwrap();
        let config = PpoConfig {
            objective: PpoObjective::Clip,
            clip_eps: 0.2,
            ent_coef: 0.0,
            n_epochs: 4,
            minibatch_size,
            lr: 3e-3,
            reference: Some(reference.clone()),
            ..PpoConfig::default()
        };
        let mut ppo = Ppo::new(config, policy.as_ref(), &value);
        ppo.graph_head_only = graph_head_only;
        let mut diagnostics = Vec::new();
        for update in 0..3 {
            let b = batch_with_reference(policy.as_ref(), pi_ref.as_ref(), 300, update, &mut rng);
            let d = ppo
                .update(policy.as_mut(), &mut value, &b, &mut rng)
                .unwrap();
            diagnostics.extend(d.values());
        }
        let theta = klrl_policy::flat::get_flat(&trainable_vars(policy.as_ref(), &value)).unwrap();
        (theta, ppo.state(), diagnostics)
    };
    let (host_theta, host_state, host_diag) = run(false);
    let (graph_theta, graph_state, graph_diag) = run(true);
    let flat_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        flat_bits(&host_diag),
        flat_bits(&graph_diag),
        "{label}: diagnostics"
    );
    assert_eq!(
        flat_bits(&host_theta),
        flat_bits(&graph_theta),
        "{label}: parameters"
    );
    for key in ["adam_m", "adam_v"] {
        assert_eq!(
            flat_bits(&host_state.vectors[key]),
            flat_bits(&graph_state.vectors[key]),
            "{label}: {key}"
        );
    }
    for key in ["ref_coef", "ref_last_end", "ref_shift_ms"] {
        assert_eq!(
            host_state.scalars[key].to_bits(),
            graph_state.scalars[key].to_bits(),
            "{label}: {key}"
        );
    }
}

#[test]
fn ppo_updates_with_a_reference_are_the_same_with_the_host_head() {
    let penalty = ReferenceConfig::default();
    let adaptive = ReferenceConfig {
        mode: ReferenceMode::Adaptive,
        coef: 0.5,
        target: Some(0.02),
        ..ReferenceConfig::default()
    };
    let constraint = ReferenceConfig {
        mode: ReferenceMode::Constraint,
        max_kl: Some(0.05),
        ..ReferenceConfig::default()
    };
    // Another network as π_ref with a tight bound: updates that start
    // outside the ball (the restoration) and pull-backs.
    let tight = ReferenceConfig {
        mode: ReferenceMode::Constraint,
        max_kl: Some(0.01),
        coef: 2.0,
        ..ReferenceConfig::default()
    };
    let net = MlpConfig {
        hidden: vec![32, 32],
        activation: Activation::Tanh,
    };
    for dtype in [DType::F32, DType::F64] {
        // Categorical policies with A actions (20: the recommender's) and a
        // Gaussian one with a state-independent σ and 2 action dimensions;
        // minibatches of 64 (the last one partial) or the whole batch.
        let net = &net;
        let categorical = |a: usize| {
            move |seed| -> Box<dyn Policy> {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                Box::new(CategoricalPolicy::new(3, a, net, dtype, &Device::Cpu, &mut rng).unwrap())
            }
        };
        let gaussian = |seed| -> Box<dyn Policy> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let head = GaussianHead {
                std: GaussianStd::StateIndependent,
                log_std_init: -0.5,
            };
            Box::new(
                DiagGaussianPolicy::with_head(3, 2, net, &head, dtype, &Device::Cpu, &mut rng)
                    .unwrap(),
            )
        };
        let policies: [(&str, &MakePolicy<'_>, usize); 4] = [
            ("A = 2", &categorical(2), 64),
            ("A = 4", &categorical(4), 300),
            ("A = 20", &categorical(20), 64),
            ("Gaussian d = 2", &gaussian, 64),
        ];
        for (policy, make, mb) in policies {
            for (name, reference, initial) in [
                ("penalty", &penalty, true),
                ("penalty, another network", &penalty, false),
                ("adaptive", &adaptive, false),
                ("constraint", &constraint, true),
                ("tight constraint, another network", &tight, false),
            ] {
                let label = format!("{name}, {policy}, minibatch {mb}, {dtype:?}");
                reference_updates_match(make, reference, initial, mb, &label);
            }
        }
    }
}

/// The host head with KL(π_old ‖ π_θ) (π_old a random categorical, some rows
/// equal to π_θ) against the graph of `objective` (β `beta`), with the
/// reference term of coefficient `ref_coef` if given and the KL reported
/// if `want_kl`: loss, clip fraction, KL, ∂/∂logits and the flat gradient,
/// bit for bit.
#[allow(clippy::too_many_arguments)]
fn check_old_kl(
    n: usize,
    a: usize,
    dtype: DType,
    objective: PpoObjective,
    beta: f64,
    ref_coef: Option<f64>,
    want_kl: bool,
    seed: u64,
) {
    let clip_eps = 0.2;
    let policy = identity_policy(a, dtype);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let value = ValueNet::new(a, &MlpConfig::default(), dtype, &Device::Cpu, &mut rng).unwrap();
    let config = PpoConfig {
        objective,
        clip_eps,
        ent_coef: 0.0,
        beta,
        reference: ref_coef.map(|coef| ReferenceConfig {
            coef,
            ..ReferenceConfig::default()
        }),
        ..PpoConfig::default()
    };
    let mut ppo = Ppo::new(config, &policy, &value);
    ppo.beta = beta;
    let mut mb = minibatch(n, a, dtype, &policy, seed);
    if ref_coef.is_some() {
        mb.reference = Some(reference_at(&mb, seed));
    }
    let Dist::Categorical(old) = reference_at(&mb, seed ^ 0x01d) else {
        unreachable!()
    };
    let ctx = format!(
        "n = {n}, A = {a}, {dtype:?}, {objective:?}, β = {beta}, c = {ref_coef:?}, \
         KL asked {want_kl}, seed {seed}"
    );
    assert!(ppo.host_clip_head(&policy, &mb), "host head: {ctx}");

    // The candle graph.
    let (dist, pullback) = policy.dist_with_pullback(&mb.obs, None).unwrap();
    let old_dist = Dist::Categorical(old.clone());
    let p = ppo
        .policy_terms(&dist, &mb, &old_dist, clip_eps, want_kl, false)
        .unwrap();
    let mut report = vec![&p.objective, &p.policy];
    report.extend(p.clip_frac.as_ref());
    report.extend(p.kl.as_ref());
    let host = scalars_to_host(&report).unwrap();
    let grads = p.objective.backward().unwrap();
    let d_logits = grads.get(pullback.outputs().as_tensor()).unwrap();
    let flat = pullback.flat_grad(&grads).unwrap();

    // The host head.
    let (logits, host_pullback) = policy.logits_with_pullback(&mb.obs).unwrap().unwrap();
    let penalises = objective.penalises();
    let head = clip_head_with(
        &logits,
        &mb.actions,
        &mb.old_log_probs,
        &mb.advantages,
        clip_eps,
        objective.clips(),
        (penalises || want_kl).then_some(OldKl {
            log_probs: old.log_probs(),
            beta: penalises.then_some(ppo.beta),
        }),
        ppo.host_reference(&mb)
            .map(|(r, coef)| RefPenalty::of(r, coef).expect("a categorical reference")),
    )
    .unwrap();
    let host_flat = host_pullback
        .flat_grad_from_outputs(Some(&head.d_logits), None)
        .unwrap();

    let mut want = vec![head.policy_loss, head.policy_loss];
    if objective.clips() {
        want.push(head.clip_frac);
    } else {
        assert!(p.clip_frac.is_none(), "{ctx}");
    }
    want.extend(head.kl);
    let to_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(to_bits(&want), to_bits(&host), "scalars: {ctx}");
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
    assert_eq!(to_bits(&host_flat), to_bits(&flat), "flat gradient: {ctx}");
}

#[test]
fn clip_head_with_the_kl_penalty_matches_the_candle_graph_bit_for_bit() {
    // β: the default 1, the adaptive rule's clamps (and beyond), values the
    // rules leave (products of 1.5 and 2), 0.
    let betas = [1.0, 3.0, 1e-4, 1e3, 0.0, 1.5f64.powi(3) / 2.0, 0.37];
    let objectives = [
        PpoObjective::KlPenalty,
        PpoObjective::KlAdaptive,
        PpoObjective::ClipKlAdaptive,
        PpoObjective::KlDual,
    ];
    let mut seed = 500;
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 7, 256, 513] {
            for a in [2, 3, 6] {
                for (k, &beta) in betas.iter().enumerate() {
                    seed += 1;
                    let objective = objectives[k % objectives.len()];
                    check_old_kl(n, a, dtype, objective, beta, None, false, seed);
                    check_old_kl(n, a, dtype, objective, beta, None, true, seed);
                    let c = Some([0.1, 2.0][k % 2]);
                    check_old_kl(n, a, dtype, objective, beta, c, k % 3 == 0, seed);
                }
                // clip with the KL asked for (a stop rule): measured only
                seed += 1;
                check_old_kl(n, a, dtype, PpoObjective::Clip, 1.0, None, true, seed);
                check_old_kl(n, a, dtype, PpoObjective::Clip, 1.0, Some(0.3), true, seed);
            }
        }
    }
}

#[test]
fn clip_head_with_the_kl_penalty_matches_with_wide_rows() {
    for (i, a) in [20, 31, 32, 33, 70].into_iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let seed = 600 + i as u64;
            for objective in [PpoObjective::KlAdaptive, PpoObjective::ClipKlAdaptive] {
                check_old_kl(65, a, dtype, objective, 1.7, None, true, seed);
                check_old_kl(256, a, dtype, objective, 0.3, Some(0.1), false, seed);
            }
        }
    }
}

/// Three PPO updates with objective `objective` (and `max_kl` /
/// `early_stop_kl` if given) of a categorical policy with A actions, host
/// head on and forced off: diagnostics, parameters, Adam's state and β the
/// same bits.
fn penalised_updates_match(
    objective: PpoObjective,
    a: usize,
    dtype: DType,
    minibatch_size: usize,
    limits: (Option<f64>, Option<f64>),
) {
    let net = MlpConfig {
        hidden: vec![32, 32],
        activation: Activation::Tanh,
    };
    let label =
        format!("{objective:?}, A = {a}, {dtype:?}, minibatch {minibatch_size}, {limits:?}");
    let run = |graph_head_only: bool| {
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let mut policy = CategoricalPolicy::new(3, a, &net, dtype, &Device::Cpu, &mut rng).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut value = ValueNet::new(3, &net, dtype, &Device::Cpu, &mut rng).unwrap();
        let config = PpoConfig {
            objective,
            clip_eps: 0.2,
            ent_coef: 0.0,
            n_epochs: 4,
            minibatch_size,
            lr: 3e-3,
            kl_target: 0.003,
            max_kl: limits.0,
            early_stop_kl: limits.1,
            ..PpoConfig::default()
        };
        let mut ppo = Ppo::new(config, &policy, &value);
        ppo.graph_head_only = graph_head_only;
        let mut diagnostics = Vec::new();
        let mut betas = Vec::new();
        for update in 0..3 {
            let mut b = batch_with_reference(&policy, &policy, 300, update, &mut rng);
            b.reference = None;
            let d = ppo.update(&mut policy, &mut value, &b, &mut rng).unwrap();
            diagnostics.extend(d.values());
            betas.push(ppo.beta());
        }
        let theta = klrl_policy::flat::get_flat(&trainable_vars(&policy, &value)).unwrap();
        (theta, ppo.state(), diagnostics, betas)
    };
    let (host_theta, host_state, host_diag, host_beta) = run(false);
    let (graph_theta, graph_state, graph_diag, graph_beta) = run(true);
    let flat_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        flat_bits(&host_diag),
        flat_bits(&graph_diag),
        "{label}: diagnostics"
    );
    assert_eq!(
        flat_bits(&host_theta),
        flat_bits(&graph_theta),
        "{label}: parameters"
    );
    assert_eq!(flat_bits(&host_beta), flat_bits(&graph_beta), "{label}: β");
    for key in ["adam_m", "adam_v"] {
        assert_eq!(
            flat_bits(&host_state.vectors[key]),
            flat_bits(&graph_state.vectors[key]),
            "{label}: {key}"
        );
    }
}

#[test]
fn ppo_updates_with_the_kl_penalty_are_the_same_with_the_host_head() {
    for dtype in [DType::F32, DType::F64] {
        for (a, mb) in [(2, 64), (4, 300), (20, 64)] {
            for objective in [
                PpoObjective::KlAdaptive,
                PpoObjective::KlPenalty,
                PpoObjective::ClipKlAdaptive,
                PpoObjective::KlDual,
            ] {
                penalised_updates_match(objective, a, dtype, mb, (None, None));
            }
            penalised_updates_match(PpoObjective::KlAdaptive, a, dtype, mb, (Some(0.01), None));
            penalised_updates_match(PpoObjective::Clip, a, dtype, mb, (Some(0.01), Some(0.005)));
        }
    }
}
