//! VecEnv: seeding, autoreset with final observations, episode statistics,
//! threads, masks and buffer checks.

use klrl_envs::{
    Action, CartPole, CartPoleParams, Env, EnvError, Registry, Space, Step, StepInfo, TimeLimit,
    VecEnv,
};

fn cartpole_limited(limit: u64) -> TimeLimit<CartPole> {
    TimeLimit::new(CartPole::new(CartPoleParams::default()).unwrap(), limit).unwrap()
}

/// A fixed, state-dependent action sequence that keeps episodes going for a while.
fn policy(obs: &[f32]) -> usize {
    // Push the cart in the direction the pole is falling.
    (obs[2] + 0.5 * obs[3] > 0.0) as usize
}

#[test]
fn copy_i_is_seeded_with_seed_plus_i() {
    let mut venv = VecEnv::new((0..3).map(|_| cartpole_limited(500)).collect()).unwrap();
    venv.reset(Some(40)).unwrap();
    for i in 0..3 {
        let mut single = CartPole::new(CartPoleParams::default()).unwrap();
        let mut obs = Vec::new();
        single.reset(Some(40 + i as u64), &mut obs).unwrap();
        assert_eq!(&venv.observations()[i * 4..(i + 1) * 4], &obs[..]);
    }
    // Different seeds give different starts.
    assert_ne!(venv.observations()[0..4], venv.observations()[4..8]);
}

#[test]
fn autoreset_hands_back_final_observation_and_matches_a_single_env_replay() {
    // Two copies with a time limit of 12 steps: copy 0 balances and is
    // truncated, copy 1 always pushes right and terminates (the pole falls after
    // about 10 steps); both paths must hand back the final observation.
    let n = 2;
    let mut venv = VecEnv::new((0..n).map(|_| cartpole_limited(12)).collect()).unwrap();
    venv.reset(Some(3)).unwrap();
    let mut singles: Vec<_> = (0..n).map(|_| cartpole_limited(12)).collect();
    let mut single_obs: Vec<Vec<f32>> = vec![Vec::new(); n];
    for (i, s) in singles.iter_mut().enumerate() {
        s.reset(Some(3 + i as u64), &mut single_obs[i]).unwrap();
    }
    let (mut truncations, mut terminations) = (0, 0);
    for _ in 0..60 {
        let actions: Vec<usize> = (0..n)
            .map(|i| {
                if i == 1 {
                    1
                } else {
                    policy(&venv.observations()[i * 4..])
                }
            })
            .collect();
        venv.step_discrete(&actions).unwrap();
        for i in 0..n {
            let step = singles[i]
                .step(Action::Discrete(actions[i]), &mut single_obs[i])
                .unwrap();
            assert_eq!(venv.rewards()[i], step.reward);
            assert_eq!(venv.terminated()[i], step.terminated);
            assert_eq!(venv.truncated()[i], step.truncated);
            if step.done() {
                truncations += step.truncated as usize;
                terminations += (step.terminated && !step.truncated) as usize;
                // The final observation is the one the single env produced...
                assert_eq!(venv.final_observation(i).unwrap(), &single_obs[i][..]);
                // ...and the slot now holds the next episode's first observation,
                // drawn from the continuing RNG stream (reset without a seed).
                singles[i].reset(None, &mut single_obs[i]).unwrap();
            } else {
                assert!(venv.final_observation(i).is_none());
            }
            assert_eq!(&venv.observations()[i * 4..(i + 1) * 4], &single_obs[i][..]);
        }
    }
    assert!(truncations > 0, "the test must exercise truncation");
    assert!(terminations > 0, "the test must exercise termination");
}

#[test]
fn episode_statistics_report_return_and_length() {
    let mut venv = VecEnv::new(vec![cartpole_limited(10)]).unwrap();
    venv.reset(Some(0)).unwrap();
    let mut finished = Vec::new();
    for _ in 0..35 {
        let a = policy(venv.observations());
        venv.step_discrete(&[a]).unwrap();
        if let Some(ep) = venv.infos()[0].episode {
            assert!(venv.terminated()[0] || venv.truncated()[0]);
            finished.push(ep);
        } else {
            assert!(!venv.terminated()[0] && !venv.truncated()[0]);
        }
    }
    // The balancing policy survives 10 steps: three truncated episodes.
    assert_eq!(finished.len(), 3);
    for ep in finished {
        assert_eq!(ep.len, 10);
        assert_eq!(ep.ret, 10.0);
    }
}

#[test]
fn threaded_stepping_gives_identical_results() {
    let run = |threads: usize| {
        let mut venv = VecEnv::new((0..7).map(|_| cartpole_limited(20)).collect())
            .unwrap()
            .with_threads(threads);
        venv.reset(Some(11)).unwrap();
        let mut trace = Vec::new();
        for t in 0..100 {
            let actions: Vec<usize> = (0..7).map(|i| (t * 7 + i) % 3 % 2).collect();
            venv.step_discrete(&actions).unwrap();
            trace.extend_from_slice(venv.observations());
            trace.extend(venv.rewards().iter().map(|&r| r as f32));
            for i in 0..7 {
                if let Some(f) = venv.final_observation(i) {
                    trace.extend_from_slice(f);
                }
            }
        }
        trace
    };
    let sequential = run(1);
    assert_eq!(sequential, run(3));
    assert_eq!(sequential, run(7));
    assert_eq!(sequential, run(16));
}

#[test]
fn same_seed_same_trajectory_different_seed_differs() {
    let run = |seed: u64| {
        let registry = Registry::builtin();
        let envs = (0..4)
            .map(|_| registry.make("CartPole-v1", &Default::default()).unwrap())
            .collect();
        let mut venv = VecEnv::new(envs).unwrap();
        venv.reset(Some(seed)).unwrap();
        let mut trace = venv.observations().to_vec();
        for t in 0..300 {
            let actions: Vec<usize> = (0..4).map(|i| (t + i) % 2).collect();
            venv.step_discrete(&actions).unwrap();
            trace.extend_from_slice(venv.observations());
        }
        trace
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn buffer_and_order_errors() {
    let mut venv = VecEnv::new((0..2).map(|_| cartpole_limited(5)).collect()).unwrap();
    let err = venv.step_discrete(&[0, 1]).unwrap_err();
    assert!(err.to_string().contains("before reset()"), "{err}");
    venv.reset(Some(0)).unwrap();
    let err = venv.step_discrete(&[0]).unwrap_err();
    assert!(
        err.to_string().contains("got 1 action values, expected 2"),
        "{err}"
    );
    let err = venv.step_continuous(&[0.0, 1.0]).unwrap_err();
    assert!(err.to_string().contains("continuous action"), "{err}");
    // An invalid action names the copy and the environment, and is caught
    // before any copy steps, so the batch can be retried.
    let before = venv.observations().to_vec();
    let err = venv.step_discrete(&[0, 2]).unwrap_err();
    assert!(
        matches!(&err, EnvError::InCopy { index: 1, source } if matches!(**source, EnvError::InvalidAction { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("copy 1: CartPole-v1: invalid action"),
        "{err}"
    );
    assert_eq!(venv.observations(), &before[..]);
    venv.step_discrete(&[0, 0]).unwrap();
}

#[test]
fn an_error_inside_a_copy_stops_the_batch_until_reset() {
    // A reward that becomes NaN on the second step of copy 1.
    let envs: Vec<Box<dyn Env>> = vec![Box::new(NanAfter::new(100)), Box::new(NanAfter::new(2))];
    let mut venv = VecEnv::new(envs).unwrap();
    venv.reset(Some(0)).unwrap();
    venv.step_discrete(&[0, 0]).unwrap();
    let err = venv.step_discrete(&[0, 0]).unwrap_err();
    assert!(
        err.to_string()
            .contains("copy 1: NanAfter: step() produced a non-finite reward NaN"),
        "{err}"
    );
    // Copy 0 has stepped and copy 1 has not: the batch is half-stepped, so the
    // vectorised environment refuses to go on until it is reset.
    let err = venv.step_discrete(&[0, 0]).unwrap_err();
    assert!(err.to_string().contains("call reset() first"), "{err}");
    venv.reset(None).unwrap();
    venv.step_discrete(&[0, 0]).unwrap();
}

/// Returns reward NaN on step `bad` of every episode.
struct NanAfter {
    bad: u32,
    t: u32,
    obs_space: Space,
    act_space: Space,
}

impl NanAfter {
    fn new(bad: u32) -> Self {
        NanAfter {
            bad,
            t: 0,
            obs_space: Space::uniform_box(1, 0.0, 1.0),
            act_space: Space::discrete(1),
        }
    }
}

impl Env for NanAfter {
    fn name(&self) -> &str {
        "NanAfter"
    }
    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        self.t = 0;
        obs.clear();
        obs.push(0.0);
        Ok(())
    }
    fn step(&mut self, _action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        self.t += 1;
        obs.clear();
        obs.push(0.5);
        let reward = if self.t == self.bad { f64::NAN } else { 1.0 };
        Ok(Step {
            reward,
            ..Step::default()
        })
    }
}

#[test]
fn copies_with_different_spaces_are_rejected() {
    let registry = Registry::builtin();
    let a = registry.make("CartPole-v1", &Default::default()).unwrap();
    let b: Box<dyn Env> = Box::new(MaskedChoice::new());
    let err = VecEnv::new(vec![a, b]).err().unwrap();
    assert!(err.to_string().contains("different spaces"), "{err}");
    assert!(VecEnv::<CartPole>::new(vec![]).is_err());
}

/// Three actions; after taking action k, action k is masked until the episode
/// ends three steps later.
struct MaskedChoice {
    mask: [bool; 3],
    t: u32,
    obs_space: Space,
    act_space: Space,
}

impl MaskedChoice {
    fn new() -> Self {
        MaskedChoice {
            mask: [true; 3],
            t: 0,
            obs_space: Space::uniform_box(3, 0.0, 1.0),
            act_space: Space::discrete(3),
        }
    }
    fn write(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.extend(self.mask.iter().map(|&m| m as u8 as f32));
    }
}

impl Env for MaskedChoice {
    fn name(&self) -> &str {
        "MaskedChoice"
    }
    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }
    fn action_mask(&self) -> Option<&[bool]> {
        Some(&self.mask)
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        self.mask = [true; 3];
        self.t = 0;
        self.write(obs);
        Ok(())
    }
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        let Action::Discrete(a) = action else {
            unreachable!()
        };
        self.mask[a] = false;
        self.t += 1;
        self.write(obs);
        Ok(Step {
            reward: a as f64,
            terminated: self.t == 3,
            truncated: false,
            info: StepInfo::default(),
        })
    }
}

#[test]
fn action_masks_are_collected_and_enforced() {
    let mut venv = VecEnv::new(vec![MaskedChoice::new(), MaskedChoice::new()]).unwrap();
    venv.reset(Some(0)).unwrap();
    assert_eq!(venv.action_masks().unwrap(), &[true; 6]);
    venv.step_discrete(&[0, 2]).unwrap();
    assert_eq!(
        venv.action_masks().unwrap(),
        &[false, true, true, true, true, false]
    );
    let err = venv.step_discrete(&[0, 1]).unwrap_err();
    assert!(err.to_string().contains("action 0 is masked out"), "{err}");
    venv.reset(None).unwrap();
    venv.step_discrete(&[0, 2]).unwrap();
    venv.step_discrete(&[1, 1]).unwrap();
    venv.step_discrete(&[2, 0]).unwrap();
    // The episode ended and autoreset restored the full masks.
    assert!(venv.terminated().iter().all(|&t| t));
    assert_eq!(venv.action_masks().unwrap(), &[true; 6]);
    assert_eq!(venv.final_observation(0).unwrap(), &[0.0, 0.0, 0.0]);
}
