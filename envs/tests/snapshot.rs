//! Snapshots: snapshot → step k → restore → step k gives the identical
//! trajectory, for every built-in environment (with its registry wrappers),
//! for `VecEnv` (copies, buffers, autoreset, masks, infos), through a JSON
//! round trip; mismatched snapshots are typed errors; a custom environment
//! without snapshot support compiles unchanged and reports `None`.

use klrl_envs::{
    Action, Actions, Env, EnvError, EnvRng, EnvSnapshot, Registry, Space, Step, VecEnv,
};
use rand::{Rng, SeedableRng};

/// Everything observable about `k` random steps of one environment, with
/// resets after episode ends; floats compared by bits.
fn rollout_single(env: &mut dyn Env, k: usize, seed: u64) -> Vec<u64> {
    let mut rng = EnvRng::seed_from_u64(seed);
    let mut obs = Vec::new();
    let mut trace = Vec::new();
    for _ in 0..k {
        let action = legal_action(env, &mut rng);
        let step: Step = env.step(action.as_action(), &mut obs).unwrap();
        trace.extend(obs.iter().map(|x| x.to_bits() as u64));
        trace.push(step.reward.to_bits());
        trace.push(step.terminated as u64 * 2 + step.truncated as u64);
        if step.done() {
            env.reset(None, &mut obs).unwrap();
            trace.extend(obs.iter().map(|x| x.to_bits() as u64));
        }
    }
    trace
}

struct OwnedAct {
    discrete: Option<usize>,
    cont: Vec<f32>,
}

impl OwnedAct {
    fn as_action(&self) -> Action<'_> {
        match self.discrete {
            Some(a) => Action::Discrete(a),
            None => Action::Continuous(&self.cont),
        }
    }
}

fn legal_action(env: &dyn Env, rng: &mut EnvRng) -> OwnedAct {
    match env.action_space() {
        Space::Discrete { n } => {
            let legal: Vec<usize> = (0..*n)
                .filter(|&a| env.action_mask().is_none_or(|m| m[a]))
                .collect();
            OwnedAct {
                discrete: Some(legal[rng.random_range(0..legal.len())]),
                cont: vec![],
            }
        }
        space @ Space::Box { low, .. } => {
            let mut cont = vec![0.0; low.len()];
            space.sample_box_into(rng, &mut cont);
            OwnedAct {
                discrete: None,
                cont,
            }
        }
    }
}

fn cases() -> Vec<(&'static str, toml::Table)> {
    let t = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
    vec![
        ("CartPole-v1", t("")),
        ("Acrobot-v1", t("")),
        ("MountainCar-v0", t("max_episode_steps = 30")),
        ("MountainCarContinuous-v0", t("max_episode_steps = 40")),
        ("Pendulum-v1", t("max_episode_steps = 25")),
        ("MovieRec-v0", t("drift = 0.05")),
        ("MovieRecSession-v0", t("drift = 0.02\nmask_repeats = true")),
        ("Chain-v0", t("max_episode_steps = 20")),
    ]
}

#[test]
fn every_builtin_env_replays_bit_for_bit_after_restore() {
    let registry = Registry::builtin();
    for (name, params) in cases() {
        let mut env = registry.make(name, &params).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(3), &mut obs).unwrap();
        // Move somewhere mid-episode first.
        rollout_single(env.as_mut(), 17, 100);
        let snap = env
            .snapshot()
            .unwrap_or_else(|| panic!("{name}: no snapshot"));
        let first = rollout_single(env.as_mut(), 300, 7);
        // Through JSON, as checkpoints store it.
        let json = serde_json::to_string(&snap).unwrap();
        let back: EnvSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap, "{name}");
        // Restore into a fresh copy with another seed, and into the same one.
        let mut fresh = registry.make(name, &params).unwrap();
        fresh.reset(Some(999), &mut obs).unwrap();
        fresh.restore(&back).unwrap();
        assert_eq!(
            rollout_single(fresh.as_mut(), 300, 7),
            first,
            "{name} (fresh)"
        );
        env.restore(&snap).unwrap();
        assert_eq!(rollout_single(env.as_mut(), 300, 7), first, "{name} (same)");
        // A different continuation really differs (the test can fail).
        env.restore(&snap).unwrap();
        assert_ne!(rollout_single(env.as_mut(), 300, 8), first, "{name}");
    }
}

#[test]
fn vec_env_replays_copies_buffers_and_autoresets() {
    let registry = Registry::builtin();
    for (name, params) in cases() {
        let make = || {
            VecEnv::new(
                (0..3)
                    .map(|_| registry.make(name, &params).unwrap())
                    .collect(),
            )
            .unwrap()
        };
        let run = |venv: &mut VecEnv, k: usize, seed: u64| -> Vec<u64> {
            let mut rng = EnvRng::seed_from_u64(seed);
            let mut trace = Vec::new();
            for _ in 0..k {
                match venv.action_space().clone() {
                    Space::Discrete { n } => {
                        let a: Vec<usize> = (0..venv.num_envs())
                            .map(|i| {
                                let legal: Vec<usize> = (0..n)
                                    .filter(|&a| venv.action_masks().is_none_or(|m| m[i * n + a]))
                                    .collect();
                                legal[rng.random_range(0..legal.len())]
                            })
                            .collect();
                        venv.step(Actions::Discrete(&a)).unwrap();
                    }
                    space @ Space::Box { .. } => {
                        let d = space.flat_dim();
                        let mut a = vec![0.0; d * venv.num_envs()];
                        for c in a.chunks_mut(d) {
                            space.sample_box_into(&mut rng, c);
                        }
                        venv.step(Actions::Continuous(&a)).unwrap();
                    }
                }
                trace.extend(venv.observations().iter().map(|x| x.to_bits() as u64));
                trace.extend(venv.rewards().iter().map(|r| r.to_bits()));
                for i in 0..venv.num_envs() {
                    if let Some(f) = venv.final_observation(i) {
                        trace.extend(f.iter().map(|x| x.to_bits() as u64));
                    }
                    let info = venv.infos()[i];
                    trace.push(info.episode.map_or(0, |e| e.len));
                    trace.push(info.expected_reward.map_or(1, |r| r.to_bits()));
                }
            }
            trace
        };
        let mut venv = make();
        venv.reset(Some(11)).unwrap();
        run(&mut venv, 23, 1);
        let snap = venv.snapshot().expect("built-ins support snapshots");
        // The buffers as they are now must come back too.
        let obs_now = venv.observations().to_vec();
        let first = run(&mut venv, 250, 2);
        let json = serde_json::to_string(&snap).unwrap();
        let back: EnvSnapshot = serde_json::from_str(&json).unwrap();
        let mut fresh = make();
        fresh.reset(Some(5)).unwrap();
        fresh.restore(&back).unwrap();
        assert_eq!(fresh.observations(), &obs_now[..], "{name}");
        assert_eq!(
            fresh.action_masks().is_some(),
            venv.action_masks().is_some()
        );
        assert_eq!(run(&mut fresh, 250, 2), first, "{name}");
    }
}

#[test]
fn mismatched_snapshots_are_typed_errors() {
    let registry = Registry::builtin();
    let mut cart = registry.make("CartPole-v1", &toml::Table::new()).unwrap();
    let mut obs = Vec::new();
    cart.reset(Some(0), &mut obs).unwrap();
    let snap = cart.snapshot().unwrap();
    let mut acro = registry.make("Acrobot-v1", &toml::Table::new()).unwrap();
    let e = acro.restore(&snap).unwrap_err();
    assert!(
        matches!(e, EnvError::Snapshot { .. }) && e.to_string().contains("CartPole-v1"),
        "{e}"
    );
    // Another time limit.
    let mut short: toml::Table = toml::from_str("max_episode_steps = 10").unwrap();
    let mut cart10 = registry.make("CartPole-v1", &short).unwrap();
    let e = cart10.restore(&snap).unwrap_err();
    assert!(e.to_string().contains("time limit of 500 steps"), "{e}");
    // Another number of copies.
    short.clear();
    let make = |n: usize| {
        VecEnv::new(
            (0..n)
                .map(|_| registry.make("CartPole-v1", &short).unwrap())
                .collect(),
        )
        .unwrap()
    };
    let mut v2 = make(2);
    v2.reset(Some(0)).unwrap();
    let s2 = v2.snapshot().unwrap();
    let mut v3 = make(3);
    let e = v3.restore(&s2).unwrap_err();
    assert!(
        e.to_string()
            .contains("the snapshot has 2 environment copies, this vectorised environment 3"),
        "{e}"
    );
    // A bandit with other parameters.
    let p: toml::Table = toml::from_str("n_movies = 10").unwrap();
    let mut small = registry.make("MovieRec-v0", &p).unwrap();
    let mut big = registry.make("MovieRec-v0", &toml::Table::new()).unwrap();
    big.reset(Some(0), &mut obs).unwrap();
    let e = small.restore(&big.snapshot().unwrap()).unwrap_err();
    assert!(matches!(e, EnvError::Snapshot { .. }), "{e}");
}

/// A custom environment written before snapshots existed.
struct Plain {
    obs: Space,
    act: Space,
}

impl Env for Plain {
    fn name(&self) -> &str {
        "Plain"
    }
    fn observation_space(&self) -> &Space {
        &self.obs
    }
    fn action_space(&self) -> &Space {
        &self.act
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        obs.clear();
        obs.push(0.0);
        Ok(())
    }
    fn step(&mut self, _a: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        obs.clear();
        obs.push(0.0);
        Ok(Step::default())
    }
}

#[test]
fn custom_envs_without_snapshots_say_so() {
    let plain = || Plain {
        obs: Space::uniform_box(1, -1.0, 1.0),
        act: Space::discrete(2),
    };
    let mut p = plain();
    assert!(p.snapshot().is_none());
    let e = p.restore(&EnvSnapshot::new("Plain")).unwrap_err();
    assert!(e.to_string().contains("does not support snapshots"), "{e}");
    let mut v = VecEnv::new(vec![plain(), plain()]).unwrap();
    v.reset(Some(0)).unwrap();
    assert!(v.snapshot().is_none());
}
