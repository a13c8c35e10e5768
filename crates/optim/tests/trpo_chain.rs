//! TRPO on the tabular MDP `Chain-v0` with exact quantities: every accepted
//! step improves the exact expected return J(π) and keeps the exact mean KL
//! within the trust region.
//!
//! # The construction
//!
//! With one-hot observations and a linear categorical policy (`hidden = []`),
//! the logits of state s are `W[:, s] + b`: one logit vector per state, so the
//! policy is tabular. Each update's batch holds one row per (non-terminal
//! state s, action a), with the advantage
//!
//! `Â(s, a) = R · d^π(s) · π_old(a|s) · A^π(s, a)`,
//!
//! R the number of rows, `A^π = Q^π − V^π` from the closed forms and `d^π`
//! the normalised discounted state visitation (advantage normalisation off).
//! The batch surrogate mean_rows(r Â) with r = π_θ(a|s)/π_old(a|s) is then
//! exactly `Σ_s d^π(s) Σ_a π_θ(a|s) A^π(s, a)`, TRPO's L_π_old(π_θ) − J(π_old)
//! up to the positive factor 1/Σρ^π (Schulman et al. 2015, eq. 3 and 4; the
//! performance-difference lemma of Kakade & Langford 2002), with no sampling
//! noise. Its KL constraint is the mean over the rows, i.e. the uniform mean
//! over the non-terminal states. The advantages pass through the batch's f32,
//! which perturbs the direction by ~1e-7 relative and nothing else.
//!
//! TRPO guarantees improvement of the surrogate; J improves too once δ is
//! small enough that the second-order error of the surrogate is below its
//! first-order gain (TRPO Theorem 1). δ = 0.01 is small enough here.

use candle_core::{DType, Device};
use klrl_envs::{ChainParams, TabularMdp};
use klrl_optim::batch::Batch;
use klrl_optim::trpo::Trpo;
use klrl_optim::{Algorithm, TrpoConfig};
use klrl_policy::{Actions, Activation, CategoricalPolicy, MlpConfig, Policy, ValueNet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const GAMMA: f64 = 0.99;

/// π(·|s) for every state, in f64, from the policy's one-hot logits.
fn tabular_policy(policy: &CategoricalPolicy, n_states: usize) -> Vec<Vec<f64>> {
    let obs = one_hots(&(0..n_states).collect::<Vec<_>>(), n_states);
    let t = policy.obs_tensor(&obs).unwrap();
    let klrl_policy::Dist::Categorical(c) = policy.dist(&t, None).unwrap() else {
        panic!("categorical policy")
    };
    c.probs().unwrap().to_vec2::<f64>().unwrap()
}

fn one_hots(states: &[usize], n: usize) -> Vec<f32> {
    let mut obs = vec![0.0; states.len() * n];
    for (i, &s) in states.iter().enumerate() {
        obs[i * n + s] = 1.0;
    }
    obs
}

/// The exact batch of the module docs for the policy `pi`.
fn exact_batch(mdp: &TabularMdp, pi: &[Vec<f64>], update: u64) -> Batch {
    let n = mdp.n_states();
    let q = mdp.q_values(pi, GAMMA).unwrap();
    let v = mdp.policy_value(pi, GAMMA).unwrap();
    let d = mdp.discounted_state_visitation(pi, GAMMA).unwrap();
    let mut rows = Vec::new();
    for s in (0..n).filter(|&s| !mdp.terminal_states()[s]) {
        for a in 0..mdp.n_actions() {
            rows.push((s, a, d[s] * pi[s][a] * (q[s][a] - v[s])));
        }
    }
    let r = rows.len() as f64;
    let states: Vec<usize> = rows.iter().map(|x| x.0).collect();
    Batch {
        obs_dim: n,
        obs: one_hots(&states, n),
        actions: Actions::Discrete(rows.iter().map(|x| x.1).collect()),
        old_log_probs: rows.iter().map(|&(s, a, _)| pi[s][a].ln() as f32).collect(),
        old_values: states.iter().map(|&s| v[s] as f32).collect(),
        advantages: rows.iter().map(|x| (r * x.2) as f32).collect(),
        returns: states.iter().map(|&s| v[s] as f32).collect(),
        masks: None,
        progress: 0.0,
        update,
        reference: None,
    }
}

#[test]
fn every_accepted_step_improves_the_exact_return_within_the_trust_region() {
    let mdp = TabularMdp::chain(ChainParams::default()).unwrap();
    let n = mdp.n_states();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let linear = MlpConfig {
        hidden: vec![],
        activation: Activation::Tanh,
    };
    let mut policy =
        CategoricalPolicy::new(n, 2, &linear, DType::F64, &Device::Cpu, &mut rng).unwrap();
    let mut value = ValueNet::new(n, &linear, DType::F64, &Device::Cpu, &mut rng).unwrap();
    let max_kl = 0.01;
    let config = TrpoConfig {
        max_kl,
        normalize_advantages: false,
        cg_damping: 1e-4,
        cg_iters: 50,
        vf_epochs: 0,
        ..TrpoConfig::default()
    };
    let mut trpo = Trpo::new(config, true, &value);
    let inner: Vec<f64> = mdp
        .terminal_states()
        .iter()
        .map(|&t| if t { 0.0 } else { 1.0 })
        .collect();
    let j_star: f64 = mdp
        .optimal_value(GAMMA)
        .unwrap()
        .iter()
        .zip(mdp.initial_distribution())
        .map(|(v, p)| v * p)
        .sum();
    let mut pi = tabular_policy(&policy, n);
    let j_start = mdp.expected_return(&pi, GAMMA).unwrap();
    let mut j = j_start;
    let (mut accepted, mut min_gain) = (0, f64::INFINITY);
    for update in 0..40 {
        let batch = exact_batch(&mdp, &pi, update);
        let d = trpo
            .update(&mut policy, &mut value, &batch, &mut rng)
            .unwrap();
        let pi_new = tabular_policy(&policy, n);
        let j_new = mdp.expected_return(&pi_new, GAMMA).unwrap();
        let kl = mdp.mean_kl(&pi, &pi_new, &inner).unwrap();
        if d.accepted == 1.0 {
            accepted += 1;
            min_gain = min_gain.min(j_new - j);
            assert!(
                j_new > j - 1e-12,
                "update {update}: J fell from {j} to {j_new} ({d:?})"
            );
            assert!(kl <= max_kl * (1.0 + 1e-9), "update {update}: KL {kl}");
            assert!((kl - d.kl_old_new).abs() < 1e-9 * max_kl.max(kl));
        } else {
            assert_eq!(pi_new, pi, "a rejected step must not move the policy");
        }
        pi = pi_new;
        j = j_new;
    }
    eprintln!(
        "J: {j_start:.6} → {j:.6} (J* = {j_star:.6}); {accepted} accepted, smallest gain {min_gain:.3e}"
    );
    // About 15 steps of δ = 0.01 reach the optimum; later steps find nothing
    // left to improve and are rejected (leaving the policy unchanged).
    assert!(accepted >= 10, "only {accepted} of 40 steps accepted");
    // The myopic start (the small reward next door) gives way to the far reward.
    assert!(j_start < 0.5 * j_star);
    assert!(j > 0.999 * j_star, "J = {j}, J* = {j_star}");
}
