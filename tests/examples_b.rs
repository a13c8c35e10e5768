//! The examples `kl_vs_trust_region` and `kl_basics` run in quick mode
//! (`KLRL_EXAMPLE_QUICK=1`) into a temporary directory: they must finish,
//! write decodable PNGs and print sane numbers, so they cannot rot.
//!
//! Each example is run as `NAME OUT` (the binary `cargo test` built, see
//! `common`).

use std::path::{Path, PathBuf};

mod common;

/// A fresh directory under the system temp dir (removed by the test on
/// success).
fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "klrl-examples-b-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run example `name` in quick mode with output directory `out`; its stdout.
fn run_example(name: &str, out: &Path) -> String {
    let output = common::example(name)
        .arg(out)
        .env("KLRL_EXAMPLE_QUICK", "1")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Decode a PNG; its size. Fails on a blank (one-colour) image.
fn png_size(path: &Path) -> (u32, u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let first = &buf[..3];
    assert!(
        buf.chunks(3).any(|p| p != first),
        "{} is blank",
        path.display()
    );
    (info.width, info.height)
}

/// The number after `key` in `line` (up to the next space or comma).
fn number_after(line: &str, key: &str) -> f64 {
    let rest = &line[line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        + key.len()..];
    let end = rest.find([' ', ',', ')']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key:?} in {line:?}: {e}"))
}

fn line_starting<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"))
}

#[test]
fn kl_basics_fits_and_plots() {
    let out = temp_dir("kl_basics");
    let stdout = run_example("kl_basics", &out);

    // The die: KL(fair ‖ six-1/2 die) in closed form, in nats and bits.
    let die = line_starting(&stdout, "KL(fair ‖ loaded (six 1/2))");
    let expected = (5.0 * (5.0f64 / 3.0).ln() + (1.0f64 / 3.0).ln()) / 6.0;
    assert!((number_after(die, ") = ") - expected).abs() < 1e-4, "{die}");
    assert!((number_after(die, "nats = ") - expected / 2f64.ln()).abs() < 1e-4);
    // A die that never rolls one: infinite one way, finite the other.
    let no_ones = line_starting(&stdout, "KL(fair ‖ no ones");
    assert!(no_ones.contains("= inf nats"), "{no_ones}");
    assert!((number_after(no_ones, "‖ fair) = ") - (1.2f64).ln()).abs() < 1e-4);

    // Gaussians: ln 2 + (1 + 1)/8 − ½ and ln ½ + (4 + 1)/2 − ½.
    let g = line_starting(&stdout, "KL(N(0,1) ‖ N(1,2²))");
    assert!((number_after(g, "N(1,2²)) = ") - (2f64.ln() - 0.25)).abs() < 1e-4);
    assert!((number_after(g, "‖ N(0,1)) = ") - (2.0 - 2f64.ln())).abs() < 1e-4);

    // Forward KL onto a Gaussian = moment matching (mean 0.4, variance
    // 0.4·(0.36 + 4) + 0.6·(0.64 + 4) − 0.16 = 4.368); the coarse quick grid
    // gets within 0.01.
    let fwd = line_starting(&stdout, "forward fit:");
    let (mu_f, sigma_f) = (number_after(fwd, "mu = "), number_after(fwd, "sigma = "));
    assert!((mu_f - 0.4).abs() < 0.01, "{fwd}");
    assert!((sigma_f - 4.368f64.sqrt()).abs() < 0.01, "{fwd}");
    // Reverse KL locks onto the heavier peak at 2 (σ near its 0.8).
    let rev = line_starting(&stdout, "reverse fit:");
    let (mu_r, sigma_r) = (number_after(rev, "mu = "), number_after(rev, "sigma = "));
    assert!((mu_r - 2.0).abs() < 0.1, "{rev}");
    assert!(sigma_r > 0.6 && sigma_r < 1.0, "{rev}");
    assert!(sigma_f > 2.0 * sigma_r);
    let other = line_starting(&stdout, "reverse KL's other local minimum:");
    assert!((number_after(other, "mu = ") + 2.0).abs() < 0.1, "{other}");
    assert!(number_after(other, "KL(q ‖ p) = ") > number_after(rev, "KL(q ‖ p) = "));

    assert_eq!(png_size(&out.join("forward_vs_reverse.png")), (1000, 620));
    assert!(stdout.lines().last().unwrap().starts_with("done: "));
    std::fs::remove_dir_all(&out).unwrap();
}

/// The rows of the markdown tables in `text` for `learner` (one per task).
fn rows<'a>(text: &'a str, learner: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .filter(|l| l.starts_with(&format!("| {learner} |")))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn kl_vs_trust_region_writes_tables_and_plots() {
    let out = temp_dir("kl_vs_trust_region");
    let stdout = run_example("kl_vs_trust_region", &out);
    assert!(
        stdout.contains("done: 32 configs, 32 runs"),
        "unexpected output:\n{stdout}"
    );
    let tasks = ["cartpole", "acrobot", "bandit", "pendulum"];
    for task in tasks {
        for png in ["return.png", "kl.png"] {
            assert_eq!(png_size(&out.join(task).join(png)), (1000, 620));
        }
        assert!(out.join(task).join("summary.md").is_file());
    }
    // Only the bandit reports regret.
    png_size(&out.join("bandit/regret.png"));
    assert!(!out.join("cartpole/regret.png").exists());

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let learners = [
        ("vanilla-pg", "nothing"),
        ("ppo-clip", "nothing"),
        ("ppo-kl-fixed", "nothing (target)"),
        ("ppo-kl-adaptive", "nothing (target)"),
        ("ppo-kl-dual", "nothing (target)"),
        ("ppo-kl-limit", "mean KL"),
        ("ppo-projection", "every state's KL"),
        ("trpo", "mean KL"),
    ];
    for (learner, bounds) in learners {
        let rows = rows(&summary, learner);
        assert_eq!(
            rows.len(),
            tasks.len(),
            "{learner}: one row per task in\n{summary}"
        );
        for row in &rows {
            // learner | bounds | final return | eval | steps | mean KL | max KL | limit |
            // above limit | worst | > 1.5× / > 3× | …
            assert_eq!(row[1], bounds, "{row:?}");
            let mean: f64 = row[5].parse().unwrap();
            let max: f64 = row[6].split(' ').next().unwrap().parse().unwrap();
            assert!(mean >= 0.0 && max >= 0.0 && max.is_finite(), "{row:?}");
            // A hard limit is never exceeded, even in the short quick runs.
            if bounds == "mean KL" || bounds == "every state's KL" {
                let limit: f64 = row[7].parse().unwrap();
                assert!(max <= limit, "{learner} exceeded its limit: {row:?}");
                assert_eq!(row[8], "0.0 %", "{row:?}");
            }
        }
        // The bandit row (third task): regret per step in [0, 1], entropy in [0, ln 20].
        let bandit = &rows[2];
        let regret: f64 = bandit[11].split(' ').next().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&regret), "{bandit:?}");
        let entropy: f64 = bandit[12].parse().unwrap();
        assert!((0.0..=20f64.ln() + 1e-9).contains(&entropy), "{bandit:?}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// The reference-policy story: the production policy, the seven learners,
/// the table and the trade-off plot; every bounded learner stays within its
/// ε_ref on every update, and the tighter the bound, the closer to
/// production.
#[test]
fn recommender_reference_writes_table_and_plots() {
    let out = temp_dir("recommender_reference");
    let stdout = run_example("recommender_reference", &out);
    assert!(
        stdout.contains("done: 7 learners, 7 runs, 0 updates above ε_ref"),
        "unexpected output:\n{stdout}"
    );
    assert_eq!(png_size(&out.join("tradeoff.png")), (1000, 620));
    for png in ["return.png", "kl.png", "regret.png", "kl_ref.png"] {
        assert_eq!(png_size(&out.join("compare").join(png)), (1000, 620));
    }
    assert!(out.join("production/metrics.csv").is_file());
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let mut late_kl = Vec::new();
    for eps in ["1.0", "0.3", "0.1", "0.03"] {
        let rows = rows(&summary, &format!("reference-{eps}"));
        assert_eq!(rows.len(), 1, "{summary}");
        // learner | bounds | regret (late) | KL last 10 % | largest | above ε | entropy
        let row = &rows[0];
        let largest: f64 = row[4].parse().unwrap();
        let bound: f64 = eps.parse().unwrap();
        assert!(largest <= bound, "{row:?}");
        assert_eq!(row[5], "0.0%", "{row:?}");
        late_kl.push(row[3].parse::<f64>().unwrap());
    }
    // Measured for the baselines too (a coefficient-0 reference term).
    for learner in ["no-reference", "ppo-kl-limit", "trpo"] {
        let row = &rows(&summary, learner)[0];
        assert!(row[4].parse::<f64>().unwrap() > 0.0, "{row:?}");
        assert_eq!(row[5], "–", "{row:?}");
    }
    assert!(
        late_kl.windows(2).all(|w| w[0] >= w[1]),
        "KL to production should shrink with ε_ref: {late_kl:?}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
