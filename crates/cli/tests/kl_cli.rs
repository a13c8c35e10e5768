//! `klrl kl` run as a real process: JSON output against the toolbox, the CSV
//! path, the human table, and exit status 2 with a one-line message for each
//! kind of bad input.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use klrl_kl::{univariate_kl, vae_kl, vae_kl_per_dim, Base, DiscreteComparison};
use serde_json::Value;

fn klrl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klrl"))
        .args(args)
        .output()
        .expect("run klrl")
}

/// Run, expect success, parse stdout as exactly one JSON object.
fn json(args: &[&str]) -> Value {
    let out = klrl(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: status {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one line of JSON: {stdout}"
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
    assert!(v.is_object());
    v
}

/// A JSON number, or +∞ for the string "inf".
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        _ => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

#[track_caller]
fn assert_close(got: f64, want: f64) {
    assert!(
        got == want || (got - want).abs() <= 1e-14 * want.abs(),
        "got {got}, want {want}"
    );
}

/// Run, expect exit status 2 and a single `error: …` line on stderr that
/// contains every one of `needles`; stdout must be empty.
#[track_caller]
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let out = klrl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout not empty");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: {stderr:?} lacks {n:?}");
    }
}

/// A CSV file under the temp dir with a name unique to this process and call;
/// removed on drop.
struct TempCsv(PathBuf);

impl TempCsv {
    fn new(contents: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "klrl_kl_cli_{}_{n}_{}.csv",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&path, contents).unwrap();
        TempCsv(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempCsv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_discrete_json(v: &Value, c: &DiscreteComparison) {
    assert_close(num(&v["kl_pq"]), c.kl_pq);
    assert_close(num(&v["kl_qp"]), c.kl_qp);
    assert_close(num(&v["js"]), c.js);
    assert_close(num(&v["cross_entropy_pq"]), c.cross_entropy_pq);
    assert_close(num(&v["entropy_p"]), c.entropy_p);
    assert_close(num(&v["entropy_q"]), c.entropy_q);
    assert_eq!(v["unit"], c.base.unit());
}

#[test]
fn discrete_json_matches_the_toolbox() {
    let v = json(&[
        "kl",
        "discrete",
        "--p",
        "0.3,0.5,0.2",
        "--q",
        "0.25,0.5,0.25",
        "--json",
    ]);
    let c = DiscreteComparison::new(&[0.3, 0.5, 0.2], &[0.25, 0.5, 0.25], Base::Nats).unwrap();
    check_discrete_json(&v, &c);
    // Independent check of one value: Σ p ln(p/q).
    let kl = 0.3 * (0.3f64 / 0.25).ln() + 0.2 * (0.2f64 / 0.25).ln();
    assert!((num(&v["kl_pq"]) - kl).abs() < 1e-15);
}

#[test]
fn discrete_counts_and_bits() {
    // A fair die against a loaded one, given as counts, in bits.
    let v = json(&[
        "kl",
        "discrete",
        "--p",
        "10, 10, 10, 10, 10, 10",
        "--q",
        "1,1,1,1,1,5",
        "--bits",
        "--json",
    ]);
    let c =
        DiscreteComparison::new(&[1.0; 6], &[0.1, 0.1, 0.1, 0.1, 0.1, 0.5], Base::Bits).unwrap();
    check_discrete_json(&v, &c);
    assert_eq!(v["unit"], "bits");
    assert!((num(&v["entropy_p"]) - 6f64.log2()).abs() < 1e-14);
}

#[test]
fn infinite_divergence_is_the_string_inf() {
    let v = json(&[
        "kl",
        "discrete",
        "--p",
        "0.2,0.3,0.5",
        "--q",
        "0.4,0.6,0",
        "--json",
    ]);
    assert_eq!(v["kl_pq"], "inf");
    assert_eq!(v["cross_entropy_pq"], "inf");
    assert!(v["kl_qp"].is_f64());
    assert!(num(&v["js"]).is_finite());
}

#[test]
fn discrete_human_output_has_both_directions_unit_and_reading() {
    let out = klrl(&["kl", "discrete", "--p", "0.1,0.9", "--q", "0.5,0.5"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    for label in [
        "KL(P‖Q)",
        "KL(Q‖P)",
        "JS(P,Q)",
        "H(P)",
        "H(Q)",
        "H(P,Q)",
        "nats",
    ] {
        assert!(s.contains(label), "missing {label} in\n{s}");
    }
    let c = DiscreteComparison::new(&[0.1, 0.9], &[0.5, 0.5], Base::Nats).unwrap();
    assert!(c.kl_qp > c.kl_pq);
    assert!(s.contains(&format!("{:.6}", c.kl_qp)), "{s}");
    assert!(s.contains("KL(Q‖P) is larger"), "{s}");
    assert!(s.contains("outcome 0"), "{s}");

    let out = klrl(&["kl", "discrete", "--p", "0.5,0.5", "--q", "1,0", "--bits"]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("bits") && s.contains("inf"), "{s}");
    assert!(s.contains("KL(P‖Q) is infinite"), "{s}");
}

#[test]
fn csv_columns_by_header_name() {
    let csv = TempCsv::new(
        "position,group_a,group_b\n1,120,100\n2,340,310\n3,560,600\n4,410,450\n\
         5,230,260\n6,95,120\n7,40,55\n8,5,3\n",
    );
    let a = [120.0, 340.0, 560.0, 410.0, 230.0, 95.0, 40.0, 5.0];
    let b = [100.0, 310.0, 600.0, 450.0, 260.0, 120.0, 55.0, 3.0];
    let v = json(&[
        "kl",
        "discrete",
        "--csv",
        csv.path(),
        "--p-col",
        "group_a",
        "--q-col",
        "group_b",
        "--json",
    ]);
    check_discrete_json(&v, &DiscreteComparison::new(&a, &b, Base::Nats).unwrap());
    // Swapping the columns swaps the directions.
    let w = json(&[
        "kl",
        "discrete",
        "--csv",
        csv.path(),
        "--p-col",
        "group_b",
        "--q-col",
        "group_a",
        "--json",
    ]);
    assert_close(num(&w["kl_pq"]), num(&v["kl_qp"]));

    let out = klrl(&[
        "kl",
        "discrete",
        "--csv",
        csv.path(),
        "--p-col",
        "group_a",
        "--q-col",
        "group_b",
    ]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("column 'group_a'") && s.contains("line "), "{s}");
}

#[test]
fn gaussian_json_matches_the_toolbox() {
    let v = json(&["kl", "gaussian", "--p", "0,1", "--q", "-1,0.5", "--json"]);
    assert_close(
        num(&v["kl_pq"]),
        univariate_kl(0.0, 1.0, -1.0, 0.5).unwrap(),
    );
    assert_close(
        num(&v["kl_qp"]),
        univariate_kl(-1.0, 0.5, 0.0, 1.0).unwrap(),
    );
    // KL(N(0,1) ‖ N(1,1)) = ½.
    let v = json(&["kl", "gaussian", "--p", "0,1", "--q", "1,1", "--json"]);
    assert_close(num(&v["kl_pq"]), 0.5);

    let out = klrl(&["kl", "gaussian", "--p", "0,1", "--q", "-1,0.5"]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("KL(P‖Q) is larger") && s.contains("narrower"),
        "{s}"
    );
}

#[test]
fn vae_scalar_and_vector() {
    let v = json(&["kl", "vae", "--mu", "0.5", "--log-var", "-0.5", "--json"]);
    let expect = -0.5 * (1.0 - 0.5 - 0.25 - (-0.5f64).exp());
    assert!((num(&v["kl"]) - expect).abs() < 1e-15);
    assert!(v.get("kl_per_dim").is_none());

    let (mu, lv) = ([0.5, -1.0, 0.0], [-0.5, 0.2, 0.0]);
    let v = json(&[
        "kl",
        "vae",
        "--mu",
        "0.5,-1,0",
        "--log-var",
        "-0.5,0.2,0",
        "--json",
    ]);
    assert_close(num(&v["kl"]), vae_kl(&mu, &lv).unwrap());
    let per: Vec<f64> = v["kl_per_dim"]
        .as_array()
        .unwrap()
        .iter()
        .map(num)
        .collect();
    assert_eq!(per, vae_kl_per_dim(&mu, &lv).unwrap());

    let out = klrl(&["kl", "vae", "--mu", "0.5,-1,0", "--log-var", "-0.5,0.2,0"]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("sum") && s.contains("log_var"), "{s}");
}

#[test]
fn bad_discrete_input_exits_2_naming_the_problem() {
    let d = ["kl", "discrete"];
    let run = |extra: &[&str], needles: &[&str]| {
        let args: Vec<&str> = d.iter().chain(extra).copied().collect();
        assert_usage_error(&args, needles);
    };
    run(
        &["--p", "0.3,0.5,-0.1", "--q", "0.25,0.5,0.25"],
        &["--p", "index 2", "negative", "-0.1"],
    );
    run(
        &["--p=-0.3,0.5", "--q", "1,1"],
        &["--p", "index 0", "negative"],
    );
    run(
        &["--p", "1,1", "--q", "1,-2"],
        &["--q", "index 1", "negative"],
    );
    run(
        &["--p", "0.3,0.5", "--q", "0.25,0.5,0.25"],
        &["lengths differ", "--p has 2", "--q has 3"],
    );
    run(
        &["--p", "0,0,0", "--q", "1,1,1"],
        &["--p", "all weights are zero"],
    );
    run(
        &["--p", "0.3,abc", "--q", "1,1"],
        &["--p", "index 1", "not a number", "abc"],
    );
    run(&["--p", "1,nan", "--q", "1,1"], &["--p", "not finite"]);
    run(&["--p", "1,inf", "--q", "1,1"], &["--p", "not finite"]);
    run(
        &["--p", "1,,1", "--q", "1,1,1"],
        &["--p", "index 1", "empty"],
    );
    run(&["--p", "", "--q", "1"], &["--p", "no values"]);
    run(&["--q", "1,1"], &["--p", "--q", "--csv"]);
}

#[test]
fn bad_csv_input_exits_2_naming_the_problem() {
    let csv = TempCsv::new("a,b\n1,2\n3,4\n");
    let base = ["kl", "discrete", "--csv"];
    let run = |path: &str, cols: [&str; 2], needles: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend([path, "--p-col", cols[0], "--q-col", cols[1]]);
        assert_usage_error(&args, needles);
    };
    run(
        csv.path(),
        ["a", "missing"],
        &["--q-col", "no column 'missing'", "a, b"],
    );
    run(csv.path(), ["nope", "b"], &["--p-col", "no column 'nope'"]);
    let gone = std::env::temp_dir().join(format!("klrl_kl_cli_absent_{}.csv", std::process::id()));
    run(
        gone.to_str().unwrap(),
        ["a", "b"],
        &["--csv", "cannot read"],
    );

    let neg = TempCsv::new("a,b\n1,2\n-3,4\n");
    run(
        neg.path(),
        ["a", "b"],
        &["--p-col 'a'", "line 3", "negative", "-3"],
    );
    let text = TempCsv::new("a,b\n1,2\n3,four\n");
    run(
        text.path(),
        ["a", "b"],
        &["--q-col 'b'", "line 3", "not a number", "four"],
    );
    let zeros = TempCsv::new("a,b\n0,2\n0,4\n");
    run(
        zeros.path(),
        ["a", "b"],
        &["--p-col 'a'", "all weights are zero"],
    );
    let ragged = TempCsv::new("a,b\n1,2\n3\n");
    run(ragged.path(), ["a", "b"], &["line 3"]);
    let empty = TempCsv::new("a,b\n");
    run(empty.path(), ["a", "b"], &["no data rows"]);
    assert_usage_error(
        &["kl", "discrete", "--csv", csv.path()],
        &["--p-col", "--q-col"],
    );
}

#[test]
fn bad_gaussian_and_vae_input_exits_2_naming_the_problem() {
    let g = |p: &str, q: &str, needles: &[&str]| {
        assert_usage_error(&["kl", "gaussian", "--p", p, "--q", q], needles);
    };
    g(
        "0,-1",
        "0,1",
        &["--p", "standard deviation must be > 0", "-1"],
    );
    g(
        "0,1",
        "0,0",
        &["--q", "standard deviation must be > 0", "got 0"],
    );
    g("0", "0,1", &["--p", "MU,SIGMA", "got 1 value"]);
    g("0,1,2", "0,1", &["--p", "got 3 values"]);
    g("x,1", "0,1", &["--p", "not a number", "'x'"]);
    g("0,inf", "0,1", &["--p", "not finite"]);

    let v = |mu: &str, lv: &str, needles: &[&str]| {
        assert_usage_error(&["kl", "vae", "--mu", mu, "--log-var", lv], needles);
    };
    v(
        "0.5,1",
        "-0.5",
        &["lengths differ", "--mu has 2", "--log-var has 1"],
    );
    v("0.5", "inf", &["--log-var", "not finite"]);
    v("a", "0", &["--mu", "not a number"]);
}
