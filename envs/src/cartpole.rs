//! `CartPole-v1`: a port of Gymnasium 1.x `classic_control/cartpole.py`.
//!
//! A pole is hinged to a cart on a frictionless track; the agent pushes the cart
//! left (action 0, force −`force_mag`) or right (action 1, +`force_mag`).
//! Reward 1 for every step, including the one that terminates. The episode
//! terminates when |x| > 2.4 or |θ| > 12°; the registry adds a time limit of
//! 500 steps. Dynamics (Florian 2007, "Correct equations for the dynamics of
//! the cart-pole system"), integrated with explicit Euler at τ = `tau`; state
//! in f64, observation in f32, as in Gymnasium.
//!
//! The physical constants are parameters ([`CartPoleParams`], `[env.params]`
//! in a config) with Gymnasium's values as defaults: `gravity` 9.8,
//! `masscart` 1.0, `masspole` 0.1, `length` 0.5 (half the pole's length),
//! `force_mag` 10.0, `tau` 0.02. As in Gymnasium's constructor, the total mass
//! `masspole + masscart` and `polemass_length = masspole · length` are derived
//! from them once; in Gymnasium, changing `env.unwrapped.masspole` (or
//! `masscart`, `length`) after construction does *not* update those two, so
//! code that sets the attributes there must set `total_mass` and
//! `polemass_length` too (the parity fixture does). The termination
//! thresholds (2.4, 12°) and the explicit-Euler integrator are not parameters.

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::classic;
use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, Space, Step};

/// 12 degrees, computed as Gymnasium does.
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;

/// Parameters of `CartPole-v1` (all optional in a config). Every physical
/// constant must be finite and > 0; the defaults are Gymnasium's and keep the
/// port bit-identical to it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartPoleParams {
    /// Gymnasium's `sutton_barto_reward`: reward 0 per step and −1 on
    /// termination instead of 1 per step. Default `false`.
    pub sutton_barto_reward: bool,
    /// Gymnasium's `gravity`: acceleration of gravity (m/s²). Default 9.8.
    pub gravity: f64,
    /// Gymnasium's `masscart`: mass of the cart (kg). Default 1.0.
    pub masscart: f64,
    /// Gymnasium's `masspole`: mass of the pole (kg). Default 0.1.
    pub masspole: f64,
    /// Gymnasium's `length`: *half* the pole's length (m). Default 0.5.
    pub length: f64,
    /// Gymnasium's `force_mag`: magnitude of the push of either action (N).
    /// Default 10.0.
    pub force_mag: f64,
    /// Gymnasium's `tau`: seconds between state updates (the Euler step).
    /// Default 0.02.
    pub tau: f64,
}

impl Default for CartPoleParams {
    fn default() -> Self {
        CartPoleParams {
            sutton_barto_reward: false,
            gravity: 9.8,
            masscart: 1.0,
            masspole: 0.1,
            length: 0.5,
            force_mag: 10.0,
            tau: 0.02,
        }
    }
}

impl CartPoleParams {
    /// The physical constants with their config names.
    fn constants(&self) -> [(&'static str, f64); 6] {
        [
            ("gravity", self.gravity),
            ("masscart", self.masscart),
            ("masspole", self.masspole),
            ("length", self.length),
            ("force_mag", self.force_mag),
            ("tau", self.tau),
        ]
    }
}

/// The cart-pole environment (without its time limit; see the registry).
#[derive(Debug, Clone)]
pub struct CartPole {
    params: CartPoleParams,
    /// `masspole + masscart`, derived once as in Gymnasium's constructor.
    total_mass: f64,
    /// `masspole · length`, derived once as in Gymnasium's constructor.
    polemass_length: f64,
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

    /// A cart-pole with the given parameters, or
    /// [`EnvError::InvalidParameter`] naming the first physical constant that
    /// is not finite and > 0. Its RNG starts from seed 0 until
    /// `reset(Some(seed))`.
    pub fn new(params: CartPoleParams) -> Result<Self, EnvError> {
        for (name, value) in params.constants() {
            if !(value.is_finite() && value > 0.0) {
                return Err(EnvError::param(
                    Self::NAME,
                    name,
                    format!("must be finite and > 0, got {value}"),
                ));
            }
        }
        let high = [
            (X_THRESHOLD * 2.0) as f32,
            f32::MAX,
            (THETA_THRESHOLD * 2.0) as f32,
            f32::MAX,
        ];
        Ok(CartPole {
            params,
            total_mass: params.masspole + params.masscart,
            polemass_length: params.masspole * params.length,
            state: [0.0; 4],
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::box1d(high.iter().map(|h| -h).collect(), high.to_vec()),
            action_space: Space::discrete(2),
        })
    }

    /// The parameters the environment was built with.
    pub fn params(&self) -> &CartPoleParams {
        &self.params
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
        let CartPoleParams {
            gravity,
            masspole,
            length,
            force_mag,
            tau,
            ..
        } = self.params;
        let (total_mass, polemass_length) = (self.total_mass, self.polemass_length);
        let force = if action == Action::Discrete(1) {
            force_mag
        } else {
            -force_mag
        };
        let (sin_t, cos_t) = theta.sin_cos();
        // Same operation order as Gymnasium (np.square first), so trajectories
        // match it bit for bit.
        let temp = (force + polemass_length * (theta_dot * theta_dot) * sin_t) / total_mass;
        let theta_acc = (gravity * sin_t - cos_t * temp)
            / (length * (4.0 / 3.0 - masspole * (cos_t * cos_t) / total_mass));
        let x_acc = temp - polemass_length * theta_acc * cos_t / total_mass;
        // Explicit Euler: positions advance with the old velocities.
        self.state = [
            x + tau * x_dot,
            x_dot + tau * x_acc,
            theta + tau * theta_dot,
            theta_dot + tau * theta_acc,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    /// The error `Registry::make` gives for the config `src`.
    fn registry_error(src: &str) -> EnvError {
        let table: toml::Table = toml::from_str(src).unwrap();
        match Registry::builtin().make(CartPole::NAME, &table) {
            Ok(_) => panic!("accepted {src}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_bad_constant_is_rejected_by_name() {
        let names = [
            "gravity",
            "masscart",
            "masspole",
            "length",
            "force_mag",
            "tau",
        ];
        for (i, name) in names.into_iter().enumerate() {
            for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut p = CartPoleParams::default();
                let field = match i {
                    0 => &mut p.gravity,
                    1 => &mut p.masscart,
                    2 => &mut p.masspole,
                    3 => &mut p.length,
                    4 => &mut p.force_mag,
                    _ => &mut p.tau,
                };
                *field = bad;
                match CartPole::new(p).unwrap_err() {
                    EnvError::InvalidParameter { env, param, reason } => {
                        assert_eq!((env.as_str(), param.as_str()), (CartPole::NAME, name));
                        assert!(reason.contains("finite and > 0"), "{reason}");
                        assert!(reason.contains(&bad.to_string()), "{reason}");
                    }
                    other => panic!("{name} = {bad}: {other:?}"),
                }
            }
        }
        let err = registry_error("masspole = -0.5");
        assert_eq!(
            err.to_string(),
            "CartPole-v1: invalid parameter `masspole`: must be finite and > 0, got -0.5"
        );
        let err = registry_error("total_mass = 2.0");
        assert!(matches!(err, EnvError::BadParameters { .. }), "{err:?}");
        assert!(err.to_string().contains("total_mass"), "{err}");
        let err = registry_error("tau = \"fast\"");
        assert!(err.to_string().contains("tau"), "{err}");
        // Integers are accepted for the float constants, as elsewhere.
        let table: toml::Table = toml::from_str("gravity = 10\nforce_mag = 15.5").unwrap();
        assert!(Registry::builtin().make(CartPole::NAME, &table).is_ok());
    }

    /// One step from `state` with action 1; the new state.
    fn step_from(params: CartPoleParams, state: [f64; 4]) -> [f64; 4] {
        let mut env = CartPole::new(params).unwrap();
        env.set_state(state);
        env.step(Action::Discrete(1), &mut Vec::new()).unwrap();
        env.state()
    }

    #[test]
    fn the_constants_act_where_they_should() {
        let start = [0.0, 0.0, 0.0, 0.0];
        let base = step_from(CartPoleParams::default(), start);
        // Upright at rest: ẍ = F/M·(1 + m_p/M · θ̈-coupling); doubling the
        // force doubles every acceleration, so the new velocities double.
        let strong = step_from(
            CartPoleParams {
                force_mag: 20.0,
                ..Default::default()
            },
            start,
        );
        assert_eq!(strong[0], 0.0);
        assert!(
            (strong[1] - 2.0 * base[1]).abs() < 1e-15,
            "{strong:?} {base:?}"
        );
        assert!(
            (strong[3] - 2.0 * base[3]).abs() < 1e-14,
            "{strong:?} {base:?}"
        );
        // Gravity does nothing to an upright pole at rest, and tilts a leaning one faster.
        let lean = [0.0, 0.0, 0.1, 0.0];
        let heavy = CartPoleParams {
            gravity: 20.0,
            ..Default::default()
        };
        assert_eq!(step_from(heavy, start), base);
        assert!(step_from(heavy, lean)[3] > step_from(CartPoleParams::default(), lean)[3]);
        // A halved time step moves the velocities half as far.
        let fine = step_from(
            CartPoleParams {
                tau: 0.01,
                ..Default::default()
            },
            start,
        );
        assert!((fine[1] - base[1] / 2.0).abs() < 1e-15, "{fine:?} {base:?}");
    }
}
