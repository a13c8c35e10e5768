//! TRPO on the movie-recommendation contextual bandit `MovieRec-v0`: how fast
//! the expected regret falls, and how each update's KL compares with the
//! trust region δ = `max_kl`.
//!
//! TRPO (Schulman et al. 2015) maximises the surrogate g·s subject to
//! ½ sᵀ F s ≤ δ: conjugate gradient solves F x = g, the step is scaled to the
//! boundary, and a backtracking line search accepts the first candidate whose
//! exact mean KL(π_old ‖ π_new) over the batch is at most δ and whose
//! surrogate improved. So the KL column below never exceeds `max_kl`.
//!
//! The regret of a round is the click probability of the best movie for that
//! user minus that of the recommended one (exact, from the simulator, so
//! there is no sampling noise). Settings: `configs/bandit-trpo.toml`
//! (δ = 0.02, 4 × 256 rounds per update, Â = r − V(s)).
//!
//! Run it from the workspace root:
//!
//! ```text
//! cargo run --release --example bandit_trpo
//! ```
//!
//! Expected output: the uniform-random policy's regret (≈ 0.24 per round),
//! then a table with one row every 3 updates (regret per round, KL(π_old ‖
//! π_new), max_kl, their ratio, line-search steps), the regret falling
//! below 0.01 within about 25 updates; about 1 s. The last line reads
//! `final: trpo_regret=… uniform_regret=… max_kl_ratio=… updates=30`, where
//! `max_kl_ratio` is the largest KL / max_kl over all updates (≤ 1).
//!
//! With `KLRL_EXAMPLE_QUICK=1` it runs 12 updates instead of 30.

use anyhow::{Context, Result};
use klrl::envs::{parse_params, Action, Env, MovieRec, Registry};
use klrl::optim::{AlgoConfig, ExperimentConfig, Trainer};

fn main() -> Result<()> {
    // One compute thread: candle's thread pool is ~20× slower on networks this small.
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let quick = std::env::var_os("KLRL_EXAMPLE_QUICK").is_some();

    let mut config: ExperimentConfig = toml::from_str(include_str!("../configs/bandit-trpo.toml"))
        .context("parsing configs/bandit-trpo.toml")?;
    let updates: u64 = if quick { 12 } else { 30 };
    let batch = (config.train.n_envs * config.train.n_steps) as u64;
    config.train.total_steps = updates * batch;
    let AlgoConfig::Trpo(trpo) = &config.algo else {
        anyhow::bail!("configs/bandit-trpo.toml should configure TRPO");
    };
    let max_kl = trpo.max_kl;

    // The baseline: recommending a movie uniformly at random.
    let params = parse_params(MovieRec::NAME, &config.env.params)?;
    let uniform = uniform_regret(MovieRec::new(params)?, 10_000)?;
    println!("uniform-random policy: expected regret {uniform:.4} per round\n");

    let mut trainer = Trainer::from_config(config, &Registry::builtin())?;
    println!("update   rounds   regret   KL(old‖new)   max_kl   KL/max_kl   ls_steps");
    let (mut last_regret, mut worst_ratio) = (f64::NAN, 0.0_f64);
    trainer.train(|r| {
        let d = &r.diagnostics;
        let ratio = d.kl_old_new / max_kl;
        worst_ratio = worst_ratio.max(ratio);
        last_regret = r.regret.unwrap_or(f64::NAN);
        if r.update % 3 == 0 || r.update + 1 == updates {
            println!(
                "{:>6} {:>8} {:>8.4} {:>13.5} {:>8} {:>11.3} {:>10}",
                r.update, r.env_steps, last_regret, d.kl_old_new, max_kl, ratio, d.ls_steps
            );
        }
        true
    })?;
    println!(
        "\nfinal: trpo_regret={last_regret:.4} uniform_regret={uniform:.4} \
         max_kl_ratio={worst_ratio:.3} updates={}",
        trainer.updates
    );
    Ok(())
}

/// Mean expected regret per round of recommending each movie with
/// probability 1/n, over `rounds` users: the best click probability minus
/// the mean click probability over the movies.
fn uniform_regret(mut env: MovieRec, rounds: usize) -> Result<f64> {
    let n_movies = env.params().n_movies;
    let mut obs = Vec::new();
    env.reset(Some(12_345), &mut obs)?;
    let mut total = 0.0;
    for _ in 0..rounds {
        let mut mean = 0.0;
        for movie in 0..n_movies {
            mean += env.expected_click_prob(movie)? / n_movies as f64;
        }
        total += env.best_expected_reward()? - mean;
        // Any action moves on to the next user; a finished episode starts a new one.
        if env.step(Action::Discrete(0), &mut obs)?.done() {
            env.reset(None, &mut obs)?;
        }
    }
    Ok(total / rounds as f64)
}
