//! Vanilla policy gradient: the loss against the hand-derived gradient on a
//! one-state categorical policy, its diagnostics and state, and learning on
//! MovieRec-v0 and CartPole-v1 (release mode, fixed seeds).

use std::path::Path;

use candle_core::{DType, Device};
use klrl_envs::{Actions as EnvActions, Registry, VecEnv};
use klrl_optim::batch::Batch;
use klrl_optim::{ExperimentConfig, PgConfig, Trainer, UpdateDiagnostics, VanillaPg};
use klrl_policy::{flat, Actions, Activation, CategoricalPolicy, MlpConfig, Policy, ValueNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn linear() -> MlpConfig {
    MlpConfig {
        hidden: vec![],
        activation: Activation::Tanh,
    }
}

fn config(file: &str) -> ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn loss_and_gradient_match_the_hand_derivation() {
    // One state x = 1, no hidden layer: logits z_k = w_k + b_k, p = softmax(z).
    // ∂/∂z_k of −mean_i log p_{a_i} Â_i is −mean_i Â_i (δ_{k a_i} − p_k);
    // the value V = u + c has ∂/∂[u, c] of mean (V − R)² = mean 2 (V − R).
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let policy =
        CategoricalPolicy::new(1, 2, &linear(), DType::F64, &Device::Cpu, &mut rng).unwrap();
    let mut policy = policy;
    let z = [0.4, -0.3];
    policy.set_flat(&[z[0], z[1], 0.0, 0.0]).unwrap();
    let value = ValueNet::new(1, &linear(), DType::F64, &Device::Cpu, &mut rng).unwrap();
    flat::set_flat(&value.vars(), &[0.5, 0.25]).unwrap();
    let actions = [0usize, 1, 1];
    let adv = [2.0f32, -1.0, 0.5];
    let ret = [1.0f32, 0.0, 2.0];
    let batch = Batch {
        obs_dim: 1,
        obs: vec![1.0; 3],
        actions: Actions::Discrete(actions.to_vec()),
        old_log_probs: vec![0.0; 3],
        old_values: vec![0.0; 3],
        advantages: adv.to_vec(),
        returns: ret.to_vec(),
        masks: None,
        progress: 0.0,
        update: 0,
        reference: None,
    };
    let config = PgConfig {
        vf_coef: 0.5,
        ent_coef: 0.01,
        ..PgConfig::default()
    };
    let algo = VanillaPg::new(config, &policy, &value);
    let mb = batch.minibatch(&policy, None, false).unwrap();
    let loss = algo.loss(&policy, &value, &mb).unwrap();

    let (e0, e1) = (z[0].exp(), z[1].exp());
    let p = [e0 / (e0 + e1), e1 / (e0 + e1)];
    let n = 3.0;
    let mut expected_policy = 0.0;
    let mut dz = [0.0; 2];
    for (&a, &ad) in actions.iter().zip(&adv) {
        expected_policy -= p[a].ln() * ad as f64 / n;
        for (k, d) in dz.iter_mut().enumerate() {
            let delta = if k == a { 1.0 } else { 0.0 };
            *d -= ad as f64 * (delta - p[k]) / n;
        }
    }
    let scalar = |t: &candle_core::Tensor| t.to_scalar::<f64>().unwrap();
    assert!((scalar(&loss.policy) - expected_policy).abs() < 1e-12);
    let v = 0.75;
    let expected_value = ret.iter().map(|&r| (v - r as f64).powi(2)).sum::<f64>() / n;
    assert!((scalar(&loss.value) - expected_value).abs() < 1e-12);
    let entropy = -(p[0] * p[0].ln() + p[1] * p[1].ln());
    assert!((scalar(&loss.entropy) - entropy).abs() < 1e-12);
    assert!(
        (scalar(&loss.total) - (expected_policy + 0.5 * expected_value - 0.01 * entropy)).abs()
            < 1e-12
    );
    let g = policy.flat_grad(&loss.policy).unwrap();
    for (got, want) in g.iter().zip([dz[0], dz[1], dz[0], dz[1]]) {
        assert!((got - want).abs() < 1e-12, "{g:?} vs {dz:?}");
    }
    let gv = flat::flat_grad(&value.vars(), &loss.value).unwrap();
    let dv = ret.iter().map(|&r| 2.0 * (v - r as f64)).sum::<f64>() / n;
    assert!((gv[0] - dv).abs() < 1e-12 && (gv[1] - dv).abs() < 1e-12);
}

fn cartpole_pg() -> ExperimentConfig {
    toml::from_str(
        "[env]\nname = \"CartPole-v1\"\n[train]\nn_envs = 4\nn_steps = 16\nseed = 3\n\
         [algo]\nname = \"vanilla-pg\"\nlr = 1e-3\n",
    )
    .unwrap()
}

#[test]
fn one_step_per_batch_with_the_documented_diagnostics() {
    let mut t = Trainer::from_config(cartpole_pg(), &Registry::builtin()).unwrap();
    assert_eq!(t.algo.name(), "vanilla-pg");
    let before = t.policy.get_flat().unwrap();
    let d = t.update().unwrap().diagnostics;
    for (name, v) in UpdateDiagnostics::COLUMNS.iter().zip(d.values()) {
        let nan_expected = matches!(
            *name,
            "beta"
                | "clip_frac"
                | "cg_iters"
                | "cg_residual"
                | "ls_steps"
                | "kl_limit"
                | "step_frac"
                // no [algo.reference]
                | "kl_ref"
                | "kl_ref_max"
                | "kl_ref_limit"
                | "ref_coef"
        );
        assert_eq!(v.is_nan(), nan_expected, "{name} = {v}");
    }
    assert_eq!(d.epochs_run, 1.0);
    assert_eq!(d.lr, 1e-3);
    assert!(d.kl_old_new > 0.0);
    // One Adam step: every parameter with a gradient moved by at most lr (plus
    // rounding), the first step of Adam being lr · sign(g).
    let after = t.policy.get_flat().unwrap();
    let max_move = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(max_move > 5e-4 && max_move < 1.001e-3, "{max_move}");
    let s = t.algo.state();
    assert_eq!(s.scalar("adam_t").unwrap(), 1.0);
}

#[test]
fn pg_state_round_trip_and_determinism() {
    let mut a = Trainer::from_config(cartpole_pg(), &Registry::builtin()).unwrap();
    let mut b = Trainer::from_config(cartpole_pg(), &Registry::builtin()).unwrap();
    for _ in 0..3 {
        a.update().unwrap();
        b.update().unwrap();
    }
    assert_eq!(a.policy.get_flat().unwrap(), b.policy.get_flat().unwrap());
    let mut c = Trainer::from_config(cartpole_pg(), &Registry::builtin()).unwrap();
    c.policy.set_flat(&a.policy.get_flat().unwrap()).unwrap();
    flat::set_flat(&c.value.vars(), &flat::get_flat(&a.value.vars()).unwrap()).unwrap();
    c.algo.load_state(&a.algo.state()).unwrap();
    c.rng = a.rng.clone();
    c.venv.restore(&a.venv.snapshot().unwrap()).unwrap();
    c.collector
        .set_current_observations(a.collector.current_observations().unwrap().to_vec());
    a.update().unwrap();
    c.update().unwrap();
    assert_eq!(a.policy.get_flat().unwrap(), c.policy.get_flat().unwrap());
    assert_eq!(a.algo.state(), c.algo.state());
    let mut wrong = a.algo.state();
    wrong.algo = "ppo".into();
    assert!(c.algo.load_state(&wrong).is_err());
}

/// Mean expected regret per step of uniformly random recommendations on the
/// config's environment copies, reset with the config's seed.
fn uniform_regret(config: &ExperimentConfig, steps: usize) -> f64 {
    let registry = Registry::builtin();
    let envs = (0..config.train.n_envs)
        .map(|_| registry.make(&config.env.name, &config.env.params).unwrap())
        .collect();
    let mut venv = VecEnv::new(envs).unwrap();
    venv.reset(Some(config.train.seed)).unwrap();
    let n = venv.action_space().n().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(config.train.seed);
    let (mut sum, mut count) = (0.0, 0.0);
    for _ in 0..steps {
        let a: Vec<usize> = (0..venv.num_envs())
            .map(|_| rng.random_range(0..n))
            .collect();
        venv.step(EnvActions::Discrete(&a)).unwrap();
        for info in venv.infos() {
            sum += info.optimal_expected_reward.unwrap() - info.expected_reward.unwrap();
            count += 1.0;
        }
    }
    sum / count
}

/// `run` on each seed in its own thread (the machine has 2 cores).
fn on_seeds<T: Send + 'static>(seeds: &[u64], run: fn(u64) -> T) -> Vec<(u64, T)> {
    let runs: Vec<_> = seeds
        .iter()
        .map(|&seed| (seed, std::thread::spawn(move || run(seed))))
        .collect();
    runs.into_iter()
        .map(|(seed, h)| (seed, h.join().unwrap()))
        .collect()
}

/// Seeds 0–2 (the bound was measured on them) and held-out seeds 100–102.
#[test]
fn vanilla_pg_learns_the_bandit() {
    let results = on_seeds(&[0, 1, 2, 100, 101, 102], |seed| {
        let mut c = config("bandit-vanilla-pg.toml");
        c.train.seed = seed;
        let uniform = uniform_regret(&c, 2_000);
        let mut t = Trainer::from_config(c, &Registry::builtin()).unwrap();
        let mut regrets = Vec::new();
        t.train(|r| {
            regrets.push(r.regret.unwrap());
            true
        })
        .unwrap();
        let end = regrets[regrets.len() - 10..].iter().sum::<f64>() / 10.0;
        (uniform, end)
    });
    for (seed, (uniform, end)) in results {
        eprintln!("vanilla PG bandit seed {seed}: uniform {uniform:.4}, end {end:.4}");
        // Measured (γ = 0) against a uniform 0.24: 0.023, 0.026, 0.044 on
        // seeds 0–2 and 0.020, 0.016, 0.022 on held-out 100–102: well below a third.
        assert!(end < uniform / 3.0, "seed {seed}: {end} vs {uniform}");
    }
}

/// Seeds 0–2 (the bound was measured on them) and held-out seeds 100–102.
#[test]
fn vanilla_pg_improves_on_cartpole() {
    let results = on_seeds(&[0, 1, 2, 100, 101, 102], |seed| {
        let mut c = config("cartpole-vanilla-pg.toml");
        c.train.seed = seed;
        let registry = Registry::builtin();
        let mut t = Trainer::from_config(c, &registry).unwrap();
        t.train(|_| true).unwrap();
        let mut env = registry.make("CartPole-v1", &Default::default()).unwrap();
        t.evaluate(env.as_mut(), 10, true, 10_000)
            .unwrap()
            .mean_return()
    });
    for (seed, ret) in results {
        eprintln!("vanilla PG CartPole seed {seed}: deterministic mean return {ret}");
        // A uniformly random policy lasts ~22 steps; the initial argmax policy ~9.
        // Measured: 214, 151, 500 on seeds 0–2 and 500, 500, 262 on held-out
        // 100–102 (no trust region: high variance).
        assert!(ret >= 100.0, "seed {seed}: {ret}");
    }
}
