//! Time of one optimiser update on a real batch: PPO and TRPO with the
//! rl-baselines3-zoo CartPole settings (`configs/bench/*.toml`), plus the
//! rollout that collects the batch; and the cost of the KL limits: the same
//! PPO update with and without the hard limit `max_kl`, and with the
//! trust-region projection, each from the same parameters every iteration;
//! and the parallel paths, one update on a pool of 1 and of 2 threads.
//! The end-to-end numbers (whole 100k-step runs) come from `klrl bench`.
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

/// One rollout of `t` with its advantages, as the first update sees it.
fn one_batch(t: &mut Trainer) -> Batch {
    let n_steps = t.config.train.n_steps;
    let (gamma, lambda) = (
        t.config.train.gamma as f32,
        t.config.train.gae_lambda as f32,
    );
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
    Batch::new(rollout, adv, 0.0, 0)
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
        let batch = one_batch(&mut t);
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

/// One PPO update of the zoo CartPole batch with the `[algo]` overrides
/// `sets`, started from the same parameters and optimiser state every
/// iteration (restoring them is part of every variant's time).
fn kl_limits(c: &mut Criterion) {
    let variants: [(&str, &[(&str, toml::Value)]); 5] = [
        ("clip", &[]),
        (
            "clip + max_kl 0.01",
            &[("max_kl", toml::Value::Float(0.01))],
        ),
        (
            "kl_adaptive",
            &[("objective", toml::Value::String("kl_adaptive".into()))],
        ),
        (
            "kl_adaptive + max_kl 0.01",
            &[
                ("objective", toml::Value::String("kl_adaptive".into())),
                ("max_kl", toml::Value::Float(0.01)),
            ],
        ),
        (
            "projection eps 0.02",
            &[
                ("objective", toml::Value::String("projection".into())),
                ("proj_eps", toml::Value::Float(0.02)),
            ],
        ),
    ];
    let mut g = c.benchmark_group("kl limits (ppo-zoo batch 256, 20 epochs)");
    g.sample_size(30);
    for (label, sets) in variants {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/bench/cartpole-ppo-zoo.toml");
        let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let algo = table
            .get_mut("algo")
            .and_then(|a| a.as_table_mut())
            .unwrap();
        for (k, v) in sets {
            algo.insert((*k).to_string(), v.clone());
        }
        let config: ExperimentConfig = table.try_into().unwrap();
        config.validate().unwrap();
        let mut t = Trainer::from_config(config, &Registry::builtin()).unwrap();
        let batch = one_batch(&mut t);
        let theta = t.policy.get_flat().unwrap();
        let value_theta = klrl_policy::flat::get_flat(&t.value.vars()).unwrap();
        let state = t.algo.state();
        g.bench_function(label, |b| {
            b.iter(|| {
                t.policy.set_flat(&theta).unwrap();
                klrl_policy::flat::set_flat(&t.value.vars(), &value_theta).unwrap();
                t.algo.load_state(&state).unwrap();
                t.algo
                    .update(t.policy.as_mut(), &mut t.value, &batch, &mut t.rng)
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// The cost of a reference policy: one update of the zoo CartPole batch
/// (PPO and TRPO) without a reference, with a fixed-coefficient penalty to
/// the initial policy, and (PPO) with a constraint; each iteration includes
/// evaluating π_ref at the batch states, as `Trainer::update` does once per
/// update, and starts from the same parameters and optimiser state.
fn reference(c: &mut Criterion) {
    let none = toml::Table::new();
    let penalty: toml::Table = "mode = \"penalty\"\ncoef = 0.1\n".parse().unwrap();
    let constraint: toml::Table = "mode = \"constraint\"\nmax_kl = 0.05\n".parse().unwrap();
    for (group, file, variants) in [
        (
            "reference (ppo-zoo batch 256, 20 epochs)",
            "cartpole-ppo-zoo.toml",
            vec![
                ("no reference", &none),
                ("penalty to the initial policy", &penalty),
                ("constraint 0.05", &constraint),
            ],
        ),
        (
            "reference (trpo-zoo batch 1024)",
            "cartpole-trpo-zoo.toml",
            vec![
                ("no reference", &none),
                ("penalty to the initial policy", &penalty),
            ],
        ),
    ] {
        let mut g = c.benchmark_group(group);
        g.sample_size(30);
        for (label, reference) in variants {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../configs/bench")
                .join(file);
            let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
            if !reference.is_empty() {
                let algo = table
                    .get_mut("algo")
                    .and_then(|a| a.as_table_mut())
                    .unwrap();
                algo.insert("reference".into(), toml::Value::Table(reference.clone()));
            }
            let config: ExperimentConfig = table.try_into().unwrap();
            config.validate().unwrap();
            let mut t = Trainer::from_config(config, &Registry::builtin()).unwrap();
            let mut batch = one_batch(&mut t);
            let theta = t.policy.get_flat().unwrap();
            let value_theta = klrl_policy::flat::get_flat(&t.value.vars()).unwrap();
            let state = t.algo.state();
            let mask = None;
            g.bench_function(label, |b| {
                b.iter(|| {
                    t.policy.set_flat(&theta).unwrap();
                    klrl_policy::flat::set_flat(&t.value.vars(), &value_theta).unwrap();
                    t.algo.load_state(&state).unwrap();
                    batch.reference = t
                        .reference()
                        .map(|r| {
                            r.dist(
                                &batch.obs,
                                batch.len(),
                                mask,
                                t.policy.dtype(),
                                t.policy.device(),
                            )
                        })
                        .transpose()
                        .unwrap();
                    t.algo
                        .update(t.policy.as_mut(), &mut t.value, &batch, &mut t.rng)
                        .unwrap()
                })
            });
        }
        g.finish();
    }
}

/// The parallel paths: one update on a pool of 1 and of 2 threads (the
/// value network's gradient alongside the policy's for PPO, TRPO's critic fit
/// alongside its policy step, Adam's halves), the same computation bit for
/// bit, run as the trainer runs it (`keep_warm::with_workers_awake`).
fn threads(c: &mut Criterion) {
    for (label, config) in [
        (
            "threads: ppo-zoo (batch 256, 20 epochs)",
            "cartpole-ppo-zoo.toml",
        ),
        (
            "threads: trpo-zoo (batch 1024, 20 critic epochs)",
            "cartpole-trpo-zoo.toml",
        ),
        (
            "threads: ppo-sb3-default (2048, 10 epochs of 64)",
            "cartpole-ppo-sb3-default.toml",
        ),
        (
            "threads: ppo 256-256 (2048, 10 epochs of 64)",
            "pendulum-ppo-256.toml",
        ),
    ] {
        let mut t = trainer(config);
        let batch = one_batch(&mut t);
        let mut g = c.benchmark_group(label);
        g.sample_size(10);
        for n in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap();
            g.bench_function(format!("{n} thread(s)"), |b| {
                b.iter(|| {
                    // As the trainer runs an update: the other worker polls.
                    pool.install(|| {
                        let (algo, policy, value, rng) =
                            (&mut t.algo, t.policy.as_mut(), &mut t.value, &mut t.rng);
                        klrl_optim::keep_warm::with_workers_awake(|| {
                            algo.update(policy, value, &batch, rng).unwrap()
                        })
                    })
                })
            });
        }
        g.finish();
    }
}

/// One Adam step with gradient clipping over the parameters of PPO's
/// 256-256 policy and value networks (134,147 f32 parameters), the gradient
/// in two f32 parts as PPO passes it (the value part times c_v = 0.5) and
/// its squared norm summed on the calling
/// thread first, on a pool of 1 and of 2 threads (the other worker polling,
/// as through an update): the optimiser's share of a minibatch step.
fn adam(c: &mut Criterion) {
    use candle_core::{Device, Tensor, Var};
    use klrl_optim::adam::{Adam, GradPart, SquaredNorm};
    let t = trainer("pendulum-ppo-256.toml");
    let mut vars = t.policy.vars();
    vars.extend(t.value.vars());
    let n: usize = vars.iter().map(|v| v.elem_count()).sum();
    let split = t
        .policy
        .vars()
        .iter()
        .map(|v| v.elem_count())
        .sum::<usize>();
    let grad: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 1e-2).collect();
    let vars: Vec<Var> = vars
        .iter()
        .map(|v| {
            let t = Tensor::zeros(v.shape(), v.dtype(), &Device::Cpu).unwrap();
            Var::from_tensor(&t).unwrap()
        })
        .collect();
    let mut g = c.benchmark_group(format!("adam: {n} parameters (PPO 256-256)"));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut adam = Adam::new(n, 1e-5);
        g.bench_function(format!("{threads} thread(s)"), |b| {
            b.iter(|| {
                // As in an update: the other worker polls for work.
                pool.install(|| {
                    klrl_optim::keep_warm::with_workers_awake(|| {
                        let parts = [
                            GradPart::F32 {
                                grad: &grad[..split],
                                scale: 1.0,
                            },
                            GradPart::F32 {
                                grad: &grad[split..],
                                scale: 0.5,
                            },
                        ];
                        let mut squares = SquaredNorm::default();
                        squares.add_part(parts[0]);
                        squares.add_part(parts[1]);
                        adam.step_parts(&vars, &parts, squares, 3e-4, 0.5, 0)
                            .unwrap()
                    })
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, update, kl_limits, reference, threads, adam);
criterion_main!(benches);
