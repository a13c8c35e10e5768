//! Step-by-step parity of the classic-control ports with Gymnasium.
//!
//! `fixtures/classic_control.json` was written by
//! `fixtures/make_classic_control_fixture.py` with Gymnasium 1.x: for each case
//! it holds an environment, its constructor parameters, a starting state set
//! with `env.unwrapped.state = ...`, an action sequence, and after every step
//! the internal state, the observation, the reward and the terminated flag.
//! This test sets the same state in the Rust port with `set_state`, steps the
//! same actions and compares:
//!
//! - state: |rust − gym| ≤ 1e-9 · max(1, |gym|) at every step;
//! - observation: within one f32 rounding of Gymnasium's (relative 2⁻²³);
//! - reward: |rust − gym| ≤ 1e-12 · max(1, |gym|);
//! - terminated: exactly, and the port refuses to step past termination.
//!
//! Python is not needed to run it.

use klrl_envs::{
    parse_params, Acrobot, Action, CartPole, CartPoleParams, Env, EnvError, MountainCar,
    MountainCarContinuous, Pendulum,
};
use serde::Deserialize;

const FIXTURE: &str = include_str!("fixtures/classic_control.json");
const STATE_TOL: f64 = 1e-9;
/// One unit in the last place of an f32 near 1 (2⁻²³), relative.
const OBS_TOL: f64 = 1.2e-7;
const REWARD_TOL: f64 = 1e-12;

#[derive(Deserialize)]
struct Fixture {
    gymnasium_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    env: String,
    /// Constructor parameters; floats as repr strings, bools as bools.
    params: serde_json::Map<String, serde_json::Value>,
    label: String,
    #[serde(deserialize_with = "floats")]
    initial_state: Vec<f64>,
    /// Gymnasium held the initial state as float32 (MountainCarContinuous).
    #[serde(default)]
    initial_state_float32: bool,
    /// Integers (discrete) or repr strings (float32 torques and forces).
    actions: Vec<serde_json::Value>,
    #[serde(deserialize_with = "float_rows")]
    states: Vec<Vec<f64>>,
    #[serde(deserialize_with = "float_rows")]
    observations: Vec<Vec<f64>>,
    #[serde(deserialize_with = "floats")]
    rewards: Vec<f64>,
    terminated: Vec<bool>,
}

/// The fixture writes floats as strings of Python's `repr`, which
/// `str::parse` reads back exactly (serde_json's default number parser can be
/// one unit in the last place off, which would hide or fake a mismatch).
fn parse_float(s: &str) -> f64 {
    s.parse()
        .unwrap_or_else(|e| panic!("fixture float {s:?}: {e}"))
}

fn floats<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    Ok(v.iter().map(|s| parse_float(s)).collect())
}

fn float_rows<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
    let v: Vec<Vec<String>> = Vec::deserialize(d)?;
    Ok(v.iter()
        .map(|row| row.iter().map(|s| parse_float(s)).collect())
        .collect())
}

/// The fixture's parameters as the config table the registry would pass.
fn params_table(case: &Case) -> toml::Table {
    case.params
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
                serde_json::Value::String(s) => toml::Value::Float(parse_float(s)),
                other => panic!("{}: unexpected parameter {k} = {other}", case.label),
            };
            (k.clone(), v)
        })
        .collect()
}

/// A port with its state accessors (which the `Env` trait does not have).
enum Port {
    CartPole(CartPole),
    Acrobot(Acrobot),
    MountainCar(MountainCar),
    MountainCarContinuous(MountainCarContinuous),
    Pendulum(Pendulum),
}

impl Port {
    fn new(name: &str, params: &toml::Table) -> Result<Port, EnvError> {
        Ok(match name {
            CartPole::NAME => Port::CartPole(CartPole::new(parse_params(name, params)?)?),
            Acrobot::NAME => Port::Acrobot(Acrobot::new(parse_params(name, params)?)),
            MountainCar::NAME => Port::MountainCar(MountainCar::new(parse_params(name, params)?)?),
            MountainCarContinuous::NAME => Port::MountainCarContinuous(MountainCarContinuous::new(
                parse_params(name, params)?,
            )?),
            Pendulum::NAME => Port::Pendulum(Pendulum::new(parse_params(name, params)?)?),
            other => panic!("fixture names an unknown environment {other}"),
        })
    }

    fn env(&mut self) -> &mut dyn Env {
        match self {
            Port::CartPole(e) => e,
            Port::Acrobot(e) => e,
            Port::MountainCar(e) => e,
            Port::MountainCarContinuous(e) => e,
            Port::Pendulum(e) => e,
        }
    }

    fn set_state(&mut self, s: &[f64], float32: bool) {
        if let Port::MountainCarContinuous(e) = self {
            let s: [f64; 2] = s.try_into().expect("2 state values");
            if float32 {
                let s32 = s.map(|x| x as f32);
                assert_eq!(s32.map(f64::from), s, "initial state not float32");
                e.set_state_f32(s32);
            } else {
                e.set_state(s);
            }
            return;
        }
        assert!(
            !float32,
            "float32 initial states are for MountainCarContinuous"
        );
        match self {
            Port::CartPole(e) => e.set_state(s.try_into().expect("4 state values")),
            Port::Acrobot(e) => e.set_state(s.try_into().expect("4 state values")),
            Port::MountainCar(e) => e.set_state(s.try_into().expect("2 state values")),
            Port::Pendulum(e) => e.set_state(s.try_into().expect("2 state values")),
            Port::MountainCarContinuous(_) => unreachable!("handled above"),
        }
    }

    fn state(&self) -> Vec<f64> {
        match self {
            Port::CartPole(e) => e.state().to_vec(),
            Port::Acrobot(e) => e.state().to_vec(),
            Port::MountainCar(e) => e.state().to_vec(),
            Port::MountainCarContinuous(e) => e.state().to_vec(),
            Port::Pendulum(e) => e.state().to_vec(),
        }
    }
}

/// Largest deviations seen for one environment, for the summary.
#[derive(Default)]
struct Worst {
    steps: usize,
    state: f64,
    obs: f64,
    reward: f64,
    bitwise_state_steps: usize,
    /// Steps at which state, observation and reward were all bit-identical.
    bitwise_steps: usize,
}

fn scaled(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1.0)
}

fn replay(case: &Case, worst: &mut Worst) {
    let ctx = format!("{} [{}]", case.env, case.label);
    let mut port =
        Port::new(&case.env, &params_table(case)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    port.set_state(&case.initial_state, case.initial_state_float32);
    assert_eq!(port.state(), case.initial_state, "{ctx}: set_state");
    let mut obs = Vec::new();
    let n = case.states.len();
    assert!(n > 0 && case.actions.len() == n && case.rewards.len() == n);
    assert!(case.observations.len() == n && case.terminated.len() == n);
    for t in 0..n {
        let f32_action;
        let action = match &case.actions[t] {
            serde_json::Value::Number(x) if x.is_u64() => {
                Action::Discrete(x.as_u64().unwrap() as usize)
            }
            serde_json::Value::String(x) => {
                // A float32 torque or force, written as its exact float64 value.
                let x = parse_float(x);
                f32_action = [x as f32];
                assert_eq!(f32_action[0] as f64, x, "{ctx}: action not a float32");
                Action::Continuous(&f32_action)
            }
            other => panic!("{ctx}: bad action {other}"),
        };
        let step = port
            .env()
            .step(action, &mut obs)
            .unwrap_or_else(|e| panic!("{ctx} step {t}: {e}"));
        let state = port.state();
        let want = &case.states[t];
        assert_eq!(state.len(), want.len());
        let mut bitwise = true;
        for (i, (&g, &w)) in state.iter().zip(want).enumerate() {
            let d = scaled(g, w);
            assert!(
                d <= STATE_TOL,
                "{ctx} step {t}: state[{i}] = {g:e}, Gymnasium {w:e} (scaled diff {d:e})"
            );
            worst.state = worst.state.max(d);
            bitwise &= g == w;
        }
        worst.bitwise_state_steps += bitwise as usize;
        let want = &case.observations[t];
        bitwise &= obs.iter().zip(want).all(|(&g, &w)| g as f64 == w);
        bitwise &= step.reward == case.rewards[t];
        worst.bitwise_steps += bitwise as usize;
        assert_eq!(obs.len(), want.len(), "{ctx} step {t}: observation length");
        for (i, (&g, &w)) in obs.iter().zip(want).enumerate() {
            let d = scaled(g as f64, w);
            assert!(
                d <= OBS_TOL,
                "{ctx} step {t}: obs[{i}] = {g:e}, Gymnasium {w:e} (scaled diff {d:e})"
            );
            worst.obs = worst.obs.max(d);
        }
        let d = scaled(step.reward, case.rewards[t]);
        assert!(
            d <= REWARD_TOL,
            "{ctx} step {t}: reward {} vs Gymnasium {}",
            step.reward,
            case.rewards[t]
        );
        worst.reward = worst.reward.max(d);
        assert_eq!(
            step.terminated, case.terminated[t],
            "{ctx} step {t}: terminated"
        );
        assert!(
            !step.truncated,
            "{ctx} step {t}: the bare port never truncates"
        );
    }
    worst.steps += n;
    if case.terminated[n - 1] {
        let err = port
            .env()
            .step(case_action_again(case), &mut obs)
            .unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset { .. }), "{ctx}: {err:?}");
    }
}

/// A valid action for the case's environment (to step past termination).
fn case_action_again(case: &Case) -> Action<'static> {
    if case.env == Pendulum::NAME || case.env == MountainCarContinuous::NAME {
        Action::Continuous(&[0.0])
    } else {
        Action::Discrete(0)
    }
}

fn load() -> Fixture {
    let fixture: Fixture = serde_json::from_str(FIXTURE).expect("fixture parses");
    assert!(
        fixture.gymnasium_version.starts_with("1."),
        "fixture made with Gymnasium {}",
        fixture.gymnasium_version
    );
    fixture
}

/// Replay every case of `env`; there must be at least `min_cases`. Prints the
/// largest deviations (visible with `--nocapture`) and returns them.
fn check_env(env: &str, min_cases: usize) -> Worst {
    let fixture = load();
    let cases: Vec<&Case> = fixture.cases.iter().filter(|c| c.env == env).collect();
    assert!(
        cases.len() >= min_cases,
        "{env}: only {} cases in the fixture",
        cases.len()
    );
    let mut worst = Worst::default();
    for case in &cases {
        replay(case, &mut worst);
    }
    eprintln!(
        "{env:15} {} cases, {:5} steps: max scaled diff state {:.1e}, obs {:.1e}, \
         reward {:.1e}; state bit-identical at {} steps",
        cases.len(),
        worst.steps,
        worst.state,
        worst.obs,
        worst.reward,
        worst.bitwise_state_steps
    );
    worst
}

#[test]
fn acrobot_matches_gymnasium() {
    check_env(Acrobot::NAME, 5);
}

#[test]
fn mountain_car_matches_gymnasium() {
    check_env(MountainCar::NAME, 5);
}

#[test]
fn pendulum_matches_gymnasium() {
    check_env(Pendulum::NAME, 5);
}

/// All CartPole cases, including 450–500-step balancing runs, where the
/// unstable pole amplifies any last-bit difference (the port therefore keeps
/// Gymnasium's operation order: θ̇² and cos²θ are squared first), with default
/// and non-default physical constants: bit for bit at every step.
#[test]
fn cartpole_matches_gymnasium() {
    let worst = check_env(CartPole::NAME, 5);
    assert_eq!(worst.bitwise_steps, worst.steps, "not bit-identical");
}

/// The fixture sets every physical constant of CartPole to a non-default
/// value in some case that runs for hundreds of steps, so the parity test
/// checks that each one enters the dynamics where Gymnasium's does.
#[test]
fn cartpole_constants_are_in_the_fixture() {
    let fixture = load();
    let d = CartPoleParams::default();
    let defaults = [
        ("gravity", d.gravity),
        ("masscart", d.masscart),
        ("masspole", d.masspole),
        ("length", d.length),
        ("force_mag", d.force_mag),
        ("tau", d.tau),
    ];
    for (name, default) in defaults {
        let longest = fixture
            .cases
            .iter()
            .filter(|c| c.env == CartPole::NAME)
            .filter(|c| {
                let v = params_table(c).get(name).and_then(|v| v.as_float());
                v.is_some_and(|v| v != default)
            })
            .map(|c| c.states.len())
            .max();
        assert!(
            longest.is_some_and(|n| n >= 300),
            "{name}: longest non-default case {longest:?} steps"
        );
    }
}

/// MountainCarContinuous from float64 states (reset, set) and the float32
/// states a step leaves, random forces at and inside the bounds, the pumping
/// policy that reaches the goal (reward 100 − 0.1u²), and float32 states
/// crafted so that the goal comparisons only pass in float32, as numpy makes
/// them: bit for bit at every step.
#[test]
fn mountain_car_continuous_matches_gymnasium() {
    let worst = check_env(MountainCarContinuous::NAME, 8);
    assert_eq!(worst.bitwise_steps, worst.steps, "not bit-identical");
    let fixture = load();
    let cases: Vec<&Case> = fixture
        .cases
        .iter()
        .filter(|c| c.env == MountainCarContinuous::NAME)
        .collect();
    let reached = cases
        .iter()
        .filter(|c| c.terminated.contains(&true))
        .count();
    let float32 = cases.iter().filter(|c| c.initial_state_float32).count();
    let full = cases.iter().filter(|c| c.states.len() == 999).count();
    assert!(
        reached >= 4 && float32 >= 2 && full >= 3,
        "{reached} {float32} {full}"
    );
}

#[test]
fn long_acrobot_trajectories_are_in_the_fixture() {
    // The chaotic Acrobot amplifies any rounding difference; the fixture must
    // hold full-length episodes for the parity test to mean something.
    let fixture = load();
    let longest = fixture
        .cases
        .iter()
        .filter(|c| c.env == Acrobot::NAME)
        .map(|c| c.states.len())
        .max();
    assert_eq!(longest, Some(500));
    let pendulum_bounds = fixture
        .cases
        .iter()
        .filter(|c| c.env == Pendulum::NAME)
        .flat_map(|c| c.actions.iter().filter_map(|a| a.as_str().map(parse_float)))
        .filter(|a| a.abs() == 2.0)
        .count();
    assert!(
        pendulum_bounds > 10,
        "Pendulum actions at ±2: {pendulum_bounds}"
    );
}
