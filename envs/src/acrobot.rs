//! `Acrobot-v1`: a port of Gymnasium 1.x `classic_control/acrobot.py`.
//!
//! Two links hang from a fixed pivot; the agent applies a torque of −1, 0 or
//! +1 N·m (actions 0, 1, 2) at the joint between them and must swing the tip
//! above the height of one link length over the pivot. Every step costs −1;
//! the step that reaches the goal gives 0 and terminates the episode. The
//! registry adds a time limit of 500 steps; the reward threshold is −100.
//!
//! State `[θ₁, θ₂, θ̇₁, θ̇₂]` (θ₁ from the downward vertical, θ₂ relative to
//! the first link), observation `[cos θ₁, sin θ₁, cos θ₂, sin θ₂, θ̇₁, θ̇₂]`.
//! Dynamics: the "book" equations of Sutton & Barto, *Reinforcement Learning:
//! An Introduction* (1998, §11.3), which include the −m₂ l₁ l_c2 θ̇₁² sin θ₂
//! term that Sutton (1996, NIPS 8) omits. One step integrates them with a
//! single fourth-order Runge–Kutta step of dt = 0.2 s, then wraps both angles
//! into [−π, π] and clips θ̇₁ to ±4π and θ̇₂ to ±9π. Gymnasium's torque noise
//! (`torque_noise_max`) is 0 and is not modelled.
//!
//! The arithmetic follows Gymnasium's operation order, and squares are taken
//! with libm's `pow` (as Python's and numpy's `x**2` do, which differs from
//! `x * x` in the last bit for about one value in a thousand), so that the
//! chaotic trajectories match Gymnasium's bit for bit rather than drifting
//! apart after a few dozen steps (checked by `tests/gymnasium_parity.rs`).

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::classic;
use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, Space, Step};

/// Integration time step [s].
const DT: f64 = 0.2;
/// Length of link 1 [m] (link 2's length only matters for rendering).
const LINK_LENGTH_1: f64 = 1.0;
/// Mass of link 1 [kg].
const LINK_MASS_1: f64 = 1.0;
/// Mass of link 2 [kg].
const LINK_MASS_2: f64 = 1.0;
/// Position of the centre of mass of link 1 along the link [m].
const LINK_COM_POS_1: f64 = 0.5;
/// Position of the centre of mass of link 2 along the link [m].
const LINK_COM_POS_2: f64 = 0.5;
/// Moment of inertia of each link.
const LINK_MOI: f64 = 1.0;
const GRAVITY: f64 = 9.8;
/// Bound on |θ̇₁| [rad/s].
const MAX_VEL_1: f64 = 4.0 * PI;
/// Bound on |θ̇₂| [rad/s].
const MAX_VEL_2: f64 = 9.0 * PI;
/// Torque of each action [N·m].
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];
/// Each state component is drawn from U(−0.1, 0.1) at reset.
const RESET_BOUND: f64 = 0.1;

/// Parameters of `Acrobot-v1`. Gymnasium's constructor takes none besides
/// `render_mode`, so neither does the port; a config that names any field is
/// rejected.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcrobotParams {}

/// The acrobot environment (without its time limit; see the registry).
#[derive(Debug, Clone)]
pub struct Acrobot {
    /// [θ₁, θ₂, θ̇₁, θ̇₂].
    state: [f64; 4],
    rng: EnvRng,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl Acrobot {
    /// Registry name.
    pub const NAME: &'static str = "Acrobot-v1";
    /// Gymnasium's time limit for `Acrobot-v1`.
    pub const MAX_EPISODE_STEPS: u64 = 500;
    /// Gymnasium's reward threshold for `Acrobot-v1`.
    pub const REWARD_THRESHOLD: f64 = -100.0;

    /// An acrobot. Its RNG starts from seed 0 until `reset(Some(seed))`.
    pub fn new(_params: AcrobotParams) -> Self {
        let high = [1.0, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32];
        Acrobot {
            state: [0.0; 4],
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::box1d(high.iter().map(|h| -h).collect(), high.to_vec()),
            action_space: Space::discrete(3),
        }
    }

    /// The physical state `[θ₁, θ₂, θ̇₁, θ̇₂]`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Overwrite the physical state (used to compare trajectories with
    /// Gymnasium); the episode counts as running afterwards.
    pub fn set_state(&mut self, state: [f64; 4]) {
        self.state = state;
        self.needs_reset = false;
    }

    fn write_obs(&self, obs: &mut Vec<f32>) {
        let [t1, t2, dt1, dt2] = self.state;
        obs.clear();
        obs.extend_from_slice(&[
            t1.cos() as f32,
            t1.sin() as f32,
            t2.cos() as f32,
            t2.sin() as f32,
            dt1 as f32,
            dt2 as f32,
        ]);
    }

    /// Whether the tip is above the goal line: −cos θ₁ − cos(θ₁ + θ₂) > 1.
    fn terminal(&self) -> bool {
        let [t1, t2, _, _] = self.state;
        -t1.cos() - (t2 + t1).cos() > 1.0
    }
}

/// Python's `x**2` (libm `pow`); the opaque exponent stops LLVM from turning
/// it into `x * x`, which rounds differently for about 0.1% of inputs.
fn pow2(x: f64) -> f64 {
    x.powf(std::hint::black_box(2.0))
}

/// Time derivative of `[θ₁, θ₂, θ̇₁, θ̇₂, τ]` under the book dynamics
/// (Gymnasium's `_dsdt`; τ is constant):
///
/// d₁ = m₁l_c1² + m₂(l₁² + l_c2² + 2l₁l_c2 cos θ₂) + I₁ + I₂,
/// d₂ = m₂(l_c2² + l₁l_c2 cos θ₂) + I₂,
/// φ₂ = m₂l_c2 g cos(θ₁ + θ₂ − π/2),
/// φ₁ = −m₂l₁l_c2 θ̇₂² sin θ₂ − 2m₂l₁l_c2 θ̇₂θ̇₁ sin θ₂ + (m₁l_c1 + m₂l₁) g cos(θ₁ − π/2) + φ₂,
/// θ̈₂ = (τ + d₂/d₁ φ₁ − m₂l₁l_c2 θ̇₁² sin θ₂ − φ₂) / (m₂l_c2² + I₂ − d₂²/d₁),
/// θ̈₁ = −(d₂θ̈₂ + φ₁)/d₁.
///
/// Written in Gymnasium's evaluation order so that rounding matches.
fn dsdt(s: &[f64; 5]) -> [f64; 5] {
    let (m1, m2, l1) = (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1);
    let (lc1, lc2) = (LINK_COM_POS_1, LINK_COM_POS_2);
    let (i1, i2, g) = (LINK_MOI, LINK_MOI, GRAVITY);
    let [theta1, theta2, dtheta1, dtheta2, a] = *s;
    let d1 = m1 * pow2(lc1) + m2 * (pow2(l1) + pow2(lc2) + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (pow2(lc2) + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * pow2(dtheta2) * theta2.sin()
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * pow2(dtheta1) * theta2.sin() - phi2)
        / (m2 * pow2(lc2) + i2 - pow2(d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0]
}

/// One classical Runge–Kutta step of length [`DT`] (Gymnasium's `rk4` with
/// `t = [0, dt]`): y₁ = y₀ + dt/6 (k₁ + 2k₂ + 2k₃ + k₄).
fn rk4(y0: [f64; 5]) -> [f64; 5] {
    let dt2 = DT / 2.0;
    let shifted = |k: &[f64; 5], h: f64| std::array::from_fn(|i| y0[i] + h * k[i]);
    let k1 = dsdt(&y0);
    let k2 = dsdt(&shifted(&k1, dt2));
    let k3 = dsdt(&shifted(&k2, dt2));
    let k4 = dsdt(&shifted(&k3, DT));
    std::array::from_fn(|i| y0[i] + DT / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
}

/// Gymnasium's `wrap`: add or subtract `max − min` until `x` lies in
/// `[min, max]` (by repeated subtraction, as Gymnasium does, so the rounding
/// matches). Values more than a thousand periods out, which the dynamics never
/// produce, are first reduced with a remainder so the loop stays short;
/// infinities and NaN are returned unchanged.
fn wrap(mut x: f64, min: f64, max: f64) -> f64 {
    let diff = max - min;
    if !x.is_finite() {
        return x;
    }
    if (x - min).abs() > 1000.0 * diff {
        x = min + (x - min).rem_euclid(diff);
    }
    while x > max {
        x -= diff;
    }
    while x < min {
        x += diff;
    }
    x
}

impl Env for Acrobot {
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

    /// Each of θ₁, θ₂, θ̇₁, θ̇₂ ~ U(−0.1, 0.1), rounded to f32 as Gymnasium
    /// stores its reset state (`.astype(np.float32)`).
    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        classic::reseed(&mut self.rng, seed);
        for s in &mut self.state {
            *s = self.rng.random_range(-RESET_BOUND..RESET_BOUND) as f32 as f64;
        }
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        classic::check_step(Self::NAME, &self.action_space, action, self.needs_reset)?;
        let Action::Discrete(a) = action else {
            unreachable!("check_action admits only discrete actions")
        };
        let [t1, t2, dt1, dt2] = self.state;
        let ns = rk4([t1, t2, dt1, dt2, AVAIL_TORQUE[a]]);
        self.state = [
            wrap(ns[0], -PI, PI),
            wrap(ns[1], -PI, PI),
            ns[2].clamp(-MAX_VEL_1, MAX_VEL_1),
            ns[3].clamp(-MAX_VEL_2, MAX_VEL_2),
        ];
        let terminated = self.terminal();
        self.needs_reset = terminated;
        self.write_obs(obs);
        Ok(Step {
            reward: if terminated { 0.0 } else { -1.0 },
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
        match Registry::builtin().make(Acrobot::NAME, &table) {
            Ok(_) => panic!("accepted {src}"),
            Err(e) => e,
        }
    }

    fn reset_obs(env: &mut Acrobot, seed: u64) -> Vec<f32> {
        let mut obs = Vec::new();
        env.reset(Some(seed), &mut obs).unwrap();
        obs
    }

    #[test]
    fn unknown_parameter_is_rejected_by_name() {
        let err = registry_error("torque_noise_max = 0.1");
        assert!(matches!(err, EnvError::BadParameters { .. }), "{err:?}");
        assert!(err.to_string().contains("torque_noise_max"), "{err}");
    }

    #[test]
    fn out_of_range_action_is_invalid() {
        let mut env = Acrobot::new(AcrobotParams::default());
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        for bad in [Action::Discrete(3), Action::Continuous(&[1.0])] {
            let err = env.step(bad, &mut obs).unwrap_err();
            assert!(matches!(err, EnvError::InvalidAction { .. }), "{err:?}");
        }
        // The rejected actions did not move the state.
        assert_eq!(obs, reset_obs(&mut env, 0));
    }

    #[test]
    fn step_before_reset_and_after_termination_needs_reset() {
        let mut env = Acrobot::new(AcrobotParams::default());
        let mut obs = Vec::new();
        let err = env.step(Action::Discrete(1), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
        // Tip already high above the goal line: −cos(π) − cos(π) = 2.
        env.set_state([PI, 0.0, 0.0, 0.0]);
        let step = env.step(Action::Discrete(1), &mut obs).unwrap();
        assert!(step.terminated);
        assert_eq!(step.reward, 0.0);
        let err = env.step(Action::Discrete(1), &mut obs).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{err:?}");
        env.reset(None, &mut obs).unwrap();
        let step = env.step(Action::Discrete(1), &mut obs).unwrap();
        assert!(!step.terminated);
        assert_eq!(step.reward, -1.0);
    }

    fn trajectory(seed: u64) -> Vec<Vec<f32>> {
        let mut env = Acrobot::new(AcrobotParams::default());
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
    fn reset_state_lies_in_reset_range_and_is_f32() {
        let mut env = Acrobot::new(AcrobotParams::default());
        let mut obs = Vec::new();
        let bound = RESET_BOUND as f32 as f64;
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        for seed in 0..200 {
            env.reset(Some(seed), &mut obs).unwrap();
            for s in env.state() {
                assert!((-bound..=bound).contains(&s), "{s}");
                assert_eq!(s, s as f32 as f64);
                min = min.min(s);
                max = max.max(s);
            }
            assert!(env.observation_space().contains(Action::Continuous(&obs)));
        }
        // 800 draws from U(−0.1, 0.1) cover most of the range.
        assert!(min < -0.09 && max > 0.09, "{min} {max}");
    }

    #[test]
    fn wrap_and_velocity_bounds_hold() {
        let mut env = Acrobot::new(AcrobotParams::default());
        let mut obs = Vec::new();
        env.set_state([PI - 1e-9, -PI + 1e-9, MAX_VEL_1, -MAX_VEL_2]);
        for t in 0..100 {
            if env
                .step(Action::Discrete(t % 3), &mut obs)
                .unwrap()
                .terminated
            {
                env.set_state([0.3, -2.0, 10.0, -20.0]);
            }
            let [t1, t2, v1, v2] = env.state();
            assert!((-PI..=PI).contains(&t1) && (-PI..=PI).contains(&t2));
            assert!(v1.abs() <= MAX_VEL_1 && v2.abs() <= MAX_VEL_2);
        }
        assert_eq!(wrap(3.5, -PI, PI), 3.5 - 2.0 * PI);
        // Two periods out: wrapped by two additions, left to right.
        assert_eq!(wrap(-10.0, -PI, PI), -10.0 + 2.0 * PI + 2.0 * PI);
        assert!((-PI..=PI).contains(&wrap(1e300, -PI, PI)));
        assert!(wrap(f64::NAN, -PI, PI).is_nan());
    }

    #[test]
    fn registry_truncates_at_500_steps() {
        let mut env = Registry::builtin()
            .make(Acrobot::NAME, &Default::default())
            .unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        // Zero torque from rest near the bottom never reaches the goal.
        for t in 1..=500 {
            let step = env.step(Action::Discrete(1), &mut obs).unwrap();
            assert!(!step.terminated);
            assert_eq!(step.truncated, t == 500, "step {t}");
        }
    }
}
