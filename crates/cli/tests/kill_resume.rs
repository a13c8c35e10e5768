//! Runs that survive anything (issue 12): `klrl train` and `klrl compare`
//! killed with SIGKILL at many random moments — before their first
//! checkpoint, between checkpoints, while one is being written, during the
//! final evaluation and after the end — and resumed each time, again and
//! again, end bit for bit where an uninterrupted run ends (one compute
//! thread): metrics.csv without its wall-clock column, every parameter and
//! optimiser number of the final checkpoint, summary.json, and the summary
//! tables of a comparison without their wall-time column.
//!
//! The moments come from a fixed seed and are placed by the run's progress,
//! not by the clock, so that they spread over the whole run however fast or
//! busy the machine is: a random number of metrics rows, then a random
//! fraction of an update more (training, writing the row, writing a
//! checkpoint); a few in the first milliseconds, and a few after the end.

mod common;
mod seeded;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{checkpoint_tensors, klrl, temp_dir, text};
use seeded::Rng;

/// A CartPole PPO run of 60 updates with a checkpoint every third (so a kill
/// lands before the first one, between two, or while one is written), the
/// newest two kept, a final evaluation and TensorBoard files.
const TRAIN: &str = "[env]\nname = \"CartPole-v1\"\n\
[train]\ntotal_steps = 7680\nn_envs = 2\nn_steps = 64\nseed = 5\n\
[policy]\nhidden = [16, 16]\n\
[algo]\nname = \"ppo\"\nobjective = \"kl_adaptive\"\nmax_kl = 0.02\nn_epochs = 4\nminibatch_size = 64\n\
[run]\ncheckpoint_every = 3\nkeep_checkpoints = 2\neval_episodes = 3\nlog_every = 1\n";

/// Two learners of a comparison, 16 updates each, a checkpoint every other.
const PPO: &str = "[env]\nname = \"CartPole-v1\"\n\
[train]\ntotal_steps = 2048\nn_envs = 2\nn_steps = 64\n\
[policy]\nhidden = [8]\n\
[algo]\nname = \"ppo\"\nobjective = \"kl_adaptive\"\nn_epochs = 2\nminibatch_size = 64\n\
[run]\neval_episodes = 2\ncheckpoint_every = 2\n";
const TRPO: &str = "[env]\nname = \"CartPole-v1\"\n\
[train]\ntotal_steps = 2048\nn_envs = 2\nn_steps = 64\n\
[policy]\nhidden = [8]\n\
[algo]\nname = \"trpo\"\nmax_kl = 0.01\nvf_epochs = 2\nvf_minibatch_size = 64\n\
[run]\neval_episodes = 2\ncheckpoint_every = 2\n";

/// Where a kill landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    /// Before the run (or comparison) had written anything to resume from.
    BeforeStart,
    /// While it was running.
    MidRun,
    /// After it had ended by itself.
    AfterEnd,
}

/// What the kill points of one test did.
#[derive(Default)]
struct Kills {
    moments: BTreeMap<Moment, usize>,
    /// Kills that left a run directory holding only the temporary file of
    /// its config.toml (see a_run_killed_before_its_config_is_written_can_start_again).
    stuck: usize,
    /// Each kill: (delay in ms, moment, what was on disk).
    log: Vec<String>,
}

impl Kills {
    fn mid_run(&self) -> usize {
        self.moments.get(&Moment::MidRun).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.moments.values().sum()
    }

    fn report(&self, what: &str, seconds: f64) {
        eprintln!(
            "{what}: {} kill points ({} mid-run, {} before anything to resume, {} after the end; \
             {} left a directory without config.toml) in {seconds:.1} s",
            self.total(),
            self.mid_run(),
            self.moments.get(&Moment::BeforeStart).copied().unwrap_or(0),
            self.moments.get(&Moment::AfterEnd).copied().unwrap_or(0),
            self.stuck,
        );
        for l in &self.log {
            eprintln!("  {l}");
        }
    }
}

/// When to kill.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// This long after the start.
    After(Duration),
    /// This long after the run's metrics.csv files hold this many rows in
    /// all: a random moment of a random update (while it trains, writes
    /// its row, or writes a checkpoint).
    Rows(usize, Duration),
    /// Not at all: it runs to its end (the kill comes after it).
    End,
}

/// A random kill moment of a run that has `done` of its `total` rows and
/// writes a row every `row_time` or so (the uninterrupted run's wall time
/// over its rows): the delay after the chosen row is drawn within two rows'
/// time, so that the kill lands in that update or the next whatever the
/// pace of the build (a fixed 60 ms overshot the end of a run whose
/// updates had become fast, and too few kills landed mid-run).
fn trigger(rng: &mut Rng, done: usize, total: usize, row_time: Duration) -> Trigger {
    let within = (2 * row_time.as_micros()).clamp(1_000, 60_000) as usize;
    match rng.below(10) {
        0 => Trigger::After(Duration::from_micros(rng.below(12_000) as u64)),
        1 => Trigger::End,
        _ => Trigger::Rows(
            done + 1 + rng.below(total.saturating_sub(done).max(1)),
            Duration::from_micros(rng.below(within) as u64),
        ),
    }
}

/// Run `klrl args` in `cwd` and SIGKILL it at `when` unless it ended first
/// (`rows` counts its metrics rows). Returns `None` if it was killed, else
/// its exit status; its stderr goes to `log`.
fn run_and_kill(
    args: &[&str],
    cwd: &Path,
    when: Trigger,
    rows: &dyn Fn() -> usize,
    log: &Path,
) -> Option<i32> {
    let mut child = klrl()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(File::create(log.with_extension("stdout")).unwrap())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("start klrl");
    let start = Instant::now();
    let mut deadline = match when {
        Trigger::After(d) => Some(start + d),
        _ => None,
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "klrl {args:?} hangs"
        );
        if let (None, Trigger::Rows(r, extra)) = (deadline, when) {
            if rows() >= r {
                deadline = Some(Instant::now() + extra);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            // It may have ended between the last look and the kill.
            return status.code();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Run `klrl args` in `cwd` to the end; it must succeed.
fn run_ok(args: &[&str], cwd: &Path) -> Duration {
    let start = Instant::now();
    let out = klrl().args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "klrl {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    start.elapsed()
}

/// metrics.csv without its wall-clock column, by column name.
fn metrics(path: &Path) -> Vec<Vec<String>> {
    let t = std::fs::read_to_string(path).unwrap();
    let mut lines = t.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let w = header.iter().position(|h| *h == "wall_s").unwrap();
    std::iter::once(header.iter().map(|s| s.to_string()).collect())
        .chain(lines.map(|l| l.split(',').map(String::from).collect()))
        .map(|mut r: Vec<String>| {
            r.remove(w);
            r
        })
        .collect()
}

/// Rows of metrics.csv (after the header).
fn metrics_rows(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// Every tensor of a checkpoint's safetensors files as raw bytes (without
/// the run's wall clock), and state.json without the count of TensorBoard
/// segments (one per process that worked on the run).
fn checkpoint(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = checkpoint_tensors(dir);
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("tb_segments");
    out.insert("state.json".into(), meta.to_string().into_bytes());
    out
}

/// The checkpoint directories of a run, sorted.
fn checkpoint_names(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("update-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// summary.json without wall time and paths.
fn summary(run: &Path) -> serde_json::Value {
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for k in ["wall_s", "run_dir", "checkpoint"] {
        s.as_object_mut().unwrap().remove(k);
    }
    s
}

/// Assert that the run `b` ended exactly as the run `a`.
fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(
        metrics(&a.join("metrics.csv")),
        metrics(&b.join("metrics.csv")),
        "{} metrics.csv",
        b.display()
    );
    let names = checkpoint_names(a);
    assert_eq!(names, checkpoint_names(b), "{} checkpoints", b.display());
    for n in &names {
        let (x, y) = (
            checkpoint(&a.join("checkpoints").join(n)),
            checkpoint(&b.join("checkpoints").join(n)),
        );
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "{} {n}",
            b.display()
        );
        for (k, v) in &x {
            assert!(v == &y[k], "{} {n}: {k} differs", b.display());
        }
    }
    assert_eq!(summary(a), summary(b), "{} summary.json", b.display());
}

/// summary.md's table rows without the wall-time column (the last), and
/// its list of runs.
fn summary_tables(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("summary.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('|') || l.starts_with("- `"))
        .map(|l| {
            if !l.starts_with('|') {
                return l.to_string();
            }
            let mut cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            cells.pop();
            cells.join("|")
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn train_killed_at_random_moments_resumes_to_the_uninterrupted_run() {
    let start = Instant::now();
    let dir = temp_dir("kill-train");
    std::fs::write(dir.join("c.toml"), TRAIN).unwrap();
    let full = run_ok(&["train", "c.toml", "--out", "full"], &dir);
    let updates = 60;
    let mut rng = Rng::new(0x6b69_6c6c_0001);
    let mut kills = Kills::default();
    let mut chain = 0;
    // Chains of kills and resumes until 40 kills have landed mid-run.
    while kills.mid_run() < 40 {
        if chain == 40 {
            kills.report("train", start.elapsed().as_secs_f64());
            panic!("too few kills land mid-run");
        }
        let run = format!("k{chain}");
        let run_dir = dir.join(&run);
        let err = dir.join(format!("{run}.stderr"));
        let mut ended = false;
        for attempt in 0..6 {
            let started = run_dir.join("config.toml").is_file();
            if run_dir.exists() && !started {
                // Killed between creating the directory and writing its
                // config.toml: `train --out` refuses a non-empty directory
                // and `--resume` one without a config (a bug, tested in
                // a_run_killed_before_its_config_is_written_can_start_again);
                // only temporary files can be there, so start again.
                let left: Vec<_> = std::fs::read_dir(&run_dir)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                kills.log.push(format!(
                    "{run}: killed before config.toml was in place, left {left:?}"
                ));
                kills.stuck += 1;
                std::fs::remove_dir_all(&run_dir).unwrap();
            }
            let args: Vec<&str> = if started {
                vec!["train", "--resume", &run]
            } else {
                vec!["train", "c.toml", "--out", &run]
            };
            let metrics_file = run_dir.join("metrics.csv");
            let row_time = full / updates as u32;
            let when = trigger(&mut rng, metrics_rows(&metrics_file), updates, row_time);
            let status = run_and_kill(&args, &dir, when, &|| metrics_rows(&metrics_file), &err);
            let rows = metrics_rows(&metrics_file);
            let moment = match status {
                Some(0) => Moment::AfterEnd,
                Some(c) => panic!(
                    "klrl {args:?} exited with {c}: {}\nits standard output (a comparison's failed runs are listed there):\n{}",
                    std::fs::read_to_string(&err).unwrap(),
                    std::fs::read_to_string(err.with_extension("stdout")).unwrap_or_default()
                ),
                None if !run_dir.join("config.toml").is_file() => Moment::BeforeStart,
                None => Moment::MidRun,
            };
            *kills.moments.entry(moment).or_default() += 1;
            kills.log.push(format!(
                "{run} attempt {attempt}: {} killed at {when:?}: {moment:?}, {rows} rows, checkpoints {:?}",
                args[1],
                checkpoint_names(&run_dir)
            ));
            if moment == Moment::AfterEnd {
                ended = true;
                break;
            }
        }
        // Resume to the end (a finished run: the resume keeps it).
        if ended || run_dir.join("config.toml").is_file() {
            run_ok(&["train", "--resume", &run], &dir);
        } else {
            let _ = std::fs::remove_dir_all(&run_dir);
            run_ok(&["train", "c.toml", "--out", &run], &dir);
        }
        assert_same_run(&dir.join("full"), &run_dir);
        chain += 1;
    }
    kills.report(
        &format!(
            "train ({chain} runs, uninterrupted {:.2} s)",
            full.as_secs_f64()
        ),
        start.elapsed().as_secs_f64(),
    );
    assert!(kills.mid_run() >= 40);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn compare_killed_at_random_moments_resumes_to_the_uninterrupted_tables() {
    let start = Instant::now();
    let dir = temp_dir("kill-compare");
    std::fs::write(dir.join("ppo.toml"), PPO).unwrap();
    std::fs::write(dir.join("trpo.toml"), TRPO).unwrap();
    let sweep = |out: &str| -> Vec<String> {
        [
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "2",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let full_args = sweep("full");
    let full = run_ok(
        &full_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &dir,
    );
    let runs = ["ppo-s0", "ppo-s1", "trpo-s0", "trpo-s1"];
    let rows = |out: &Path| -> usize {
        runs.iter()
            .map(|r| metrics_rows(&out.join("runs").join(r).join("metrics.csv")))
            .sum()
    };
    let mut rng = Rng::new(0x6b69_6c6c_0002);
    let mut kills = Kills::default();
    let mut chain = 0;
    while kills.mid_run() < 25 {
        if chain == 30 {
            kills.report("compare", start.elapsed().as_secs_f64());
            panic!("too few kills land mid-run");
        }
        let out = format!("k{chain}");
        let out_dir = dir.join(&out);
        let err = dir.join(format!("{out}.stderr"));
        for attempt in 0..6 {
            let started = out_dir.join("compare.json").is_file();
            // The first time the command itself; then, at random, the same
            // command with --resume or `compare --resume DIR` alone.
            let args: Vec<String> = if attempt == 0 {
                sweep(&out)
            } else if started && rng.chance(0.5) {
                vec!["compare".into(), "--resume".into(), out.clone()]
            } else {
                let mut a = sweep(&out);
                a.push("--resume".into());
                a
            };
            let when = trigger(&mut rng, rows(&out_dir), 64, full / 64);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let status = run_and_kill(&argv, &dir, when, &|| rows(&out_dir), &err);
            let moment = match status {
                Some(0) => Moment::AfterEnd,
                Some(c) => panic!(
                    "klrl {args:?} exited with {c}: {}\nits standard output (a comparison's failed runs are listed there):\n{}",
                    std::fs::read_to_string(&err).unwrap(),
                    std::fs::read_to_string(err.with_extension("stdout")).unwrap_or_default()
                ),
                None if !out_dir.join("compare.json").is_file() => Moment::BeforeStart,
                None => Moment::MidRun,
            };
            *kills.moments.entry(moment).or_default() += 1;
            kills.log.push(format!(
                "{out} attempt {attempt}: {} killed at {when:?}: {moment:?}, {} rows",
                if attempt == 0 {
                    "compare"
                } else {
                    "compare --resume"
                },
                rows(&out_dir)
            ));
            if moment == Moment::AfterEnd {
                break;
            }
        }
        // Finish (a finished sweep: the resume keeps it).
        run_ok(&["compare", "--resume", &out], &dir);
        assert_eq!(
            summary_tables(&dir.join("full")),
            summary_tables(&out_dir),
            "{out} summary.md"
        );
        for r in runs {
            assert_same_run(
                &dir.join("full/runs").join(r),
                &out_dir.join("runs").join(r),
            );
        }
        chain += 1;
    }
    kills.report(
        &format!(
            "compare ({chain} sweeps, uninterrupted {:.2} s)",
            full.as_secs_f64()
        ),
        start.elapsed().as_secs_f64(),
    );
    assert!(kills.mid_run() >= 25);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run killed after creating its directory but before its config.toml
/// was renamed into place leaves only `.config.toml.tmp-*` behind: `klrl
/// train --out DIR` then refuses the directory (not empty) and `klrl train
/// --resume DIR` too (no config.toml), so the run can neither start again
/// nor resume without deleting the directory by hand. (`klrl compare`
/// handles the same state: a run directory without config.toml is removed
/// and started again.) Expected: one of the two proceeds.
#[test]

fn a_run_killed_before_its_config_is_written_can_start_again() {
    let dir = temp_dir("kill-before-config");
    std::fs::write(
        dir.join("c.toml"),
        TRAIN.replace("total_steps = 7680", "total_steps = 256"),
    )
    .unwrap();
    // What the kill leaves: the directory, and write_atomic's temporary file.
    std::fs::create_dir(dir.join("r")).unwrap();
    std::fs::write(
        dir.join("r/.config.toml.tmp-0123456789abcdef"),
        "[env]\nname = \"Cart",
    )
    .unwrap();
    let again = klrl()
        .args(["train", "c.toml", "--out", "r"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let resume = klrl()
        .args(["train", "--resume", "r"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        again.status.success() || resume.status.success(),
        "--out: {}--resume: {}",
        text(&again.stderr),
        text(&resume.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
