//! What the comparison examples share: one compute thread, and clearing an
//! earlier output of the example before `compare` (which writes only into
//! an empty directory) runs again.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One compute thread: candle's pool is ~20× slower on networks this small.
pub fn one_compute_thread() {
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
}

/// `compare` writes only into an empty directory: remove an earlier output of
/// an example (recognised by its `compare.json`, or, in a fresh checkout
/// where only the committed tables and plots are present, by holding nothing
/// but `ours`), refuse anything else.
pub fn clear_previous_output(dir: &Path, ours: &[&str]) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // does not exist yet
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let only_ours = names.iter().all(|n| ours.contains(&n.as_str()));
    if !dir.join("compare.json").is_file() && !only_ours {
        bail!(
            "{} exists, is not empty and is not an earlier output of this example; choose another OUT_DIR",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}
