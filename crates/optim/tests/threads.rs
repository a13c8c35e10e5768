//! The trainer's thread count changes where work runs, never what it
//! computes: with `train.threads = 2` the policy's and the value network's
//! gradients (PPO, vanilla PG) and TRPO's critic fit and policy step run at
//! the same time, Adam steps large variables in two halves, and the
//! parameters after several updates are bit-identical to one thread's.

use klrl_envs::Registry;
use klrl_optim::{ExperimentConfig, Trainer};
use klrl_policy::flat;

fn params_after(env: &str, algo: &str, threads: usize, updates: usize) -> Vec<f64> {
    let text = format!(
        "[env]\nname = \"{env}\"\n[train]\nn_envs = 4\nn_steps = 64\nseed = 11\n\
         threads = {threads}\n[algo]\n{algo}\n"
    );
    let config: ExperimentConfig = toml::from_str(&text).unwrap();
    let mut t = Trainer::from_config(config, &Registry::builtin()).unwrap();
    for _ in 0..updates {
        t.update().unwrap();
    }
    let mut p = t.policy.get_flat().unwrap();
    p.extend(flat::get_flat(&t.value.unshared_vars()).unwrap());
    p
}

#[test]
fn two_threads_give_the_same_parameters_as_one() {
    let cases = [
        (
            "CartPole-v1",
            "name = \"ppo\"\nn_epochs = 4\nminibatch_size = 64",
        ),
        (
            "CartPole-v1",
            "name = \"ppo\"\nn_epochs = 5\nminibatch_size = 256",
        ),
        (
            "Pendulum-v1",
            "name = \"ppo\"\nobjective = \"kl_adaptive\"\nmax_kl = 0.02",
        ),
        ("CartPole-v1", "name = \"vanilla-pg\""),
        ("CartPole-v1", "name = \"trpo\"\nvf_epochs = 5"),
        ("Pendulum-v1", "name = \"trpo\"\nfvp_subsample = 0.5"),
        ("MovieRec-v0", "name = \"npg\""),
        // 256-256 networks: Adam steps and writes back the large variables
        // in two halves on two threads (klrl_policy::flat::PARALLEL_MIN),
        // and the value gradient goes to the second thread.
        (
            "Pendulum-v1",
            "name = \"ppo\"\nn_epochs = 2\nminibatch_size = 64\n[policy]\nhidden = [256, 256]",
        ),
        (
            "Pendulum-v1",
            "name = \"trpo\"\nvf_epochs = 2\n[policy]\nhidden = [256, 256]",
        ),
    ];
    for (env, algo) in cases {
        let one = params_after(env, algo, 1, 4);
        let two = params_after(env, algo, 2, 4);
        assert_eq!(one, two, "{env} {algo}");
    }
}

/// A trainer of the CartPole PPO test config with `threads` as given (TOML
/// text: `"auto"`, `1`, …, or nothing for the default).
fn cartpole_trainer(threads: &str) -> Trainer {
    let line = if threads.is_empty() {
        String::new()
    } else {
        format!("threads = {threads}\n")
    };
    let text = format!(
        "[env]\nname = \"CartPole-v1\"\n[train]\nn_envs = 4\nn_steps = 64\nseed = 3\n{line}\
         [algo]\nname = \"ppo\"\nn_epochs = 3\nminibatch_size = 64\n"
    );
    let config: ExperimentConfig = toml::from_str(&text).unwrap();
    Trainer::from_config(config, &Registry::builtin()).unwrap()
}

fn all_params(t: &Trainer) -> Vec<f64> {
    let mut p = t.policy.get_flat().unwrap();
    p.extend(flat::get_flat(&t.value.unshared_vars()).unwrap());
    p
}

#[test]
fn one_thread_is_the_default_and_auto_takes_the_cores_up_to_two() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = cores.clamp(1, 2);
    assert_eq!(cartpole_trainer("").threads(), 1);
    assert_eq!(cartpole_trainer("\"auto\"").threads(), want);
    assert_eq!(cartpole_trainer("1").threads(), 1);
    assert_eq!(cartpole_trainer("3").threads(), 3);
}

#[test]
fn changing_the_thread_count_mid_run_keeps_every_bit() {
    let mut steady = cartpole_trainer("1");
    let mut switched = cartpole_trainer("2");
    for u in 0..6 {
        if u == 2 {
            switched.set_threads(1).unwrap();
            assert_eq!(switched.threads(), 1);
        }
        if u == 4 {
            switched.set_threads(2).unwrap();
            assert_eq!(switched.threads(), 2);
        }
        steady.update().unwrap();
        switched.update().unwrap();
        assert_eq!(
            all_params(&steady),
            all_params(&switched),
            "after update {u}"
        );
    }
}

#[test]
fn an_impossible_thread_count_is_refused_and_changes_nothing() {
    let mut t = cartpole_trainer("2");
    for bad in [0, klrl_optim::threads::MAX_THREADS + 1] {
        let e = t.set_threads(bad).unwrap_err().to_string();
        assert!(
            e.contains("train.threads") && e.contains(&bad.to_string()),
            "{e}"
        );
        assert_eq!(t.threads(), 2);
    }
}
