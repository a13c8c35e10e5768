//! `klrl kl`: the KL toolbox (`klrl-kl`) on the command line.
//!
//! Three subcommands: `discrete` (two histograms or probability vectors, given
//! inline or as two columns of a CSV file), `gaussian` (two univariate normals)
//! and `vae` (the VAE regulariser against N(0, 1)). Each prints a small table or,
//! with `--json`, exactly one JSON object. Every value read from the command
//! line or a file is validated here so that an error names the flag (or the CSV
//! column and line) and exits with status 2.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use klrl_kl::{normalize, univariate_kl, vae_kl_per_dim, Base, DiscreteComparison, InputProblem};
use serde_json::{json, Value};

use crate::CliError;

/// Arguments of `klrl kl`.
#[derive(Args)]
pub struct KlArgs {
    #[command(subcommand)]
    command: KlCommand,
}

#[derive(Subcommand)]
enum KlCommand {
    /// KL in both directions, Jensen–Shannon, entropies and cross-entropy of two
    /// discrete distributions (weights or counts; each is normalised by its sum).
    #[command(after_help = "Examples:\n  \
        klrl kl discrete --p 0.3,0.5,0.2 --q 0.25,0.5,0.25\n  \
        klrl kl discrete --p 1,1,1,1,1,1 --q 1,1,1,1,1,5 --bits\n  \
        klrl kl discrete --csv clicks.csv --p-col group_a --q-col group_b --json\n\n\
        A value that is infinite (Q gives zero probability to an outcome P allows) is\n\
        printed as inf, and written as the string \"inf\" in JSON.")]
    Discrete(DiscreteArgs),
    /// KL in both directions between two univariate Gaussians N(μ, σ²).
    #[command(after_help = "Example:\n  klrl kl gaussian --p 0,1 --q 1,2")]
    Gaussian(GaussianArgs),
    /// The VAE regulariser KL(N(μ, exp(log_var)) ‖ N(0, 1)), per dimension and summed.
    #[command(after_help = "Examples:\n  \
        klrl kl vae --mu 0.5 --log-var -0.5\n  \
        klrl kl vae --mu 0.5,-1,0 --log-var -0.5,0.2,0 --json")]
    Vae(VaeArgs),
}

/// Arguments of `klrl kl discrete`.
#[derive(Args)]
struct DiscreteArgs {
    /// P as comma-separated non-negative weights (counts or probabilities).
    #[arg(long, value_name = "W1,W2,...", allow_hyphen_values = true)]
    p: Option<String>,
    /// Q as comma-separated non-negative weights, one per outcome of P.
    #[arg(long, value_name = "W1,W2,...", allow_hyphen_values = true)]
    q: Option<String>,
    /// Read P and Q from two columns of this CSV file (first row: column names).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["p", "q"])]
    csv: Option<PathBuf>,
    /// Name of the CSV column holding P (with --csv).
    #[arg(long, value_name = "COLUMN", requires = "csv")]
    p_col: Option<String>,
    /// Name of the CSV column holding Q (with --csv).
    #[arg(long, value_name = "COLUMN", requires = "csv")]
    q_col: Option<String>,
    /// Report in bits (log base 2) instead of nats (natural log, the default).
    #[arg(long)]
    bits: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `klrl kl gaussian`.
#[derive(Args)]
struct GaussianArgs {
    /// P = N(MU, SIGMA²): mean and standard deviation (SIGMA > 0).
    #[arg(long, value_name = "MU,SIGMA", allow_hyphen_values = true)]
    p: String,
    /// Q = N(MU, SIGMA²): mean and standard deviation (SIGMA > 0).
    #[arg(long, value_name = "MU,SIGMA", allow_hyphen_values = true)]
    q: String,
    /// Report in bits instead of nats (the default).
    #[arg(long)]
    bits: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `klrl kl vae`.
#[derive(Args)]
struct VaeArgs {
    /// Encoder mean μ: one number or comma-separated, one per latent dimension.
    #[arg(long, value_name = "MU[,MU...]", allow_hyphen_values = true)]
    mu: String,
    /// Encoder log-variance ln σ², as many values as --mu.
    #[arg(long, value_name = "LV[,LV...]", allow_hyphen_values = true)]
    log_var: String,
    /// Report in bits instead of nats (the default).
    #[arg(long)]
    bits: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run `klrl kl`.
pub fn run(args: KlArgs) -> Result<(), CliError> {
    match args.command {
        KlCommand::Discrete(a) => run_discrete(a),
        KlCommand::Gaussian(a) => run_gaussian(a),
        KlCommand::Vae(a) => run_vae(a),
    }
}

/// A usage error (exit 2) with a formatted message.
fn usage(message: String) -> CliError {
    CliError::usage(anyhow!(message))
}

fn base(bits: bool) -> Base {
    if bits {
        Base::Bits
    } else {
        Base::Nats
    }
}

/// Parse a comma-separated list of numbers given to `flag`. Whitespace around
/// elements is ignored; an empty element or a non-number is an error naming the
/// flag and the 0-based index.
fn parse_list(flag: &str, text: &str) -> Result<Vec<f64>, CliError> {
    if text.trim().is_empty() {
        return Err(usage(format!("{flag}: no values given")));
    }
    text.split(',')
        .enumerate()
        .map(|(i, item)| {
            let item = item.trim();
            if item.is_empty() {
                return Err(usage(format!("{flag}: index {i} is empty (stray comma?)")));
            }
            item.parse::<f64>()
                .map_err(|_| usage(format!("{flag}: index {i} is not a number ('{item}')")))
        })
        .collect()
}

/// Check that every value is finite, naming the flag and index otherwise.
fn check_finite(flag: &str, values: &[f64]) -> Result<(), CliError> {
    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((i, v)) => Err(usage(format!("{flag}: index {i} is not finite ({v})"))),
        None => Ok(()),
    }
}

/// A number for people: six decimals, scientific for very small or large
/// magnitudes, `inf` for +∞.
fn fmt_num(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if x != 0.0 && (x.abs() < 1e-4 || x.abs() >= 1e6) {
        format!("{x:.6e}")
    } else {
        format!("{x:.6}")
    }
}

/// A number for JSON: +∞ becomes the string "inf" (JSON has no infinity).
fn json_num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

/// Print rows of (label, value) aligned under a header naming the unit.
fn print_table(unit: &str, rows: &[(&str, f64)]) {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    println!("{:<width$}{:>14}", "", unit);
    for (label, value) in rows {
        let pad = width - label.chars().count();
        println!("{label}{:pad$}{:>14}", "", fmt_num(*value));
    }
}

// ---------------------------------------------------------------- discrete --

/// Where the two distributions came from, for messages and the human output.
struct Source {
    /// How P was given (`--p`, `column 'a'`).
    p_name: String,
    /// How Q was given.
    q_name: String,
    /// One phrase naming both, for the heading.
    heading: String,
    /// For CSV input, the file line of each outcome (to name outcomes by line).
    lines: Option<Vec<u64>>,
}

impl Source {
    /// How to refer to outcome `i` in the human output.
    fn outcome(&self, i: usize) -> String {
        match self.lines.as_ref().and_then(|l| l.get(i)) {
            Some(line) => format!("the outcome on line {line}"),
            None => format!("outcome {i}"),
        }
    }
}

fn run_discrete(args: DiscreteArgs) -> Result<(), CliError> {
    let (p, q, source) = match (&args.csv, &args.p, &args.q) {
        (Some(path), _, _) => {
            let (Some(p_col), Some(q_col)) = (&args.p_col, &args.q_col) else {
                return Err(usage(
                    "--csv needs both --p-col and --q-col (the column names of P and Q)".into(),
                ));
            };
            let CsvColumns { p, q, lines } = read_csv_columns(path, p_col, q_col)?;
            let source = Source {
                p_name: format!("column '{p_col}'"),
                q_name: format!("column '{q_col}'"),
                heading: format!(
                    "P = column '{p_col}', Q = column '{q_col}' of '{}'",
                    path.display()
                ),
                lines: Some(lines),
            };
            (p, q, source)
        }
        (None, Some(p_text), Some(q_text)) => {
            let p = parse_list("--p", p_text)?;
            let q = parse_list("--q", q_text)?;
            normalize(&p).map_err(|e| usage(format!("--p: {e}")))?;
            normalize(&q).map_err(|e| usage(format!("--q: {e}")))?;
            let source = Source {
                p_name: "--p".into(),
                q_name: "--q".into(),
                heading: "P from --p, Q from --q".into(),
                lines: None,
            };
            (p, q, source)
        }
        _ => return Err(usage(
            "give both --p and --q (comma-separated weights), or --csv FILE --p-col A --q-col B"
                .into(),
        )),
    };
    if p.len() != q.len() {
        return Err(usage(format!(
            "lengths differ: {} has {} values, {} has {}; P and Q must list the same outcomes",
            source.p_name,
            p.len(),
            source.q_name,
            q.len()
        )));
    }
    let base = base(args.bits);
    let c = DiscreteComparison::new(&p, &q, base).map_err(CliError::usage)?;

    if args.json {
        let v = json!({
            "kl_pq": json_num(c.kl_pq),
            "kl_qp": json_num(c.kl_qp),
            "js": json_num(c.js),
            "cross_entropy_pq": json_num(c.cross_entropy_pq),
            "entropy_p": json_num(c.entropy_p),
            "entropy_q": json_num(c.entropy_q),
            "unit": base.unit(),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{}: {} outcomes, each normalised to sum to 1",
        source.heading,
        p.len()
    );
    print_table(
        base.unit(),
        &[
            ("KL(P‖Q)", c.kl_pq),
            ("KL(Q‖P)", c.kl_qp),
            ("JS(P,Q)", c.js),
            ("H(P)", c.entropy_p),
            ("H(Q)", c.entropy_q),
            ("H(P,Q)", c.cross_entropy_pq),
        ],
    );
    println!("{}", discrete_reading(&c, &source));
    Ok(())
}

/// The two columns read from a CSV file.
struct CsvColumns {
    /// Values of the P column, one per data row.
    p: Vec<f64>,
    /// Values of the Q column, one per data row.
    q: Vec<f64>,
    /// The file line (1-based, header = line 1) of every data row.
    lines: Vec<u64>,
}

/// Read two numeric columns (by header name) from a CSV file with a header row.
fn read_csv_columns(path: &Path, p_col: &str, q_col: &str) -> Result<CsvColumns, CliError> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| usage(format!("--csv: cannot read '{shown}': {}", csv_reason(&e))))?;
    let headers = reader
        .headers()
        .map_err(|e| usage(format!("--csv '{shown}': {}", csv_reason(&e))))?
        .clone();
    if headers.is_empty() {
        return Err(usage(format!("--csv: '{shown}' is empty (no header row)")));
    }
    let find = |flag: &str, name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            let names: Vec<&str> = headers.iter().collect();
            usage(format!(
                "{flag}: no column '{name}' in '{shown}' (columns: {})",
                names.join(", ")
            ))
        })
    };
    let p_idx = find("--p-col", p_col)?;
    let q_idx = find("--q-col", q_col)?;

    let (mut p, mut q, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| usage(format!("--csv '{shown}': {}", csv_reason(&e))))?;
        let line = record.position().map_or(0, |pos| pos.line());
        for (flag, col, idx, out) in [
            ("--p-col", p_col, p_idx, &mut p),
            ("--q-col", q_col, q_idx, &mut q),
        ] {
            let cell = record.get(idx).unwrap_or("");
            if cell.is_empty() {
                return Err(usage(format!("{flag} '{col}': line {line}: empty cell")));
            }
            let value = cell.parse::<f64>().map_err(|_| {
                usage(format!(
                    "{flag} '{col}': line {line}: not a number ('{cell}')"
                ))
            })?;
            out.push(value);
        }
        lines.push(line);
    }
    for (flag, col, values) in [("--p-col", p_col, &p), ("--q-col", q_col, &q)] {
        if let Err(problem) = normalize(values) {
            return Err(usage(format!(
                "{flag} '{col}': {}",
                csv_problem(&problem, &lines)
            )));
        }
    }
    Ok(CsvColumns { p, q, lines })
}

/// The part of a csv error a user can act on (without the crate's wrapping).
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.to_string(),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {}: {len} fields, the header has {expected_len}",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        _ => e.to_string(),
    }
}

/// Describe a problem with a CSV column by file line instead of index.
fn csv_problem(problem: &InputProblem, lines: &[u64]) -> String {
    let line = |i: usize| lines.get(i).copied().unwrap_or(0);
    match problem {
        InputProblem::Empty => "no data rows".into(),
        InputProblem::Negative { index, value } => {
            format!("line {}: value is negative ({value})", line(*index))
        }
        InputProblem::NotFinite { index, value } => {
            format!("line {}: value is not finite ({value})", line(*index))
        }
        other => other.to_string(),
    }
}

/// One line explaining which direction is larger and why.
fn discrete_reading(c: &DiscreteComparison, source: &Source) -> String {
    let (i, _) = c.largest_term_pq();
    let (j, _) = c.largest_term_qp();
    let (pi, qi, pj, qj) = (c.p[i], c.q[i], c.p[j], c.q[j]);
    let (oi, oj) = (source.outcome(i), source.outcome(j));
    let pq_inf = c.kl_pq.is_infinite();
    let qp_inf = c.kl_qp.is_infinite();
    if pq_inf && qp_inf {
        format!(
            "Both directions are infinite: Q gives zero probability to {oi} (P = {}) \
             and P gives zero probability to {oj} (Q = {}).",
            fmt_prob(pi),
            fmt_prob(qj)
        )
    } else if pq_inf {
        format!(
            "KL(P‖Q) is infinite: Q gives zero probability to {oi}, where P has {}; \
             KL(Q‖P) is finite because P covers every outcome Q allows.",
            fmt_prob(pi)
        )
    } else if qp_inf {
        format!(
            "KL(Q‖P) is infinite: P gives zero probability to {oj}, where Q has {}; \
             KL(P‖Q) is finite because Q covers every outcome P allows.",
            fmt_prob(qj)
        )
    } else if c.kl_pq == 0.0 && c.kl_qp == 0.0 {
        "P and Q are the same distribution: every divergence is 0.".into()
    } else if (c.kl_pq - c.kl_qp).abs() <= 1e-9 * c.kl_pq.max(c.kl_qp) {
        "The two directions agree: the difference between P and Q is symmetric here.".into()
    } else if c.kl_pq > c.kl_qp {
        format!(
            "KL(P‖Q) is larger: Q puts little mass where P has a lot \
             (largest term at {oi}: P = {}, Q = {}).",
            fmt_prob(pi),
            fmt_prob(qi)
        )
    } else {
        format!(
            "KL(Q‖P) is larger: P puts little mass where Q has a lot \
             (largest term at {oj}: Q = {}, P = {}).",
            fmt_prob(qj),
            fmt_prob(pj)
        )
    }
}

/// A probability with four significant decimals.
fn fmt_prob(x: f64) -> String {
    if x != 0.0 && x < 1e-4 {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

// ---------------------------------------------------------------- gaussian --

/// Parse `MU,SIGMA` given to `flag`: two finite numbers, σ > 0.
fn parse_mu_sigma(flag: &str, text: &str) -> Result<(f64, f64), CliError> {
    let v = parse_list(flag, text)?;
    let [mu, sigma] = v[..] else {
        return Err(usage(format!(
            "{flag}: expected MU,SIGMA (two numbers), got {} value{}",
            v.len(),
            if v.len() == 1 { "" } else { "s" }
        )));
    };
    if !mu.is_finite() {
        return Err(usage(format!("{flag}: mean is not finite ({mu})")));
    }
    if !sigma.is_finite() {
        return Err(usage(format!(
            "{flag}: standard deviation is not finite ({sigma})"
        )));
    }
    if sigma <= 0.0 {
        return Err(usage(format!(
            "{flag}: standard deviation must be > 0 (got {sigma})"
        )));
    }
    Ok((mu, sigma))
}

fn run_gaussian(args: GaussianArgs) -> Result<(), CliError> {
    let (mu_p, s_p) = parse_mu_sigma("--p", &args.p)?;
    let (mu_q, s_q) = parse_mu_sigma("--q", &args.q)?;
    let base = base(args.bits);
    let kl_pq = base.from_nats(univariate_kl(mu_p, s_p, mu_q, s_q).map_err(CliError::usage)?);
    let kl_qp = base.from_nats(univariate_kl(mu_q, s_q, mu_p, s_p).map_err(CliError::usage)?);
    if args.json {
        let v = json!({
            "kl_pq": json_num(kl_pq),
            "kl_qp": json_num(kl_qp),
            "unit": base.unit(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("P = N({mu_p}, {s_p}²), Q = N({mu_q}, {s_q}²)");
    print_table(base.unit(), &[("KL(P‖Q)", kl_pq), ("KL(Q‖P)", kl_qp)]);
    // For equal means or not, the narrower distribution is always the one that
    // makes the direction measured against it larger: with r = σp/σq > 1,
    // KL(P‖Q) − KL(Q‖P) = −2 ln r + (r² − r⁻²)/2 + Δμ²(σq⁻² − σp⁻²)/2 > 0.
    let reading = if s_p == s_q {
        if mu_p == mu_q {
            "P and Q are the same distribution: both directions are 0.".to_string()
        } else {
            "Equal widths: the two directions agree, (μp − μq)² / (2σ²).".to_string()
        }
    } else if s_q < s_p {
        format!(
            "KL(P‖Q) is larger: Q is narrower (σ {s_q} < {s_p}) and puts little mass in P's tails."
        )
    } else {
        format!(
            "KL(Q‖P) is larger: P is narrower (σ {s_p} < {s_q}) and puts little mass in Q's tails."
        )
    };
    println!("{reading}");
    Ok(())
}

// --------------------------------------------------------------------- vae --

fn run_vae(args: VaeArgs) -> Result<(), CliError> {
    let mu = parse_list("--mu", &args.mu)?;
    let log_var = parse_list("--log-var", &args.log_var)?;
    check_finite("--mu", &mu)?;
    check_finite("--log-var", &log_var)?;
    if mu.len() != log_var.len() {
        return Err(usage(format!(
            "lengths differ: --mu has {} values, --log-var has {}",
            mu.len(),
            log_var.len()
        )));
    }
    let base = base(args.bits);
    let per_dim: Vec<f64> = vae_kl_per_dim(&mu, &log_var)
        .map_err(CliError::usage)?
        .into_iter()
        .map(|x| base.from_nats(x))
        .collect();
    let total: f64 = per_dim.iter().sum();
    if args.json {
        let mut v = json!({ "kl": json_num(total), "unit": base.unit() });
        if per_dim.len() > 1 {
            v["kl_per_dim"] = Value::Array(per_dim.iter().map(|&x| json_num(x)).collect());
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "KL(N(μ, exp(log_var)) ‖ N(0, 1)) = −½(1 + log_var − μ² − exp(log_var)), in {}",
        base.unit()
    );
    if per_dim.len() == 1 {
        println!(
            "μ = {}, log_var = {}: KL = {}",
            mu[0],
            log_var[0],
            fmt_num(total)
        );
        return Ok(());
    }
    println!("{:>5}{:>14}{:>14}{:>14}", "dim", "mu", "log_var", "KL");
    for (i, ((m, lv), kl)) in mu.iter().zip(&log_var).zip(&per_dim).enumerate() {
        println!(
            "{i:>5}{:>14}{:>14}{:>14}",
            fmt_num(*m),
            fmt_num(*lv),
            fmt_num(*kl)
        );
    }
    println!("{:>5}{:>42}", "sum", fmt_num(total));
    Ok(())
}
