//! Comparing configs: every config × seed trained in parallel threads
//! (bounded by the available cores), then a markdown summary and PNG plots.
//!
//! ```text
//! OUT/
//!   compare.json        which run is which config and seed
//!   runs/<label>-s<seed>/   ordinary run directories
//!   summary.md          per config: final return, steps to threshold, KL statistics, the KL
//!                       limit with its kind, the share of updates above it and the worst
//!                       KL/limit, bandit regret, wall time
//!   return.png          return against environment steps (mean and min–max band per config)
//!   kl.png              per-update KL(π_old ‖ π_new) against updates (log scale; the max over
//!                       states for a per-state bound), each learner's limit dashed in its colour
//!   regret.png          bandits only: cumulative expected regret against environment steps
//! ```
//!
//! [`plot_only`] redraws the summary and plots from the saved metrics.
//!
//! **Sweeps across machines and resumes.** The tasks are the configs × seeds
//! in `compare.json` order (config-major): task j is config j / K, seed
//! j mod K for K seeds. With a shard `I/N` a process trains only the tasks j
//! with j mod N = I, in the same shared output directory as the other
//! shards: every shard writes the same `compare.json` (atomically, and only
//! when none is there; one that describes another comparison is an error),
//! then only its own `runs/<label>-s<seed>/`, and no summary or plot — so
//! processes on different machines sharing the directory never write the
//! same file. [`plot_only`] merges whatever runs are there; runs not
//! started or not finished are left out of the tables and listed. With
//! `resume` a process finishes what is missing of its tasks: a finished run
//! (`summary.json` not interrupted, all its steps) is kept, a partial one
//! continues from its newest checkpoint ([`Run::resume`]), one never
//! started starts.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use klrl_envs::Registry;
use klrl_optim::{KlLimit, KlLimitKind, Threads};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigSource, ResolvedConfig};
use crate::error::{Result, RunnerError};
use crate::metrics::MetricsTable;
use crate::plot::{self, LimitLine, Series};
use crate::run::{Run, RunDir};

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The config files.
    pub configs: Vec<PathBuf>,
    /// Seeds per config: 0, 1, …, seeds − 1 (overriding `train.seed`).
    pub seeds: u64,
    /// `key=value` overrides applied to every config.
    pub sets: Vec<String>,
    /// The output directory (must not exist or be empty).
    pub out: PathBuf,
    /// Runs trained at once; `None` = the number of available cores.
    pub jobs: Option<usize>,
    /// `Some((i, n))`: train only the tasks j with j mod n = i (shard i of
    /// n, 0 ≤ i < n), write no summary or plots (`--plot-only` merges the
    /// shards); `None`: every task, then the summary and plots.
    pub shard: Option<(u64, u64)>,
    /// Finish what is missing in `out` (keep finished runs, resume partial
    /// ones, start the others) instead of requiring this part of the sweep
    /// to be new.
    pub resume: bool,
}

/// One run of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The config's label (its file stem).
    pub label: String,
    /// The config file.
    pub config: String,
    /// The seed.
    pub seed: u64,
    /// The run directory, relative to the output directory.
    pub dir: String,
}

/// One config of a comparison, as resolved (with `--set`, seed 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// Its label.
    pub label: String,
    /// The resolved config (TOML); a run's seed replaces `train.seed`.
    pub toml: String,
}

/// `compare.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every run, in config then seed order (task j is `runs[j]`).
    pub runs: Vec<RunEntry>,
    /// Seeds per config (absent in comparisons from before sharding).
    #[serde(default)]
    pub seeds: u64,
    /// The resolved configs, so that `--resume DIR` needs nothing else.
    #[serde(default)]
    pub configs: Vec<ConfigEntry>,
}

/// A run of a comparison that is not in its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Incomplete {
    /// The run directory, relative to the output directory.
    pub dir: String,
    /// `None`: never started; `Some((steps, total))`: stopped after `steps`
    /// of its `total` environment steps.
    pub progress: Option<(u64, u64)>,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.progress {
            None => write!(f, "{} (not started)", self.dir),
            Some((s, t)) => write!(f, "{} (stopped at {s} of {t} steps)", self.dir),
        }
    }
}

/// What [`plot_only`] found and drew.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per config, over its finished runs.
    pub stats: Vec<ConfigStats>,
    /// The runs left out: not started or not finished.
    pub incomplete: Vec<Incomplete>,
}

/// The summary of one config over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigStats {
    /// The config's label.
    pub label: String,
    /// Algorithm name (with the PPO objective).
    pub algo: String,
    /// Seeds with metrics.
    pub seeds: usize,
    /// Mean over seeds of the final `ep_return_mean`.
    pub final_return_mean: f64,
    /// Population standard deviation over seeds.
    pub final_return_std: f64,
    /// The environment's reward threshold.
    pub threshold: Option<f64>,
    /// Seeds whose `ep_return_mean` reached the threshold.
    pub reached: usize,
    /// Mean environment steps until it first did, over those seeds.
    pub steps_to_threshold: Option<f64>,
    /// Mean per-update KL(π_old ‖ π_new) (`kl_old_new`, the mean over the
    /// batch states) over all updates and seeds.
    pub kl_mean: f64,
    /// Largest per-update `kl_old_new`.
    pub kl_max: f64,
    /// Largest per-state KL(π_old ‖ π_new) of any update (the `kl_max`
    /// column), what a per-state bound is on; NaN without that column.
    pub kl_max_state: f64,
    /// The config's KL limit in nats ([`klrl_optim::AlgoConfig::kl_limit`]).
    pub kl_limit: Option<f64>,
    /// What the limit promises: a target a controller steers the mean KL
    /// toward, a hard bound on the mean KL, or a hard bound on every state's
    /// KL. It decides the statistic compared with the limit: `kl_old_new`
    /// for a target or a mean bound, `kl_max` (the max over states) for a
    /// per-state bound.
    pub kl_limit_kind: Option<KlLimitKind>,
    /// Fraction of updates (all seeds) whose compared KL exceeded the limit.
    pub frac_above_limit: Option<f64>,
    /// The largest compared KL / limit over all updates and seeds (above 1:
    /// the limit was exceeded, by that factor).
    pub worst_kl_ratio: Option<f64>,
    /// Targets only: fraction of updates whose mean KL exceeded 1.5× the
    /// target (where PPO's adaptive rule starts to raise β, §4).
    pub frac_above_1_5x: Option<f64>,
    /// Targets only: fraction of updates whose mean KL exceeded 3× the target.
    pub frac_above_3x: Option<f64>,
    /// Mean wall-clock seconds per run.
    pub wall_s: f64,
    /// Bandits (runs with a `regret` column): mean expected regret per
    /// environment step over the whole run, averaged over seeds (cumulative
    /// regret / steps); `None` for other environments.
    pub regret_mean: Option<f64>,
    /// Bandits: mean expected regret per step over the last 10 % of the
    /// updates, averaged over seeds (where the policy ended up).
    pub regret_final: Option<f64>,
    /// Mean over seeds of the policy's entropy at the last update.
    pub final_entropy: f64,
    /// `[algo.reference]`'s mode (`penalty`, `adaptive`, `constraint`);
    /// `None` without a reference.
    pub ref_mode: Option<String>,
    /// Mean per-update KL(π ‖ π_ref) (`kl_ref`) over all updates and seeds.
    pub kl_ref_mean: f64,
    /// Largest per-update `kl_ref`.
    pub kl_ref_max: f64,
    /// The reference bound ε_ref (constraint) or target (adaptive).
    pub kl_ref_limit: Option<f64>,
    /// Constraint mode: share of updates (all seeds) whose `kl_ref` exceeded
    /// ε_ref.
    pub frac_above_ref_limit: Option<f64>,
}

/// Labels from file stems, made unique with `-2`, `-3`, ….
fn labels(configs: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in configs {
        let stem = c
            .file_stem()
            .map_or("config".to_string(), |s| s.to_string_lossy().to_string());
        let mut label = stem.clone();
        let mut k = 2;
        while out.contains(&label) {
            label = format!("{stem}-{k}");
            k += 1;
        }
        out.push(label);
    }
    out
}

/// Train every config × seed (or, with `opts.shard`, this shard's part),
/// then write the summary and plots (unsharded only). All configs are
/// validated (for every seed) before anything is written. `stop` ends the
/// runs early (each writes a checkpoint); `on_done` is called with a line of
/// text once everything is validated (what is about to be trained, and
/// where) and then when each run ends. Returns the statistics (empty for a
/// shard).
pub fn compare(
    opts: &CompareOptions,
    registry: &Registry,
    stop: &AtomicBool,
    on_done: &(dyn Fn(&str) + Sync),
) -> Result<Vec<ConfigStats>> {
    if opts.configs.is_empty() {
        return Err(RunnerError::Usage("give at least one config".into()));
    }
    if opts.seeds == 0 {
        return Err(RunnerError::Usage("--seeds must be >= 1".into()));
    }
    let labels = labels(&opts.configs);
    let mut runs = Vec::new();
    let mut configs = Vec::new();
    let mut resolved = Vec::new();
    for (path, label) in opts.configs.iter().zip(&labels) {
        let source = ConfigSource::File(path.clone());
        configs.push(ConfigEntry {
            label: label.clone(),
            toml: config::load(&source, &opts.sets, Some(0), registry)?.to_toml(),
        });
        for seed in 0..opts.seeds {
            resolved.push(config::load(&source, &opts.sets, Some(seed), registry)?);
            runs.push(RunEntry {
                label: label.clone(),
                config: path.display().to_string(),
                seed,
                dir: format!("runs/{label}-s{seed}"),
            });
        }
    }
    let manifest = Manifest {
        runs,
        seeds: opts.seeds,
        configs,
    };
    sweep(opts, manifest, resolved, registry, stop, on_done)
}

/// `klrl compare --resume DIR` without configs: finish the comparison in
/// `opts.out` from its `compare.json` (its configs as resolved then; the
/// config files are not read). `opts.configs`, `seeds` and `sets` are
/// ignored.
pub fn resume(
    opts: &CompareOptions,
    registry: &Registry,
    stop: &AtomicBool,
    on_done: &(dyn Fn(&str) + Sync),
) -> Result<Vec<ConfigStats>> {
    let manifest = read_manifest(&opts.out)?;
    if manifest.configs.is_empty() {
        return Err(RunnerError::Usage(format!(
            "{}: compare.json is from an older klrl and holds no configs; resume with the \
             configs: klrl compare CONFIGS --seeds K --out {0} --resume",
            opts.out.display()
        )));
    }
    let mut resolved = Vec::new();
    for entry in &manifest.runs {
        let c = manifest
            .configs
            .iter()
            .find(|c| c.label == entry.label)
            .ok_or_else(|| bad_manifest(&opts.out, format!("no config for {}", entry.label)))?;
        let source = ConfigSource::Text {
            name: format!("{} ({})", entry.config, c.label),
            text: c.toml.clone(),
        };
        resolved.push(config::load(&source, &[], Some(entry.seed), registry)?);
    }
    let opts = CompareOptions {
        resume: true,
        configs: Vec::new(),
        ..opts.clone()
    };
    sweep(&opts, manifest, resolved, registry, stop, on_done)
}

fn bad_manifest(out: &Path, reason: String) -> RunnerError {
    RunnerError::Metrics {
        path: out.join("compare.json").display().to_string(),
        reason,
    }
}

/// `compare.json` of `out`; a usage error when there is none.
fn read_manifest(out: &Path) -> Result<Manifest> {
    let path = out.join("compare.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        RunnerError::Usage(format!(
            "{}: no compare.json; not the output of klrl compare",
            out.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| bad_manifest(out, e.to_string()))
}

/// Whether two manifests describe the same comparison: the same runs and
/// the same resolved configs (the config files may be spelt differently).
fn same_comparison(a: &Manifest, b: &Manifest) -> bool {
    let runs = |m: &Manifest| -> Vec<(String, u64, String)> {
        m.runs
            .iter()
            .map(|r| (r.label.clone(), r.seed, r.dir.clone()))
            .collect()
    };
    runs(a) == runs(b) && a.configs == b.configs
}

/// How far a run of the comparison got.
enum TaskState {
    /// No `config.toml`: never started (a directory without one holds at
    /// most a crashed start's temporaries).
    NotStarted,
    /// Started, not finished.
    Partial,
    /// `summary.json` of a run that was not interrupted and took its steps.
    Finished,
}

fn run_state(dir: &Path, total_steps: u64) -> TaskState {
    if !dir.join("config.toml").is_file() {
        return TaskState::NotStarted;
    }
    let finished = std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<crate::run::Summary>(&t).ok())
        .is_some_and(|s| !s.interrupted && s.env_steps >= total_steps);
    if finished {
        TaskState::Finished
    } else {
        TaskState::Partial
    }
}

/// Check and prepare the output directory, train this process's tasks, and
/// (unsharded) write the report.
fn sweep(
    opts: &CompareOptions,
    manifest: Manifest,
    resolved: Vec<ResolvedConfig>,
    registry: &Registry,
    stop: &AtomicBool,
    on_done: &(dyn Fn(&str) + Sync),
) -> Result<Vec<ConfigStats>> {
    let out = &opts.out;
    let (shard, shards) = opts.shard.unwrap_or((0, 1));
    if shards == 0 || shard >= shards {
        return Err(RunnerError::Usage(format!(
            "--shard {shard}/{shards}: needs 0 <= I < N (shards are numbered 0 … N−1)"
        )));
    }
    let existing = out.join("compare.json").is_file();
    if existing {
        let saved = read_manifest(out)?;
        if !same_comparison(&saved, &manifest) {
            return Err(RunnerError::Usage(format!(
                "{}: holds another comparison (its compare.json lists other configs, seeds or \
                 settings); choose a new --out",
                out.display()
            )));
        }
    } else if out.exists() {
        // Another shard may be writing compare.json right now: its
        // temporary file is no reason to refuse.
        let temporary = crate::checkpoint::temporary_prefix("compare.json");
        let foreign = std::fs::read_dir(out)
            .map_err(|e| {
                RunnerError::Usage(format!("--out {}: not a directory ({e})", out.display()))
            })?
            .flatten()
            .any(|e| !e.file_name().to_string_lossy().starts_with(&temporary));
        if foreign {
            return Err(RunnerError::Usage(format!(
                "{}: exists, is not empty and is not a comparison; choose a new --out \
                 (or --plot-only to redraw)",
                out.display()
            )));
        }
    }
    let mine: Vec<(RunEntry, ResolvedConfig)> = manifest
        .runs
        .iter()
        .cloned()
        .zip(resolved)
        .enumerate()
        .filter(|(j, _)| *j as u64 % shards == shard)
        .map(|(_, t)| t)
        .collect();
    if !opts.resume {
        if let Some((e, _)) = mine.iter().find(|(e, _)| out.join(&e.dir).exists()) {
            return Err(RunnerError::Usage(format!(
                "{}: exists and is not empty: this part of the comparison has run before; \
                 finish it with --resume, or choose a new --out",
                out.join(&e.dir).display()
            )));
        }
    }
    // Every check passed: announce the sweep before anything is written.
    let shard_text = opts
        .shard
        .map_or(String::new(), |(i, n)| format!(", shard {i}/{n}"));
    on_done(&if opts.configs.is_empty() {
        format!("finishing the comparison in {}{shard_text}", out.display())
    } else {
        format!(
            "training {} runs ({} configs × {} seeds{shard_text}) into {}",
            opts.configs.len() as u64 * opts.seeds,
            opts.configs.len(),
            opts.seeds,
            out.display()
        )
    });
    std::fs::create_dir_all(out).map_err(|e| {
        RunnerError::Usage(format!("--out {}: cannot be created ({e})", out.display()))
    })?;
    if !existing {
        let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        crate::checkpoint::write_atomic(&out.join("compare.json"), json.as_bytes())?;
    }
    std::fs::create_dir_all(out.join("runs")).map_err(|e| RunnerError::io(out, e))?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = opts.jobs.unwrap_or(cores).clamp(1, mine.len().max(1));
    let share = cores_per_run(cores, jobs);
    let queue = Mutex::new(VecDeque::from(mine));
    let errors: Mutex<Vec<RunnerError>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let next = queue.lock().expect("queue lock").pop_front();
                let Some((entry, resolved)) = next else { break };
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match train_one(&entry, resolved, out, registry, stop, share) {
                    Ok(line) => on_done(&line),
                    Err(e) => {
                        on_done(&format!("{} seed {}: failed: {e}", entry.label, entry.seed));
                        errors.lock().expect("errors lock").push(e);
                    }
                }
            });
        }
    });
    let stats = if opts.shard.is_some() {
        Vec::new()
    } else {
        let r = report(out, &manifest, registry)?;
        for i in &r.incomplete {
            on_done(&format!("incomplete: {i}"));
        }
        r.stats
    };
    let mut errors = errors.into_inner().expect("errors lock");
    if !errors.is_empty() {
        // Each reason was printed on its task's line; the error only counts them.
        return Err(RunnerError::RunsFailed {
            failed: errors.len(),
            first: Box::new(errors.swap_remove(0)),
        });
    }
    Ok(stats)
}

/// The cores each of `jobs` parallel runs gets when its `train.threads` is
/// `"auto"`: an equal share, at least one (`"auto"` then caps it at 2).
fn cores_per_run(cores: usize, jobs: usize) -> usize {
    (cores / jobs.max(1)).max(1)
}

/// Train one run of the comparison to the end (or until `stop`): keep it if
/// it is finished, resume it if it started, start it otherwise. With
/// `train.threads = "auto"` it runs on `cores` of the machine's cores (its
/// share beside the other parallel runs; at most `"auto"`'s 2).
fn train_one(
    entry: &RunEntry,
    resolved: ResolvedConfig,
    out: &Path,
    registry: &Registry,
    stop: &AtomicBool,
    cores: usize,
) -> Result<String> {
    let dir = out.join(&entry.dir);
    let mut run = match run_state(&dir, resolved.experiment.train.total_steps) {
        TaskState::Finished => {
            return Ok(format!(
                "{} seed {}: finished before, kept",
                entry.label, entry.seed
            ))
        }
        TaskState::Partial => Run::resume(&dir, registry)?,
        TaskState::NotStarted => {
            if dir.exists() {
                // Only a crashed start's temporaries: config.toml is the
                // first file a run writes (atomically).
                std::fs::remove_dir_all(&dir).map_err(|e| RunnerError::io(&dir, e))?;
            }
            Run::create(resolved, RunDir::Exactly(dir), registry)?
        }
    };
    let threads = run.config.experiment.train.threads;
    if threads == Threads::Auto {
        run.trainer.set_threads(threads.resolve(cores))?;
    }
    let mut interrupted = false;
    while !run.is_done() {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if let Err(e) = run.step() {
            let _ = run.checkpoint();
            return Err(e);
        }
    }
    let s = run.finish(interrupted, registry)?;
    Ok(format!(
        "{} seed {}: {} steps in {:.1} s, final return {}",
        entry.label,
        entry.seed,
        s.env_steps,
        s.wall_s,
        s.final_ep_return_mean
            .map_or("-".to_string(), |r| format!("{r:.1}"))
    ))
}

/// Redraw `summary.md`, `return.png`, `kl.png` (and `regret.png`) in `dir` (the output of
/// an earlier [`compare`], or of its shards) from the saved metrics of its
/// finished runs; the others are listed in the summary and returned.
pub fn plot_only(dir: &Path, registry: &Registry) -> Result<Report> {
    let manifest = read_manifest(dir)?;
    report(dir, &manifest, registry)
}

/// One config's runs read back.
struct Group {
    label: String,
    config: Option<ResolvedConfig>,
    tables: Vec<MetricsTable>,
}

/// Read every run's metrics, compute the statistics, write summary.md and
/// the plots.
fn report(out: &Path, manifest: &Manifest, registry: &Registry) -> Result<Report> {
    let mut groups: Vec<Group> = Vec::new();
    let mut incomplete = Vec::new();
    for entry in &manifest.runs {
        let dir = out.join(&entry.dir);
        let metrics = dir.join("metrics.csv");
        let config = config::load_saved(&dir, registry).ok();
        let total = config
            .as_ref()
            .map_or(0, |c| c.experiment.train.total_steps);
        match run_state(&dir, total) {
            TaskState::Finished if metrics.is_file() => {}
            TaskState::NotStarted => {
                incomplete.push(Incomplete {
                    dir: entry.dir.clone(),
                    progress: None,
                });
                continue;
            }
            _ => {
                let steps = MetricsTable::read(&metrics)
                    .ok()
                    .and_then(|t| t.column("env_steps"))
                    .and_then(|s| s.last().copied())
                    .map_or(0, |s| s as u64);
                incomplete.push(Incomplete {
                    dir: entry.dir.clone(),
                    progress: Some((steps, total)),
                });
                continue;
            }
        }
        let table = MetricsTable::read(&metrics)?;
        if groups.last().is_none_or(|g| g.label != entry.label) {
            groups.push(Group {
                label: entry.label.clone(),
                config,
                tables: Vec::new(),
            });
        }
        groups.last_mut().expect("pushed above").tables.push(table);
    }
    let stats: Vec<ConfigStats> = groups.iter().map(stats_of).collect();
    let threshold = stats.iter().find_map(|s| s.threshold);
    crate::checkpoint::write_atomic(
        &out.join("summary.md"),
        markdown_with(&stats, manifest, &incomplete).as_bytes(),
    )?;

    let returns: Vec<Series> = groups
        .iter()
        .map(|g| band(g, "env_steps", "ep_return_mean", None))
        .collect();
    plot::draw(
        &out.join("return.png"),
        "Return (mean of recent training episodes)",
        "environment steps",
        "return",
        &returns,
        threshold.map(|t| (t, "reward threshold")),
    )?;
    let kls: Vec<Series> = groups.iter().map(kl_series).collect();
    // Per-update KL spans decades (a trust region holds it near 1e-2, an
    // unconstrained step can reach 1): a log axis shows both.
    plot::draw_log_y(
        &out.join("kl.png"),
        "Per-update KL(π_old ‖ π_new) and each learner's limit (dashed), log scale",
        "update",
        "KL (nats)",
        &kls,
        None,
    )?;
    if stats.iter().any(|s| s.ref_mode.is_some()) {
        // Every group (one without a reference draws nothing), so the
        // colours stay those of the table order.
        let refs: Vec<Series> = groups.iter().map(kl_ref_series).collect();
        plot::draw(
            &out.join("kl_ref.png"),
            "KL(π ‖ π_ref) to the reference after each update, and each bound (dashed)",
            "update",
            "KL (nats)",
            &refs,
            None,
        )?;
    }
    if stats.iter().any(|s| s.regret_mean.is_some()) {
        let regrets: Vec<Series> = groups.iter().map(cumulative_regret).collect();
        plot::draw(
            &out.join("regret.png"),
            "Cumulative expected regret (bandit)",
            "environment steps",
            "cumulative regret (clicks lost to the oracle)",
            &regrets,
            None,
        )?;
    }
    Ok(Report { stats, incomplete })
}

/// The KL a learner's limit bounds: the batch-mean KL for a target or a mean
/// bound, the max over states for a per-state bound.
fn limited_column(limit: Option<KlLimit>) -> &'static str {
    match limit.map(|l| l.kind) {
        Some(KlLimitKind::PerState) => "kl_max",
        _ => "kl_old_new",
    }
}

/// How the summary names a kind of limit: `target`, `mean`, `per-state`.
pub fn kind_name(kind: KlLimitKind) -> &'static str {
    match kind {
        KlLimitKind::Target => "target",
        KlLimitKind::Mean => "mean",
        KlLimitKind::PerState => "per-state",
    }
}

/// A learner's curve for kl.png: the KL its limit bounds, with the limit.
fn kl_series(g: &Group) -> Series {
    let limit = g.config.as_ref().and_then(|c| c.kl_limit());
    let column = limited_column(limit);
    let mut s = band(g, "update", column, None);
    if column == "kl_max" {
        s.label = format!("{} (max over states)", g.label);
    }
    s.limit = limit.map(|l| LimitLine {
        value: l.value,
        label: format!(
            "{}: {} {}",
            g.label,
            match l.kind {
                KlLimitKind::Target => "target",
                KlLimitKind::Mean => "mean bound",
                KlLimitKind::PerState => "per-state bound",
            },
            l.value
        ),
    });
    s
}

/// A learner's curve for kl_ref.png: KL(π ‖ π_ref) per update, with its
/// bound (constraint) or target (adaptive) as a dashed line.
fn kl_ref_series(g: &Group) -> Series {
    let reference = g
        .config
        .as_ref()
        .and_then(|c| c.experiment.algo.reference());
    let line = reference.and_then(|r| {
        r.limit()
            .map(|v| (v, "bound"))
            .or(r.target.map(|v| (v, "target")))
    });
    band(
        g,
        "update",
        "kl_ref",
        line.map(|(value, what)| LimitLine {
            value,
            label: format!("{}: {what} {value}", g.label),
        }),
    )
}

/// Mean and min–max over seeds of column `y` against column `x` (rows
/// aligned by index; runs of one config share their step grid).
fn band(g: &Group, x: &str, y: &str, limit: Option<LimitLine>) -> Series {
    let cols: Vec<(Vec<f64>, Vec<f64>)> = g
        .tables
        .iter()
        .filter_map(|t| Some((t.column(x)?, t.column(y)?)))
        .collect();
    let n = cols.iter().map(|(x, _)| x.len()).max().unwrap_or(0);
    let mut s = Series {
        label: g.label.clone(),
        x: Vec::with_capacity(n),
        mean: Vec::with_capacity(n),
        min: Vec::with_capacity(n),
        max: Vec::with_capacity(n),
        limit,
    };
    for i in 0..n {
        let xs: Vec<f64> = cols.iter().filter_map(|(x, _)| x.get(i).copied()).collect();
        let vals: Vec<f64> = cols
            .iter()
            .filter_map(|(_, y)| y.get(i).copied())
            .filter(|v| v.is_finite())
            .collect();
        s.x.push(xs.first().copied().unwrap_or(f64::NAN));
        if vals.is_empty() {
            s.mean.push(f64::NAN);
            s.min.push(f64::NAN);
            s.max.push(f64::NAN);
        } else {
            s.mean.push(vals.iter().sum::<f64>() / vals.len() as f64);
            s.min
                .push(vals.iter().copied().fold(f64::INFINITY, f64::min));
            s.max
                .push(vals.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }
    s
}

/// Per run: `(env_steps, cumulative regret)` after each update, the regret
/// column being the mean expected regret per step of that update's rollout:
/// cumulative = Σ_u regret_u · (steps_u − steps_{u−1}). `None` without a
/// regret column; an empty cell adds nothing.
fn regret_curve(t: &MetricsTable) -> Option<(Vec<f64>, Vec<f64>)> {
    let steps = t.column("env_steps")?;
    let regret = t.column("regret")?;
    let mut prev = 0.0;
    let mut total = 0.0;
    let mut cum = Vec::with_capacity(steps.len());
    for (&s, &r) in steps.iter().zip(&regret) {
        if r.is_finite() {
            total += r * (s - prev);
        }
        prev = s;
        cum.push(total);
    }
    Some((steps, cum))
}

/// Mean and min–max over seeds of the cumulative regret.
fn cumulative_regret(g: &Group) -> Series {
    let curves: Vec<MetricsTable> = g
        .tables
        .iter()
        .filter_map(regret_curve)
        .map(|(steps, cum)| MetricsTable {
            columns: vec!["env_steps".into(), "cumulative_regret".into()],
            rows: steps
                .into_iter()
                .zip(cum)
                .map(|(s, c)| vec![s, c])
                .collect(),
        })
        .collect();
    band(
        &Group {
            label: g.label.clone(),
            config: None,
            tables: curves,
        },
        "env_steps",
        "cumulative_regret",
        None,
    )
}

fn stats_of(g: &Group) -> ConfigStats {
    let threshold = g.config.as_ref().and_then(|c| c.reward_threshold);
    let kl_limit = g.config.as_ref().and_then(|c| c.kl_limit());
    let mut finals = Vec::new();
    let mut reached_steps = Vec::new();
    let mut kls = Vec::new();
    let mut state_max = f64::NAN;
    // What the limit bounds (kl_old_new, or kl_max for a per-state bound).
    let mut limited = Vec::new();
    let mut walls = Vec::new();
    let mut regret_all = Vec::new();
    let mut regret_last = Vec::new();
    let mut entropies = Vec::new();
    let mut kl_refs = Vec::new();
    for t in &g.tables {
        if let Some((steps, cum)) = regret_curve(t) {
            if let (Some(&s), Some(&c)) = (steps.last(), cum.last()) {
                regret_all.push(c / s);
                let k = steps.len() - steps.len().div_ceil(10);
                let (s0, c0) = if k == 0 {
                    (0.0, 0.0)
                } else {
                    (steps[k - 1], cum[k - 1])
                };
                regret_last.push((c - c0) / (s - s0));
            }
        }
        let ret = t.column("ep_return_mean").unwrap_or_default();
        let steps = t.column("env_steps").unwrap_or_default();
        if let Some(last) = ret.iter().rev().find(|v| v.is_finite()) {
            finals.push(*last);
        }
        if let Some(th) = threshold {
            // `get`: a hand-edited metrics.csv may lack the env_steps column.
            if let Some(&s) = ret.iter().position(|&r| r >= th).and_then(|i| steps.get(i)) {
                reached_steps.push(s);
            }
        }
        let finite = |c: &str| {
            t.column(c)
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v.is_finite())
        };
        kls.extend(finite("kl_old_new"));
        kl_refs.extend(finite("kl_ref"));
        if let Some(e) = finite("entropy").next_back() {
            entropies.push(e);
        }
        state_max = finite("kl_max").fold(state_max, f64::max);
        limited.extend(finite(limited_column(kl_limit)));
        if let Some(w) = t.column("wall_s").and_then(|w| w.last().copied()) {
            walls.push(w);
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let m = mean(&finals);
    let std = if finals.is_empty() {
        f64::NAN
    } else {
        (finals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / finals.len() as f64).sqrt()
    };
    // Share of the compared KLs above `factor` × the limit; `None` without
    // a limit or without measurements.
    let above = |factor: f64| {
        kl_limit.filter(|_| !limited.is_empty()).map(|l| {
            let bound = factor * l.value;
            limited.iter().filter(|&&k| k > bound).count() as f64 / limited.len() as f64
        })
    };
    let target = kl_limit.is_some_and(|l| l.kind == KlLimitKind::Target);
    let algo = match g.config.as_ref().map(|c| &c.experiment.algo) {
        Some(klrl_optim::AlgoConfig::Ppo(p)) => format!("ppo ({})", p.objective.name()),
        Some(a) => a.name().to_string(),
        None => "?".to_string(),
    };
    let reference = g
        .config
        .as_ref()
        .and_then(|c| c.experiment.algo.reference());
    let ref_limit = reference.and_then(|r| r.limit().or(r.target));
    let ref_bound = reference.and_then(|r| r.limit());
    ConfigStats {
        final_entropy: mean(&entropies),
        ref_mode: reference.map(|r| r.mode.name().to_string()),
        kl_ref_mean: mean(&kl_refs),
        kl_ref_max: kl_refs.iter().copied().fold(f64::NAN, f64::max),
        kl_ref_limit: ref_limit,
        frac_above_ref_limit: ref_bound
            .filter(|_| !kl_refs.is_empty())
            .map(|eps| kl_refs.iter().filter(|&&k| k > eps).count() as f64 / kl_refs.len() as f64),
        label: g.label.clone(),
        algo,
        seeds: g.tables.len(),
        final_return_mean: m,
        final_return_std: std,
        threshold,
        reached: reached_steps.len(),
        steps_to_threshold: (!reached_steps.is_empty()).then(|| mean(&reached_steps)),
        kl_mean: mean(&kls),
        kl_max: kls.iter().copied().fold(f64::NAN, f64::max),
        kl_max_state: state_max,
        kl_limit: kl_limit.map(|l| l.value),
        kl_limit_kind: kl_limit.map(|l| l.kind),
        frac_above_limit: above(1.0),
        worst_kl_ratio: kl_limit
            .filter(|_| !limited.is_empty())
            .map(|l| limited.iter().copied().fold(f64::NEG_INFINITY, f64::max) / l.value),
        frac_above_1_5x: above(1.5).filter(|_| target),
        frac_above_3x: above(3.0).filter(|_| target),
        wall_s: mean(&walls),
        regret_mean: (!regret_all.is_empty()).then(|| mean(&regret_all)),
        regret_final: (!regret_last.is_empty()).then(|| mean(&regret_last)),
    }
}

/// A KL/limit ratio: two decimals from 0.1 up, two significant digits
/// below (a penalty far under its target gives 0.0012, not 0.00).
fn ratio(r: f64) -> String {
    if !r.is_finite() {
        "–".to_string()
    } else if r >= 0.1 || r <= 0.0 {
        format!("{r:.2}")
    } else {
        let decimals = (1.0 - r.log10().floor()).min(12.0) as usize;
        format!("{r:.decimals$}")
    }
}

/// The markdown summary: one table row per config.
pub fn markdown(stats: &[ConfigStats], manifest: &Manifest) -> String {
    markdown_with(stats, manifest, &[])
}

/// [`markdown`], with the runs left out of the tables listed.
pub fn markdown_with(
    stats: &[ConfigStats],
    manifest: &Manifest,
    incomplete: &[Incomplete],
) -> String {
    let f = |x: f64, d: usize| {
        if x.is_finite() {
            format!("{x:.d$}")
        } else {
            "–".to_string()
        }
    };
    let mut s = String::from("# klrl compare\n\n");
    let seeds = manifest
        .runs
        .iter()
        .map(|r| r.seed)
        .max()
        .map_or(0, |m| m + 1);
    let _ = writeln!(
        s,
        "{} configs × {seeds} seeds. Final return: mean ± std over seeds of the mean return of the \
         last training episodes (`run.return_window`). Steps to threshold: mean over the seeds \
         that reached the environment's reward threshold (k/n reached). Mean KL and max KL: the \
         per-update exact KL(π_old ‖ π_new), averaged over the batch states, over all updates \
         and seeds.\n",
        stats.len()
    );
    if !incomplete.is_empty() {
        let _ = writeln!(
            s,
            "**Incomplete: {} of {} runs are not in the tables** (finish them with `klrl compare \
             --resume DIR`, then `klrl compare --plot-only DIR`): {}.\n",
            incomplete.len(),
            manifest.runs.len(),
            incomplete
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s.push_str(
        "Limit (kind): the KL limit of the config, in nats, and what it promises. \
         **target**: steered, not enforced — a controller (PPO's penalties, NPG's step size) \
         steers the batch-mean KL toward it, so single updates may overshoot; \
         **mean**: a hard bound on the batch-mean KL of every update (TRPO's δ, `max_kl`); \
         **per-state**: a hard bound on every state's KL (the projection's ε), compared with the \
         per-update max over states (`kl_max`) rather than the mean. Updates above limit: the \
         share of all updates (all seeds) whose compared KL exceeded the limit; worst KL/limit: \
         the largest such ratio (above 1: the limit was exceeded by that factor). \
         > 1.5× / > 3× target: for targets only, the shares of updates whose mean KL exceeded \
         1.5× and 3× the target.\n\n",
    );
    let bandit = stats.iter().any(|c| c.regret_mean.is_some());
    if bandit {
        s.push_str(
            "Regret: expected clicks lost to the oracle per step (the best movie's click \
             probability minus the chosen one's), over the whole run and, late, over its last \
             10 % of updates, mean over seeds.\n\n",
        );
    }
    s.push_str(
        "| config | algo | seeds | final return | steps to threshold | mean KL | max KL \
         | limit (kind) | updates above limit | worst KL/limit | > 1.5× / > 3× target |",
    );
    if bandit {
        s.push_str(" regret / step | late regret / step |");
    }
    s.push_str(" wall s |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|");
    if bandit {
        s.push_str("---|---|");
    }
    s.push_str("---|\n");
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
    for c in stats {
        let steps = match (c.threshold, c.steps_to_threshold) {
            (None, _) => "– (no threshold)".to_string(),
            (Some(t), Some(st)) => format!("{st:.0} ({}/{} reached {t})", c.reached, c.seeds),
            (Some(t), None) => format!("never (0/{} reached {t})", c.seeds),
        };
        let limit = match (c.kl_limit, c.kl_limit_kind) {
            (Some(l), Some(k)) => format!("{l} ({})", kind_name(k)),
            _ => "–".to_string(),
        };
        let overshoot = match (c.frac_above_1_5x, c.frac_above_3x) {
            (Some(a), Some(b)) => format!("{} / {}", pct(Some(a)), pct(Some(b))),
            _ => "–".to_string(),
        };
        let regret = if bandit {
            let r = |x: Option<f64>| x.map_or("–".to_string(), |x| f(x, 4));
            format!(" {} | {} |", r(c.regret_mean), r(c.regret_final))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ± {} | {} | {} | {} | {} | {} | {} | {} |{regret} {} |",
            c.label,
            c.algo,
            c.seeds,
            f(c.final_return_mean, 1),
            f(c.final_return_std, 1),
            steps,
            f(c.kl_mean, 5),
            f(c.kl_max, 5),
            limit,
            pct(c.frac_above_limit),
            c.worst_kl_ratio.map_or("–".to_string(), ratio),
            overshoot,
            f(c.wall_s, 1),
        );
    }
    let with_ref: Vec<&ConfigStats> = stats.iter().filter(|c| c.ref_mode.is_some()).collect();
    if !with_ref.is_empty() {
        s.push_str(
            "\n## KL to the reference policy\n\nKL(π ‖ π_ref): the exact mean over the batch states \
             of KL(π_new(·|s) ‖ π_ref(·|s)) after each update (`kl_ref`), its mean and largest \
             value over all updates and seeds. Bound: ε_ref of a constraint (a hard bound on \
             every update) or the target of an adaptive coefficient; updates above: the share \
             of updates (all seeds) above a constraint's ε_ref. Entropy: of the policy at the \
             last update, mean over seeds.\n\n\
             | config | mode | bound | mean KL(π ‖ π_ref) | max KL(π ‖ π_ref) | updates above bound \
             | final entropy |\n|---|---|---|---|---|---|---|\n",
        );
        for c in with_ref {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.label,
                c.ref_mode.as_deref().unwrap_or("–"),
                c.kl_ref_limit.map_or("–".to_string(), |l| l.to_string()),
                f(c.kl_ref_mean, 4),
                f(c.kl_ref_max, 4),
                pct(c.frac_above_ref_limit),
                f(c.final_entropy, 3),
            );
        }
    }
    s.push_str("\n![return](return.png)\n\n![kl](kl.png)\n\n");
    if bandit {
        s.push_str("![regret](regret.png)\n\n");
    }
    if stats.iter().any(|c| c.ref_mode.is_some()) {
        s.push_str("![kl_ref](kl_ref.png)\n\n");
    }
    s.push_str("Colours in the plots follow the table order: ");
    let names = [
        "blue", "orange", "green", "red", "purple", "brown", "pink", "grey",
    ];
    let legend: Vec<String> = stats
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = {}", c.label, names[i % names.len()]))
        .collect();
    s.push_str(&legend.join(", "));
    s.push_str(".\n\nRuns:\n\n");
    for r in &manifest.runs {
        let _ = writeln!(s, "- `{}` seed {}: `{}`", r.config, r.seed, r.dir);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_runs_share_the_cores() {
        use super::cores_per_run;
        use klrl_optim::Threads;
        // 2 cores: two parallel runs get one thread each, a lone run two
        assert_eq!(Threads::Auto.resolve(cores_per_run(2, 2)), 1);
        assert_eq!(Threads::Auto.resolve(cores_per_run(2, 1)), 2);
        // more jobs than cores still get a thread; 16 cores, 4 jobs: 2 each
        assert_eq!(Threads::Auto.resolve(cores_per_run(2, 5)), 1);
        assert_eq!(Threads::Auto.resolve(cores_per_run(16, 4)), 2);
        assert_eq!(Threads::Auto.resolve(cores_per_run(16, 16)), 1);
        // an explicit count is kept
        assert_eq!(Threads::Count(3).resolve(cores_per_run(2, 2)), 3);
    }

    use super::*;

    #[test]
    fn labels_are_unique_file_stems() {
        let l = labels(&[
            PathBuf::from("a/ppo.toml"),
            PathBuf::from("b/ppo.toml"),
            PathBuf::from("trpo.toml"),
        ]);
        assert_eq!(l, vec!["ppo", "ppo-2", "trpo"]);
    }

    #[test]
    fn stats_count_thresholds_and_kl_above_the_limit() {
        let table = |ret: &[f64], kl: &[f64]| MetricsTable {
            columns: [
                "update",
                "env_steps",
                "wall_s",
                "ep_return_mean",
                "kl_old_new",
            ]
            .map(String::from)
            .to_vec(),
            rows: ret
                .iter()
                .zip(kl)
                .enumerate()
                .map(|(i, (&r, &k))| vec![i as f64, 100.0 * (i + 1) as f64, i as f64, r, k])
                .collect(),
        };
        let mut config = config::load(
            &ConfigSource::File(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../configs/cartpole-ppo-kl-adaptive.toml"),
            ),
            &[],
            None,
            &Registry::builtin(),
        )
        .unwrap();
        config.reward_threshold = Some(10.0);
        let g = Group {
            label: "x".into(),
            config: Some(config),
            tables: vec![
                table(&[f64::NAN, 5.0, 12.0, 9.0], &[0.0, 0.02, 0.005, 0.001]),
                table(&[1.0, 2.0, 3.0, 7.0], &[0.001, 0.001, 0.001, 0.03]),
            ],
        };
        let s = stats_of(&g);
        assert_eq!(s.seeds, 2);
        assert_eq!(s.final_return_mean, 8.0);
        assert_eq!(s.final_return_std, 1.0);
        assert_eq!(s.reached, 1);
        assert_eq!(s.steps_to_threshold, Some(300.0));
        // PPO with the adaptive penalty: a target.
        assert_eq!(s.kl_limit, Some(0.01));
        assert_eq!(s.kl_limit_kind, Some(KlLimitKind::Target));
        assert_eq!(s.frac_above_limit, Some(2.0 / 8.0));
        assert_eq!(s.frac_above_1_5x, Some(2.0 / 8.0));
        assert_eq!(s.frac_above_3x, Some(0.0));
        assert!((s.worst_kl_ratio.unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(s.kl_max, 0.03);
        assert_eq!(s.wall_s, 3.0);
        assert_eq!(s.regret_mean, None);
        let b = band(&g, "env_steps", "ep_return_mean", None);
        assert_eq!(b.mean[0], 1.0);
        assert_eq!((b.min[2], b.max[2]), (3.0, 12.0));
        // A hand-edited metrics.csv without env_steps: no panic, no steps.
        let mut g = g;
        for t in &mut g.tables {
            t.columns.remove(1);
            t.rows.iter_mut().for_each(|r| {
                r.remove(1);
            });
        }
        let s = stats_of(&g);
        assert_eq!(s.steps_to_threshold, None);
        assert_eq!(s.final_return_mean, 8.0);
    }

    /// A config from TOML text (CartPole, the given `[algo]`).
    fn config_with(algo: &str) -> ResolvedConfig {
        let text = format!("[env]\nname = \"CartPole-v1\"\n[algo]\n{algo}\n");
        config::load(
            &ConfigSource::Text {
                name: "test".into(),
                text,
            },
            &[],
            None,
            &Registry::builtin(),
        )
        .unwrap()
    }

    /// Metrics with the given per-update `kl_old_new` and `kl_max`.
    fn kl_table(mean: &[f64], max: &[f64]) -> MetricsTable {
        MetricsTable {
            columns: ["update", "env_steps", "kl_old_new", "kl_max"]
                .map(String::from)
                .to_vec(),
            rows: mean
                .iter()
                .zip(max)
                .enumerate()
                .map(|(i, (&m, &x))| vec![i as f64, 100.0 * (i + 1) as f64, m, x])
                .collect(),
        }
    }

    #[test]
    fn each_kind_of_limit_is_compared_with_what_it_bounds() {
        // Limits are powers of two so that the ratios are exact.
        let group = |label: &str, algo: &str, tables| Group {
            label: label.into(),
            config: Some(config_with(algo)),
            tables,
        };
        // A hard bound on the mean KL: one update of four above it, at 2×;
        // its kl_max (far above) does not count.
        let mean = group(
            "trpo",
            "name = \"trpo\"\nmax_kl = 0.015625",
            vec![kl_table(
                &[0.0078125, 0.03125, 0.015625, 0.01],
                &[1.0, 1.0, 1.0, 1.0],
            )],
        );
        let s = stats_of(&mean);
        assert_eq!(s.kl_limit, Some(0.015625));
        assert_eq!(s.kl_limit_kind, Some(KlLimitKind::Mean));
        assert_eq!(s.frac_above_limit, Some(0.25));
        assert_eq!(s.worst_kl_ratio, Some(2.0));
        assert_eq!((s.frac_above_1_5x, s.frac_above_3x), (None, None));
        assert_eq!(kl_series(&mean).label, "trpo");
        // A per-state bound: every mean KL is below it, but one update's
        // max over states is at 4×.
        let per_state = group(
            "proj",
            "name = \"ppo\"\nobjective = \"projection\"\nproj_eps = 0.03125",
            vec![
                kl_table(&[0.01, 0.02], &[0.02, 0.125]),
                kl_table(&[0.001, 0.01], &[0.03125, 0.01]),
            ],
        );
        let s = stats_of(&per_state);
        assert_eq!(s.kl_limit_kind, Some(KlLimitKind::PerState));
        assert_eq!(s.frac_above_limit, Some(0.25));
        assert_eq!(s.worst_kl_ratio, Some(4.0));
        assert_eq!((s.frac_above_1_5x, s.frac_above_3x), (None, None));
        assert_eq!(s.kl_max, 0.02, "max KL stays the largest mean KL");
        let k = kl_series(&per_state);
        assert_eq!(k.label, "proj (max over states)");
        assert_eq!(k.max, vec![0.03125, 0.125]);
        assert_eq!(
            k.limit,
            Some(LimitLine {
                value: 0.03125,
                label: "proj: per-state bound 0.03125".into()
            })
        );
        // A target: of 8 updates, 4 above it, 3 above 1.5× (0.0234375) and
        // 2 above 3× (0.046875); exactly at the target is not above.
        let target = group(
            "ppo",
            "name = \"ppo\"\nobjective = \"kl_adaptive\"\nkl_target = 0.015625",
            vec![
                kl_table(&[0.01, 0.02, 0.03, 0.05], &[1.0; 4]),
                kl_table(&[0.001, 0.015625, 0.1, 0.005], &[1.0; 4]),
            ],
        );
        let s = stats_of(&target);
        assert_eq!(s.kl_limit_kind, Some(KlLimitKind::Target));
        assert_eq!(s.frac_above_limit, Some(4.0 / 8.0));
        assert_eq!(s.frac_above_1_5x, Some(3.0 / 8.0));
        assert_eq!(s.frac_above_3x, Some(2.0 / 8.0));
        assert_eq!(s.worst_kl_ratio, Some(6.4));
        assert_eq!(
            kl_series(&target).limit.map(|l| l.label),
            Some("ppo: target 0.015625".into())
        );
        // No limit: nothing compared.
        let none = group(
            "clip",
            "name = \"ppo\"\nobjective = \"clip\"",
            vec![kl_table(&[0.5], &[1.0])],
        );
        let s = stats_of(&none);
        assert_eq!((s.kl_limit, s.kl_limit_kind), (None, None));
        assert_eq!((s.frac_above_limit, s.worst_kl_ratio), (None, None));
        assert_eq!(kl_series(&none).limit, None);
        // An old metrics.csv without the compared column: no shares, no panic.
        let mut old = per_state;
        for t in &mut old.tables {
            t.columns.pop();
            t.rows.iter_mut().for_each(|r| {
                r.pop();
            });
        }
        let s = stats_of(&old);
        assert_eq!(s.kl_limit, Some(0.03125));
        assert_eq!((s.frac_above_limit, s.worst_kl_ratio), (None, None));
        assert_eq!(s.kl_mean, (0.01 + 0.02 + 0.001 + 0.01) / 4.0);

        let stats: Vec<ConfigStats> = [&mean, &target, &none].map(stats_of).to_vec();
        let md = markdown(
            &stats,
            &Manifest {
                runs: vec![],
                seeds: 0,
                configs: vec![],
            },
        );
        assert!(
            md.contains(
                "| mean KL | max KL | limit (kind) | updates above limit | worst KL/limit \
                 | > 1.5× / > 3× target | wall s |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 0.015625 (mean) | 25.0% | 2.00 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| 0.015625 (target) | 50.0% | 6.40 | 37.5% / 25.0% |"),
            "{md}"
        );
        assert!(md.contains("| – | – | – | – |"), "{md}");
        assert!(md.contains("**per-state**: a hard bound on every state's KL"));
        let md = markdown(
            &[stats_of(&group(
                "proj",
                "name = \"ppo\"\nobjective = \"projection\"\nproj_eps = 0.03125",
                vec![kl_table(&[0.01], &[0.0625])],
            ))],
            &Manifest {
                runs: vec![],
                seeds: 0,
                configs: vec![],
            },
        );
        assert!(
            md.contains("| 0.03125 (per-state) | 100.0% | 2.00 | – |"),
            "{md}"
        );
        assert_eq!(
            [2.0, 0.5, 0.1, 0.099, 0.001234, 0.0].map(ratio),
            ["2.00", "0.50", "0.10", "0.099", "0.0012", "0.00"]
        );
    }

    #[test]
    fn regret_is_weighted_by_the_steps_of_each_update() {
        // 10 updates of 100 steps; regret per step 0.5 for the first 9
        // updates and 0.1 in the last (the last 10 %).
        let table = |last: f64| MetricsTable {
            columns: ["update", "env_steps", "regret"].map(String::from).to_vec(),
            rows: (0..10)
                .map(|i| {
                    let r = if i == 9 { last } else { 0.5 };
                    vec![i as f64, 100.0 * (i + 1) as f64, r]
                })
                .collect(),
        };
        let (steps, cum) = regret_curve(&table(0.1)).unwrap();
        assert_eq!(steps[0], 100.0);
        assert!((cum[0] - 50.0).abs() < 1e-12);
        assert!((cum[9] - 460.0).abs() < 1e-9);
        let g = Group {
            label: "x".into(),
            config: None,
            tables: vec![table(0.1), table(0.3)],
        };
        let s = stats_of(&g);
        assert!((s.regret_mean.unwrap() - 0.47).abs() < 1e-12);
        assert!((s.regret_final.unwrap() - 0.2).abs() < 1e-12);
        let c = cumulative_regret(&g);
        assert!((c.mean[9] - 470.0).abs() < 1e-9);
        assert!((c.min[9] - 460.0).abs() < 1e-9);
        let md = markdown(
            &[s],
            &Manifest {
                runs: vec![],
                seeds: 0,
                configs: vec![],
            },
        );
        assert!(md.contains("| regret / step | late regret / step |"));
        assert!(md.contains("| 0.4700 | 0.2000 |"));
        assert!(md.contains("![regret](regret.png)"));
    }
}
