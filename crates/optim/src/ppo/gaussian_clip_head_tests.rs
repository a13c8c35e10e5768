//! [`crate::gaussian_clip_head`] against the candle graph it replaces: the
//! policy loss, the clip fraction, the gradients in the means and in log σ,
//! and the flat gradient, bit for bit, without and with the reference term
//! of `[algo.reference]`, and with KL(π_old ‖ π_θ) (the KL-penalised
//! objectives, a KL asked for); and whole PPO updates with the host heads on
//! and off (with a reference term: `clip_head_tests.rs`; with the KL
//! penalty and the stop rules: here).
//!
//! The oracle is the general path of [`Ppo::minibatch_step`] itself:
//! `dist_with_pullback`, [`Ppo::policy_terms`], `backward()`, the pullback.
//! A linear policy with identity weights and zero bias makes the
//! observations the means, so that any means can be tested.

use candle_core::{DType, Device, Tensor};
use klrl_policy::{
    Actions, Activation, CategoricalPolicy, DiagGaussian, DiagGaussianPolicy, Dist, GaussianHead,
    GaussianStd, GsdeConfig, MlpConfig, Policy, ValueNet,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::clip_head_tests::{assert_head_scalars, bits};
use super::Ppo;
use crate::algorithm::Algorithm;
use crate::batch::{Batch, MiniBatch};
use crate::config::{PpoConfig, PpoObjective, ReferenceConfig};
use crate::gaussian_clip_head::{
    gaussian_clip_head, gaussian_clip_head_with, GaussianOldKl, GaussianRefPenalty,
};
use crate::losses::{scalars_to_host, trainable_vars};
use crate::OptimError;

/// A policy whose means are its observations (`μ = x Iᵀ + 0`) with the
/// state-independent `log σ = log_std`.
fn identity_policy(log_std: &[f64], dtype: DType) -> DiagGaussianPolicy {
    let d = log_std.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let config = MlpConfig {
        hidden: vec![],
        activation: Activation::Tanh,
    };
    let mut p = DiagGaussianPolicy::new(d, d, &config, dtype, &Device::Cpu, &mut rng).unwrap();
    let mut flat = vec![0.0; d * d + d];
    for i in 0..d {
        flat[i * d + i] = 1.0;
    }
    flat.extend_from_slice(log_std);
    p.set_flat(&flat).unwrap();
    p
}

/// log σ of one of several kinds: all 0 (σ = 1, the initial value), mixed
/// signs, small, with a −0.
fn log_std(d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let kind = rng.random_range(0..4);
    (0..d)
        .map(|j| match kind {
            0 => 0.0,
            1 => rng.random_range(-2.5..1.5),
            2 => rng.random_range(-0.01..0.01),
            _ if j == 0 => -0.0,
            _ => rng.random_range(-1.0..1.0),
        })
        .collect()
}

/// Random means of one of several kinds per row, actions around them (equal
/// to the means, within a few σ, far), log π_old (log π_θ plus a shift: 0,
/// small, the clip range's edges ln(1 ± ε), around them, ±LOG_RATIO_MAX,
/// beyond) and advantages of both signs (some 0).
fn minibatch(
    n: usize,
    policy: &DiagGaussianPolicy,
    clip_eps: f64,
    rng: &mut ChaCha8Rng,
) -> MiniBatch {
    let d = policy.action_dim();
    let dtype = policy.dtype();
    let dev = Device::Cpu;
    let sigma: Vec<f64> = policy
        .log_std()
        .unwrap()
        .as_tensor()
        .to_dtype(DType::F64)
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap()
        .iter()
        .map(|l| l.exp())
        .collect();
    let (mut mu, mut act) = (Vec::with_capacity(n * d), Vec::with_capacity(n * d));
    for _ in 0..n {
        let mean_kind = rng.random_range(0..4);
        let act_kind = rng.random_range(0..5);
        for &s in &sigma {
            let m = match mean_kind {
                0 => rng.random_range(-1.0..1.0),
                1 => rng.random_range(-50.0..50.0),
                2 => 0.0,
                _ => rng.random_range(-0.01..0.01),
            };
            mu.push(m);
            act.push(match act_kind {
                0 => m,
                1 => m + s * rng.random_range(-3.0..3.0),
                2 => m + s * rng.random_range(-0.1..0.1),
                3 => m + s * rng.random_range(-30.0..30.0),
                _ => rng.random_range(-2.0..2.0),
            });
        }
    }
    let t = |v: Vec<f64>, shape: &[usize]| {
        Tensor::from_vec(v, shape, &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    let obs = t(mu, &[n, d]);
    let actions = t(act, &[n, d]);
    let log_p = policy
        .dist_detached(&obs, None)
        .unwrap()
        .log_prob(&actions)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let lo = (1.0 - clip_eps).ln();
    let hi = (1.0 + clip_eps).ln();
    let old: Vec<f64> = log_p
        .iter()
        .map(|&lp| {
            lp - match rng.random_range(0..9) {
                0 => 0.0,
                1 => rng.random_range(-0.1..0.1),
                2 => lo,
                3 => hi,
                4 => lo + rng.random_range(-1e-6..1e-6),
                5 => hi + rng.random_range(-1e-6..1e-6),
                6 => 20.0,
                7 => -20.0,
                _ => rng.random_range(-40.0..40.0),
            }
        })
        .collect();
    let adv: Vec<f64> = (0..n)
        .map(|_| match rng.random_range(0..6) {
            0 => 0.0,
            _ => rng.random_range(-3.0..3.0),
        })
        .collect();
    MiniBatch {
        len: n,
        obs,
        actions,
        old_log_probs: t(old, &[n]),
        old_values: t(vec![0.0; n], &[n]),
        returns: t(vec![0.0; n], &[n]),
        advantages: t(adv, &[n]),
        mask: None,
        reference: None,
    }
}

fn assert_same_bits(got: &Tensor, want: &Tensor, what: &str, ctx: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: {ctx}");
    assert_eq!(got.dtype(), want.dtype(), "{what}: {ctx}");
    let (g, w) = (bits(got), bits(want));
    if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
        panic!(
            "{what} differ at {i}: host {:#x}, candle {:#x}: {ctx}",
            g[i], w[i]
        );
    }
}

/// Counts of the ties the minibatch reaches: r exactly 1 ± ε (the clip's
/// edges), log r exactly ±LOG_RATIO_MAX (the clamp's), r = 1.
#[derive(Debug, Default, Clone, Copy)]
struct Ties {
    clip_edge: usize,
    ratio_bound: usize,
    one: usize,
}

/// π_ref at the minibatch's states: means near π_θ's, far from them or
/// equal (per row), and a log σ of [`log_std`]'s kinds.
fn reference_at(mb: &MiniBatch, rng: &mut ChaCha8Rng) -> Dist {
    let (n, d) = mb.obs.dims2().unwrap();
    let mu = mb
        .obs
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap();
    let mut mu_q = Vec::with_capacity(n * d);
    for row in mu.chunks(d) {
        let kind = rng.random_range(0..3);
        for &m in row {
            mu_q.push(match kind {
                0 => m + rng.random_range(-0.3..0.3),
                1 => rng.random_range(-20.0..20.0),
                _ => m,
            });
        }
    }
    let t = |v: Vec<f64>, shape: &[usize]| {
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(mb.obs.dtype())
            .unwrap()
    };
    let log_std_q = log_std(d, rng);
    Dist::DiagGaussian(DiagGaussian::new(&t(mu_q, &[n, d]), &t(log_std_q, &[d])).unwrap())
}

/// The head against the graph on one minibatch of `n` states and `d`
/// action dimensions.
fn check(n: usize, d: usize, dtype: DType, clip_eps: f64, seed: u64) -> Ties {
    check_with_reference(n, d, dtype, clip_eps, seed, None)
}

/// The head against the graph, with the reference term of coefficient
/// `ref_coef` to a random π_ref if given.
fn check_with_reference(
    n: usize,
    d: usize,
    dtype: DType,
    clip_eps: f64,
    seed: u64,
    ref_coef: Option<f64>,
) -> Ties {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let policy = identity_policy(&log_std(d, &mut rng), dtype);
    let value = ValueNet::new(d, &MlpConfig::default(), dtype, &Device::Cpu, &mut rng).unwrap();
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
    let mut mb = minibatch(n, &policy, clip_eps, &mut rng);
    if ref_coef.is_some() {
        mb.reference = Some(reference_at(&mb, &mut rng));
    }
    let ctx = format!("n = {n}, d = {d}, {dtype:?}, ε = {clip_eps}, seed {seed}, c = {ref_coef:?}");
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
    let d_mean = grads.get(pullback.outputs().as_tensor()).unwrap();
    let d_log_std = grads.get(pullback.log_std().unwrap().as_tensor()).unwrap();
    let flat = pullback.flat_grad(&grads).unwrap();

    // The host head.
    let (mean, log_std, host_pullback) = policy.gaussian_with_pullback(&mb.obs).unwrap().unwrap();
    assert_eq!(bits(&mean), bits(pullback.outputs().as_tensor()), "{ctx}");
    assert_eq!(
        bits(&log_std),
        bits(pullback.log_std().unwrap().as_tensor()),
        "{ctx}"
    );
    let head = gaussian_clip_head(
        &mean,
        &log_std,
        &mb.actions,
        &mb.old_log_probs,
        &mb.advantages,
        clip_eps,
        ppo.host_reference(&mb).map(|(r, coef)| {
            let Dist::DiagGaussian(r) = r else {
                panic!("a Gaussian reference")
            };
            GaussianRefPenalty {
                mean: r.mean(),
                log_std: r.log_std(),
                coef,
            }
        }),
    )
    .unwrap();
    let host_flat = host_pullback
        .flat_grad_from_outputs(Some(&head.d_mean), Some(&head.d_log_std))
        .unwrap();

    assert_head_scalars(head.policy_loss, head.clip_frac, &host, &ctx);
    assert_same_bits(&head.d_mean, d_mean, "∂/∂μ", &ctx);
    assert_same_bits(&head.d_log_std, d_log_std, "∂/∂log σ", &ctx);
    let flat_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        flat_bits(&host_flat),
        flat_bits(&flat),
        "flat gradient: {ctx}"
    );
    ties(&dist, &mb, clip_eps)
}

/// The ties of [`Ties`] in the minibatch, with candle's ops.
fn ties(dist: &klrl_policy::Dist, mb: &MiniBatch, clip_eps: f64) -> Ties {
    let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let log_r = (dist.log_prob(&mb.actions).unwrap() - &mb.old_log_probs).unwrap();
    let ratio = log_r
        .clamp(-super::LOG_RATIO_MAX, super::LOG_RATIO_MAX)
        .and_then(|x| x.exp())
        .unwrap();
    // the edges as the dtype holds them
    let edge = |x: f64| {
        f64s(
            &Tensor::new(&[x], &Device::Cpu)
                .unwrap()
                .to_dtype(mb.obs.dtype())
                .unwrap(),
        )[0]
    };
    let (lo, hi) = (edge(1.0 - clip_eps), edge(1.0 + clip_eps));
    let mut t = Ties::default();
    for (r, l) in f64s(&ratio).into_iter().zip(f64s(&log_r)) {
        t.clip_edge += usize::from(r == lo || r == hi);
        t.ratio_bound += usize::from(l.abs() == super::LOG_RATIO_MAX);
        t.one += usize::from(r == 1.0);
    }
    t
}

#[test]
fn gaussian_clip_head_matches_the_candle_graph_bit_for_bit() {
    let mut seed = 1000;
    let mut ties = Ties::default();
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 2, 7, 31, 32, 33, 64, 257, 2049] {
            for d in 1..=6 {
                for clip_eps in [0.2, 0.1] {
                    seed += 1;
                    let t = check(n, d, dtype, clip_eps, seed);
                    ties.clip_edge += t.clip_edge;
                    ties.ratio_bound += t.ratio_bound;
                    ties.one += t.one;
                }
            }
        }
    }
    // The cases the gradient rules single out were reached.
    eprintln!("ties: {ties:?}");
    assert!(ties.clip_edge > 0 && ties.ratio_bound > 0 && ties.one > 0);
}

#[test]
fn gaussian_clip_head_with_a_reference_matches_the_candle_graph_bit_for_bit() {
    // c: the default 0.1, 1, the clamps of the adaptive and dual
    // coefficients (1e-4, 1e3), values between as dual ascent leaves them,
    // and 0 (no term).
    let coefs = [
        0.1,
        1.0,
        1e-4,
        1e3,
        0.0,
        0.5f64.exp() * 0.1,
        0.73 * 0.1f64.exp(),
    ];
    let mut seed = 5000;
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 7, 33, 64, 257] {
            for d in [1, 2, 3, 6] {
                for &coef in &coefs {
                    seed += 1;
                    check_with_reference(n, d, dtype, 0.2, seed, Some(coef));
                }
            }
        }
        // wide actions: the KL's row sums in candle's blocked f32 order
        for d in [31, 32, 40] {
            seed += 1;
            check_with_reference(65, d, dtype, 0.2, seed, Some(0.3));
        }
    }
}

#[test]
fn gaussian_with_pullback_is_for_a_state_independent_sigma_only() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let obs = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    for std in [
        GaussianStd::Gsde(GsdeConfig::sb3()),
        GaussianStd::StateDependent,
    ] {
        let head = GaussianHead {
            std,
            log_std_init: 0.0,
        };
        let p = DiagGaussianPolicy::with_head(
            3,
            2,
            &MlpConfig::default(),
            &head,
            DType::F32,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap();
        assert!(p.gaussian_with_pullback(&obs).unwrap().is_none(), "{std:?}");
    }
    let categorical = CategoricalPolicy::new(
        3,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng,
    )
    .unwrap();
    assert!(categorical.gaussian_with_pullback(&obs).unwrap().is_none());
}

#[test]
fn gaussian_clip_head_rejects_mismatched_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let policy = identity_policy(&[0.0, 0.5], DType::F32);
    let mb = minibatch(4, &policy, 0.2, &mut rng);
    let (mean, log_std, _) = policy.gaussian_with_pullback(&mb.obs).unwrap().unwrap();
    let wrong_log_std = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let f64_adv = mb.advantages.to_dtype(DType::F64).unwrap();
    let short_old = mb.old_log_probs.narrow(0, 0, 3).unwrap();
    let cases = [
        (&mean, &wrong_log_std, &mb.old_log_probs, &mb.advantages),
        (&mean, &log_std, &mb.old_log_probs, &f64_adv),
        (&mean, &log_std, &short_old, &mb.advantages),
    ];
    for (m, l, old, adv) in cases {
        let err = gaussian_clip_head(m, l, &mb.actions, old, adv, 0.2, None);
        assert!(matches!(err, Err(OptimError::Mismatch(_))), "{err:?}");
    }
    // π_old's means or log σ of the wrong shape or dtype (a per-state σ)
    let short_mean = mean.narrow(0, 0, 3).unwrap();
    let per_state = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
    let f64_log_std = log_std.to_dtype(DType::F64).unwrap();
    for (m, l) in [
        (&short_mean, &log_std),
        (&mean, &per_state),
        (&mean, &f64_log_std),
    ] {
        let old_kl = GaussianOldKl {
            mean: m,
            log_std: l,
            beta: Some(1.0),
        };
        let err = gaussian_clip_head_with(
            &mean,
            &log_std,
            &mb.actions,
            &mb.old_log_probs,
            &mb.advantages,
            0.2,
            false,
            Some(old_kl),
            None,
        );
        assert!(matches!(err, Err(OptimError::Mismatch(_))), "{err:?}");
    }
}

/// A batch of `n` random transitions for `policy` (actions drawn from it;
/// the recorded log-probabilities are recomputed by the update).
fn batch(policy: &dyn Policy, n: usize, rng: &mut ChaCha8Rng) -> Batch {
    let obs_dim = policy.obs_dim();
    let obs: Vec<f32> = (0..n * obs_dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let dist = policy
        .dist_detached(&policy.obs_tensor(&obs).unwrap(), None)
        .unwrap();
    let mut actions = dist.sample(rng).unwrap();
    if let Actions::Continuous { values, .. } = &mut actions {
        // wider than π: some ratios move far enough to be clipped
        values.iter_mut().for_each(|v| *v *= 1.5);
    }
    Batch {
        obs_dim,
        obs,
        actions,
        old_log_probs: vec![0.0; n],
        old_values: (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        advantages: (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
        returns: (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect(),
        masks: None,
        progress: 0.5,
        update: 3,
        reference: None,
    }
}

/// Two PPO updates (several epochs of minibatches, the last one partial) of
/// the policy `make` builds, with the host heads on and forced off: the
/// parameters, Adam's state and the diagnostics must be the same bits.
fn update_with_and_without_host_head(make: &dyn Fn() -> Box<dyn Policy>, label: &str) {
    let run = |graph_head_only: bool| {
        let mut policy = make();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let config = MlpConfig {
            hidden: vec![16, 16],
            activation: Activation::Tanh,
        };
        let (obs_dim, dtype) = (policy.obs_dim(), policy.dtype());
        let mut value = ValueNet::new(obs_dim, &config, dtype, &Device::Cpu, &mut rng).unwrap();
        let ppo_config = PpoConfig {
            objective: PpoObjective::Clip,
            clip_eps: 0.2,
            ent_coef: 0.0,
            n_epochs: 4,
            minibatch_size: 64,
            lr: 3e-3,
            ..PpoConfig::default()
        };
        let mut ppo = Ppo::new(ppo_config, policy.as_ref(), &value);
        ppo.graph_head_only = graph_head_only;
        let mut diagnostics = Vec::new();
        for update in 0..2 {
            let mut b = batch(policy.as_ref(), 300, &mut rng);
            b.update = update;
            let d = ppo
                .update(policy.as_mut(), &mut value, &b, &mut rng)
                .unwrap();
            diagnostics.extend([d.policy_loss, d.value_loss, d.clip_frac, d.grad_norm]);
            diagnostics.extend([d.kl_old_new, d.epochs_run]);
        }
        let theta = klrl_policy::flat::get_flat(&trainable_vars(policy.as_ref(), &value)).unwrap();
        let state = ppo.state();
        (theta, state, diagnostics)
    };
    let (host_theta, host_state, host_diag) = run(false);
    let (graph_theta, graph_state, graph_diag) = run(true);
    let flat_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        flat_bits(&host_diag),
        flat_bits(&graph_diag),
        "{label}: diagnostics"
    );
    assert!(host_diag[2] > 0.0, "{label}: some samples clipped");
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
}

#[test]
fn ppo_updates_are_the_same_with_the_host_heads() {
    let net = MlpConfig {
        hidden: vec![32, 32],
        activation: Activation::Tanh,
    };
    for dtype in [DType::F32, DType::F64] {
        let gaussian = || -> Box<dyn Policy> {
            let mut rng = ChaCha8Rng::seed_from_u64(21);
            let head = GaussianHead {
                std: GaussianStd::StateIndependent,
                log_std_init: -0.5,
            };
            Box::new(
                DiagGaussianPolicy::with_head(3, 2, &net, &head, dtype, &Device::Cpu, &mut rng)
                    .unwrap(),
            )
        };
        update_with_and_without_host_head(&gaussian, &format!("gaussian {dtype:?}"));
        let categorical = || -> Box<dyn Policy> {
            let mut rng = ChaCha8Rng::seed_from_u64(22);
            Box::new(CategoricalPolicy::new(3, 4, &net, dtype, &Device::Cpu, &mut rng).unwrap())
        };
        update_with_and_without_host_head(&categorical, &format!("categorical {dtype:?}"));
    }
}

/// π_old at the minibatch's states for the KL(π_old ‖ π_θ) checks: means
/// near π_θ's, far or equal (per row, [`reference_at`]), and a log σ of
/// [`log_std`]'s kinds or π_θ's own.
fn old_at(mb: &MiniBatch, policy: &DiagGaussianPolicy, rng: &mut ChaCha8Rng) -> DiagGaussian {
    let Dist::DiagGaussian(old) = reference_at(mb, rng) else {
        unreachable!()
    };
    if rng.random_range(0..4) == 0 {
        let own = policy.log_std().unwrap().as_tensor().clone();
        return DiagGaussian::new(old.mean(), &own).unwrap();
    }
    old
}

/// The host head with KL(π_old ‖ π_θ) (a random π_old) against the graph of
/// `objective` (β `beta`), with the reference term of coefficient
/// `ref_coef` if given and the KL reported if `want_kl`: loss, clip
/// fraction, KL, ∂/∂μ, ∂/∂log σ and the flat gradient, bit for bit; and
/// the step's routing takes the host head.
#[allow(clippy::too_many_arguments)]
fn check_old_kl(
    n: usize,
    d: usize,
    dtype: DType,
    objective: PpoObjective,
    beta: f64,
    ref_coef: Option<f64>,
    want_kl: bool,
    seed: u64,
) {
    let clip_eps = 0.2;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let policy = identity_policy(&log_std(d, &mut rng), dtype);
    let value = ValueNet::new(d, &MlpConfig::default(), dtype, &Device::Cpu, &mut rng).unwrap();
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
    let mut mb = minibatch(n, &policy, clip_eps, &mut rng);
    if ref_coef.is_some() {
        mb.reference = Some(reference_at(&mb, &mut rng));
    }
    let old = old_at(&mb, &policy, &mut rng);
    let ctx = format!(
        "n = {n}, d = {d}, {dtype:?}, {objective:?}, β = {beta}, c = {ref_coef:?}, \
         KL asked {want_kl}, seed {seed}"
    );
    assert!(ppo.host_clip_head(&policy, &mb), "host head: {ctx}");
    let penalises = objective.penalises();
    let old_dist = Dist::DiagGaussian(old.clone());
    let routed = super::host_loss_head(
        &policy,
        &mb,
        clip_eps,
        objective.clips(),
        (penalises || want_kl).then_some((&old_dist, penalises.then_some(beta))),
        ppo.host_reference(&mb),
    )
    .unwrap();
    assert!(routed.is_some(), "routed to the host head: {ctx}");

    // The candle graph.
    let (dist, pullback) = policy.dist_with_pullback(&mb.obs, None).unwrap();
    let p = ppo
        .policy_terms(&dist, &mb, &old_dist, clip_eps, want_kl, false)
        .unwrap();
    let mut report = vec![&p.objective, &p.policy];
    report.extend(p.clip_frac.as_ref());
    report.extend(p.kl.as_ref());
    let host = scalars_to_host(&report).unwrap();
    let grads = p.objective.backward().unwrap();
    let d_mean = grads.get(pullback.outputs().as_tensor()).unwrap();
    let d_log_std = grads.get(pullback.log_std().unwrap().as_tensor()).unwrap();
    let flat = pullback.flat_grad(&grads).unwrap();

    // The host head.
    let (mean, log_std, host_pullback) = policy.gaussian_with_pullback(&mb.obs).unwrap().unwrap();
    let head = gaussian_clip_head_with(
        &mean,
        &log_std,
        &mb.actions,
        &mb.old_log_probs,
        &mb.advantages,
        clip_eps,
        objective.clips(),
        (penalises || want_kl).then_some(GaussianOldKl {
            mean: old.mean(),
            log_std: old.log_std(),
            beta: penalises.then_some(ppo.beta),
        }),
        ppo.host_reference(&mb).map(|(r, coef)| {
            let Dist::DiagGaussian(r) = r else {
                panic!("a Gaussian reference")
            };
            GaussianRefPenalty {
                mean: r.mean(),
                log_std: r.log_std(),
                coef,
            }
        }),
    )
    .unwrap();
    let host_flat = host_pullback
        .flat_grad_from_outputs(Some(&head.d_mean), Some(&head.d_log_std))
        .unwrap();

    let mut want = vec![head.policy_loss, head.policy_loss];
    if objective.clips() {
        want.push(head.clip_frac);
    } else {
        assert!(p.clip_frac.is_none(), "{ctx}");
    }
    assert_eq!(head.kl.is_some(), p.kl.is_some(), "{ctx}");
    want.extend(head.kl);
    let to_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(to_bits(&want), to_bits(&host), "scalars: {ctx}");
    assert_same_bits(&head.d_mean, d_mean, "∂/∂μ", &ctx);
    assert_same_bits(&head.d_log_std, d_log_std, "∂/∂log σ", &ctx);
    assert_eq!(to_bits(&host_flat), to_bits(&flat), "flat gradient: {ctx}");
}

#[test]
fn gaussian_clip_head_with_the_kl_penalty_matches_the_candle_graph_bit_for_bit() {
    // β: the default 1, the adaptive rule's clamps (and beyond), values the
    // rules leave (products of 1.5 and 2), 0.
    let betas = [1.0, 3.0, 1e-4, 1e3, 0.0, 1.5f64.powi(3) / 2.0, 0.37];
    let objectives = [
        PpoObjective::KlPenalty,
        PpoObjective::KlAdaptive,
        PpoObjective::ClipKlAdaptive,
        PpoObjective::KlDual,
    ];
    let mut seed = 7000;
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 7, 33, 256, 513] {
            for d in 1..=6 {
                for (k, &beta) in betas.iter().enumerate() {
                    seed += 1;
                    let objective = objectives[(k + d) % objectives.len()];
                    check_old_kl(n, d, dtype, objective, beta, None, false, seed);
                    check_old_kl(n, d, dtype, objective, beta, None, true, seed);
                    let c = Some([0.1, 2.0][k % 2]);
                    check_old_kl(n, d, dtype, objective, beta, c, k % 3 == 0, seed);
                }
                // clip with the KL asked for (a stop rule): measured only
                seed += 1;
                check_old_kl(n, d, dtype, PpoObjective::Clip, 1.0, None, true, seed);
                check_old_kl(n, d, dtype, PpoObjective::Clip, 1.0, Some(0.3), true, seed);
            }
        }
    }
}

#[test]
fn gaussian_clip_head_with_the_kl_penalty_matches_with_wide_actions() {
    // the KL's row sums and K's sum in candle's blocked f32 order
    for (i, d) in [20, 31, 32, 33, 40].into_iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let seed = 7900 + i as u64;
            for objective in [PpoObjective::KlAdaptive, PpoObjective::ClipKlAdaptive] {
                check_old_kl(65, d, dtype, objective, 1.7, None, true, seed);
                check_old_kl(256, d, dtype, objective, 0.3, Some(0.1), false, seed);
            }
        }
    }
}

#[test]
fn gaussian_old_kl_with_a_state_dependent_sigma_keeps_the_graph() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let policy = identity_policy(&[0.1, -0.2], DType::F32);
    let mb = minibatch(5, &policy, 0.2, &mut rng);
    let Dist::DiagGaussian(old) = reference_at(&mb, &mut rng) else {
        unreachable!()
    };
    let per_state = Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
    let old = Dist::DiagGaussian(DiagGaussian::new(old.mean(), &per_state).unwrap());
    let routed = super::host_loss_head(&policy, &mb, 0.2, false, Some((&old, Some(1.0))), None);
    assert!(routed.unwrap().is_none());
}

/// Three PPO updates with objective `objective` (and `max_kl` /
/// `early_stop_kl` if given, and a reference term to the initial policy if
/// `reference`) of a Gaussian policy with a state-independent σ and d
/// action dimensions, host head on and forced off: diagnostics,
/// parameters, Adam's state and β the same bits.
fn penalised_updates_match(
    objective: PpoObjective,
    d: usize,
    dtype: DType,
    minibatch_size: usize,
    limits: (Option<f64>, Option<f64>),
    reference: bool,
) {
    let net = MlpConfig {
        hidden: vec![32, 32],
        activation: Activation::Tanh,
    };
    let label = format!(
        "{objective:?}, d = {d}, {dtype:?}, minibatch {minibatch_size}, {limits:?}, \
         reference {reference}"
    );
    let make = || {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let head = GaussianHead {
            std: GaussianStd::StateIndependent,
            log_std_init: -0.5,
        };
        DiagGaussianPolicy::with_head(3, d, &net, &head, dtype, &Device::Cpu, &mut rng).unwrap()
    };
    let pi_ref = make();
    let run = |graph_head_only: bool| {
        let mut policy = make();
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
            reference: reference.then(|| ReferenceConfig {
                coef: 0.5,
                ..ReferenceConfig::default()
            }),
            ..PpoConfig::default()
        };
        let mut ppo = Ppo::new(config, &policy, &value);
        ppo.graph_head_only = graph_head_only;
        let mut diagnostics = Vec::new();
        let mut betas = Vec::new();
        for update in 0..3 {
            let mut b = batch(&policy, 300, &mut rng);
            b.update = update;
            if reference {
                let obs = policy.obs_tensor(&b.obs).unwrap();
                b.reference = Some(pi_ref.dist_detached(&obs, None).unwrap());
            }
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
fn gaussian_ppo_updates_with_the_kl_penalty_are_the_same_with_the_host_head() {
    for dtype in [DType::F32, DType::F64] {
        for (d, mb) in [(1, 64), (2, 300), (6, 64)] {
            for objective in [
                PpoObjective::KlAdaptive,
                PpoObjective::KlPenalty,
                PpoObjective::ClipKlAdaptive,
                PpoObjective::KlDual,
            ] {
                penalised_updates_match(objective, d, dtype, mb, (None, None), false);
            }
            let (kl_limit, stop) = ((Some(0.01), None), (Some(0.01), Some(0.005)));
            penalised_updates_match(PpoObjective::KlAdaptive, d, dtype, mb, kl_limit, false);
            penalised_updates_match(PpoObjective::Clip, d, dtype, mb, stop, false);
            penalised_updates_match(PpoObjective::KlAdaptive, d, dtype, mb, (None, None), true);
        }
    }
}
