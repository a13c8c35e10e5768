//! The [`Env`] trait: Gymnasium's `reset` / `step` contract in Rust.

use crate::{Action, EnvError, Space};

/// What one call to [`Env::step`] reports besides the observation.
///
/// Termination and truncation are kept apart, as in Gymnasium 1.x: a
/// *terminated* episode reached a terminal state of the MDP (its value is 0, the
/// learner must not bootstrap), a *truncated* one was cut short from outside
/// (a time limit; the learner bootstraps from the value of the final
/// observation). Both may be true at once; termination then takes precedence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Step {
    /// The reward for the transition.
    pub reward: f64,
    /// The MDP reached a terminal state.
    pub terminated: bool,
    /// The episode was cut short (time limit) in a non-terminal state.
    pub truncated: bool,
    /// Extra facts about the step; every field is optional.
    pub info: StepInfo,
}

impl Step {
    /// Whether the episode is over (terminated or truncated).
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// Optional facts an environment can report with a step (Gymnasium's `info`,
/// typed). All fields default to `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepInfo {
    /// Expected reward of the action taken, where the environment knows it
    /// (bandits): lets a learner measure regret without sampling noise.
    pub expected_reward: Option<f64>,
    /// Expected reward of the best action in the state the action was taken in,
    /// where the environment knows it (bandits). Regret = this − `expected_reward`.
    pub optimal_expected_reward: Option<f64>,
    /// Set on the step that ends an episode by the
    /// [`RecordEpisodeStatistics`](crate::RecordEpisodeStatistics) wrapper.
    pub episode: Option<EpisodeRecord>,
}

/// Return and length of a finished episode.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpisodeRecord {
    /// Undiscounted sum of rewards.
    pub ret: f64,
    /// Number of steps.
    pub len: u64,
}

/// An environment: a (partially observed) Markov decision process that an
/// agent steps through.
///
/// Observations are flat `f32` vectors of [`Space::flat_dim`] elements of the
/// observation space, written into a caller-owned `Vec` that is cleared first,
/// so stepping does not allocate once the vector has grown to size. An
/// implementation writes exactly one observation with `obs.extend_from_slice`
/// or `obs.push`.
///
/// Implementations should be deterministic given the seeds passed to `reset`.
/// Wrap an environment in [`Checked`](crate::Checked) (the vectorised
/// environment does it for you) to have its actions, call order and outputs
/// validated.
pub trait Env: Send {
    /// A short name used in error messages, e.g. `CartPole-v1`.
    fn name(&self) -> &str;

    /// The observation space; always a [`Space::Box`].
    fn observation_space(&self) -> &Space;

    /// The action space.
    fn action_space(&self) -> &Space;

    /// Start a new episode and write its first observation into `obs`.
    ///
    /// `Some(seed)` re-seeds the environment's random number generator first;
    /// `None` continues the current stream (as in Gymnasium).
    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError>;

    /// Take `action`, write the next observation into `obs`, and report reward
    /// and end-of-episode flags.
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError>;

    /// For discrete action spaces: which actions are legal in the current state
    /// (`true` = allowed), or `None` if every action is always legal.
    fn action_mask(&self) -> Option<&[bool]> {
        None
    }
}

impl<E: Env + ?Sized> Env for Box<E> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn observation_space(&self) -> &Space {
        (**self).observation_space()
    }
    fn action_space(&self) -> &Space {
        (**self).action_space()
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        (**self).reset(seed, obs)
    }
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        (**self).step(action, obs)
    }
    fn action_mask(&self) -> Option<&[bool]> {
        (**self).action_mask()
    }
}
