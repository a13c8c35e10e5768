//! The environment checker: every built-in environment passes; deliberately
//! broken environments are each caught by the right check, with a message
//! that says what is wrong, and a panicking environment does not bring the
//! checker down.

use klrl_envs::{
    check_env, Action, CheckOptions, CheckReport, Env, EnvError, EnvRng, EnvSnapshot, Registry,
    RngState, Space, Step, Verdict,
};
use rand::{Rng, SeedableRng};

fn check_builtin(name: &str) -> CheckReport {
    let registry = Registry::builtin();
    let mut env = registry.make(name, &toml::Table::new()).unwrap();
    let options = CheckOptions {
        seed: 3,
        steps: 2000,
        max_episode_steps: registry.get(name).unwrap().max_episode_steps,
    };
    check_env(env.as_mut(), &options)
}

#[test]
fn every_builtin_environment_passes_every_check() {
    let registry = Registry::builtin();
    for spec in registry.specs() {
        let report = check_builtin(&spec.name);
        eprintln!("{report}");
        assert!(report.passed(), "{report}");
        assert_eq!(report.outcomes.len(), 9, "{report}");
        for o in &report.outcomes {
            assert_eq!(o.verdict, Verdict::Pass, "{}: {report}", o.check);
        }
    }
}

/// What is wrong with a [`Walk`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// The start state depends on how often reset was called, not only on the seed.
    NondeterministicReset,
    /// Step 3 of an episode writes a NaN.
    NanObservation,
    /// Step 5 of an episode writes 2 into a [-1, 1] observation element.
    OutsideSpace,
    /// Step 4 of an episode panics.
    PanickingStep,
    /// The snapshot leaves out the random number generator.
    SnapshotWithoutRng,
    /// Any action index is accepted (an index ≥ 3 counts as 2).
    AcceptsAnyIndex,
    /// An out-of-range index panics (a table lookup).
    PanicsOnBadIndex,
    /// Episodes are "truncated" when the walker falls off (a terminal state).
    TruncatesAtTheEdge,
    /// The reward of step 2 is infinite.
    InfiniteReward,
    /// A step after the end of an episode is accepted.
    StepsAfterTheEnd,
}

/// A random walk on −5..=5 with noise: action 0 left, 1 stay, 2 right; the
/// observation is [position / 5, noise ∈ [−1, 1)]; falling off either end
/// terminates (reward −1), each other step rewards 0.1.
struct Walk {
    fault: Fault,
    pos: i64,
    t: u64,
    resets: u64,
    needs_reset: bool,
    rng: EnvRng,
    obs_space: Space,
    act_space: Space,
}

impl Walk {
    fn new(fault: Fault) -> Self {
        Walk {
            fault,
            pos: 0,
            t: 0,
            resets: 0,
            needs_reset: true,
            rng: EnvRng::seed_from_u64(0),
            obs_space: Space::uniform_box(2, -1.0, 1.0),
            act_space: Space::discrete(3),
        }
    }

    fn write(&mut self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.push(self.pos as f32 / 5.0);
        obs.push(self.rng.random_range(-1.0..1.0));
    }
}

impl Env for Walk {
    fn name(&self) -> &str {
        "Walk"
    }
    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        if let Some(s) = seed {
            self.rng = EnvRng::seed_from_u64(s);
        }
        self.resets += 1;
        self.pos = self.rng.random_range(-2..=2);
        if self.fault == Fault::NondeterministicReset {
            self.pos = (self.resets % 3) as i64 - 1;
        }
        self.t = 0;
        self.needs_reset = false;
        self.write(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        let a = match (action, self.fault) {
            (Action::Discrete(a), Fault::AcceptsAnyIndex) => a.min(2),
            (Action::Discrete(a), Fault::PanicsOnBadIndex) => [0, 1, 2][a],
            _ => {
                self.act_space.check_action("Walk", action)?;
                let Action::Discrete(a) = action else {
                    unreachable!()
                };
                a
            }
        };
        if self.needs_reset && self.fault != Fault::StepsAfterTheEnd {
            return Err(EnvError::NeedsReset {
                env: "Walk".into(),
                when: "after the episode ended",
            });
        }
        self.t += 1;
        if self.fault == Fault::PanickingStep && self.t == 4 {
            panic!("Walk: index out of bounds at step 4");
        }
        self.pos += a as i64 - 1;
        let fell = self.pos.abs() > 5;
        self.pos = self.pos.clamp(-5, 5);
        self.write(obs);
        match (self.fault, self.t) {
            (Fault::NanObservation, 3) => obs[1] = f32::NAN,
            (Fault::OutsideSpace, 5) => obs[1] = 2.0,
            _ => {}
        }
        let reward = match (self.fault, self.t, fell) {
            (Fault::InfiniteReward, 2, _) => f64::INFINITY,
            (_, _, true) => -1.0,
            _ => 0.1,
        };
        let (terminated, truncated) = match self.fault {
            Fault::TruncatesAtTheEdge => (false, fell),
            _ => (fell, false),
        };
        self.needs_reset = fell;
        Ok(Step {
            reward,
            terminated,
            truncated,
            info: Default::default(),
        })
    }

    /// floats = [], ints = [pos (two's complement), t], flags = [needs_reset], the RNG.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new("Walk");
        s.ints = vec![self.pos as u64, self.t];
        s.flags = vec![self.needs_reset];
        if self.fault != Fault::SnapshotWithoutRng {
            s.rngs = vec![RngState::of(&self.rng)];
        }
        Some(s)
    }

    fn restore(&mut self, s: &EnvSnapshot) -> Result<(), EnvError> {
        let rngs = if self.fault == Fault::SnapshotWithoutRng {
            0
        } else {
            1
        };
        s.expect("Walk", "Walk", [0, 2, 1, rngs, 0])?;
        self.pos = s.ints[0] as i64;
        self.t = s.ints[1];
        self.needs_reset = s.flags[0];
        if let Some(r) = s.rngs.first() {
            self.rng = r.to_rng();
        }
        Ok(())
    }
}

fn check(fault: Fault) -> CheckReport {
    let report = check_env(&mut Walk::new(fault), &CheckOptions::default());
    eprintln!("{fault:?}:\n{report}");
    report
}

/// The report fails exactly the check `name`, and its detail contains every
/// one of `words`.
fn fails_with(report: &CheckReport, name: &str, words: &[&str]) {
    assert!(!report.passed(), "{report}");
    let failed: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Fail)
        .map(|o| o.check)
        .collect();
    assert_eq!(failed.first(), Some(&name), "{report}");
    let detail = &report.outcome(name).unwrap().detail;
    for w in words {
        assert!(detail.contains(w), "`{w}` not in `{detail}`");
    }
}

#[test]
fn a_correct_environment_passes() {
    let report = check(Fault::None);
    assert!(report.passed(), "{report}");
    assert_eq!(report.count(Verdict::Pass), 9, "{report}");
    assert!(report
        .to_string()
        .contains("9 passed, 0 warnings, 0 failed"));
}

#[test]
fn a_reset_that_ignores_the_seed_is_caught() {
    let report = check(Fault::NondeterministicReset);
    fails_with(
        &report,
        "determinism",
        &[
            "reset(Some(0)) twice gave different first observations",
            "element 0",
        ],
    );
}

#[test]
fn a_nan_observation_is_caught() {
    let report = check(Fault::NanObservation);
    fails_with(&report, "step", &["after step 2", "element 1 is NaN"]);
}

#[test]
fn an_observation_outside_the_space_is_caught() {
    let report = check(Fault::OutsideSpace);
    fails_with(
        &report,
        "step",
        &[
            "outside the observation space",
            "element 1 = 2 is outside [-1, 1]",
        ],
    );
}

#[test]
fn a_panicking_step_is_caught_not_propagated() {
    let report = check(Fault::PanickingStep);
    fails_with(
        &report,
        "step",
        &["step 3", "panicked: Walk: index out of bounds at step 4"],
    );
    // The checks that need stepping report it too, or are skipped; the
    // checker itself finished.
    assert_eq!(report.outcomes.len(), 9);
}

#[test]
fn a_snapshot_that_misses_the_rng_is_caught() {
    let report = check(Fault::SnapshotWithoutRng);
    fails_with(
        &report,
        "snapshot",
        &[
            "after restore(), the same actions gave a different trajectory",
            "random number generator",
        ],
    );
    // Everything else holds.
    assert_eq!(report.count(Verdict::Fail), 1, "{report}");
}

#[test]
fn an_accepted_out_of_range_index_is_caught() {
    let report = check(Fault::AcceptsAnyIndex);
    fails_with(
        &report,
        "invalid_actions",
        &[
            "the invalid action Discrete(3) was accepted",
            "InvalidAction",
        ],
    );
}

#[test]
fn a_panic_on_an_invalid_action_is_caught() {
    let report = check(Fault::PanicsOnBadIndex);
    fails_with(
        &report,
        "invalid_actions",
        &[
            "Discrete(3) made step() panic instead of returning an error",
            "index out of bounds",
        ],
    );
}

#[test]
fn an_infinite_reward_is_caught() {
    let report = check(Fault::InfiniteReward);
    fails_with(
        &report,
        "step",
        &["step 1 returned the reward inf (not finite)"],
    );
}

#[test]
fn terminal_states_reported_as_truncations_are_flagged() {
    // Without a declared limit: truncations at many different lengths.
    let report = check(Fault::TruncatesAtTheEdge);
    assert!(report.passed(), "{report}");
    let o = report.outcome("truncation").unwrap();
    assert_eq!(o.verdict, Verdict::Warn, "{report}");
    assert!(o.detail.contains("report `terminated`"), "{}", o.detail);
    // With a declared limit of 1000 steps: truncations before it.
    let options = CheckOptions {
        max_episode_steps: Some(1000),
        ..Default::default()
    };
    let report = check_env(&mut Walk::new(Fault::TruncatesAtTheEdge), &options);
    let o = report.outcome("truncation").unwrap();
    assert_eq!(o.verdict, Verdict::Warn, "{report}");
    assert!(
        o.detail.contains("before the time limit of 1000"),
        "{}",
        o.detail
    );
    // A declared limit the environment does not apply is a failure.
    let options = CheckOptions {
        max_episode_steps: Some(2),
        ..Default::default()
    };
    let report = check_env(&mut Walk::new(Fault::None), &options);
    fails_with(
        &report,
        "truncation",
        &["past the declared time limit of 2"],
    );
}

#[test]
fn stepping_after_the_end_is_a_warning() {
    let report = check(Fault::StepsAfterTheEnd);
    assert!(report.passed(), "{report}");
    let o = report.outcome("episode_end").unwrap();
    assert_eq!(o.verdict, Verdict::Warn, "{report}");
    assert!(o.detail.contains("was accepted"), "{}", o.detail);
    assert!(o.detail.contains("NeedsReset"), "{}", o.detail);
}

/// Spaces that are not well formed stop the checks that need them.
struct BadSpaces(Space, Space);

impl Env for BadSpaces {
    fn name(&self) -> &str {
        "BadSpaces"
    }
    fn observation_space(&self) -> &Space {
        &self.0
    }
    fn action_space(&self) -> &Space {
        &self.1
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        obs.clear();
        obs.push(0.0);
        Ok(())
    }
    fn step(&mut self, _a: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        obs.clear();
        obs.push(0.0);
        Ok(Step::default())
    }
}

#[test]
fn malformed_spaces_are_caught_and_the_rest_skipped() {
    let inverted = Space::Box {
        low: vec![1.0],
        high: vec![-1.0],
        shape: vec![1],
    };
    let cases = [
        (
            BadSpaces(inverted, Space::discrete(2)),
            "the observation space is malformed: element 0 has low 1 > high -1",
        ),
        (
            BadSpaces(Space::discrete(4), Space::discrete(2)),
            "the observation space is Discrete; it must be a Box",
        ),
        (
            BadSpaces(Space::uniform_box(1, -1.0, 1.0), Space::discrete(0)),
            "the action space is Discrete(0)",
        ),
        (
            BadSpaces(
                Space::uniform_box(1, -1.0, 1.0),
                Space::Box {
                    low: vec![0.0, 0.0],
                    high: vec![1.0, 1.0],
                    shape: vec![3],
                },
            ),
            "the action space is malformed: the shape [3] holds 3 elements, the bounds 2",
        ),
    ];
    for (mut env, expected) in cases {
        let report = check_env(&mut env, &CheckOptions::default());
        fails_with(&report, "spaces", &[expected]);
        assert_eq!(report.count(Verdict::Skip), 8, "{report}");
    }
}

#[test]
fn a_drifting_world_is_reported_as_non_deterministic() {
    // MovieRec with drift: the world moves between two runs with one seed,
    // as its docs say; the checker must notice.
    let table: toml::Table = toml::from_str("drift = 0.2").unwrap();
    let mut env = Registry::builtin().make("MovieRec-v0", &table).unwrap();
    let report = check_env(env.as_mut(), &CheckOptions::default());
    fails_with(
        &report,
        "determinism",
        &["gave different first observations in two runs"],
    );
}
