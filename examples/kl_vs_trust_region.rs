//! Does limiting KL(π_old ‖ π_new) keep policy updates stable? klrl's headline
//! comparison, on two tasks, three seeds each:
//!
//! - `MovieRec-v0` with drift: a recommendation bandit whose users' tastes
//!   wander (the best movie of a segment changes every ~1 100 steps), so a
//!   policy must keep adapting;
//! - `CartPole-v1`, the zoo's PPO rollout setting.
//!
//! Five learners, all with the same rollouts: vanilla policy gradient with a
//! large step (nothing limits the KL of an update), PPO with a fixed KL penalty,
//! PPO with the adaptive KL penalty, PPO-clip and TRPO. The settings are the
//! TOML files in `configs/compare/kl_vs_trust_region/{bandit,cartpole}/`.
//!
//! The runs go through `klrl_runner::compare`, the code behind `klrl compare`,
//! which writes per task `summary.md`, `return.png`, `kl.png` (and for the
//! bandit `regret.png`); this example adds `OUT/summary.md` with both tables and
//! a collapse count per learner: seeds whose final return fell below half of
//! the best it had reached.
//!
//! Run from the workspace root:
//!
//! ```text
//! cargo run --release --example kl_vs_trust_region [-- OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `docs/kl_vs_trust_region/`; an earlier output there is
//! replaced. It takes about a minute on two cores (30 runs of 50k–100k steps).
//! `KLRL_EXAMPLE_QUICK=1` shrinks every run to 2 048 steps (a few seconds) to
//! check that it works. Expected output: one line per finished run, then per
//! task a table with final return, mean and max per-update KL, KL limit,
//! regret (bandit) and collapses; finally the `summary.md` path and a last
//! line `done: <configs> configs, <runs> runs` that the tests look for.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use klrl::envs::Registry;
use klrl::runner::compare::{compare, CompareOptions, ConfigStats};
use klrl::runner::metrics::MetricsTable;

/// The learners, in table order (file stems under each task's directory).
const LEARNERS: [&str; 5] = [
    "vanilla-pg",
    "ppo-kl-fixed",
    "ppo-kl-adaptive",
    "ppo-clip",
    "trpo",
];
/// The tasks: subdirectories of `configs/compare/kl_vs_trust_region/`.
const TASKS: [&str; 2] = ["bandit", "cartpole"];
/// Seeds per learner.
const SEEDS: u64 = 3;

/// Per learner, from each seed's metrics: how many seeds ended below half
/// their peak return, the mean over seeds of final / peak, and the mean policy
/// entropy of the last update.
struct Collapses {
    collapsed: usize,
    seeds: usize,
    final_over_peak: f64,
    final_entropy: f64,
}

fn main() -> Result<()> {
    // One compute thread: candle's pool is ~20× slower on networks this small.
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let quick = std::env::var("KLRL_EXAMPLE_QUICK").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| root.join("docs/kl_vs_trust_region"), PathBuf::from);
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let registry = Registry::builtin();
    let stop = AtomicBool::new(false);

    let mut report = String::from(
        "# Does limiting KL keep policy updates stable? (kl_vs_trust_region)\n\n\
         Written by `cargo run --release --example kl_vs_trust_region`. Per task, 3 seeds \
         of each learner; settings in `configs/compare/kl_vs_trust_region/`. \
         Final return: mean ± std over seeds of the mean return of the last 20 training \
         episodes (bandit: clicks per 100 users). KL: exact per-update mean KL(π_old ‖ π_new) \
         over all updates and seeds. Bandit regret: clicks per user lost to the oracle (a \
         uniformly random policy loses ≈ 0.23 at the start); final entropy: of the policy at the last update \
         (uniform = ln 20 ≈ 3.00). CartPole collapsed: seeds whose final return is below half \
         of the best it reached during training.\n",
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
        clear_previous_output(&task_out)?;
        let opts = CompareOptions {
            configs,
            seeds: SEEDS,
            sets: if quick {
                vec!["train.total_steps=2048".into()]
            } else {
                Vec::new()
            },
            out: task_out.clone(),
            jobs: None,
        };
        println!("== {task}: {} learners × {SEEDS} seeds", LEARNERS.len());
        let stats = compare(&opts, &registry, &stop, &|line| println!("  {line}"))
            .with_context(|| format!("comparing the {task} configs"))?;
        runs += stats.iter().map(|s| s.seeds).sum::<usize>();
        let table = table(&stats, &task_out)?;
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

/// The markdown table of one task: return, KL and collapses per learner. On
/// the drifting bandit the achievable return moves with the world, so instead
/// of final / peak it shows the expected regret and the policy's final entropy
/// (a policy that went deterministic on a stale favourite cannot follow the
/// drift; uniform over 20 movies = ln 20 ≈ 3.00 nats).
fn table(stats: &[ConfigStats], task_out: &Path) -> Result<String> {
    let bandit = stats.iter().any(|s| s.regret_mean.is_some());
    let mut t = String::from("| learner | final return | mean KL | max KL | KL limit |");
    t.push_str(if bandit {
        " regret / step, all (last 10 %) | final entropy |\n"
    } else {
        " collapsed | final / peak |\n"
    });
    t.push_str("|---|---|---|---|---|---|---|\n");
    for s in stats {
        let c = collapses(task_out, &s.label, SEEDS)?;
        let _ = write!(
            t,
            "| {} | {:.1} ± {:.1} | {:.4} | {:.4} | {} |",
            s.label,
            s.final_return_mean,
            s.final_return_std,
            s.kl_mean,
            s.kl_max,
            s.kl_limit.map_or("none".to_string(), |l| l.to_string()),
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
            writeln!(
                t,
                " {}/{} | {:.2} |",
                c.collapsed, c.seeds, c.final_over_peak
            )
        };
    }
    Ok(t)
}

/// Read each seed's `metrics.csv` and compare its final return with its peak.
fn collapses(task_out: &Path, label: &str, seeds: u64) -> Result<Collapses> {
    let mut c = Collapses {
        collapsed: 0,
        seeds: 0,
        final_over_peak: 0.0,
        final_entropy: 0.0,
    };
    for seed in 0..seeds {
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
        let (Some(&last), Some(peak)) = (finite.last(), finite.iter().copied().reduce(f64::max))
        else {
            continue; // no finished episode (a tiny quick run)
        };
        c.seeds += 1;
        c.final_over_peak += last / peak;
        c.final_entropy += entropy.last().copied().unwrap_or(f64::NAN);
        if last < 0.5 * peak {
            c.collapsed += 1;
        }
    }
    c.final_over_peak /= c.seeds.max(1) as f64;
    c.final_entropy /= c.seeds.max(1) as f64;
    Ok(c)
}

/// `compare` writes only into an empty directory: remove an earlier output of
/// this example (recognised by its `compare.json`), refuse anything else.
fn clear_previous_output(dir: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(()); // does not exist yet
    };
    if entries.next().is_none() {
        return Ok(());
    }
    if !dir.join("compare.json").is_file() {
        bail!(
            "{} exists, is not empty and is not an earlier comparison; choose another OUT_DIR",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}
