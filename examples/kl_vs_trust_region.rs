//! Does limiting KL(π_old ‖ π_new) keep policy updates stable, and which
//! limits hold? klrl's headline comparison, on four tasks, five seeds each:
//!
//! - `CartPole-v1` (the zoo's PPO rollouts), `Acrobot-v1` (observation
//!   normalisation, 2e5 steps), `Pendulum-v1` (a Gaussian policy);
//! - `MovieRec-v0` with drift: a recommendation bandit whose users' tastes
//!   wander (the best movie of a segment changes every ~1 100 steps), so a
//!   policy must keep adapting.
//!
//! Eight learners, with the same rollouts per task: vanilla policy gradient
//! with a large step (nothing limits an update), PPO-clip, PPO with a fixed
//! KL penalty, PPO with the paper's adaptive penalty, PPO with the dual-ascent
//! β control (`kl_dual`), PPO with a hard limit on the mean KL (`max_kl`),
//! PPO with the differentiable trust-region projection (a hard limit on
//! every state's KL) and TRPO. The settings are the TOML files in
//! `configs/compare/kl_vs_trust_region/<task>/`.
//!
//! The runs go through `klrl_runner::compare`, the code behind `klrl compare`,
//! which writes per task `summary.md`, `return.png`, `kl.png` (and for the
//! bandit `regret.png`); this example adds `OUT/summary.md` with one table per
//! task: what each learner bounds, final and evaluation returns, steps to the
//! reward threshold, the KL statistics against the learner's limit, and
//! collapses (seeds whose final return fell below half of their best) or, on
//! the bandit, late regret and final entropy.
//!
//! Run from the workspace root:
//!
//! ```text
//! cargo run --release --example kl_vs_trust_region [-- OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `docs/kl_vs_trust_region/`; an earlier output there is
//! replaced. It takes about ten minutes on two cores (160 runs of 50k–200k
//! steps). `KLRL_EXAMPLE_QUICK=1` shrinks every run to 2 048 steps and one
//! seed (a few seconds) to check that it works. Expected output: one line per
//! finished run, then per task the table; finally the `summary.md` path and a
//! last line `done: <configs> configs, <runs> runs` that the tests look for.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use klrl::envs::Registry;
use klrl::optim::KlLimitKind;
use klrl::runner::compare::{compare, CompareOptions, ConfigStats};
use klrl::runner::metrics::MetricsTable;

mod common;

/// The learners, in table order (file stems under each task's directory).
const LEARNERS: [&str; 8] = [
    "vanilla-pg",
    "ppo-clip",
    "ppo-kl-fixed",
    "ppo-kl-adaptive",
    "ppo-kl-dual",
    "ppo-kl-limit",
    "ppo-projection",
    "trpo",
];
/// The tasks: subdirectories of `configs/compare/kl_vs_trust_region/`.
const TASKS: [&str; 4] = ["cartpole", "acrobot", "bandit", "pendulum"];
/// What an earlier output of a task directory holds.
const OURS: [&str; 6] = [
    "compare.json",
    "summary.md",
    "return.png",
    "kl.png",
    "regret.png",
    "runs",
];
/// Seeds per learner (1 in quick mode).
const SEEDS: u64 = 5;

/// Per learner, from each seed's metrics and summary: how many seeds
/// collapsed (ended having lost more than half of the return they had gained
/// at their best), the mean policy entropy of the last update, and the
/// deterministic evaluation returns.
struct Collapses {
    collapsed: usize,
    seeds: usize,
    final_entropy: f64,
    evals: Vec<f64>,
}

fn main() -> Result<()> {
    common::one_compute_thread();
    let quick = std::env::var("KLRL_EXAMPLE_QUICK").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| root.join("docs/kl_vs_trust_region"), PathBuf::from);
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let registry = Registry::builtin();
    let stop = AtomicBool::new(false);

    let seeds = if quick { 1 } else { SEEDS };
    let mut report = format!(
        "# Does limiting KL keep policy updates stable? (kl_vs_trust_region)\n\n\
         Written by `cargo run --release --example kl_vs_trust_region`. Per task, {seeds} seeds \
         of each learner; settings in `configs/compare/kl_vs_trust_region/`.\n\n\
         - **bounds**: what the learner holds on every update — the mean KL over the batch \
         states (TRPO's line search, `max_kl`), every state's KL (the projection), a target \
         the mean KL is steered toward (the penalties), or nothing.\n\
         - **final return**: mean ± std over seeds of the mean return of the last 20 training \
         episodes (bandit: clicks per 100 users); **eval**: the deterministic evaluation of \
         the final policy over 10 episodes, mean over seeds (in brackets: seeds that reached \
         the reward threshold).\n\
         - **steps to threshold**: environment steps until the training return first reached \
         the reward threshold, mean over the seeds that did (in brackets: how many).\n\
         - **KL**: the exact per-update KL(π_old ‖ π_new) over all updates and seeds — the \
         mean, and the largest; for the projection the largest is over states \
         (`kl_max`), what its bound is on. **above limit**: share of updates above the \
         learner's limit or target; **worst**: the largest KL / limit; **> 1.5× / > 3×**: \
         shares of updates above 1.5 and 3 times a target.\n\
         - bandit **regret**: clicks per user lost to the oracle, whole run (last 10 %) (a \
         uniformly random policy loses ≈ 0.23); **entropy**: of the policy at the last \
         update (uniform = ln 20 ≈ 3.00). Elsewhere **collapsed**: seeds whose final return \
         kept less than half of the gain over the first episodes' return that they had at \
         their best.\n",
    );
    let mut runs = 0;
    for task in TASKS {
        let dir = root.join("configs/compare/kl_vs_trust_region").join(task);
        // Relative paths where possible, so that the summary does not name
        // this machine's directories.
        let configs: Vec<PathBuf> = LEARNERS
            .iter()
            .map(|l| {
                let p = dir.join(format!("{l}.toml"));
                p.strip_prefix(&cwd).map_or(p.clone(), Path::to_path_buf)
            })
            .collect();
        let task_out = out.join(task);
        common::clear_previous_output(&task_out, &OURS)?;
        let opts = CompareOptions {
            configs,
            seeds,
            sets: if quick {
                vec!["train.total_steps=2048".into()]
            } else {
                Vec::new()
            },
            out: task_out.clone(),
            jobs: None,
            shard: None,
            resume: false,
        };
        println!("== {task}: {} learners × {seeds} seeds", LEARNERS.len());
        let stats = compare(&opts, &registry, &stop, &|line| println!("  {line}"))
            .with_context(|| format!("comparing the {task} configs"))?;
        runs += stats.iter().map(|s| s.seeds).sum::<usize>();
        let table = table(&stats, &task_out, seeds)?;
        println!("\n{table}");
        let _ = write!(
            report,
            "\n## {task}\n\n{table}\nDetails: [{task}/summary.md]({task}/summary.md).\n\n\
             ![return]({task}/return.png)\n\n![kl]({task}/kl.png)\n"
        );
        if task_out.join("regret.png").is_file() {
            let _ = writeln!(report, "\n![regret]({task}/regret.png)");
        }
    }
    let summary = out.join("summary.md");
    std::fs::write(&summary, report).with_context(|| format!("writing {}", summary.display()))?;
    println!("summary: {}", summary.display());
    println!(
        "done: {} configs, {runs} runs",
        TASKS.len() * LEARNERS.len()
    );
    Ok(())
}

/// The markdown table of one task (columns explained in the report's header).
fn table(stats: &[ConfigStats], task_out: &Path, seeds: u64) -> Result<String> {
    let bandit = stats.iter().any(|s| s.regret_mean.is_some());
    let mut t = String::from(
        "| learner | bounds | final return | eval | steps to threshold | mean KL | max KL | limit | above limit | worst | > 1.5× / > 3× |",
    );
    t.push_str(if bandit {
        " regret / step, all (last 10 %) | final entropy |\n"
    } else {
        " collapsed |\n"
    });
    t.push_str(&"|---".repeat(if bandit { 13 } else { 12 }));
    t.push_str("|\n");
    for s in stats {
        let c = collapses(task_out, &s.label, seeds)?;
        let bounds = match s.kl_limit_kind {
            Some(KlLimitKind::Mean) => "mean KL",
            Some(KlLimitKind::PerState) => "every state's KL",
            Some(KlLimitKind::Target) => "nothing (target)",
            None => "nothing",
        };
        let eval = if c.evals.is_empty() {
            "–".to_string()
        } else {
            let mean = c.evals.iter().sum::<f64>() / c.evals.len() as f64;
            match s.threshold {
                Some(th) => format!(
                    "{mean:.1} ({}/{})",
                    c.evals.iter().filter(|&&e| e >= th).count(),
                    c.evals.len()
                ),
                None => format!("{mean:.1}"),
            }
        };
        let steps = match (s.threshold, s.steps_to_threshold) {
            (None, _) => "–".to_string(),
            (Some(_), None) => format!("never (0/{})", s.seeds),
            (Some(_), Some(st)) => format!("{:.0}k ({}/{})", st / 1000.0, s.reached, s.seeds),
        };
        let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.1} %", 100.0 * x));
        let max_kl = match s.kl_limit_kind {
            Some(KlLimitKind::PerState) => format!("{:.4} (state)", s.kl_max_state),
            _ => format!("{:.4}", s.kl_max),
        };
        let _ = write!(
            t,
            "| {} | {bounds} | {:.1} ± {:.1} | {eval} | {steps} | {:.4} | {max_kl} | {} | {} | {} | {} |",
            s.label,
            s.final_return_mean,
            s.final_return_std,
            s.kl_mean,
            s.kl_limit.map_or("none".to_string(), |l| l.to_string()),
            pct(s.frac_above_limit),
            s.worst_kl_ratio.map_or("–".to_string(), |w| format!("{w:.2}")),
            match (s.frac_above_1_5x, s.frac_above_3x) {
                (Some(a), Some(b)) => format!("{:.1} % / {:.1} %", 100.0 * a, 100.0 * b),
                _ => "–".to_string(),
            },
        );
        let _ = if bandit {
            writeln!(
                t,
                " {:.3} ({:.3}) | {:.2} |",
                s.regret_mean.unwrap_or(f64::NAN),
                s.regret_final.unwrap_or(f64::NAN),
                c.final_entropy
            )
        } else {
            writeln!(t, " {}/{} |", c.collapsed, c.seeds)
        };
    }
    Ok(t)
}

/// Read each seed's `metrics.csv` and compare its final return with its peak.
fn collapses(task_out: &Path, label: &str, seeds: u64) -> Result<Collapses> {
    let mut c = Collapses {
        collapsed: 0,
        seeds: 0,
        final_entropy: 0.0,
        evals: Vec::new(),
    };
    for seed in 0..seeds {
        let summary = task_out.join(format!("runs/{label}-s{seed}/summary.json"));
        if let Ok(text) = std::fs::read_to_string(&summary) {
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", summary.display()))?;
            if let Some(r) = json["eval"]["mean_return"].as_f64() {
                c.evals.push(r);
            }
        }
        let path = task_out.join(format!("runs/{label}-s{seed}/metrics.csv"));
        let metrics = MetricsTable::read(&path)?;
        let column = |name: &str| {
            metrics
                .column(name)
                .with_context(|| format!("{}: no {name} column", path.display()))
        };
        let returns = column("ep_return_mean")?;
        let entropy = column("entropy")?;
        let finite: Vec<f64> = returns.into_iter().filter(|r| r.is_finite()).collect();
        let (Some(&first), Some(&last), Some(peak)) = (
            finite.first(),
            finite.last(),
            finite.iter().copied().reduce(f64::max),
        ) else {
            continue; // no finished episode (a tiny quick run)
        };
        c.seeds += 1;
        c.final_entropy += entropy.last().copied().unwrap_or(f64::NAN);
        // Collapsed: lost more than half of what it had gained over its first
        // return (works for negative returns too: Acrobot, Pendulum).
        if last - first < 0.5 * (peak - first) {
            c.collapsed += 1;
        }
    }
    c.final_entropy /= c.seeds.max(1) as f64;
    Ok(c)
}
