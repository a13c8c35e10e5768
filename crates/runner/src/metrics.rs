//! `metrics.csv`: one row per update — `update, env_steps, wall_s,
//! ep_return_mean, ep_len_mean`, the optimiser's
//! [`UpdateDiagnostics::COLUMNS`], and `regret` for environments that report
//! it. NaN (a quantity an algorithm does not have, or no finished episode
//! yet) is an empty cell.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use klrl_optim::UpdateDiagnostics;

use crate::error::{Result, RunnerError};

/// One row of metrics.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    /// Update index (0-based).
    pub update: u64,
    /// Environment steps after this update.
    pub env_steps: u64,
    /// Wall-clock seconds of training so far (across resumes).
    pub wall_s: f64,
    /// Mean return of the last `run.return_window` finished episodes; NaN
    /// before the first one.
    pub ep_return_mean: f64,
    /// Their mean length.
    pub ep_len_mean: f64,
    /// The optimiser's diagnostics.
    pub diagnostics: UpdateDiagnostics,
    /// Mean expected regret per step of this update's rollout (bandits).
    pub regret: Option<f64>,
}

impl MetricsRow {
    /// `(column, value)` pairs in file order (without `regret` unless
    /// `with_regret`).
    pub fn columns(&self, with_regret: bool) -> Vec<(&'static str, f64)> {
        let mut out = vec![
            ("update", self.update as f64),
            ("env_steps", self.env_steps as f64),
            ("wall_s", self.wall_s),
            ("ep_return_mean", self.ep_return_mean),
            ("ep_len_mean", self.ep_len_mean),
        ];
        out.extend(
            UpdateDiagnostics::COLUMNS
                .iter()
                .copied()
                .zip(self.diagnostics.values()),
        );
        if with_regret {
            out.push(("regret", self.regret.unwrap_or(f64::NAN)));
        }
        out
    }
}

/// The header of metrics.csv.
pub fn header(with_regret: bool) -> Vec<&'static str> {
    let mut h = vec![
        "update",
        "env_steps",
        "wall_s",
        "ep_return_mean",
        "ep_len_mean",
    ];
    h.extend(UpdateDiagnostics::COLUMNS);
    if with_regret {
        h.push("regret");
    }
    h
}

/// Format a value for the CSV: shortest round-trip decimal, empty for NaN.
fn cell(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x}")
    }
}

/// Appends rows to metrics.csv, flushing after each so a killed run keeps
/// every finished update.
pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    with_regret: bool,
}

impl MetricsWriter {
    /// Create `path` with the header.
    pub fn create(path: &Path, with_regret: bool) -> Result<Self> {
        let file = File::create(path).map_err(|e| RunnerError::io(path, e))?;
        let mut w = MetricsWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            with_regret,
        };
        w.line(&header(with_regret).join(","))?;
        Ok(w)
    }

    /// Reopen `path` for a resumed run, keeping only the rows of updates
    /// before `updates` (rows a killed run wrote after its last checkpoint
    /// are written again by the resumed run). A file written by an earlier
    /// klrl, whose columns are a subset of this run's, is rewritten with this
    /// run's columns (the new ones empty); any other header is refused.
    pub fn resume(path: &Path, with_regret: bool, updates: u64) -> Result<Self> {
        let keep = match std::fs::read_to_string(path) {
            Ok(text) => {
                // A last line without its newline was cut by a kill mid-write
                // (its update is after the checkpoint): dropped.
                // No newline at all: killed between creating the file and
                // writing its header (or in the middle of it): nothing to keep.
                let complete = match text.rfind('\n') {
                    Some(end) => &text[..=end],
                    None => "",
                };
                if complete.is_empty() {
                    return Self::rewrite(path, with_regret, "");
                }
                let mut lines = complete.lines();
                let head = lines.next().unwrap_or_default();
                let columns = header(with_regret);
                // Where each of this run's columns is in the file (None: a
                // column added since the file was written, left empty).
                let old: Vec<&str> = head.split(',').collect();
                let at: Vec<Option<usize>> = columns
                    .iter()
                    .map(|c| old.iter().position(|o| o == c))
                    .collect();
                let known = old.iter().all(|o| columns.contains(o));
                if !known || at[0] != Some(0) {
                    return Err(RunnerError::Metrics {
                        path: path.display().to_string(),
                        reason: "its header does not match this run's columns".into(),
                    });
                }
                // Every row a klrl wrote: the file's column count, an update
                // number, numbers or empty cells.
                let number = |c: &&str| c.is_empty() || c.parse::<f64>().is_ok();
                let mut keep = String::new();
                for (i, row) in lines.enumerate() {
                    let cells: Vec<&str> = row.split(',').collect();
                    let update = cells[0].parse::<u64>();
                    if update.as_ref().is_ok_and(|&u| u >= updates) {
                        // Written after the checkpoint: the resumed run writes it again.
                        continue;
                    }
                    if cells.len() != old.len() || update.is_err() || !cells.iter().all(number) {
                        return Err(RunnerError::Metrics {
                            path: path.display().to_string(),
                            reason: format!(
                                "line {}: not a row of {} numbers (damaged; restore the file \
                                 or delete it to keep no metrics from before the resume)",
                                i + 2,
                                old.len()
                            ),
                        });
                    }
                    let line: Vec<&str> = at
                        .iter()
                        .map(|i| i.and_then(|i| cells.get(i).copied()).unwrap_or(""))
                        .collect();
                    keep.push_str(&line.join(","));
                    keep.push('\n');
                }
                keep
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(RunnerError::Metrics {
                    path: path.display().to_string(),
                    reason: format!("cannot be read: {e}"),
                })
            }
        };
        Self::rewrite(path, with_regret, &keep)
    }

    /// Rewrite `path` as this run's header and the rows `keep` (through a
    /// temporary file, so a crash now loses nothing) and open it to append.
    fn rewrite(path: &Path, with_regret: bool, keep: &str) -> Result<Self> {
        let tmp = path.with_extension("csv.tmp");
        let content = format!("{}\n{keep}", header(with_regret).join(","));
        crate::checkpoint::write_synced(&tmp, content.as_bytes())?;
        std::fs::rename(&tmp, path).map_err(|e| RunnerError::io(path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| RunnerError::io(path, e))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            with_regret,
        })
    }

    /// Append one row.
    pub fn write(&mut self, row: &MetricsRow) -> Result<()> {
        let line = row
            .columns(self.with_regret)
            .iter()
            .map(|(_, v)| cell(*v))
            .collect::<Vec<_>>()
            .join(",");
        self.line(&line)
    }

    fn line(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| RunnerError::io(&self.path, e))
    }
}

/// A metrics.csv read back: column names and rows (NaN for empty cells).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTable {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of values.
    pub rows: Vec<Vec<f64>>,
}

impl MetricsTable {
    /// Read `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |reason: String| RunnerError::Metrics {
            path: path.display().to_string(),
            reason,
        };
        let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut rows = Vec::new();
        for (i, rec) in reader.records().enumerate() {
            let rec = rec.map_err(|e| bad(e.to_string()))?;
            let row = rec
                .iter()
                .map(|c| {
                    if c.is_empty() {
                        Ok(f64::NAN)
                    } else {
                        c.parse::<f64>()
                            .map_err(|_| bad(format!("row {}: `{c}` is not a number", i + 1)))
                    }
                })
                .collect::<Result<Vec<f64>>>()?;
            rows.push(row);
        }
        Ok(MetricsTable { columns, rows })
    }

    /// The values of column `name`, if present.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let j = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| r[j]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run killed between creating metrics.csv and writing its header
    /// (an empty file) or while writing it (no newline yet) resumes with a
    /// fresh header; a damaged complete header is still refused.
    #[test]
    fn resume_after_a_kill_before_the_header_is_complete() {
        let dir = std::env::temp_dir().join(format!("klrl-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.csv");
        let full = format!("{}\n", header(false).join(","));
        for text in ["", "update,env_st", &full[..full.len() - 1]] {
            std::fs::write(&path, text).unwrap();
            let w = MetricsWriter::resume(&path, false, 3).expect(text);
            drop(w);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), full, "{text:?}");
        }
        std::fs::write(&path, "update,env_st\n").unwrap();
        assert!(MetricsWriter::resume(&path, false, 3).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
