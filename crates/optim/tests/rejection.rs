//! Numerical faults never enter the parameters: through [`Trainer::update`],
//! absurd learning rates make every learner produce non-finite losses,
//! gradients, parameters or KLs; each such update is rejected with the
//! policy, the value network and the optimiser state restored bit for bit,
//! and `train.max_rejected_updates` rejections in a row stop the run with
//! [`OptimError::Diverged`].

use klrl_envs::Registry;
use klrl_optim::{ExperimentConfig, OptimError, Trainer};
use klrl_policy::flat;

fn config(env: &str, algo: &str, dtype: &str, limit: u64) -> ExperimentConfig {
    let text = format!(
        "[env]\nname = \"{env}\"\n[train]\ntotal_steps = 100000\nn_envs = 2\nn_steps = 64\n\
         seed = 3\ndtype = \"{dtype}\"\nmax_rejected_updates = {limit}\n[algo]\n{algo}\n"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

/// Every parameter of the policy and the value network.
fn params(t: &Trainer) -> Vec<f64> {
    let mut p = t.policy.get_flat().unwrap();
    p.extend(flat::get_flat(&t.value.unshared_vars()).unwrap());
    p
}

/// What one run of up to `updates` updates did.
struct Outcome {
    accepted: usize,
    rejected: usize,
    diverged: bool,
}

/// Run `updates` updates, checking after each that the parameters are
/// finite, that a rejected update left parameters and optimiser state
/// exactly as they were, and that the run stops with `Diverged` exactly after
/// `limit` rejections in a row.
fn run_checked(config: ExperimentConfig, updates: usize) -> Outcome {
    let limit = config.train.max_rejected_updates;
    let mut t = Trainer::from_config(config, &Registry::builtin()).unwrap();
    let mut out = Outcome {
        accepted: 0,
        rejected: 0,
        diverged: false,
    };
    let mut in_a_row = 0;
    for u in 0..updates {
        let (before, state_before) = (params(&t), t.algo.state());
        match t.update() {
            Ok(report) => {
                let d = report.diagnostics;
                let now = params(&t);
                assert!(now.iter().all(|x| x.is_finite()), "update {u}: non-finite");
                if d.rejected == 1.0 {
                    assert_eq!(
                        now, before,
                        "update {u}: rejected, but the parameters moved"
                    );
                    assert_eq!(t.algo.state(), state_before, "update {u}: optimiser state");
                    assert_eq!(d.accepted, 0.0);
                    in_a_row += 1;
                    out.rejected += 1;
                    assert_eq!(t.rejections().1, in_a_row);
                } else {
                    assert_eq!(d.rejected, 0.0);
                    assert!(d.kl_old_new.is_finite(), "update {u}: {d:?}");
                    in_a_row = 0;
                    out.accepted += 1;
                }
            }
            Err(OptimError::Diverged { limit: l, what, .. }) => {
                assert_eq!((l, in_a_row), (limit, limit), "stopped early or late");
                assert!(!what.is_empty());
                assert_eq!(params(&t), before, "a stopped update changes nothing");
                out.diverged = true;
                break;
            }
            Err(e) => panic!("update {u}: {e}"),
        }
    }
    out
}

/// The largest learning rate whose first Adam step (lr · sign g per
/// coordinate) still fits the dtype: the step is taken, and the next forward
/// pass, a sum of such weights, overflows.
fn overflowing_lr(dtype: &str) -> &'static str {
    if dtype == "f32" {
        "3e38"
    } else {
        "1e308"
    }
}

/// PPO (two objectives) and vanilla PG with f32 and f64 networks at an
/// overflowing learning rate: updates are rejected, and the run stops after
/// exactly `max_rejected_updates` in a row.
#[test]
fn absurd_learning_rates_are_rejected_until_the_run_stops() {
    let learners = [
        "name = \"ppo\"\nn_epochs = 2\nminibatch_size = 64",
        "name = \"ppo\"\nobjective = \"kl_adaptive\"\nn_epochs = 2",
        "name = \"vanilla-pg\"",
    ];
    for algo in learners {
        for dtype in ["f32", "f64"] {
            let algo = format!("{algo}\nlr = {}", overflowing_lr(dtype));
            let o = run_checked(config("CartPole-v1", &algo, dtype, 3), 20);
            assert!(o.diverged, "{algo} {dtype}: did not stop");
            assert!(o.rejected >= 3, "{algo} {dtype}");
        }
    }
}

/// lr = 1e4 (the example) on a Gaussian policy, whose log σ
/// overflows exp, and on CartPole: each run either keeps going with its
/// rejections counted or stops with `Diverged`; no parameter is ever
/// non-finite and rejected updates restore everything (checked inside).
#[test]
fn a_learning_rate_of_1e4_never_leaves_a_non_finite_parameter() {
    let cases = [
        (
            "Pendulum-v1",
            "name = \"ppo\"\nlr = 1e4\nn_epochs = 4\nminibatch_size = 32",
        ),
        ("Pendulum-v1", "name = \"vanilla-pg\"\nlr = 1e4"),
        (
            "CartPole-v1",
            "name = \"ppo\"\nlr = 1e4\nn_epochs = 4\nminibatch_size = 32",
        ),
        ("Pendulum-v1", "name = \"trpo\"\nmax_kl = 1e4\nvf_lr = 1e4"),
    ];
    let mut rejected = 0;
    for (env, algo) in cases {
        let o = run_checked(config(env, algo, "f32", 3), 12);
        eprintln!(
            "{env} {algo:?}: {} accepted, {} rejected, stopped: {}",
            o.accepted, o.rejected, o.diverged
        );
        rejected += o.rejected;
    }
    assert!(rejected > 0, "no case exercised a rejection");
}

/// TRPO with an absurd value-function learning rate: the value fit's
/// minibatch steps that would overflow are skipped and counted, the policy
/// step still happens.
#[test]
fn trpo_skips_value_steps_that_would_overflow() {
    let algo = "name = \"trpo\"\nvf_lr = 3e38\nvf_epochs = 3\nvf_minibatch_size = 32";
    let mut t =
        Trainer::from_config(config("CartPole-v1", algo, "f32", 3), &Registry::builtin()).unwrap();
    let d = t.update().unwrap().diagnostics;
    assert_eq!(d.rejected, 0.0, "{d:?}");
    assert!(d.rejected_steps >= 1.0, "{d:?}");
    assert!(params(&t).iter().all(|x| x.is_finite()));
}

/// A rejected update still counts its rollout, and an accepted one resets
/// the count of rejections in a row; the same seed gives the same sequence.
#[test]
fn rejections_are_deterministic_and_count_the_rollout() {
    let algo = "name = \"ppo\"\nlr = 3e38\nn_epochs = 2\nminibatch_size = 128";
    let trace = || {
        let mut t =
            Trainer::from_config(config("CartPole-v1", algo, "f32", 5), &Registry::builtin())
                .unwrap();
        let reports: Vec<_> = (0..3).map(|_| t.update().unwrap()).collect();
        assert_eq!(t.env_steps, 3 * 128);
        assert_eq!(t.updates, 3);
        reports
            .iter()
            .map(|r| (r.diagnostics.rejected, r.episodes.len()))
            .collect::<Vec<_>>()
    };
    let first = trace();
    assert!(first.iter().all(|&(r, _)| r == 1.0), "{first:?}");
    assert_eq!(first, trace());
}
