//! Command lines of every subcommand with one or two things wrong: unknown
//! flags, missing values, bad numbers, paths that are not what the argument
//! needs, conflicts, unknown subcommands, text that is not UTF-8.

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use super::cases;
use super::harness::{binary, note, Tally};
use super::runs::{snapshot, train_run, TINY_PPO};
use crate::seeded::{scratch_dir, Rng};

/// Valid, bounded command lines of every subcommand, run in a directory
/// holding `c.toml` (a tiny config), `run/` (a finished run), `cmp/` (a
/// finished comparison), `m.csv` (two columns `a`, `b`), `garbage.bin`,
/// `notadir.txt` and `emptydir/`. Each case damages one or two of them.
pub const COMMANDS: &[&[&str]] = &[
    &[
        "train",
        "c.toml",
        "--out",
        "o",
        "--seed",
        "1",
        "--set",
        "train.total_steps=256",
    ],
    &["train", "--resume", "run"],
    &[
        "eval",
        "run",
        "--episodes",
        "1",
        "--deterministic",
        "--seed",
        "3",
    ],
    &[
        "eval",
        "run/checkpoints/update-00000006",
        "--episodes",
        "1",
        "--json",
    ],
    &[
        "compare", "c.toml", "--seeds", "1", "--out", "o", "--jobs", "1",
    ],
    &["compare", "--plot-only", "cmp"],
    &["compare", "--resume", "cmp", "--jobs", "1"],
    &[
        "compare", "c.toml", "--seeds", "1", "--out", "cmp", "--resume", "--shard", "0/1",
    ],
    &[
        "bench",
        "c.toml",
        "--seeds",
        "1",
        "--json",
        "--set",
        "train.total_steps=256",
    ],
    &["envs", "--json"],
    &[
        "envs",
        "--check",
        "CartPole-v1",
        "--steps",
        "10",
        "--seed",
        "1",
    ],
    &[
        "kl", "discrete", "--p", "0.3,0.7", "--q", "0.5,0.5", "--bits",
    ],
    &[
        "kl", "discrete", "--csv", "m.csv", "--p-col", "a", "--q-col", "b", "--json",
    ],
    &["kl", "gaussian", "--p", "0,1", "--q", "1,2"],
    &["kl", "vae", "--mu", "0.5,-1", "--log-var", "-0.5,0.2"],
];

pub const NUMERIC_FLAGS: &[&str] = &["--seeds", "--seed", "--episodes", "--jobs", "--steps"];
pub const VALUE_FLAGS: &[&str] = &[
    "--seeds",
    "--seed",
    "--episodes",
    "--jobs",
    "--steps",
    "--out",
    "--set",
    "--plot-only",
    "--shard",
    "--p",
    "--q",
    "--csv",
    "--p-col",
    "--q-col",
    "--mu",
    "--log-var",
    "--check",
];

/// A damaged command line: the arguments and what its error message must
/// mention (any one of them).
pub fn damaged_command(rng: &mut Rng) -> (Vec<OsString>, Vec<String>) {
    let mut args: Vec<String> = rng.pick(COMMANDS).iter().map(|s| s.to_string()).collect();
    let sub = args[0].clone();
    let mut names: Vec<String> = Vec::new();
    let value_of = |args: &[String], flags: &[&str]| -> Vec<usize> {
        (0..args.len().saturating_sub(1))
            .filter(|&i| flags.contains(&args[i].as_str()))
            .map(|i| i + 1)
            .collect()
    };
    let mut utf8_damage = false;
    for _ in 0..1 + usize::from(rng.chance(0.15)) {
        match rng.below(11) {
            0 => {
                let flag = rng
                    .pick(&[
                        "--bogus",
                        "--Out",
                        "---out",
                        "-x",
                        "-Z",
                        "--ünï",
                        "--seed-",
                        "--json=1",
                        "--help-me",
                        "--outt",
                    ])
                    .to_string();
                let at = 1 + rng.below(args.len());
                args.insert(at, flag.clone());
                names.push(flag.trim_end_matches("=1").to_string());
            }
            1 => {
                // A flag without its value (compare's --resume takes one optionally).
                let vals = value_of(&args, VALUE_FLAGS);
                let Some(&v) = (!vals.is_empty()).then(|| rng.pick(&vals)) else {
                    continue;
                };
                let flag = args.remove(v - 1);
                args.remove(v - 1);
                names.push(flag.clone());
                args.push(flag);
            }
            2 => {
                let vals = value_of(&args, NUMERIC_FLAGS);
                let Some(&v) = (!vals.is_empty()).then(|| rng.pick(&vals)) else {
                    continue;
                };
                let zero_bad = (sub == "compare" || sub == "bench") && args[v - 1] == "--seeds"
                    || args[v - 1] == "--episodes";
                let bad = if zero_bad && rng.chance(0.2) {
                    "0"
                } else {
                    rng.pick(&[
                        "-1",
                        "abc",
                        "1.5",
                        "99999999999999999999999",
                        "",
                        "0x10",
                        "NaN",
                        "inf",
                        " 1",
                        "1e3",
                        "+-1",
                        "١",
                        "18446744073709551616",
                    ])
                };
                names.push(args[v - 1].clone());
                args[v] = bad.to_string();
            }
            3 => {
                // A path that is not what the argument needs.
                let roles: Vec<(usize, &str)> = (1..args.len())
                    .filter_map(|i| {
                        let before = args[i - 1].as_str();
                        let role = match (args[i].as_str(), before) {
                            (_, "--out") => "out",
                            (_, "--csv") => "csv",
                            (_, "--plot-only") | (_, "--resume") if sub == "compare" => "cmp",
                            (_, "--resume") => "run",
                            ("c.toml", _) => "config",
                            (a, _) if sub == "eval" && a.starts_with("run") => "run",
                            _ => return None,
                        };
                        Some((i, role))
                    })
                    .collect();
                let Some(&(i, role)) = (!roles.is_empty()).then(|| rng.pick(&roles)) else {
                    continue;
                };
                let long = "x".repeat(300);
                let bad = match role {
                    "config" => rng
                        .pick(&[
                            "nope.toml",
                            "emptydir",
                            "/",
                            "garbage.bin",
                            "notadir.txt/x.toml",
                            "ünï.toml",
                            "run",
                            long.as_str(),
                            "m.csv",
                        ])
                        .to_string(),
                    "run" => rng
                        .pick(&[
                            "nope",
                            "c.toml",
                            "cmp",
                            "emptydir",
                            "run/checkpoints",
                            "garbage.bin",
                            "/",
                            "notadir.txt/x",
                        ])
                        .to_string(),
                    "cmp" => rng
                        .pick(&["nope", "run", "c.toml", "emptydir", "/", "garbage.bin"])
                        .to_string(),
                    "out" => rng
                        .pick(&[
                            "run",
                            "c.toml",
                            "garbage.bin/x",
                            "notadir.txt/o",
                            "/proc/klrl-fuzz",
                        ])
                        .to_string(),
                    _ => rng
                        .pick(&[
                            "nope.csv",
                            "garbage.bin",
                            "emptydir",
                            "c.toml",
                            "run/metrics.csv",
                            "/",
                        ])
                        .to_string(),
                };
                names.push(bad.clone());
                if role == "csv" {
                    names.extend(["a".to_string(), "--csv".to_string()]);
                }
                if role == "out" && sub == "compare" && args.iter().any(|a| a == "--resume") {
                    // --resume with another --out: the two directories differ.
                    names.push("--resume".into());
                }
                args[i] = bad;
            }
            4 => {
                let (extra, named): (&[&str], &str) = match sub.as_str() {
                    "train" => *rng.pick(&[
                        (&["--resume", "run"][..], "--resume"),
                        (&["--out", "o2"][..], "--out"),
                        (&["--seed", "1", "--seed", "2"][..], "--seed"),
                        (
                            &["--init-from", "run", "--resume", "run"][..],
                            "--init-from",
                        ),
                    ]),
                    "eval" => *rng.pick(&[
                        (&["--episodes", "2"][..], "--episodes"),
                        (&["--json", "--json"][..], "--json"),
                    ]),
                    "compare" => *rng.pick(&[
                        (&["--plot-only", "cmp", "c.toml"][..], "--plot-only"),
                        (&["--plot-only", "cmp", "--seeds", "2"][..], "--plot-only"),
                        (&["--plot-only", "cmp", "--out", "o"][..], "--plot-only"),
                        (&["--seeds", "2", "--seeds", "3"][..], "--seeds"),
                        (&["--jobs", "1", "--jobs", "2"][..], "--jobs"),
                    ]),
                    "kl" if args[1] == "discrete" => *rng.pick(&[
                        (&["--csv", "m.csv", "--p", "1,2"][..], "--csv"),
                        (&["--bits", "--bits"][..], "--bits"),
                    ]),
                    "kl" => *rng.pick(&[
                        (&["--json", "--json"][..], "--json"),
                        (&["--csv", "m.csv"][..], "--csv"),
                    ]),
                    "envs" => *rng.pick(&[
                        (&["--json", "--json"][..], "--json"),
                        (&["--check", "Nope-v0"][..], "Nope-v0"),
                    ]),
                    _ => *rng.pick(&[
                        (&["--seeds", "1", "--seeds", "2"][..], "--seeds"),
                        (&["--json", "--json"][..], "--json"),
                    ]),
                };
                args.extend(extra.iter().map(|s| s.to_string()));
                names.push(named.to_string());
            }
            5 => {
                if sub == "kl" && rng.chance(0.5) {
                    let bad = rng.pick(&["discret", "", "Gaussian", "kl"]).to_string();
                    names.push(if bad.is_empty() {
                        "''".into()
                    } else {
                        bad.clone()
                    });
                    args[1] = bad;
                } else {
                    let bad = rng
                        .pick(&[
                            "trian", "TRAIN", "", "tr ain", "évaluer", "kl2", "compare2", "-train",
                        ])
                        .to_string();
                    names.push(if bad.is_empty() {
                        "''".into()
                    } else {
                        bad.clone()
                    });
                    args[0] = bad;
                }
            }
            6 => {
                let extra = rng.pick(&["extra", "extra.toml", "ünï"]).to_string();
                args.push(extra.clone());
                names.push(extra);
            }
            7 if sub == "kl" => {
                let vals = value_of(&args, &["--p", "--q", "--mu", "--log-var"]);
                let Some(&v) = (!vals.is_empty()).then(|| rng.pick(&vals)) else {
                    continue;
                };
                let bad = match args[1].as_str() {
                    "discrete" => rng.pick(&[
                        "0.3,abc",
                        "",
                        "-1,2",
                        "nan,1",
                        "inf,1",
                        "1e400,1",
                        "0,0",
                        ",",
                        "0.3,,0.7",
                        "0.5",
                        "1;2",
                        " ",
                        "0.5,0.5,0",
                    ]),
                    "gaussian" => rng.pick(&[
                        "0", "0,-1", "0,0", "a,b", "0,1,2", "nan,1", "0,inf", "", "1e400,1",
                    ]),
                    _ => rng.pick(&["1", "nan", "", "a", "1e999", "1,2,3", "inf,0"]),
                };
                names.push(args[v - 1].clone());
                args[v] = bad.to_string();
            }
            8 => {
                args = ["compare", "c.toml", "--seeds", "1", "--out", "o", "--shard"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let bad = rng.pick(&[
                    "a",
                    "1/0",
                    "2/2",
                    "-1/2",
                    "1/",
                    "/",
                    "0/18446744073709551616",
                    "0/2/3",
                    "0／2",
                    "",
                    "1/1",
                ]);
                args.push(bad.to_string());
                names = vec!["--shard".into()];
            }
            9 => {
                // Definitely bad overrides; a resume refuses any but a few fields.
                let bad = if args.iter().any(|a| a == "--resume") && sub == "train" {
                    rng.pick(&[
                        "algo.clip_eps=0.1",
                        "train.n_envs=4",
                        "env.name=Acrobot-v1",
                        "train.total_steps=10",
                    ])
                } else {
                    rng.pick(&[
                        "algo.max_kl",
                        "foo.bar=1",
                        "=1",
                        "",
                        "algo",
                        "train.n_envs=abc",
                        "train.n_envs=0",
                    ])
                };
                if sub == "eval" || sub == "envs" || sub == "kl" {
                    names.push("--set".into());
                } else {
                    names.extend(["--set".to_string(), "train.n_envs".to_string()]);
                }
                args.push("--set".into());
                args.push(bad.to_string());
            }
            _ => {
                utf8_damage = true;
            }
        }
    }
    let mut os: Vec<OsString> = args.iter().map(OsString::from).collect();
    if utf8_damage || names.is_empty() {
        // Invalid UTF-8 where klrl wants text (a path may be any bytes on
        // Unix, so not in a path's place).
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let text: Vec<usize> = (0..args.len())
                .filter(|&i| {
                    i == 0
                        || args[i].starts_with("--")
                        || (i > 0
                            && [
                                "--seeds",
                                "--seed",
                                "--episodes",
                                "--jobs",
                                "--steps",
                                "--set",
                                "--shard",
                                "--p",
                                "--q",
                                "--mu",
                                "--log-var",
                                "--check",
                                "--p-col",
                                "--q-col",
                            ]
                            .contains(&args[i - 1].as_str()))
                })
                .collect();
            let i = *rng.pick(&text);
            os[i] = OsString::from_vec(vec![b'f', 0xff, b'o']);
            names.extend(["UTF-8".to_string(), "f\u{fffd}o".to_string()]);
        }
    }
    (os, names)
}

/// What a clap usage error may name instead: any argument of the command
/// line (clap names the one it stopped at, which for a conflict or a value
/// that looks like a flag is not necessarily the damaged one).
pub fn clap_names(args: &[OsString]) -> Vec<String> {
    let mut names: Vec<String> = ["[CONFIG]", "[CONFIGS]", "<PATH>", "subcommand"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for a in args {
        let a = a.to_string_lossy().to_string();
        if a.starts_with('-') && a.len() >= 2 {
            names.push(format!("'{}", a.chars().take(2).collect::<String>()));
        }
        if a.chars().count() >= 2 {
            names.push(a.split('=').next().unwrap_or(&a).to_string());
        }
    }
    names
}

pub fn fuzz() -> Tally {
    let start = Instant::now();
    let mut t = Tally::new("command lines");
    let work = scratch_dir("fuzz-cli");
    std::fs::write(
        work.join("c.toml"),
        TINY_PPO.replace("total_steps = 768", "total_steps = 256"),
    )
    .unwrap();
    train_run(&work, "run", TINY_PPO);
    std::fs::remove_file(work.join("run.toml")).unwrap();
    let out = crate::common::run(
        &["compare", "c.toml", "--seeds", "1", "--out", "cmp"],
        &work,
    );
    assert!(out.status.success(), "{}", crate::common::text(&out.stderr));
    std::fs::write(work.join("m.csv"), "a,b\n1,2\n3,4\n").unwrap();
    std::fs::write(work.join("garbage.bin"), Rng::new(7).bytes(4096)).unwrap();
    std::fs::write(work.join("notadir.txt"), "text\n").unwrap();
    std::fs::create_dir(work.join("emptydir")).unwrap();
    let entries = |d: &Path| -> Vec<OsString> {
        let mut v: Vec<OsString> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let top = entries(&work);
    let before = (snapshot(&work.join("run")), snapshot(&work.join("cmp")));
    let mut rng = Rng::new(0x6b6c_726c_0003);
    for case in 0..cases(1500) {
        let (args, names) = damaged_command(&mut rng);
        let what = format!(
            "klrl {}",
            args.iter()
                .map(|a| format!("{:?}", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let (o, f) = binary(&args, &work);
        t.subprocess += 1;
        let mut names = names;
        if f.stderr.contains("Usage: klrl") || f.stderr.contains("try '--help'") {
            names.extend(clap_names(&args));
        } else {
            // klrl's own errors may name another flag of the command line
            // than the one damaged (a damaged flag leaves its neighbour
            // without a value).
            names.extend(
                args.iter()
                    .map(|a| a.to_string_lossy().to_string())
                    .filter(|a| a.starts_with("--") && a.len() > 2),
            );
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        t.bad_input(case, &what, &o, &f.stderr, &names, None);
        if entries(&work) != top {
            note(
                &mut t.reporting,
                "a rejected command line wrote files".into(),
                format!("case {case}: {what}: now {:?}", entries(&work)),
            );
            for e in entries(&work) {
                if !top.contains(&e) {
                    let p = work.join(&e);
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
    }
    if (snapshot(&work.join("run")), snapshot(&work.join("cmp"))) != before {
        note(
            &mut t.reporting,
            "a rejected command line changed run/ or cmp/".into(),
            work.display().to_string(),
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    t.seconds = start.elapsed().as_secs_f64();
    t
}
