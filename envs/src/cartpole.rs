//! `CartPole-v1`: a port of Gymnasium 1.x `classic_control/cartpole.py`.
//!
//! A pole is hinged to a cart on a frictionless track; the agent pushes the cart
//! left (action 0, force −10 N) or right (action 1, +10 N). Reward 1 for every
//! step, including the one that terminates. The episode terminates when
//! |x| > 2.4 or |θ| > 12°; the registry adds a time limit of 500 steps.
//! Dynamics (Florian 2007, "Correct equations for the dynamics of the
//! cart-pole system"), integrated with explicit Euler at τ = 0.02 s; state in
//! f64, observation in f32, as in Gymnasium.

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::classic;
use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, Space, Step};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLEMASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
/// 12 degrees, computed as Gymnasium does.
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;

/// Parameters of `CartPole-v1` (all optional in a config).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartPoleParams {
    /// Gymnasium's `sutton_barto_reward`: reward 0 per step and −1 on
    /// termination instead of 1 per step. Default `false`.
    pub sutton_barto_reward: bool,
}

/// The cart-pole environment (without its time limit; see the registry).
#[derive(Debug, Clone)]
pub struct CartPole {
    params: CartPoleParams,
    /// [x, ẋ, θ, θ̇].
    state: [f64; 4],
    rng: EnvRng,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl CartPole {
    /// Registry name.
    pub const NAME: &'static str = "CartPole-v1";
    /// Gymnasium's time limit for `CartPole-v1`.
    pub const MAX_EPISODE_STEPS: u64 = 500;
    /// Gymnasium's reward threshold for `CartPole-v1`.
    pub const REWARD_THRESHOLD: f64 = 475.0;

    /// A cart-pole with the given parameters. Its RNG starts from seed 0 until
    /// `reset(Some(seed))`.
    pub fn new(params: CartPoleParams) -> Self {
        let high = [
            (X_THRESHOLD * 2.0) as f32,
            f32::MAX,
            (THETA_THRESHOLD * 2.0) as f32,
            f32::MAX,
        ];
        CartPole {
            params,
            state: [0.0; 4],
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::box1d(high.iter().map(|h| -h).collect(), high.to_vec()),
            action_space: Space::discrete(2),
        }
    }

    /// The physical state `[x, ẋ, θ, θ̇]`.
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
        obs.clear();
        obs.extend(self.state.iter().map(|&s| s as f32));
    }
}

impl Env for CartPole {
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
        for s in &mut self.state {
            *s = self.rng.random_range(-0.05..0.05);
        }
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        classic::check_step(Self::NAME, &self.action_space, action, self.needs_reset)?;
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == Action::Discrete(1) {
            FORCE_MAG
        } else {
            -FORCE_MAG
        };
        let (sin_t, cos_t) = theta.sin_cos();
        // Same operation order as Gymnasium (np.square first), so trajectories
        // match it bit for bit.
        let temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sin_t) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin_t - cos_t * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * (cos_t * cos_t) / TOTAL_MASS));
        let x_acc = temp - POLEMASS_LENGTH * theta_acc * cos_t / TOTAL_MASS;
        // Explicit Euler: positions advance with the old velocities.
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
        let [x, _, theta, _] = self.state;
        let terminated = !(-X_THRESHOLD..=X_THRESHOLD).contains(&x)
            || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta);
        let reward = match (self.params.sutton_barto_reward, terminated) {
            (false, _) => 1.0,
            (true, false) => 0.0,
            (true, true) => -1.0,
        };
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
