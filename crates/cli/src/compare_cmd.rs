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
    #[arg(required_unless_present = "plot_only")]
    configs: Vec<PathBuf>,
    /// Seeds per config (0, 1, …, N−1).
    #[arg(long, default_value_t = 3, value_name = "N")]
    seeds: u64,
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
    /// Only redraw summary.md and the plots of an earlier comparison in DIR.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["configs", "out", "sets", "jobs"])]
    plot_only: Option<PathBuf>,
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
        Some(dir) => (
            dir.clone(),
            compare::plot_only(dir, registry).map_err(cli_error)?,
        ),
        None => {
            let out = args.out.clone().unwrap_or_else(|| {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from("runs")
                    .join(format!("compare-{}", klrl_runner::run::utc_timestamp(secs)))
            });
            let opts = CompareOptions {
                configs: args.configs.clone(),
                seeds: args.seeds,
                sets: args.sets.clone(),
                out: out.clone(),
                jobs: args.jobs,
            };
            let stop = interrupt_flag();
            let n = args.configs.len() as u64 * args.seeds;
            println!(
                "training {n} runs ({} configs × {} seeds) into {}",
                args.configs.len(),
                args.seeds,
                out.display()
            );
            let stats = compare::compare(&opts, registry, &stop, &|line| println!("{line}"))
                .map_err(cli_error)?;
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
