//! `klrl train` with gSDE: bad gSDE settings exit 2 naming the field and
//! write nothing; a gSDE run killed with SIGKILL and resumed ends with
//! bit-identical parameters, optimiser state and metrics to an
//! uninterrupted one (every rollout draws its noise matrices afresh from the
//! checkpointed RNG, so no noise state needs saving).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{checkpoint_tensors, klrl, run, temp_dir, text};

/// A small Pendulum PPO config with gSDE: 2 envs × 32 steps per update, the
/// noise redrawn every 4 steps.
const SMALL: &str = r#"
[env]
name = "Pendulum-v1"

[train]
total_steps = 1280
n_envs = 2
n_steps = 32
gamma = 0.9
normalize_obs = true
seed = 5

[policy]
hidden = [16, 16]
use_sde = true
sde_sample_freq = 4
log_std_init = -1.0

[algo]
name = "ppo"
objective = "clip"
n_epochs = 1
minibatch_size = 64

[run]
checkpoint_every = 4
eval_episodes = 2
"#;

#[test]
fn bad_gsde_settings_exit_2_naming_the_field_and_write_nothing() {
    let dir = temp_dir("bad");
    let cases = [
        (
            SMALL.replace("sde_sample_freq = 4", "sde_sample_freq = 0"),
            "policy.sde_sample_freq: must be >= 1 or -1, got 0",
        ),
        (
            SMALL.replace("log_std_init = -1.0", "log_std_init = nan"),
            "policy.log_std_init: must be finite, got NaN",
        ),
        (
            SMALL.replace("Pendulum-v1", "CartPole-v1"),
            "policy.use_sde: a state-dependent σ needs continuous (Box) actions; \
             CartPole-v1 has Discrete(2)",
        ),
        (
            SMALL.replace("Pendulum-v1", "CartPole-v1").replace(
                "use_sde = true\nsde_sample_freq = 4",
                "state_dependent_std = true",
            ),
            "policy.state_dependent_std: a state-dependent σ needs continuous (Box) actions",
        ),
        (
            SMALL.replace("use_sde = true", "use_sde = false"),
            "policy.sde_sample_freq: only policy.use_sde = true uses it",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let name = format!("c{i}.toml");
        std::fs::write(dir.join(&name), body).unwrap();
        for out_dir in [None, Some("never")] {
            let mut args = vec!["train", name.as_str()];
            if let Some(o) = out_dir {
                args.extend(["--out", o]);
            }
            let out = run(&args, &dir);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {err}");
            assert!(
                err.contains(&format!("{name}: {expected}")),
                "{name}: expected `{expected}` in\n{err}"
            );
            assert!(!dir.join("runs").exists(), "{name} created runs/");
            assert!(!dir.join("never").exists(), "{name} created --out");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn checkpoint_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("update-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn metrics_without_time(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let w = header.iter().position(|h| *h == "wall_s").unwrap();
    lines
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(w);
            cells.join(",")
        })
        .collect()
}

#[test]
fn gsde_sigkill_then_resume_matches_an_uninterrupted_run_bit_for_bit() {
    let dir = temp_dir("resume");
    // 1024 updates with a progress line after each (~100 KB, more than a pipe
    // holds): the killed run, whose stdout is never read, blocks before its
    // end however fast the machine is (as in train_cli.rs).
    let cfg = SMALL
        .replace("total_steps = 1280", "total_steps = 65536")
        .replace(
            "checkpoint_every = 4",
            "checkpoint_every = 16\nlog_every = 1",
        );
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    let out = run(&["train", "c.toml", "--out", "full"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.len() > 65_536, "{} bytes", out.stdout.len());

    let mut child = klrl()
        .args(["train", "c.toml", "--out", "killed"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpts = dir.join("killed/checkpoints");
    let start = Instant::now();
    while checkpoint_names(&ckpts).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    drop(child.stdout.take());
    assert!(!status.success(), "the run finished before it was killed");

    let out = run(&["train", "--resume", "killed"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last = "checkpoints/update-00001024";
    let a = checkpoint_tensors(&dir.join("full").join(last));
    let b = checkpoint_tensors(&dir.join("killed").join(last));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "{k} differs after resume");
    }
    // gSDE's [latent, d] log σ is among the saved parameters
    assert!(a.contains_key("policy.safetensors/policy.log_std"));
    assert_eq!(
        metrics_without_time(&dir.join("full/metrics.csv")),
        metrics_without_time(&dir.join("killed/metrics.csv"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
