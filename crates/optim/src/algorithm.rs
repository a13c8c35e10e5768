//! The interface every optimiser implements and the state it carries between
//! updates. [`crate::build::build_algorithm`] builds one from its configuration.

use std::collections::BTreeMap;

use klrl_policy::{Policy, ValueNet};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::diagnostics::UpdateDiagnostics;
use crate::error::{OptimError, Result};

/// An on-policy optimiser: turns one batch of experience into one update of
/// the policy and value networks.
///
/// Adding an algorithm means one file implementing this trait, one
/// [`crate::config::AlgoConfig`] variant and one line in
/// [`crate::build::build_algorithm`].
pub trait Algorithm: Send {
    /// The config name (`ppo`, `trpo`, `npg`, `vanilla-pg`).
    fn name(&self) -> &'static str;

    /// Update `policy` and `value` from `batch`, returning the update's
    /// diagnostics. `rng` shuffles minibatches (and anything else random).
    fn update(
        &mut self,
        policy: &mut dyn Policy,
        value: &mut ValueNet,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> Result<UpdateDiagnostics>;

    /// Everything the optimiser carries between updates (Adam moments, β),
    /// for checkpoints.
    fn state(&self) -> AlgoState;

    /// Restore [`Algorithm::state`]; a state of another algorithm or of
    /// networks of another size is an [`OptimError::State`].
    fn load_state(&mut self, state: &AlgoState) -> Result<()>;
}

/// An optimiser's state between updates: named scalars (β, step counts) and
/// named vectors (Adam moments), stored exactly in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlgoState {
    /// The algorithm's name, checked on load.
    pub algo: String,
    /// Named scalars.
    pub scalars: BTreeMap<String, f64>,
    /// Named vectors.
    pub vectors: BTreeMap<String, Vec<f64>>,
}

impl AlgoState {
    /// An empty state for `algo`.
    pub fn new(algo: &str) -> Self {
        AlgoState {
            algo: algo.to_string(),
            ..Default::default()
        }
    }

    /// The scalar `key`, or an error naming it.
    pub fn scalar(&self, key: &str) -> Result<f64> {
        self.scalars
            .get(key)
            .copied()
            .ok_or_else(|| OptimError::State(format!("{}: missing scalar `{key}`", self.algo)))
    }

    /// The vector `key` of length `len`, or an error naming it.
    pub fn vector(&self, key: &str, len: usize) -> Result<&[f64]> {
        match self.vectors.get(key) {
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(OptimError::State(format!(
                "{}: vector `{key}` has {} values, this network needs {len}",
                self.algo,
                v.len()
            ))),
            None => Err(OptimError::State(format!(
                "{}: missing vector `{key}`",
                self.algo
            ))),
        }
    }

    /// [`AlgoState::vector`] as f32 values (Adam's moments): each value
    /// must be finite and within f32's range, and is rounded to nearest
    /// (exact for what an f32 vector was saved as; a checkpoint from before
    /// the moments were f32 loads rounded).
    pub fn vector_f32(&self, key: &str, len: usize) -> Result<Vec<f32>> {
        self.vector(key, len)?
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if x.is_finite() && x.abs() <= f64::from(f32::MAX) {
                    Ok(x as f32)
                } else {
                    Err(OptimError::State(format!(
                        "{}: vector `{key}` holds {x} at index {i}, not a finite f32",
                        self.algo
                    )))
                }
            })
            .collect()
    }

    /// Check that this state was saved by `algo`.
    pub fn expect_algo(&self, algo: &str) -> Result<()> {
        if self.algo == algo {
            Ok(())
        } else {
            Err(OptimError::State(format!(
                "saved by `{}`, cannot be loaded into `{algo}`",
                self.algo
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam's moments load as f32: exact for f32 values, rounded for
    /// others; a value no f32 holds is an error naming the vector and index.
    #[test]
    fn vector_f32_rounds_and_refuses_what_f32_cannot_hold() {
        let mut s = AlgoState::new("ppo");
        s.vectors.insert("m".into(), vec![0.5, 0.1, -3.0]);
        assert_eq!(s.vector_f32("m", 3).unwrap(), vec![0.5, 0.1f32, -3.0]);
        for (bad, at) in [
            (1e39, "1000000000000000000000000000000000000000 at index 1"),
            (f64::NAN, "NaN at index 1"),
        ] {
            s.vectors.insert("v".into(), vec![1.0, bad]);
            let e = s.vector_f32("v", 2).unwrap_err().to_string();
            assert!(e.contains("vector `v` holds") && e.contains(at), "{e}");
        }
        assert!(s.vector_f32("v", 3).is_err());
    }
}
