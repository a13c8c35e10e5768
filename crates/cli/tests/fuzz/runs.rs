//! The small runs the file surfaces damage, trained once per surface.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A CartPole PPO run small enough to train in a fraction of a second: 6
/// updates of 2 × 64 steps, a checkpoint after every update (the newest three
/// kept), with the observation normaliser and the reward scaler so that a
/// checkpoint holds every kind of state.
pub const TINY_PPO: &str = "[env]\nname = \"CartPole-v1\"\n\
[train]\ntotal_steps = 768\nn_envs = 2\nn_steps = 64\nseed = 3\nnormalize_obs = true\nscale_rewards = true\n\
[policy]\nhidden = [8]\n\
[algo]\nname = \"ppo\"\nobjective = \"kl_adaptive\"\nmax_kl = 0.02\nn_epochs = 2\nminibatch_size = 64\n\
[run]\ncheckpoint_every = 1\nkeep_checkpoints = 3\neval_episodes = 0\ntensorboard = false\n";

/// The same rollouts with TRPO (other optimiser state).
pub const TINY_TRPO: &str = "[env]\nname = \"CartPole-v1\"\n\
[train]\ntotal_steps = 768\nn_envs = 2\nn_steps = 64\nseed = 4\n\
[policy]\nhidden = [8]\n\
[algo]\nname = \"trpo\"\nmax_kl = 0.01\nvf_epochs = 2\nvf_minibatch_size = 64\n\
[run]\ncheckpoint_every = 1\nkeep_checkpoints = 3\neval_episodes = 0\ntensorboard = false\n";

/// Train `config` (TOML text) into `dir/name` with the real binary.
pub fn train_run(dir: &Path, name: &str, config: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    let out = crate::common::run(&["train", &format!("{name}.toml"), "--out", name], dir);
    assert!(out.status.success(), "{}", crate::common::text(&out.stderr));
    fix_wall_clock(&dir.join(name).join("metrics.csv"));
    dir.join(name)
}

/// The `wall_s` column of a metrics.csv set to the update's index, so that
/// the file — and every damaged copy the fuzzing draws from it (a cut at a
/// random byte, …) — is the same on every run of the tests.
pub fn fix_wall_clock(metrics: &Path) {
    let text = std::fs::read_to_string(metrics).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let w = header.split(',').position(|c| c == "wall_s").unwrap();
    let mut out = format!("{header}\n");
    for (i, l) in lines.enumerate() {
        let mut cells: Vec<String> = l.split(',').map(String::from).collect();
        cells[w] = format!("{}.5", i + 1);
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    std::fs::write(metrics, out).unwrap();
}

/// A finished run made interrupted: its last checkpoint and summary.json
/// removed, so that a resume loads the checkpoint after update 5 and trains
/// the sixth update again.
pub fn interrupted_run(dir: &Path, name: &str, config: &str) -> PathBuf {
    let run = train_run(dir, name, config);
    std::fs::remove_dir_all(run.join("checkpoints/update-00000006")).unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    run
}

/// Every file under `dir` with its bytes, to check that a rejected input
/// changed nothing.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}
