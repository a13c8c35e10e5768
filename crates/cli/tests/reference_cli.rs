//! `klrl train` with KL to a reference policy (`[algo.reference]`) and
//! `--init-from`, running the real binary: the starting policy and the
//! `initial` reference are the saved parameters bit for bit; a saved
//! reference is kept in the run's `reference/` and holds the constraint;
//! bad reference input exits 2 naming the field or flag and writes nothing;
//! a resumed run with a reference is bit-identical to an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{run, temp_dir, text};

/// The policy run A: CartPole PPO with observation normalisation, 2 envs ×
/// 64 steps, 10 updates, checkpoints at 4, 8 and 10.
const A: &str = r#"
[env]
name = "CartPole-v1"

[train]
total_steps = 1280
n_envs = 2
n_steps = 64
seed = 3
normalize_obs = true

[policy]
hidden = [16, 16]

[algo]
name = "ppo"
objective = "kl_adaptive"
n_epochs = 2
minibatch_size = 64

[run]
checkpoint_every = 4
eval_episodes = 0
"#;

/// `A` with a reference table appended and another seed.
fn with_reference(total_steps: u64, reference: &str) -> String {
    A.replace(
        "total_steps = 1280",
        &format!("total_steps = {total_steps}"),
    )
    .replace("seed = 3", "seed = 5")
    .replace(
        "minibatch_size = 64",
        &format!("minibatch_size = 64\n\n[algo.reference]\n{reference}"),
    )
}

/// Train run A in `dir/A`; returns its newest checkpoint.
fn train_a(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("a.toml"), A).unwrap();
    let out = run(&["train", "a.toml", "--out", "A"], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ckpt = dir.join("A/checkpoints/update-00000010");
    assert!(ckpt.join("policy.safetensors").is_file());
    ckpt
}

/// The tensors of a safetensors file, as raw bytes by name.
fn tensors(file: &Path) -> BTreeMap<String, Vec<u8>> {
    let data = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

/// The tensors whose names start with `prefix`.
fn tensors_with(file: &Path, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    tensors(file)
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let t = std::fs::read_to_string(path).unwrap();
    let mut lines = t.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// One column of metrics.csv as numbers.
fn column(run: &Path, name: &str) -> Vec<f64> {
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    rows.iter().map(|r| r[i].parse::<f64>().unwrap()).collect()
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

/// `klrl train --init-from A` (and `--set run.init_from=A`): the run's
/// `initial` reference is A's newest checkpoint bit for bit (parameters and
/// the observation normaliser's statistics), and B starts there: with a
/// negligible learning rate the first update's KL to the reference is ≈ 0,
/// where a run with the same reference and a fresh policy starts far away.
#[test]
fn init_from_restores_the_saved_policy_exactly() {
    let dir = temp_dir("init");
    let ckpt = train_a(&dir);
    let b = with_reference(256, "source = \"initial\"\nmode = \"penalty\"");
    std::fs::write(dir.join("b.toml"), &b).unwrap();
    let tiny = ["--set", "algo.lr=1e-9"];
    let out = run(
        &[
            &["train", "b.toml", "--init-from", "A", "--out", "B"][..],
            &tiny,
        ]
        .concat(),
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a_policy = tensors(&ckpt.join("policy.safetensors"));
    assert!(
        a_policy.keys().any(|k| k == "policy.0.bias"),
        "{a_policy:?}"
    );
    let b_ref = tensors(&dir.join("B/reference/policy.safetensors"));
    assert_eq!(
        a_policy.keys().collect::<Vec<_>>(),
        b_ref.keys().collect::<Vec<_>>()
    );
    for (k, v) in &a_policy {
        assert!(v == &b_ref[k], "reference tensor {k} differs from A's");
    }
    // The frozen normaliser is A's (the statistics as saved).
    let a_norm = tensors_with(&ckpt.join("state.safetensors"), "obs_norm.");
    let b_norm = tensors_with(&dir.join("B/reference/state.safetensors"), "obs_norm.");
    assert!(a_norm.contains_key("obs_norm.mean"), "{:?}", a_norm.keys());
    assert_eq!(a_norm, b_norm);
    let kl0 = column(&dir.join("B"), "kl_ref")[0];
    assert!((0.0..1e-3).contains(&kl0), "B's first kl_ref {kl0}");

    // The same through --set run.init_from=A: the same reference and the
    // same metrics.
    let out = run(
        &[
            &["train", "b.toml", "--set", "run.init_from=A", "--out", "B2"][..],
            &tiny,
        ]
        .concat(),
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(tensors(&dir.join("B2/reference/policy.safetensors")) == b_ref);
    assert_eq!(
        metrics_without_time(&dir.join("B/metrics.csv")),
        metrics_without_time(&dir.join("B2/metrics.csv"))
    );

    // Control: A as a saved reference for a fresh policy — far from it.
    let c = with_reference(256, "source = \"saved\"\npath = \"A\"\nmode = \"penalty\"");
    std::fs::write(dir.join("c.toml"), c).unwrap();
    let out = run(
        &[&["train", "c.toml", "--out", "C"][..], &tiny].concat(),
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let far = column(&dir.join("C"), "kl_ref")[0];
    assert!(far > 100.0 * kl0.max(1e-6), "fresh policy: {far}, B: {kl0}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A saved reference (`source = "saved"`, `path` = a run directory): the
/// run copies A's newest checkpoint into `reference/` (parameters, the
/// normaliser, the config that shapes it) and, started from A, keeps every
/// update's mean KL to it within ε in constraint mode, at a learning rate
/// that would otherwise leave the ball.
#[test]
fn saved_reference_is_kept_and_the_constraint_holds() {
    let dir = temp_dir("saved");
    let ckpt = train_a(&dir);
    let eps = 0.02;
    let cfg = with_reference(
        2560,
        &format!("source = \"saved\"\npath = \"A\"\nmode = \"constraint\"\nmax_kl = {eps}"),
    )
    .replace(
        "objective = \"kl_adaptive\"",
        "objective = \"clip\"\nlr = 0.01",
    );
    std::fs::write(dir.join("s.toml"), &cfg).unwrap();
    let out = run(&["train", "s.toml", "--init-from", "A", "--out", "S"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = dir.join("S/reference");
    assert!(tensors(&r.join("policy.safetensors")) == tensors(&ckpt.join("policy.safetensors")));
    assert_eq!(
        tensors_with(&r.join("state.safetensors"), "obs_norm."),
        tensors_with(&ckpt.join("state.safetensors"), "obs_norm.")
    );
    let shape = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(shape.contains("CartPole-v1") && shape.contains("hidden = [16, 16]"));
    let kl = column(&dir.join("S"), "kl_ref");
    assert_eq!(kl.len(), 20);
    for (u, k) in kl.iter().enumerate() {
        assert!(*k <= eps, "update {u}: kl_ref {k} > {eps}");
    }
    assert!(column(&dir.join("S"), "kl_ref_limit")
        .iter()
        .all(|&l| l == eps));
    // The constraint was active: the policy went to the edge of the ball.
    let top = kl.iter().cloned().fold(0.0, f64::max);
    assert!(
        top > 0.5 * eps,
        "the learning rate never reached the bound: {top}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad reference input: exit status 2, a message naming the field (or
/// `--init-from`) and the file, and no run directory.
#[test]
fn bad_reference_input_exits_2_and_writes_nothing() {
    let dir = temp_dir("bad");
    let ckpt = train_a(&dir);
    // A copy of A's checkpoint with a NaN in the policy's weights.
    let nan = dir.join("nan_ckpt");
    std::fs::create_dir_all(&nan).unwrap();
    for f in std::fs::read_dir(&ckpt).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, nan.join(f.file_name().unwrap())).unwrap();
    }
    let file = nan.join("policy.safetensors");
    let mut data = std::fs::read(&file).unwrap();
    let offset = {
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        let view = st.tensor("policy.0.bias").unwrap();
        view.data().as_ptr() as usize - data.as_ptr() as usize
    };
    data[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&file, &data).unwrap();

    let saved = |path: &str| format!("source = \"saved\"\npath = \"{path}\"\nmode = \"penalty\"");
    let cases: Vec<(&str, String, Vec<&str>, Vec<&str>)> = vec![
        (
            "missing",
            with_reference(256, &saved("no_such_run")),
            vec![],
            vec!["missing.toml: algo.reference.path", "no_such_run"],
        ),
        (
            "movierec",
            with_reference(256, &saved("A"))
                .replace("CartPole-v1", "MovieRec-v0")
                .replace("normalize_obs = true", "normalize_obs = false"),
            vec![],
            vec!["movierec.toml: algo.reference.path", "observations"],
        ),
        (
            "pendulum",
            with_reference(256, &saved("A")).replace("CartPole-v1", "Pendulum-v1"),
            vec![],
            vec![
                "pendulum.toml: algo.reference.path",
                "discrete",
                "continuous",
            ],
        ),
        (
            "nan",
            with_reference(256, &saved("nan_ckpt")),
            vec![],
            vec![
                "nan.toml: algo.reference.path",
                "policy.0.bias",
                "non-finite",
            ],
        ),
        (
            "hidden",
            with_reference(256, "mode = \"penalty\"").replace("[16, 16]", "[32]"),
            vec!["--init-from", "A"],
            vec!["--init-from A", "parameters"],
        ),
        (
            "init_nan",
            with_reference(256, "mode = \"penalty\""),
            vec!["--init-from", "nan_ckpt"],
            vec!["--init-from nan_ckpt", "policy.0.bias", "non-finite"],
        ),
        (
            "init_missing",
            with_reference(256, "mode = \"penalty\""),
            vec!["--set", "run.init_from=nowhere"],
            vec!["--init-from nowhere"],
        ),
    ];
    for (name, cfg, extra, wanted) in cases {
        let file = format!("{name}.toml");
        std::fs::write(dir.join(&file), cfg).unwrap();
        let out_dir = format!("out_{name}");
        let args = [&["train", &file, "--out", &out_dir][..], &extra].concat();
        let out = run(&args, &dir);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{name}: `{w}` not in: {err}");
        }
        assert!(
            !dir.join(&out_dir).exists(),
            "{name}: the run directory was created"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Resume with a reference is bit-identical: a run with an `initial`
/// reference in constraint mode, started with `--init-from A` and
/// normalising observations (so the reference's frozen normaliser differs
/// from the run's), interrupted after its checkpoint at update 8 and
/// resumed, writes the same metrics rows (but wall time) and the same final
/// parameters and optimiser state as the uninterrupted run.
///
/// The interruption is made deterministic by copying the finished run and
/// removing what came after the checkpoint at update 8 — the state SIGKILL
/// leaves between two checkpoints (train_cli.rs kills a real process) — and
/// A itself is deleted first, so the resumed run can only take π_ref and
/// its normaliser from its own `reference/`.
#[test]
fn resume_with_a_reference_is_bit_identical() {
    let dir = temp_dir("resume");
    train_a(&dir);
    let cfg = with_reference(
        2560,
        "source = \"initial\"\nmode = \"constraint\"\nmax_kl = 0.02",
    )
    .replace(
        "checkpoint_every = 4",
        "checkpoint_every = 4\nkeep_checkpoints = 100",
    )
    .replace(
        "objective = \"kl_adaptive\"",
        "objective = \"clip\"\nlr = 0.01",
    );
    std::fs::write(dir.join("r.toml"), cfg).unwrap();
    let out = run(
        &["train", "r.toml", "--init-from", "A", "--out", "full"],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_dir_all(dir.join("A")).unwrap();

    copy_dir(&dir.join("full"), &dir.join("cut"));
    let ckpts = dir.join("cut/checkpoints");
    let mut removed = 0;
    for e in std::fs::read_dir(&ckpts).unwrap() {
        let p = e.unwrap().path();
        let n: u64 = p.file_name().unwrap().to_string_lossy()["update-".len()..]
            .parse()
            .unwrap();
        if n > 8 {
            std::fs::remove_dir_all(&p).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 3, "checkpoints 12, 16, 20");
    std::fs::remove_file(dir.join("cut/summary.json")).unwrap();
    let out = run(&["train", "--resume", "cut"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("resuming cut at update 8"),
        "{}",
        text(&out.stderr)
    );
    let full = metrics_without_time(&dir.join("full/metrics.csv"));
    assert_eq!(full.len(), 20);
    assert_eq!(full, metrics_without_time(&dir.join("cut/metrics.csv")));
    let last = "checkpoints/update-00000020";
    for f in [
        "policy.safetensors",
        "value.safetensors",
        "state.safetensors",
    ] {
        let mut a = tensors(&dir.join("full").join(last).join(f));
        let mut b = tensors(&dir.join("cut").join(last).join(f));
        a.remove("run.wall_s");
        b.remove("run.wall_s");
        assert!(a == b, "{f} differs after resume");
    }
    // The constraint held throughout, and the reference was in force (the
    // policy moved away from it).
    let kl = column(&dir.join("cut"), "kl_ref");
    assert!(kl.iter().all(|&k| k <= 0.02), "{kl:?}");
    assert!(kl.iter().any(|&k| k > 0.005), "{kl:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
