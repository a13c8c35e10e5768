//! metrics.csv damaged, then read by `compare --plot-only`, `train --resume`
//! and `kl discrete --csv`.

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use klrl_envs::Registry;

use super::cases;
use super::harness::{binary, first_lines, in_process, note, panic_message, Outcome, Tally};
use super::runs::{fix_wall_clock, interrupted_run, TINY_PPO, TINY_TRPO};
use crate::seeded::{copy_tree, scratch_dir, Rng};

/// Cells that are not numbers, or numbers no metric has.
pub const BAD_CELLS: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "abc",
    "1e999",
    "-1",
    "0x1",
    "\"quoted\"",
    "\"unterminated",
    "1,5",
    "18446744073709551616",
    "-0",
    "💥",
    " 1",
    "1e-400",
    "9007199254740993",
    "--",
    "\t",
    "\"a\"\"b\"",
];

/// Damage `path` (a metrics.csv): rows and cells, the header, bytes, or the
/// file itself.
pub fn damage_metrics(rng: &mut Rng, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let n = lines.len();
    let row = |rng: &mut Rng| 1 + rng.below(n.max(2) - 1);
    let bytes: Vec<u8> = match rng.below(18) {
        0 => {
            let mut b = text.into_bytes();
            let len = rng.below(b.len() + 1);
            b.truncate(len);
            b
        }
        1 => {
            // A row cut short.
            let i = row(rng);
            let cells: Vec<&str> = lines[i].split(',').collect();
            let keep = rng.below(cells.len());
            lines[i] = cells[..keep].join(",");
            (lines.join("\n") + "\n").into_bytes()
        }
        2 => {
            // A row, or the header, with a cell too many.
            let i = if rng.chance(0.7) { row(rng) } else { 0 };
            lines[i].push_str(if i == 0 { ",extra" } else { ",1" });
            (lines.join("\n") + "\n").into_bytes()
        }
        3..=5 => {
            // A cell that is no number.
            for _ in 0..1 + rng.below(3) {
                let i = row(rng);
                let mut cells: Vec<String> = lines[i].split(',').map(String::from).collect();
                let j = rng.below(cells.len());
                cells[j] = rng.pick(BAD_CELLS).to_string();
                lines[i] = cells.join(",");
            }
            (lines.join("\n") + "\n").into_bytes()
        }
        6 => {
            let mut b = text.into_bytes();
            let at = rng.below(b.len() + 1);
            let len = 1 + rng.below(64);
            let junk = rng.bytes(len);
            let end = (at + junk.len()).min(b.len());
            b.splice(at..end, junk);
            b
        }
        7 => {
            let len = rng.below(2000);
            rng.bytes(len)
        }
        8 => Vec::new(),
        9 => (lines[1..].join("\n") + "\n").into_bytes(),
        10 => (lines[0].clone() + "\n").into_bytes(),
        11 => {
            // The header again in the middle, or renamed, reordered or
            // missing columns.
            match rng.below(4) {
                0 => {
                    let h = lines[0].clone();
                    lines.insert(row(rng), h);
                }
                1 => {
                    let mut cols: Vec<String> = lines[0].split(',').map(String::from).collect();
                    let j = rng.below(cols.len());
                    cols[j] = rng
                        .pick(&["", "Update", "env_steps ", "kl", "ünï", "env_steps"])
                        .to_string();
                    lines[0] = cols.join(",");
                }
                2 => {
                    let mut cols: Vec<&str> = lines[0].split(',').collect();
                    let (a, b) = (rng.below(cols.len()), rng.below(cols.len()));
                    cols.swap(a, b);
                    lines[0] = cols.join(",");
                }
                _ => {
                    // A column gone from every line.
                    let j = rng.below(lines[0].split(',').count());
                    for l in lines.iter_mut() {
                        let mut cells: Vec<&str> = l.split(',').collect();
                        if j < cells.len() {
                            cells.remove(j);
                        }
                        *l = cells.join(",");
                    }
                }
            }
            (lines.join("\n") + "\n").into_bytes()
        }
        12 => {
            let mut t = text.replace('\n', "\r\n");
            if rng.chance(0.5) {
                t.insert(0, '\u{feff}');
            }
            t.into_bytes()
        }
        13 => {
            // Rows repeated, reordered, with impossible counters.
            let i = row(rng);
            match rng.below(4) {
                0 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                1 => lines[1..].reverse(),
                _ => {
                    let mut cells: Vec<String> = lines[i].split(',').map(String::from).collect();
                    let j = rng.below(2); // update or env_steps
                    cells[j] = rng
                        .pick(&["18446744073709551615", "-5", "0", "1e300", "99999999"])
                        .to_string();
                    lines[i] = cells.join(",");
                }
            }
            (lines.join("\n") + "\n").into_bytes()
        }
        14 => {
            let i = row(rng);
            lines[i] = "9".repeat(100_000);
            (lines.join("\n") + "\n").into_bytes()
        }
        15 => {
            let mut b = text.into_bytes();
            let at = rng.below(b.len() + 1);
            b.splice(at..at, [0xff, 0x00, 0xfe]).for_each(drop);
            b
        }
        16 => {
            std::fs::remove_file(path).unwrap();
            if rng.chance(0.5) {
                std::fs::create_dir(path).unwrap();
            }
            return;
        }
        _ => {
            // Rows after the header that are blank or only commas.
            let i = row(rng);
            lines.insert(i, rng.pick(&["", ",", ",,,,", " "]).to_string());
            (lines.join("\n") + "\n").into_bytes()
        }
    };
    std::fs::write(path, bytes).unwrap();
}

/// The parts of a finished comparison `--plot-only` reads.
pub fn copy_comparison(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("runs")).unwrap();
    std::fs::copy(from.join("compare.json"), to.join("compare.json")).unwrap();
    for e in std::fs::read_dir(from.join("runs")).unwrap().flatten() {
        let run = to.join("runs").join(e.file_name());
        std::fs::create_dir_all(&run).unwrap();
        for f in ["config.toml", "summary.json", "metrics.csv"] {
            std::fs::copy(e.path().join(f), run.join(f)).unwrap();
        }
    }
}

pub fn fuzz() -> Tally {
    let start = Instant::now();
    let mut t = Tally::new("metrics.csv");
    let registry = Registry::builtin();
    let work = scratch_dir("fuzz-metrics");
    let interrupted = interrupted_run(&work, "interrupted", TINY_PPO);
    std::fs::write(
        work.join("ppo.toml"),
        TINY_PPO.replace("total_steps = 768", "total_steps = 256"),
    )
    .unwrap();
    std::fs::write(
        work.join("trpo.toml"),
        TINY_TRPO.replace("total_steps = 768", "total_steps = 256"),
    )
    .unwrap();
    let out = crate::common::run(
        &[
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "1",
            "--out",
            "cmp",
        ],
        &work,
    );
    assert!(out.status.success(), "{}", crate::common::text(&out.stderr));
    let comparison = work.join("cmp");
    for run in ["ppo-s0", "trpo-s0"] {
        fix_wall_clock(&comparison.join("runs").join(run).join("metrics.csv"));
    }
    let mut rng = Rng::new(0x6b6c_726c_0004);
    for case in 0..cases(1100) {
        let dir = work.join(format!("case-{case}"));
        let reader = rng.below(3);
        let (metrics, args, what): (PathBuf, Vec<OsString>, &str) = match reader {
            0 => {
                copy_comparison(&comparison, &dir);
                let run = if rng.chance(0.5) { "ppo-s0" } else { "trpo-s0" };
                let m = dir.join("runs").join(run).join("metrics.csv");
                (
                    m,
                    vec!["compare".into(), "--plot-only".into(), dir.clone().into()],
                    "compare --plot-only",
                )
            }
            1 => {
                copy_tree(&interrupted, &dir);
                let m = dir.join("metrics.csv");
                (
                    m,
                    vec!["train".into(), "--resume".into(), dir.clone().into()],
                    "train --resume",
                )
            }
            _ => {
                std::fs::create_dir_all(&dir).unwrap();
                let m = dir.join("metrics.csv");
                std::fs::copy(interrupted.join("metrics.csv"), &m).unwrap();
                let cols = ["ep_len_mean", "env_steps", "kl_old_new", "beta", "nope"];
                let (p, q) = (rng.pick(&cols).to_string(), rng.pick(&cols).to_string());
                (
                    m.clone(),
                    vec![
                        "kl".into(),
                        "discrete".into(),
                        "--csv".into(),
                        m.into(),
                        "--p-col".into(),
                        p.into(),
                        "--q-col".into(),
                        q.into(),
                    ],
                    "kl discrete --csv",
                )
            }
        };
        damage_metrics(&mut rng, &metrics);
        // The reader every command uses: an error names the file.
        let read = catch_unwind(AssertUnwindSafe(|| {
            klrl_runner::metrics::MetricsTable::read(&metrics)
                .map(drop)
                .map_err(|e| e.to_string())
        }));
        drop(std::panic::take_hook());
        let metrics_name = metrics.display().to_string();
        match read {
            Err(p) => t.outcome(
                case,
                "MetricsTable::read",
                &Outcome::Panicked(panic_message(&*p)),
                Some(&metrics),
            ),
            Ok(Err(e)) if !e.contains(&metrics_name) => note(
                &mut t.reporting,
                "MetricsTable::read error names no file".into(),
                format!("case {case}: `{e}`"),
            ),
            _ => {}
        }
        t.kind = what.to_string();
        let what = format!("{what} on a damaged metrics.csv (case-{case})");
        let (o, message) = if reader == 2 {
            let (o, f) = binary(&args, &work);
            t.subprocess += 1;
            (o, f.stderr)
        } else {
            let o = in_process(&args);
            let message = if o == Outcome::Exit(0) {
                String::new()
            } else if reader == 0 {
                klrl_runner::compare::plot_only(&dir, &registry)
                    .err()
                    .map_or("(no error the second time)".into(), |e| e.to_string())
            } else {
                klrl_runner::Run::resume(&dir, &registry)
                    .err()
                    .map_or("(no error the second time)".into(), |e| e.to_string())
            };
            (o, message)
        };
        if o == Outcome::Exit(0) {
            t.accepted += 1;
            t.accepted_run += 1;
            t.outcome(case, &what, &o, Some(&dir));
            if reader == 1 {
                // Resumed: the metrics it wrote read back, one row per update.
                let rows =
                    klrl_runner::metrics::MetricsTable::read(&metrics).map(|m| m.column("update"));
                if !matches!(&rows, Ok(Some(u)) if *u == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) {
                    note(
                        &mut t.info,
                        "a resume accepted a damaged metrics.csv and left it damaged".into(),
                        format!(
                            "case {case}: updates now {:?}",
                            rows.as_ref()
                                .map(|r| r.as_ref().map(|u| u.len()))
                                .map_err(|e| first_lines(&e.to_string(), 1))
                        ),
                    );
                }
            }
        } else if reader == 2 {
            // kl names the file, or the flag and column it could not use.
            t.bad_input(
                case,
                &what,
                &o,
                &message,
                &[&metrics_name, "--p-col", "--q-col", "--csv"],
                Some(&dir),
            );
        } else {
            t.bad_input(case, &what, &o, &message, &[&metrics_name], Some(&dir));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&work);
    t.seconds = start.elapsed().as_secs_f64();
    t
}
