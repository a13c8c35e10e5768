//! `MountainCarContinuous-v0`: a port of Gymnasium 1.x
//! `classic_control/continuous_mountain_car.py`.
//!
//! The car of [`MountainCar`](crate::MountainCar) with a continuous engine:
//! the action is a force u ∈ [−1, 1] (a one-element box). Every step costs
//! 0.1·u²; reaching the flag (position ≥ 0.45 with velocity ≥
//! `goal_velocity`) terminates the episode and adds 100. The registry adds a
//! time limit of 999 steps; the reward threshold is 90. Moore (1990),
//! "Efficient memory-based learning for robot control".
//!
//! Dynamics (one step, semi-implicit):
//! v ← clip(v + 0.0015·u − 0.0025·cos(3x), −0.07, 0.07);
//! x ← clip(x + v, −1.2, 0.6); v ← 0 if x = −1.2 and v < 0.
//! Reset: x ~ U(−0.6, −0.4), v = 0.
//!
//! Differences from Gymnasium: an action outside [−1, 1] (or NaN) is an
//! [`EnvError::InvalidAction`] instead of being clipped silently, as for
//! [`Pendulum`](crate::Pendulum); clip in the learner. Reset bounds are not
//! options.
//!
//! # Precision
//!
//! Gymnasium's step mixes float32 and float64 in a way that depends on where
//! the state came from, and the port reproduces it so that trajectories match
//! bit for bit (numpy 2's promotion rules, NEP 50: a Python float meeting a
//! numpy float32 is converted to float32, also in comparisons):
//!
//! - after `reset` (or `set_state`) the state is a float64 array; after a step
//!   it is a float32 array (`np.array([x, v], dtype=np.float32)`);
//! - `force * power` is float32 (the float32 action times 0.0015 as float32);
//!   `0.0025 * cos(3x)` is a Python float (float64; `3x` is float32 when x is),
//!   and their difference is float32;
//! - that difference is added to v in float32 when v is float32, in float64
//!   when v is float64; the new position likewise;
//! - the clip and goal comparisons of a float32 value against 0.07, 0.6,
//!   −1.2, 0.45 and `goal_velocity` are made in float32 (so position
//!   float32(0.45) = 0.44999998… reaches the goal), those of a value the clip
//!   replaced (a Python float) in float64;
//! - the reward is float64: `0.0 − 0.1·u²` or `100.0 − 0.1·u²`.

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::classic;
use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, RngState, Space, Step};

const MIN_ACTION: f32 = -1.0;
const MAX_ACTION: f32 = 1.0;
const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
/// 0.45 here, not MountainCar's 0.5 (Arnaud de Broissia's version).
const GOAL_POSITION: f64 = 0.45;
/// Acceleration per unit of force; float32 in Gymnasium's arithmetic.
const POWER: f64 = 0.0015;
/// Gravity's pull along the slope is −GRAVITY·cos(3x).
const GRAVITY: f64 = 0.0025;
/// Reward for reaching the goal.
const GOAL_REWARD: f64 = 100.0;
/// Weight of the action cost u².
const ACTION_COST: f64 = 0.1;
/// Reset position ~ U(−0.6, −0.4), velocity 0.
const RESET_LOW: f64 = -0.6;
const RESET_HIGH: f64 = -0.4;

/// Parameters of `MountainCarContinuous-v0` (all optional in a config).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountainCarContinuousParams {
    /// Gymnasium's `goal_velocity`: the episode terminates when the car is at
    /// the goal position with at least this velocity. Default 0. Must be
    /// finite and at most 0.07 (the speed limit; a larger value could never be
    /// reached).
    pub goal_velocity: f64,
}

/// A scalar as Gymnasium's step holds it: a numpy float32 (read from a
/// float32 state) or a float64 (read from a float64 state, or a Python float
/// the clip put there). Comparisons with a Python constant follow NEP 50.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    F32(f32),
    F64(f64),
}

impl Scalar {
    fn gt(self, c: f64) -> bool {
        match self {
            Scalar::F32(x) => x > c as f32,
            Scalar::F64(x) => x > c,
        }
    }
    fn lt(self, c: f64) -> bool {
        match self {
            Scalar::F32(x) => x < c as f32,
            Scalar::F64(x) => x < c,
        }
    }
    fn ge(self, c: f64) -> bool {
        match self {
            Scalar::F32(x) => x >= c as f32,
            Scalar::F64(x) => x >= c,
        }
    }
    fn eq(self, c: f64) -> bool {
        match self {
            Scalar::F32(x) => x == c as f32,
            Scalar::F64(x) => x == c,
        }
    }
    /// The value as a float64.
    fn value(self) -> f64 {
        match self {
            Scalar::F32(x) => f64::from(x),
            Scalar::F64(x) => x,
        }
    }
    /// The value stored by `np.array(..., dtype=np.float32)`.
    fn to_f32(self) -> f32 {
        match self {
            Scalar::F32(x) => x,
            Scalar::F64(x) => x as f32,
        }
    }
}

/// The continuous mountain car (without its time limit; see the registry).
#[derive(Debug, Clone)]
pub struct MountainCarContinuous {
    params: MountainCarContinuousParams,
    /// [position, velocity]; values of f32 when `state_is_f32`.
    state: [f64; 2],
    /// Whether Gymnasium would hold the state as float32 (after a step) rather
    /// than float64 (after reset or `set_state`); see the module docs.
    state_is_f32: bool,
    rng: EnvRng,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl MountainCarContinuous {
    /// Registry name.
    pub const NAME: &'static str = "MountainCarContinuous-v0";
    /// Gymnasium's time limit for `MountainCarContinuous-v0`.
    pub const MAX_EPISODE_STEPS: u64 = 999;
    /// Gymnasium's reward threshold for `MountainCarContinuous-v0`.
    pub const REWARD_THRESHOLD: f64 = 90.0;

    /// A continuous mountain car with the given parameters, or
    /// [`EnvError::InvalidParameter`] if `goal_velocity` is not finite or
    /// exceeds the speed limit 0.07. Its RNG starts from seed 0 until
    /// `reset(Some(seed))`.
    pub fn new(params: MountainCarContinuousParams) -> Result<Self, EnvError> {
        let gv = params.goal_velocity;
        if !gv.is_finite() || gv > MAX_SPEED {
            return Err(EnvError::param(
                Self::NAME,
                "goal_velocity",
                format!("must be finite and <= {MAX_SPEED} (the speed limit), got {gv}"),
            ));
        }
        Ok(MountainCarContinuous {
            params,
            state: [0.0; 2],
            state_is_f32: false,
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::box1d(
                vec![MIN_POSITION as f32, -MAX_SPEED as f32],
                vec![MAX_POSITION as f32, MAX_SPEED as f32],
            ),
            action_space: Space::uniform_box(1, MIN_ACTION, MAX_ACTION),
        })
    }

    /// The physical state `[position, velocity]`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Overwrite the physical state with float64 values, as Gymnasium's
    /// `env.unwrapped.state = np.array(..., dtype=np.float64)` (used to compare
    /// trajectories with Gymnasium); the episode counts as running afterwards.
    pub fn set_state(&mut self, state: [f64; 2]) {
        self.state = state;
        self.state_is_f32 = false;
        self.needs_reset = false;
    }

    /// Overwrite the physical state with float32 values, as Gymnasium holds
    /// it after a step (`np.array(..., dtype=np.float32)`); the episode counts
    /// as running afterwards.
    pub fn set_state_f32(&mut self, state: [f32; 2]) {
        self.state = state.map(f64::from);
        self.state_is_f32 = true;
        self.needs_reset = false;
    }

    fn write_obs(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.extend(self.state.iter().map(|&s| s as f32));
    }
}

impl Env for MountainCarContinuous {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// State: floats = the physical state, flags = `[needs_reset,
    /// state_is_f32]`, the RNG.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new(Self::NAME);
        s.floats = self.state.to_vec();
        s.flags = vec![self.needs_reset, self.state_is_f32];
        s.rngs = vec![RngState::of(&self.rng)];
        Some(s)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        snapshot.expect(Self::NAME, Self::NAME, [2, 0, 2, 1, 0])?;
        self.state.copy_from_slice(&snapshot.floats);
        self.needs_reset = snapshot.flags[0];
        self.state_is_f32 = snapshot.flags[1];
        self.rng = snapshot.rngs[0].to_rng();
        Ok(())
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        classic::reseed(&mut self.rng, seed);
        self.state = [self.rng.random_range(RESET_LOW..RESET_HIGH), 0.0];
        self.state_is_f32 = false;
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        classic::check_step(Self::NAME, &self.action_space, action, self.needs_reset)?;
        let Action::Continuous(&[force]) = action else {
            unreachable!("check_action admits only one-element continuous actions")
        };
        let [x, v] = self.state;
        let (position, velocity) = if self.state_is_f32 {
            (Scalar::F32(x as f32), Scalar::F32(v as f32))
        } else {
            (Scalar::F64(x), Scalar::F64(v))
        };
        // velocity += force * power - 0.0025 * cos(3 * position)
        let slope = GRAVITY
            * match position {
                Scalar::F32(x) => f64::from(3.0_f32 * x).cos(),
                Scalar::F64(x) => (3.0 * x).cos(),
            };
        let dv = force * POWER as f32 - slope as f32;
        let mut velocity = match velocity {
            Scalar::F32(v) => Scalar::F32(v + dv),
            Scalar::F64(v) => Scalar::F64(v + f64::from(dv)),
        };
        if velocity.gt(MAX_SPEED) {
            velocity = Scalar::F64(MAX_SPEED);
        }
        if velocity.lt(-MAX_SPEED) {
            velocity = Scalar::F64(-MAX_SPEED);
        }
        // position += velocity (a Python float meeting a float32 becomes float32)
        let mut position = match position {
            Scalar::F32(x) => Scalar::F32(x + velocity.to_f32()),
            Scalar::F64(x) => Scalar::F64(x + velocity.value()),
        };
        if position.gt(MAX_POSITION) {
            position = Scalar::F64(MAX_POSITION);
        }
        if position.lt(MIN_POSITION) {
            position = Scalar::F64(MIN_POSITION);
        }
        if position.eq(MIN_POSITION) && velocity.lt(0.0) {
            velocity = Scalar::F64(0.0);
        }
        let terminated = position.ge(GOAL_POSITION) && velocity.ge(self.params.goal_velocity);
        // math.pow(u, 2) of a float32 u is exact in float64.
        let u = f64::from(force);
        let base = if terminated { GOAL_REWARD } else { 0.0 };
        let reward = base - u * u * ACTION_COST;
        self.state = [f64::from(position.to_f32()), f64::from(velocity.to_f32())];
        self.state_is_f32 = true;
        self.needs_reset = terminated;
        self.write_obs(obs);
        Ok(Step {
            reward,
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
        match Registry::builtin().make(MountainCarContinuous::NAME, &table) {
            Ok(_) => panic!("accepted {src}"),
            Err(e) => e,
        }
    }

    fn make(goal_velocity: f64) -> Result<MountainCarContinuous, EnvError> {
        MountainCarContinuous::new(MountainCarContinuousParams { goal_velocity })
    }

    #[test]
    fn bad_goal_velocity_is_rejected_by_name() {
        for bad in [0.08, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            match make(bad).unwrap_err() {
                EnvError::InvalidParameter { env, param, reason } => {
                    assert_eq!(
                        (env.as_str(), param.as_str()),
                        (MountainCarContinuous::NAME, "goal_velocity")
                    );
                    assert!(reason.contains("<= 0.07"), "{reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(make(0.07).is_ok() && make(-1.0).is_ok());
        let err = registry_error("goal_velocity = 0.1");
        assert_eq!(
            err.to_string(),
            "MountainCarContinuous-v0: invalid parameter `goal_velocity`: \
             must be finite and <= 0.07 (the speed limit), got 0.1"
        );
        let err = registry_error("power = 0.002");
        assert!(matches!(err, EnvError::BadParameters { .. }), "{err:?}");
        assert!(err.to_string().contains("power"), "{err}");
        let table: toml::Table = toml::from_str("goal_velocity = 0").unwrap();
        assert!(Registry::builtin()
            .make(MountainCarContinuous::NAME, &table)
            .is_ok());
    }

    #[test]
    fn invalid_actions_are_rejected_not_clipped() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        let before = env.snapshot();
        let bad: [&[f32]; 7] = [
            &[1.01],
            &[-1.5],
            &[f32::NAN],
            &[f32::INFINITY],
            &[f32::NEG_INFINITY],
            &[],
            &[0.0, 0.0],
        ];
        for a in bad {
            let err = env.step(Action::Continuous(a), &mut obs).unwrap_err();
            assert!(
                matches!(err, EnvError::InvalidAction { .. }),
                "{a:?}: {err:?}"
            );
        }
        let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::InvalidAction { .. }), "{err:?}");
        assert_eq!(env.snapshot(), before);
        // The bounds themselves are valid and cost 0.1.
        assert_eq!(
            env.step(Action::Continuous(&[1.0]), &mut obs)
                .unwrap()
                .reward,
            -0.1
        );
        assert_eq!(
            env.step(Action::Continuous(&[-1.0]), &mut obs)
                .unwrap()
                .reward,
            -0.1
        );
    }

    #[test]
    fn step_before_reset_and_after_the_goal_needs_reset() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        let err = env.step(Action::Continuous(&[0.0]), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
        env.set_state([0.44, 0.02]);
        let step = env.step(Action::Continuous(&[0.5]), &mut obs).unwrap();
        assert!(step.terminated && !step.truncated);
        assert_eq!(step.reward, 100.0 - 0.25 * 0.1);
        let err = env.step(Action::Continuous(&[0.0]), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
        // goal_velocity: at the goal but too slow does not terminate.
        let mut env = make(0.03).unwrap();
        env.set_state([0.46, 0.0]);
        assert!(
            !env.step(Action::Continuous(&[0.0]), &mut obs)
                .unwrap()
                .terminated
        );
    }

    #[test]
    fn walls_and_speed_limit() {
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        env.set_state([-1.19, -0.07]);
        env.step(Action::Continuous(&[-1.0]), &mut obs).unwrap();
        assert_eq!(env.state(), [f64::from(-1.2_f32), 0.0]);
        env.set_state([-0.5, 0.07]);
        env.step(Action::Continuous(&[1.0]), &mut obs).unwrap();
        assert_eq!(env.state()[1], f64::from(0.07_f32));
        for _ in 0..50 {
            env.step(Action::Continuous(&[1.0]), &mut obs).unwrap();
            assert!(env.observation_space().contains(Action::Continuous(&obs)));
            if env.needs_reset {
                break;
            }
        }
        assert!(
            env.needs_reset,
            "full force from the speed limit reaches the goal"
        );
    }

    fn trajectory(env: &mut MountainCarContinuous, seed: Option<u64>) -> Vec<Vec<f32>> {
        let mut obs = Vec::new();
        if seed.is_some() {
            env.reset(seed, &mut obs).unwrap();
        }
        let mut out = vec![obs.clone()];
        for t in 0..60 {
            let u = [(t % 5) as f32 / 2.0 - 1.0];
            env.step(Action::Continuous(&u), &mut obs).unwrap();
            out.push(obs.clone());
        }
        out
    }

    #[test]
    fn same_seed_same_trajectory_different_seed_differs() {
        let mut env = make(0.0).unwrap();
        let a = trajectory(&mut env, Some(5));
        assert_eq!(a, trajectory(&mut env, Some(5)));
        assert_ne!(a[0], trajectory(&mut env, Some(6))[0]);
    }

    #[test]
    fn snapshots_keep_the_float32_state_flag() {
        // From a float64 state (after reset) and a float32 one (after a step)
        // the same numbers step differently; a restore must know which it is.
        let mut env = make(0.0).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(3), &mut obs).unwrap();
        let fresh = env.snapshot().unwrap();
        env.step(Action::Continuous(&[0.3]), &mut obs).unwrap();
        let stepped = env.snapshot().unwrap();
        assert_eq!(fresh.flags, [false, false]);
        assert_eq!(stepped.flags, [false, true]);
        let after_step = trajectory(&mut env, None);
        let mut other = make(0.0).unwrap();
        other.restore(&stepped).unwrap();
        assert_eq!(trajectory(&mut other, None), after_step);
        other.restore(&fresh).unwrap();
        assert_ne!(trajectory(&mut other, None), after_step);
        // A snapshot of another environment is refused.
        let cartpole = crate::CartPole::new(Default::default()).unwrap();
        let err = env.restore(&cartpole.snapshot().unwrap()).unwrap_err();
        assert!(matches!(err, EnvError::Snapshot { .. }), "{err:?}");
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
    fn registry_truncates_at_999_steps() {
        let reg = Registry::builtin();
        let spec = reg.get(MountainCarContinuous::NAME).unwrap();
        assert_eq!(spec.reward_threshold, Some(90.0));
        let mut env = reg
            .make(MountainCarContinuous::NAME, &Default::default())
            .unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        // Doing nothing never leaves the valley.
        for t in 1..=999 {
            let step = env.step(Action::Continuous(&[0.0]), &mut obs).unwrap();
            assert!(!step.terminated);
            assert_eq!(step.reward, 0.0);
            assert_eq!(step.truncated, t == 999, "step {t}");
        }
    }
}
