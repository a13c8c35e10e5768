//! Numerical faults through the program: absurd learning rates never exit
//! 101 and never write a non-finite value into a checkpoint; a run that keeps
//! diverging stops with exit status 3, the reason printed once, its last good
//! state checkpointed and resumable with a saner learning rate; metrics.csv
//! files from before the rejection columns are migrated on resume.

mod common;

use std::path::Path;

use common::{run, temp_dir, text};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn config(name: &str) -> String {
    Path::new(ROOT)
        .join("../../configs")
        .join(name)
        .display()
        .to_string()
}

/// The cells of column `name` of `dir/metrics.csv`.
fn column(dir: &Path, name: &str) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == name).expect(name);
    lines
        .map(|l| l.split(',').nth(at).unwrap_or("").to_string())
        .collect()
}

/// `klrl eval` loads the newest checkpoint, refusing any non-finite tensor.
fn evaluates(run_dir: &Path, cwd: &Path) {
    let out = run(
        &["eval", &run_dir.display().to_string(), "--episodes", "1"],
        cwd,
    );
    assert!(out.status.success(), "eval: {}", text(&out.stderr));
}

#[test]
fn a_diverging_run_stops_with_status_3_and_resumes_with_a_saner_learning_rate() {
    let tmp = temp_dir("diverge");
    let dir = tmp.join("run");
    let d = dir.display().to_string();
    let out = run(
        &[
            "train",
            &config("cartpole-ppo-clip.toml"),
            "--out",
            &d,
            "--set",
            "train.total_steps=5120",
            "--set",
            "algo.lr=3e38",
            "--set",
            "run.eval_episodes=0",
        ],
        &tmp,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(
        err.matches("updates in a row rejected").count(),
        1,
        "the reason once: {err}"
    );
    assert!(err.contains("train.max_rejected_updates"), "{err}");
    assert!(err.contains("warning: update 0 rejected"), "{err}");
    // Five rejected updates (the default limit), each counted.
    let rejected = column(&dir, "rejected");
    assert_eq!(rejected, vec!["1"; 5], "{rejected:?}");
    evaluates(&dir, &tmp);
    // The learning rate is amendable; the amended run gets a fresh allowance.
    let out = run(
        &[
            "train",
            "--resume",
            &d,
            "--set",
            "algo.lr=3e-4",
            "--set",
            "run.eval_episodes=0",
        ],
        &tmp,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rejected = column(&dir, "rejected");
    assert_eq!(rejected.len(), 20);
    assert!(rejected[5..].iter().all(|r| r == "0"), "{rejected:?}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// The example, `--set algo.lr=1e4`, on a discrete and a continuous
/// task: the run finishes with its rejections counted or stops with status
/// 3; either way every checkpoint it left loads.
#[test]
fn a_learning_rate_of_1e4_finishes_or_stops_cleanly() {
    let tmp = temp_dir("lr1e4");
    for (i, file) in ["cartpole-ppo-clip.toml", "pendulum-ppo-gsde.toml"]
        .iter()
        .enumerate()
    {
        let dir = tmp.join(format!("run{i}"));
        let out = run(
            &[
                "train",
                &config(file),
                "--out",
                &dir.display().to_string(),
                "--set",
                "train.total_steps=8192",
                "--set",
                "algo.lr=1e4",
                "--set",
                "run.eval_episodes=2",
            ],
            &tmp,
        );
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "{file}: {code:?} {}",
            text(&out.stderr)
        );
        evaluates(&dir, &tmp);
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// A run whose metrics.csv lacks the newer columns (written by an earlier
/// klrl) resumes: the file is rewritten with every column, the old rows'
/// new cells empty.
#[test]
fn an_older_metrics_file_is_migrated_on_resume() {
    let tmp = temp_dir("migrate");
    let dir = tmp.join("run");
    let d = dir.display().to_string();
    let first = run(
        &[
            "train",
            &config("cartpole-ppo-clip.toml"),
            "--out",
            &d,
            "--set",
            "train.total_steps=1024",
            "--set",
            "run.eval_episodes=0",
        ],
        &tmp,
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    // Drop the last two columns, as klrl wrote the file before them.
    let path = dir.join("metrics.csv");
    let csv = std::fs::read_to_string(&path).unwrap();
    let old: String = csv
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            format!("{}\n", cells[..cells.len() - 2].join(","))
        })
        .collect();
    std::fs::write(&path, old).unwrap();
    let out = run(
        &[
            "train",
            "--resume",
            &d,
            "--set",
            "train.total_steps=2048",
            "--set",
            "run.eval_episodes=0",
        ],
        &tmp,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rejected = column(&dir, "rejected");
    assert_eq!(rejected.len(), 8);
    assert!(rejected[..4].iter().all(|r| r.is_empty()), "{rejected:?}");
    assert!(rejected[4..].iter().all(|r| r == "0"), "{rejected:?}");
    let header = std::fs::read_to_string(&path).unwrap();
    let header = header.lines().next().unwrap();
    assert!(header.ends_with("rejected,rejected_steps"), "{header}");
    std::fs::remove_dir_all(&tmp).ok();
}
