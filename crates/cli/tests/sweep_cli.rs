//! `klrl compare --shard I/N` and `--resume`: two shards run as separate
//! processes into one directory give the same summary as one unsharded
//! sweep; `--plot-only` flags runs not started or not finished; a sweep
//! killed with SIGKILL at a random moment and resumed ends with the same
//! tables (and metrics) as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{klrl, run, temp_dir};

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PPO: &str = "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 2048\nn_envs = 2\nn_steps = 64\n\
[policy]\nhidden = [8]\n[algo]\nname = \"ppo\"\nobjective = \"kl_adaptive\"\nn_epochs = 2\nminibatch_size = 64\n\
[run]\neval_episodes = 0\ncheckpoint_every = 2\n";
const TRPO: &str = "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 2048\nn_envs = 2\nn_steps = 64\n\
[policy]\nhidden = [8]\n[algo]\nname = \"trpo\"\nmax_kl = 0.01\nvf_epochs = 2\nvf_minibatch_size = 64\n\
[run]\neval_episodes = 0\ncheckpoint_every = 2\n";

/// summary.md's table rows without the wall-clock column (the last), and
/// its list of runs.
fn rows(dir: &Path) -> (Vec<String>, Vec<String>) {
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    let table = md
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            let mut cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            cells.pop();
            cells.join("|")
        })
        .collect();
    let runs = md
        .lines()
        .filter(|l| l.starts_with("- `"))
        .map(String::from)
        .collect();
    (table, runs)
}

/// metrics.csv without the wall-clock column.
fn metrics(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let w = header.iter().position(|h| *h == "wall_s").unwrap();
    text.lines()
        .map(|l| {
            let mut c: Vec<&str> = l.split(',').collect();
            c.remove(w);
            c.join(",")
        })
        .collect()
}

const RUNS: [&str; 4] = ["ppo-s0", "ppo-s1", "trpo-s0", "trpo-s1"];

fn setup(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("ppo.toml"), PPO).unwrap();
    std::fs::write(dir.join("trpo.toml"), TRPO).unwrap();
    let out = run(
        &[
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "2",
            "--out",
            "one",
        ],
        &dir,
    );
    ok(&out);
    dir
}

#[test]
fn two_shards_in_separate_processes_equal_one_sweep() {
    let dir = setup("shards");
    let shard = |i: u64| {
        klrl()
            .args([
                "compare",
                "ppo.toml",
                "trpo.toml",
                "--seeds",
                "2",
                "--out",
                "two",
                "--shard",
                &format!("{i}/2"),
            ])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both at once, into the same directory.
    let (a, b) = (shard(0), shard(1));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    let two = dir.join("two");
    // Task j goes to shard j mod 2: ppo-s0 and trpo-s0 to shard 0.
    assert!(String::from_utf8_lossy(&a.stdout).contains("ppo seed 0:"));
    assert!(String::from_utf8_lossy(&a.stdout).contains("trpo seed 0:"));
    assert!(String::from_utf8_lossy(&b.stdout).contains("ppo seed 1:"));
    // A shard writes no summary: --plot-only merges them.
    assert!(!two.join("summary.md").exists());
    let out = run(&["compare", "--plot-only", "two"], &dir);
    ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = dir.join("one");
    assert_eq!(rows(&two), rows(&one));
    assert_eq!(rows(&one).0.len(), 4, "header, separator, two configs");
    for r in RUNS {
        let p = format!("runs/{r}");
        assert_eq!(metrics(&two.join(&p)), metrics(&one.join(&p)), "{r}");
    }
    assert_eq!(
        std::fs::read(two.join("compare.json")).unwrap(),
        std::fs::read(one.join("compare.json")).unwrap()
    );

    // A run missing and one unfinished: flagged on stderr and in the summary,
    // left out of the tables.
    std::fs::remove_dir_all(two.join("runs/ppo-s1")).unwrap();
    std::fs::remove_file(two.join("runs/trpo-s0/summary.json")).unwrap();
    let out = run(&["compare", "--plot-only", "two"], &dir);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 runs are incomplete"), "{err}");
    assert!(err.contains("runs/ppo-s1 (not started)"), "{err}");
    assert!(
        err.contains("runs/trpo-s0 (stopped at 2048 of 2048 steps)"),
        "{err}"
    );
    let md = std::fs::read_to_string(two.join("summary.md")).unwrap();
    assert!(
        md.contains("**Incomplete: 2 of 4 runs are not in the tables**"),
        "{md}"
    );
    let (table, _) = rows(&two);
    assert_eq!(table[2].split('|').nth(2), Some("1"), "ppo: one seed");

    // Rerunning a shard needs --resume; with it, only the missing part runs.
    let shard1 = [
        "compare",
        "ppo.toml",
        "trpo.toml",
        "--seeds",
        "2",
        "--out",
        "two",
        "--shard",
        "1/2",
    ];
    let out = run(&shard1, &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    let mut args = shard1.to_vec();
    args.push("--resume");
    let out = run(&args, &dir);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("trpo seed 1: finished before, kept"));
    // Shard 0 from compare.json alone, from another directory.
    let out = run(
        &["compare", "--resume", "..", "--shard", "0/2"],
        &two.join("runs"),
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ppo seed 0: finished before, kept"));
    let out = run(&["compare", "--plot-only", "two"], &dir);
    ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows(&two), rows(&one));

    // Another comparison into the same directory, and bad shards: exit 2.
    let before = std::fs::read(two.join("compare.json")).unwrap();
    for args in [
        vec![
            "compare", "ppo.toml", "--seeds", "2", "--out", "two", "--shard", "0/2",
        ],
        vec![
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "3",
            "--out",
            "two",
            "--resume",
        ],
        vec!["compare", "ppo.toml", "--out", "x", "--shard", "2/2"],
        vec!["compare", "ppo.toml", "--out", "x", "--shard", "0/0"],
        vec!["compare", "ppo.toml", "--out", "x", "--shard", "a"],
        vec!["compare", "--resume", "nowhere"],
        vec!["compare", "--resume"],
    ] {
        let out = run(&args, &dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
    assert_eq!(std::fs::read(two.join("compare.json")).unwrap(), before);
    assert!(!dir.join("x").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sweep_killed_at_a_random_moment_resumes_to_the_same_tables() {
    let dir = setup("sweep-kill");
    // A random moment: after a random number of metrics rows (of 16 per
    // run) of a random run, the four run one after another (--jobs 1). A
    // fast machine may finish first; the resume must then keep everything.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let (target, rows_wanted) = (RUNS[nanos % 4], 1 + (nanos / 4) % 16);
    let mut child = klrl()
        .args([
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "2",
            "--out",
            "k",
            "--jobs",
            "1",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics_rows = |r: &str| {
        std::fs::read_to_string(dir.join("k/runs").join(r).join("metrics.csv"))
            .map_or(0, |t| t.lines().count().saturating_sub(1))
    };
    let start = Instant::now();
    while metrics_rows(target) < rows_wanted && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    eprintln!("killed at {rows_wanted} rows of {target}");

    let out = run(&["compare", "--resume", "k"], &dir);
    ok(&out);
    let (k, one) = (dir.join("k"), dir.join("one"));
    assert_eq!(rows(&k), rows(&one));
    for r in RUNS {
        let p = format!("runs/{r}");
        assert_eq!(metrics(&k.join(&p)), metrics(&one.join(&p)), "{r}");
    }
    // Resuming a finished sweep keeps everything.
    let out = run(
        &[
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "2",
            "--out",
            "k",
            "--resume",
        ],
        &dir,
    );
    ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("finished before, kept")
            .count(),
        4
    );
    assert_eq!(rows(&k), rows(&one));
    std::fs::remove_dir_all(&dir).unwrap();
}
