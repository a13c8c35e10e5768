//! Environments for klrl, with Gymnasium's conventions in Rust.
//!
//! - [`Space`]: `Discrete(n)` and `Box { low, high, shape }`.
//! - [`Env`]: `reset(seed)` and `step(action)`, terminated and truncated kept apart.
//! - Wrappers: [`TimeLimit`], [`RecordEpisodeStatistics`], [`Checked`].
//! - [`check_env`]: check an environment against the [`Env`] contract
//!   (spaces, finite observations in the space, determinism, episode ends,
//!   truncation, valid and invalid actions, snapshots) and report in words.
//! - [`VecEnv`]: N copies stepped together into contiguous buffers, with
//!   autoreset that hands back the final observation of a finished episode.
//! - [`Registry`]: build environments by name from a parameter table.
//! - Built-in environments: the classic-control ports `CartPole-v1`,
//!   `Acrobot-v1`, `MountainCar-v0`, `MountainCarContinuous-v0`,
//!   `Pendulum-v1` (verified step by step against Gymnasium), the
//!   movie-recommendation bandit, and a tabular MDP with closed-form values.
//!
//! Not here: anything that learns (see `klrl-policy` and `klrl-optim`).
//!
//! # Plugging in your own environment
//!
//! Implement [`Env`] in your own crate; [`VecEnv`] (and everything that
//! trains on it) works with it unchanged. A two-armed "guess the coin" task:
//!
//! ```
//! use klrl_envs::{Action, Env, EnvError, EnvRng, Space, Step, StepInfo, VecEnv};
//! use rand::{Rng, SeedableRng};
//!
//! /// Each step shows a coin (observation ±1); action 1 means "heads".
//! struct GuessTheCoin {
//!     coin: f32,
//!     t: u32,
//!     rng: EnvRng,
//!     obs_space: Space,
//!     act_space: Space,
//! }
//!
//! impl GuessTheCoin {
//!     fn new() -> Self {
//!         GuessTheCoin {
//!             coin: 1.0,
//!             t: 0,
//!             rng: EnvRng::seed_from_u64(0),
//!             obs_space: Space::uniform_box(1, -1.0, 1.0),
//!             act_space: Space::discrete(2),
//!         }
//!     }
//! }
//!
//! impl Env for GuessTheCoin {
//!     fn name(&self) -> &str { "GuessTheCoin" }
//!     fn observation_space(&self) -> &Space { &self.obs_space }
//!     fn action_space(&self) -> &Space { &self.act_space }
//!
//!     fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
//!         if let Some(s) = seed { self.rng = EnvRng::seed_from_u64(s); }
//!         self.t = 0;
//!         self.coin = if self.rng.random::<bool>() { 1.0 } else { -1.0 };
//!         obs.clear();
//!         obs.push(self.coin);
//!         Ok(())
//!     }
//!
//!     fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
//!         let Action::Discrete(a) = action else { unreachable!("checked by the wrapper") };
//!         let heads = self.coin > 0.0;
//!         let reward = if (a == 1) == heads { 1.0 } else { 0.0 };
//!         self.t += 1;
//!         self.coin = if self.rng.random::<bool>() { 1.0 } else { -1.0 };
//!         obs.clear();
//!         obs.push(self.coin);
//!         Ok(Step { reward, terminated: self.t == 10, truncated: false, info: StepInfo::default() })
//!     }
//! }
//!
//! // Four copies, seeded 7, 8, 9, 10; the perfect policy copies the coin.
//! let mut venv = VecEnv::new((0..4).map(|_| GuessTheCoin::new()).collect())?;
//! venv.reset(Some(7))?;
//! let mut total = 0.0;
//! for _ in 0..10 {
//!     let actions: Vec<usize> = venv.observations().iter().map(|&o| (o > 0.0) as usize).collect();
//!     venv.step_discrete(&actions)?;
//!     total += venv.rewards().iter().sum::<f64>();
//! }
//! assert_eq!(total, 40.0);
//! // A bad action is a typed error, not a panic.
//! assert!(venv.step_discrete(&[0, 1, 2, 0]).is_err());
//! # Ok::<(), EnvError>(())
//! ```

mod acrobot;
mod bandit;
mod cartpole;
mod check;
mod checked;
mod classic;
mod continuous_mountain_car;
mod env;
mod episode_statistics;
mod error;
mod mountain_car;
mod pendulum;
mod registry;
mod space;
mod tabular;
mod time_limit;
mod vec_env;

pub use acrobot::{Acrobot, AcrobotParams};
pub use bandit::{MovieRec, MovieRecParams};
pub use cartpole::{CartPole, CartPoleParams};
pub use check::{check_env, CheckOptions, CheckOutcome, CheckReport, Verdict};
pub use checked::Checked;
pub use continuous_mountain_car::{MountainCarContinuous, MountainCarContinuousParams};
pub use env::{Env, EnvSnapshot, EpisodeRecord, RngState, Step, StepInfo};
pub use episode_statistics::RecordEpisodeStatistics;
pub use error::EnvError;
pub use mountain_car::{MountainCar, MountainCarParams};
pub use pendulum::{Pendulum, PendulumParams};
pub use registry::{parse_params, EnvSpec, Factory, Registry, MAX_EPISODE_STEPS};
pub use space::{Action, OwnedAction, Space};
pub use tabular::{ChainParams, TabularMdp};
pub use time_limit::TimeLimit;
pub use vec_env::{Actions, VecEnv};

/// The random number generator every built-in environment owns: ChaCha8,
/// seeded with `seed_from_u64`, so streams are the same on every platform.
pub type EnvRng = rand_chacha::ChaCha8Rng;

/// The specs of the built-in environments, in the order `klrl envs` lists them.
fn builtin_specs() -> Vec<EnvSpec> {
    vec![
        registry::spec(
            CartPole::NAME,
            "Balance a pole on a cart (Gymnasium CartPole-v1 port); 2 actions, 4-d observation",
            Some(CartPole::MAX_EPISODE_STEPS),
            Some(CartPole::REWARD_THRESHOLD),
            |p| Ok(Box::new(CartPole::new(parse_params(CartPole::NAME, p)?)?)),
        ),
        registry::spec(
            Acrobot::NAME,
            "Swing a two-link arm's tip above a line (Gymnasium Acrobot-v1 port); 3 actions, 6-d observation",
            Some(Acrobot::MAX_EPISODE_STEPS),
            Some(Acrobot::REWARD_THRESHOLD),
            |p| Ok(Box::new(Acrobot::new(parse_params(Acrobot::NAME, p)?))),
        ),
        registry::spec(
            MountainCar::NAME,
            "Drive an under-powered car up a hill (Gymnasium MountainCar-v0 port); 3 actions, 2-d observation",
            Some(MountainCar::MAX_EPISODE_STEPS),
            Some(MountainCar::REWARD_THRESHOLD),
            |p| Ok(Box::new(MountainCar::new(parse_params(MountainCar::NAME, p)?)?)),
        ),
        registry::spec(
            MountainCarContinuous::NAME,
            "Drive an under-powered car up a hill with a continuous engine (Gymnasium MountainCarContinuous-v0 port); force in [-1, 1], 2-d observation",
            Some(MountainCarContinuous::MAX_EPISODE_STEPS),
            Some(MountainCarContinuous::REWARD_THRESHOLD),
            |p| {
                let params = parse_params(MountainCarContinuous::NAME, p)?;
                Ok(Box::new(MountainCarContinuous::new(params)?))
            },
        ),
        registry::spec(
            Pendulum::NAME,
            "Swing a pendulum up and hold it upright (Gymnasium Pendulum-v1 port); torque in [-2, 2], 3-d observation",
            Some(Pendulum::MAX_EPISODE_STEPS),
            Pendulum::REWARD_THRESHOLD,
            |p| Ok(Box::new(Pendulum::new(parse_params(Pendulum::NAME, p)?)?)),
        ),
        registry::spec(
            MovieRec::NAME,
            "Recommend 1 of 20 movies to a user of 1 of 4 segments; reward = click (100 users)",
            None,
            None,
            |p| {
                let params = parse_params(MovieRec::NAME, p)?;
                Ok(Box::new(MovieRec::with_name(MovieRec::NAME, params)?))
            },
        ),
        registry::spec(
            MovieRec::SESSION_NAME,
            "MovieRec with 10-round user sessions; repeating a genre bores the user",
            None,
            None,
            |p| {
                let mut p = p.clone();
                let len = MovieRec::SESSION_DEFAULT_LENGTH as i64;
                p.entry("session_length").or_insert(len.into());
                let params = parse_params(MovieRec::SESSION_NAME, &p)?;
                Ok(Box::new(MovieRec::with_name(MovieRec::SESSION_NAME, params)?))
            },
        ),
        registry::spec(
            TabularMdp::CHAIN_NAME,
            "Slippery 10-cell chain, 0.1 at the near end, 1 at the far end; closed-form values",
            Some(TabularMdp::CHAIN_MAX_EPISODE_STEPS),
            None,
            |p| {
                let params = parse_params(TabularMdp::CHAIN_NAME, p)?;
                Ok(Box::new(TabularMdp::chain(params)?))
            },
        ),
    ]
}
