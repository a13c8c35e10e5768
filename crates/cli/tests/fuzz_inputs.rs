//! Fuzzing every input klrl reads (issue 12, "Runs that survive anything"):
//! config TOML, `--set` values, command lines, metrics.csv and checkpoint
//! files. Each surface draws thousands of damaged inputs from a fixed seed
//! (the same cases on every run; a failure names its case number and keeps
//! the input) and runs the program on them — in this process through
//! `klrl_cli::run_with_args` where that writes nothing it should not (a
//! thread per case, `catch_unwind` for panics, a time limit for hangs), the
//! real binary otherwise and on a sample of every surface (exit status 101
//! or "panicked" on stderr is a panic).
//!
//! Two claims per surface, from one fuzzing pass (shared through a
//! `OnceLock`): the program never panics or hangs, and a bad input exits with
//! status 2 and a message that names it — the file, the field, the flag or
//! the checkpoint. Inputs the program accepts (a damaged file can still be a
//! valid one) are counted apart and are not among the "bad inputs" counted
//! toward the 10,000.
//!
//! `KLRL_FUZZ_SCALE=10 cargo test --release -p klrl-cli --test fuzz_inputs`
//! draws ten times as many cases (the same ones first, then more).

mod common;
mod fuzz;
mod seeded;

use std::sync::OnceLock;

use fuzz::harness::{binary, Outcome, Tally};
use fuzz::runs::{snapshot, train_run, TINY_PPO};
use fuzz::{cases, checkpoints, command_lines, configs, metrics, sets};
use seeded::scratch_dir;

fn config_results() -> &'static Tally {
    static R: OnceLock<Tally> = OnceLock::new();
    R.get_or_init(configs::fuzz)
}

#[test]
fn damaged_configs_never_panic_or_hang() {
    config_results().assert_robust();
}

#[test]
fn damaged_configs_exit_2_naming_the_file() {
    config_results().assert_reported();
}

fn set_results() -> &'static Tally {
    static R: OnceLock<Tally> = OnceLock::new();
    R.get_or_init(sets::fuzz)
}

#[test]
fn bad_set_values_never_panic_or_hang() {
    set_results().assert_robust();
}

#[test]
fn bad_set_values_exit_2_naming_the_override() {
    set_results().assert_reported();
}

fn command_results() -> &'static Tally {
    static R: OnceLock<Tally> = OnceLock::new();
    R.get_or_init(command_lines::fuzz)
}

#[test]
fn bad_command_lines_never_panic_or_hang() {
    command_results().assert_robust();
}

#[test]

fn bad_command_lines_exit_2_naming_the_argument() {
    command_results().assert_reported();
}

fn metrics_results() -> &'static Tally {
    static R: OnceLock<Tally> = OnceLock::new();
    R.get_or_init(metrics::fuzz)
}

#[test]
fn damaged_metrics_never_panic_or_hang() {
    metrics_results().assert_robust();
}

#[test]

fn damaged_metrics_exit_2_naming_the_file() {
    metrics_results().assert_reported();
}

fn checkpoint_results() -> &'static Tally {
    static R: OnceLock<Tally> = OnceLock::new();
    R.get_or_init(checkpoints::fuzz)
}

#[test]
fn damaged_checkpoints_never_panic_or_hang() {
    checkpoint_results().assert_robust();
}

#[test]

fn damaged_checkpoints_exit_2_naming_the_checkpoint() {
    checkpoint_results().assert_reported();
}

/// The goal of issue 12: at least 10,000 bad inputs over all surfaces, none
/// of which made klrl panic or hang.
#[test]
fn ten_thousand_bad_inputs_and_no_panic_or_hang() {
    let all = [
        config_results(),
        set_results(),
        command_results(),
        metrics_results(),
        checkpoint_results(),
    ];
    let mut total = 0;
    for t in all {
        eprintln!(
            "{:<14} {:>6} bad inputs, {:>5} damaged but accepted, {:>5} runs of the binary, {:>5.1} s",
            t.name, t.bad, t.accepted, t.subprocess, t.seconds
        );
        total += t.bad;
    }
    let failures: usize = all
        .iter()
        .flat_map(|t| t.robustness.values())
        .map(|(n, _)| n)
        .sum();
    eprintln!("total: {total} bad inputs, {failures} panics, hangs or crashes");
    assert_eq!(
        failures, 0,
        "panics, hangs or crashes (see the surfaces' tests)"
    );
    assert!(
        total >= cases(10_000),
        "only {total} bad inputs were generated"
    );
}

// ---------------------------------------------------------------------------
// What the fuzzing found, one case each

/// `klrl train --resume` given a checkpoint directory instead of its run
/// directory: the checkpoint holds a config.toml, so it is taken for a run
/// that has no checkpoint yet and the whole run is trained again from
/// update 0 inside the checkpoint directory (exit 0). It must be refused
/// (exit 2) and leave the checkpoint as it was.
#[test]

fn resuming_a_checkpoint_directory_is_refused() {
    let work = scratch_dir("resume-checkpoint");
    let run = train_run(&work, "run", TINY_PPO);
    let ckpt = run.join("checkpoints/update-00000006");
    let before = snapshot(&ckpt);
    let (o, f) = binary(
        &["train", "--resume", "run/checkpoints/update-00000006"],
        &work,
    );
    assert_eq!(o, Outcome::Exit(2), "{}{}", f.stdout, f.stderr);
    assert!(f.stderr.contains("update-00000006"), "{}", f.stderr);
    assert!(snapshot(&ckpt) == before, "the checkpoint changed");
    std::fs::remove_dir_all(&work).unwrap();
}

/// A config whose `env.params.max_episode_steps` is far beyond any episode
/// (here 9·10¹⁸ on Pendulum-v1, whose episodes end only by that limit) is
/// accepted, trains, and then hangs in the final evaluation. Sizes are
/// bounded elsewhere "so that a typo cannot hang the machine"; this one is
/// not. Expected: refused when the config is loaded (exit 2 naming the
/// field), or an evaluation that ends.
#[test]

fn an_episode_limit_beyond_reach_does_not_hang_the_evaluation() {
    let work = scratch_dir("endless-episode");
    let config =
        "[env]\nname = \"Pendulum-v1\"\nparams = { max_episode_steps = 9000000000000000000 }\n\
        [train]\ntotal_steps = 256\nn_envs = 2\nn_steps = 64\n\
        [algo]\nname = \"ppo\"\nn_epochs = 1\nminibatch_size = 64\n\
        [run]\neval_episodes = 1\ntensorboard = false\n";
    std::fs::write(work.join("p.toml"), config).unwrap();
    let (o, f) = binary(&["train", "p.toml", "--out", "p"], &work);
    assert!(
        matches!(o, Outcome::Exit(0) | Outcome::Exit(2)),
        "{o:?}: {}",
        f.stderr
    );
    if o == Outcome::Exit(2) {
        assert!(f.stderr.contains("max_episode_steps"), "{}", f.stderr);
    }
    std::fs::remove_dir_all(&work).unwrap();
}
