//! A training run on disk: its directory, metrics, TensorBoard files,
//! checkpoints, the final evaluation and `summary.json`.
//!
//! ```text
//! runs/<env>-<algo>-<timestamp>-s<seed>/
//!   config.toml          the resolved config
//!   metrics.csv          one row per update
//!   tb/0/, tb/1/, …      TensorBoard event files (one directory per process)
//!   checkpoints/update-NNNNNNNN/
//!   reference/           π_ref of [algo.reference], when it is a network
//!   summary.json         written at the end (and on Ctrl-C)
//! ```

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use klrl_envs::Registry;
use klrl_optim::{Evaluation, Trainer};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, RunState};
use crate::config::{self, ResolvedConfig};
use crate::error::{Result, RunnerError};
use crate::metrics::{MetricsRow, MetricsWriter};
use crate::reference;
use crate::tb::{self, TbWriter};

/// The evaluation summary of `summary.json` and `klrl eval --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Mean undiscounted return.
    pub mean_return: f64,
    /// Population standard deviation of the returns.
    pub std_return: f64,
    /// Mean episode length.
    pub mean_length: f64,
    /// Episodes run.
    pub episodes: usize,
    /// Whether actions were the most probable ones (or the mean).
    pub deterministic: bool,
    /// Seed of the first episode (episode k uses seed + k).
    pub seed: u64,
}

impl EvalSummary {
    /// Summarise an [`Evaluation`].
    pub fn of(e: &Evaluation, deterministic: bool, seed: u64) -> Self {
        EvalSummary {
            mean_return: e.mean_return(),
            std_return: e.std_return(),
            mean_length: e.mean_length(),
            episodes: e.episodes(),
            deterministic,
            seed,
        }
    }
}

/// `summary.json`: how a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Environment name.
    pub env: String,
    /// Algorithm name.
    pub algo: String,
    /// The run's seed.
    pub seed: u64,
    /// Updates done.
    pub updates: u64,
    /// Environment steps done.
    pub env_steps: u64,
    /// Wall-clock seconds of training (across resumes).
    pub wall_s: f64,
    /// Mean return of the last `run.return_window` training episodes
    /// (`null` if none finished).
    pub final_ep_return_mean: Option<f64>,
    /// The final evaluation, if `run.eval_episodes` > 0 and training finished.
    pub eval: Option<EvalSummary>,
    /// Whether training stopped early on Ctrl-C.
    pub interrupted: bool,
    /// The run directory.
    pub run_dir: String,
    /// The newest checkpoint.
    pub checkpoint: Option<String>,
}

/// Where a new run's directory goes.
#[derive(Debug, Clone)]
pub enum RunDir {
    /// `runs/<env>-<algo>-<timestamp>-s<seed>` under this parent, with `-2`,
    /// `-3`, … appended if it exists (never reused).
    Under(PathBuf),
    /// Exactly this directory, which must not exist or be empty.
    Exactly(PathBuf),
}

/// A training run in progress.
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// The validated config.
    pub config: ResolvedConfig,
    /// The trainer (environments, networks, optimiser, RNG).
    pub trainer: Trainer,
    metrics: MetricsWriter,
    tb: Option<TbWriter>,
    window: VecDeque<(f64, f64)>,
    state: RunState,
    started: Instant,
    /// `Some(false)` when the run was resumed on environments without
    /// snapshots (fresh episodes: not bit-identical to an uninterrupted
    /// run); `Some(true)` for an exact resume; `None` for a new run.
    pub resumed_exact: Option<bool>,
    /// The newest checkpoint written or loaded.
    pub last_checkpoint: Option<PathBuf>,
}

impl Run {
    /// Start a new run of `config`: build everything first (so a config or
    /// algorithm error writes nothing), then create the directory, write
    /// `config.toml` and the metrics header, and start TensorBoard.
    ///
    /// With `run.init_from` the networks start from that trained policy
    /// (and value network and observation normaliser, where they fit;
    /// [`reference::init_from`]), which is then the `initial` reference of
    /// `[algo.reference]`. A saved reference (`source = "saved"`) is loaded
    /// here too; every network reference is copied into the run's
    /// `reference/` directory so that a resume uses the same one.
    pub fn create(config: ResolvedConfig, dir: RunDir, registry: &Registry) -> Result<Run> {
        let mut trainer = Trainer::from_config(config.experiment.clone(), registry)
            .map_err(|e| config_error(&config.source, e))?;
        if let Some(path) = &config.run.init_from {
            reference::init_from(Path::new(path), &mut trainer, registry)?;
        }
        let reference_config = load_saved_reference(&config, &mut trainer, registry)?;
        let dir = match dir {
            RunDir::Exactly(d) => {
                if d.exists() {
                    let entries = std::fs::read_dir(&d).map_err(|e| {
                        RunnerError::Usage(format!("--out {}: not a directory ({e})", d.display()))
                    })?;
                    // A start killed before config.toml was in place leaves
                    // only write_atomic's temporary: the run never began.
                    let names: Vec<String> = entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect();
                    let temporary = checkpoint::temporary_prefix("config.toml");
                    if names.iter().all(|n| n.starts_with(&temporary)) {
                        for n in &names {
                            let _ = std::fs::remove_file(d.join(n));
                        }
                    } else {
                        return Err(RunnerError::Usage(format!(
                            "{}: exists and is not empty; run directories are never reused \
                             (resume with --resume {0})",
                            d.display()
                        )));
                    }
                }
                d
            }
            RunDir::Under(parent) => unique_dir(&parent, &default_name(&config)),
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            RunnerError::Usage(format!("--out {}: cannot be created ({e})", dir.display()))
        })?;
        let config_toml = config.to_toml();
        checkpoint::write_atomic(&dir.join("config.toml"), config_toml.as_bytes())?;
        if let Some((policy, obs_norm)) = trainer.reference().and_then(|r| r.as_network()) {
            let shape = reference_config.as_deref().unwrap_or(&config_toml);
            reference::save(&dir, policy, obs_norm, shape)?;
        }
        let metrics = MetricsWriter::create(&dir.join("metrics.csv"), config.reports_regret)?;
        let tb = if config.run.tensorboard {
            Some(TbWriter::create(&dir.join("tb").join("0"))?)
        } else {
            None
        };
        Ok(Run {
            dir,
            trainer,
            metrics,
            tb,
            window: VecDeque::new(),
            state: RunState {
                tb_segments: 1,
                ..Default::default()
            },
            started: Instant::now(),
            resumed_exact: None,
            last_checkpoint: None,
            config,
        })
    }

    /// Continue the run in `dir` from its newest checkpoint with its saved
    /// config (from the start if it has none yet).
    pub fn resume(dir: &Path, registry: &Registry) -> Result<Run> {
        Run::resume_amended(dir, &[], registry)
    }

    /// [`Run::resume`] with the saved config amended by `sets` (`key=value`,
    /// only the fields of [`config::AMENDABLE`]): extend a finished or
    /// interrupted run with `train.total_steps=N` (not below the steps
    /// already taken), change its learning rates or its logging. Everything
    /// is checked before anything is written: a refused field or a bad value
    /// is an error naming it (a usage error) and leaves the directory as it
    /// was. The amended config then replaces `config.toml` atomically, so
    /// later resumes see it.
    ///
    /// Annealing (`lr_anneal`, `clip_anneal`) uses progress = env_steps /
    /// total_steps with the *new* total: the schedule is rescaled, as if the
    /// run had been planned for N steps from the resume on (a finished
    /// annealed run's learning rate jumps from ≈ 0 back to lr · (1 − done/N)).
    /// Without annealing an extended run is bit-identical to one that ran to
    /// N steps uninterrupted.
    pub fn resume_amended(dir: &Path, sets: &[String], registry: &Registry) -> Result<Run> {
        if !dir.is_dir() {
            return Err(RunnerError::Usage(format!(
                "{}: no such run directory",
                dir.display()
            )));
        }
        if dir.join("state.json").exists() {
            return Err(RunnerError::Usage(format!(
                "{}: a checkpoint, not a run directory; resume the run it belongs to \
                 (klrl train --resume RUN_DIR), or start a new run from it with --init-from",
                dir.display()
            )));
        }
        let config = if sets.is_empty() {
            config::load_saved(dir, registry)?
        } else {
            config::load_amended(dir, sets, registry)?
        };
        let mut trainer = Trainer::from_config(config.experiment.clone(), registry)
            .map_err(|e| config_error(&config.source, e))?;
        let ckpts = dir.join("checkpoints");
        let latest = checkpoint::latest(&ckpts)?;
        let (state, exact) = match &latest {
            Some(c) => checkpoint::load(c, &mut trainer)?,
            None => {
                // Nothing saved yet: start again as the run started.
                if let Some(path) = &config.run.init_from {
                    reference::init_from(Path::new(path), &mut trainer, registry)?;
                }
                (RunState::default(), true)
            }
        };
        reference::restore(dir, &mut trainer, registry)?;
        if !sets.is_empty() {
            // An amended run (a lower learning rate, say) gets a fresh allowance of
            // rejected updates.
            trainer.rejected_in_a_row = 0;
        }
        let total = config.experiment.train.total_steps;
        if total < trainer.env_steps && sets.is_empty() {
            return Err(RunnerError::checkpoint(
                latest.as_deref().unwrap_or(dir),
                format!(
                    "it has taken {} steps, more than the run's train.total_steps = {total}",
                    trainer.env_steps
                ),
            ));
        }
        if total < trainer.env_steps {
            let arg = sets
                .iter()
                .rev()
                .find(|a| a.trim_start().starts_with("train.total_steps"))
                .cloned()
                .unwrap_or_else(|| format!("train.total_steps={total}"));
            return Err(RunnerError::BadSet {
                arg,
                reason: format!(
                    "below the {} steps this run has already taken",
                    trainer.env_steps
                ),
            });
        }
        // Everything is checked: from here on the directory changes.
        checkpoint::clean_temporaries(&ckpts);
        if !sets.is_empty() {
            checkpoint::write_atomic(&dir.join("config.toml"), config.to_toml().as_bytes())?;
        }
        let metrics = MetricsWriter::resume(
            &dir.join("metrics.csv"),
            config.reports_regret,
            trainer.updates,
        )?;
        // A fresh TensorBoard directory per process: never two writers in one.
        let mut segment = state.tb_segments;
        while dir.join("tb").join(segment.to_string()).exists() {
            segment += 1;
        }
        let tb = if config.run.tensorboard {
            Some(TbWriter::create(&dir.join("tb").join(segment.to_string()))?)
        } else {
            None
        };
        let window = state
            .window_returns
            .iter()
            .copied()
            .zip(state.window_lengths.iter().copied())
            .collect();
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            trainer,
            metrics,
            tb,
            window,
            state: RunState {
                tb_segments: segment + 1,
                ..state
            },
            started: Instant::now(),
            resumed_exact: Some(exact),
            last_checkpoint: latest,
        })
    }

    /// Whether `train.total_steps` have been taken.
    pub fn is_done(&self) -> bool {
        self.trainer.is_done()
    }

    /// Wall-clock seconds of training so far (across resumes).
    pub fn wall_s(&self) -> f64 {
        self.state.wall_s + self.started.elapsed().as_secs_f64()
    }

    /// Mean return and length of the episodes in the window (NaN if none).
    pub fn recent(&self) -> (f64, f64) {
        if self.window.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let n = self.window.len() as f64;
        (
            self.window.iter().map(|w| w.0).sum::<f64>() / n,
            self.window.iter().map(|w| w.1).sum::<f64>() / n,
        )
    }

    /// A problem with the TensorBoard writer to report, if it failed.
    pub fn tb_failure(&self) -> Option<&str> {
        self.tb.as_ref().and_then(|t| t.failure.as_deref())
    }

    /// One update: train, log the row to metrics.csv and TensorBoard, and
    /// write a checkpoint when one is due.
    pub fn step(&mut self) -> Result<MetricsRow> {
        let report = self.trainer.update()?;
        for ep in &report.episodes {
            self.window.push_back((ep.ret, ep.len as f64));
            while self.window.len() > self.config.run.return_window {
                self.window.pop_front();
            }
        }
        self.state.episodes += report.episodes.len() as u64;
        let (ret, len) = self.recent();
        let row = MetricsRow {
            update: report.update,
            env_steps: report.env_steps,
            wall_s: self.wall_s(),
            ep_return_mean: ret,
            ep_len_mean: len,
            diagnostics: report.diagnostics,
            regret: report.regret,
        };
        self.metrics.write(&row)?;
        if let Some(tb) = &mut self.tb {
            let scalars: Vec<(String, f64)> = row
                .columns(self.config.reports_regret)
                .into_iter()
                .filter(|(c, _)| *c != "env_steps")
                .map(|(c, v)| (tb::tag(c), v))
                .collect();
            tb.add(&scalars, row.env_steps);
        }
        let every = self.config.run.checkpoint_every;
        if every > 0 && self.trainer.updates.is_multiple_of(every) && !self.is_done() {
            self.checkpoint()?;
        }
        Ok(row)
    }

    /// Write a checkpoint now.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        self.state.wall_s = self.wall_s();
        self.started = Instant::now();
        let (r, l): (Vec<f64>, Vec<f64>) = self.window.iter().copied().unzip();
        self.state.window_returns = r;
        self.state.window_lengths = l;
        let path = checkpoint::save(
            &self.dir.join("checkpoints"),
            &self.trainer,
            &self.state,
            &self.config.to_toml(),
            self.config.run.keep_checkpoints,
        )?;
        self.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    /// End the run: a final checkpoint, the evaluation (unless `interrupted`
    /// or `run.eval_episodes` is 0), `summary.json`, and the TensorBoard
    /// files closed.
    pub fn finish(mut self, interrupted: bool, registry: &Registry) -> Result<Summary> {
        let ckpt = self.checkpoint()?;
        let eval = if interrupted || self.config.run.eval_episodes == 0 {
            None
        } else {
            let mut env = registry.make(
                &self.config.experiment.env.name,
                &self.config.experiment.env.params,
            )?;
            let seed = eval_seed(&self.config);
            let e =
                self.trainer
                    .evaluate(env.as_mut(), self.config.run.eval_episodes, true, seed)?;
            Some(EvalSummary::of(&e, true, seed))
        };
        let (ret, _) = self.recent();
        let summary = Summary {
            env: self.config.experiment.env.name.clone(),
            algo: self.config.experiment.algo.name().to_string(),
            seed: self.config.experiment.train.seed,
            updates: self.trainer.updates,
            env_steps: self.trainer.env_steps,
            wall_s: self.state.wall_s,
            final_ep_return_mean: ret.is_finite().then_some(ret),
            eval,
            interrupted,
            run_dir: self.dir.display().to_string(),
            checkpoint: Some(ckpt.display().to_string()),
        };
        let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
        checkpoint::write_atomic(&self.dir.join("summary.json"), json.as_bytes())?;
        if let Some(tb) = self.tb.take() {
            tb.close();
        }
        Ok(summary)
    }
}

/// The evaluation seed of a run: away from the training seeds.
pub fn eval_seed(config: &ResolvedConfig) -> u64 {
    config.experiment.train.seed.wrapping_add(1_000_000)
}

/// An optimiser error raised while building a run is a config error when it
/// is one (e.g. an algorithm that is not implemented).
/// For `source = "saved"`: load π_ref from `algo.reference.path` into
/// `trainer` and return the config text that shapes its network. Every
/// failure names the field (exit status 2).
fn load_saved_reference(
    config: &ResolvedConfig,
    trainer: &mut Trainer,
    registry: &Registry,
) -> Result<Option<String>> {
    let Some(r) = config.experiment.algo.reference() else {
        return Ok(None);
    };
    if r.source != klrl_optim::ReferenceSource::Saved {
        return Ok(None);
    }
    let path = PathBuf::from(r.path.clone().unwrap_or_default());
    let field = |reason: String| RunnerError::Config {
        location: format!("{}: algo.reference.path", config.source),
        reason,
    };
    let dir = reference::resolve(&path).map_err(|e| field(e.to_string()))?;
    let (policy, obs_norm, text) =
        reference::load_network(&dir, registry).map_err(|e| field(e.to_string()))?;
    trainer
        .set_reference(klrl_optim::Reference::network(policy, obs_norm))
        .map_err(|e| field(format!("{}: {e}", path.display())))?;
    Ok(Some(text))
}

fn config_error(source: &str, e: klrl_optim::OptimError) -> RunnerError {
    match e {
        klrl_optim::OptimError::Config { field, reason } => RunnerError::Config {
            location: format!("{source}: {field}"),
            reason,
        },
        other => RunnerError::Optim(other),
    }
}

/// `<env>-<algo>-<UTC timestamp>-s<seed>`.
fn default_name(config: &ResolvedConfig) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{}-{}-{}-s{}",
        config.experiment.env.name,
        config.experiment.algo.name(),
        utc_timestamp(secs),
        config.experiment.train.seed
    )
}

/// `YYYYMMDD-HHMMSS` in UTC (Howard Hinnant's civil-from-days algorithm).
pub fn utc_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `parent/name`, or `parent/name-2`, `-3`, … if taken.
fn unique_dir(parent: &Path, name: &str) -> PathBuf {
    let mut dir = parent.join(name);
    let mut k = 2;
    while dir.exists() {
        dir = parent.join(format!("{name}-{k}"));
        k += 1;
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "19700101-000000");
        // 2000-02-29 12:34:56 UTC (a leap day).
        assert_eq!(utc_timestamp(951_827_696), "20000229-123456");
        // 2024-12-31 23:59:59 UTC.
        assert_eq!(utc_timestamp(1_735_689_599), "20241231-235959");
    }
}
