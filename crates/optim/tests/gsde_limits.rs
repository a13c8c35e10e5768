//! The KL limits hold for policies with a state-dependent σ (gSDE with and
//! without learned features, the state-dependent log-std head): PPO's hard
//! `max_kl`, the projection's per-state ε and TRPO's line search, on random
//! batches with learning rates up to absurd ones. The KL is recomputed here
//! from the policy's distributions before and after each update (the exact
//! KL as a function of θ, features included).

use candle_core::{DType, Device};
use klrl_optim::batch::Batch;
use klrl_optim::{Algorithm, Ppo, PpoConfig, PpoObjective, Trpo, TrpoConfig};
use klrl_policy::{
    Activation, DiagGaussianPolicy, Dist, GaussianHead, GaussianStd, GsdeConfig, MlpConfig, Policy,
    ValueNet,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const OBS: usize = 3;

fn mlp() -> MlpConfig {
    MlpConfig {
        hidden: vec![16, 16],
        activation: Activation::Tanh,
    }
}

fn kinds() -> [GaussianStd; 3] {
    [
        GaussianStd::Gsde(GsdeConfig::sb3()),
        GaussianStd::Gsde(GsdeConfig {
            learn_features: true,
            ..GsdeConfig::sb3()
        }),
        GaussianStd::StateDependent,
    ]
}

fn policy(std: GaussianStd, seed: u64) -> DiagGaussianPolicy {
    let head = GaussianHead {
        std,
        log_std_init: -0.5,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    DiagGaussianPolicy::with_head(OBS, 2, &mlp(), &head, DType::F32, &Device::Cpu, &mut rng)
        .unwrap()
}

fn value(seed: u64) -> ValueNet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
    ValueNet::new(OBS, &mlp(), DType::F32, &Device::Cpu, &mut rng).unwrap()
}

/// A random batch of `n` states with actions and log-probabilities from
/// `policy` (as the collector records them) and advantages of scale 10.
fn random_batch(policy: &dyn Policy, n: usize, rng: &mut ChaCha8Rng) -> Batch {
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
        .map(|_| 10.0 * rng.random_range(-1.0f32..1.0))
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

fn before(policy: &dyn Policy, batch: &Batch) -> Dist {
    let t = policy.obs_tensor(&batch.obs).unwrap();
    policy.dist(&t, None).unwrap().detach()
}

fn per_state_kl(before: &Dist, policy: &dyn Policy, batch: &Batch) -> Vec<f64> {
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

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn ppo_max_kl_holds_with_a_state_dependent_sigma() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut cut = 0;
    for (k, std) in kinds().into_iter().enumerate() {
        for (j, lr) in [1e-3, 1.0, 1e3].into_iter().enumerate() {
            let seed = (10 * k + j) as u64;
            let mut p = policy(std, seed);
            let mut v = value(seed);
            let config = PpoConfig {
                objective: PpoObjective::Clip,
                lr,
                max_kl: Some(0.01),
                n_epochs: 5,
                minibatch_size: 32,
                ..PpoConfig::default()
            };
            let mut ppo = Ppo::new(config, &p, &v);
            for _ in 0..2 {
                let batch = random_batch(&p, 128, &mut rng);
                let old = before(&p, &batch);
                let d = ppo.update(&mut p, &mut v, &batch, &mut rng).unwrap();
                let kl = mean(&per_state_kl(&old, &p, &batch));
                assert!(kl <= 0.01, "{std:?} lr {lr}: mean KL {kl}");
                assert_eq!(d.kl_old_new, kl, "reported vs recomputed");
                cut += usize::from(d.step_frac < 1.0);
            }
        }
    }
    assert!(
        cut > 0,
        "no update was pulled back: the limit was never tested"
    );
}

#[test]
fn projection_bounds_every_state_with_a_state_dependent_sigma() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (k, std) in kinds().into_iter().enumerate() {
        for (j, lr) in [1e-3, 1e-1, 10.0].into_iter().enumerate() {
            let seed = 40 + (10 * k + j) as u64;
            let mut p = policy(std, seed);
            let mut v = value(seed);
            let config = PpoConfig {
                objective: PpoObjective::Projection,
                proj_eps: Some(0.02),
                lr,
                n_epochs: 4,
                minibatch_size: 64,
                ..PpoConfig::default()
            };
            let mut ppo = Ppo::new(config, &p, &v);
            let batch = random_batch(&p, 128, &mut rng);
            let old = before(&p, &batch);
            let d = ppo.update(&mut p, &mut v, &batch, &mut rng).unwrap();
            let kl = per_state_kl(&old, &p, &batch);
            let worst = kl.iter().cloned().fold(0.0, f64::max);
            assert!(worst <= 0.02, "{std:?} lr {lr}: a state's KL {worst}");
            assert_eq!(d.kl_max, worst);
        }
    }
}

#[test]
fn trpo_accepts_no_step_beyond_max_kl_with_a_state_dependent_sigma() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut accepted = 0;
    for (k, std) in kinds().into_iter().enumerate() {
        let mut p = policy(std, 70 + k as u64);
        let mut v = value(70 + k as u64);
        let mut trpo = Trpo::new(TrpoConfig::default(), true, &v);
        for _ in 0..3 {
            let batch = random_batch(&p, 256, &mut rng);
            let old = before(&p, &batch);
            let theta = p.get_flat().unwrap();
            let d = trpo.update(&mut p, &mut v, &batch, &mut rng).unwrap();
            let kl = mean(&per_state_kl(&old, &p, &batch));
            if d.accepted == 1.0 {
                accepted += 1;
                assert!(kl <= 0.01, "{std:?}: accepted a step with mean KL {kl}");
                assert!(kl > 0.0, "{std:?}: an accepted step that did not move");
            } else {
                assert_eq!(p.get_flat().unwrap(), theta, "{std:?}: not restored");
            }
        }
    }
    assert!(accepted >= 6, "only {accepted} of 9 TRPO steps accepted");
}
