//! `klrl eval`: evaluate a run's newest checkpoint, or a given checkpoint.

use std::path::PathBuf;

use clap::Args;
use klrl_envs::Registry;

use crate::train_cmd::cli_error;
use crate::CliError;

/// Arguments of `klrl eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A run directory (its newest checkpoint is used) or a checkpoint directory.
    path: PathBuf,
    /// Episodes to run.
    #[arg(long, default_value_t = 10)]
    episodes: usize,
    /// Take the most probable action (the mean for continuous actions)
    /// instead of sampling.
    #[arg(long)]
    deterministic: bool,
    /// Seed of the first episode (episode k uses seed + k). Default: the
    /// run's seed + 1000000.
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object: mean_return, std_return, mean_length, episodes.
    #[arg(long)]
    json: bool,
}

/// Run `klrl eval` with the environments of `registry`.
pub fn run(args: EvalArgs, registry: &Registry) -> Result<(), CliError> {
    let s = klrl_runner::eval::evaluate(
        &args.path,
        args.episodes,
        args.deterministic,
        args.seed,
        registry,
    )
    .map_err(cli_error)?;
    if args.json {
        println!("{}", serde_json::to_string(&s).map_err(CliError::failure)?);
    } else {
        println!(
            "return {:.2} ± {:.2} over {} episodes ({}), mean length {:.1}",
            s.mean_return,
            s.std_return,
            s.episodes,
            if s.deterministic {
                "deterministic"
            } else {
                "sampled"
            },
            s.mean_length
        );
    }
    Ok(())
}
