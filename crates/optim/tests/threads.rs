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
