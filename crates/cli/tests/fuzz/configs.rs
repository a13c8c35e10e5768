//! Config TOML: the shipped configs with lines deleted, repeated, moved and
//! given values of the wrong type or out of range, unknown keys and
//! sections, and damaged bytes.

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

use klrl_envs::Registry;

use super::harness::{binary, in_process, note, panic_message, Outcome, Tally};
use super::{cases, configs_dir, SUBPROCESS_EVERY};
use crate::seeded::{scratch_dir, Rng};

/// Values of the wrong type, out of range, or not TOML at all.
pub const BAD_VALUES: &[&str] = &[
    "\"\"",
    "\"x\"",
    "\"π→∞ 🚀\"",
    "\"\\u0000\"",
    "true",
    "false",
    "[]",
    "[1, \"a\"]",
    "[-1]",
    "[0]",
    "[100000000, 100000000]",
    "[\"a\", \"b\"]",
    "[[1]]",
    "{ a = 1 }",
    "{}",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "+inf",
    "1e308",
    "-1e308",
    "1e-320",
    "0",
    "-0",
    "-1",
    "-0.5",
    "0.0",
    "1.5",
    "2",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "4294967296",
    "100001",
    "10000001",
    "1e400",
    "0x7fffffffffffffff",
    "0b1",
    "0o7",
    "1_000_000_000_000",
    "'''a\nb'''",
    "",
    "=",
    "\"unterminated",
    "[1,",
    "'",
];

pub const SECTIONS: &[&str] = &["env", "train", "policy", "algo", "run"];

pub fn is_key_line(l: &str) -> bool {
    let t = l.trim_start();
    !t.starts_with('#') && !t.starts_with('[') && t.contains('=')
}

/// Apply one random line-level mutation.
pub fn mutate_lines(rng: &mut Rng, lines: &mut Vec<String>) {
    let n = lines.len();
    let key_lines: Vec<usize> = (0..n).filter(|&i| is_key_line(&lines[i])).collect();
    let header_lines: Vec<usize> = (0..n)
        .filter(|&i| lines[i].trim_start().starts_with('['))
        .collect();
    match rng.below(13) {
        0 if n > 0 => {
            // Delete a line (a key, a header: its keys fall into the section before).
            let i = if !key_lines.is_empty() && rng.chance(0.7) {
                *rng.pick(&key_lines)
            } else {
                rng.below(n)
            };
            lines.remove(i);
        }
        1 if n > 0 => {
            let i = if !key_lines.is_empty() && rng.chance(0.7) {
                *rng.pick(&key_lines)
            } else {
                rng.below(n)
            };
            let l = lines[i].clone();
            lines.insert(i + rng.below(2), l);
        }
        2..=4 if !key_lines.is_empty() => {
            // A value of the wrong type or out of range.
            let i = *rng.pick(&key_lines);
            let key = lines[i].split('=').next().unwrap().to_string();
            lines[i] = format!("{key}= {}", rng.pick(BAD_VALUES));
        }
        5 => {
            // An unknown key in some section.
            let at = rng.below(n + 1);
            let key = rng.pick(&[
                "bogus",
                "gama",
                "n_env",
                "maxkl",
                "λ",
                "max_kl ",
                "\"quoted key\"",
            ]);
            lines.insert(at, format!("{key} = 1"));
        }
        6 => {
            let at = rng.below(n + 1);
            let header = rng.pick(&[
                "[bogus]",
                "[algo.bogus]",
                "[[train]]",
                "[env.params]",
                "[algo.reference]",
                "[run.x]",
                "[]",
                "[train",
                "[policy.hidden]",
            ]);
            lines.insert(at, header.to_string());
        }
        7 if !header_lines.is_empty() => {
            let i = *rng.pick(&header_lines);
            let new = format!(
                "[{}]",
                rng.pick(&[
                    "trian",
                    "Train",
                    "algo",
                    "env",
                    "run",
                    "policy",
                    "env.params",
                    "algorithm",
                    ""
                ])
            );
            lines[i] = new;
        }
        8 if n > 1 => {
            let (a, b) = (rng.below(n), rng.below(n));
            lines.swap(a, b);
        }
        9 if !key_lines.is_empty() => {
            // Move a key into another section.
            let i = *rng.pick(&key_lines);
            let l = lines.remove(i);
            let at = rng.below(lines.len() + 1);
            lines.insert(at, l);
        }
        10 => {
            // Another algorithm or environment, known or not.
            let line = if rng.chance(0.5) {
                format!(
                    "name = \"{}\"",
                    rng.pick(&["ppo", "trpo", "npg", "vanilla-pg", "sac", "PPO", ""])
                )
            } else {
                format!(
                    "name = \"{}\"",
                    rng.pick(&[
                        "CartPole-v1",
                        "Pendulum-v1",
                        "MovieRec-v0",
                        "Acrobot-v1",
                        "MountainCarContinuous-v0",
                        "Nope-v0",
                        "cartpole-v1",
                    ])
                )
            };
            match (0..n).find(|&i| lines[i].trim_start().starts_with("name")) {
                Some(i) if rng.chance(0.8) => lines[i] = line,
                _ => lines.insert(rng.below(n + 1), line),
            }
        }
        11 => {
            // Dotted keys and inline tables at the top.
            let line = match rng.below(5) {
                0 => format!("{}.n_envs = 3", rng.pick(SECTIONS)),
                1 => format!("{} = 3", rng.pick(SECTIONS)),
                2 => format!("{} = {{ }}", rng.pick(SECTIONS)),
                3 => "env.params.gravity = -9.8".to_string(),
                _ => "policy.hidden = [64, -64]".to_string(),
            };
            lines.insert(0, line);
        }
        _ => {
            // A line of random characters.
            let at = rng.below(n + 1);
            let chars: String = (0..1 + rng.below(20))
                .map(|_| {
                    *rng.pick(&[
                        'a', '=', '"', '[', ']', '{', '}', '.', ',', '#', ' ', '1', '\\', 'é',
                        '\t', '\'',
                    ])
                })
                .collect();
            lines.insert(at, chars);
        }
    }
}

/// Apply one random byte-level mutation.
pub fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let n = bytes.len();
    match rng.below(9) {
        0 => bytes.truncate(rng.below(n + 1)),
        1 if n > 0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(n);
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let at = rng.below(n + 1);
            let len = 1 + rng.below(16);
            let junk = rng.bytes(len);
            bytes.splice(at..at, junk);
        }
        3 => {
            let len = rng.below(200);
            *bytes = rng.bytes(len);
        }
        4 => bytes.clear(),
        5 => bytes.splice(0..0, [0xef, 0xbb, 0xbf]).for_each(drop),
        6 => {
            *bytes = String::from_utf8_lossy(bytes)
                .replace('\n', "\r\n")
                .into_bytes()
        }
        7 => {
            let at = rng.below(n + 1);
            bytes.insert(at, 0);
        }
        _ => {
            // Invalid UTF-8 in the middle of a value.
            let at = rng.below(n + 1);
            bytes.splice(at..at, [0xff, 0xfe]).for_each(drop);
        }
    }
}

/// A damaged copy of `text`: one to three line-level mutations, sometimes a
/// byte-level one.
pub fn damage_config(rng: &mut Rng, text: &str) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for _ in 0..1 + rng.below(3) {
        mutate_lines(rng, &mut lines);
    }
    let mut bytes = (lines.join("\n") + "\n").into_bytes();
    if rng.chance(0.2) {
        mutate_bytes(rng, &mut bytes);
    }
    bytes
}

/// Every config shipped in `configs/`, as (relative path, text).
pub fn shipped_configs() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = configs_dir();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(out.len() >= 20, "configs/ has {} configs", out.len());
    out
}

/// Whether a valid config is small enough to train one update of in a
/// test: a small batch and network, few epochs and iterations.
pub fn small_enough(c: &klrl_runner::ResolvedConfig) -> bool {
    let Ok(toml::Value::Table(t)) = toml::from_str::<toml::Value>(&c.to_toml()) else {
        return false;
    };
    let int = |sec: &str, key: &str| {
        t.get(sec)
            .and_then(|s| s.get(key))
            .and_then(toml::Value::as_integer)
    };
    let batch =
        int("train", "n_envs").unwrap_or(i64::MAX) * int("train", "n_steps").unwrap_or(i64::MAX);
    let hidden_ok = t
        .get("policy")
        .and_then(|p| p.get("hidden"))
        .and_then(toml::Value::as_array)
        .is_some_and(|h| {
            h.len() <= 4 && h.iter().all(|w| w.as_integer().is_some_and(|w| w <= 256))
        });
    let algo_ok = t
        .get("algo")
        .and_then(toml::Value::as_table)
        .is_some_and(|a| {
            a.iter()
                .all(|(k, v)| k.contains("minibatch") || v.as_integer().is_none_or(|x| x <= 64))
        });
    // An episode limit far beyond the registered one could make the
    // evaluation (skipped here anyway) or a rollout long.
    let params_ok = t
        .get("env")
        .and_then(|e| e.get("params"))
        .and_then(toml::Value::as_table)
        .is_none_or(|p| {
            p.values()
                .all(|v| v.as_integer().is_none_or(|x| x <= 10_000))
        });
    (1..=4096).contains(&batch) && hidden_ok && algo_ok && params_ok
}

/// Train a valid damaged config for one update (no evaluation) into a fresh
/// directory: it may fail (exit 1 or 2: e.g. training diverges, or
/// `init_from` names no run), never panic or hang.
pub fn run_accepted(t: &mut Tally, case: usize, config: &Path, work: &Path) {
    let out = work.join(format!("accepted-{case}"));
    let args: Vec<OsString> = vec![
        "train".into(),
        config.into(),
        "--out".into(),
        out.clone().into(),
        "--set".into(),
        "train.total_steps=1".into(),
        "--set".into(),
        "run.eval_episodes=0".into(),
        "--set".into(),
        "run.tensorboard=false".into(),
    ];
    let o = in_process(&args);
    t.accepted_run += 1;
    t.outcome(
        case,
        &format!("train {} (accepted)", config.display()),
        &o,
        Some(config),
    );
    let _ = std::fs::remove_dir_all(&out);
}

pub fn fuzz() -> Tally {
    let start = Instant::now();
    let mut t = Tally::new("config TOML");
    let registry = Registry::builtin();
    let bases = shipped_configs();
    let work = scratch_dir("fuzz-config");
    let mut rng = Rng::new(0x6b6c_726c_0001);
    for case in 0..cases(5200) {
        let (name, text) = rng.pick(&bases).clone();
        let bytes = damage_config(&mut rng, &text);
        let file = work.join(format!("case-{}.toml", case % 8));
        std::fs::write(&file, &bytes).unwrap();
        let what = format!("train {name} damaged (case-{}.toml)", case % 8);
        let source = klrl_runner::ConfigSource::File(file.clone());
        // The error as (whether it is a usage error, its message).
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            klrl_runner::config::load(&source, &[], None, &registry)
                .map_err(|e| (e.is_usage(), e.to_string()))
        }));
        drop(std::panic::take_hook());
        let loaded = match loaded {
            Ok(l) => l,
            Err(p) => {
                t.outcome(
                    case,
                    &format!("config::load of {what}"),
                    &Outcome::Panicked(panic_message(&*p)),
                    Some(&file),
                );
                continue;
            }
        };
        match loaded {
            Ok(resolved) => {
                t.accepted += 1;
                if small_enough(&resolved) && t.accepted_run < cases(40) && rng.chance(0.3) {
                    run_accepted(&mut t, case, &file, &work);
                }
            }
            Err((usage, message)) => {
                let out = work.join("never");
                let args: Vec<OsString> = vec![
                    "train".into(),
                    file.clone().into(),
                    "--out".into(),
                    out.clone().into(),
                ];
                let mut o = in_process(&args);
                if o == Outcome::Exit(2) && !usage {
                    o = Outcome::Exit(-2); // cannot happen: the program maps is_usage to 2
                }
                let file_name = file.display().to_string();
                t.bad_input(case, &what, &o, &message, &[&file_name], Some(&file));
                if out.exists() {
                    note(
                        &mut t.reporting,
                        "a rejected config wrote its run directory".into(),
                        format!("case {case}: {what}"),
                    );
                    let _ = std::fs::remove_dir_all(&out);
                }
                if case % SUBPROCESS_EVERY == 0 {
                    let rel = file.file_name().unwrap().to_string_lossy().to_string();
                    let (o, f) = binary(&["train", &rel, "--out", "never"], &work);
                    t.bad_input_binary(
                        case,
                        &what,
                        &o,
                        &f.stderr,
                        &[&format!("error: {rel}")],
                        Some(&file),
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    t.seconds = start.elapsed().as_secs_f64();
    t
}
