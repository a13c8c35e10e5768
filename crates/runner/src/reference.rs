//! Trained policies taken from disk: the reference policy π_ref of
//! `[algo.reference]` (`source = "saved"`), the starting point of `klrl train
//! --init-from`, and the copy of π_ref every run with a network reference
//! keeps in its own directory so that `--resume` uses the very same one:
//!
//! ```text
//! runs/<run>/reference/
//!   config.toml          the config that shapes π_ref's network
//!   policy.safetensors   its parameters
//!   state.safetensors    its observation normaliser (obs_norm.*), if any
//! ```
//!
//! The layout is a subset of a checkpoint's, so a checkpoint directory, a run
//! directory (its newest checkpoint) and a `reference/` directory are all
//! read by [`load_network`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use klrl_envs::Registry;
use klrl_optim::normalize::ObsNormalizer;
use klrl_optim::{Reference, Trainer};
use klrl_policy::Policy;

use crate::checkpoint::{self, load_weights, obs_norm_from, put_stats, read_bag, write_bag};
use crate::config;
use crate::error::{Result, RunnerError};

/// The name of a run's copy of its reference policy.
pub const DIR: &str = "reference";

/// The directory holding a policy: `path` itself when it has
/// `policy.safetensors` (a checkpoint or a `reference/` directory), else the
/// newest checkpoint of the run directory `path`.
///
/// Errors: [`RunnerError::Usage`] when `path` is neither.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("policy.safetensors").is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(RunnerError::Usage(format!(
            "{}: no such run or checkpoint directory",
            path.display()
        )));
    }
    match checkpoint::latest(&path.join("checkpoints"))? {
        Some(c) => Ok(c),
        None => Err(RunnerError::Usage(format!(
            "{}: not a klrl run directory with a checkpoint, nor a checkpoint directory",
            path.display()
        ))),
    }
}

/// A policy and its observation normaliser, read from `dir` (see
/// [`resolve`]) and built from that directory's own `config.toml`, so any
/// network shape loads. Also returns the config text.
///
/// Errors: a missing or invalid config, parameters that do not fit it or
/// are not finite ([`RunnerError::Checkpoint`]).
pub fn load_network(
    dir: &Path,
    registry: &Registry,
) -> Result<(Box<dyn Policy + Send>, Option<ObsNormalizer>, String)> {
    let saved = config::load_saved(dir, registry)?;
    let text = saved.to_toml();
    let mut experiment = saved.experiment;
    // The saved run's own reference (if it had one) plays no part here.
    strip_reference(&mut experiment.algo);
    let mut trainer = Trainer::from_config(experiment, registry)
        .map_err(|e| RunnerError::checkpoint(dir, e.to_string()))?;
    load_weights(dir, "policy.safetensors", |p| trainer.policy.load(p))?;
    let bag_path = dir.join("state.safetensors");
    let bag = if bag_path.is_file() {
        read_bag(&bag_path)?
    } else {
        BTreeMap::new()
    };
    let obs_dim = trainer.venv.obs_dim();
    let obs_norm = obs_norm_from(dir, &bag, trainer.collector.obs_norm.is_some(), obs_dim)?;
    Ok((trainer.policy, obs_norm, text))
}

/// Remove `[algo.reference]` from an algorithm config.
fn strip_reference(algo: &mut klrl_optim::AlgoConfig) {
    use klrl_optim::AlgoConfig;
    match algo {
        AlgoConfig::Ppo(p) => p.reference = None,
        AlgoConfig::Trpo(t) | AlgoConfig::Npg(t) => t.reference = None,
        AlgoConfig::VanillaPg(p) => p.reference = None,
    }
}

/// Write the network reference `policy` (with `obs_norm`, shaped by the
/// config `config_toml`) into `run_dir/reference/`.
pub fn save(
    run_dir: &Path,
    policy: &dyn Policy,
    obs_norm: Option<&ObsNormalizer>,
    config_toml: &str,
) -> Result<()> {
    let dir = run_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| RunnerError::io(&dir, e))?;
    checkpoint::write_synced(&dir.join("config.toml"), config_toml.as_bytes())?;
    policy.save(&dir.join("policy.safetensors"))?;
    let mut bag = BTreeMap::new();
    if let Some(n) = obs_norm {
        put_stats(&mut bag, "obs_norm", &n.stats);
        bag.insert("obs_norm.clip".into(), vec![n.clip]);
        bag.insert("obs_norm.epsilon".into(), vec![n.epsilon]);
    }
    write_bag(&dir.join("state.safetensors"), &bag)
}

/// Load `run_dir/reference/` (if the run keeps one) into `trainer`.
pub fn restore(run_dir: &Path, trainer: &mut Trainer, registry: &Registry) -> Result<()> {
    let dir = run_dir.join(DIR);
    if !dir.is_dir() {
        return Ok(());
    }
    let (policy, obs_norm, _) = load_network(&dir, registry)?;
    trainer
        .set_reference(Reference::network(policy, obs_norm))
        .map_err(|e| RunnerError::checkpoint(&dir, e.to_string()))
}

/// Start `trainer` from the policy saved at `path` (a run or checkpoint
/// directory): the policy's parameters (the networks must have the same
/// shape), the value network's where its shape matches too (else it stays
/// freshly initialised), and the observation normaliser's statistics when
/// both runs normalise. Returns whether the value network was loaded.
///
/// Errors ([`RunnerError::Usage`], naming `--init-from`): no checkpoint at
/// `path`, another network shape or action space, a policy trained on
/// normalised observations for a run without normalisation, non-finite
/// parameters.
pub fn init_from(path: &Path, trainer: &mut Trainer, registry: &Registry) -> Result<bool> {
    let usage =
        |reason: String| RunnerError::Usage(format!("--init-from {}: {reason}", path.display()));
    let dir = resolve(path).map_err(|e| usage(e.to_string()))?;
    let (saved, obs_norm, _) = load_network(&dir, registry).map_err(|e| usage(e.to_string()))?;
    let shape = |p: &dyn Policy| (p.obs_dim(), p.action_dim(), p.num_params());
    if shape(saved.as_ref()) != shape(trainer.policy.as_ref()) {
        let (o, a, n) = shape(saved.as_ref());
        let (o2, a2, n2) = shape(trainer.policy.as_ref());
        return Err(usage(format!(
            "its policy has {o} observations, {a} actions and {n} parameters; this run's {o2}, {a2} and {n2} \
             (the [policy] tables must agree)"
        )));
    }
    match (&obs_norm, &mut trainer.collector.obs_norm) {
        (Some(saved), Some(mine)) => *mine = saved.clone(),
        (Some(_), None) => {
            return Err(usage(
                "its policy takes normalised observations; set train.normalize_obs = true".into(),
            ))
        }
        (None, _) => {}
    }
    load_weights(&dir, "policy.safetensors", |p| trainer.policy.load(p))
        .map_err(|e| usage(e.to_string()))?;
    let value_file = dir.join("value.safetensors");
    let value_loaded = value_file.is_file() && trainer.value.load(&value_file).is_ok();
    trainer
        .refreeze_initial_reference()
        .map_err(|e| usage(e.to_string()))?;
    Ok(value_loaded)
}
