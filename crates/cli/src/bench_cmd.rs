//! `klrl bench`: end-to-end training benchmarks (by default the two
//! rl-baselines3-zoo CartPole configs), one run after another on one
//! compute thread, each followed by an untimed final evaluation, as a table
//! or JSON.

use std::path::PathBuf;

use clap::Args;
use klrl_envs::Registry;
use klrl_runner::bench::{self, BenchResult};
use klrl_runner::{config, ConfigSource};

use crate::train_cmd::cli_error;
use crate::CliError;

/// Arguments of `klrl bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The configs to time (TOML). Default: the built-in copies of
    /// configs/bench/cartpole-ppo-zoo.toml and configs/bench/cartpole-trpo-zoo.toml.
    configs: Vec<PathBuf>,
    /// Runs per config, with seeds S, S+1, …, S+N−1 (S from --seed-start;
    /// overriding train.seed).
    #[arg(long, default_value_t = 3, value_name = "N")]
    seeds: u64,
    /// The first seed (e.g. --seed-start 2 --seeds 1 runs seed 2 alone).
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed_start: u64,
    /// Episodes of the final evaluation after each run (deterministic
    /// actions, untimed, the same as `klrl train`'s: the mean return is the
    /// JSON's `eval` and the table's `eval`); 0 skips it. Default: the
    /// config's run.eval_episodes (10 unless set).
    #[arg(long, value_name = "N")]
    eval_episodes: Option<usize>,
    /// Override a value in every config, e.g. --set train.total_steps=20000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Print the results as a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run `klrl bench` with the environments of `registry`.
pub fn run(args: BenchArgs, registry: &Registry) -> Result<(), CliError> {
    if args.seeds == 0 {
        return Err(CliError::usage(anyhow::anyhow!(
            "--seeds must be at least 1"
        )));
    }
    let Some(last_seed) = args.seed_start.checked_add(args.seeds - 1) else {
        return Err(CliError::usage(anyhow::anyhow!(
            "--seed-start {} with --seeds {} goes past the largest seed, {}",
            args.seed_start,
            args.seeds,
            u64::MAX
        )));
    };
    let sources: Vec<ConfigSource> = if args.configs.is_empty() {
        bench::default_configs()
    } else {
        args.configs
            .iter()
            .cloned()
            .map(ConfigSource::File)
            .collect()
    };
    // Validate every config and seed before timing anything.
    let mut resolved = Vec::new();
    for source in &sources {
        for seed in args.seed_start..=last_seed {
            let mut c =
                config::load(source, &args.sets, Some(seed), registry).map_err(cli_error)?;
            if let Some(episodes) = args.eval_episodes {
                c.run.eval_episodes = episodes;
            }
            resolved.push(c);
        }
    }
    let mut results: Vec<BenchResult> = Vec::with_capacity(resolved.len());
    for c in &resolved {
        if !args.json {
            eprintln!("running {} (seed {})…", c.source, c.experiment.train.seed);
        }
        results.push(bench::bench_one(c, registry).map_err(cli_error)?);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&results).map_err(CliError::failure)?;
        println!("{text}");
    } else {
        print!("{}", bench::table(&results));
    }
    Ok(())
}
