//! Evaluating a run directory or a checkpoint.

use std::path::{Path, PathBuf};

use klrl_envs::Registry;
use klrl_optim::Trainer;

use crate::checkpoint;
use crate::config;
use crate::error::{Result, RunnerError};
use crate::run::EvalSummary;

/// The checkpoint `path` names: a checkpoint directory itself, or the newest
/// checkpoint of a run directory.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join("checkpoints").is_dir() {
        if let Some(c) = checkpoint::latest(&path.join("checkpoints"))? {
            return Ok(c);
        }
        return Err(RunnerError::Usage(format!(
            "{}: the run has no checkpoint yet",
            path.display()
        )));
    }
    Err(RunnerError::Usage(format!(
        "{}: neither a run directory (with checkpoints/) nor a checkpoint (with state.json)",
        path.display()
    )))
}

/// Evaluate the policy of `path` (run directory or checkpoint) for
/// `episodes` episodes; episode k is reset with `seed + k` (default: the
/// run's seed + 1 000 000, as the final evaluation of training uses).
pub fn evaluate(
    path: &Path,
    episodes: usize,
    deterministic: bool,
    seed: Option<u64>,
    registry: &Registry,
) -> Result<EvalSummary> {
    if episodes == 0 {
        return Err(RunnerError::Usage("--episodes must be >= 1".into()));
    }
    let ckpt = resolve_checkpoint(path)?;
    let config = config::load_saved(&ckpt, registry)?;
    let mut trainer = Trainer::from_config(config.experiment.clone(), registry)?;
    checkpoint::load_policy(&ckpt, &mut trainer)?;
    let mut env = registry.make(&config.experiment.env.name, &config.experiment.env.params)?;
    let seed = seed.unwrap_or_else(|| crate::run::eval_seed(&config));
    let e = trainer.evaluate(env.as_mut(), episodes, deterministic, seed)?;
    Ok(EvalSummary::of(&e, deterministic, seed))
}
