//! `examples/own_program.rs`, the whole klrl program with a custom
//! environment (`Corridor-v0`) registered next to the built-ins: `train`,
//! `eval`, `compare` and `envs` run through that binary on the custom
//! environment, and their outputs are read back (run directory, metrics.csv,
//! eval JSON, compare summary).

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "klrl-own-program-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the example binary with `args` (from the workspace root).
fn own_program(args: &[&str]) -> Output {
    common::example("own_program")
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .expect("run the example")
}

fn ok(args: &[&str]) -> String {
    let out = own_program(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// metrics.csv: the header and the rows.
fn metrics(run: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn train_eval_and_compare_run_on_the_custom_environment() {
    let dir = temp_dir("all");
    let config = "configs/own-program-corridor.toml";
    let cfg: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    let total_steps = cfg["train"]["total_steps"].as_integer().unwrap() as u64;
    let batch = (cfg["train"]["n_envs"].as_integer().unwrap()
        * cfg["train"]["n_steps"].as_integer().unwrap()) as u64;
    let length = cfg["env"]["params"]["length"].as_integer().unwrap() as f64;

    // train: a complete run directory for Corridor-v0.
    let run = dir.join("run");
    let stdout = ok(&["train", config, "--out", s(&run)]);
    assert!(stdout.contains("run directory:"), "{stdout}");
    for file in [
        "config.toml",
        "metrics.csv",
        "summary.json",
        "checkpoints",
        "tb",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let saved: toml::Table = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(saved["env"]["name"].as_str(), Some("Corridor-v0"));
    assert_eq!(
        saved["env"]["params"]["length"].as_integer(),
        Some(length as i64)
    );
    let (header, rows) = metrics(&run);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let updates = total_steps.div_ceil(batch);
    assert_eq!(rows.len() as u64, updates);
    let last_steps: u64 = rows.last().unwrap()[col("env_steps")].parse().unwrap();
    assert_eq!(last_steps, updates * batch);
    // The policy moved, by a finite KL per update (the exact KL, computed in
    // f32, may round to a hair below 0 on an update that hardly moved it).
    let kls: Vec<f64> = rows
        .iter()
        .map(|r| r[col("kl_old_new")].parse().unwrap())
        .collect();
    assert!(kls.iter().all(|k| k.is_finite()), "{kls:?}");
    assert!(kls.iter().any(|&k| k > 1e-4), "{kls:?}");

    // eval: every deterministic episode walks to the goal. Such an episode of
    // L steps returns 1 − 0.1·(L − 1), so the means satisfy
    // mean_return = 1.1 − 0.1·mean_length exactly (up to rounding), and the
    // starts 0..length/2 put L in [length/2 + 1, length]; a walker that fails
    // the 50-step limit would return −5.
    let text = ok(&[
        "eval",
        s(&run),
        "--deterministic",
        "--episodes",
        "20",
        "--json",
    ]);
    let e: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(e["episodes"], 20);
    assert_eq!(e["deterministic"], true);
    let (ret, len) = (
        e["mean_return"].as_f64().unwrap(),
        e["mean_length"].as_f64().unwrap(),
    );
    assert!((ret - (1.1 - 0.1 * len)).abs() < 1e-9, "{e}");
    assert!((length / 2.0 + 1.0..=length).contains(&len), "{e}");

    // compare: two learners × two seeds on Corridor-v0.
    let cmp = dir.join("cmp");
    let trpo = "configs/own-program-corridor-trpo.toml";
    let stdout = ok(&["compare", config, trpo, "--seeds", "2", "--out", s(&cmp)]);
    assert!(
        stdout.contains("training 4 runs (2 configs × 2 seeds)"),
        "{stdout}"
    );
    let summary = std::fs::read_to_string(cmp.join("summary.md")).unwrap();
    assert!(summary.contains("2 configs × 2 seeds"), "{summary}");
    for (label, algo) in [
        ("own-program-corridor", "ppo (kl_adaptive)"),
        ("own-program-corridor-trpo", "trpo"),
    ] {
        assert!(
            summary.contains(&format!("| {label} | {algo} | 2 |")),
            "{label} row missing:\n{summary}"
        );
        for seed in 0..2 {
            let run = cmp.join("runs").join(format!("{label}-s{seed}"));
            let (_, rows) = metrics(&run);
            assert_eq!(rows.len() as u64, updates, "{}", run.display());
        }
    }
    for png in ["return.png", "kl.png"] {
        assert!(
            std::fs::metadata(cmp.join(png)).unwrap().len() > 1000,
            "{png}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn envs_lists_and_checks_the_custom_environment() {
    let list = ok(&["envs"]);
    assert!(list.contains("CartPole-v1\n"), "{list}");
    assert!(list.contains("Corridor-v0\n    Walk right"), "{list}");
    let check = ok(&["envs", "--check", "Corridor-v0"]);
    assert!(
        check.starts_with("check of Corridor-v0 (seed 0, 1000 steps): 9 passed"),
        "{check}"
    );
    // Its parameters are checked like a built-in's: exit 2, naming them.
    let out = own_program(&[
        "train",
        "configs/own-program-corridor.toml",
        "--set",
        "env.params.length=1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Corridor-v0: invalid parameter `length`: must be at least 2, got 1"),
        "{err}"
    );
}
