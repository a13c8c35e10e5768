//! The `klrl` program as a library: [`run`] parses the command line and runs
//! any subcommand (`train`, `eval`, `compare`, `bench`, `envs`, `kl`) with the
//! environments of the [`Registry`] it is given. The `klrl` binary is
//! `klrl_cli::run(Registry::builtin())`; a program of your own registers its
//! environments next to the built-ins and gets every subcommand, with its
//! environments usable in configs by name:
//!
//! ```no_run
//! use klrl_envs::{CartPole, CartPoleParams, Registry};
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::builtin();
//!     registry
//!         .register("HeavyPole-v0", "CartPole with a pole of 0.5 kg", Some(500), None, |_| {
//!             let params = CartPoleParams { masspole: 0.5, ..Default::default() };
//!             Ok(Box::new(CartPole::new(params)?))
//!         })
//!         .expect("a new name");
//!     klrl_cli::run(registry)
//! }
//! ```
//!
//! (`examples/own_program.rs` is a complete one.) Exit status: 0 done, 1
//! failure while running (or a failed `klrl envs --check`), 2 usage or
//! configuration error, 130 after Ctrl-C, 141 when standard output is closed by
//! its reader (`klrl envs | head -1`). The `klrl` binary also installs
//! mimalloc as its global allocator (see `main.rs`); a program of your own
//! may do the same.

mod bench_cmd;
mod compare_cmd;
mod envs_cmd;
mod eval_cmd;
mod kl_cmd;
mod train_cmd;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use klrl_envs::Registry;

/// Exit status for usage and configuration errors.
const EXIT_USAGE: u8 = 2;
/// Exit status for failures while running.
const EXIT_FAILURE: u8 = 1;
/// Exit status when a run stopped because `train.max_rejected_updates`
/// updates in a row were rejected for non-finite values (its last good state
/// is checkpointed).
const EXIT_DIVERGED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "klrl",
    version,
    about = "Reinforcement learning with KL-constrained policy updates",
    after_help = "Examples:\n  klrl train\n  klrl train configs/acrobot-ppo-kl-adaptive.toml --seed 3\n  \
        klrl eval runs/CartPole-v1-ppo-20250101-120000-s0 --json\n  \
        klrl compare configs/compare/cartpole/*.toml --seeds 3 --out results/cartpole\n  \
        klrl envs\n  klrl kl discrete --p 0.3,0.5,0.2 --q 0.25,0.5,0.25\n\n\
        Exit status: 0 done; 1 failure while running; 2 usage or configuration error (bad \
        config, arguments, or a checkpoint for another run); 130 Ctrl-C (after a checkpoint); \
        141 standard output closed by its reader (klrl envs | head -1)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a policy: a config (or the built-in PPO with a hard KL limit on
    /// CartPole-v1) into a run directory with metrics.csv, TensorBoard
    /// files and checkpoints; or resume a run.
    #[command(after_help = "Examples:\n  \
        klrl train\n  \
        klrl train configs/pendulum-ppo-kl-adaptive.toml --seed 1 --out runs/pendulum-s1\n  \
        klrl train configs/cartpole-ppo-kl-adaptive.toml --set algo.kl_target=0.02 --set train.total_steps=50000\n  \
        klrl train --resume runs/pendulum-s1\n  \
        klrl train --resume runs/pendulum-s1 --set train.total_steps=200000\n\n\
        Exit status: 0 done, 1 failure while running, 2 bad config or arguments, 130 Ctrl-C \
        (after a checkpoint).")]
    Train(train_cmd::TrainArgs),
    /// Evaluate a run's newest checkpoint (or a given checkpoint): mean ± std
    /// return and episode length.
    #[command(after_help = "Examples:\n  \
        klrl eval runs/CartPole-v1-ppo-20250101-120000-s0\n  \
        klrl eval runs/x/checkpoints/update-00000100 --episodes 50 --deterministic --json")]
    Eval(eval_cmd::EvalArgs),
    /// Run every config with several seeds in parallel, then write a markdown
    /// summary and PNG plots (return against steps, KL per update).
    #[command(after_help = "Examples:\n  \
        klrl compare configs/compare/cartpole/*.toml --seeds 3 --out results/cartpole\n  \
        klrl compare a.toml b.toml --seeds 2 --set train.total_steps=20000 --out results/quick\n  \
        klrl compare --plot-only results/cartpole\n  \
        klrl compare configs/compare/cartpole/*.toml --seeds 5 --out results/cp --shard 0/4\n  \
        klrl compare --resume results/cp\n\n\
        Exit status: 0 done, 1 a run failed, 2 bad config or arguments (or an --out holding \
        another comparison), 130 Ctrl-C (after checkpoints; finish with --resume).")]
    Compare(compare_cmd::CompareArgs),
    /// Time end-to-end training runs (default: the rl-baselines3-zoo PPO and
    /// TRPO CartPole configs, seeds 0–2): wall time, steps/s, time and steps
    /// until the rolling mean of 20 episodes reaches the reward threshold,
    /// the rollout / advantage / update breakdown, and (untimed) the final
    /// evaluation's mean return.
    #[command(after_help = "Examples:\n  \
        klrl bench\n  \
        klrl bench configs/bench/cartpole-ppo-zoo.toml --seeds 1 --json\n  \
        klrl bench configs/pendulum-ppo-gsde.toml --seed-start 2 --seeds 1 --eval-episodes 10 --json\n  \
        klrl bench --set train.total_steps=20000 --eval-episodes 0")]
    Bench(bench_cmd::BenchArgs),
    /// List the registered environments with their observation and action
    /// spaces, or check one against the Env contract (--check).
    #[command(after_help = "Examples:\n  \
        klrl envs\n  \
        klrl envs --check CartPole-v1\n  \
        klrl envs --check MountainCarContinuous-v0 --seed 3 --steps 5000 --json\n\n\
        Exit status: 0 listed, or every check passed (warnings allowed); 1 a check failed; \
        2 unknown environment or bad arguments.")]
    Envs(envs_cmd::EnvsArgs),
    /// KL divergence, entropy and friends between two distributions.
    #[command(after_help = "Examples:\n  \
        klrl kl discrete --p 0.3,0.5,0.2 --q 0.25,0.5,0.25\n  \
        klrl kl discrete --csv clicks.csv --p-col group_a --q-col group_b --bits\n  \
        klrl kl gaussian --p 0,1 --q 1,2 --json\n  \
        klrl kl vae --mu 0.5,-1 --log-var -0.5,0.2")]
    Kl(kl_cmd::KlArgs),
}

/// An error that carries its exit status: 2 for bad input, 1 for a failure.
#[derive(Debug)]
pub(crate) struct CliError {
    /// Process exit status.
    pub status: u8,
    /// The error to print on stderr.
    pub error: anyhow::Error,
}

impl CliError {
    /// A usage or input error (exit status 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status: EXIT_USAGE,
            error: error.into(),
        }
    }

    /// A failure while running (exit status 1).
    pub fn failure(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status: EXIT_FAILURE,
            error: error.into(),
        }
    }

    /// A run that diverged (exit status 3).
    pub fn diverged(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status: EXIT_DIVERGED,
            error: error.into(),
        }
    }
}

/// candle's element-wise ops run on a thread pool sized by these variables.
/// For the small networks klrl trains, one thread is ~20× faster per op than
/// the default pool on a 2-core machine (see the README's performance
/// section), and it makes runs bit-reproducible; `klrl compare` parallelises
/// across runs instead. A value the user set is kept.
fn default_to_one_compute_thread() {
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // Called first thing in `run`, before any thread exists.
            std::env::set_var(var, "1");
        }
    }
}

/// Exit status when standard output is closed by its reader (128 + SIGPIPE,
/// what a shell reports for a program a broken pipe ended).
const EXIT_BROKEN_PIPE: i32 = 141;

/// `klrl envs | head -1`: a reader that closes the pipe early ends the
/// program, quietly, with status 141 — not with a panic from `println!`
/// (Rust ignores SIGPIPE, so the write fails and `println!` panics).
/// The hook is process-wide: it is installed once, however many times
/// [`run_with_args`] is called in the process (a program or test that runs
/// several command lines), around the hook that was there before.
fn end_quietly_on_broken_pipe() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_broken_pipe_hook);
}

/// The hook of [`end_quietly_on_broken_pipe`].
fn install_broken_pipe_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}

/// Run the `klrl` program with the environments of `registry`: parse the
/// process's command line, run the subcommand, print an error (if any) on
/// stderr, and return the exit status (0 done, 1 failure, 2 usage or
/// configuration error — a bad checkpoint included, 3 a run stopped after
/// too many rejected updates, 130 after Ctrl-C). Call it first thing in `main`: it
/// sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` to 1 unless they are set,
/// which must happen before any thread exists.
pub fn run(registry: Registry) -> ExitCode {
    run_with_args(registry, std::env::args_os())
}

/// [`run`] with the given command line (`args[0]` is the program name).
pub fn run_with_args<I, T>(registry: Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    default_to_one_compute_thread();
    end_quietly_on_broken_pipe();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with status 0, usage errors with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Train(args) => train_cmd::run(args, &registry),
        Command::Eval(args) => eval_cmd::run(args, &registry),
        Command::Compare(args) => compare_cmd::run(args, &registry),
        Command::Bench(args) => bench_cmd::run(args, &registry),
        Command::Envs(args) => envs_cmd::run(args, &registry),
        Command::Kl(args) => kl_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.status == 130 => ExitCode::from(e.status),
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            ExitCode::from(e.status)
        }
    }
}
