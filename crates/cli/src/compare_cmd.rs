//! `klrl compare`: every config × seed, then a summary and plots.

use std::path::PathBuf;

use clap::Args;

use crate::CliError;

/// Arguments of `klrl compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// The configs to compare.
    configs: Vec<PathBuf>,
}

/// Run `klrl compare`.
pub fn run(args: CompareArgs) -> Result<(), CliError> {
    let _ = args;
    Err(CliError::failure(anyhow::anyhow!("not yet")))
}
