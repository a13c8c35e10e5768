//! The error type of the optimiser crate.

use thiserror::Error;

/// Everything that can go wrong while collecting rollouts or updating.
#[derive(Debug, Error)]
pub enum OptimError {
    /// The policy or value network failed (shapes, candle, files).
    #[error(transparent)]
    Policy(#[from] klrl_policy::PolicyError),
    /// The environment failed (bad action, misbehaving custom environment).
    #[error(transparent)]
    Env(#[from] klrl_envs::EnvError),
    /// A hyperparameter is out of its range, or hyperparameters disagree.
    #[error("{field}: {reason}")]
    Config {
        /// The field's path, e.g. `algo.max_kl`.
        field: String,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// The policy and the environment do not fit together.
    #[error("policy/environment mismatch: {0}")]
    Mismatch(String),
    /// A loss, gradient or statistic became NaN or infinite.
    #[error("non-finite {what} in update {update}; lower the learning rate or the step size")]
    NonFinite {
        /// Which quantity.
        what: &'static str,
        /// The update number (0-based).
        update: u64,
    },
    /// `limit` updates in a row were rejected for non-finite values
    /// (`train.max_rejected_updates`); the parameters are those before the
    /// first of them.
    #[error(
        "{limit} updates in a row rejected, the last (update {update}) for non-finite {what}; \
         the parameters are those before the first of them. Lower the learning rate or the \
         step size, or raise train.max_rejected_updates"
    )]
    Diverged {
        /// The quantity that was not finite in the last rejected update.
        what: String,
        /// The last rejected update (0-based).
        update: u64,
        /// `train.max_rejected_updates`.
        limit: u64,
    },
    /// Saved optimiser state does not fit this optimiser.
    #[error("optimiser state: {0}")]
    State(String),
}

impl OptimError {
    /// Shorthand for [`OptimError::Config`].
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        OptimError::Config {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, OptimError>;
