//! `Pendulum-v1`: a port of Gymnasium 1.x `classic_control/pendulum.py`.
//!
//! A pendulum of mass 1 and length 1 hangs from a frictionless pivot; the agent
//! applies a torque u ∈ [−2, 2] (a one-element continuous action) and must swing
//! it up and hold it upright. The episode never terminates; the registry adds a
//! time limit of 200 steps. There is no reward threshold.
//!
//! State `[θ, θ̇]` (θ = 0 upright, not wrapped), observation
//! `[cos θ, sin θ, θ̇]`. One step (semi-implicit Euler, dt = 0.05 s):
//!
//! cost = norm(θ)² + 0.1 θ̇² + 0.001 u², reward = −cost (from the state
//! before the step; norm wraps into [−π, π));
//! θ̇ ← clip(θ̇ + (3g/(2l) sin θ + 3/(ml²) u) dt, −8, 8);  θ ← θ + θ̇ dt.
//!
//! Differences from Gymnasium: an action outside [−2, 2] (or NaN) is an
//! [`EnvError::InvalidAction`] instead of being clipped silently; clip in the
//! learner. As in Gymnasium with its float32 action space, the terms that
//! involve u (3u and 0.001u²) are computed in f32 (numpy keeps a float32
//! scalar times a Python float in float32), the rest in f64.

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::classic;
use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, Space, Step};

/// Bound on |θ̇| [rad/s].
const MAX_SPEED: f64 = 8.0;
/// Bound on |u| [N·m]; the action space is [−MAX_TORQUE, MAX_TORQUE].
const MAX_TORQUE: f32 = 2.0;
/// Time step [s].
const DT: f64 = 0.05;
/// Mass [kg].
const MASS: f64 = 1.0;
/// Length [m].
const LENGTH: f64 = 1.0;
/// Reset bounds (Gymnasium's `DEFAULT_X`, `DEFAULT_Y`): θ ~ U(−π, π),
/// θ̇ ~ U(−1, 1).
const RESET_THETA: f64 = PI;
const RESET_THETA_DOT: f64 = 1.0;

/// Parameters of `Pendulum-v1` (all optional in a config).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PendulumParams {
    /// Gymnasium's `g`: acceleration of gravity [m/s²]. Default 10.0. Must be
    /// finite and > 0.
    pub g: f64,
}

impl Default for PendulumParams {
    fn default() -> Self {
        PendulumParams { g: 10.0 }
    }
}

/// The pendulum environment (without its time limit; see the registry).
#[derive(Debug, Clone)]
pub struct Pendulum {
    params: PendulumParams,
    /// [θ, θ̇].
    state: [f64; 2],
    rng: EnvRng,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl Pendulum {
    /// Registry name.
    pub const NAME: &'static str = "Pendulum-v1";
    /// Gymnasium's time limit for `Pendulum-v1`.
    pub const MAX_EPISODE_STEPS: u64 = 200;
    /// Gymnasium registers no reward threshold for `Pendulum-v1`.
    pub const REWARD_THRESHOLD: Option<f64> = None;

    /// A pendulum with the given parameters, or [`EnvError::InvalidParameter`]
    /// if `g` is not finite and positive. Its RNG starts from seed 0 until
    /// `reset(Some(seed))`.
    pub fn new(params: PendulumParams) -> Result<Self, EnvError> {
        let g = params.g;
        if !(g.is_finite() && g > 0.0) {
            return Err(EnvError::param(
                Self::NAME,
                "g",
                format!("must be finite and > 0, got {g}"),
            ));
        }
        let high = [1.0, 1.0, MAX_SPEED as f32];
        Ok(Pendulum {
            params,
            state: [0.0; 2],
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::box1d(high.iter().map(|h| -h).collect(), high.to_vec()),
            action_space: Space::uniform_box(1, -MAX_TORQUE, MAX_TORQUE),
        })
    }

    /// The physical state `[θ, θ̇]`.
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
        let [theta, theta_dot] = self.state;
        obs.clear();
        obs.extend_from_slice(&[theta.cos() as f32, theta.sin() as f32, theta_dot as f32]);
    }
}

/// Python's `x**2` on a float64 (libm `pow`); the opaque exponent stops LLVM
/// from turning it into `x * x`, which rounds differently for about 0.1% of
/// inputs.
fn pow2(x: f64) -> f64 {
    x.powf(std::hint::black_box(2.0))
}

/// numpy's `x**2` on a float32 scalar (libm `powf`).
fn pow2_f32(x: f32) -> f32 {
    x.powf(std::hint::black_box(2.0))
}

/// Gymnasium's `angle_normalize`: `((x + π) mod 2π) − π` with numpy's floored
/// remainder (the result has the sign of the divisor), so the range is [−π, π).
fn angle_normalize(x: f64) -> f64 {
    let two_pi = 2.0 * PI;
    let r = (x + PI) % two_pi;
    let r = if r < 0.0 {
        r + two_pi
    } else if r == 0.0 {
        0.0
    } else {
        r
    };
    r - PI
}

impl Env for Pendulum {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// θ ~ U(−π, π), θ̇ ~ U(−1, 1) (Gymnasium's default reset bounds).
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
        self.state = [
            self.rng.random_range(-RESET_THETA..RESET_THETA),
            self.rng.random_range(-RESET_THETA_DOT..RESET_THETA_DOT),
        ];
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        classic::check_step(Self::NAME, &self.action_space, action, self.needs_reset)?;
        let Action::Continuous(&[u]) = action else {
            unreachable!("check_action admits only one-element continuous actions")
        };
        let [th, thdot] = self.state;
        let g = self.params.g;
        // Gymnasium's order of operations; the u terms are float32 there.
        let costs =
            pow2(angle_normalize(th)) + 0.1 * pow2(thdot) + (0.001_f32 * pow2_f32(u)) as f64;
        let torque_term = ((3.0 / (MASS * pow2(LENGTH))) as f32 * u) as f64;
        let newthdot = thdot + (3.0 * g / (2.0 * LENGTH) * th.sin() + torque_term) * DT;
        let newthdot = newthdot.clamp(-MAX_SPEED, MAX_SPEED);
        let newth = th + newthdot * DT;
        self.state = [newth, newthdot];
        self.write_obs(obs);
        Ok(Step {
            reward: -costs,
            terminated: false,
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
        match Registry::builtin().make(Pendulum::NAME, &table) {
            Ok(_) => panic!("accepted {src}"),
            Err(e) => e,
        }
    }

    fn make(g: f64) -> Result<Pendulum, EnvError> {
        Pendulum::new(PendulumParams { g })
    }

    #[test]
    fn bad_gravity_is_rejected_by_name() {
        for bad in [-1.0, 0.0, f64::NAN, f64::INFINITY] {
            match make(bad).unwrap_err() {
                EnvError::InvalidParameter { env, param, reason } => {
                    assert_eq!((env.as_str(), param.as_str()), (Pendulum::NAME, "g"));
                    assert!(reason.contains("> 0"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        let reg = Registry::builtin();
        let err = registry_error("g = -1.0");
        assert_eq!(
            err.to_string(),
            "Pendulum-v1: invalid parameter `g`: must be finite and > 0, got -1"
        );
        let err = registry_error("max_torque = 3.0");
        assert!(matches!(err, EnvError::BadParameters { .. }), "{err:?}");
        assert!(err.to_string().contains("max_torque"), "{err}");
        let table: toml::Table = toml::from_str("g = 9.81").unwrap();
        assert!(reg.make(Pendulum::NAME, &table).is_ok());
    }

    #[test]
    fn invalid_actions_are_rejected_not_clipped() {
        let mut env = make(10.0).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        let before = env.state();
        let bad: [&[f32]; 6] = [
            &[2.01],
            &[-2.5],
            &[f32::NAN],
            &[f32::INFINITY],
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
        assert_eq!(env.state(), before);
        // The bounds themselves are valid.
        env.step(Action::Continuous(&[2.0]), &mut obs).unwrap();
        env.step(Action::Continuous(&[-2.0]), &mut obs).unwrap();
    }

    #[test]
    fn step_before_reset_needs_reset_and_never_terminates() {
        let mut env = make(10.0).unwrap();
        let mut obs = Vec::new();
        let err = env.step(Action::Continuous(&[0.0]), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
        env.reset(Some(1), &mut obs).unwrap();
        for _ in 0..1000 {
            let step = env.step(Action::Continuous(&[2.0]), &mut obs).unwrap();
            assert!(!step.terminated && !step.truncated);
            assert!(env.state()[1].abs() <= MAX_SPEED);
            // cost ≤ π² + 0.1·8² + 0.001·2²
            assert!((-(PI * PI + 6.4 + 0.004)..=0.0).contains(&step.reward));
        }
    }

    #[test]
    fn upright_at_rest_costs_nothing_and_angle_normalize_is_floored() {
        let mut env = make(10.0).unwrap();
        let mut obs = Vec::new();
        env.set_state([2.0 * PI, 0.0]);
        let step = env.step(Action::Continuous(&[0.0]), &mut obs).unwrap();
        assert!(step.reward.abs() < 1e-28, "{}", step.reward);
        assert_eq!(angle_normalize(PI), -PI);
        assert_eq!(angle_normalize(-PI), -PI);
        assert!((angle_normalize(3.0 * PI / 2.0) + PI / 2.0).abs() < 1e-15);
        assert!((angle_normalize(-7.0) - (-7.0 + 2.0 * PI)).abs() < 1e-15);
    }

    fn trajectory(seed: u64) -> Vec<Vec<f32>> {
        let mut env = make(10.0).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(seed), &mut obs).unwrap();
        let mut out = vec![obs.clone()];
        for t in 0..50 {
            let u = [(t % 5) as f32 - 2.0];
            env.step(Action::Continuous(&u), &mut obs).unwrap();
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
        let mut env = make(10.0).unwrap();
        let mut obs = Vec::new();
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for seed in 0..300 {
            env.reset(Some(seed), &mut obs).unwrap();
            let [th, thdot] = env.state();
            assert!((-PI..PI).contains(&th), "{th}");
            assert!((-1.0..1.0).contains(&thdot), "{thdot}");
            assert!(env.observation_space().contains(Action::Continuous(&obs)));
            for (i, s) in [th, thdot].into_iter().enumerate() {
                lo[i] = lo[i].min(s);
                hi[i] = hi[i].max(s);
            }
        }
        assert!(lo[0] < -3.0 && hi[0] > 3.0 && lo[1] < -0.95 && hi[1] > 0.95);
    }

    #[test]
    fn registry_truncates_at_200_steps() {
        let reg = Registry::builtin();
        assert_eq!(reg.get(Pendulum::NAME).unwrap().reward_threshold, None);
        let mut env = reg.make(Pendulum::NAME, &Default::default()).unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        for t in 1..=200 {
            let step = env.step(Action::Continuous(&[0.5]), &mut obs).unwrap();
            assert_eq!(step.truncated, t == 200, "step {t}");
        }
    }
}
