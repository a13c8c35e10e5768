//! Tests of the tabular MDP and `Chain-v0`: closed forms against hand algebra,
//! against numpy/scipy (fixture), against Monte-Carlo rollouts of the
//! environment itself and against iterative policy evaluation.

use klrl_envs::{
    Action, ChainParams, Checked, Env, EnvError, EnvRng, Registry, TabularMdp, VecEnv,
};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/tabular_chain.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is valid JSON")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| match x {
            Value::String(s) if s == "inf" => f64::INFINITY,
            x => x.as_f64().expect("number"),
        })
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(f64s).collect()
}

fn chain_from(v: &Value) -> TabularMdp {
    let params: ChainParams = serde_json::from_value(v.clone()).expect("chain parameters");
    TabularMdp::chain(params).unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * (1.0 + w.abs())
        };
        assert!(
            ok,
            "{what}[{i}]: got {g}, want {w}\n got  {got:?}\n want {want:?}"
        );
    }
}

/// Three states: 0 and 1 non-terminal, 2 terminal; two actions.
/// In state 0, action 0 ("stay") stays in 0 with reward 1, action 1 ("go")
/// moves to 1 with reward 0. In state 1 both actions move to 2 with reward 2.
fn three_state() -> TabularMdp {
    let p = vec![
        vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]],
        vec![vec![0.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]],
        vec![vec![0.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]],
    ];
    let r = vec![
        vec![vec![1.0, 0.0, 0.0], vec![0.0, 0.0, 0.0]],
        vec![vec![0.0, 0.0, 2.0], vec![0.0, 0.0, 2.0]],
        vec![vec![0.0; 3], vec![0.0; 3]],
    ];
    TabularMdp::new(
        "ThreeState",
        &p,
        &r,
        &[false, false, true],
        &[1.0, 0.0, 0.0],
    )
    .unwrap()
}

#[test]
fn three_state_case_matches_the_hand_solution() {
    // With π(go|0) = q:
    //   V(2) = 0, V(1) = 2,
    //   V(0) = (1−q)(1 + γ V(0)) + q γ V(1)  ⇒  V(0) = ((1−q) + 2qγ) / (1 − γ(1−q)).
    //   Q(0,stay) = 1 + γ V(0), Q(0,go) = 2γ, Q(1,·) = 2, Q(2,·) = 0.
    // Visitation from ρ0 = δ_0: ρ(0) = 1 + γ(1−q) ρ(0) ⇒ ρ(0) = 1/(1 − γ(1−q)),
    //   ρ(1) = γ q ρ(0), ρ(2) = 0 ⇒ d = (1, γq, 0) / (1 + γq).
    // q = 0.5, γ = 0.9: V(0) = 1.4 / 0.55.
    // V*: staying forever gives 1/(1−γ) = 10 > going (2γ = 1.8), so V*(0) = 10.
    let mdp = three_state();
    let (q, gamma): (f64, f64) = (0.5, 0.9);
    let pi = vec![vec![1.0 - q, q], vec![0.5, 0.5], vec![0.5, 0.5]];
    let v0 = ((1.0 - q) + 2.0 * q * gamma) / (1.0 - gamma * (1.0 - q));
    assert!((v0 - 1.4 / 0.55).abs() < 1e-15);
    let v = mdp.policy_value(&pi, gamma).unwrap();
    assert_close(&v, &[v0, 2.0, 0.0], 1e-14, "V");
    let qv = mdp.q_values(&pi, gamma).unwrap();
    assert_close(&qv[0], &[1.0 + gamma * v0, 2.0 * gamma], 1e-14, "Q(0)");
    assert_close(&qv[1], &[2.0, 2.0], 1e-14, "Q(1)");
    assert_close(&qv[2], &[0.0, 0.0], 1e-14, "Q(2)");
    assert!((mdp.expected_return(&pi, gamma).unwrap() - v0).abs() < 1e-14);
    let d = mdp.discounted_state_visitation(&pi, gamma).unwrap();
    let z = 1.0 + gamma * q;
    assert_close(&d, &[1.0 / z, gamma * q / z, 0.0], 1e-14, "d");
    let v_star = mdp.optimal_value(gamma).unwrap();
    assert_close(&v_star, &[10.0, 2.0, 0.0], 1e-10, "V*");
    // γ = 1: staying forever has no terminal state, so I − P_π is singular.
    let stay = vec![vec![1.0, 0.0], vec![0.5, 0.5], vec![0.5, 0.5]];
    let err = mdp.policy_value(&stay, 1.0).unwrap_err();
    assert!(err.to_string().contains("`gamma`"), "{err}");
    // ... while going is fine at γ = 1: V(0) = 2.
    let go = vec![vec![0.0, 1.0], vec![0.5, 0.5], vec![0.5, 0.5]];
    assert_close(
        &mdp.policy_value(&go, 1.0).unwrap(),
        &[2.0, 2.0, 0.0],
        1e-14,
        "V go",
    );
}

#[test]
fn closed_forms_match_numpy_and_scipy() {
    let fx = fixture();
    let cases = fx["policy_cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let mdp = chain_from(&case["chain"]);
        let pi = rows(&case["policy"]);
        let gamma = case["gamma"].as_f64().unwrap();
        let what = format!("{} γ={gamma} {}", case["chain"], case["policy_name"]);
        let v = mdp.policy_value(&pi, gamma).unwrap();
        assert_close(&v, &f64s(&case["V"]), 1e-10, &format!("V {what}"));
        let q = mdp.q_values(&pi, gamma).unwrap();
        for (s, (got, want)) in q.iter().zip(rows(&case["Q"])).enumerate() {
            assert_close(got, &want, 1e-10, &format!("Q[{s}] {what}"));
        }
        let j = mdp.expected_return(&pi, gamma).unwrap();
        assert_close(
            &[j],
            &[case["J"].as_f64().unwrap()],
            1e-10,
            &format!("J {what}"),
        );
        let d = mdp.discounted_state_visitation(&pi, gamma).unwrap();
        assert_close(&d, &f64s(&case["d"]), 1e-10, &format!("d {what}"));
    }
    for case in fx["kl_cases"].as_array().unwrap() {
        let mdp = chain_from(&case["chain"]);
        let (p1, p2) = (rows(&case["pi1"]), rows(&case["pi2"]));
        let what = format!("KL({} ‖ {})", case["pi1_name"], case["pi2_name"]);
        let kl = mdp.kl_per_state(&p1, &p2).unwrap();
        assert_close(&kl, &f64s(&case["kl_per_state"]), 1e-12, &what);
        let mean = mdp.mean_kl(&p1, &p2, &f64s(&case["weights"])).unwrap();
        let want = f64s(&Value::Array(vec![case["mean_kl"].clone()]));
        assert_close(&[mean], &want, 1e-10, &format!("mean {what}"));
    }
    for case in fx["optimal_cases"].as_array().unwrap() {
        let mdp = chain_from(&case["chain"]);
        let gamma = case["gamma"].as_f64().unwrap();
        let v = mdp.optimal_value(gamma).unwrap();
        assert_close(&v, &f64s(&case["V_star"]), 1e-10, &format!("V* γ={gamma}"));
    }
}

/// A random stochastic policy with every probability ≥ 0.05.
fn random_policy(rng: &mut EnvRng, n_states: usize, n_actions: usize) -> Vec<Vec<f64>> {
    (0..n_states)
        .map(|_| {
            let w: Vec<f64> = (0..n_actions)
                .map(|_| rng.random_range(0.05..1.0))
                .collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|x| x / total).collect()
        })
        .collect()
}

fn sample_action(rng: &mut EnvRng, row: &[f64]) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (a, p) in row.iter().enumerate() {
        acc += p;
        if u < acc {
            return a;
        }
    }
    row.len() - 1
}

#[test]
fn policy_value_agrees_with_monte_carlo_rollouts_of_the_env() {
    // Rollouts run until termination (every policy here terminates with
    // probability 1 because of the slip), so the γ-discounted closed form and
    // the untruncated rollouts describe the same quantity.
    let params = ChainParams {
        n_states: 7,
        slip: 0.2,
        step_reward: -0.05,
        start_state: 3,
        ..Default::default()
    };
    let mut env = Checked::new(TabularMdp::chain(params).unwrap());
    let mdp = TabularMdp::chain(params).unwrap();
    let mut rng = EnvRng::seed_from_u64(11);
    let gamma = 0.95;
    for k in 0..3 {
        let pi = random_policy(&mut rng, 7, 2);
        let exact = mdp.expected_return(&pi, gamma).unwrap();
        let episodes = 20_000;
        let mut obs = Vec::new();
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        env.reset(Some(100 + k), &mut obs).unwrap();
        for _ in 0..episodes {
            env.reset(None, &mut obs).unwrap();
            let (mut ret, mut discount) = (0.0, 1.0);
            for _ in 0..100_000 {
                let s = obs.iter().position(|&x| x == 1.0).unwrap();
                let a = sample_action(&mut rng, &pi[s]);
                let step = env.step(Action::Discrete(a), &mut obs).unwrap();
                ret += discount * step.reward;
                discount *= gamma;
                if step.terminated {
                    break;
                }
            }
            sum += ret;
            sum_sq += ret * ret;
        }
        let mean = sum / episodes as f64;
        let se = ((sum_sq / episodes as f64 - mean * mean) / episodes as f64).sqrt();
        assert!(
            (mean - exact).abs() < 5.0 * se,
            "policy {k}: Monte-Carlo {mean} ± {se}, closed form {exact}"
        );
        assert!(se > 0.0 && se < 0.01, "se {se}");
    }
}

#[test]
fn policy_value_agrees_with_iterative_policy_evaluation() {
    let mdp = TabularMdp::chain(ChainParams::default()).unwrap();
    let n = mdp.n_states();
    let mut rng = EnvRng::seed_from_u64(3);
    for gamma in [0.5, 0.9, 0.99] {
        let pi = random_policy(&mut rng, n, 2);
        // Sutton & Barto's iterative policy evaluation, written out from the
        // model accessors.
        let mut v = vec![0.0; n];
        for _ in 0..100_000 {
            let mut change: f64 = 0.0;
            for s in 0..n {
                if mdp.terminal_states()[s] {
                    continue;
                }
                let new: f64 = (0..2)
                    .map(|a| {
                        let next: f64 = (0..n)
                            .map(|s2| {
                                let p = mdp.transition(s, a, s2).unwrap();
                                p * (mdp.transition_reward(s, a, s2).unwrap() + gamma * v[s2])
                            })
                            .sum();
                        pi[s][a] * next
                    })
                    .sum();
                change = change.max((new - v[s]).abs());
                v[s] = new;
            }
            if change < 1e-14 {
                break;
            }
        }
        let exact = mdp.policy_value(&pi, gamma).unwrap();
        assert_close(&exact, &v, 1e-11, &format!("γ={gamma}"));
    }
}

#[test]
fn bellman_equations_hold_for_q_and_v() {
    let mdp = TabularMdp::chain(ChainParams {
        n_states: 8,
        slip: 0.3,
        step_reward: -0.02,
        start_state: 4,
        ..Default::default()
    })
    .unwrap();
    let mut rng = EnvRng::seed_from_u64(5);
    for gamma in [0.0, 0.7, 0.99, 1.0] {
        let pi = random_policy(&mut rng, 8, 2);
        let v = mdp.policy_value(&pi, gamma).unwrap();
        let q = mdp.q_values(&pi, gamma).unwrap();
        for s in 0..8 {
            // V(s) = Σ_a π(a|s) Q(s,a)
            let vq: f64 = (0..2).map(|a| pi[s][a] * q[s][a]).sum();
            assert!(
                (v[s] - vq).abs() < 1e-12,
                "γ={gamma} s={s}: {} vs {vq}",
                v[s]
            );
            if mdp.terminal_states()[s] {
                assert_eq!(v[s], 0.0);
                continue;
            }
            // Q(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) Σ_a' π(a'|s') Q(s',a')
            for a in 0..2 {
                let next: f64 = (0..8)
                    .map(|s2| {
                        let v2: f64 = (0..2).map(|a2| pi[s2][a2] * q[s2][a2]).sum();
                        mdp.transition(s, a, s2).unwrap() * v2
                    })
                    .sum();
                let rhs = mdp.expected_reward(s, a).unwrap() + gamma * next;
                assert!((q[s][a] - rhs).abs() < 1e-12, "γ={gamma} ({s},{a})");
            }
        }
        // The visitation is a distribution on the non-terminal states.
        let d = mdp.discounted_state_visitation(&pi, gamma).unwrap();
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(d[0] == 0.0 && d[7] == 0.0 && d.iter().all(|&x| x >= 0.0));
    }
}

#[test]
fn kl_is_zero_for_identical_policies_and_infinite_without_support() {
    let mdp = TabularMdp::chain(ChainParams::default()).unwrap();
    let mut rng = EnvRng::seed_from_u64(9);
    let pi = random_policy(&mut rng, 10, 2);
    assert!(mdp
        .kl_per_state(&pi, &pi)
        .unwrap()
        .iter()
        .all(|&k| k == 0.0));
    let right = vec![vec![0.0, 1.0]; 10];
    let uniform = mdp.uniform_policy();
    // KL(right ‖ uniform) = 1 · ln(1 / 0.5) = ln 2 everywhere.
    for k in mdp.kl_per_state(&right, &uniform).unwrap() {
        assert!((k - 2f64.ln()).abs() < 1e-15);
    }
    // Reverse direction: uniform puts mass where `right` has none.
    assert!(mdp
        .kl_per_state(&uniform, &right)
        .unwrap()
        .iter()
        .all(|k| k.is_infinite() && *k > 0.0));
    // A zero weight removes an infinite state from the mean; others count.
    let mut partly = right.clone();
    partly[3] = vec![0.5, 0.5];
    let mut w = vec![0.0; 10];
    w[2] = 1.0;
    w[3] = 3.0;
    let mean = mdp.mean_kl(&partly, &right, &w).unwrap();
    assert!(mean.is_infinite());
    w[3] = 0.0;
    assert_eq!(mdp.mean_kl(&partly, &right, &w).unwrap(), 0.0);
    // Mean under uniform non-terminal weights of a hand-computed case:
    // one state with KL(0.5,0.5 ‖ 0.25,0.75) = 0.5 ln 2 + 0.5 ln(2/3), 8 live states.
    let mut q = uniform.clone();
    q[5] = vec![0.25, 0.75];
    let live: Vec<f64> = (0..10)
        .map(|s| if s == 0 || s == 9 { 0.0 } else { 1.0 })
        .collect();
    let want = (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln()) / 8.0;
    assert!((mdp.mean_kl(&uniform, &q, &live).unwrap() - want).abs() < 1e-15);
}

#[test]
fn optimal_value_dominates_random_policies_and_myopia_loses() {
    let mdp = TabularMdp::chain(ChainParams::default()).unwrap();
    let gamma = 0.99;
    let v_star = mdp.optimal_value(gamma).unwrap();
    let mut rng = EnvRng::seed_from_u64(13);
    for _ in 0..50 {
        let pi = random_policy(&mut rng, 10, 2);
        let v = mdp.policy_value(&pi, gamma).unwrap();
        for (s, (a, b)) in v_star.iter().zip(&v).enumerate() {
            assert!(a + 1e-10 >= *b, "state {s}: V* {a} < V^π {b}");
        }
    }
    // The myopic policy (optimal for γ = 0: go left from cell 1) is far from
    // optimal at γ = 0.99, and "always right" is optimal there.
    let v0 = mdp.optimal_value(0.0).unwrap();
    let q0 = mdp.q_values(&mdp.uniform_policy(), 0.0).unwrap();
    assert!(q0[1][0] > q0[1][1], "myopically, left is better at cell 1");
    assert!((v0[1] - 0.9 * 0.1).abs() < 1e-15);
    let mut myopic = vec![vec![0.0, 1.0]; 10];
    myopic[1] = vec![1.0, 0.0];
    let j_myopic = mdp.expected_return(&myopic, gamma).unwrap();
    let right = vec![vec![0.0, 1.0]; 10];
    let j_right = mdp.expected_return(&right, gamma).unwrap();
    // 0.83 against 0.17 (with probability 0.1 the first move slips right).
    assert!(j_right - j_myopic > 0.6, "{j_right} vs {j_myopic}");
    assert!((j_right - v_star[1]).abs() < 1e-10);
}

#[test]
fn the_env_steps_as_the_model_says() {
    // Empirical next-state frequencies of (cell 3, right) match P within 5 sigma.
    let mdp = TabularMdp::chain(ChainParams {
        start_state: 3,
        slip: 0.3,
        ..Default::default()
    })
    .unwrap();
    let mut env = mdp.clone();
    let mut obs = Vec::new();
    let n = 20_000;
    let mut right = 0usize;
    env.reset(Some(1), &mut obs).unwrap();
    for _ in 0..n {
        env.reset(None, &mut obs).unwrap();
        assert_eq!(obs, one_hot(10, 3));
        let step = env.step(Action::Discrete(1), &mut obs).unwrap();
        assert_eq!(step.reward, 0.0);
        assert!(!step.terminated);
        match env.state() {
            4 => right += 1,
            2 => {}
            s => panic!("moved to {s}"),
        }
        assert_eq!(obs, one_hot(10, env.state()));
    }
    let p = 0.7;
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    assert!((right as f64 / n as f64 - p).abs() < 5.0 * sd, "{right}");
    // Entering an end terminates, pays its reward, and needs a reset.
    let mut env = Checked::new(TabularMdp::chain(ChainParams::default()).unwrap());
    env.reset(Some(0), &mut obs).unwrap();
    let step = loop {
        let step = env.step(Action::Discrete(0), &mut obs).unwrap();
        if step.terminated {
            break step;
        }
    };
    assert!(step.reward == 0.1 || step.reward == 1.0, "{step:?}");
    let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
    assert!(matches!(err, EnvError::NeedsReset { .. }), "{err}");
    let err = env
        .inner_mut()
        .step(Action::Discrete(0), &mut obs)
        .unwrap_err();
    assert!(matches!(err, EnvError::NeedsReset { .. }), "{err}");
}

fn one_hot(n: usize, i: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    v[i] = 1.0;
    v
}

#[test]
fn same_seed_same_trajectory() {
    let run = |seed| {
        let mut env = TabularMdp::chain(ChainParams::default()).unwrap();
        let mut obs = Vec::new();
        let mut rng = EnvRng::seed_from_u64(0);
        env.reset(Some(seed), &mut obs).unwrap();
        let mut states = vec![env.state()];
        for _ in 0..200 {
            let step = env
                .step(Action::Discrete(rng.random_range(0..2)), &mut obs)
                .unwrap();
            states.push(env.state());
            if step.terminated {
                env.reset(None, &mut obs).unwrap();
            }
        }
        states
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}

#[test]
fn registry_builds_chain_with_time_limit_and_checks_params() {
    let registry = Registry::builtin();
    let spec = registry.get("Chain-v0").unwrap();
    assert_eq!(
        spec.max_episode_steps,
        Some(TabularMdp::CHAIN_MAX_EPISODE_STEPS)
    );
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let env = registry
        .make("Chain-v0", &table("n_states = 5\nslip = 0.0"))
        .unwrap();
    assert_eq!(env.observation_space().flat_dim(), 5);
    assert_eq!(env.action_space().n(), Some(2));
    // Deterministic and dithering: right from cell 1, left from cell 2; only
    // the time limit ends it.
    let mut venv = VecEnv::new(vec![registry
        .make(
            "Chain-v0",
            &table("n_states = 5\nslip = 0.0\nmax_episode_steps = 6"),
        )
        .unwrap()])
    .unwrap();
    venv.reset(Some(0)).unwrap();
    for t in 0..6 {
        let cell = venv.observations().iter().position(|&x| x == 1.0).unwrap();
        venv.step_discrete(&[if cell == 1 { 1 } else { 0 }])
            .unwrap();
        assert_eq!(venv.truncated()[0], t == 5);
        assert!(!venv.terminated()[0]);
    }
    for (bad, param) in [
        ("n_states = 2", "n_states"),
        ("n_states = 100000", "n_states"),
        ("slip = 1.5", "slip"),
        ("slip = nan", "slip"),
        ("left_reward = inf", "left_reward"),
        ("start_state = 0", "start_state"),
        ("start_state = 9", "start_state"),
    ] {
        let err = registry.make("Chain-v0", &table(bad)).err().unwrap();
        assert!(
            err.to_string().contains(&format!("`{param}`")),
            "{bad}: {err}"
        );
    }
    let err = registry
        .make("Chain-v0", &table("slipp = 0.1"))
        .err()
        .unwrap();
    assert!(matches!(err, EnvError::BadParameters { .. }), "{err}");
}

#[test]
fn bad_tables_and_policies_are_rejected_with_the_argument_named() {
    let p = vec![vec![vec![0.5, 0.6]], vec![vec![0.0, 1.0]]];
    let r = vec![vec![vec![0.0, 0.0]], vec![vec![0.0, 0.0]]];
    let err = TabularMdp::new("T", &p, &r, &[false, true], &[1.0, 0.0]).unwrap_err();
    assert!(
        err.to_string().contains("`transitions`") && err.to_string().contains("sums to"),
        "{err}"
    );
    let p = vec![vec![vec![0.5, 0.5]], vec![vec![0.0, 1.0]]];
    let err = TabularMdp::new("T", &p, &r, &[false, true], &[0.5, 0.5]).unwrap_err();
    assert!(err.to_string().contains("`initial`"), "{err}");
    let err = TabularMdp::new("T", &p, &r[..1], &[false, true], &[1.0, 0.0]).unwrap_err();
    assert!(err.to_string().contains("`rewards`"), "{err}");
    let bad_r = vec![vec![vec![f64::NAN, 0.0]], vec![vec![0.0, 0.0]]];
    let err = TabularMdp::new("T", &p, &bad_r, &[false, true], &[1.0, 0.0]).unwrap_err();
    assert!(err.to_string().contains("`rewards`"), "{err}");
    let err = TabularMdp::new("T", &p, &r, &[false], &[1.0, 0.0]).unwrap_err();
    assert!(err.to_string().contains("`terminal`"), "{err}");

    let mdp = TabularMdp::new("T", &p, &r, &[false, true], &[1.0, 0.0]).unwrap();
    let ok = vec![vec![1.0], vec![1.0]];
    for (pi, what) in [
        (vec![vec![1.0]], "rows"),
        (vec![vec![0.9], vec![1.0]], "sums to"),
        (vec![vec![1.0, 0.0], vec![1.0]], "entries"),
        (vec![vec![f64::NAN], vec![1.0]], "NaN"),
    ] {
        let err = mdp.policy_value(&pi, 0.9).unwrap_err();
        assert!(
            err.to_string().contains("`policy`") && err.to_string().contains(what),
            "{err}"
        );
        let err = mdp.kl_per_state(&ok, &pi).unwrap_err();
        assert!(err.to_string().contains("`pi2`"), "{err}");
    }
    for gamma in [-0.1, 1.5, f64::NAN] {
        let err = mdp.policy_value(&ok, gamma).unwrap_err();
        assert!(err.to_string().contains("`gamma`"), "{err}");
    }
    for w in [
        vec![1.0],
        vec![0.0, 0.0],
        vec![-1.0, 2.0],
        vec![f64::INFINITY, 0.0],
    ] {
        let err = mdp.mean_kl(&ok, &ok, &w).unwrap_err();
        assert!(err.to_string().contains("`weights`"), "{err}");
    }
    assert!(mdp.transition(2, 0, 0).is_none());
    assert!(mdp.expected_reward(0, 1).is_none());
}
