//! The error type of the environments crate.

use thiserror::Error;

/// Everything that can go wrong while building or stepping an environment.
///
/// Every variant names the environment (its registry name or the name a custom
/// environment reports) so that a message read in a log says where it happened.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EnvError {
    /// The action is not an element of the action space (out of range, wrong
    /// length, outside the box bounds, or not finite).
    #[error("{env}: invalid action {action}: {reason}")]
    InvalidAction {
        /// Environment name.
        env: String,
        /// The action as given, formatted for the message.
        action: String,
        /// Why it is not in the action space.
        reason: String,
    },
    /// The action is in the space but the environment's action mask forbids it.
    #[error("{env}: action {action} is masked out in the current state")]
    MaskedAction {
        /// Environment name.
        env: String,
        /// The forbidden action.
        action: usize,
    },
    /// An environment's action mask does not have one entry per action.
    #[error("{env}: action mask has {got} entries, the action space has {expected} actions")]
    MaskLength {
        /// Environment name.
        env: String,
        /// Number of discrete actions.
        expected: usize,
        /// Length of the mask.
        got: usize,
    },
    /// `step` was called before the first `reset`, or after the episode ended.
    #[error("{env}: step() called {when}; call reset() first")]
    NeedsReset {
        /// Environment name.
        env: String,
        /// "before the first reset()" or "after the episode ended (terminated or truncated)".
        when: &'static str,
    },
    /// An environment produced an observation whose length is not the
    /// observation space's flat dimension.
    #[error("{env}: {call}() produced an observation of length {got}, but the observation space has {expected} elements")]
    ObservationLength {
        /// Environment name.
        env: String,
        /// `reset` or `step`.
        call: &'static str,
        /// Flat dimension of the observation space.
        expected: usize,
        /// Length actually written.
        got: usize,
    },
    /// An environment produced a NaN or infinite observation element.
    #[error("{env}: {call}() produced a non-finite observation: element {index} is {value}")]
    NonFiniteObservation {
        /// Environment name.
        env: String,
        /// `reset` or `step`.
        call: &'static str,
        /// Index of the first offending element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// An environment produced a NaN or infinite reward.
    #[error("{env}: step() produced a non-finite reward {reward}")]
    NonFiniteReward {
        /// Environment name.
        env: String,
        /// The reward.
        reward: f64,
    },
    /// A construction parameter is out of its range.
    #[error("{env}: invalid parameter `{param}`: {reason}")]
    InvalidParameter {
        /// Environment name.
        env: String,
        /// Parameter name as written in a config.
        param: String,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// The parameter table could not be deserialised (unknown field, wrong type).
    #[error("{env}: bad parameters: {reason}")]
    BadParameters {
        /// Environment name.
        env: String,
        /// The deserialiser's message.
        reason: String,
    },
    /// No environment of that name is registered.
    #[error("unknown environment `{name}`; registered environments: {known}")]
    UnknownEnv {
        /// The name asked for.
        name: String,
        /// Comma-separated list of registered names.
        known: String,
    },
    /// An environment of that name is already registered.
    #[error("an environment named `{name}` is already registered")]
    DuplicateEnv {
        /// The name.
        name: String,
    },
    /// The environments handed to a vectorised environment disagree, or a
    /// vectorised call was given buffers of the wrong size.
    #[error("vectorised environment: {reason}")]
    VecEnv {
        /// What is inconsistent.
        reason: String,
    },
    /// A snapshot cannot be taken or restored: the environment does not
    /// support snapshots, or the snapshot belongs to another environment or
    /// other parameters.
    #[error("{env}: cannot restore snapshot: {reason}")]
    Snapshot {
        /// Environment name.
        env: String,
        /// What differs.
        reason: String,
    },
    /// An error raised by copy `index` of a vectorised environment.
    #[error("environment copy {index}: {source}")]
    InCopy {
        /// Index of the copy in the vectorised environment.
        index: usize,
        /// The underlying error.
        #[source]
        source: Box<EnvError>,
    },
}

impl EnvError {
    /// Shorthand for [`EnvError::InvalidParameter`].
    pub fn param(env: &str, param: &str, reason: impl Into<String>) -> Self {
        EnvError::InvalidParameter {
            env: env.to_string(),
            param: param.to_string(),
            reason: reason.into(),
        }
    }
}
