//! The error type of the runner crate, and which errors are the user's input.

use thiserror::Error;

/// Everything that can go wrong while setting up, running, checkpointing,
/// evaluating or comparing runs.
#[derive(Debug, Error)]
pub enum RunnerError {
    /// A config is invalid: unknown field, wrong type, out-of-range value,
    /// unknown environment or algorithm. `location` is the file (or
    /// `--set`) and the field path, e.g. `configs/x.toml: algo.max_kl`.
    #[error("{location}: {reason}")]
    Config {
        /// Where: the file and the field path.
        location: String,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// A config file is not valid TOML.
    #[error("{file}:{line}:{column}: invalid TOML: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        reason: String,
    },
    /// A `--set key=value` override is malformed or names no known field.
    #[error("--set {arg}: {reason}")]
    BadSet {
        /// The argument as given.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// A command-line argument is unusable (missing run directory, an output
    /// directory that is not empty, a path that is no run or checkpoint).
    #[error("{0}")]
    Usage(String),
    /// A checkpoint does not fit the run it is loaded into (other
    /// environment, network shape or algorithm), or is damaged.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: String,
        /// What differs or what is broken.
        reason: String,
    },
    /// Reading or writing a file failed. (The OS error is part of the
    /// message and not a separate cause, so that it is printed once.)
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// Training or evaluation failed.
    #[error(transparent)]
    Optim(#[from] klrl_optim::OptimError),
    /// An environment failed.
    #[error(transparent)]
    Env(#[from] klrl_envs::EnvError),
    /// A network could not be saved or loaded.
    #[error(transparent)]
    Policy(#[from] klrl_policy::PolicyError),
    /// A metrics.csv or compare.json is damaged (unreadable, a header or
    /// row that does not fit).
    #[error("{path}: {reason}")]
    Metrics {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Runs of a comparison failed; each one's reason was reported as it
    /// failed (`klrl compare` prints it on the task's line), `first` is the
    /// first of them and decides the exit status.
    #[error("{failed} run(s) of the comparison failed (reasons above)")]
    RunsFailed {
        /// How many runs failed.
        failed: usize,
        /// The first failure.
        first: Box<RunnerError>,
    },
    /// A plot could not be drawn.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The image file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl RunnerError {
    /// Whether the error is in the user's input (config, arguments, a
    /// checkpoint that is damaged or made for something else, a damaged
    /// metrics.csv or compare.json): the `klrl` program exits with status 2
    /// for these and 1 for failures while running.
    pub fn is_usage(&self) -> bool {
        match self {
            RunnerError::RunsFailed { first, .. } => first.is_usage(),
            e => matches!(
                e,
                RunnerError::Config { .. }
                    | RunnerError::Syntax { .. }
                    | RunnerError::BadSet { .. }
                    | RunnerError::Usage(_)
                    | RunnerError::Checkpoint { .. }
                    | RunnerError::Metrics { .. }
            ),
        }
    }

    /// Whether a run stopped because too many updates in a row were
    /// rejected for non-finite values ([`klrl_optim::OptimError::Diverged`]):
    /// the `klrl` program exits with status 3 for these.
    pub fn is_divergence(&self) -> bool {
        match self {
            RunnerError::RunsFailed { first, .. } => first.is_divergence(),
            e => matches!(
                e,
                RunnerError::Optim(klrl_optim::OptimError::Diverged { .. })
            ),
        }
    }

    /// Shorthand for [`RunnerError::Io`].
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        RunnerError::Io {
            path: path.display().to_string(),
            error: source,
        }
    }

    /// Shorthand for [`RunnerError::Checkpoint`].
    pub fn checkpoint(path: &std::path::Path, reason: impl Into<String>) -> Self {
        RunnerError::Checkpoint {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, RunnerError>;
