//! PPO and the vanilla policy gradient compute their gradient without
//! candle's backward through the networks (the policy's output pullback and
//! the value network's reverse pass). One update of each must move the
//! parameters exactly as one Adam step on the gradient of a plain
//! `backward()` of the documented loss (`Ppo::loss` / `VanillaPg::loss`),
//! in f64, for categorical (with and without action masks) and Gaussian
//! policies on 64-64 tanh networks.
//!
//! Adam's ε is set far above the gradients' size so that its first step,
//! lr · g / (|g| + ε), is proportional to the gradient (with the usual ε it
//! would be lr · sign(g) and hide any error in the gradient's size).

use candle_core::{DType, Device};
use klrl_optim::adam::Adam;
use klrl_optim::batch::Batch;
use klrl_optim::losses::trainable_vars;
use klrl_optim::{Algorithm, PgConfig, Ppo, PpoConfig, PpoObjective, VanillaPg};
use klrl_policy::{flat, CategoricalPolicy, DiagGaussianPolicy, MlpConfig, Policy, ValueNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const OBS_DIM: usize = 4;
const N: usize = 48;
/// Adam's ε: the first step is then lr · g / (|g| + ε) ≈ lr · g / ε.
const ADAM_EPS: f64 = 1e3;

/// A batch of `N` random transitions whose recorded log-probabilities are the
/// policy's own plus noise, so that ratios differ from 1 and some are clipped.
fn batch(policy: &dyn Policy, masked: Option<usize>, rng: &mut ChaCha8Rng) -> Batch {
    let obs: Vec<f32> = (0..N * OBS_DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let masks = masked.map(|n_actions| {
        let mut legal = vec![false; N * n_actions];
        for s in 0..N {
            let keep = rng.random_range(0..n_actions);
            for a in 0..n_actions {
                legal[s * n_actions + a] = a == keep || rng.random::<f64>() < 0.5;
            }
        }
        legal
    });
    let mask = masks
        .as_ref()
        .map(|m| klrl_policy::ActionMask::new(m.clone(), m.len() / N).expect("mask"));
    let obs_t = policy.obs_tensor(&obs).expect("obs");
    let dist = policy.dist(&obs_t, mask.as_ref()).expect("dist");
    let actions = dist.sample(rng).expect("sample");
    let lp = dist
        .log_prob(
            &actions
                .to_tensor(DType::F64, &Device::Cpu)
                .expect("actions"),
        )
        .expect("log_prob")
        .to_vec1::<f64>()
        .expect("to host");
    Batch {
        obs_dim: OBS_DIM,
        obs,
        actions,
        old_log_probs: lp
            .iter()
            .map(|&x| (x + rng.random_range(-0.4..0.4)) as f32)
            .collect(),
        old_values: (0..N).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        advantages: (0..N).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
        returns: (0..N).map(|_| rng.random_range(-3.0f32..3.0)).collect(),
        masks,
        progress: 0.25,
        update: 0,
        reference: None,
    }
}

fn value_net(rng: &mut ChaCha8Rng) -> ValueNet {
    ValueNet::new(
        OBS_DIM,
        &MlpConfig::default(),
        DType::F64,
        &Device::Cpu,
        rng,
    )
    .expect("value")
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>();
    (d / n).sqrt()
}

/// θ after one Adam step of `lr` from θ on the clipped gradient `grad`.
fn adam_step(theta: &[f64], mut grad: Vec<f64>, lr: f64, eps: f64, max_norm: f64) -> Vec<f64> {
    klrl_optim::adam::clip_grad_norm(&mut grad, max_norm);
    let mut theta = theta.to_vec();
    Adam::new(theta.len(), eps).step(&mut theta, &grad, lr);
    theta
}

/// One PPO update (one epoch, one minibatch) against one Adam step on the
/// backward of `Ppo::loss`.
fn check_ppo(policy: &mut dyn Policy, masked: Option<usize>, objective: PpoObjective, label: &str) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut value = value_net(&mut rng);
    let b = batch(policy, masked, &mut rng);
    let config = PpoConfig {
        objective,
        n_epochs: 1,
        minibatch_size: N,
        beta: 0.7,
        ent_coef: 0.01,
        lr: 1.0,
        adam_eps: ADAM_EPS,
        lr_anneal: true,
        clip_anneal: false,
        max_grad_norm: 0.5,
        ..PpoConfig::default()
    };
    let vars = trainable_vars(policy, &value);
    let theta0 = flat::get_flat(&vars).expect("θ");

    // the reference: backward of the documented loss
    let reference = {
        let algo = Ppo::new(config.clone(), policy, &value);
        let mut mb = b
            .minibatch(policy, None, config.normalize_advantages)
            .expect("mb");
        let old = policy
            .dist(&mb.obs, mb.mask.as_ref())
            .expect("old")
            .detach();
        // The update recomputes log π_old from π_old (the batch's copy is ignored).
        mb.old_log_probs = old.log_prob(&mb.actions).expect("log π_old");
        let loss = algo
            .loss(policy, &value, &mb, &old, config.clip_eps, false)
            .expect("loss");
        let grad = flat::flat_grad(&vars, &loss.total).expect("backward");
        adam_step(
            &theta0,
            grad,
            config.lr * 0.75,
            config.adam_eps,
            config.max_grad_norm,
        )
    };

    let mut algo = Ppo::new(config, policy, &value);
    let d = algo
        .update(policy, &mut value, &b, &mut rng)
        .expect("update");
    assert_eq!(d.epochs_run, 1.0, "{label}");
    let after = flat::get_flat(&trainable_vars(policy, &value)).expect("θ'");
    let moved: Vec<f64> = after.iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let expected: Vec<f64> = reference.iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let e = rel_err(&moved, &expected);
    eprintln!("{label}: relative error of the step {e:e}");
    assert!(e <= 1e-10, "{label}: relative error of the step {e:e}");
}

#[test]
fn ppo_categorical_step_equals_backward_step() {
    for objective in [PpoObjective::Clip, PpoObjective::ClipKlAdaptive] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut p = CategoricalPolicy::new(
            OBS_DIM,
            3,
            &MlpConfig::default(),
            DType::F64,
            &Device::Cpu,
            &mut rng,
        )
        .expect("policy");
        check_ppo(
            &mut p,
            None,
            objective,
            &format!("categorical {objective:?}"),
        );
    }
}

#[test]
fn ppo_masked_categorical_step_equals_backward_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut p = CategoricalPolicy::new(
        OBS_DIM,
        4,
        &MlpConfig::default(),
        DType::F64,
        &Device::Cpu,
        &mut rng,
    )
    .expect("policy");
    check_ppo(
        &mut p,
        Some(4),
        PpoObjective::KlAdaptive,
        "masked categorical",
    );
}

#[test]
fn ppo_gaussian_step_equals_backward_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut p = DiagGaussianPolicy::new(
        OBS_DIM,
        2,
        &MlpConfig::default(),
        DType::F64,
        &Device::Cpu,
        &mut rng,
    )
    .expect("policy");
    check_ppo(&mut p, None, PpoObjective::Clip, "gaussian");
}

#[test]
fn vanilla_pg_step_equals_backward_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut policy = DiagGaussianPolicy::new(
        OBS_DIM,
        2,
        &MlpConfig::default(),
        DType::F64,
        &Device::Cpu,
        &mut rng,
    )
    .expect("policy");
    let mut value = value_net(&mut rng);
    let b = batch(&policy, None, &mut rng);
    let config = PgConfig {
        ent_coef: 0.01,
        lr: 1.0,
        adam_eps: ADAM_EPS,
        ..PgConfig::default()
    };
    let vars = trainable_vars(&policy, &value);
    let theta0 = flat::get_flat(&vars).expect("θ");
    let reference = {
        let algo = VanillaPg::new(config.clone(), &policy, &value);
        let mb = b
            .minibatch(&policy, None, config.normalize_advantages)
            .expect("mb");
        let loss = algo.loss(&policy, &value, &mb).expect("loss");
        let grad = flat::flat_grad(&vars, &loss.total).expect("backward");
        adam_step(
            &theta0,
            grad,
            config.lr,
            config.adam_eps,
            config.max_grad_norm,
        )
    };
    let mut algo = VanillaPg::new(config, &policy, &value);
    algo.update(&mut policy, &mut value, &b, &mut rng)
        .expect("update");
    let after = flat::get_flat(&trainable_vars(&policy, &value)).expect("θ'");
    let moved: Vec<f64> = after.iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let expected: Vec<f64> = reference.iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let e = rel_err(&moved, &expected);
    eprintln!("vanilla PG: relative error of the step {e:e}");
    assert!(e <= 1e-10, "vanilla PG: relative error of the step {e:e}");
}
