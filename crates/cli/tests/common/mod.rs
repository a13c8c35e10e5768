//! What the CLI tests share: the `klrl` binary cargo built for them, run in
//! a directory, fresh temporary directories, and output as text. Each test
//! file uses some of these (hence `dead_code` allowed: every test file is its
//! own crate).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `klrl` binary, with one compute thread for everything outside a
/// trainer (the trainers own their threads).
pub fn klrl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_klrl"));
    c.env("RAYON_NUM_THREADS", "1")
        .env("CANDLE_NUM_THREADS", "1");
    c
}

/// Run `klrl args` in `cwd` to the end.
pub fn run(args: &[&str], cwd: &Path) -> Output {
    klrl()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run klrl")
}

/// A fresh, empty directory under the system temp dir, named after `name`,
/// the process and the time.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("klrl-cli-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Bytes of output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Parameters and optimiser state of a checkpoint, as raw bytes per tensor
/// (every tensor of its safetensors files but the run's wall clock).
pub fn checkpoint_tensors(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for file in [
        "policy.safetensors",
        "value.safetensors",
        "state.safetensors",
    ] {
        let data = std::fs::read(dir.join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        for (name, view) in st.tensors() {
            if name != "run.wall_s" {
                out.insert(format!("{file}/{name}"), view.data().to_vec());
            }
        }
    }
    out
}
