//! The error type of the KL toolbox.

use thiserror::Error;

/// What is wrong with one input (a distribution, a vector of standard deviations,
/// a covariance matrix, a table, a slice of log-ratios).
///
/// Indices are 0-based positions in the slice as given (for matrices and tables,
/// row and column).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InputProblem {
    /// The slice has no elements.
    #[error("is empty")]
    Empty,
    /// A weight or probability is below zero.
    #[error("index {index} is negative ({value})")]
    Negative {
        /// Position of the offending element.
        index: usize,
        /// The value found there.
        value: f64,
    },
    /// An element is NaN or infinite where a finite number is required.
    #[error("index {index} is not finite ({value})")]
    NotFinite {
        /// Position of the offending element.
        index: usize,
        /// The value found there.
        value: f64,
    },
    /// Every weight is zero, so there is nothing to normalise.
    #[error("all weights are zero")]
    AllZero,
    /// A standard deviation is zero or negative (a Gaussian needs σ > 0).
    #[error("index {index}: standard deviation must be > 0 (got {value})")]
    NonPositiveSigma {
        /// Position of the offending element (0 for a scalar).
        index: usize,
        /// The value found there.
        value: f64,
    },
    /// A flat row-major matrix does not have `dim × dim` entries.
    #[error("expected a {dim}×{dim} matrix ({} entries), got {len} entries", dim * dim)]
    NotSquare {
        /// The dimension implied by the mean vector.
        dim: usize,
        /// The number of entries given.
        len: usize,
    },
    /// A covariance matrix differs from its transpose by more than rounding.
    #[error("not symmetric: entry ({row},{col}) is {upper}, entry ({col},{row}) is {lower}")]
    NotSymmetric {
        /// Row of the upper-triangle entry.
        row: usize,
        /// Column of the upper-triangle entry.
        col: usize,
        /// Value at (row, col).
        upper: f64,
        /// Value at (col, row).
        lower: f64,
    },
    /// The Cholesky factorisation met a non-positive pivot: the matrix is not
    /// positive definite (it is singular or indefinite).
    #[error("not positive definite (Cholesky pivot {pivot} is {value})")]
    NotPositiveDefinite {
        /// The diagonal position where the factorisation failed.
        pivot: usize,
        /// The pivot value `a_jj − Σ_k l_jk²` found there.
        value: f64,
    },
    /// A row of a table has a different number of columns than the first row.
    #[error("row {row} has {got} columns, row 0 has {expected}")]
    RaggedRow {
        /// The offending row.
        row: usize,
        /// Number of columns of row 0.
        expected: usize,
        /// Number of columns of this row.
        got: usize,
    },
    /// A log-ratio is NaN or +∞ (+∞ would mean π_old(a) = 0 for a sampled
    /// action, which cannot happen when a ~ π_old).
    #[error("index {index} is not a valid log-ratio ({value})")]
    InvalidLogRatio {
        /// Position of the offending element.
        index: usize,
        /// The value found there.
        value: f64,
    },
    /// A smoothing constant is negative, NaN or infinite.
    #[error("smoothing constant must be finite and >= 0 (got {value})")]
    InvalidEpsilon {
        /// The value given.
        value: f64,
    },
}

impl InputProblem {
    /// The 0-based element index the problem is about, where there is one.
    ///
    /// Callers that read the input from somewhere else (a CSV column, say) use it
    /// to point at the right line.
    pub fn index(&self) -> Option<usize> {
        match self {
            InputProblem::Negative { index, .. }
            | InputProblem::NotFinite { index, .. }
            | InputProblem::NonPositiveSigma { index, .. }
            | InputProblem::InvalidLogRatio { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// Everything that can go wrong in the KL toolbox.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KlError {
    /// One argument is invalid; `arg` is the parameter's name in the function
    /// signature (`p`, `q`, `sigma_p`, `cov_q`, `log_var`, `joint`, …).
    #[error("{arg}: {problem}")]
    Invalid {
        /// Name of the offending argument.
        arg: &'static str,
        /// What is wrong with it.
        problem: InputProblem,
    },
    /// Two arguments that must have the same length (or dimension) do not.
    #[error("length mismatch: {left} has {left_len} elements, {right} has {right_len}")]
    LengthMismatch {
        /// Name of the first argument.
        left: &'static str,
        /// Its length.
        left_len: usize,
        /// Name of the second argument.
        right: &'static str,
        /// Its length.
        right_len: usize,
    },
}

impl KlError {
    /// Attach an argument name to an [`InputProblem`].
    pub(crate) fn invalid(arg: &'static str) -> impl FnOnce(InputProblem) -> KlError {
        move |problem| KlError::Invalid { arg, problem }
    }

    /// Check that two lengths agree.
    pub(crate) fn check_len(
        left: &'static str,
        left_len: usize,
        right: &'static str,
        right_len: usize,
    ) -> Result<(), KlError> {
        if left_len == right_len {
            Ok(())
        } else {
            Err(KlError::LengthMismatch {
                left,
                left_len,
                right,
                right_len,
            })
        }
    }
}
