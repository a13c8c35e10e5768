//! The fuzzing of `fuzz_inputs.rs`, one file per surface, and what they
//! share: how a case runs ([`harness`]), the small runs the file surfaces
//! damage ([`runs`]).

pub mod checkpoints;
pub mod command_lines;
pub mod configs;
pub mod harness;
pub mod metrics;
pub mod runs;
pub mod sets;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longer than any case takes (most take a millisecond); a case still
/// running after it counts as a hang.
pub const CASE_LIMIT: Duration = Duration::from_secs(20);

/// Every how many cases of an in-process surface one also runs as the real
/// binary, to check its stderr.
pub const SUBPROCESS_EVERY: usize = 16;

/// Cases per surface, times `KLRL_FUZZ_SCALE` (default 1).
pub fn cases(n: usize) -> usize {
    let scale: f64 = std::env::var("KLRL_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(1)
}

/// The repository's `configs/`.
pub fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}
