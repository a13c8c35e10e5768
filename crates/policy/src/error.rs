//! The error type of the policy crate.

use thiserror::Error;

/// Everything that can go wrong while building, evaluating, saving or loading
/// a policy or value network.
///
/// Errors from candle are wrapped in [`PolicyError::Candle`] together with
/// the operation that failed, so that a message read in a log says where it
/// happened (`"categorical log_prob: ..."`), not only what candle saw.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A candle operation failed.
    #[error("{context}: {source}")]
    Candle {
        /// The operation of this crate during which candle failed.
        context: String,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// A constructor argument or configuration field is out of its range.
    #[error("invalid parameter `{param}`: {reason}")]
    InvalidParameter {
        /// Parameter name as written in the code or a config.
        param: &'static str,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// A tensor handed to the crate has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument (e.g. `"observations"`, `"actions"`).
        what: &'static str,
        /// The expected shape, in words (e.g. `"[N, 4]"`).
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A tensor handed to the crate has the wrong element type.
    #[error("{what}: expected dtype {expected:?}, got {got:?}")]
    DType {
        /// Which argument.
        what: &'static str,
        /// The expected dtype.
        expected: candle_core::DType,
        /// The dtype that was given.
        got: candle_core::DType,
    },
    /// A flat parameter or tangent vector has the wrong length.
    #[error("{what}: expected {expected} values (the number of parameters), got {got}")]
    FlatLength {
        /// Which vector (e.g. `"set_flat"`, `"fisher_vector_product"`).
        what: &'static str,
        /// Number of parameters.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A value that must be finite is NaN or infinite.
    #[error("{what}: element {index} is {value}, expected a finite number")]
    NonFinite {
        /// Which vector.
        what: &'static str,
        /// Index of the first offending element.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// An action is out of range for the policy.
    #[error("action {action} is out of range for a policy with {n_actions} actions")]
    ActionOutOfRange {
        /// The offending action.
        action: u64,
        /// Number of discrete actions.
        n_actions: usize,
    },
    /// An action mask is malformed (wrong length, or a state with no legal action).
    #[error("action mask: {reason}")]
    Mask {
        /// What is wrong.
        reason: String,
    },
    /// Two distributions or action sets of different kinds (categorical and
    /// Gaussian) or sizes were combined.
    #[error("mismatched distributions: {reason}")]
    Mismatch {
        /// What does not match.
        reason: String,
    },
    /// A parameter file could not be read or written.
    #[error("parameter file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// candle's (or safetensors') error.
        #[source]
        source: candle_core::Error,
    },
    /// A parameter file lacks a tensor the network needs. Nothing was loaded.
    #[error("parameter file {path}: missing tensor `{name}`; nothing was loaded")]
    MissingTensor {
        /// The file.
        path: String,
        /// The tensor name the network expects.
        name: String,
    },
    /// A parameter file holds a tensor the network does not have. Nothing was loaded.
    #[error("parameter file {path}: unexpected tensor `{name}` (the network has {known}); nothing was loaded")]
    UnexpectedTensor {
        /// The file.
        path: String,
        /// The unexpected name.
        name: String,
        /// Comma-separated list of the network's tensor names.
        known: String,
    },
    /// A tensor in a parameter file has a different shape than the network's. Nothing was loaded.
    #[error("parameter file {path}: tensor `{name}` has shape {file:?} in the file but {network:?} in the network; nothing was loaded")]
    TensorShape {
        /// The file.
        path: String,
        /// The tensor name.
        name: String,
        /// Shape in the network.
        network: Vec<usize>,
        /// Shape in the file.
        file: Vec<usize>,
    },
    /// A tensor in a parameter file has a different dtype than the network's. Nothing was loaded.
    #[error("parameter file {path}: tensor `{name}` has dtype {file:?} in the file but {network:?} in the network; nothing was loaded")]
    TensorDType {
        /// The file.
        path: String,
        /// The tensor name.
        name: String,
        /// dtype in the network.
        network: candle_core::DType,
        /// dtype in the file.
        file: candle_core::DType,
    },
    /// A tensor in a parameter file holds a NaN or an infinity. Nothing was loaded.
    #[error("parameter file {path}: tensor `{name}` holds a non-finite value ({value}) at element {index}; nothing was loaded")]
    NonFiniteTensor {
        /// The file.
        path: String,
        /// The tensor name.
        name: String,
        /// Index of the first non-finite element (flattened).
        index: usize,
        /// Its value.
        value: f64,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, PolicyError>;

/// Attaches the name of the failing operation to a candle error.
pub(crate) trait Context<T> {
    /// Wraps a candle error as [`PolicyError::Candle`] with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, candle_core::Error> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| PolicyError::Candle {
            context: context.to_string(),
            source,
        })
    }
}

/// Checks that every element of `v` is finite.
pub(crate) fn check_finite(what: &'static str, v: &[f64]) -> Result<()> {
    // A branch-free scan first (it vectorises: ~8 values a cycle against
    // one for `position`); the index only when something is not finite.
    if v.iter().fold(true, |all, x| all & x.is_finite()) {
        return Ok(());
    }
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(PolicyError::NonFinite {
            what,
            index,
            value: v[index],
        }),
    }
}
