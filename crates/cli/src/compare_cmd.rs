//! `klrl compare`: every config × seed in parallel, then a markdown summary
//! and PNG plots; or redraw them from saved metrics.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use klrl_envs::Registry;
use klrl_runner::compare::{self, CompareOptions, ConfigStats};

use crate::train_cmd::{cli_error, interrupt_flag};
use crate::CliError;

/// Arguments of `klrl compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// The configs to compare (TOML).
    #[arg(required_unless_present_any = ["plot_only", "resume"])]
    configs: Vec<PathBuf>,
    /// Seeds per config (0, 1, …, N−1). Default 3.
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// Output directory (must not exist or be empty). Default:
    /// `runs/compare-<timestamp>`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Override a value in every config, e.g. --set train.total_steps=20000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Runs trained at once. Default: the number of available cores.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Train only shard I of N (0 <= I < N) of the sweep, into the --out
    /// directory the other shards share (also on other machines, through a
    /// shared filesystem). The tasks are the configs × seeds in order
    /// (config-major: task j is config j / K, seed j mod K); shard I trains
    /// the tasks j with j mod N = I. Each shard writes only its own runs and
    /// the same compare.json, never the summary: when all are done, merge
    /// them with --plot-only DIR.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(u64, u64)>,
    /// Finish a comparison that was killed or interrupted: finished runs are
    /// kept, partial runs resume from their newest checkpoint, runs never
    /// started start. Either `--resume DIR` alone (the configs, seeds and
    /// --set values come from DIR/compare.json) or the original command with
    /// `--resume` added (after the configs). Works with --shard.
    #[arg(long, value_name = "DIR")]
    #[allow(clippy::option_option)] // --resume (Some(None)) or --resume DIR
    resume: Option<Option<PathBuf>>,
    /// Only redraw summary.md and the plots of an earlier comparison in DIR
    /// (merging its shards); runs not started or not finished are left out
    /// of the tables and listed in summary.md and on stderr.
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["configs", "out", "sets", "jobs", "shard", "resume", "seeds"])]
    plot_only: Option<PathBuf>,
}

/// `I/N` with 0 <= I < N.
fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("expected I/N with 0 <= I < N (e.g. 0/4), got `{text}`");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The limit part of a config's line: `limit 0.01 (mean): 0.0% of updates
/// above, worst 0.98×`, or `no KL limit`.
fn limit_summary(s: &ConfigStats) -> String {
    let (Some(limit), Some(kind)) = (s.kl_limit, s.kl_limit_kind) else {
        return "no KL limit".to_string();
    };
    let kind = compare::kind_name(kind);
    match (s.frac_above_limit, s.worst_kl_ratio) {
        (Some(f), Some(w)) => format!(
            "limit {limit} ({kind}): {:.1}% of updates above, worst {w:.2}×",
            100.0 * f
        ),
        _ => format!("limit {limit} ({kind}): no KL measured"),
    }
}

/// Run `klrl compare` with the environments of `registry`.
pub fn run(args: CompareArgs, registry: &Registry) -> Result<(), CliError> {
    let (out, stats) = match &args.plot_only {
        Some(dir) => {
            let report = compare::plot_only(dir, registry).map_err(cli_error)?;
            if !report.incomplete.is_empty() {
                eprintln!(
                    "warning: {} runs are incomplete and not in the summary (finish them with \
                     klrl compare --resume {}):",
                    report.incomplete.len(),
                    dir.display()
                );
                for i in &report.incomplete {
                    eprintln!("  {i}");
                }
            }
            (dir.clone(), report.stats)
        }
        None => {
            let resume_dir = args.resume.as_ref().and_then(|d| d.as_ref());
            let out = match (resume_dir, &args.out) {
                (Some(r), Some(o)) if r != o => {
                    return Err(CliError::usage(anyhow::anyhow!(
                        "--resume {} and --out {} name different directories",
                        r.display(),
                        o.display()
                    )))
                }
                (Some(r), _) => r.clone(),
                (None, Some(o)) => o.clone(),
                (None, None) if args.resume.is_some() => {
                    return Err(CliError::usage(anyhow::anyhow!(
                        "--resume needs the comparison's directory: --resume DIR or --out DIR"
                    )))
                }
                (None, None) => {
                    let secs = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    PathBuf::from("runs")
                        .join(format!("compare-{}", klrl_runner::run::utc_timestamp(secs)))
                }
            };
            let from_manifest = args.resume.is_some() && args.configs.is_empty();
            if from_manifest && (args.seeds.is_some() || !args.sets.is_empty()) {
                return Err(CliError::usage(anyhow::anyhow!(
                    "--resume DIR without configs takes the seeds and --set values from \
                     DIR/compare.json; give the configs too, or leave out --seeds and --set"
                )));
            }
            let opts = CompareOptions {
                configs: args.configs.clone(),
                seeds: args.seeds.unwrap_or(3),
                sets: args.sets.clone(),
                out: out.clone(),
                jobs: args.jobs,
                shard: args.shard,
                resume: args.resume.is_some(),
            };
            let stop = interrupt_flag();
            // The first line (what will be trained, and where) comes once
            // every config has been validated.
            let on_done = |line: &str| println!("{line}");
            let stats = if from_manifest {
                compare::resume(&opts, registry, &stop, &on_done)
            } else {
                compare::compare(&opts, registry, &stop, &on_done)
            }
            .map_err(cli_error)?;
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                println!(
                    "interrupted; finish with: klrl compare --resume {}",
                    out.display()
                );
                return Err(CliError {
                    status: 130,
                    error: anyhow::anyhow!("interrupted"),
                });
            }
            if let Some((i, n)) = args.shard {
                println!(
                    "shard {i}/{n} done; when every shard is, merge them: klrl compare --plot-only {}",
                    out.display()
                );
                return Ok(());
            }
            (out, stats)
        }
    };
    for s in &stats {
        println!(
            "{:<32} final return {:>8.1} ± {:<7.1} mean KL {:.5}  {}",
            s.label,
            s.final_return_mean,
            s.final_return_std,
            s.kl_mean,
            limit_summary(s)
        );
    }
    println!("summary: {}", out.join("summary.md").display());
    println!(
        "plots: {} {}",
        out.join("return.png").display(),
        out.join("kl.png").display()
    );
    println!(
        "view in TensorBoard: tensorboard --logdir {}/runs",
        out.display()
    );
    Ok(())
}
