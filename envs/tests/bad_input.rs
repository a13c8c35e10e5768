//! Every class of bad input is a typed error that says what happened and where.

use klrl_envs::{
    Action, CartPole, CartPoleParams, Checked, Env, EnvError, Registry, Space, Step, StepInfo,
};

/// A custom environment that misbehaves in a configurable way.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    ShortObservationOnReset,
    LongObservationOnStep,
    NanObservation,
    InfiniteReward,
    MaskTooShort,
}

struct Faulty {
    fault: Fault,
    obs_space: Space,
    act_space: Space,
    mask: Vec<bool>,
}

impl Faulty {
    fn new(fault: Fault, act_space: Space) -> Self {
        let mask = match fault {
            Fault::MaskTooShort => vec![true],
            _ => vec![true; act_space.n().unwrap_or(0)],
        };
        Faulty {
            fault,
            obs_space: Space::uniform_box(2, -1.0, 1.0),
            act_space,
            mask,
        }
    }
}

impl Env for Faulty {
    fn name(&self) -> &str {
        "Faulty"
    }
    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }
    fn action_mask(&self) -> Option<&[bool]> {
        self.act_space.n().map(|_| &self.mask[..])
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        obs.clear();
        obs.push(0.0);
        if self.fault != Fault::ShortObservationOnReset {
            obs.push(0.0);
        }
        Ok(())
    }
    fn step(&mut self, _action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        obs.clear();
        obs.extend_from_slice(&[0.5, 0.5]);
        match self.fault {
            Fault::LongObservationOnStep => obs.push(0.5),
            Fault::NanObservation => obs[1] = f32::NAN,
            _ => {}
        }
        let reward = if self.fault == Fault::InfiniteReward {
            f64::INFINITY
        } else {
            1.0
        };
        Ok(Step {
            reward,
            terminated: false,
            truncated: false,
            info: StepInfo::default(),
        })
    }
}

fn checked(fault: Fault) -> Checked<Faulty> {
    Checked::new(Faulty::new(fault, Space::discrete(3)))
}

#[test]
fn action_outside_the_space() {
    let mut env = CartPole::new(CartPoleParams::default()).unwrap();
    let mut obs = Vec::new();
    env.reset(Some(0), &mut obs).unwrap();
    let err = env.step(Action::Discrete(2), &mut obs).unwrap_err();
    assert!(matches!(err, EnvError::InvalidAction { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "CartPole-v1: invalid action Discrete(2): must be in 0..2"
    );
    let err = env.step(Action::Continuous(&[1.0]), &mut obs).unwrap_err();
    assert!(matches!(err, EnvError::InvalidAction { .. }), "{err:?}");
}

#[test]
fn nan_action() {
    let mut env = Checked::new(Faulty::new(Fault::None, Space::uniform_box(2, -1.0, 1.0)));
    let mut obs = Vec::new();
    env.reset(None, &mut obs).unwrap();
    let err = env
        .step(Action::Continuous(&[0.0, f32::NAN]), &mut obs)
        .unwrap_err();
    assert!(matches!(err, EnvError::InvalidAction { .. }), "{err:?}");
    assert!(err.to_string().contains("element 1 is NaN"), "{err}");
    let err = env
        .step(Action::Continuous(&[0.0, 1.5]), &mut obs)
        .unwrap_err();
    assert!(err.to_string().contains("outside [-1, 1]"), "{err}");
}

#[test]
fn step_after_termination_without_reset() {
    // The built-in environment refuses by itself...
    let mut env = CartPole::new(CartPoleParams::default()).unwrap();
    let mut obs = Vec::new();
    env.reset(Some(0), &mut obs).unwrap();
    let mut steps = 0;
    while !env.step(Action::Discrete(1), &mut obs).unwrap().terminated {
        steps += 1;
        assert!(steps < 100, "constant pushing must topple the pole");
    }
    let err = env.step(Action::Discrete(1), &mut obs).unwrap_err();
    assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
    env.reset(None, &mut obs).unwrap();
    env.step(Action::Discrete(1), &mut obs).unwrap();

    // ...and Checked enforces it for any environment, truncation included.
    let registry = Registry::builtin();
    let mut params = toml::Table::new();
    params.insert("max_episode_steps".into(), toml::Value::Integer(3));
    let mut env = Checked::new(registry.make("CartPole-v1", &params).unwrap());
    env.reset(Some(0), &mut obs).unwrap();
    for _ in 0..2 {
        assert!(!env.step(Action::Discrete(0), &mut obs).unwrap().done());
    }
    assert!(env.step(Action::Discrete(1), &mut obs).unwrap().truncated);
    let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CartPole-v1: step() called after the episode ended (terminated or truncated); call reset() first"
    );
}

#[test]
fn step_before_first_reset() {
    let mut obs = Vec::new();
    let err = checked(Fault::None)
        .step(Action::Discrete(0), &mut obs)
        .unwrap_err();
    assert!(
        err.to_string().contains("before the first reset()"),
        "{err}"
    );
    let err = CartPole::new(CartPoleParams::default())
        .unwrap()
        .step(Action::Discrete(0), &mut obs)
        .unwrap_err();
    assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
}

#[test]
fn custom_env_observation_of_the_wrong_length() {
    let mut obs = Vec::new();
    let err = checked(Fault::ShortObservationOnReset)
        .reset(None, &mut obs)
        .unwrap_err();
    assert_eq!(
        err,
        EnvError::ObservationLength {
            env: "Faulty".into(),
            call: "reset",
            expected: 2,
            got: 1
        }
    );
    let mut env = checked(Fault::LongObservationOnStep);
    env.reset(None, &mut obs).unwrap();
    let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Faulty: step() produced an observation of length 3, but the observation space has 2 elements"
    );
}

#[test]
fn custom_env_non_finite_observation_and_reward() {
    let mut obs = Vec::new();
    let mut env = checked(Fault::NanObservation);
    env.reset(None, &mut obs).unwrap();
    let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
    assert!(
        matches!(err, EnvError::NonFiniteObservation { index: 1, .. }),
        "{err:?}"
    );
    let mut env = checked(Fault::InfiniteReward);
    env.reset(None, &mut obs).unwrap();
    let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Faulty: step() produced a non-finite reward inf"
    );
}

#[test]
fn custom_env_mask_of_the_wrong_length() {
    let mut obs = Vec::new();
    let err = checked(Fault::MaskTooShort)
        .reset(None, &mut obs)
        .unwrap_err();
    assert!(
        matches!(
            err,
            EnvError::MaskLength {
                expected: 3,
                got: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_environment_name() {
    let err = Registry::builtin()
        .make("CartPole-v0", &toml::Table::new())
        .err()
        .unwrap();
    assert!(matches!(err, EnvError::UnknownEnv { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("unknown environment `CartPole-v0`; registered environments: CartPole-v1"),
        "{msg}"
    );
}

#[test]
fn bad_parameter_tables() {
    let registry = Registry::builtin();
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let err = registry
        .make("CartPole-v1", &table("gravity = 3.0\nfriction = 3.0"))
        .err()
        .unwrap();
    assert!(matches!(err, EnvError::BadParameters { .. }), "{err:?}");
    assert!(
        err.to_string().contains("unknown field `friction`"),
        "{err}"
    );
    let err = registry
        .make("CartPole-v1", &table("sutton_barto_reward = 1"))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("sutton_barto_reward: invalid type: integer `1`, expected a boolean"),
        "{err}"
    );
    for bad in [
        "max_episode_steps = 0",
        "max_episode_steps = -5",
        "max_episode_steps = 'x'",
        "max_episode_steps = 1000001",
        "max_episode_steps = 9000000000000000000",
    ] {
        let err = registry.make("CartPole-v1", &table(bad)).err().unwrap();
        assert!(
            err.to_string().starts_with(
                "CartPole-v1: invalid parameter `max_episode_steps`: must be an integer in [1, 1000000]"
            ),
            "{bad}: {err}"
        );
    }
}

#[test]
fn duplicate_registration() {
    let mut registry = Registry::builtin();
    let err = registry
        .register("CartPole-v1", "again", None, None, |_| {
            Ok(Box::new(CartPole::new(CartPoleParams::default())?))
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "an environment named `CartPole-v1` is already registered"
    );
}
