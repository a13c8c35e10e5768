//! Raw environment throughput with random actions through the vectorised
//! environment (the path training takes): CartPole-v1 with 1, 8 and 64 copies,
//! concrete and boxed (`Box<dyn Env>` from the registry), and the
//! movie-recommendation bandit.
//!
//! Run: `cargo bench -p klrl-envs --bench env_throughput`. Criterion reports
//! time per batch step; throughput is in environment steps (elements) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use klrl_envs::{Action, CartPole, CartPoleParams, Env, Registry, TimeLimit, VecEnv};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Pre-drawn random actions, so the benchmark measures stepping, not the RNG.
fn random_actions(n_actions: usize, len: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..len).map(|_| rng.random_range(0..n_actions)).collect()
}

fn bench_venv<E: Env>(c: &mut Criterion, group: &str, label: &str, mut venv: VecEnv<E>) {
    let n = venv.num_envs();
    let n_actions = venv.action_space().n().expect("discrete");
    // A table of 64k batches' worth of actions is cycled through.
    let table = random_actions(n_actions, n * 65_536);
    venv.reset(Some(0)).unwrap();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(n as u64));
    let mut offset = 0;
    g.bench_function(BenchmarkId::new(label, n), |b| {
        b.iter(|| {
            if offset + n > table.len() {
                offset = 0;
            }
            venv.step_discrete(&table[offset..offset + n]).unwrap();
            offset += n;
        })
    });
    g.finish();
}

fn cartpole(c: &mut Criterion) {
    // The floor: one bare CartPole stepped directly, resetting on termination.
    let mut env = CartPole::new(CartPoleParams::default()).unwrap();
    let mut obs = Vec::with_capacity(4);
    env.reset(Some(0), &mut obs).unwrap();
    let table = random_actions(2, 65_536);
    let mut i = 0;
    let mut g = c.benchmark_group("cartpole");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare", |b| {
        b.iter(|| {
            i = (i + 1) & 65_535;
            let step = env.step(Action::Discrete(table[i]), &mut obs).unwrap();
            if step.terminated {
                env.reset(None, &mut obs).unwrap();
            }
        })
    });
    g.finish();
    for n in [1, 8, 64] {
        let envs = (0..n)
            .map(|_| {
                TimeLimit::new(CartPole::new(CartPoleParams::default()).unwrap(), 500).unwrap()
            })
            .collect();
        bench_venv(c, "cartpole", "concrete", VecEnv::new(envs).unwrap());
        let registry = Registry::builtin();
        let envs = (0..n)
            .map(|_| registry.make("CartPole-v1", &Default::default()).unwrap())
            .collect();
        bench_venv(c, "cartpole", "boxed", VecEnv::new(envs).unwrap());
    }
}

fn bandit(c: &mut Criterion) {
    let registry = Registry::builtin();
    for name in ["MovieRec-v0", "MovieRecSession-v0"] {
        for n in [1, 8, 64] {
            let envs = (0..n)
                .map(|_| registry.make(name, &Default::default()).unwrap())
                .collect();
            bench_venv(c, name, "boxed", VecEnv::new(envs).unwrap());
        }
    }
}

criterion_group!(benches, cartpole, bandit);
criterion_main!(benches);
