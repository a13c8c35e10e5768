//! The [`Env`] trait: Gymnasium's `reset` / `step` contract in Rust.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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
    ///
    /// An action outside the action space (out of range, wrong length, NaN)
    /// should be refused with [`EnvError::InvalidAction`], leaving the state
    /// unchanged ([`Space::check_action`] does the test). After a step that
    /// reported `terminated` or `truncated` the episode is over: until the next
    /// `reset`, `step` should return [`EnvError::NeedsReset`] (the built-in
    /// environments and [`TimeLimit`](crate::TimeLimit) do, and
    /// [`Checked`](crate::Checked) refuses such calls for any environment).
    /// [`check_env`](crate::check_env) tests all of this.
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError>;

    /// For discrete action spaces: which actions are legal in the current state
    /// (`true` = allowed), or `None` if every action is always legal.
    fn action_mask(&self) -> Option<&[bool]> {
        None
    }

    /// The environment's exact state — physics, counters, flags and random
    /// number generators — so that [`Env::restore`] followed by the same
    /// actions reproduces the same trajectory bit for bit (checkpoints and
    /// resumed runs rely on it). `None` (the default) means the environment
    /// does not support snapshots; a run resumed on it starts from a fresh
    /// reset and is not bit-identical to an uninterrupted one.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        None
    }

    /// Put the environment back into the state `snapshot` describes (taken
    /// from an environment of the same kind and parameters). The default
    /// returns [`EnvError::Snapshot`]: snapshots unsupported.
    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        let _ = snapshot;
        Err(EnvError::Snapshot {
            env: self.name().to_string(),
            reason: "this environment does not support snapshots".into(),
        })
    }
}

/// The exact state of an environment (see [`Env::snapshot`]), in a generic
/// form every environment and wrapper fills in its own documented order:
/// real numbers (stored bit for bit when serialised), integers, flags, random
/// number generators, and the snapshots of wrapped environments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EnvSnapshot {
    /// The name of the environment (or wrapper) that took it, checked on restore.
    pub kind: String,
    /// Real-valued state. Serialised as the IEEE-754 bit patterns (`u64`), so
    /// a round trip through JSON is exact, NaN included.
    #[serde(with = "f64_bits")]
    pub floats: Vec<f64>,
    /// Integer state (counters, indices).
    pub ints: Vec<u64>,
    /// Boolean state (flags, masks).
    pub flags: Vec<bool>,
    /// Random number generator states.
    pub rngs: Vec<RngState>,
    /// Snapshots of the wrapped environment (wrappers) or of every copy
    /// ([`VecEnv`](crate::VecEnv)).
    pub children: Vec<EnvSnapshot>,
}

impl EnvSnapshot {
    /// An empty snapshot of `kind`.
    pub fn new(kind: &str) -> Self {
        EnvSnapshot {
            kind: kind.to_string(),
            ..Default::default()
        }
    }

    /// Check that the snapshot was taken by `kind` and has exactly
    /// `[floats, ints, flags, rngs, children]` entries; an
    /// [`EnvError::Snapshot`] naming `env` and the difference otherwise.
    pub fn expect(&self, env: &str, kind: &str, counts: [usize; 5]) -> Result<(), EnvError> {
        let [floats, ints, flags, rngs, children] = counts;
        let err = |reason: String| {
            Err(EnvError::Snapshot {
                env: env.to_string(),
                reason,
            })
        };
        if self.kind != kind {
            return err(format!(
                "the snapshot was taken from `{}`, not `{kind}`",
                self.kind
            ));
        }
        let counts = [
            ("real numbers", self.floats.len(), floats),
            ("integers", self.ints.len(), ints),
            ("flags", self.flags.len(), flags),
            ("random number generators", self.rngs.len(), rngs),
            ("wrapped environments", self.children.len(), children),
        ];
        for (what, got, expected) in counts {
            if got != expected {
                return err(format!(
                    "the snapshot has {got} {what}, this environment has {expected} \
                     (different parameters?)"
                ));
            }
        }
        Ok(())
    }
}

/// The exact state of a ChaCha random number generator: seed, stream and
/// position in the stream (rand_chacha's `get_seed`, `get_stream`,
/// `get_word_pos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The word position, split into the high and low 64 bits (JSON readers
    /// commonly have no 128-bit integers).
    pub word_pos: [u64; 2],
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        let pos = rng.get_word_pos();
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: [(pos >> 64) as u64, pos as u64],
        }
    }

    /// A generator in exactly this state.
    pub fn to_rng(&self) -> ChaCha8Rng {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(((self.word_pos[0] as u128) << 64) | self.word_pos[1] as u128);
        rng
    }
}

/// Serde helper: `Vec<f64>` as the bit patterns `Vec<u64>`.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.to_bits())
            .collect::<Vec<u64>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
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
    fn snapshot(&self) -> Option<EnvSnapshot> {
        (**self).snapshot()
    }
    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        (**self).restore(snapshot)
    }
}
