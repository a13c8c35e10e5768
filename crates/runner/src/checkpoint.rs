//! Checkpoints: everything a run needs to continue bit for bit, written
//! atomically.
//!
//! A checkpoint is a directory `checkpoints/update-NNNNNNNN/` holding
//! - `policy.safetensors`, `value.safetensors`: the networks' parameters;
//! - `state.safetensors`: every real number of the run's state as exact f64
//!   vectors — the optimiser's vectors (`algo.v.<name>`, Adam moments) and
//!   scalars (`algo.s.<name>`, β, step counts), the observation normaliser
//!   (`obs_norm.*`), the reward scaler (`reward.*`), the collector's current
//!   observation (`collector.obs`), the return window (`window.*`);
//! - `state.json`: counters, the RNG (`ChaCha8Rng` seed, stream, word
//!   position), the environments' snapshot (floats as bit patterns), and what
//!   the checkpoint is for (environment, algorithm, network sizes), checked on
//!   load;
//! - `config.toml`: the run's resolved config, so a checkpoint is enough to
//!   evaluate.
//!
//! Writing goes to a hidden temporary directory whose files are fsynced, which
//! is then renamed into place and the parent directory fsynced; older
//! checkpoints are removed only afterwards. A crash at any moment therefore
//! leaves the previous checkpoint complete, and loading takes the newest
//! `update-*` directory (temporary directories are ignored and cleaned up).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use klrl_envs::{EnvSnapshot, RngState};
use klrl_optim::normalize::{ObsNormalizer, RunningMeanStd};
use klrl_optim::{AlgoState, Trainer};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};

/// Format version written into `state.json`.
const FORMAT: u32 = 1;

/// The non-numeric part of a checkpoint (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version.
    pub format: u32,
    /// Environment registry name.
    pub env: String,
    /// Algorithm name.
    pub algo: String,
    /// Observation width.
    pub obs_dim: usize,
    /// Number of policy parameters.
    pub policy_params: usize,
    /// Number of value-function parameters.
    pub value_params: usize,
    /// Environment copies.
    pub n_envs: usize,
    /// Updates done.
    pub updates: u64,
    /// Environment steps done.
    pub env_steps: u64,
    /// Episodes finished so far.
    pub episodes: u64,
    /// The run's RNG.
    pub rng: RngState,
    /// The vectorised environment's exact state, when it supports snapshots.
    pub env_snapshot: Option<EnvSnapshot>,
    /// Whether the collector had taken the current observation.
    pub collector_primed: bool,
    /// TensorBoard segments written so far (`tb/0`, `tb/1`, … one per
    /// process that worked on the run).
    pub tb_segments: u32,
}

/// Run-level state the runner keeps besides the trainer's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    /// Returns of the most recent finished episodes (the moving window).
    pub window_returns: Vec<f64>,
    /// Their lengths.
    pub window_lengths: Vec<f64>,
    /// Episodes finished so far.
    pub episodes: u64,
    /// Wall-clock seconds spent training so far.
    pub wall_s: f64,
    /// TensorBoard segments written so far.
    pub tb_segments: u32,
}

/// Name of the checkpoint directory after `updates` updates.
fn dir_name(updates: u64) -> String {
    format!("update-{updates:08}")
}

/// Write a checkpoint of `trainer` and `state` into `checkpoints/` (created if
/// needed), keeping the newest `keep` checkpoints. Returns its directory.
pub fn save(
    checkpoints: &Path,
    trainer: &Trainer,
    state: &RunState,
    config_toml: &str,
    keep: usize,
) -> Result<PathBuf> {
    fs::create_dir_all(checkpoints).map_err(|e| RunnerError::io(checkpoints, e))?;
    let name = dir_name(trainer.updates);
    let final_dir = checkpoints.join(&name);
    let tmp = checkpoints.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| RunnerError::io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| RunnerError::io(&tmp, e))?;

    trainer.policy.save(&tmp.join("policy.safetensors"))?;
    trainer.value.save(&tmp.join("value.safetensors"))?;
    write_bag(&tmp.join("state.safetensors"), &numbers(trainer, state))?;
    let meta = CheckpointMeta {
        format: FORMAT,
        env: trainer.config.env.name.clone(),
        algo: trainer.algo.name().to_string(),
        obs_dim: trainer.venv.obs_dim(),
        policy_params: trainer.policy.num_params(),
        value_params: trainer.value.num_params(),
        n_envs: trainer.venv.num_envs(),
        updates: trainer.updates,
        env_steps: trainer.env_steps,
        episodes: state.episodes,
        rng: RngState::of(&trainer.rng),
        env_snapshot: trainer.venv.snapshot(),
        collector_primed: trainer.collector.current_observations().is_some(),
        tb_segments: state.tb_segments,
    };
    let json = serde_json::to_string_pretty(&meta)
        .map_err(|e| RunnerError::checkpoint(&tmp, format!("cannot serialise state.json: {e}")))?;
    write_synced(&tmp.join("state.json"), json.as_bytes())?;
    write_synced(&tmp.join("config.toml"), config_toml.as_bytes())?;
    for f in ["policy.safetensors", "value.safetensors"] {
        sync_file(&tmp.join(f))?;
    }
    sync_dir(&tmp)?;
    if final_dir.exists() {
        // Same update count written again (e.g. a final checkpoint right
        // after a periodic one): the old one goes only once the new is complete.
        let old = checkpoints.join(format!(".old-{name}-{}", std::process::id()));
        fs::rename(&final_dir, &old).map_err(|e| RunnerError::io(&final_dir, e))?;
        fs::rename(&tmp, &final_dir).map_err(|e| RunnerError::io(&final_dir, e))?;
        fs::remove_dir_all(&old).map_err(|e| RunnerError::io(&old, e))?;
    } else {
        fs::rename(&tmp, &final_dir).map_err(|e| RunnerError::io(&final_dir, e))?;
    }
    sync_dir(checkpoints)?;
    // Only now may older checkpoints go.
    let all = list(checkpoints)?;
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            fs::remove_dir_all(old).map_err(|e| RunnerError::io(old, e))?;
        }
    }
    Ok(final_dir)
}

/// The complete checkpoints in `checkpoints/`, oldest first.
pub fn list(checkpoints: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(checkpoints) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(RunnerError::checkpoint(checkpoints, e.to_string())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| RunnerError::checkpoint(checkpoints, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("update-") {
            if let Ok(n) = n.parse::<u64>() {
                out.push((n, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint in `checkpoints/`, if any.
pub fn latest(checkpoints: &Path) -> Result<Option<PathBuf>> {
    Ok(list(checkpoints)?.pop().map(|(_, p)| p))
}

/// Remove temporary directories a crash left behind.
pub fn clean_temporaries(checkpoints: &Path) {
    if let Ok(entries) = fs::read_dir(checkpoints) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(".tmp-") || name.starts_with(".old-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Read `state.json` of a checkpoint.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join("state.json");
    let text = fs::read_to_string(&path)
        .map_err(|e| RunnerError::checkpoint(dir, format!("state.json: {e}")))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| RunnerError::checkpoint(dir, format!("state.json: {e}")))?;
    if meta.format != FORMAT {
        return Err(RunnerError::checkpoint(
            dir,
            format!("format {} (this klrl reads {FORMAT})", meta.format),
        ));
    }
    Ok(meta)
}

/// Check that the checkpoint was made for `trainer`'s environment, algorithm
/// and network shapes; the error names what differs.
fn check_fits(dir: &Path, meta: &CheckpointMeta, trainer: &Trainer) -> Result<()> {
    let mut diffs = Vec::new();
    let env = &trainer.config.env.name;
    if &meta.env != env {
        diffs.push(format!("it is for environment {}, not {env}", meta.env));
    }
    let algo = trainer.algo.name();
    if meta.algo != algo {
        diffs.push(format!("it is for algorithm {}, not {algo}", meta.algo));
    }
    if meta.obs_dim != trainer.venv.obs_dim() {
        diffs.push(format!(
            "it has {}-d observations, this run {}-d",
            meta.obs_dim,
            trainer.venv.obs_dim()
        ));
    }
    if meta.policy_params != trainer.policy.num_params() {
        diffs.push(format!(
            "its policy has {} parameters, this network {}",
            meta.policy_params,
            trainer.policy.num_params()
        ));
    }
    if meta.value_params != trainer.value.num_params() {
        diffs.push(format!(
            "its value network has {} parameters, this one {}",
            meta.value_params,
            trainer.value.num_params()
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(RunnerError::checkpoint(dir, diffs.join("; ")))
    }
}

/// Load the parameter file `file` of checkpoint `dir` with `load`. A file
/// that cannot be read, does not match the network or holds a non-finite
/// value is a bad checkpoint ([`RunnerError::Checkpoint`], a usage error:
/// exit status 2), like every other checkpoint mismatch.
pub(crate) fn load_weights(
    dir: &Path,
    file: &str,
    load: impl FnOnce(&Path) -> klrl_policy::Result<()>,
) -> Result<()> {
    load(&dir.join(file)).map_err(|e| RunnerError::checkpoint(dir, e.to_string()))
}

/// Load only what acting needs — the policy and the observation normaliser —
/// into `trainer` (for evaluation).
pub fn load_policy(dir: &Path, trainer: &mut Trainer) -> Result<CheckpointMeta> {
    let meta = read_meta(dir)?;
    check_fits(dir, &meta, trainer)?;
    load_weights(dir, "policy.safetensors", |p| trainer.policy.load(p))?;
    let bag = read_bag(&dir.join("state.safetensors"))?;
    let obs_dim = trainer.venv.obs_dim();
    trainer.collector.obs_norm =
        obs_norm_from(dir, &bag, trainer.collector.obs_norm.is_some(), obs_dim)?;
    Ok(meta)
}

/// Load a whole checkpoint into `trainer` (built from the checkpoint's own
/// config). Returns the run-level state and whether the environments were
/// restored exactly (`false`: they do not support snapshots and were reset).
pub fn load(dir: &Path, trainer: &mut Trainer) -> Result<(RunState, bool)> {
    let meta = read_meta(dir)?;
    check_fits(dir, &meta, trainer)?;
    if meta.n_envs != trainer.venv.num_envs() {
        return Err(RunnerError::checkpoint(
            dir,
            format!(
                "it has {} environment copies, this run {}",
                meta.n_envs,
                trainer.venv.num_envs()
            ),
        ));
    }
    load_weights(dir, "policy.safetensors", |p| trainer.policy.load(p))?;
    load_weights(dir, "value.safetensors", |p| trainer.value.load(p))?;
    let bag = read_bag(&dir.join("state.safetensors"))?;

    let mut algo = AlgoState::new(&meta.algo);
    for (key, v) in &bag {
        if let Some(name) = key.strip_prefix("algo.v.") {
            algo.vectors.insert(name.to_string(), v.clone());
        } else if let Some(name) = key.strip_prefix("algo.s.") {
            algo.scalars
                .insert(name.to_string(), scalar(dir, &bag, key)?);
            let _ = v;
        }
    }
    trainer
        .algo
        .load_state(&algo)
        .map_err(|e| RunnerError::checkpoint(dir, e.to_string()))?;

    let obs_dim = trainer.venv.obs_dim();
    let c = &mut trainer.collector;
    c.obs_norm = obs_norm_from(dir, &bag, c.obs_norm.is_some(), obs_dim)?;
    c.reward_scaler = match (c.reward_scaler.take(), bag.get("reward.mean")) {
        (Some(mut r), Some(_)) => {
            r.stats = stats_from(dir, &bag, "reward", 1)?;
            r.returns = vector(dir, &bag, "reward.returns", r.returns.len())?.to_vec();
            r.gamma = scalar(dir, &bag, "reward.gamma")?;
            r.clip = clip_range(dir, &bag, "reward.clip")?;
            r.epsilon = non_negative(dir, &bag, "reward.epsilon")?;
            Some(r)
        }
        (None, None) => None,
        _ => {
            return Err(RunnerError::checkpoint(
                dir,
                "reward scaling differs between the checkpoint and the config",
            ))
        }
    };
    let exact = match &meta.env_snapshot {
        Some(snap) => {
            trainer
                .venv
                .restore(snap)
                .map_err(|e| RunnerError::checkpoint(dir, format!("environment state: {e}")))?;
            if meta.collector_primed {
                let obs = bag
                    .get("collector.obs")
                    .ok_or_else(|| RunnerError::checkpoint(dir, "missing collector.obs"))?;
                let expected = trainer.venv.num_envs() * trainer.venv.obs_dim();
                if obs.len() != expected {
                    return Err(RunnerError::checkpoint(
                        dir,
                        format!(
                            "collector.obs has {} values, expected {expected}",
                            obs.len()
                        ),
                    ));
                }
                trainer
                    .collector
                    .set_current_observations(obs.iter().map(|&x| x as f32).collect());
            } else {
                trainer.collector.unprime();
            }
            true
        }
        None => {
            // Fresh episodes, seeded away from the original ones.
            let seed = trainer.config.train.seed.wrapping_add(meta.env_steps);
            trainer.venv.reset(Some(seed))?;
            trainer.collector.unprime();
            false
        }
    };
    trainer.rng = meta.rng.to_rng();
    // Absent from checkpoints written before rejections were counted.
    trainer.rejected_in_a_row = match bag.get("trainer.rejected_in_a_row") {
        None => 0,
        Some(_) => whole_number(dir, &bag, "trainer.rejected_in_a_row")?,
    };
    trainer.updates = meta.updates;
    trainer.env_steps = meta.env_steps;
    let state = RunState {
        window_returns: bag.get("window.returns").cloned().unwrap_or_default(),
        window_lengths: bag.get("window.lengths").cloned().unwrap_or_default(),
        episodes: meta.episodes,
        wall_s: scalar(dir, &bag, "run.wall_s")?,
        tb_segments: meta.tb_segments,
    };
    Ok((state, exact))
}

/// Every real number of the state, by name.
fn numbers(trainer: &Trainer, state: &RunState) -> BTreeMap<String, Vec<f64>> {
    let mut bag = BTreeMap::new();
    let algo = trainer.algo.state();
    for (k, v) in &algo.vectors {
        bag.insert(format!("algo.v.{k}"), v.clone());
    }
    for (k, v) in &algo.scalars {
        bag.insert(format!("algo.s.{k}"), vec![*v]);
    }
    if let Some(n) = &trainer.collector.obs_norm {
        put_stats(&mut bag, "obs_norm", &n.stats);
        bag.insert("obs_norm.clip".into(), vec![n.clip]);
        bag.insert("obs_norm.epsilon".into(), vec![n.epsilon]);
    }
    if let Some(r) = &trainer.collector.reward_scaler {
        put_stats(&mut bag, "reward", &r.stats);
        bag.insert("reward.returns".into(), r.returns.clone());
        bag.insert("reward.gamma".into(), vec![r.gamma]);
        bag.insert("reward.clip".into(), vec![r.clip]);
        bag.insert("reward.epsilon".into(), vec![r.epsilon]);
    }
    if let Some(obs) = trainer.collector.current_observations() {
        bag.insert(
            "collector.obs".into(),
            obs.iter().map(|&x| x as f64).collect(),
        );
    }
    bag.insert("window.returns".into(), state.window_returns.clone());
    bag.insert("window.lengths".into(), state.window_lengths.clone());
    bag.insert("run.wall_s".into(), vec![state.wall_s]);
    bag.insert(
        "trainer.rejected_in_a_row".into(),
        vec![trainer.rejected_in_a_row as f64],
    );
    bag
}

pub(crate) fn put_stats(bag: &mut BTreeMap<String, Vec<f64>>, prefix: &str, s: &RunningMeanStd) {
    bag.insert(format!("{prefix}.mean"), s.mean.clone());
    bag.insert(format!("{prefix}.var"), s.var.clone());
    bag.insert(format!("{prefix}.count"), vec![s.count]);
}

fn stats_from(
    dir: &Path,
    bag: &BTreeMap<String, Vec<f64>>,
    prefix: &str,
    dim: usize,
) -> Result<RunningMeanStd> {
    Ok(RunningMeanStd {
        mean: vector(dir, bag, &format!("{prefix}.mean"), dim)?.to_vec(),
        var: vector(dir, bag, &format!("{prefix}.var"), dim)?.to_vec(),
        count: scalar(dir, bag, &format!("{prefix}.count"))?,
    })
}

pub(crate) fn obs_norm_from(
    dir: &Path,
    bag: &BTreeMap<String, Vec<f64>>,
    configured: bool,
    obs_dim: usize,
) -> Result<Option<ObsNormalizer>> {
    match (configured, bag.contains_key("obs_norm.mean")) {
        (false, false) => Ok(None),
        (true, true) => {
            let stats = stats_from(dir, bag, "obs_norm", obs_dim)?;
            if let Some(v) = stats.var.iter().find(|v| v.is_nan() || **v < 0.0) {
                return Err(RunnerError::checkpoint(
                    dir,
                    format!("`obs_norm.var` must be >= 0, has {v}"),
                ));
            }
            Ok(Some(ObsNormalizer {
                stats,
                clip: clip_range(dir, bag, "obs_norm.clip")?,
                epsilon: non_negative(dir, bag, "obs_norm.epsilon")?,
            }))
        }
        _ => Err(RunnerError::checkpoint(
            dir,
            "observation normalisation differs between the checkpoint and the config",
        )),
    }
}

fn vector<'a>(
    dir: &Path,
    bag: &'a BTreeMap<String, Vec<f64>>,
    key: &str,
    len: usize,
) -> Result<&'a [f64]> {
    match bag.get(key) {
        Some(v) if v.len() == len => Ok(v),
        Some(v) => Err(RunnerError::checkpoint(
            dir,
            format!("`{key}` has {} values, this run needs {len}", v.len()),
        )),
        None => Err(RunnerError::checkpoint(dir, format!("missing `{key}`"))),
    }
}

fn scalar(dir: &Path, bag: &BTreeMap<String, Vec<f64>>, key: &str) -> Result<f64> {
    Ok(vector(dir, bag, key, 1)?[0])
}

/// A clip range: > 0 (it becomes `clamp(-c, c)`, which panics on NaN or c < 0).
fn clip_range(dir: &Path, bag: &BTreeMap<String, Vec<f64>>, key: &str) -> Result<f64> {
    let c = scalar(dir, bag, key)?;
    if c > 0.0 {
        Ok(c)
    } else {
        Err(RunnerError::checkpoint(
            dir,
            format!("`{key}` must be > 0, got {c}"),
        ))
    }
}

/// A finite scalar >= 0 (a variance offset).
fn non_negative(dir: &Path, bag: &BTreeMap<String, Vec<f64>>, key: &str) -> Result<f64> {
    let x = scalar(dir, bag, key)?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(RunnerError::checkpoint(
            dir,
            format!("`{key}` must be finite and >= 0, got {x}"),
        ))
    }
}

/// A count: a whole number >= 0.
fn whole_number(dir: &Path, bag: &BTreeMap<String, Vec<f64>>, key: &str) -> Result<u64> {
    let x = non_negative(dir, bag, key)?;
    if x.fract() == 0.0 && x <= u64::MAX as f64 {
        Ok(x as u64)
    } else {
        Err(RunnerError::checkpoint(
            dir,
            format!("`{key}` must be a whole number, got {x}"),
        ))
    }
}

/// Write named f64 vectors as a safetensors file (bit-exact), fsynced.
pub fn write_bag(path: &Path, bag: &BTreeMap<String, Vec<f64>>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, usize)> = bag
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, n)| {
            TensorView::new(Dtype::F64, vec![*n], b)
                .map(|v| (k.clone(), v))
                .map_err(|e| RunnerError::checkpoint(path, format!("{k}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None)
        .map_err(|e| RunnerError::checkpoint(path, e.to_string()))?;
    write_synced(path, &data)
}

/// Read a file written by [`write_bag`].
pub fn read_bag(path: &Path) -> Result<BTreeMap<String, Vec<f64>>> {
    let data = fs::read(path).map_err(|e| RunnerError::checkpoint(path, e.to_string()))?;
    let st = SafeTensors::deserialize(&data)
        .map_err(|e| RunnerError::checkpoint(path, e.to_string()))?;
    let mut bag = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F64 {
            return Err(RunnerError::checkpoint(
                path,
                format!("`{name}` is {:?}, expected F64", view.dtype()),
            ));
        }
        let v = view
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect();
        bag.insert(name, v);
    }
    Ok(bag)
}

/// Write `data` to `path` and fsync it.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| RunnerError::io(path, e))?;
    f.write_all(data).map_err(|e| RunnerError::io(path, e))?;
    f.sync_all().map_err(|e| RunnerError::io(path, e))
}

/// The start of the names [`write_atomic`] gives its temporary files for
/// the file `name` (`.NAME.tmp-`): what a crash in the middle of writing
/// `name` may leave next to it.
pub fn temporary_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Replace `path` atomically: write a temporary file beside it (a name no
/// other process, on this machine or another sharing the directory, picks),
/// fsync it, rename it over `path` and fsync the directory. Readers and a
/// crash see the old content or the new, never a mix; concurrent writers of
/// the same content cannot corrupt it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::hash::{BuildHasher, Hasher};
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy().to_string());
    // RandomState is seeded from the OS's randomness per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let tmp = path.with_file_name(format!("{}{:016x}", temporary_prefix(&name), h.finish()));
    write_synced(&tmp, data)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(RunnerError::io(path, e));
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => Ok(()),
    }
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| RunnerError::io(path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directories can be fsynced on Unix; elsewhere this is best effort.
    match File::open(path).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if cfg!(unix) => Err(RunnerError::io(path, e)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bags_round_trip_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("klrl-bag-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut bag = BTreeMap::new();
        bag.insert(
            "a".to_string(),
            vec![0.1, -0.0, f64::NAN, 1e-300, f64::INFINITY],
        );
        bag.insert("empty".to_string(), vec![]);
        bag.insert("s".to_string(), vec![std::f64::consts::PI]);
        let path = dir.join("x.safetensors");
        write_bag(&path, &bag).unwrap();
        let back = read_bag(&path).unwrap();
        assert_eq!(back.len(), 3);
        for (k, v) in &bag {
            let bits: Vec<u64> = v.iter().map(|x| x.to_bits()).collect();
            let got: Vec<u64> = back[k].iter().map(|x| x.to_bits()).collect();
            assert_eq!(bits, got, "{k}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_normaliser_state_is_an_error_not_a_panic() {
        let dir = Path::new("ckpt");
        let good = || {
            let mut bag = BTreeMap::new();
            bag.insert("obs_norm.mean".to_string(), vec![0.0; 4]);
            bag.insert("obs_norm.var".to_string(), vec![1.0; 4]);
            bag.insert("obs_norm.count".to_string(), vec![10.0]);
            bag.insert("obs_norm.clip".to_string(), vec![10.0]);
            bag.insert("obs_norm.epsilon".to_string(), vec![1e-8]);
            bag
        };
        let n = obs_norm_from(dir, &good(), true, 4).unwrap().unwrap();
        assert_eq!(n.stats.dim(), 4);
        assert_eq!(n.clip, 10.0);
        for (key, value, expected) in [
            (
                "obs_norm.mean",
                vec![],
                "`obs_norm.mean` has 0 values, this run needs 4",
            ),
            (
                "obs_norm.clip",
                vec![f64::NAN],
                "`obs_norm.clip` must be > 0, got NaN",
            ),
            (
                "obs_norm.clip",
                vec![-1.0],
                "`obs_norm.clip` must be > 0, got -1",
            ),
            (
                "obs_norm.var",
                vec![-1.0; 4],
                "`obs_norm.var` must be >= 0, has -1",
            ),
            (
                "obs_norm.epsilon",
                vec![f64::INFINITY],
                "`obs_norm.epsilon` must be finite and >= 0, got inf",
            ),
        ] {
            let mut bag = good();
            bag.insert(key.to_string(), value);
            let e = obs_norm_from(dir, &bag, true, 4).unwrap_err().to_string();
            assert!(e.contains(expected), "{key}: {e}");
        }
    }
}
