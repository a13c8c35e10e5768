//! TensorBoard event files through tensorboard-rs 0.5.9, guarded against its
//! known defects:
//!
//! - its event file name holds only the second, host and pid, so two writers
//!   in one directory within a second collide and lose data: every writer
//!   gets a fresh directory of its own (`tb/0` for a run, `tb/1` for its
//!   first resume, …) and refuses a directory that already holds event files;
//! - writes happen on a background thread and only `Drop` waits for them:
//!   [`TbWriter`] is owned by the run and dropped on every exit path (normal
//!   end, error, Ctrl-C — which stops the loop instead of the process);
//! - IO errors panic (in the background thread, then in the caller): the
//!   directory is created and checked writable before the writer starts, and,
//!   as a second line only, a panic while adding a scalar disables the writer
//!   with a warning instead of killing the run.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tensorboard_rs::summary_writer::SummaryWriter;

use crate::error::{Result, RunnerError};

/// A scalar writer for one directory.
pub struct TbWriter {
    dir: PathBuf,
    writer: Option<SummaryWriter>,
    /// Set when the writer failed; the reason is reported once.
    pub failure: Option<String>,
}

impl TbWriter {
    /// Start a writer in `dir`, which must not exist yet or hold no event
    /// files, and must be writable.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| RunnerError::io(dir, e))?;
        let taken = fs::read_dir(dir)
            .map_err(|e| RunnerError::io(dir, e))?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("events.out"));
        if taken {
            return Err(RunnerError::Usage(format!(
                "{}: already holds TensorBoard event files; a second writer could collide with them",
                dir.display()
            )));
        }
        // tensorboard-rs panics on IO errors: prove the directory writable first.
        let probe = dir.join(".write-test");
        fs::write(&probe, b"ok")
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| RunnerError::io(dir, e))?;
        // The hostname must be UTF-8 too, or the constructor panics.
        let writer = catch_unwind(|| SummaryWriter::new(dir)).map_err(|_| {
            RunnerError::io(
                dir,
                std::io::Error::other("tensorboard-rs could not start its event file"),
            )
        })?;
        Ok(TbWriter {
            dir: dir.to_path_buf(),
            writer: Some(writer),
            failure: None,
        })
    }

    /// The writer's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Add the finite values of `scalars` at `step`; NaN values are skipped
    /// (as in metrics.csv, where they are empty cells).
    pub fn add(&mut self, scalars: &[(String, f64)], step: u64) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            for (tag, v) in scalars {
                if v.is_finite() {
                    w.add_scalar(tag, *v as f32, step as usize);
                }
            }
        }));
        if result.is_err() {
            // The background thread died (disk full, directory removed); its
            // Drop would panic again, so it is leaked instead.
            if let Some(w) = self.writer.take() {
                std::mem::forget(w);
            }
            self.failure = Some(format!(
                "TensorBoard writer in {} failed; event files are incomplete, metrics.csv is not",
                self.dir.display()
            ));
        }
    }

    /// Flush and close: waits for the background thread to write everything.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut w) = self.writer.take() {
            let ok = catch_unwind(AssertUnwindSafe(move || {
                w.flush();
                drop(w);
            }));
            if ok.is_err() {
                self.failure = Some(format!(
                    "TensorBoard writer in {} failed while closing",
                    self.dir.display()
                ));
            }
        }
    }
}

impl Drop for TbWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The TensorBoard tag of a metrics.csv column: grouped as `rollout/…`,
/// `time/…` and `train/…` panels.
pub fn tag(column: &str) -> String {
    match column {
        "ep_return_mean" | "ep_len_mean" | "regret" => format!("rollout/{column}"),
        "update" | "wall_s" => format!("time/{column}"),
        _ => format!("train/{column}"),
    }
}
