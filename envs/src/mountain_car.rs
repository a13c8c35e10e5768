//! `MountainCar-v0`: a port of Gymnasium 1.x `classic_control/mountain_car.py`.
//!
//! An under-powered car sits in a valley between two hills and must reach the
//! flag on the right hilltop (position ≥ 0.5) by rocking back and forth. Actions:
//! 0 accelerate left, 1 do nothing, 2 accelerate right. Every step costs −1,
//! including the one that reaches the goal. The registry adds a time limit of
//! 200 steps; the reward threshold is −110. Moore (1990), "Efficient
//! memory-based learning for robot control", PhD thesis, University of
//! Cambridge; Sutton & Barto (2018), *Reinforcement Learning: An Introduction*,
//! §10.1.
//!
//! Dynamics (one step, semi-implicit):
//! v ← clip(v + (a − 1)·0.001 − 0.0025·cos(3x), −0.07, 0.07);
//! x ← clip(x + v, −1.2, 0.6); v ← 0 if x = −1.2 and v < 0 (the car hits the
//! left wall). The episode terminates when x ≥ 0.5 and v ≥ `goal_velocity`.
//! State `[x, v]` in f64, observation the same in f32.

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::classic;
use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, Space, Step};

const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
const GOAL_POSITION: f64 = 0.5;
/// Acceleration of the engine per step.
const FORCE: f64 = 0.001;
/// Gravity's pull along the slope is −GRAVITY·cos(3x).
const GRAVITY: f64 = 0.0025;
/// Reset position ~ U(−0.6, −0.4), velocity 0.
const RESET_LOW: f64 = -0.6;
const RESET_HIGH: f64 = -0.4;

/// Parameters of `MountainCar-v0` (all optional in a config).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountainCarParams {
    /// Gymnasium's `goal_velocity`: the episode terminates when the car is at
    /// the goal position with at least this velocity. Default 0. Must be
    /// finite and at most 0.07 (the speed limit; a larger value could never be
    /// reached).
    pub goal_velocity: f64,
}

/// The mountain-car environment (without its time limit; see the registry).
#[derive(Debug, Clone)]
pub struct MountainCar {
    params: MountainCarParams,
    /// [position, velocity].
    state: [f64; 2],
    rng: EnvRng,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl MountainCar {
    /// Registry name.
    pub const NAME: &'static str = "MountainCar-v0";
    /// Gymnasium's time limit for `MountainCar-v0`.
    pub const MAX_EPISODE_STEPS: u64 = 200;
    /// Gymnasium's reward threshold for `MountainCar-v0`.
    pub const REWARD_THRESHOLD: f64 = -110.0;

    /// A mountain car with the given parameters, or
    /// [`EnvError::InvalidParameter`] if `goal_velocity` is not finite or
    /// exceeds the speed limit 0.07. Its RNG starts from seed 0 until
    /// `reset(Some(seed))`.
    pub fn new(params: MountainCarParams) -> Result<Self, EnvError> {
        let gv = params.goal_velocity;
        if !gv.is_finite() || gv > MAX_SPEED {
            return Err(EnvError::param(
                Self::NAME,
                "goal_velocity",
                format!("must be finite and <= {MAX_SPEED} (the speed limit), got {gv}"),
            ));
        }
        Ok(MountainCar {
            params,
            state: [0.0; 2],
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::box1d(
                vec![MIN_POSITION as f32, -MAX_SPEED as f32],
                vec![MAX_POSITION as f32, MAX_SPEED as f32],
            ),
            action_space: Space::discrete(3),
        })
    }

    /// The physical state `[position, velocity]`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Overwrite the physical state (used to compare trajectories with
    /// Gymnasium); the episode counts as running afterwards.
    pub fn set_state(&mut self, state: [f64; 2]) {
        self.state = state;
        self.needs_reset = false;
    }

    fn write_obs(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.extend(self.state.iter().map(|&s| s as f32));
    }
}

impl Env for MountainCar {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// State: the physical state, `[needs_reset]`, the RNG.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        Some(classic::snapshot(
            Self::NAME,
            &self.state,
            self.needs_reset,
            &self.rng,
        ))
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        classic::restore(
            Self::NAME,
            snapshot,
            &mut self.state,
            &mut self.needs_reset,
            &mut self.rng,
        )
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        classic::reseed(&mut self.rng, seed);
        self.state = [self.rng.random_range(RESET_LOW..RESET_HIGH), 0.0];
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        classic::check_step(Self::NAME, &self.action_space, action, self.needs_reset)?;
        let Action::Discrete(a) = action else {
            unreachable!("check_action admits only discrete actions")
        };
        let [position, velocity] = self.state;
        // Gymnasium evaluates the right-hand side of `velocity += ...` first.
        let velocity = velocity + ((a as f64 - 1.0) * FORCE + (3.0 * position).cos() * (-GRAVITY));
        let velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        let position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION);
        let velocity = if position == MIN_POSITION && velocity < 0.0 {
            0.0
        } else {
            velocity
        };
        self.state = [position, velocity];
        let terminated = position >= GOAL_POSITION && velocity >= self.params.goal_velocity;
        self.needs_reset = terminated;
        self.write_obs(obs);
        Ok(Step {
            reward: -1.0,
            terminated,
            truncated: false,
            info: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    /// The error `Registry::make` gives for the config `src`.
    fn registry_error(src: &str) -> EnvError {
        let table: toml::Table = toml::from_str(src).unwrap();
        match Registry::builtin().make(MountainCar::NAME, &table) {
            Ok(_) => panic!("accepted {src}"),
            Err(e) => e,
        }
    }

    fn make(goal_velocity: f64) -> Result<MountainCar, EnvError> {
        MountainCar::new(MountainCarParams { goal_velocity })
    }

    #[test]
    fn bad_goal_velocity_is_rejected_by_name() {
        for bad in [0.08, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = make(bad).unwrap_err();
            match &err {
                EnvError::InvalidParameter { env, param, .. } => {
                    assert_eq!(
                        (env.as_str(), param.as_str()),
                        (MountainCar::NAME, "goal_velocity")
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(make(0.07).is_ok() && make(-1.0).is_ok());
        // Through the registry, from a config table (an integer is accepted).
        let reg = Registry::builtin();
        let err = registry_error("goal_velocity = 1");
        assert!(err.to_string().contains("goal_velocity"), "{err}");
        let table: toml::Table = toml::from_str("goal_velocity = 0").unwrap();
        assert!(reg.make(MountainCar::NAME, &table).is_ok());
        let err = registry_error("goal_speed = 0.0");
        assert!(matches!(err, EnvError::BadParameters { .. }), "{err:?}");
        assert!(err.to_string().contains("goal_speed"), "{err}");
    }

    #[test]
    fn out_of_range_action_is_invalid() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        let before = env.state();
        for bad in [Action::Discrete(3), Action::Continuous(&[0.0])] {
            let err = env.step(bad, &mut obs).unwrap_err();
            assert!(matches!(err, EnvError::InvalidAction { .. }), "{err:?}");
        }
        assert_eq!(env.state(), before);
    }

    #[test]
    fn step_before_reset_and_after_termination_needs_reset() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        let err = env.step(Action::Discrete(2), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
        env.set_state([0.55, 0.03]);
        let step = env.step(Action::Discrete(2), &mut obs).unwrap();
        assert!(step.terminated);
        assert_eq!(step.reward, -1.0);
        let err = env.step(Action::Discrete(2), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
    }

    #[test]
    fn left_wall_stops_the_car_and_speed_is_limited() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        env.set_state([-1.19, -0.07]);
        env.step(Action::Discrete(0), &mut obs).unwrap();
        assert_eq!(env.state(), [MIN_POSITION, 0.0]);
        env.set_state([-0.5, 0.07]);
        env.step(Action::Discrete(2), &mut obs).unwrap();
        assert_eq!(env.state()[1], MAX_SPEED);
        // goal_velocity: at the goal but too slow does not terminate.
        let mut env = make(0.01).unwrap();
        env.set_state([0.52, 0.0]);
        assert!(!env.step(Action::Discrete(1), &mut obs).unwrap().terminated);
    }

    fn trajectory(seed: u64) -> Vec<Vec<f32>> {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(seed), &mut obs).unwrap();
        let mut out = vec![obs.clone()];
        for t in 0..50 {
            env.step(Action::Discrete(t % 3), &mut obs).unwrap();
            out.push(obs.clone());
        }
        out
    }

    #[test]
    fn same_seed_same_trajectory_different_seed_differs() {
        assert_eq!(trajectory(5), trajectory(5));
        assert_ne!(trajectory(5)[0], trajectory(6)[0]);
    }

    #[test]
    fn reset_state_lies_in_reset_range() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for seed in 0..300 {
            env.reset(Some(seed), &mut obs).unwrap();
            let [x, v] = env.state();
            assert!((RESET_LOW..RESET_HIGH).contains(&x), "{x}");
            assert_eq!(v, 0.0);
            assert!(env.observation_space().contains(Action::Continuous(&obs)));
            min = min.min(x);
            max = max.max(x);
        }
        assert!(min < -0.59 && max > -0.41, "{min} {max}");
    }

    #[test]
    fn registry_truncates_at_200_steps() {
        let mut env = Registry::builtin()
            .make(MountainCar::NAME, &Default::default())
            .unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        // Doing nothing never leaves the valley.
        for t in 1..=200 {
            let step = env.step(Action::Discrete(1), &mut obs).unwrap();
            assert!(!step.terminated);
            assert_eq!(step.truncated, t == 200, "step {t}");
        }
    }
}
