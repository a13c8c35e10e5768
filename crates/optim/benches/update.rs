//! Time of one optimiser update on a real batch: PPO and TRPO with the
//! rl-baselines3-zoo CartPole settings (`configs/bench/*.toml`), plus the
//! rollout that collects the batch. The end-to-end numbers (whole 100k-step
//! runs) come from `klrl bench`.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p klrl-optim --bench update`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use klrl_envs::Registry;
use klrl_optim::batch::Batch;
use klrl_optim::{ExperimentConfig, Trainer};

fn trainer(config: &str) -> Trainer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/bench")
        .join(config);
    let text = std::fs::read_to_string(&path).expect("read the zoo config");
    let config: ExperimentConfig = toml::from_str(&text).expect("parse the zoo config");
    Trainer::from_config(config, &Registry::builtin()).expect("build the trainer")
}

fn update(c: &mut Criterion) {
    for (label, config) in [
        ("ppo-zoo (batch 256, 20 epochs)", "cartpole-ppo-zoo.toml"),
        (
            "trpo-zoo (batch 1024, CG 15, 20 critic epochs)",
            "cartpole-trpo-zoo.toml",
        ),
    ] {
        let mut t = trainer(config);
        let n_steps = t.config.train.n_steps;
        let (gamma, lambda) = (
            t.config.train.gamma as f32,
            t.config.train.gae_lambda as f32,
        );
        let mut g = c.benchmark_group(label);
        g.sample_size(20);
        g.bench_function("collect", |b| {
            b.iter(|| {
                t.collector
                    .collect(
                        &mut t.venv,
                        t.policy.as_ref(),
                        &t.value,
                        n_steps,
                        &mut t.rng,
                    )
                    .unwrap()
            })
        });
        let rollout = t
            .collector
            .collect(
                &mut t.venv,
                t.policy.as_ref(),
                &t.value,
                n_steps,
                &mut t.rng,
            )
            .unwrap();
        let adv = rollout.advantages(gamma, lambda);
        let batch = Batch::new(rollout, adv, 0.0, 0);
        g.bench_function("update", |b| {
            b.iter(|| {
                t.algo
                    .update(t.policy.as_mut(), &mut t.value, &batch, &mut t.rng)
                    .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, update);
criterion_main!(benches);
