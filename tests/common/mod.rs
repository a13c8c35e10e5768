//! How the example tests start an example: the binary `cargo test` has
//! already built (`target/<profile>/examples/NAME`), when it is newer than
//! every source file it is built from; otherwise (e.g. after
//! `cargo test --test examples_a` alone, which does not build examples)
//! through `cargo run --example`, which builds it first. Running the built
//! binary saves CI a second compilation of the examples: `cargo run -p klrl`
//! resolves features for one package, not the workspace, and rebuilds
//! dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// A command that runs example `name` in release mode from the workspace root.
pub fn example(name: &str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match built_example(name).filter(|bin| newer_than_sources(bin, root)) {
        Some(bin) => {
            let mut c = Command::new(bin);
            c.current_dir(root);
            c
        }
        None => {
            let mut c = Command::new(env!("CARGO"));
            c.args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "klrl",
                "--example",
                name,
                "--",
            ])
            .current_dir(root);
            c
        }
    }
}

/// `target/<profile>/examples/NAME` next to this test binary
/// (`target/<profile>/deps/…`), if it exists.
fn built_example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("examples").join(name);
    bin.is_file().then_some(bin)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `bin` is at least as new as every `.rs`/`.toml` file and the lock
/// file of the workspace (outside `target/`).
fn newer_than_sources(bin: &Path, root: &Path) -> bool {
    let Some(built) = modified(bin) else {
        return false;
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(
                    name.as_ref(),
                    "target" | ".git" | "docs" | "runs" | "results"
                ) {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".toml") || name == "Cargo.lock" {
                match modified(&path) {
                    Some(t) if t <= built => {}
                    _ => return false,
                }
            }
        }
    }
    true
}
