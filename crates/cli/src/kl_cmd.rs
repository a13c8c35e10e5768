//! `klrl kl`: the KL toolbox on the command line (being written; see issue 3).

use clap::Args;

use crate::CliError;

/// Arguments of `klrl kl`.
#[derive(Args)]
pub struct KlArgs {}

/// Run `klrl kl`.
pub fn run(_args: KlArgs) -> Result<(), CliError> {
    Err(CliError::failure(anyhow::anyhow!("klrl kl is not implemented yet")))
}
