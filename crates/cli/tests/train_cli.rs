//! `klrl train`, `klrl eval` and `klrl train --resume`, running the real
//! binary: the run directory, metrics.csv, TensorBoard read back with an
//! independent TFRecord/protobuf reader, checkpoints, SIGKILL and resume to
//! bit-identical parameters, Ctrl-C, and every class of bad config.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{checkpoint_tensors, klrl, run, temp_dir, text};

/// A small CartPole PPO config: 2 envs × 64 steps per update.
const SMALL: &str = r#"
[env]
name = "CartPole-v1"

[train]
total_steps = 1280
n_envs = 2
n_steps = 64
seed = 3

[policy]
hidden = [16, 16]

[algo]
name = "ppo"
objective = "kl_adaptive"
n_epochs = 2
minibatch_size = 64

[run]
checkpoint_every = 4
eval_episodes = 3
"#;

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let t = std::fs::read_to_string(path).unwrap();
    let mut lines = t.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn train_writes_a_complete_run_directory_and_eval_reads_it() {
    let dir = temp_dir("train");
    std::fs::write(dir.join("small.toml"), SMALL).unwrap();
    let out = run(
        &[
            "train",
            "small.toml",
            "--out",
            "r",
            "--set",
            "run.log_every=2",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("run directory: r"), "{stdout}");
    assert!(stdout.contains("tensorboard --logdir r/tb"), "{stdout}");
    // Not a terminal: plain progress lines every log_every updates.
    assert!(
        stdout.contains("update     2  steps      256/1280"),
        "{stdout}"
    );
    let r = dir.join("r");
    // The resolved config is a complete, valid config.
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(
        cfg.contains("hidden = [16, 16]") && cfg.contains("seed = 3"),
        "{cfg}"
    );
    // metrics.csv: one row per update, the documented columns.
    let (header, rows) = read_csv(&r.join("metrics.csv"));
    assert_eq!(
        &header[..5],
        [
            "update",
            "env_steps",
            "wall_s",
            "ep_return_mean",
            "ep_len_mean"
        ]
    );
    assert_eq!(
        header.len(),
        5 + klrl_optim::UpdateDiagnostics::COLUMNS.len()
    );
    assert_eq!(rows.len(), 10);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1], (128 * (i + 1)).to_string());
    }
    // PPO has no CG iterations: empty cells, not NaN.
    let cg = header.iter().position(|h| h == "cg_iters").unwrap();
    assert!(rows.iter().all(|r| r[cg].is_empty()));
    let kl = header.iter().position(|h| h == "kl_old_new").unwrap();
    assert!(rows.iter().all(|r| r[kl].parse::<f64>().unwrap() >= 0.0));
    // Checkpoints: the newest two (every 4 updates and at the end).
    let mut ckpts: Vec<String> = std::fs::read_dir(r.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, ["update-00000008", "update-00000010"]);
    for f in [
        "policy.safetensors",
        "value.safetensors",
        "state.safetensors",
        "state.json",
        "config.toml",
    ] {
        assert!(
            r.join("checkpoints/update-00000010").join(f).is_file(),
            "{f}"
        );
    }
    // summary.json
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["env_steps"], 1280);
    assert_eq!(summary["updates"], 10);
    assert_eq!(summary["interrupted"], false);
    assert_eq!(summary["eval"]["episodes"], 3);

    // eval: a run directory and a checkpoint; --json is one object.
    for target in ["r", "r/checkpoints/update-00000008"] {
        let out = run(
            &[
                "eval",
                target,
                "--episodes",
                "4",
                "--deterministic",
                "--json",
            ],
            &dir,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        assert_eq!(v["episodes"], 4);
        let (m, s, l) = (
            v["mean_return"].as_f64().unwrap(),
            v["std_return"].as_f64().unwrap(),
            v["mean_length"].as_f64().unwrap(),
        );
        // CartPole: reward 1 per step, so return = length.
        assert!(m >= 1.0 && s >= 0.0 && (m - l).abs() < 1e-9, "{v}");
    }
    // The final evaluation of training is the deterministic evaluation with
    // the run's default seed: eval reproduces it exactly.
    let out = run(
        &["eval", "r", "--episodes", "3", "--deterministic", "--json"],
        &dir,
    );
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["mean_return"], summary["eval"]["mean_return"]);
    // Human-readable output.
    let out = run(&["eval", "r", "--episodes", "2"], &dir);
    assert!(
        text(&out.stdout).contains("over 2 episodes (sampled)"),
        "{out:?}"
    );
    // A path that is no run: exit 2.
    let out = run(&["eval", "nowhere"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // A run directory is never reused.
    let out = run(&["train", "small.toml", "--out", "r"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_for_another_network_is_a_clear_error() {
    let dir = temp_dir("mismatch");
    std::fs::write(dir.join("small.toml"), SMALL).unwrap();
    let out = run(
        &[
            "train",
            "small.toml",
            "--out",
            "r",
            "--set",
            "run.eval_episodes=0",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ckpt = dir.join("r/checkpoints/update-00000010");
    let cfg = std::fs::read_to_string(ckpt.join("config.toml")).unwrap();
    std::fs::write(
        ckpt.join("config.toml"),
        cfg.replace("hidden = [16, 16]", "hidden = [32]"),
    )
    .unwrap();
    let out = run(&["eval", "r/checkpoints/update-00000010"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("its policy has") && err.contains("parameters, this network"),
        "{err}"
    );
    std::fs::write(
        ckpt.join("config.toml"),
        cfg.replace("CartPole-v1", "Acrobot-v1"),
    )
    .unwrap();
    let out = run(&["eval", "r/checkpoints/update-00000010"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("it is for environment CartPole-v1, not Acrobot-v1"),
        "{}",
        text(&out.stderr)
    );
    // A NaN in the policy's weights: refused at load, exit 2, naming the
    // tensor — for `eval` and for `train --resume` (which writes nothing).
    std::fs::write(ckpt.join("config.toml"), &cfg).unwrap();
    let file = ckpt.join("policy.safetensors");
    let mut data = std::fs::read(&file).unwrap();
    let offset = {
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        let view = st.tensor("policy.0.bias").unwrap();
        view.data().as_ptr() as usize - data.as_ptr() as usize
    };
    data[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&file, &data).unwrap();
    let metrics_before = std::fs::read(dir.join("r/metrics.csv")).unwrap();
    for args in [
        &["eval", "r/checkpoints/update-00000010"][..],
        &["train", "--resume", "r"][..],
    ] {
        let out = run(args, &dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("policy.0.bias") && err.contains("non-finite"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(dir.join("r/metrics.csv")).unwrap(),
        metrics_before
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configs_exit_2_with_the_reason_and_write_nothing() {
    let dir = temp_dir("bad");
    let write = |name: &str, body: &str| std::fs::write(dir.join(name), body).unwrap();
    write("small.toml", SMALL);
    write(
        "unknown_field.toml",
        &SMALL.replace("n_epochs = 2", "n_epoch = 2"),
    );
    write(
        "range.toml",
        &SMALL.replace("[run]", "[run]\nlog_every = 0"),
    );
    write(
        "trpo_range.toml",
        "[env]\nname = \"CartPole-v1\"\n[algo]\nname = \"trpo\"\nmax_kl = -0.01\n",
    );
    write("env.toml", &SMALL.replace("CartPole-v1", "CartPool-v1"));
    write(
        "env_param.toml",
        &SMALL.replace(
            "[train]",
            "[env.params]\nsutton_barto_reward = 1\n\n[train]",
        ),
    );
    write(
        "algo.toml",
        &SMALL.replace("name = \"ppo\"", "name = \"sac\""),
    );
    write("syntax.toml", &SMALL.replace("n_envs = 2", "n_envs = = 2"));
    write(
        "run_field.toml",
        &SMALL.replace("[run]", "[run]\ncheckpoint_evry = 3"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["unknown_field.toml"],
            "unknown_field.toml: algo.n_epoch: unknown field `n_epoch`",
        ),
        (
            vec!["range.toml"],
            "range.toml: run.log_every: must be >= 1, got 0",
        ),
        (
            vec!["trpo_range.toml"],
            "trpo_range.toml: algo.max_kl: must be > 0, got -0.01",
        ),
        (
            vec!["env.toml"],
            "env.toml: env.name: unknown environment `CartPool-v1`",
        ),
        (
            vec!["env_param.toml"],
            "env_param.toml: env.params: CartPole-v1: bad parameters: sutton_barto_reward",
        ),
        (vec!["algo.toml"], "unknown variant `sac`"),
        (vec!["syntax.toml"], "syntax.toml:7:10: invalid TOML"),
        (
            vec!["run_field.toml"],
            "run_field.toml: run.checkpoint_evry: unknown field `checkpoint_evry`",
        ),
        (vec!["missing.toml"], "missing.toml: cannot read the config"),
        (
            vec!["small.toml", "--set", "algo.lr"],
            "--set algo.lr: expected key=value",
        ),
        (
            vec!["small.toml", "--set", "algo.lrr=0.1"],
            "--set algo.lrr=0.1: unknown key `algo.lrr`",
        ),
        (
            vec!["small.toml", "--set", "trian.seed=1"],
            "--set trian.seed=1: unknown key `trian.seed`",
        ),
        (
            vec!["small.toml", "--set", "algo.lr=-1"],
            "small.toml: algo.lr: must be > 0, got -1",
        ),
        (
            vec!["small.toml", "--set", "train.n_envs=zero"],
            "small.toml: train.n_envs: invalid type: string \"zero\"",
        ),
        // Inside the tagged [algo] table the field is named too.
        (
            vec!["small.toml", "--set", "algo.lr=fast"],
            "small.toml: algo.lr: invalid type: string \"fast\", expected f64",
        ),
        (
            vec!["small.toml", "--set", "algo.n_epochs=1.5"],
            "small.toml: algo.n_epochs: invalid type: floating point `1.5`",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["train"];
        all.extend(&args);
        let out = run(&all, &dir);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in\n{err}"
        );
        // Nothing written: no runs/ directory appeared.
        assert!(!dir.join("runs").exists(), "{args:?} created runs/");
    }
    // With --out, the directory is not created either.
    let out = run(&["train", "range.toml", "--out", "never"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("never").exists());
    // A usage error from clap is 2 as well.
    let out = run(&["train", "--bogus"], &dir);
    assert_eq!(out.status.code(), Some(2));
    // --help has an example.
    for cmd in ["train", "eval", "compare"] {
        let out = run(&[cmd, "--help"], &dir);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains(&format!("klrl {cmd} ")), "{cmd}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- an independent TensorBoard event-file reader ----

/// CRC-32C (Castagnoli), bitwise.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masked CRC.
fn masked(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Protobuf fields of one message: (field number, wire type, payload bytes
/// or the varint / fixed value as bytes).
fn fields(buf: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos);
        let (field, wt) = (key >> 3, (key & 7) as u8);
        let payload = match wt {
            0 => varint(buf, &mut pos).to_le_bytes().to_vec(),
            1 => {
                pos += 8;
                buf[pos - 8..pos].to_vec()
            }
            2 => {
                let n = varint(buf, &mut pos) as usize;
                pos += n;
                buf[pos - n..pos].to_vec()
            }
            5 => {
                pos += 4;
                buf[pos - 4..pos].to_vec()
            }
            _ => panic!("unexpected wire type {wt}"),
        };
        out.push((field, wt, payload));
    }
    out
}

/// Every (tag, step) → simple_value in the event files of every segment
/// (`tb/0`, `tb/1`, …) under `dir`.
fn read_scalars(dir: &Path) -> HashMap<(String, i64), f32> {
    let mut out = HashMap::new();
    for seg in std::fs::read_dir(dir).unwrap() {
        out.extend(read_segment(&seg.unwrap().path()));
    }
    out
}

/// Every (tag, step) → simple_value in the event files of one segment.
fn read_segment(dir: &Path) -> HashMap<(String, i64), f32> {
    let mut out = HashMap::new();
    let mut files = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        files.push(f.unwrap().path());
    }
    assert!(!files.is_empty(), "no event file in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let mut pos = 0;
        while pos < data.len() {
            let len_bytes = &data[pos..pos + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(data[pos + 8..pos + 12].try_into().unwrap());
            assert_eq!(len_crc, masked(len_bytes), "length CRC");
            let body = &data[pos + 12..pos + 12 + len];
            let crc = u32::from_le_bytes(data[pos + 12 + len..pos + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked(body), "data CRC");
            pos += 16 + len;
            let mut step = 0i64;
            let mut summary = None;
            for (f, wt, p) in fields(body) {
                match (f, wt) {
                    (2, 0) => step = i64::from_le_bytes(p.try_into().unwrap()),
                    (5, 2) => summary = Some(p),
                    _ => {}
                }
            }
            let Some(summary) = summary else { continue };
            for (f, _, value) in fields(&summary) {
                if f != 1 {
                    continue;
                }
                let (mut tag, mut v) = (String::new(), None);
                for (g, wt, p) in fields(&value) {
                    match (g, wt) {
                        (1, 2) => tag = String::from_utf8(p).unwrap(),
                        (2, 5) => v = Some(f32::from_le_bytes(p.try_into().unwrap())),
                        _ => {}
                    }
                }
                out.insert((tag, step), v.expect("simple_value"));
            }
        }
    }
    out
}

/// Check that the TensorBoard files under `run/tb`, read back with the
/// independent reader above, hold exactly the updates of `run/metrics.csv`:
/// every non-empty cell at its row's `env_steps` (bit for bit as f32), and
/// no event at a step that has no row. Returns (rows, values checked).
fn tensorboard_matches_metrics(run: &Path) -> (usize, usize) {
    let scalars = read_scalars(&run.join("tb"));
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let mut checked = 0;
    for row in &rows {
        let step: i64 = row[1].parse().unwrap();
        for (col, cell) in header.iter().zip(row) {
            if col == "env_steps" || cell.is_empty() {
                continue;
            }
            let suffix = format!("/{col}");
            let got = scalars
                .iter()
                .find(|((tag, s), _)| *s == step && tag.ends_with(&suffix))
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("{col} at step {step} missing"));
            assert_eq!(got, cell.parse::<f64>().unwrap() as f32, "{col} at {step}");
            checked += 1;
        }
    }
    let steps: std::collections::BTreeSet<i64> = scalars.keys().map(|(_, s)| *s).collect();
    let expected: std::collections::BTreeSet<i64> =
        rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert_eq!(steps, expected, "TensorBoard steps vs metrics.csv rows");
    (rows.len(), checked)
}

#[test]
fn tensorboard_holds_every_scalar_of_metrics_csv() {
    let dir = temp_dir("tb");
    std::fs::write(dir.join("small.toml"), SMALL).unwrap();
    let out = run(
        &[
            "train",
            "small.toml",
            "--out",
            "r",
            "--set",
            "run.eval_episodes=0",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (rows, checked) = tensorboard_matches_metrics(&dir.join("r"));
    assert_eq!(rows, 10);
    assert!(checked > 10 * 15, "{checked}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// metrics.csv without the wall-clock column.
fn metrics_without_time(path: &Path) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(path);
    let w = header.iter().position(|h| h == "wall_s").unwrap();
    rows.into_iter()
        .map(|mut r| {
            r.remove(w);
            r
        })
        .collect()
}

/// Names of the checkpoints under `dir`, sorted.
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

#[test]
fn sigkill_then_resume_matches_an_uninterrupted_run_bit_for_bit() {
    let dir = temp_dir("resume");
    // 640 updates, a checkpoint every 16 (so the kill lands between two), and
    // a progress line (~110 bytes) after every update: ~70 KB of output, more
    // than a pipe holds (64 KiB on Linux and macOS). The killed run's stdout
    // is a pipe this test never reads, so that run blocks before its last
    // update however fast the machine is: it cannot finish before the kill.
    let cfg = SMALL
        .replace("total_steps = 1280", "total_steps = 81920")
        .replace(
            "checkpoint_every = 4",
            "checkpoint_every = 16\ntensorboard = true\nlog_every = 1",
        );
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    let out = run(&["train", "c.toml", "--out", "full"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.len() > 65_536,
        "{} bytes of output fit in a pipe: the killed run could finish",
        out.stdout.len()
    );

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
    assert!(!dir.join("killed/summary.json").exists());

    let out = run(&["train", "--resume", "killed"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("resuming killed at update"),
        "{}",
        text(&out.stderr)
    );
    // A second TensorBoard directory for the second process.
    assert!(dir.join("killed/tb/1").is_dir());

    let last = "checkpoints/update-00000640";
    let a = checkpoint_tensors(&dir.join("full").join(last));
    let b = checkpoint_tensors(&dir.join("killed").join(last));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "{k} differs after resume");
    }
    assert!(
        a.keys().any(|k| k.contains("algo.v.")),
        "optimiser state saved: {:?}",
        a.keys()
    );
    assert_eq!(
        metrics_without_time(&dir.join("full/metrics.csv")),
        metrics_without_time(&dir.join("killed/metrics.csv"))
    );
    // The resumed run's summary says where it is.
    let summary = |run: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(run).join("summary.json")).unwrap())
            .unwrap()
    };
    let s = summary("killed");
    assert_eq!(s["updates"], 640);

    // Resuming a finished run trains nothing more: metrics.csv is byte for
    // byte the same (no new rows), the checkpoints keep their names and their
    // parameters and optimiser state bit for bit, and the summary reports
    // the same updates, steps and evaluation. (Not byte-identical throughout:
    // the final checkpoint is rewritten with the run's wall clock advanced by
    // the resume's few milliseconds, and a new, empty TensorBoard segment
    // appears, as for every resume.)
    let metrics = std::fs::read(dir.join("killed/metrics.csv")).unwrap();
    let names = checkpoint_names(&ckpts);
    let tensors: Vec<_> = names
        .iter()
        .map(|n| checkpoint_tensors(&ckpts.join(n)))
        .collect();
    let out = run(&["train", "--resume", "killed"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.join("killed/metrics.csv")).unwrap(),
        metrics
    );
    assert_eq!(checkpoint_names(&ckpts), names);
    for (n, t) in names.iter().zip(&tensors) {
        assert!(checkpoint_tensors(&ckpts.join(n)) == *t, "{n} changed");
    }
    let again = summary("killed");
    for key in ["updates", "env_steps", "eval", "final_ep_return_mean"] {
        assert_eq!(again[key], s[key], "{key}");
    }
    assert!(read_segment(&dir.join("killed/tb/2")).is_empty());

    // --resume takes no overrides, and needs a run directory.
    let out = run(&["train", "--resume", "killed", "--seed", "1"], &dir);
    assert_eq!(out.status.code(), Some(2), "--resume takes no overrides");
    let out = run(&["train", "--resume", "nope"], &dir);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_after_a_checkpoint_and_the_run_resumes() {
    let dir = temp_dir("sigint");
    let cfg = SMALL
        .replace("total_steps = 1280", "total_steps = 1000000")
        .replace("checkpoint_every = 4", "checkpoint_every = 0");
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    let child = klrl()
        .args(["train", "c.toml", "--out", "r"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (metrics rows appear).
    let start = Instant::now();
    while std::fs::read_to_string(dir.join("r/metrics.csv")).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id().to_string();
    // The shell's built-in kill: no procps needed.
    let sigint = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(sigint.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("klrl train --resume r"),
        "{}",
        text(&out.stdout)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["interrupted"], true);
    let updates = s["updates"].as_u64().unwrap();
    assert!(dir
        .join(format!("r/checkpoints/update-{updates:08}"))
        .join("state.json")
        .is_file());
    // The TensorBoard writer was closed: its events, read back, hold every
    // update of metrics.csv and nothing else.
    let (rows, checked) = tensorboard_matches_metrics(&dir.join("r"));
    assert_eq!(rows as u64, updates);
    assert!(checked as u64 > 15 * updates, "{checked}");
    std::fs::remove_dir_all(&dir).unwrap();
}
