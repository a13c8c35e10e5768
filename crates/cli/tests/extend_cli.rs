//! `klrl train --resume DIR --set …`: extending a finished run to more steps
//! equals an uninterrupted run (without annealing), an annealed schedule is
//! rescaled to the new total, learning rates may change, and every field that
//! would break the run is refused with exit status 2, leaving the run
//! directory byte for byte as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{run, temp_dir};

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CartPole PPO, 2 envs × 64 steps = 128 steps per update: 4096 steps are
/// 32 updates.
const SMALL: &str = r#"
[env]
name = "CartPole-v1"

[train]
total_steps = 4096
n_envs = 2
n_steps = 64
seed = 5

[policy]
hidden = [16, 16]

[algo]
name = "ppo"
objective = "kl_adaptive"
n_epochs = 2
minibatch_size = 64

[run]
checkpoint_every = 8
eval_episodes = 2
"#;

/// metrics.csv as (header, rows) without the wall-clock column.
fn metrics(run: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let mut header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let w = header.iter().position(|h| h == "wall_s").unwrap();
    header.remove(w);
    let rows = lines
        .map(|l| {
            let mut r: Vec<String> = l.split(',').map(String::from).collect();
            r.remove(w);
            r
        })
        .collect();
    (header, rows)
}

fn column(run: &Path, name: &str) -> Vec<String> {
    let (header, rows) = metrics(run);
    let j = header.iter().position(|h| h == name).unwrap();
    rows.into_iter().map(|r| r[j].clone()).collect()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The parameters and optimiser state of a checkpoint (without the wall clock).
fn tensors(ckpt: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for f in [
        "policy.safetensors",
        "value.safetensors",
        "state.safetensors",
    ] {
        let data = std::fs::read(ckpt.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        for (name, view) in st.tensors() {
            if name != "run.wall_s" {
                out.insert(format!("{f}/{name}"), view.data().to_vec());
            }
        }
    }
    out
}

#[test]
fn extending_a_finished_run_equals_an_uninterrupted_run() {
    let dir = temp_dir("extend");
    std::fs::write(dir.join("c.toml"), SMALL).unwrap();
    ok(&run(
        &[
            "train",
            "c.toml",
            "--out",
            "full",
            "--set",
            "train.total_steps=8192",
        ],
        &dir,
    ));
    ok(&run(&["train", "c.toml", "--out", "ext"], &dir));
    let ext = dir.join("ext");
    assert_eq!(summary(&ext)["env_steps"], 4096);
    assert_eq!(metrics(&ext).1.len(), 32);

    let out = run(
        &[
            "train",
            "--resume",
            "ext",
            "--set",
            "train.total_steps=8192",
        ],
        &dir,
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resuming ext at update 32 (4096 of 8192 steps)"),
        "{err}"
    );
    // The rows of the first 4096 steps stay, the next 32 follow, and all 64
    // equal the uninterrupted run's (wall clock aside).
    let full = dir.join("full");
    assert_eq!(metrics(&ext).1.len(), 64);
    assert_eq!(metrics(&ext), metrics(&full));
    let last = "checkpoints/update-00000064";
    assert!(
        tensors(&ext.join(last)) == tensors(&full.join(last)),
        "parameters or optimiser state differ"
    );
    // The amended config is saved (the same text as a run made for 8192),
    // so a later resume sees it; the summary is rewritten; TensorBoard goes
    // on in a new segment.
    assert_eq!(
        std::fs::read_to_string(ext.join("config.toml")).unwrap(),
        std::fs::read_to_string(full.join("config.toml")).unwrap()
    );
    let (s, f) = (summary(&ext), summary(&full));
    assert_eq!(s["env_steps"], 8192);
    assert_eq!(s["updates"], 64);
    assert_eq!(s["eval"], f["eval"]);
    assert_eq!(s["final_ep_return_mean"], f["final_ep_return_mean"]);
    assert!(ext.join("tb/1").is_dir());
    let before = metrics(&ext);
    ok(&run(&["train", "--resume", "ext"], &dir));
    assert_eq!(metrics(&ext), before, "a plain resume of the extended run");

    // A new learning rate is used from the resume on; the run's steps
    // already taken are a floor for total_steps.
    ok(&run(
        &[
            "train",
            "--resume",
            "ext",
            "--set",
            "train.total_steps=8704",
            "--set",
            "algo.lr=0.0001",
            "--set",
            "run.eval_episodes=0",
        ],
        &dir,
    ));
    let lr = column(&ext, "lr");
    assert_eq!(lr.len(), 68);
    assert!(lr[..64].iter().all(|l| l == "0.0003"), "{lr:?}");
    assert!(lr[64..].iter().all(|l| l == "0.0001"), "{lr:?}");
    assert_eq!(summary(&ext)["eval"], serde_json::Value::Null);
    let cfg = std::fs::read_to_string(ext.join("config.toml")).unwrap();
    assert!(cfg.contains("lr = 0.0001") && cfg.contains("total_steps = 8704"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_annealed_schedule_is_rescaled_to_the_new_total() {
    let dir = temp_dir("extend-anneal");
    let cfg = SMALL.replace(
        "minibatch_size = 64",
        "minibatch_size = 64\nlr_anneal = true",
    );
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    ok(&run(
        &[
            "train",
            "c.toml",
            "--out",
            "full",
            "--set",
            "train.total_steps=8192",
            "--set",
            "run.eval_episodes=0",
        ],
        &dir,
    ));
    ok(&run(
        &[
            "train",
            "c.toml",
            "--out",
            "ext",
            "--set",
            "run.eval_episodes=0",
        ],
        &dir,
    ));
    ok(&run(
        &[
            "train",
            "--resume",
            "ext",
            "--set",
            "train.total_steps=8192",
        ],
        &dir,
    ));
    let lr = |run: &str| -> Vec<f64> {
        column(&dir.join(run), "lr")
            .iter()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let (ext, full) = (lr("ext"), lr("full"));
    assert_eq!(ext.len(), 64);
    // Before the extension: annealed toward 0 at 4096 steps, lr·(1 − s/4096).
    for (u, &l) in ext[..32].iter().enumerate() {
        let expected = 3e-4 * (1.0 - (128 * u) as f64 / 4096.0);
        assert!(
            (l - expected).abs() < 1e-15,
            "update {u}: {l} vs {expected}"
        );
    }
    // After it: the schedule of a run planned for 8192 steps, lr·(1 − s/8192),
    // the uninterrupted run's values exactly, so it rises again at the resume.
    assert_eq!(ext[32..], full[32..]);
    assert_eq!(ext[32], 1.5e-4);
    assert!(ext[32] > ext[31]);
    // The runs differ before the extension, so they are not identical.
    assert_ne!(ext[..32], full[..32]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fields_that_would_break_the_run_are_refused_and_nothing_is_written() {
    let dir = temp_dir("extend-refuse");
    let cfg = SMALL.replace("total_steps = 4096", "total_steps = 1024");
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    ok(&run(&["train", "c.toml", "--out", "r"], &dir));
    let r = dir.join("r");
    let before = snapshot(&r);
    for (set, field) in [
        ("train.seed=6", "train.seed"),
        ("train.n_envs=4", "train.n_envs"),
        ("train.n_steps=32", "train.n_steps"),
        ("train.dtype=f64", "train.dtype"),
        ("train.normalize_obs=true", "train.normalize_obs"),
        ("train.gamma=0.9", "train.gamma"),
        ("policy.hidden=[8]", "policy.hidden"),
        ("env.name=Acrobot-v1", "env.name"),
        ("algo.name=trpo", "algo.name"),
        ("algo.kl_target=0.02", "algo.kl_target"),
        ("run.init_from=r", "run.init_from"),
        (" algo.lr = -1", "algo.lr: must be > 0"),
        ("algo.vf_lr=0.001", "unknown key `algo.vf_lr`"),
        ("train.total_steps=512", "below the 1024 steps"),
        ("train.total_steps=0", "train.total_steps"),
        ("algo.lr", "expected key=value"),
    ] {
        let out = run(&["train", "--resume", "r", "--set", set], &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains(field), "{set}: {err}");
        assert!(!err.contains("panicked"), "{set}: {err}");
        assert!(snapshot(&r) == before, "{set} changed the run directory");
    }
    // The same refusal as for every other field, for a safe one mixed in.
    let out = run(
        &[
            "train",
            "--resume",
            "r",
            "--set",
            "train.total_steps=2048",
            "--set",
            "train.seed=1",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(snapshot(&r) == before);
    // --seed and --out still do not go with --resume.
    let out = run(&["train", "--resume", "r", "--seed", "1"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(snapshot(&r) == before);
    std::fs::remove_dir_all(&dir).unwrap();
}
