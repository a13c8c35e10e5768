//! KL limits that hold: the hard limit `max_kl` of PPO (every objective) and
//! of the vanilla policy gradient, and the projection's per-state bound, on
//! random batches with random advantages and learning rates up to absurd
//! ones. The KL is recomputed here independently of the optimiser (π_old's
//! and π_new's distributions from the policy, the KL summed in f64 in this
//! file), and a rejected update must leave the policy's parameters and Adam
//! moments bit for bit as they were.

use candle_core::{DType, Device};
use klrl_optim::batch::Batch;
use klrl_optim::{Algorithm, PgConfig, Ppo, PpoConfig, PpoObjective, VanillaPg};
use klrl_policy::{Activation, CategoricalPolicy, DiagGaussianPolicy, MlpConfig, Policy, ValueNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const OBS: usize = 3;

fn mlp() -> MlpConfig {
    MlpConfig {
        hidden: vec![16, 16],
        activation: Activation::Tanh,
    }
}

/// A random batch of `n` states collected by `policy` (actions sampled from
/// it, log-probabilities recorded as the collector does), with advantages of
/// scale `adv_scale`.
fn random_batch(policy: &dyn Policy, n: usize, adv_scale: f32, rng: &mut ChaCha8Rng) -> Batch {
    let obs: Vec<f32> = (0..n * OBS).map(|_| rng.random_range(-2.0..2.0)).collect();
    let t = policy.obs_tensor(&obs).unwrap();
    let dist = policy.dist(&t, None).unwrap();
    let actions = dist.sample(rng).unwrap();
    let a = actions.to_tensor(policy.dtype(), policy.device()).unwrap();
    let log_probs: Vec<f32> = dist
        .log_prob(&a)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let advantages: Vec<f32> = (0..n)
        .map(|_| adv_scale * rng.random_range(-1.0f32..1.0))
        .collect();
    Batch {
        obs_dim: OBS,
        obs,
        actions,
        old_log_probs: log_probs,
        old_values: vec![0.0; n],
        returns: advantages.clone(),
        advantages,
        masks: None,
        progress: 0.0,
        update: 0,
        reference: None,
    }
}

/// Per-state KL(π_before ‖ π_now) over the batch states, recomputed here.
fn per_state_kl(before: &klrl_policy::Dist, policy: &dyn Policy, batch: &Batch) -> Vec<f64> {
    let t = policy.obs_tensor(&batch.obs).unwrap();
    let now = policy.dist(&t, None).unwrap();
    before
        .kl(&now)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn categorical(seed: u64) -> Box<dyn Policy> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Box::new(CategoricalPolicy::new(OBS, 4, &mlp(), DType::F32, &Device::Cpu, &mut rng).unwrap())
}

fn gaussian(seed: u64) -> Box<dyn Policy> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Box::new(DiagGaussianPolicy::new(OBS, 2, &mlp(), DType::F32, &Device::Cpu, &mut rng).unwrap())
}

fn value(seed: u64) -> ValueNet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
    ValueNet::new(OBS, &mlp(), DType::F32, &Device::Cpu, &mut rng).unwrap()
}

/// Every PPO objective with `max_kl`, categorical and Gaussian policies,
/// learning rates from ordinary to absurd, several minibatches per epoch or
/// one: no update's recomputed mean KL is above the limit, the reported one
/// is the recomputed one, and `kl_limit` reports the limit.
#[test]
fn ppo_hard_limit_is_never_exceeded() {
    let objectives = [
        PpoObjective::Clip,
        PpoObjective::KlPenalty,
        PpoObjective::KlAdaptive,
        PpoObjective::KlDual,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut cases, mut cut, mut rejected) = (0, 0, 0);
    for (k, objective) in objectives.into_iter().enumerate() {
        for (j, lr) in [1e-3, 3e-2, 1.0, 1e3].into_iter().enumerate() {
            for gaussian_policy in [false, true] {
                let seed = (k * 10 + j) as u64;
                let mut policy = if gaussian_policy {
                    gaussian(seed)
                } else {
                    categorical(seed)
                };
                let mut v = value(seed);
                let max_kl = [0.001, 0.01, 0.05][(k + j) % 3];
                let config = PpoConfig {
                    objective,
                    lr,
                    max_kl: Some(max_kl),
                    n_epochs: 5,
                    minibatch_size: [32, 128][j % 2],
                    ..PpoConfig::default()
                };
                let mut ppo = Ppo::new(config, policy.as_ref(), &v);
                for update in 0..3 {
                    let mut batch = random_batch(policy.as_ref(), 128, 10.0, &mut rng);
                    batch.update = update;
                    let t = policy.obs_tensor(&batch.obs).unwrap();
                    let before = policy.dist(&t, None).unwrap().detach();
                    let d = ppo
                        .update(policy.as_mut(), &mut v, &batch, &mut rng)
                        .unwrap();
                    let kl = per_state_kl(&before, policy.as_ref(), &batch);
                    let mean = kl.iter().sum::<f64>() / kl.len() as f64;
                    assert!(
                        mean <= max_kl,
                        "{objective:?} lr {lr}: mean KL {mean} > {max_kl}"
                    );
                    assert_eq!(d.kl_old_new, mean, "reported vs recomputed");
                    assert_eq!(d.kl_limit, max_kl);
                    assert!((0.0..=1.0).contains(&d.step_frac), "{}", d.step_frac);
                    cases += 1;
                    cut += usize::from(d.step_frac < 1.0);
                    rejected += usize::from(d.step_frac == 0.0);
                }
            }
        }
    }
    eprintln!("{cases} updates, {cut} pulled back, {rejected} restored to θ_old");
    // The absurd learning rates must have exercised the pull-back.
    assert!(cut >= cases / 4, "only {cut} of {cases} updates were cut");
}

/// A learning rate so large that no point of the segment θ_old → θ that
/// the search tries is within the limit: θ_old and the policy's Adam moments
/// come back bit for bit; the value network (no limit) keeps its step.
#[test]
fn a_rejected_update_restores_parameters_and_adam_moments_bit_for_bit() {
    for gaussian_policy in [false, true] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut policy = if gaussian_policy {
            gaussian(3)
        } else {
            categorical(3)
        };
        let mut v = value(3);
        let config = PpoConfig {
            objective: PpoObjective::Clip,
            lr: 1e-3,
            max_kl: Some(1e-3),
            n_epochs: 1,
            minibatch_size: 64,
            ..PpoConfig::default()
        };
        let mut ppo = Ppo::new(config.clone(), policy.as_ref(), &v);
        // One ordinary update first, so the moments are not all zero.
        let batch = random_batch(policy.as_ref(), 64, 1.0, &mut rng);
        ppo.update(policy.as_mut(), &mut v, &batch, &mut rng)
            .unwrap();
        let theta = policy.get_flat().unwrap();
        let value_theta = klrl_policy::flat::get_flat(&v.vars()).unwrap();
        let state = ppo.state();
        let k = theta.len();

        let mut absurd = Ppo::new(PpoConfig { lr: 1e30, ..config }, policy.as_ref(), &v);
        absurd.load_state(&state).unwrap();
        let mut batch = random_batch(policy.as_ref(), 64, 1.0, &mut rng);
        batch.update = 1;
        let d = absurd
            .update(policy.as_mut(), &mut v, &batch, &mut rng)
            .unwrap();
        assert_eq!(d.step_frac, 0.0, "gaussian {gaussian_policy}");
        assert_eq!(d.accepted, 0.0);
        assert_eq!(d.kl_old_new, 0.0);
        let after = policy.get_flat().unwrap();
        assert!(
            after
                .iter()
                .zip(&theta)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "parameters differ after a rejected update"
        );
        let s = absurd.state();
        let (m0, v0) = (&state.vectors["adam_m"], &state.vectors["adam_v"]);
        let (m1, v1) = (&s.vectors["adam_m"], &s.vectors["adam_v"]);
        for i in 0..k {
            assert_eq!(m0[i].to_bits(), m1[i].to_bits(), "adam_m[{i}]");
            assert_eq!(v0[i].to_bits(), v1[i].to_bits(), "adam_v[{i}]");
        }
        // The value network's part stepped.
        assert!(m0[k..] != m1[k..]);
        assert_ne!(klrl_policy::flat::get_flat(&v.vars()).unwrap(), value_theta);
    }
}

/// The vanilla policy gradient with `max_kl` holds it too.
#[test]
fn vanilla_pg_hard_limit_is_never_exceeded() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (j, lr) in [1e-2, 1.0, 1e4].into_iter().enumerate() {
        let mut policy = categorical(40 + j as u64);
        let mut v = value(40);
        let config = PgConfig {
            lr,
            max_kl: Some(0.01),
            max_grad_norm: f64::INFINITY,
            ..PgConfig::default()
        };
        let mut pg = VanillaPg::new(config, policy.as_ref(), &v);
        for _ in 0..3 {
            let batch = random_batch(policy.as_ref(), 128, 5.0, &mut rng);
            let t = policy.obs_tensor(&batch.obs).unwrap();
            let before = policy.dist(&t, None).unwrap().detach();
            let d = pg
                .update(policy.as_mut(), &mut v, &batch, &mut rng)
                .unwrap();
            let kl = per_state_kl(&before, policy.as_ref(), &batch);
            let mean = kl.iter().sum::<f64>() / kl.len() as f64;
            assert!(mean <= 0.01, "lr {lr}: {mean}");
            assert_eq!(d.kl_old_new, mean);
        }
    }
}

/// The projection objective: every batch state's KL(π_old ‖ π_new) is
/// within ε after every update, for both policy types and absurd learning
/// rates, and `kl_limit` reports ε.
#[test]
fn projection_bounds_every_state_on_every_update() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut cut = 0;
    for (j, lr) in [1e-3, 1e-1, 10.0].into_iter().enumerate() {
        for gaussian_policy in [false, true] {
            let seed = 60 + j as u64;
            let mut policy = if gaussian_policy {
                gaussian(seed)
            } else {
                categorical(seed)
            };
            let mut v = value(seed);
            let eps = 0.02;
            let config = PpoConfig {
                objective: PpoObjective::Projection,
                proj_eps: Some(eps),
                lr,
                n_epochs: 4,
                minibatch_size: 64,
                ..PpoConfig::default()
            };
            let mut ppo = Ppo::new(config, policy.as_ref(), &v);
            for _ in 0..3 {
                let batch = random_batch(policy.as_ref(), 128, 10.0, &mut rng);
                let t = policy.obs_tensor(&batch.obs).unwrap();
                let before = policy.dist(&t, None).unwrap().detach();
                let d = ppo
                    .update(policy.as_mut(), &mut v, &batch, &mut rng)
                    .unwrap();
                let kl = per_state_kl(&before, policy.as_ref(), &batch);
                let worst = kl.iter().cloned().fold(0.0, f64::max);
                assert!(worst <= eps, "lr {lr}: a state's KL {worst} > {eps}");
                assert_eq!(d.kl_max, worst);
                assert_eq!(d.kl_limit, eps);
                cut += usize::from(d.step_frac < 1.0);
            }
        }
    }
    assert!(cut > 0, "no update needed the final pull-back");
}
