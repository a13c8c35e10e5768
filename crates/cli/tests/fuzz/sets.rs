//! `--set key=value`: existing fields with values of the wrong type or out
//! of range, keys that name nothing, no `=`, for `train`, `compare`, `bench`
//! and `train --resume`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use klrl_envs::Registry;

use super::configs::BAD_VALUES;
use super::harness::{binary, first_lines, in_process, note, Tally};
use super::runs::{snapshot, train_run, TINY_PPO};
use super::{cases, configs_dir, SUBPROCESS_EVERY};
use crate::seeded::{scratch_dir, Rng};

/// Every field path of a resolved config (`train.n_envs`, `algo.reference.max_kl`,
/// `policy.hidden`), plus optional fields that are absent when unset.
pub fn field_paths(c: &klrl_runner::ResolvedConfig) -> Vec<String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) if !inner.is_empty() => walk(&p, inner, out),
                _ => out.push(p),
            }
        }
    }
    let t: toml::Table = toml::from_str(&c.to_toml()).unwrap();
    let mut out = Vec::new();
    walk("", &t, &mut out);
    for extra in [
        "algo.max_kl",
        "algo.early_stop_kl",
        "algo.clip_vf",
        "algo.proj_eps",
        "algo.reference.mode",
        "algo.reference.max_kl",
        "algo.reference.source",
        "algo.reference.path",
        "algo.reference.probs",
        "run.init_from",
        "env.params.gravity",
        "env.params.max_episode_steps",
    ] {
        if !out.iter().any(|p| p == extra) {
            out.push(extra.to_string());
        }
    }
    out
}

/// Keys that name nothing.
pub const BAD_KEYS: &[&str] = &[
    "foo.bar",
    "algo.max_kll",
    "train.gama",
    "train.n_envs.x",
    "env.name.x",
    "algo",
    "train",
    "algo..lr",
    ".lr",
    "lr.",
    "algo.",
    "algo. lr",
    "ALGO.LR",
    "algo.λ",
    "run.checkpoint-every",
    "policy.hidden.0",
    "env.params.bogus",
    "algo.reference.bogus",
    "train.seed.seed",
    "\u{0}",
    "algo.\u{202e}lr",
    "x",
    "[algo]",
    "algo.lr[0]",
];

/// A `--set` argument that is malformed, names no field, or gives a field a
/// value of the wrong type or out of range.
pub fn damaged_set(rng: &mut Rng, keys: &[String]) -> (String, Option<String>) {
    match rng.below(10) {
        0..=4 => {
            let key = rng.pick(keys).clone();
            let value = match rng.below(4) {
                0 => "".to_string(),
                1 => rng
                    .pick(&[
                        "π", "1e999", "--x", " ", "\"", "-", "1,2", "0.5.5", "∞", "NaN", "none",
                        "null",
                    ])
                    .to_string(),
                _ => rng.pick(BAD_VALUES).to_string(),
            };
            (format!("{key}={value}"), Some(key))
        }
        5 => (
            format!(
                "{}={}",
                rng.pick(BAD_KEYS),
                rng.pick(&["1", "0.5", "true", "\"x\""])
            ),
            None,
        ),
        6 => {
            let key = rng.pick(keys).clone();
            let s = match rng.below(4) {
                0 => key,
                1 => format!("{key} 0.5"),
                2 => format!("{key}:0.5"),
                _ => format!("{key}→1"),
            };
            (s, None)
        }
        7 => (
            rng.pick(&["", "=", "=1", "==", " = ", "= =", "\t", "."])
                .to_string(),
            None,
        ),
        8 => {
            let key = rng.pick(keys).clone();
            let v = rng.pick(&[
                "a=b",
                "[",
                "{",
                "\"",
                "'''",
                "1 = 2",
                "[1, 2",
                "{ x = }",
                "# comment",
                "1 # c",
            ]);
            (format!("{key}={v}"), Some(key))
        }
        _ => {
            let long = "k".repeat(1 + rng.below(5000));
            let s = rng
                .pick(&[
                    "algo.ŀr=1",
                    "ålgo.lr=1",
                    "algo.lr\u{0}=1",
                    "train.n_envs=\u{feff}8",
                ])
                .to_string();
            (
                if rng.chance(0.3) {
                    format!("algo.{long}=1")
                } else {
                    s
                },
                None,
            )
        }
    }
}

pub fn fuzz() -> Tally {
    let start = Instant::now();
    let mut t = Tally::new("--set values");
    let registry = Registry::builtin();
    let work = scratch_dir("fuzz-set");
    // A finished run for `train --resume RUN --set ...`.
    let finished = train_run(&work, "finished", TINY_PPO);
    let before = snapshot(&finished);
    let bases: Vec<(PathBuf, Vec<String>)> = [
        "cartpole-ppo-kl-limit.toml",
        "cartpole-trpo.toml",
        "cartpole-ppo-projection.toml",
        "bandit-vanilla-pg.toml",
        "pendulum-ppo-gsde.toml",
        "bandit-drift-ppo-reference.toml",
    ]
    .iter()
    .map(|name| {
        let path = configs_dir().join(name);
        let c = klrl_runner::config::load(
            &klrl_runner::ConfigSource::File(path.clone()),
            &[],
            None,
            &registry,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        (path, field_paths(&c))
    })
    .collect();
    let resume_keys: Vec<String> = klrl_runner::config::AMENDABLE
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rng = Rng::new(0x6b6c_726c_0002);
    for case in 0..cases(3300) {
        let resume = rng.chance(0.2);
        let (base, keys) = rng.pick(&bases).clone();
        let keys = if resume && rng.chance(0.7) {
            resume_keys.clone()
        } else {
            keys
        };
        // One to three overrides, one of them damaged.
        let mut sets = Vec::new();
        let mut named = None;
        for _ in 0..rng.below(3) {
            sets.push(
                rng.pick(&[
                    "train.total_steps=512",
                    "run.log_every=3",
                    "algo.lr=0.001",
                    "run.eval_episodes=1",
                ])
                .to_string(),
            );
        }
        let (bad, key) = damaged_set(&mut rng, &keys);
        let at = rng.below(sets.len() + 1);
        sets.insert(at, bad.clone());
        if sets.len() == 1 {
            named = key;
        }
        let mut args: Vec<OsString> = Vec::new();
        let out = work.join("never");
        let (loaded, what, file) = if resume {
            args.extend(["train".into(), "--resume".into(), finished.clone().into()]);
            let l = match klrl_runner::config::load_amended(&finished, &sets, &registry) {
                Err(e) => Err(e.to_string()),
                // Shorter than the run already is: refused by the resume
                // itself, before it writes anything.
                Ok(c) if c.experiment.train.total_steps < 768 => {
                    match klrl_runner::Run::resume_amended(&finished, &sets, &registry) {
                        Err(e) => Err(e.to_string()),
                        Ok(_) => Err("(accepted a total below the steps taken)".to_string()),
                    }
                }
                Ok(_) => Ok(()),
            };
            (
                l,
                format!("train --resume RUN --set {sets:?}"),
                finished.join("config.toml"),
            )
        } else {
            let name = base.file_name().unwrap().to_string_lossy().to_string();
            // compare and bench set train.seed themselves (seeds 0, 1, …).
            let seed = match rng.below(3) {
                0 => {
                    args.extend([
                        "train".into(),
                        base.clone().into(),
                        "--out".into(),
                        out.clone().into(),
                    ]);
                    None
                }
                1 => {
                    args.extend([
                        "compare".into(),
                        base.clone().into(),
                        "--seeds".into(),
                        "1".into(),
                        "--out".into(),
                        out.clone().into(),
                    ]);
                    Some(0)
                }
                _ => {
                    args.extend([
                        "bench".into(),
                        base.clone().into(),
                        "--seeds".into(),
                        "1".into(),
                    ]);
                    Some(0)
                }
            };
            let l = klrl_runner::config::load(
                &klrl_runner::ConfigSource::File(base.clone()),
                &sets,
                seed,
                &registry,
            )
            .map(drop)
            .map_err(|e| e.to_string());
            (
                l,
                format!("{} {name} --set {sets:?}", args[0].to_string_lossy()),
                base.clone(),
            )
        };
        for s in &sets {
            args.push("--set".into());
            args.push(s.into());
        }
        let Err(message) = loaded else {
            t.accepted += 1;
            continue;
        };
        let o = in_process(&args);
        let file_name = file.display().to_string();
        let names = ["--set", &file_name];
        t.bad_input(case, &what, &o, &message, &names, None);
        if let Some(k) = &named {
            // One override of a field that exists: does the message name
            // the field itself, not only its section? (Reported, not asserted.)
            let field = k.rsplit('.').next().unwrap_or(k);
            if !message.contains(field) && !message.contains(&format!("--set {bad}")) {
                note(
                    &mut t.info,
                    "message names the section, not the field".into(),
                    format!("case {case}: --set {bad}: `{}`", first_lines(&message, 1)),
                );
            }
        }
        if out.exists() {
            note(
                &mut t.reporting,
                "a rejected --set wrote a directory".into(),
                format!("case {case}: {what}"),
            );
            let _ = std::fs::remove_dir_all(&out);
        }
        let nul = args.iter().any(|a| a.to_string_lossy().contains('\0'));
        if case % SUBPROCESS_EVERY == 0 && !nul {
            let (o, f) = binary(&args, &work);
            t.bad_input_binary(case, &what, &o, &f.stderr, &names, None);
        }
    }
    if snapshot(&finished) != before {
        note(
            &mut t.reporting,
            "a rejected resume changed the run".into(),
            finished.display().to_string(),
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    t.seconds = start.elapsed().as_secs_f64();
    t
}
