//! `klrl compare`: two tiny configs × two seeds; the PNG plots decode, the
//! markdown table parses, `--plot-only` redraws them from the saved metrics,
//! and a bad config stops everything before anything is written.

use std::path::Path;

mod common;
use common::{run, temp_dir};

const PPO: &str = "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 1024\nn_envs = 2\nn_steps = 64\n\
[policy]\nhidden = [8]\n[algo]\nname = \"ppo\"\nobjective = \"kl_adaptive\"\nn_epochs = 2\nminibatch_size = 64\n\
[run]\neval_episodes = 0\n";
const TRPO: &str = "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 1024\nn_envs = 2\nn_steps = 64\n\
[policy]\nhidden = [8]\n[algo]\nname = \"trpo\"\nmax_kl = 0.01\nvf_epochs = 2\nvf_minibatch_size = 64\n\
[run]\neval_episodes = 0\n";

/// Decode a PNG and return its size; fails on a broken file.
fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    // Not a blank image: more than one colour.
    let first = &buf[..3];
    assert!(
        buf.chunks(3).any(|p| p != first),
        "{} is blank",
        path.display()
    );
    (info.width, info.height)
}

/// A CSV without the named columns (the header must have them).
fn drop_columns(csv: &str, names: &[&str]) -> String {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let keep: Vec<bool> = header.iter().map(|h| !names.contains(h)).collect();
    assert_eq!(
        keep.iter().filter(|k| !**k).count(),
        names.len(),
        "{header:?}"
    );
    let pick = |l: &str| -> String {
        l.split(',')
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(c, _)| c)
            .collect::<Vec<_>>()
            .join(",")
    };
    std::iter::once(pick(&header.join(",")))
        .chain(lines.map(pick))
        .map(|l| l + "\n")
        .collect()
}

/// The markdown table rows (cells trimmed), header excluded.
fn table(md: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = md.lines().filter(|l| l.starts_with('|'));
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = cells(lines.next().unwrap());
    let sep = lines.next().unwrap();
    assert!(sep.starts_with("|---"));
    (header, lines.map(cells).collect())
}

#[test]
fn compare_runs_every_config_and_seed_and_draws_the_plots() {
    let dir = temp_dir("compare");
    std::fs::write(dir.join("ppo.toml"), PPO).unwrap();
    std::fs::write(dir.join("trpo.toml"), TRPO).unwrap();
    let out = run(
        &[
            "compare",
            "ppo.toml",
            "trpo.toml",
            "--seeds",
            "2",
            "--out",
            "cmp",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmp = dir.join("cmp");
    for (label, seed) in [("ppo", 0), ("ppo", 1), ("trpo", 0), ("trpo", 1)] {
        let r = cmp.join(format!("runs/{label}-s{seed}"));
        assert!(r.join("metrics.csv").is_file(), "{}", r.display());
        let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("seed = {seed}")), "{cfg}");
    }
    assert_eq!(png_size(&cmp.join("return.png")), (1000, 620));
    assert_eq!(png_size(&cmp.join("kl.png")), (1000, 620));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("limit 0.01 (target): ") && stdout.contains("limit 0.01 (mean): "),
        "{stdout}"
    );
    assert!(stdout.contains("% of updates above, worst "), "{stdout}");
    let md = std::fs::read_to_string(cmp.join("summary.md")).unwrap();
    let (header, rows) = table(&md);
    assert_eq!(header.len(), 12, "{header:?}");
    assert_eq!(header[0], "config");
    assert_eq!(
        &header[7..11],
        &[
            "limit (kind)",
            "updates above limit",
            "worst KL/limit",
            "> 1.5× / > 3× target"
        ]
    );
    assert_eq!(rows.len(), 2, "{md}");
    assert_eq!(rows[0][0], "ppo");
    assert_eq!(rows[0][1], "ppo (kl_adaptive)");
    assert_eq!(rows[1][0], "trpo");
    for row in &rows {
        assert_eq!(row.len(), 12);
        assert_eq!(row[2], "2");
        // final return "m ± s" with numbers.
        let (m, s) = row[3].split_once(" ± ").unwrap();
        assert!(m.parse::<f64>().unwrap() > 0.0 && s.parse::<f64>().unwrap() >= 0.0);
        assert!(row[5].parse::<f64>().unwrap() >= 0.0, "mean KL {row:?}");
        assert!(row[8].ends_with('%'));
        assert!(
            row[9].parse::<f64>().unwrap() >= 0.0,
            "worst KL/limit {row:?}"
        );
    }
    // PPO's adaptive penalty steers toward a target: shares above 1.5× and 3×.
    assert_eq!(rows[0][7], "0.01 (target)");
    let (a, b) = rows[0][10].split_once(" / ").unwrap();
    assert!(a.ends_with('%') && b.ends_with('%'), "{md}");
    // TRPO's line search keeps every update within max_kl, a hard bound.
    assert_eq!(rows[1][7], "0.01 (mean)");
    assert_eq!(rows[1][8], "0.0%", "{md}");
    assert!(rows[1][9].parse::<f64>().unwrap() <= 1.0, "{md}");
    assert_eq!(rows[1][10], "–");
    // --plot-only redraws from the saved metrics.
    std::fs::remove_file(cmp.join("return.png")).unwrap();
    std::fs::remove_file(cmp.join("kl.png")).unwrap();
    std::fs::remove_file(cmp.join("summary.md")).unwrap();
    let out = run(&["compare", "--plot-only", "cmp"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    png_size(&cmp.join("return.png"));
    png_size(&cmp.join("kl.png"));
    assert_eq!(std::fs::read_to_string(cmp.join("summary.md")).unwrap(), md);
    // Results from before the kl_limit and step_frac columns: the limits
    // come from each run's config.toml, so the summary is the same.
    for (label, seed) in [("ppo", 0), ("ppo", 1), ("trpo", 0), ("trpo", 1)] {
        let csv = cmp.join(format!("runs/{label}-s{seed}/metrics.csv"));
        std::fs::write(
            &csv,
            drop_columns(
                &std::fs::read_to_string(&csv).unwrap(),
                &["kl_limit", "step_frac"],
            ),
        )
        .unwrap();
    }
    let out = run(&["compare", "--plot-only", "cmp"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    png_size(&cmp.join("kl.png"));
    assert_eq!(std::fs::read_to_string(cmp.join("summary.md")).unwrap(), md);
    // The output directory is never reused.
    let out = run(
        &["compare", "ppo.toml", "--seeds", "1", "--out", "cmp"],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_config_in_a_comparison_writes_nothing() {
    let dir = temp_dir("compare-bad");
    std::fs::write(dir.join("ppo.toml"), PPO).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        TRPO.replace("max_kl = 0.01", "max_kl = -0.01"),
    )
    .unwrap();
    let out = run(&["compare", "ppo.toml", "bad.toml", "--out", "cmp"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: algo.max_kl: must be > 0, got -0.01"),
        "{err}"
    );
    // Nothing announced either: the "training N runs" line comes only once
    // every config is valid.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.trim().is_empty(), "stdout: {said}");
    assert!(!dir.join("cmp").exists());
    let out = run(
        &[
            "compare",
            "ppo.toml",
            "--set",
            "algo.nope=1",
            "--out",
            "cmp",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("cmp").exists());
    let out = run(&["compare", "--plot-only", "nowhere"], &dir);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
