//! Runs the examples `cartpole_ppo`, `bandit_trpo`, `custom_env` and
//! `distill` in their quick mode (`KLRL_EXAMPLE_QUICK=1`, a second or two
//! each; the binaries `cargo test` built, see `common`), and checks the numbers on
//! their last line (`final: key=value …`), so the examples cannot rot.

use std::collections::HashMap;

mod common;

/// Run example `name` in quick mode and return the values of its `final:` line.
fn run_quick(name: &str) -> HashMap<String, f64> {
    let out = common::example(name)
        .env("KLRL_EXAMPLE_QUICK", "1")
        .output()
        .expect("cargo can be started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let fields = last
        .strip_prefix("final: ")
        .unwrap_or_else(|| panic!("{name}: the last line is not `final: …`:\n{stdout}"));
    fields
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: `{kv}` is not key=value"));
            let v: f64 = v.parse().unwrap_or_else(|e| panic!("{name}: `{kv}`: {e}"));
            (k.to_string(), v)
        })
        .collect()
}

fn get(values: &HashMap<String, f64>, key: &str) -> f64 {
    *values
        .get(key)
        .unwrap_or_else(|| panic!("no `{key}` in {values:?}"))
}

#[test]
fn cartpole_ppo_learns_in_quick_mode() {
    let v = run_quick("cartpole_ppo");
    assert_eq!(get(&v, "episodes"), 20.0);
    assert!(get(&v, "env_steps") >= 25_000.0, "{v:?}");
    // A random policy lasts ~22 steps; 25k steps of PPO balance far longer
    // (measured: 500).
    let ret = get(&v, "mean_return");
    assert!((150.0..=500.0).contains(&ret), "{v:?}");
}

#[test]
fn bandit_trpo_beats_uniform_and_respects_the_trust_region() {
    let v = run_quick("bandit_trpo");
    assert_eq!(get(&v, "updates"), 12.0);
    let uniform = get(&v, "uniform_regret");
    // 20 movies with click probabilities between ~0.1 and ~0.5: the best minus
    // the mean is a few tenths (measured 0.237).
    assert!((0.1..0.5).contains(&uniform), "{v:?}");
    // After 12 updates TRPO has more than halved it (measured 0.083).
    assert!(get(&v, "trpo_regret") < 0.5 * uniform, "{v:?}");
    // Every accepted step lies inside the trust region, and steps were taken.
    let ratio = get(&v, "max_kl_ratio");
    assert!(ratio <= 1.0 + 1e-3, "{v:?}");
    assert!(ratio > 0.1, "{v:?}");
}

#[test]
fn custom_env_policy_comes_close_to_base_stock() {
    let v = run_quick("custom_env");
    // The critical-ratio level, computed independently: Poisson(5) CDF
    // reaches c_u / (c_u + c_o) = 2 / 2.5 = 0.8 first at 7
    // (P(D ≤ 6) = 0.762, P(D ≤ 7) = 0.867).
    let (mut pmf, mut cdf, mut s) = ((-5.0f64).exp(), 0.0, 0);
    loop {
        cdf += pmf;
        if cdf >= 0.8 {
            break;
        }
        s += 1;
        pmf *= 5.0 / s as f64;
    }
    assert_eq!(get(&v, "S"), s as f64);
    let base = get(&v, "base_stock");
    assert!(get(&v, "best_base_stock") >= base, "{v:?}");
    // ~4.2 units sold a day at a margin of 2 over 50 days: a few hundred.
    assert!((300.0..500.0).contains(&base), "{v:?}");
    // Measured: 410 against 419 after 40k steps.
    assert!(get(&v, "learned") >= 0.93 * base, "{v:?}");
}

#[test]
fn distilled_student_matches_teacher() {
    let v = run_quick("distill");
    let teacher = get(&v, "teacher_return");
    assert!(teacher >= 150.0, "{v:?}");
    // Measured: 500 and 500, KL 9e-5, 99.8 % agreement.
    assert!(get(&v, "student_return") >= 0.8 * teacher, "{v:?}");
    let kl = get(&v, "kl");
    assert!((0.0..0.01).contains(&kl), "{v:?}");
    assert!(get(&v, "agreement") > 0.95, "{v:?}");
}
