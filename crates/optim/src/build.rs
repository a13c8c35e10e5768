//! The factory from an [`AlgoConfig`] to a boxed [`Algorithm`]: one line per
//! algorithm, and the only place that names every one of them.

use klrl_policy::{Policy, ValueNet};

use crate::algorithm::Algorithm;
use crate::config::{AlgoConfig, TrainConfig};
use crate::error::Result;

/// Build the optimiser `config` names for these networks.
pub fn build_algorithm(
    config: &AlgoConfig,
    train: &TrainConfig,
    policy: &dyn Policy,
    value: &ValueNet,
) -> Result<Box<dyn Algorithm>> {
    let _ = (train, policy, value);
    match config {
        AlgoConfig::Trpo(c) => Ok(Box::new(crate::trpo::Trpo::new(c.clone(), true, value))),
        AlgoConfig::Npg(c) => Ok(Box::new(crate::trpo::Trpo::new(c.clone(), false, value))),
        AlgoConfig::Ppo(c) => Ok(Box::new(crate::ppo::Ppo::new(c.clone(), policy, value))),
        AlgoConfig::VanillaPg(c) => Ok(Box::new(crate::pg::VanillaPg::new(
            c.clone(),
            policy,
            value,
        ))),
    }
}
