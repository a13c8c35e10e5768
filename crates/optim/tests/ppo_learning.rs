//! PPO learning tests (run in release mode, single-threaded candle, fixed
//! seeds): the adaptive-KL CartPole config solves CartPole-v1, the adaptive-KL
//! bandit config drives MovieRec-v0's regret far below a uniform policy's, and
//! the zoo PPO-clip config solves CartPole (its wall time is printed: the
//! issue's throughput target).
//!
//! Each test runs the seeds its config's settings were chosen or measured on
//! ([`TUNED`], as the config's comment says) and seeds no config was tuned on
//! ([`HELD_OUT`]), so a pass is not an artefact of tuning. Seeds run in
//! parallel threads (the machine has 2 cores).

use std::path::Path;
use std::time::Instant;

use klrl_envs::{Actions, Registry, VecEnv};
use klrl_optim::{ExperimentConfig, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds the configs' settings were chosen or measured on.
const TUNED: [u64; 3] = [0, 1, 2];
/// Seeds no config was tuned on.
const HELD_OUT: [u64; 3] = [100, 101, 102];

fn config(file: &str) -> ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap()
}

/// Train `config` with `seed` to the end, then evaluate the final policy
/// deterministically (argmax actions) on 10 episodes of a fresh CartPole-v1
/// from the registry (episode k reset with seed 10 000 + k). Returns the mean
/// return and the training wall time.
fn train_and_evaluate(mut config: ExperimentConfig, seed: u64) -> (f64, f64) {
    config.train.seed = seed;
    let registry = Registry::builtin();
    let mut t = Trainer::from_config(config, &registry).unwrap();
    let start = Instant::now();
    t.train(|_| true).unwrap();
    let wall = start.elapsed().as_secs_f64();
    let mut env = registry.make("CartPole-v1", &Default::default()).unwrap();
    let eval = t.evaluate(env.as_mut(), 10, true, 10_000).unwrap();
    (eval.mean_return(), wall)
}

/// [`train_and_evaluate`] on every seed, in parallel threads; (seed, mean
/// return, wall time) per seed, in order.
fn train_and_evaluate_seeds(
    config: &ExperimentConfig,
    seeds: impl IntoIterator<Item = u64>,
) -> Vec<(u64, f64, f64)> {
    let runs: Vec<_> = seeds
        .into_iter()
        .map(|seed| {
            let c = config.clone();
            (
                seed,
                std::thread::spawn(move || train_and_evaluate(c, seed)),
            )
        })
        .collect();
    runs.into_iter()
        .map(|(seed, h)| {
            let (mean, wall) = h.join().unwrap();
            (seed, mean, wall)
        })
        .collect()
}

#[test]
fn ppo_with_adaptive_kl_penalty_solves_cartpole_on_tuned_and_held_out_seeds() {
    let c = config("cartpole-ppo-kl-adaptive.toml");
    assert_eq!(c.train.total_steps, 100_000);
    for (seed, mean, wall) in train_and_evaluate_seeds(&c, TUNED.into_iter().chain(HELD_OUT)) {
        eprintln!("kl_adaptive seed {seed}: deterministic mean return {mean} ({wall:.1} s)");
        assert!(mean >= 475.0, "seed {seed}: mean return {mean} < 475");
    }
}

/// Seed 0 (one of the seeds 0–2 of the README's timing table) and held-out
/// seed 100.
#[test]
fn zoo_ppo_clip_solves_cartpole() {
    let c = config("bench/cartpole-ppo-zoo.toml");
    for (seed, mean, wall) in train_and_evaluate_seeds(&c, [0, HELD_OUT[0]]) {
        // The target is ≤ 3 s for these 100k steps on an idle machine;
        // shared CI machines vary too much to assert it here.
        eprintln!(
            "zoo PPO-clip seed {seed}: 100k steps in {wall:.2} s, deterministic mean return {mean}"
        );
        assert!(mean >= 475.0, "seed {seed}: mean return {mean}");
    }
}

/// Mean expected regret per step of the uniformly random policy on
/// `steps` steps of the config's environment copies, reset with the config's
/// seed as the trainer does.
fn uniform_regret(config: &ExperimentConfig, steps: usize) -> f64 {
    let registry = Registry::builtin();
    let envs = (0..config.train.n_envs)
        .map(|_| registry.make(&config.env.name, &config.env.params).unwrap())
        .collect();
    let mut venv = VecEnv::new(envs).unwrap();
    venv.reset(Some(config.train.seed)).unwrap();
    let n_actions = venv.action_space().n().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(config.train.seed);
    let (mut sum, mut count) = (0.0, 0u64);
    for _ in 0..steps {
        let a: Vec<usize> = (0..venv.num_envs())
            .map(|_| rng.random_range(0..n_actions))
            .collect();
        venv.step(Actions::Discrete(&a)).unwrap();
        for info in venv.infos() {
            sum += info.optimal_expected_reward.unwrap() - info.expected_reward.unwrap();
            count += 1;
        }
    }
    sum / count as f64
}

#[test]
fn ppo_with_adaptive_kl_penalty_cuts_bandit_regret_below_a_fifth_of_uniform() {
    let mut c = config("bandit-ppo-kl-adaptive.toml");
    // 20k of the config's 50k steps are enough here (measured: the regret
    // is already ~1 % of uniform's by then); it keeps the test short.
    c.train.total_steps = 20_000;
    let runs: Vec<_> = [TUNED[0], TUNED[1], HELD_OUT[0], HELD_OUT[1]]
        .into_iter()
        .map(|seed| {
            let mut c = c.clone();
            c.train.seed = seed;
            let run = std::thread::spawn(move || {
                let uniform = uniform_regret(&c, 2_000);
                let mut t = Trainer::from_config(c, &Registry::builtin()).unwrap();
                let mut regrets = Vec::new();
                t.train(|r| {
                    regrets.push(r.regret.unwrap());
                    true
                })
                .unwrap();
                // "At the end": the last 5 rollouts (1280 recommendations), as
                // sampled from the stochastic policy during training.
                let end = regrets[regrets.len() - 5..].iter().sum::<f64>() / 5.0;
                (uniform, regrets[0], end)
            });
            (seed, run)
        })
        .collect();
    for (seed, h) in runs {
        let (uniform, first, end) = h.join().unwrap();
        eprintln!(
            "bandit seed {seed}: uniform {uniform:.4}, first rollout {first:.4}, end {end:.4}"
        );
        // The initial policy is close to uniform, a sanity check of the measurement.
        assert!(
            (first - uniform).abs() < 0.3 * uniform,
            "seed {seed}: {first} vs {uniform}"
        );
        assert!(
            end < 0.2 * uniform,
            "seed {seed}: regret {end} vs uniform {uniform}"
        );
    }
}
