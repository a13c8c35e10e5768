//! End-to-end training benchmarks: how long a config takes to train, where
//! the time goes, and how soon it solves the task.
//!
//! A benchmark run is a [`Trainer`] driven to `train.total_steps` with
//! nothing else in the loop: no run directory, metrics file, TensorBoard
//! writer or checkpoint, so the wall time is the training itself (building
//! the environments and networks included). After the clock stops, the
//! final evaluation of `klrl train` (`run.eval_episodes` deterministic
//! episodes, 10 by default, with the same seed, so the same numbers as
//! `klrl train` of the config and seed) scores the trained policy. The defaults
//! are the two rl-baselines3-zoo CartPole configs of `configs/bench/` (PPO-clip
//! and TRPO), which Stable-Baselines3 trains in 26–30 s and 30–37 s on one
//! thread of the reference machine (REFERENCE.md).
//!
//! Not here: statistics over many seeds and plots (see [`crate::compare`]).

use std::collections::VecDeque;
use std::time::Instant;

use klrl_envs::Registry;
use klrl_optim::Trainer;
use serde::Serialize;

use crate::config::{ConfigSource, ResolvedConfig};
use crate::error::{Result, RunnerError};
use crate::run::{eval_seed, EvalSummary};

/// `configs/bench/cartpole-ppo-zoo.toml`: PPO-clip with the zoo's CartPole
/// hyperparameters (8 envs × 32 steps, 20 epochs of one 256 minibatch).
pub const PPO_ZOO: &str = include_str!("../../../configs/bench/cartpole-ppo-zoo.toml");

/// `configs/bench/cartpole-trpo-zoo.toml`: TRPO with the zoo's CartPole
/// hyperparameters (2 envs × 512 steps, 20 critic epochs).
pub const TRPO_ZOO: &str = include_str!("../../../configs/bench/cartpole-trpo-zoo.toml");

/// The configs `klrl bench` runs when given none, as (name, TOML).
pub fn default_configs() -> Vec<ConfigSource> {
    [
        ("configs/bench/cartpole-ppo-zoo.toml", PPO_ZOO),
        ("configs/bench/cartpole-trpo-zoo.toml", TRPO_ZOO),
    ]
    .into_iter()
    .map(|(name, text)| ConfigSource::Text {
        name: name.into(),
        text: text.into(),
    })
    .collect()
}

/// Episodes in the rolling mean compared with the reward threshold; 20, as
/// in REFERENCE.md's SB3 measurements ("rolling mean of 20 episodes first
/// ≥ 475").
pub const RETURN_WINDOW: usize = 20;

/// What one benchmark run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// The config (file path or built-in name).
    pub config: String,
    /// Environment name.
    pub env: String,
    /// Algorithm name (PPO with its objective).
    pub algo: String,
    /// `train.seed` of the run.
    pub seed: u64,
    /// Environment steps taken.
    pub steps: u64,
    /// Updates done.
    pub updates: u64,
    /// Wall-clock seconds from building the trainer to the last update.
    pub wall_s: f64,
    /// `steps / wall_s`.
    pub steps_per_s: f64,
    /// Seconds spent collecting rollouts (environment and policy steps).
    pub rollout_s: f64,
    /// Seconds spent in GAE.
    pub advantage_s: f64,
    /// Seconds spent in the optimiser's updates.
    pub update_s: f64,
    /// The reward threshold compared with (the environment's, from the
    /// registry; `None` if it has none).
    pub threshold: Option<f64>,
    /// Environment steps until the rolling mean of the last
    /// [`RETURN_WINDOW`] finished episodes' returns first reached the
    /// threshold (checked after every update; `None` if it never did).
    pub steps_to_threshold: Option<u64>,
    /// Wall-clock seconds until then.
    pub time_to_threshold_s: Option<f64>,
    /// Rolling mean return at the end (NaN if no episode finished).
    pub final_return_mean: f64,
    /// The final evaluation (untimed; `None` when `run.eval_episodes` is 0):
    /// as `klrl train`'s `summary.json` `eval`.
    pub eval: Option<EvalSummary>,
}

/// Train `config` to its `train.total_steps` and measure it, then evaluate
/// the policy with `config.run.eval_episodes` episodes (see the module
/// documentation for what is and is not timed).
///
/// Errors: [`RunnerError::Config`] if the trainer cannot be built from the
/// config; [`RunnerError::Optim`] if training or the evaluation fails;
/// [`RunnerError::Env`] if the evaluation's environment cannot be made.
pub fn bench_one(config: &ResolvedConfig, registry: &Registry) -> Result<BenchResult> {
    let started = Instant::now();
    let mut trainer = Trainer::from_config(config.experiment.clone(), registry).map_err(|e| {
        RunnerError::Config {
            location: config.source.clone(),
            reason: e.to_string(),
        }
    })?;
    let threshold = config.reward_threshold;
    let mut window: VecDeque<f64> = VecDeque::with_capacity(RETURN_WINDOW + 1);
    let (mut rollout_s, mut advantage_s, mut update_s) = (0.0, 0.0, 0.0);
    let mut reached: Option<(u64, f64)> = None;
    while !trainer.is_done() {
        let report = trainer.update()?;
        rollout_s += report.times.rollout_s;
        advantage_s += report.times.advantage_s;
        update_s += report.times.update_s;
        for ep in &report.episodes {
            window.push_back(ep.ret);
            if window.len() > RETURN_WINDOW {
                window.pop_front();
            }
        }
        if let (None, Some(t)) = (reached, threshold) {
            if window.len() == RETURN_WINDOW && mean(&window) >= t {
                reached = Some((report.env_steps, started.elapsed().as_secs_f64()));
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let e = &config.experiment;
    let eval = match config.run.eval_episodes {
        0 => None,
        episodes => {
            let mut env = registry.make(&e.env.name, &e.env.params)?;
            let seed = eval_seed(config);
            let result = trainer.evaluate(env.as_mut(), episodes, true, seed)?;
            Some(EvalSummary::of(&result, true, seed))
        }
    };
    Ok(BenchResult {
        config: config.source.clone(),
        env: e.env.name.clone(),
        algo: algo_label(config),
        seed: e.train.seed,
        steps: trainer.env_steps,
        updates: trainer.updates,
        wall_s,
        steps_per_s: trainer.env_steps as f64 / wall_s.max(f64::MIN_POSITIVE),
        rollout_s,
        advantage_s,
        update_s,
        threshold,
        steps_to_threshold: reached.map(|r| r.0),
        time_to_threshold_s: reached.map(|r| r.1),
        final_return_mean: if window.is_empty() {
            f64::NAN
        } else {
            mean(&window)
        },
        eval,
    })
}

/// The algorithm's name, with the objective for PPO (`ppo-clip`).
fn algo_label(config: &ResolvedConfig) -> String {
    let e = &config.experiment;
    match &e.algo {
        klrl_optim::AlgoConfig::Ppo(p) => format!(
            "ppo-{}",
            serde_json::to_value(p.objective)
                .map_or(String::new(), |v| v.as_str().unwrap_or("").to_string())
        ),
        other => other.name().to_string(),
    }
}

fn mean(v: &VecDeque<f64>) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Mean and population standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// The results as a plain-text table, one row per run and, for configs run
/// with several seeds, a `mean` row (mean ± standard deviation of the wall
/// time; steps and time to the threshold averaged over the seeds that
/// reached it, with how many did; the evaluation's mean return averaged over
/// the seeds that have one). `-` where there is no value.
pub fn table(results: &[BenchResult]) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<40} {:>5} {:>8} {:>8} {:>9} {:>10} {:>10} {:>9} {:>7} {:>8} {:>8} {:>8}\n",
        "config",
        "seed",
        "steps",
        "wall s",
        "steps/s",
        "to 475 st",
        "to 475 s",
        "rollout s",
        "adv s",
        "update s",
        "return",
        "eval"
    );
    out.push_str(&header.replace("475", &threshold_label(results)));
    let fmt_opt =
        |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"));
    let mut i = 0;
    while i < results.len() {
        let group: Vec<&BenchResult> = results[i..]
            .iter()
            .take_while(|r| r.config == results[i].config)
            .collect();
        for r in &group {
            out.push_str(&format!(
                "{:<40} {:>5} {:>8} {:>8.2} {:>9.0} {:>10} {:>10} {:>9.2} {:>7.3} {:>8.2} {:>8.1} {:>8}\n",
                r.config,
                r.seed,
                r.steps,
                r.wall_s,
                r.steps_per_s,
                fmt_opt(r.steps_to_threshold.map(|s| s as f64), 0),
                fmt_opt(r.time_to_threshold_s, 2),
                r.rollout_s,
                r.advantage_s,
                r.update_s,
                r.final_return_mean,
                fmt_opt(r.eval.as_ref().map(|e| e.mean_return), 1)
            ));
        }
        if group.len() > 1 {
            let col =
                |f: fn(&BenchResult) -> f64| -> Vec<f64> { group.iter().map(|r| f(r)).collect() };
            let (wall, wall_sd) = mean_std(&col(|r| r.wall_s));
            let reached: Vec<&&BenchResult> = group
                .iter()
                .filter(|r| r.steps_to_threshold.is_some())
                .collect();
            let reach_steps: Vec<f64> = reached
                .iter()
                .filter_map(|r| r.steps_to_threshold.map(|s| s as f64))
                .collect();
            let reach_time: Vec<f64> = reached
                .iter()
                .filter_map(|r| r.time_to_threshold_s)
                .collect();
            let evals: Vec<f64> = group
                .iter()
                .filter_map(|r| r.eval.as_ref().map(|e| e.mean_return))
                .collect();
            let some_mean = |v: &[f64]| (!v.is_empty()).then(|| mean_std(v).0);
            out.push_str(&format!(
                "{:<40} {:>5} {:>8.0} {:>8} {:>9.0} {:>10} {:>10} {:>9.2} {:>7.3} {:>8.2} {:>8.1} {:>8}\n",
                format!("  mean of {} ({} reached)", group.len(), reached.len()),
                "",
                mean_std(&col(|r| r.steps as f64)).0,
                format!("{wall:.2}±{wall_sd:.2}"),
                mean_std(&col(|r| r.steps_per_s)).0,
                fmt_opt(some_mean(&reach_steps), 0),
                fmt_opt(some_mean(&reach_time), 2),
                mean_std(&col(|r| r.rollout_s)).0,
                mean_std(&col(|r| r.advantage_s)).0,
                mean_std(&col(|r| r.update_s)).0,
                mean_std(&col(|r| r.final_return_mean)).0,
                fmt_opt(some_mean(&evals), 1),
            ));
        }
        i += group.len();
    }
    out
}

/// "475" when every run compares with that threshold, "thr" otherwise.
fn threshold_label(results: &[BenchResult]) -> String {
    match results.first().and_then(|r| r.threshold) {
        Some(t) if results.iter().all(|r| r.threshold == Some(t)) => format!("{t}"),
        _ => "thr".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(config: &str, seed: u64, wall: f64, reached: Option<u64>) -> BenchResult {
        BenchResult {
            config: config.into(),
            env: "CartPole-v1".into(),
            algo: "ppo-clip".into(),
            seed,
            steps: 1000,
            updates: 4,
            wall_s: wall,
            steps_per_s: 1000.0 / wall,
            rollout_s: 0.5,
            advantage_s: 0.01,
            update_s: 0.4,
            threshold: Some(475.0),
            steps_to_threshold: reached,
            time_to_threshold_s: reached.map(|s| s as f64 / 1000.0),
            final_return_mean: 480.0,
            eval: None,
        }
    }

    #[test]
    fn table_has_a_row_per_run_and_a_mean_per_config() {
        let t = table(&[
            result("a.toml", 0, 1.0, Some(400)),
            result("a.toml", 1, 3.0, None),
            result("b.toml", 0, 2.0, Some(600)),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].contains("to 475 st"), "{t}");
        // mean ± population std of 1 and 3; steps to threshold over the one seed that reached it
        assert!(lines[3].contains("mean of 2 (1 reached)"), "{t}");
        assert!(lines[3].contains("2.00±1.00"), "{t}");
        assert!(lines[3].contains(" 400 "), "{t}");
        assert!(lines[4].starts_with("b.toml"), "{t}");
        assert!(lines[2].contains(" - "), "unreached shows '-': {t}");
        assert!(lines[0].trim_end().ends_with("eval"), "{t}");
        assert!(
            lines[1].trim_end().ends_with(" -"),
            "no evaluation shows '-': {t}"
        );
    }

    #[test]
    fn default_configs_load_and_validate() {
        let registry = Registry::builtin();
        for source in default_configs() {
            let c = crate::config::load(&source, &[], None, &registry).expect("loads");
            assert_eq!(c.experiment.train.total_steps, 100_000);
            assert_eq!(c.reward_threshold, Some(475.0));
        }
    }

    #[test]
    fn a_short_run_counts_its_steps_and_phases() {
        let registry = Registry::builtin();
        let sets = vec!["train.total_steps=512".to_string()];
        let c =
            crate::config::load(&default_configs()[0], &sets, Some(3), &registry).expect("loads");
        let r = bench_one(&c, &registry).expect("runs");
        assert_eq!((r.steps, r.updates, r.seed), (512, 2, 3));
        // the final evaluation of `klrl train`: run.eval_episodes (10), seed + 10⁶
        let e = r.eval.as_ref().expect("evaluated");
        assert_eq!((e.episodes, e.seed, e.deterministic), (10, 1_000_003, true));
        assert_eq!(r.algo, "ppo-clip");
        assert!(r.wall_s > 0.0 && r.rollout_s > 0.0 && r.update_s > 0.0);
        assert!(r.rollout_s + r.advantage_s + r.update_s <= r.wall_s);
        // CartPole cannot average 475 within 512 steps
        assert_eq!(r.steps_to_threshold, None);
    }
}
