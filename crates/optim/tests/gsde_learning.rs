//! gSDE learning tests (release mode, single-threaded candle, fixed seeds):
//! PPO-clip and TRPO with gSDE exploration and the rl-baselines3-zoo Pendulum
//! settings (`configs/pendulum-{ppo,trpo}-gsde.toml`) swing Pendulum-v1 up
//! within 100k steps on the seeds no setting was chosen on (100–102; the
//! configs' numbers on seeds 0–2 are in the README).
//!
//! The bar: a deterministic evaluation over 10 episodes (episode k reset
//! with seed 10 000 + k) of at least −200 on every seed (the goal for
//! TRPO on the mean of seeds 0–2). A random policy gets about −1200, the
//! state-independent-σ PPO of `pendulum-ppo-kl-adaptive.toml` −714 (seed 0);
//! measured here on 2026-12-02 (d9707eb, an AVX-512 machine): −130.5 /
//! −130.7 / −132.4 (PPO) and −130.0 / −128.6 / −129.8 (TRPO). Seeds run in parallel threads (2 cores): about 35 s in all.

use std::path::Path;

use klrl_envs::Registry;
use klrl_optim::{ExperimentConfig, Trainer};

/// Seeds no config was tuned on.
const HELD_OUT: [u64; 3] = [100, 101, 102];

fn config(file: &str) -> ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    table.remove("run"); // the klrl program's section
    toml::Value::Table(table).try_into().unwrap()
}

/// Train `config` with each seed in parallel threads, then evaluate the final
/// policy deterministically on 10 Pendulum-v1 episodes; (seed, mean return).
fn train_and_evaluate(config: &ExperimentConfig) -> Vec<(u64, f64)> {
    let runs: Vec<_> = HELD_OUT
        .iter()
        .map(|&seed| {
            let mut c = config.clone();
            c.train.seed = seed;
            let h = std::thread::spawn(move || {
                let registry = Registry::builtin();
                let mut t = Trainer::from_config(c, &registry).unwrap();
                t.train(|_| true).unwrap();
                let mut env = registry.make("Pendulum-v1", &Default::default()).unwrap();
                t.evaluate(env.as_mut(), 10, true, 10_000)
                    .unwrap()
                    .mean_return()
            });
            (seed, h)
        })
        .collect();
    runs.into_iter()
        .map(|(seed, h)| (seed, h.join().unwrap()))
        .collect()
}

fn check(file: &str) {
    let c = config(file);
    assert!(c.policy.use_sde && c.policy.sde_sample_freq == 4, "{file}");
    assert_eq!(c.train.total_steps, 100_000);
    for (seed, mean) in train_and_evaluate(&c) {
        eprintln!("{file} seed {seed}: deterministic mean return {mean:.1}");
        assert!(
            mean >= -200.0,
            "{file} seed {seed}: mean return {mean:.1} < −200"
        );
    }
}

#[test]
fn ppo_with_gsde_swings_pendulum_up_on_held_out_seeds() {
    check("pendulum-ppo-gsde.toml");
}

#[test]
fn trpo_with_gsde_swings_pendulum_up_on_held_out_seeds() {
    check("pendulum-trpo-gsde.toml");
}
