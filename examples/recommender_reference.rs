//! Improve a deployed recommender without straying from it: KL to a
//! reference policy on the MovieRec-v0 bandit.
//!
//! 1. A "production" recommender is trained where tastes do not drift
//!    (`configs/bandit-production.toml`: PPO with an entropy bonus, so the
//!    deployed softmax policy still shows several movies per user segment).
//! 2. Then tastes start to drift (`drift = 0.01`) and the production policy
//!    is improved online, every learner starting from it (`run.init_from`):
//!    - PPO held to KL(π ‖ π_prod) ≤ ε_ref on every update, for several ε_ref
//!      (`[algo.reference]`, constraint mode);
//!    - PPO with no reference (a fixed KL penalty to the previous policy);
//!    - per-update limits only: PPO with `max_kl` and TRPO, whose every step is
//!      bounded but not where the steps lead.
//!
//! Every learner measures KL(π ‖ π_prod) on every update (the baselines
//! with a reference term of coefficient 0, which measures without acting).
//!
//! The settings are the TOML files in `configs/compare/recommender_reference/`.
//! The runs go through `klrl_runner::compare` (the code behind `klrl
//! compare`), which writes `compare/summary.md` and the plots (return, KL per
//! update, regret, KL to the reference); this example adds `OUT/summary.md`
//! with one table — late regret, KL to production (mean and largest over
//! updates, share of updates above ε_ref), entropy — and `OUT/tradeoff.png`,
//! late regret against KL to production.
//!
//! Run from the workspace root:
//!
//! ```text
//! cargo run --release --example recommender_reference [-- OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `docs/recommender_reference/`; an earlier output
//! there is replaced. It takes about two minutes on two cores (1 + 35 runs
//! of 50k steps). `KLRL_EXAMPLE_QUICK=1` shrinks every run to 2 048 steps
//! and one seed to check that it works. Expected output: one line per
//! finished run, the table, and a last line `done: <learners> learners,
//! <runs> runs, <updates> updates above ε_ref` that the tests look for.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use klrl::envs::Registry;
use klrl::runner::compare::{compare, CompareOptions, ConfigStats};
use klrl::runner::metrics::MetricsTable;
use klrl::runner::plot::{scatter, Point};
use klrl::runner::{config, ConfigSource, Run, RunDir};

mod common;

/// The learners, in table order (file stems in the configs directory), with
/// what each bounds.
const LEARNERS: [(&str, &str); 7] = [
    ("no-reference", "nothing"),
    ("ppo-kl-limit", "each update: KL(π_old ‖ π_new) ≤ 0.01"),
    ("trpo", "each update: KL(π_old ‖ π_new) ≤ 0.01"),
    ("reference-1.0", "KL(π ‖ π_prod) ≤ 1.0"),
    ("reference-0.3", "KL(π ‖ π_prod) ≤ 0.3"),
    ("reference-0.1", "KL(π ‖ π_prod) ≤ 0.1"),
    ("reference-0.03", "KL(π ‖ π_prod) ≤ 0.03"),
];
/// Seeds per learner (1 in quick mode).
const SEEDS: u64 = 5;
/// What an earlier output of the comparison directory holds.
const OURS: [&str; 7] = [
    "compare.json",
    "summary.md",
    "return.png",
    "kl.png",
    "regret.png",
    "kl_ref.png",
    "runs",
];

fn main() -> Result<()> {
    common::one_compute_thread();
    let quick = std::env::var("KLRL_EXAMPLE_QUICK").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| root.join("docs/recommender_reference"), PathBuf::from);
    let cwd = std::env::current_dir().context("reading the current directory")?;
    // Relative paths where possible, so that the summary does not name this
    // machine's directories.
    let rel = |p: PathBuf| p.strip_prefix(&cwd).map_or(p.clone(), Path::to_path_buf);
    let registry = Registry::builtin();
    let stop = AtomicBool::new(false);
    let seeds = if quick { 1 } else { SEEDS };
    let steps: Vec<String> = if quick {
        vec!["train.total_steps=2048".into()]
    } else {
        Vec::new()
    };

    // 1. The production recommender, trained without drift.
    let production = out.join("production");
    common::clear_previous_output(&out.join("compare"), &OURS)?;
    if production.exists() {
        std::fs::remove_dir_all(&production)
            .with_context(|| format!("removing {}", production.display()))?;
    }
    let prod_config = config::load(
        &ConfigSource::File(rel(root.join("configs/bandit-production.toml"))),
        &steps,
        None,
        &registry,
    )?;
    println!("== production: {}", prod_config.source);
    let mut run = Run::create(prod_config, RunDir::Exactly(production.clone()), &registry)?;
    while !run.is_done() {
        run.step()?;
    }
    run.finish(false, &registry)?;
    let prod = MetricsTable::read(&production.join("metrics.csv"))?;
    let prod_entropy = last(&prod, "entropy");
    let prod_regret = late_mean(&prod, "regret");
    println!("  entropy {prod_entropy:.3}, regret {prod_regret:.4} per user (last 10 %, no drift)");

    // 2. Every learner, starting from production, with drift.
    let dir = root.join("configs/compare/recommender_reference");
    let opts = CompareOptions {
        configs: LEARNERS
            .iter()
            .map(|(l, _)| rel(dir.join(format!("{l}.toml"))))
            .collect(),
        seeds,
        sets: steps
            .iter()
            .cloned()
            .chain([format!("run.init_from=\"{}\"", production.display())])
            .collect(),
        out: out.join("compare"),
        jobs: None,
        shard: None,
        resume: false,
    };
    println!(
        "== improving it under drift: {} learners × {seeds} seeds",
        LEARNERS.len()
    );
    let stats = compare(&opts, &registry, &stop, &|line| println!("  {line}"))
        .context("comparing the learners")?;

    // 3. The table and the trade-off plot.
    let mut rows = Vec::new();
    for ((label, bounds), s) in LEARNERS.iter().zip(&stats) {
        let late_kl_ref = seed_mean(&out.join("compare"), label, seeds, |t| {
            late_mean(t, "kl_ref")
        })?;
        rows.push(Row {
            label,
            bounds,
            late_kl_ref,
            stats: s.clone(),
        });
    }
    let above: f64 = rows
        .iter()
        .filter_map(|r| r.stats.frac_above_ref_limit)
        .sum();
    let table = table(&rows);
    println!("\n{table}");
    let points: Vec<Point> = rows
        .iter()
        .map(|r| Point {
            label: r.label.to_string(),
            x: r.late_kl_ref,
            y: r.stats.regret_final.unwrap_or(f64::NAN),
        })
        .collect();
    scatter(
        &out.join("tradeoff.png"),
        "Late regret against KL(π ‖ π_prod), last 10 % of updates",
        "KL(π ‖ π_prod) (nats)",
        "regret per user",
        &points,
    )?;
    let mut report = format!(
        "# Improving a deployed recommender under a KL bound to it (recommender_reference)\n\n\
         Written by `cargo run --release --example recommender_reference`. The production \
         policy (`configs/bandit-production.toml`, MovieRec-v0 without drift) ends with \
         entropy {prod_entropy:.3} nats (uniform: ln 20 ≈ 3.00) and regret {prod_regret:.4} per \
         user. Then tastes drift (`drift = 0.01`) and each learner of \
         `configs/compare/recommender_reference/` improves it from there, {seeds} seeds each.\n\n\
         - **bounds**: what the learner holds on every update.\n\
         - **regret**: clicks per user lost to the oracle, whole run (last 10 % of updates), \
         mean over seeds.\n\
         - **KL to production**: the exact mean over the batch states of KL(π(·|s) ‖ \
         π_prod(·|s)) after each update: over the last 10 % of updates (mean over seeds), and \
         the largest over all updates and seeds; **above ε**: the share of updates whose KL to \
         production exceeded the learner's ε_ref.\n\
         - **entropy**: of the policy at the last update, mean over seeds.\n\n{table}\n\
         ![trade-off](tradeoff.png)\n\n\
         Details, curves and the KL to production per update: \
         [compare/summary.md](compare/summary.md).\n"
    );
    if quick {
        report.push_str("\n(Quick mode: 2 048 steps and one seed per run; not the results.)\n");
    }
    std::fs::write(out.join("summary.md"), report).context("writing summary.md")?;
    println!("summary: {}", out.join("summary.md").display());
    println!(
        "done: {} learners, {} runs, {} updates above ε_ref",
        rows.len(),
        stats.iter().map(|s| s.seeds).sum::<usize>(),
        above
    );
    Ok(())
}

/// One learner's line of the table.
struct Row<'a> {
    label: &'a str,
    bounds: &'a str,
    late_kl_ref: f64,
    stats: ConfigStats,
}

/// The markdown table.
fn table(rows: &[Row<'_>]) -> String {
    let f = |x: f64, d: usize| {
        if x.is_finite() {
            format!("{x:.d$}")
        } else {
            "–".to_string()
        }
    };
    let mut s = String::from(
        "| learner | bounds | regret, all (last 10 %) | KL to production, last 10 % | largest \
         | above ε | entropy |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let st = &r.stats;
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.label,
            r.bounds,
            f(st.regret_mean.unwrap_or(f64::NAN), 4),
            f(st.regret_final.unwrap_or(f64::NAN), 4),
            f(r.late_kl_ref, 3),
            f(st.kl_ref_max, 3),
            st.frac_above_ref_limit
                .map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x)),
            f(st.final_entropy, 3),
        );
    }
    s
}

/// The last finite value of `column`.
fn last(t: &MetricsTable, column: &str) -> f64 {
    t.column(column)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|v| v.is_finite())
        .unwrap_or(f64::NAN)
}

/// The mean of `column` over the last 10 % of the updates.
fn late_mean(t: &MetricsTable, column: &str) -> f64 {
    let v = t.column(column).unwrap_or_default();
    let late = &v[v.len() - v.len().div_ceil(10)..];
    let finite: Vec<f64> = late.iter().copied().filter(|x| x.is_finite()).collect();
    finite.iter().sum::<f64>() / finite.len().max(1) as f64
}

/// The mean over seeds of `f` of each run's metrics.
fn seed_mean(
    compare_out: &Path,
    label: &str,
    seeds: u64,
    f: impl Fn(&MetricsTable) -> f64,
) -> Result<f64> {
    let mut sum = 0.0;
    for seed in 0..seeds {
        let path = compare_out.join(format!("runs/{label}-s{seed}/metrics.csv"));
        sum += f(&MetricsTable::read(&path)?);
    }
    Ok(sum / seeds.max(1) as f64)
}
