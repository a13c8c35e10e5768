//! Training runs for klrl: what the `klrl` program does with a config, as a
//! library so examples and tests call the same code.
//!
//! - [`config`]: TOML configs (the optimiser's sections plus `[run]`),
//!   `--set` overrides and validation before anything is written.
//! - [`run::Run`]: a run directory with `config.toml`, `metrics.csv`,
//!   TensorBoard event files, [`checkpoint`]s and `summary.json`; resume.
//! - [`eval`]: evaluate a run or checkpoint.
//! - [`mod@bench`]: end-to-end training benchmarks (wall time, phases, time to
//!   the reward threshold).
//! - [`compare`]: every config × seed in parallel, a markdown summary and
//!   PNG plots ([`plot`]).
//!
//! Not here: argument parsing, progress bars and Ctrl-C (the `klrl` binary),
//! the algorithms (`klrl-optim`), networks and environments.

pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod plot;
pub mod reference;
pub mod run;
pub mod tb;

pub use config::{ConfigSource, ResolvedConfig, RunConfig};
pub use error::{Result, RunnerError};
pub use run::{EvalSummary, Run, RunDir, Summary};
