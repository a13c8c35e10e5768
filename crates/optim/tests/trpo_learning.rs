//! TRPO and NPG learning tests (release mode, fixed seeds): CartPole-v1 is
//! solved, MovieRec-v0's regret falls far below a uniform policy's, no
//! accepted update leaves the trust region (checked against an independent
//! f64 recomputation of the KL), a forced rejection leaves the parameters
//! bit-identical, and training is deterministic.
//!
//! The learning tests run seeds the configs' settings were chosen or measured
//! on (as each config's comment says) and the held-out seeds of [`HELD_OUT`],
//! which no config was tuned on.

use std::path::Path;
use std::time::Instant;

use klrl_envs::{MovieRec, MovieRecParams, Registry};
use klrl_optim::batch::Batch;
use klrl_optim::trpo::Trpo;
use klrl_optim::{AlgoConfig, Algorithm, ExperimentConfig, Trainer, TrpoConfig};
use klrl_policy::{Dist, Policy};

/// Seeds no config was tuned on.
const HELD_OUT: [u64; 3] = [100, 101, 102];

fn config(file: &str) -> ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap()
}

fn trpo_config(c: &ExperimentConfig) -> &TrpoConfig {
    match &c.algo {
        AlgoConfig::Trpo(t) | AlgoConfig::Npg(t) => t,
        other => panic!("not TRPO/NPG: {other:?}"),
    }
}

/// Train `file` with `seed`; returns the mean deterministic evaluation return
/// over 10 CartPole episodes and the `kl_old_new` of the accepted updates.
fn train_cartpole(file: &str, seed: u64) -> (f64, Vec<f64>) {
    let mut c = config(file);
    c.train.seed = seed;
    let registry = Registry::builtin();
    let mut t = Trainer::from_config(c, &registry).unwrap();
    let mut kls = Vec::new();
    t.train(|r| {
        if r.diagnostics.accepted == 1.0 {
            kls.push(r.diagnostics.kl_old_new);
        }
        true
    })
    .unwrap();
    let mut env = registry.make("CartPole-v1", &Default::default()).unwrap();
    let ev = t.evaluate(env.as_mut(), 10, true, 10_000 + seed).unwrap();
    (ev.mean_return(), kls)
}

/// `run` on every seed in `seeds`, in two threads (one per core; each
/// run is single-threaded), returning the results in the order of `seeds`.
fn on_seeds<T: Send>(seeds: &[u64], run: impl Fn(u64) -> T + Sync) -> Vec<(u64, T)> {
    let half = seeds.len().div_ceil(2);
    let (a, b) = seeds.split_at(half);
    std::thread::scope(|s| {
        let run = &run;
        let a = s.spawn(move || a.iter().map(|&seed| (seed, run(seed))).collect::<Vec<_>>());
        let b = s.spawn(move || b.iter().map(|&seed| (seed, run(seed))).collect::<Vec<_>>());
        let mut r = a.join().unwrap();
        r.extend(b.join().unwrap());
        r
    })
}

/// Seeds 0–2 of the 0–5 the config was measured on, and the held-out seeds.
#[test]
fn trpo_solves_cartpole_on_tuned_and_held_out_seeds() {
    let max_kl = trpo_config(&config("cartpole-trpo.toml")).max_kl;
    let seeds = [0, 1, 2, HELD_OUT[0], HELD_OUT[1], HELD_OUT[2]];
    for (seed, (ret, kls)) in on_seeds(&seeds, |seed| train_cartpole("cartpole-trpo.toml", seed)) {
        let worst_kl = kls.iter().cloned().fold(0.0, f64::max);
        eprintln!(
            "TRPO seed {seed}: deterministic return {ret}, largest accepted KL {worst_kl:.5}"
        );
        assert!(ret >= 475.0, "seed {seed}: mean return {ret}");
        assert!(worst_kl <= max_kl, "seed {seed}: KL {worst_kl} > {max_kl}");
    }
}

/// Seed 0 (one of the 0–3 δ was chosen on) and held-out seed 100.
#[test]
fn npg_solves_cartpole() {
    let max_kl = trpo_config(&config("cartpole-npg.toml")).max_kl;
    for (seed, (ret, mut kls)) in on_seeds(&[0, HELD_OUT[0]], |seed| {
        train_cartpole("cartpole-npg.toml", seed)
    }) {
        kls.sort_by(f64::total_cmp);
        let median = kls[kls.len() / 2];
        eprintln!(
            "NPG seed {seed}: deterministic return {ret}, KL median {median:.5}, largest {:.5}",
            kls[kls.len() - 1]
        );
        assert!(ret >= 475.0, "seed {seed}: mean return {ret}");
        // Every step is taken (no line search); its quadratic model ½ sᵀ(F+λI)s = δ
        // keeps the typical exact KL near δ (single steps may overshoot it).
        assert_eq!(kls.len(), 49);
        assert!(
            median > 0.5 * max_kl && median < 2.0 * max_kl,
            "seed {seed}: median KL {median}"
        );
    }
}

/// The expected per-round regret of the uniform policy in the default
/// MovieRec-v0 world, from the click model: Σ_s P(s) (max_m p_sm − mean_m p_sm)
/// with p_sm = σ(u_s · v_m + b_m).
fn uniform_regret() -> f64 {
    let env = MovieRec::new(MovieRecParams::default()).unwrap();
    let p = env.params();
    let mut total = 0.0;
    for (s, &weight) in env.segment_probs().iter().enumerate() {
        let taste = env.taste(s).unwrap();
        let clicks: Vec<f64> = (0..p.n_movies)
            .map(|m| {
                let g = env.genre_vector(m).unwrap();
                let logit: f64 = taste.iter().zip(g).map(|(u, v)| u * v).sum::<f64>()
                    + env.movie_bias(m).unwrap();
                1.0 / (1.0 + (-logit).exp())
            })
            .collect();
        let best = clicks.iter().cloned().fold(f64::MIN, f64::max);
        let mean = clicks.iter().sum::<f64>() / clicks.len() as f64;
        total += weight * (best - mean);
    }
    total
}

/// Per-round regret of the first rollout (a nearly uniform policy) and of the
/// last five rollouts.
fn bandit_regret(file: &str, seed: u64) -> (f64, f64) {
    let mut c = config(file);
    c.train.seed = seed;
    assert_eq!(c.env.name, "MovieRec-v0");
    assert!(
        c.env.params.is_empty(),
        "the test assumes the default world"
    );
    let mut t = Trainer::from_config(c, &Registry::builtin()).unwrap();
    let mut regrets = Vec::new();
    t.train(|r| {
        regrets.push(r.regret.unwrap());
        true
    })
    .unwrap();
    let tail = &regrets[regrets.len() - 5..];
    (regrets[0], tail.iter().sum::<f64>() / tail.len() as f64)
}

/// Seed 0 (the configs' measured seed) and held-out seed 100, for each of
/// TRPO and NPG.
#[test]
fn trpo_and_npg_cut_the_bandit_regret() {
    let uniform = uniform_regret();
    let runs = [
        ("bandit-trpo.toml", 0),
        ("bandit-npg.toml", 0),
        ("bandit-trpo.toml", HELD_OUT[0]),
        ("bandit-npg.toml", HELD_OUT[0]),
    ];
    let run = |part: &[(&str, u64)]| -> Vec<(f64, f64)> {
        part.iter()
            .map(|&(f, seed)| bandit_regret(f, seed))
            .collect()
    };
    let results = std::thread::scope(|s| {
        let a = s.spawn(|| run(&runs[..2]));
        let b = s.spawn(|| run(&runs[2..]));
        let mut r = a.join().unwrap();
        r.extend(b.join().unwrap());
        r
    });
    eprintln!("uniform regret {uniform:.4}");
    for ((name, seed), (first, last)) in runs.into_iter().zip(results) {
        eprintln!("{name} seed {seed}: first rollout {first:.4}, last five {last:.4}");
        // The initial policy is nearly uniform: its sampled regret matches the model's.
        assert!(
            (first - uniform).abs() < 0.15 * uniform,
            "{name} seed {seed}: first rollout regret {first}, uniform {uniform}"
        );
        // Below 2 % of the uniform policy's regret (measured with γ = 0:
        // 0.0009–0.0016 against 0.238 on seeds 0 and 100).
        assert!(
            last < 0.02 * uniform,
            "{name} seed {seed}: final regret {last}, uniform {uniform}"
        );
    }
}

/// Logits of a categorical policy at the batch's states, on the host in f64.
fn host_logits(policy: &dyn Policy, obs: &[f32]) -> Vec<Vec<f64>> {
    let t = policy.obs_tensor(obs).unwrap();
    let Dist::Categorical(c) = policy.dist(&t, None).unwrap() else {
        panic!("categorical")
    };
    c.logits()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
}

/// Mean over states of KL(softmax(a) ‖ softmax(b)), in f64 on the host.
fn mean_kl(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let log_softmax = |z: &[f64]| -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        z.iter().map(|x| x - lse).collect()
    };
    let total: f64 = a
        .iter()
        .zip(b)
        .map(|(za, zb)| {
            let (la, lb) = (log_softmax(za), log_softmax(zb));
            la.iter()
                .zip(&lb)
                .map(|(p, q)| p.exp() * (p - q))
                .sum::<f64>()
        })
        .sum();
    total / a.len() as f64
}

/// A 20k-step CartPole run, update by update: every accepted update's exact
/// mean KL (reported and recomputed independently in f64) is within δ, a
/// rejected one moves nothing; then a forced rejection on a real batch
/// leaves the parameters bit-identical.
#[test]
fn accepted_updates_stay_in_the_trust_region() {
    let mut c = config("bench/cartpole-trpo-zoo.toml");
    c.train.total_steps = 20_480;
    let max_kl = trpo_config(&c).max_kl;
    let (n_steps, gamma, lambda) = (c.train.n_steps, c.train.gamma, c.train.gae_lambda);
    let mut t = Trainer::from_config(c, &Registry::builtin()).unwrap();
    let next_batch = |t: &mut Trainer, update: u64| -> Batch {
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
        let adv = rollout.advantages(gamma as f32, lambda as f32);
        Batch::new(rollout, adv, 0.0, update)
    };
    let (mut accepted, mut largest) = (0, 0.0f64);
    for update in 0..20 {
        let batch = next_batch(&mut t, update);
        let before = host_logits(t.policy.as_ref(), &batch.obs);
        let d = t
            .algo
            .update(t.policy.as_mut(), &mut t.value, &batch, &mut t.rng)
            .unwrap();
        let after = host_logits(t.policy.as_ref(), &batch.obs);
        let kl = mean_kl(&before, &after);
        if d.accepted == 1.0 {
            accepted += 1;
            largest = largest.max(kl);
            assert!(d.kl_old_new <= max_kl, "update {update}: {d:?}");
            // f32 logits, f64 arithmetic: agreement to f32 rounding.
            assert!(kl <= max_kl + 1e-6, "update {update}: recomputed KL {kl}");
            assert!((kl - d.kl_old_new).abs() < 1e-5, "{kl} vs {}", d.kl_old_new);
            assert!(d.ls_steps >= 1.0 && d.ls_steps <= 10.0);
        } else {
            assert_eq!(before, after, "update {update}: rejected but moved");
        }
    }
    eprintln!("{accepted}/20 accepted, largest recomputed KL {largest:.6}");
    assert!(accepted >= 15, "only {accepted} of 20 updates accepted");
    // The line search has work to do: the largest KL is close to δ.
    assert!(largest > 0.5 * max_kl);

    // Forced rejection: a single candidate (no backtracking) with a trust
    // region far too large for the quadratic model of the KL, so that the
    // full step's exact KL or surrogate fails the line search's test. Which
    // δ of the grid does that on this batch depends on the run's last bits,
    // so the grid is scanned; a tiny δ would not do (there the measured KL
    // and the surrogate's change are f32 rounding noise of either sign).
    let batch = next_batch(&mut t, 20);
    let before = t.policy.get_flat().unwrap();
    let mut rejected = None;
    for max_kl in [1.0, 10.0, 100.0, 1e3, 1e4, 1e6] {
        let mut strict = Trpo::new(
            TrpoConfig {
                max_kl,
                ls_max_steps: 1,
                ..trpo_config(&t.config).clone()
            },
            true,
            &t.value,
        );
        let d = strict
            .update(t.policy.as_mut(), &mut t.value, &batch, &mut t.rng)
            .unwrap();
        assert_eq!(d.ls_steps, 1.0);
        let after = t.policy.get_flat().unwrap();
        if d.accepted == 0.0 {
            assert!(
                after
                    .iter()
                    .zip(&before)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "δ = {max_kl}: rejected but moved"
            );
            rejected = Some(max_kl);
            break;
        }
        assert!(d.kl_old_new <= max_kl, "δ = {max_kl}: {d:?}");
        t.policy.set_flat(&before).unwrap();
    }
    let rejected = rejected.expect("no oversized trust region was rejected");
    eprintln!("forced rejection at δ = {rejected}");
}

/// Same config and seed, single thread: bit-identical parameters and diagnostics.
#[test]
fn training_is_deterministic() {
    let run = || {
        let mut c = config("bench/cartpole-trpo-zoo.toml");
        c.train.total_steps = 8192;
        c.train.seed = 3;
        let mut t = Trainer::from_config(c, &Registry::builtin()).unwrap();
        let mut diags = Vec::new();
        t.train(|r| {
            diags.push(r.diagnostics.values().map(f64::to_bits));
            true
        })
        .unwrap();
        let policy: Vec<u64> = t
            .policy
            .get_flat()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let value: Vec<u64> = klrl_policy::flat::get_flat(&t.value.vars())
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        (policy, value, diags)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.2.len(), 8);
    assert!(a == b, "two runs of the same config and seed differ");
}

/// The zoo settings' speed (the README's comparison with sb3-contrib's
/// 30–37 s): prints where the time goes. Ignored because timings depend on
/// the machine's load; run with
/// `RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 cargo test --release -p klrl-optim --test trpo_learning -- --ignored --nocapture`.
#[test]
#[ignore]
fn zoo_trpo_speed() {
    let c = config("bench/cartpole-trpo-zoo.toml");
    let max_kl = trpo_config(&c).max_kl;
    let registry = Registry::builtin();
    let mut t = Trainer::from_config(c, &registry).unwrap();
    let start = Instant::now();
    let (mut rollout, mut update, mut updates) = (0.0, 0.0, 0);
    let mut returns = Vec::new();
    t.train(|r| {
        rollout += r.times.rollout_s;
        update += r.times.update_s;
        updates += 1;
        returns.extend(r.episodes.iter().map(|e| e.ret));
        assert!(r.diagnostics.accepted == 0.0 || r.diagnostics.kl_old_new <= max_kl);
        true
    })
    .unwrap();
    let total = start.elapsed().as_secs_f64();
    let last: Vec<f64> = returns.iter().rev().take(20).cloned().collect();
    let mut env = registry.make("CartPole-v1", &Default::default()).unwrap();
    let ev = t.evaluate(env.as_mut(), 10, true, 1000).unwrap();
    eprintln!(
        "100k steps in {total:.2} s (rollout {rollout:.2} s, update {update:.2} s, {updates} updates); \
         last 20 episodes {:.1}; deterministic evaluation {:.1}",
        last.iter().sum::<f64>() / last.len() as f64,
        ev.mean_return()
    );
    assert_eq!(updates, 98);
}
