//! `klrl train`: train from a config (or the built-in default) into a run
//! directory, or resume one.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use klrl_envs::Registry;
use klrl_runner::metrics::MetricsRow;
use klrl_runner::{config, ConfigSource, Run, RunDir, RunnerError, Summary};

use crate::CliError;

/// Arguments of `klrl train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The config (TOML). Default: the built-in PPO with a hard KL limit (max_kl 0.01) on CartPole-v1.
    config: Option<PathBuf>,
    /// The run directory (must not exist or be empty). Default:
    /// `runs/<env>-<algo>-<timestamp>-s<seed>`.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Override train.seed.
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    seed: Option<u64>,
    /// Override a config value, e.g. --set algo.max_kl=0.02 (repeatable; the
    /// value is parsed as TOML, else taken as a string). With --resume: amend
    /// the run (see --resume).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue the run in RUN_DIR from its last checkpoint, with its saved
    /// config. With --set the run is amended: train.total_steps=N extends a
    /// finished or interrupted run to N steps (not below the steps taken;
    /// metrics.csv goes on, TensorBoard in a new tb/ segment, summary.json is
    /// rewritten at the end); algo.lr, algo.vf_lr and run.checkpoint_every,
    /// keep_checkpoints, eval_episodes, log_every, return_window, tensorboard
    /// may change too. Any other field would break the run and is refused
    /// (exit 2, nothing written). The amended config replaces the run's
    /// config.toml. Annealing (lr_anneal, clip_anneal) is rescaled to the new
    /// total: progress = steps / N from the resume on, so a finished annealed
    /// run's learning rate rises again to lr·(1 − steps/N); without annealing
    /// the extended run equals an uninterrupted N-step run bit for bit.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Start from a trained policy: a run directory (its newest checkpoint)
    /// or a checkpoint directory. The policy's parameters are loaded (the
    /// [policy] tables must agree), the value network's and the observation
    /// normaliser's where they fit; with [algo.reference] source = "initial"
    /// (the default source) that policy is the reference. The same as
    /// --set run.init_from=DIR.
    #[arg(long, value_name = "RUN_OR_CHECKPOINT", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
}

/// Map a runner error to its exit status.
pub fn cli_error(e: RunnerError) -> CliError {
    if e.is_usage() {
        CliError::usage(e)
    } else if e.is_divergence() {
        CliError::diverged(e)
    } else {
        CliError::failure(e)
    }
}

/// Exit status after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Install the Ctrl-C handler: the first Ctrl-C asks the loop to stop after
/// the current update (a checkpoint is written); the loop owns every writer,
/// so they are flushed and closed on the way out.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if !f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted: stopping after this update and writing a checkpoint…");
        }
    }) {
        eprintln!("warning: cannot catch Ctrl-C ({e}); Ctrl-C will stop without a checkpoint");
    }
    flag
}

/// Run `klrl train`.
pub fn run(args: TrainArgs, registry: &Registry) -> Result<(), CliError> {
    let mut run = match &args.resume {
        Some(dir) => {
            let run = Run::resume_amended(dir, &args.sets, registry).map_err(cli_error)?;
            match run.resumed_exact {
                Some(false) => eprintln!(
                    "warning: {} does not support environment snapshots; resumed with fresh \
                     episodes, so this run will not be bit-identical to an uninterrupted one",
                    run.config.experiment.env.name
                ),
                _ => eprintln!(
                    "resuming {} at update {} ({} of {} steps)",
                    dir.display(),
                    run.trainer.updates,
                    run.trainer.env_steps,
                    run.config.experiment.train.total_steps
                ),
            }
            run
        }
        None => {
            let source = match &args.config {
                Some(p) => ConfigSource::File(p.clone()),
                None => ConfigSource::default_config(),
            };
            let mut resolved =
                config::load(&source, &args.sets, args.seed, registry).map_err(cli_error)?;
            if let Some(p) = &args.init_from {
                resolved.run.init_from = Some(p.to_string_lossy().into_owned());
            }
            let dir = match &args.out {
                Some(d) => RunDir::Exactly(d.clone()),
                None => RunDir::Under(PathBuf::from("runs")),
            };
            Run::create(resolved, dir, registry).map_err(cli_error)?
        }
    };
    let stop = interrupt_flag();
    let interrupted = train_loop(&mut run, &stop)?;
    let summary = run.finish(interrupted, registry).map_err(cli_error)?;
    print_summary(&summary);
    if interrupted {
        println!(
            "interrupted; continue with: klrl train --resume {}",
            summary.run_dir
        );
        return Err(CliError {
            status: EXIT_INTERRUPTED,
            error: anyhow::anyhow!("interrupted"),
        });
    }
    Ok(())
}

/// Train until done or interrupted (returns whether it was), showing progress.
fn train_loop(run: &mut Run, stop: &AtomicBool) -> Result<bool, CliError> {
    let total = run.config.experiment.train.total_steps;
    let tty = std::io::stdout().is_terminal();
    let bar = tty.then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30.cyan/blue} {human_pos}/{human_len} steps \
                 ({per_sec:0}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(run.trainer.env_steps);
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    });
    let log_every = run.config.run.log_every;
    let mut last_wall = run.wall_s();
    let mut last_steps = run.trainer.env_steps;
    let mut warned = false;
    let mut interrupted = false;
    while !run.is_done() {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let row = match run.step() {
            Ok(row) => row,
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                // Keep what was trained: a checkpoint, then the error.
                let _ = run.checkpoint();
                return Err(cli_error(e));
            }
        };
        if row.diagnostics.rejected == 1.0 {
            let (what, in_a_row) = run.trainer.rejections();
            let limit = run.config.experiment.train.max_rejected_updates;
            let line = format!(
                "warning: update {} rejected (non-finite {what}): parameters and optimiser \
                 state restored ({in_a_row} in a row; the run stops at {limit})",
                row.update
            );
            match &bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        if let (Some(msg), false) = (run.tb_failure(), warned) {
            eprintln!("warning: {msg}");
            warned = true;
        }
        match &bar {
            Some(b) => {
                b.set_position(row.env_steps);
                b.set_message(progress_message(&row));
            }
            None if (row.update + 1) % log_every == 0 || run.is_done() => {
                let dt = (row.wall_s - last_wall).max(1e-9);
                let sps = (row.env_steps - last_steps) as f64 / dt;
                println!(
                    "update {:>5}  steps {:>8}/{total}  {:>7.0} steps/s  {}",
                    row.update + 1,
                    row.env_steps,
                    sps,
                    progress_message(&row)
                );
                last_wall = row.wall_s;
                last_steps = row.env_steps;
            }
            None => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(interrupted)
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}

fn progress_message(row: &MetricsRow) -> String {
    let d = &row.diagnostics;
    let limit = if d.kl_limit.is_nan() {
        String::new()
    } else {
        format!(" / limit {}", fmt(d.kl_limit, 4))
    };
    // With a reference: KL(π ‖ π_ref) and its bound or target.
    let reference = if d.kl_ref.is_nan() {
        String::new()
    } else if d.kl_ref_limit.is_nan() {
        format!("  KL_ref {}", fmt(d.kl_ref, 4))
    } else {
        format!("  KL_ref {} / {}", fmt(d.kl_ref, 4), fmt(d.kl_ref_limit, 4))
    };
    format!(
        "return {}  KL {} (max {}){limit}  β {}{reference}",
        fmt(row.ep_return_mean, 1),
        fmt(d.kl_old_new, 4),
        fmt(d.kl_max, 4),
        if row.diagnostics.beta.abs() < 0.01 && row.diagnostics.beta != 0.0 {
            format!("{:.1e}", row.diagnostics.beta)
        } else {
            fmt(row.diagnostics.beta, 3)
        }
    )
}

fn print_summary(s: &Summary) {
    println!(
        "{} {} on {}: {} steps, {} updates in {:.1} s",
        if s.interrupted { "stopped" } else { "done:" },
        s.algo,
        s.env,
        s.env_steps,
        s.updates,
        s.wall_s
    );
    match s.final_ep_return_mean {
        Some(r) => println!("final mean return (recent training episodes): {r:.2}"),
        None => println!("final mean return: no episode finished"),
    }
    if let Some(e) = &s.eval {
        println!(
            "evaluation ({} episodes, deterministic): {:.2} ± {:.2}, length {:.1}",
            e.episodes, e.mean_return, e.std_return, e.mean_length
        );
    }
    println!("run directory: {}", s.run_dir);
    println!("view in TensorBoard: tensorboard --logdir {}/tb", s.run_dir);
}
