//! [`check_env`]: an environment checker, like Gymnasium's `check_env` and
//! Stable-Baselines3's `env_checker`, for any [`Env`].
//!
//! It drives the environment through its whole contract and reports, check by
//! check, what holds and, in plain words, what does not:
//!
//! | check | what it asks |
//! |---|---|
//! | `spaces` | the observation space is a well-formed box; the action space a well-formed box or a non-empty `Discrete` |
//! | `reset` | `reset(Some(seed))` and `reset(None)` succeed with a finite observation of the right length in the observation space (and a usable action mask) |
//! | `step` | random valid actions for `steps` steps (resetting after each episode) succeed, with finite observations in the space and finite rewards |
//! | `determinism` | `reset(Some(seed))` twice gives identical first observations, and identical actions then give bit-identical trajectories |
//! | `episode_end` | a `step` after an episode ended is refused with [`EnvError::NeedsReset`] (a warning if it is accepted), and `reset` starts a new one |
//! | `truncation` | `truncated` comes from a time limit: with a declared limit, no episode runs past it and truncations happen at it; without one, truncations happen at a single length |
//! | `valid_actions` | every discrete action (or a box action's corners and centre) is accepted from the start state |
//! | `invalid_actions` | an out-of-range index, an action of the wrong kind or length, a NaN (and an infinite) element are refused with an error, leave the state unchanged, and an action outside the box's bounds is refused (a warning if it is accepted) |
//! | `snapshot` | when [`Env::snapshot`] is offered: restore then the same actions give a bit-identical trajectory, and snapshot → restore → snapshot round-trips |
//!
//! Every call into the environment runs under [`std::panic::catch_unwind`]:
//! a panic is reported as a failure of the check that made the call (the
//! panic message is also printed by the panic hook, as usual), never
//! propagated. Each check starts from `reset(Some(seed))`, so a failure does
//! not cascade into the next check; when the spaces are malformed or `reset`
//! fails, the checks that need them are skipped. An environment that is
//! non-deterministic by design (MovieRec with `drift > 0`) fails
//! `determinism`, as it should be told.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};

use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, OwnedAction, Space, Step};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The property holds.
    Pass,
    /// Allowed but unusual, and worth a look (e.g. a `step` after the end of an
    /// episode is accepted; klrl's [`Checked`](crate::Checked) wrapper refuses
    /// it anyway). Does not make the report fail.
    Warn,
    /// The property does not hold: training on the environment may be wrong.
    Fail,
    /// Not checked: the environment does not offer the feature, or an earlier
    /// check that this one needs failed.
    Skip,
}

impl Verdict {
    /// `PASS`, `WARN`, `FAIL` or `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// The check's name (see the module docs): `spaces`, `reset`, `step`, ….
    pub check: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was checked and found, in plain words; for a failure, what is
    /// wrong and where.
    pub detail: String,
}

/// What [`check_env`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// The environment's name.
    pub env: String,
    /// The options the checks ran with.
    pub options: CheckOptions,
    /// One outcome per check, in the order of the module docs.
    pub outcomes: Vec<CheckOutcome>,
}

impl CheckReport {
    /// No check failed (warnings and skips allowed).
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.verdict != Verdict::Fail)
    }

    /// The outcome of the check called `name`.
    pub fn outcome(&self, name: &str) -> Option<&CheckOutcome> {
        self.outcomes.iter().find(|o| o.check == name)
    }

    /// How many outcomes have `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.verdict == verdict)
            .count()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "check of {} (seed {}, {} steps): {} passed, {} warnings, {} failed, {} skipped",
            self.env,
            self.options.seed,
            self.options.steps,
            self.count(Verdict::Pass),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip),
        )?;
        for o in &self.outcomes {
            writeln!(f, "  {}  {:<16} {}", o.verdict.label(), o.check, o.detail)?;
        }
        Ok(())
    }
}

/// Settings of [`check_env`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Seed of the resets and of the random actions. Default 0.
    pub seed: u64,
    /// Steps of random valid actions in the `step` and `determinism` checks
    /// (episodes are reset as they end). Default 1000.
    pub steps: usize,
    /// The time limit the environment is declared to have (a registry's
    /// `max_episode_steps`), if known; the `truncation` check compares the
    /// truncations with it. Default `None`.
    pub max_episode_steps: Option<u64>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            seed: 0,
            steps: 1000,
            max_episode_steps: None,
        }
    }
}

/// Check `env` against the [`Env`] contract (see the module docs for the
/// checks). Never panics because the environment does; the environment is
/// left in an unspecified state (reset it before further use).
pub fn check_env(env: &mut dyn Env, options: &CheckOptions) -> CheckReport {
    let name = guard(|| env.name().to_string()).unwrap_or_else(|p| format!("<name() {p}>"));
    let mut outcomes = Vec::new();
    let mut add = |check: &'static str, (verdict, detail): Outcome| {
        outcomes.push(CheckOutcome {
            check,
            verdict,
            detail,
        })
    };
    let spaces = check_spaces(env);
    let spaces_ok = spaces.0 != Verdict::Fail;
    add("spaces", spaces);
    let reset = if spaces_ok {
        check_reset(env, options)
    } else {
        skip("the spaces are malformed")
    };
    let reset_ok = reset.0 == Verdict::Pass;
    add("reset", reset);
    if reset_ok {
        let first = rollout(env, Some(options.seed), options.seed, options.steps);
        add("step", check_step(&first, options));
        add("determinism", check_determinism(env, &first, options));
        add("episode_end", check_episode_end(env, options));
        add("truncation", check_truncation(&first, options));
        add("valid_actions", check_valid_actions(env, options));
        add("invalid_actions", check_invalid_actions(env, options));
        add(
            "snapshot",
            if first.is_ok() {
                check_snapshot(env, options)
            } else {
                skip("stepping fails (see `step`)")
            },
        );
    } else {
        let why = if spaces_ok {
            "reset() fails (see `reset`)"
        } else {
            "the spaces are malformed (see `spaces`)"
        };
        for check in [
            "step",
            "determinism",
            "episode_end",
            "truncation",
            "valid_actions",
            "invalid_actions",
            "snapshot",
        ] {
            add(check, skip(why));
        }
    }
    CheckReport {
        env: name,
        options: *options,
        outcomes,
    }
}

type Outcome = (Verdict, String);

fn pass(detail: impl Into<String>) -> Outcome {
    (Verdict::Pass, detail.into())
}
fn warn(detail: impl Into<String>) -> Outcome {
    (Verdict::Warn, detail.into())
}
fn fail(detail: impl Into<String>) -> Outcome {
    (Verdict::Fail, detail.into())
}
fn skip(detail: impl Into<String>) -> Outcome {
    (Verdict::Skip, detail.into())
}

/// Run `f`, turning a panic into `Err("panicked: <message>")`.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| format!("panicked: {}", message(&*payload)))
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

/// `reset(seed)` under a guard; the problem in words.
fn do_reset(env: &mut dyn Env, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), String> {
    match guard(|| env.reset(seed, obs)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("reset({seed:?}) returned an error: {e}")),
        Err(p) => Err(format!("reset({seed:?}) {p}")),
    }
}

/// `step(action)` under a guard: the environment's own result, or the panic.
fn do_step(
    env: &mut dyn Env,
    action: Action<'_>,
    obs: &mut Vec<f32>,
) -> Result<Result<Step, EnvError>, String> {
    guard(|| env.step(action, obs))
}

/// Why a box is malformed, if it is.
fn box_problem(low: &[f32], high: &[f32], shape: &[usize]) -> Option<String> {
    if low.len() != high.len() {
        return Some(format!("low has {} bounds, high {}", low.len(), high.len()));
    }
    let product: usize = shape.iter().product();
    if product != low.len() {
        return Some(format!(
            "the shape {shape:?} holds {product} elements, the bounds {}",
            low.len()
        ));
    }
    if low.is_empty() {
        return Some("it has no elements".into());
    }
    for (i, (&l, &h)) in low.iter().zip(high).enumerate() {
        if l.is_nan() || h.is_nan() {
            return Some(format!("element {i} has a NaN bound [{l}, {h}]"));
        }
        if l > h {
            return Some(format!("element {i} has low {l} > high {h}"));
        }
    }
    None
}

fn describe(space: &Space) -> String {
    match space {
        Space::Discrete { n } => format!("Discrete({n})"),
        Space::Box { shape, .. } => format!("Box{shape:?}"),
    }
}

fn check_spaces(env: &mut dyn Env) -> Outcome {
    let spaces = guard(|| (env.observation_space().clone(), env.action_space().clone()));
    let (obs, act) = match spaces {
        Ok(s) => s,
        Err(p) => return fail(format!("reading the spaces {p}")),
    };
    match &obs {
        Space::Discrete { .. } => {
            return fail(
                "the observation space is Discrete; it must be a Box (observations are \
                 flat f32 vectors: one-hot encode a discrete observation)",
            )
        }
        Space::Box { low, high, shape } => {
            if let Some(why) = box_problem(low, high, shape) {
                return fail(format!("the observation space is malformed: {why}"));
            }
        }
    }
    match &act {
        Space::Discrete { n: 0 } => {
            return fail("the action space is Discrete(0): there is no action to take")
        }
        Space::Discrete { .. } => {}
        Space::Box { low, high, shape } => {
            if let Some(why) = box_problem(low, high, shape) {
                return fail(format!("the action space is malformed: {why}"));
            }
        }
    }
    pass(format!(
        "observation space {}, action space {}",
        describe(&obs),
        describe(&act)
    ))
}

/// What is wrong with an observation written by `call`, if anything.
fn obs_problem(space: &Space, obs: &[f32]) -> Option<String> {
    let dim = space.flat_dim();
    if obs.len() != dim {
        return Some(format!(
            "the observation has {} elements, the observation space {dim}",
            obs.len()
        ));
    }
    if let Some((i, v)) = obs.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Some(format!("observation element {i} is {v} (not finite)"));
    }
    space
        .why_not_contained(Action::Continuous(obs))
        .map(|why| format!("the observation is outside the observation space: {why}"))
}

/// What is wrong with the current action mask, if anything.
fn mask_problem(env: &dyn Env) -> Option<String> {
    let (Some(mask), Some(n)) = (env.action_mask(), env.action_space().n()) else {
        return None;
    };
    if mask.len() != n {
        return Some(format!(
            "the action mask has {} entries, the action space {n} actions",
            mask.len()
        ));
    }
    if !mask.iter().any(|&m| m) {
        return Some("the action mask allows no action".into());
    }
    None
}

/// The state of an environment right after a call, checked: observation and
/// mask. Guarded (an environment may panic in `action_mask`).
fn state_problem(env: &dyn Env, obs: &[f32]) -> Option<String> {
    match guard(|| obs_problem(env.observation_space(), obs).or_else(|| mask_problem(env))) {
        Ok(p) => p,
        Err(p) => Some(format!("reading the spaces or the action mask {p}")),
    }
}

fn check_reset(env: &mut dyn Env, options: &CheckOptions) -> Outcome {
    let mut obs = Vec::new();
    for seed in [Some(options.seed), None] {
        if let Err(e) = do_reset(env, seed, &mut obs) {
            return fail(e);
        }
        if let Some(p) = state_problem(env, &obs) {
            return fail(format!("after reset({seed:?}): {p}"));
        }
    }
    pass("reset(Some(seed)) and reset(None) give finite observations in the observation space")
}

/// A random legal action: uniform over the actions the mask allows, or a
/// sample of the box.
fn legal_action(env: &dyn Env, rng: &mut EnvRng) -> Result<OwnedAction, String> {
    guard(|| match (env.action_space(), env.action_mask()) {
        (Space::Discrete { n }, Some(mask)) => {
            let legal: Vec<usize> = (0..*n).filter(|&a| mask.get(a) == Some(&true)).collect();
            if legal.is_empty() {
                return Err("the action mask allows no action".to_string());
            }
            Ok(OwnedAction::Discrete(
                legal[rng.random_range(0..legal.len())],
            ))
        }
        (space, _) => Ok(space.sample(rng)),
    })
    .and_then(|r| r)
}

/// One observable event of a rollout, compared bit for bit.
#[derive(Debug, Clone)]
struct Event {
    /// `reset` or `step`.
    call: &'static str,
    /// Index of the step in the rollout (the number of steps before it).
    t: usize,
    obs: Vec<f32>,
    reward: f64,
    terminated: bool,
    truncated: bool,
}

impl Event {
    fn same(&self, other: &Event) -> bool {
        self.call == other.call
            && self.obs.len() == other.obs.len()
            && self
                .obs
                .iter()
                .zip(&other.obs)
                .all(|(a, b)| a.to_bits() == b.to_bits())
            && self.reward.to_bits() == other.reward.to_bits()
            && self.terminated == other.terminated
            && self.truncated == other.truncated
    }

    /// How `other` differs from this one, in words.
    fn difference(&self, other: &Event) -> String {
        if self.call != other.call {
            return format!("one run called {}, the other {}", self.call, other.call);
        }
        if let Some(i) = (0..self.obs.len().min(other.obs.len()))
            .find(|&i| self.obs[i].to_bits() != other.obs[i].to_bits())
        {
            return format!(
                "observation element {i} is {} in one run and {} in the other",
                self.obs[i], other.obs[i]
            );
        }
        if self.obs.len() != other.obs.len() {
            return format!(
                "the observations have {} and {} elements",
                self.obs.len(),
                other.obs.len()
            );
        }
        if self.reward.to_bits() != other.reward.to_bits() {
            return format!(
                "the reward is {} in one run and {} in the other",
                self.reward, other.reward
            );
        }
        format!(
            "(terminated, truncated) is ({}, {}) in one run and ({}, {}) in the other",
            self.terminated, self.truncated, other.terminated, other.truncated
        )
    }
}

/// A rollout of random legal actions.
#[derive(Debug, Clone, Default)]
struct Rollout {
    events: Vec<Event>,
    /// Episodes that ended: (length, terminated, truncated).
    ended: Vec<(u64, bool, bool)>,
    /// The longest episode seen (ended or not), in steps.
    longest: u64,
}

/// `steps` random legal actions (from a generator seeded `action_seed`),
/// starting with `reset(reset_seed)` when given, else from the current state;
/// `reset(None)` after every episode. Every observation, mask and reward is
/// validated; the first problem ends the rollout as `Err`.
fn rollout(
    env: &mut dyn Env,
    reset_seed: Option<u64>,
    action_seed: u64,
    steps: usize,
) -> Result<Rollout, String> {
    let mut rng = EnvRng::seed_from_u64(action_seed);
    let mut obs = Vec::new();
    let mut out = Rollout::default();
    let mut episode_len = 0u64;
    if let Some(seed) = reset_seed {
        record_reset(env, Some(seed), 0, &mut out, &mut obs)?;
    }
    for t in 0..steps {
        let action = legal_action(env, &mut rng).map_err(|e| format!("at step {t}: {e}"))?;
        let step = match do_step(env, action.as_action(), &mut obs) {
            Ok(Ok(step)) => step,
            Ok(Err(e)) => {
                return Err(format!(
                    "step {t} with the valid action {action:?} returned an error: {e}"
                ))
            }
            Err(p) => return Err(format!("step {t} with the action {action:?} {p}")),
        };
        episode_len += 1;
        out.longest = out.longest.max(episode_len);
        if !step.reward.is_finite() {
            return Err(format!(
                "step {t} returned the reward {} (not finite)",
                step.reward
            ));
        }
        if let Some(p) = state_problem(env, &obs) {
            return Err(format!("after step {t}: {p}"));
        }
        out.events.push(Event {
            call: "step",
            t,
            obs: obs.clone(),
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
        });
        if step.done() {
            out.ended
                .push((episode_len, step.terminated, step.truncated));
            episode_len = 0;
            record_reset(env, None, t + 1, &mut out, &mut obs)?;
        }
    }
    Ok(out)
}

/// `reset(seed)` at rollout step `t`, validated and recorded.
fn record_reset(
    env: &mut dyn Env,
    seed: Option<u64>,
    t: usize,
    out: &mut Rollout,
    obs: &mut Vec<f32>,
) -> Result<(), String> {
    do_reset(env, seed, obs)?;
    if let Some(p) = state_problem(env, obs) {
        return Err(format!("after reset({seed:?}) at step {t}: {p}"));
    }
    out.events.push(Event {
        call: "reset",
        t,
        obs: obs.clone(),
        reward: 0.0,
        terminated: false,
        truncated: false,
    });
    Ok(())
}

fn check_step(first: &Result<Rollout, String>, options: &CheckOptions) -> Outcome {
    match first {
        Err(e) => fail(e.clone()),
        Ok(r) => {
            let terminated = r.ended.iter().filter(|e| e.1).count();
            let truncated = r.ended.iter().filter(|e| e.2 && !e.1).count();
            pass(format!(
                "{} random valid steps, {} ended ({terminated} terminated, {truncated} \
                 truncated): every observation finite and in the space, every reward finite",
                options.steps,
                match r.ended.len() {
                    1 => "1 episode".to_string(),
                    n => format!("{n} episodes"),
                }
            ))
        }
    }
}

fn check_determinism(
    env: &mut dyn Env,
    first: &Result<Rollout, String>,
    options: &CheckOptions,
) -> Outcome {
    // Two resets in a row with the same seed.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for obs in [&mut a, &mut b] {
        if let Err(e) = do_reset(env, Some(options.seed), obs) {
            return fail(e);
        }
    }
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        return fail(format!(
            "reset(Some({})) twice gave different first observations (element {i}: {} then \
             {}); the start state must come only from the generator the seed re-seeds",
            options.seed, a[i], b[i]
        ));
    }
    let Ok(first) = first else {
        return skip("stepping fails (see `step`)");
    };
    let second = match rollout(env, Some(options.seed), options.seed, options.steps) {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "a second run with the same seed and actions failed where the first did not: {e}"
            ))
        }
    };
    for (a, b) in first.events.iter().zip(&second.events) {
        if !a.same(b) {
            let what = a.difference(b);
            return fail(if a.t == 0 && a.call == "reset" {
                format!(
                    "reset(Some({})) gave different first observations in two runs: {what}; \
                     the start state must come only from the generator the seed re-seeds",
                    options.seed
                )
            } else {
                format!(
                    "the same seed and the same actions gave different trajectories at {} {}: \
                     {what}; everything random must come from the seeded generator",
                    a.call, a.t
                )
            });
        }
    }
    if first.events.len() != second.events.len() {
        return fail("the same seed and actions gave runs of different lengths");
    }
    pass(format!(
        "two runs with reset(Some({})) and the same {} actions are bit-identical",
        options.seed, options.steps
    ))
}

/// "1 step", "2 steps".
fn steps(n: usize) -> String {
    if n == 1 {
        "1 step".into()
    } else {
        format!("{n} steps")
    }
}

fn check_episode_end(env: &mut dyn Env, options: &CheckOptions) -> Outcome {
    let mut rng = EnvRng::seed_from_u64(options.seed);
    let mut obs = Vec::new();
    if let Err(e) = do_reset(env, Some(options.seed), &mut obs) {
        return fail(e);
    }
    // Long enough to reach a declared time limit.
    let budget = options
        .max_episode_steps
        .map_or(options.steps, |l| options.steps.max(l as usize));
    let mut ended = None;
    for t in 0..budget {
        let Ok(action) = legal_action(env, &mut rng) else {
            return skip("no legal action to take (see `step`)");
        };
        match do_step(env, action.as_action(), &mut obs) {
            Ok(Ok(step)) if step.done() => {
                ended = Some((steps(t + 1), step));
                break;
            }
            Ok(Ok(_)) => {}
            _ => return skip("stepping fails (see `step`)"),
        }
    }
    let Some((len, last)) = ended else {
        return skip(format!(
            "no episode ended within {budget} steps (no termination and no time limit?)"
        ));
    };
    let how = if last.terminated {
        "terminated"
    } else {
        "truncated"
    };
    let action = guard(|| env.action_space().sample(&mut rng));
    let Ok(action) = action else {
        return skip("cannot sample an action");
    };
    let after = do_step(env, action.as_action(), &mut obs);
    let verdict = match after {
        Err(p) => {
            return fail(format!(
                "step() after the episode {how} (after {len}) {p}; it must return \
                 EnvError::NeedsReset"
            ))
        }
        Ok(Err(EnvError::NeedsReset { .. })) => pass(format!(
            "step() after the episode {how} (after {len}) is refused with NeedsReset"
        )),
        Ok(Err(e)) => warn(format!(
            "step() after the episode {how} (after {len}) returned `{e}`, not \
             EnvError::NeedsReset"
        )),
        Ok(Ok(_)) => warn(format!(
            "step() after the episode {how} (after {len}) was accepted; the Env trait \
             asks for EnvError::NeedsReset (VecEnv's Checked wrapper refuses such calls \
             anyway)"
        )),
    };
    if let Err(e) = do_reset(env, None, &mut obs) {
        return fail(format!("after the episode ended: {e}"));
    }
    if let Some(p) = state_problem(env, &obs) {
        return fail(format!("after the episode ended, reset(None): {p}"));
    }
    verdict
}

fn check_truncation(first: &Result<Rollout, String>, options: &CheckOptions) -> Outcome {
    let Ok(r) = first else {
        return skip("stepping fails (see `step`)");
    };
    let mut lengths: Vec<u64> = r
        .ended
        .iter()
        .filter(|e| e.2 && !e.1)
        .map(|e| e.0)
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    match options.max_episode_steps {
        Some(limit) => {
            if r.longest > limit {
                return fail(format!(
                    "an episode ran {} steps, past the declared time limit of {limit}: the \
                     limit is not applied",
                    r.longest
                ));
            }
            if let Some(&early) = lengths.iter().find(|&&l| l != limit) {
                return warn(format!(
                    "an episode was truncated after {early} steps, before the time limit of \
                     {limit}: `truncated` means cut short from outside in a non-terminal \
                     state; if the state is terminal, report `terminated`"
                ));
            }
            pass(format!(
                "no episode ran past the time limit of {limit} steps; truncations only at it"
            ))
        }
        None => match lengths.as_slice() {
            [] => pass(format!("no truncation in {} steps", options.steps)),
            [l] => pass(format!("truncations only after {l} steps (a time limit)")),
            [a, b, ..] => warn(format!(
                "episodes were truncated after {a} and after {b} steps: a time limit truncates \
                 at one length; if these are terminal states, report `terminated`"
            )),
        },
    }
}

/// Box actions to try: each bound where finite, and the centre.
fn box_corners(low: &[f32], high: &[f32]) -> Vec<Vec<f32>> {
    let pick = |l: f32, h: f32, which: u8| match (l.is_finite(), h.is_finite(), which) {
        (true, _, 0) => l,
        (_, true, 1) => h,
        (true, true, _) => l + (h - l) / 2.0,
        (true, false, _) => l,
        (false, true, _) => h,
        (false, false, _) => 0.0,
    };
    (0..3)
        .map(|which| {
            low.iter()
                .zip(high)
                .map(|(&l, &h)| pick(l, h, which))
                .collect()
        })
        .collect()
}

fn check_valid_actions(env: &mut dyn Env, options: &CheckOptions) -> Outcome {
    let space = env.action_space().clone();
    let candidates: Vec<OwnedAction> = match &space {
        Space::Discrete { n } => (0..*n.min(&256)).map(OwnedAction::Discrete).collect(),
        Space::Box { low, high, .. } => box_corners(low, high)
            .into_iter()
            .map(OwnedAction::Continuous)
            .collect(),
    };
    let mut obs = Vec::new();
    let mut tried = 0;
    for action in &candidates {
        if let Err(e) = do_reset(env, Some(options.seed), &mut obs) {
            return fail(e);
        }
        if let OwnedAction::Discrete(a) = action {
            let allowed = guard(|| env.action_mask().is_none_or(|m| m.get(*a) == Some(&true)));
            if allowed != Ok(true) {
                continue;
            }
        }
        tried += 1;
        match do_step(env, action.as_action(), &mut obs) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return fail(format!(
                    "the valid action {action:?} was refused from the start state: {e}"
                ))
            }
            Err(p) => return fail(format!("step with the valid action {action:?} {p}")),
        }
    }
    let what = match space {
        Space::Discrete { n } if n > 256 => "the first 256 actions",
        Space::Discrete { .. } => "every action",
        Space::Box { .. } => "the box's lower and upper corners and its centre",
    };
    let masked = candidates.len() - tried;
    let note = if masked > 0 {
        format!(" ({masked} masked out there, not tried)")
    } else {
        String::new()
    };
    pass(format!("{what} accepted from the start state{note}"))
}

/// The first step of a fixed action from the start state, to compare with.
fn first_step(
    env: &mut dyn Env,
    seed: u64,
    action: &OwnedAction,
) -> Result<(Vec<f32>, f64, bool, bool), String> {
    let mut obs = Vec::new();
    do_reset(env, Some(seed), &mut obs)?;
    match do_step(env, action.as_action(), &mut obs) {
        Ok(Ok(s)) => Ok((obs, s.reward, s.terminated, s.truncated)),
        Ok(Err(e)) => Err(format!("the valid action {action:?} was refused: {e}")),
        Err(p) => Err(format!("step with the valid action {action:?} {p}")),
    }
}

fn check_invalid_actions(env: &mut dyn Env, options: &CheckOptions) -> Outcome {
    let space = env.action_space().clone();
    let mut rng = EnvRng::seed_from_u64(options.seed);
    let mut obs = Vec::new();
    if let Err(e) = do_reset(env, Some(options.seed), &mut obs) {
        return fail(e);
    }
    let Ok(valid) = legal_action(env, &mut rng) else {
        return skip("no legal action to take (see `step`)");
    };
    let baseline = match first_step(env, options.seed, &valid) {
        Ok(b) => b,
        Err(e) => return skip(format!("stepping fails (see `step`): {e}")),
    };
    // (action, must be refused) — an action outside a box's finite bounds
    // may be clipped by design (Gymnasium's do), so accepting it is a warning.
    let mut invalid: Vec<(OwnedAction, bool)> = Vec::new();
    match &space {
        Space::Discrete { n } => {
            invalid.push((OwnedAction::Discrete(*n), true));
            invalid.push((OwnedAction::Discrete(usize::MAX), true));
            invalid.push((OwnedAction::Continuous(vec![0.0]), true));
        }
        Space::Box { low, high, .. } => {
            let centre = box_corners(low, high).swap_remove(2);
            let with = |i: usize, x: f32| {
                let mut v = centre.clone();
                v[i] = x;
                OwnedAction::Continuous(v)
            };
            invalid.push((OwnedAction::Continuous(vec![0.0; centre.len() + 1]), true));
            invalid.push((OwnedAction::Continuous(Vec::new()), true));
            invalid.push((OwnedAction::Discrete(0), true));
            invalid.push((with(0, f32::NAN), true));
            if high[0].is_finite() {
                invalid.push((with(0, f32::INFINITY), true));
                invalid.push((with(0, high[0] + high[0].abs().max(1.0)), false));
            }
        }
    }
    let mut warning = None;
    for (action, must) in &invalid {
        if let Err(e) = do_reset(env, Some(options.seed), &mut obs) {
            return fail(e);
        }
        match do_step(env, action.as_action(), &mut obs) {
            Err(p) => {
                return fail(format!(
                    "the invalid action {action:?} made step() panic instead of returning an \
                     error: {p}"
                ))
            }
            Ok(Ok(_)) if *must => {
                return fail(format!(
                    "the invalid action {action:?} was accepted; it must be refused with \
                     EnvError::InvalidAction (check it with action_space().check_action)"
                ))
            }
            Ok(Ok(_)) => {
                warning.get_or_insert_with(|| {
                    format!(
                        "the action {action:?}, outside the box's bounds, was accepted (clipped?); \
                         klrl's environments refuse it with EnvError::InvalidAction, and VecEnv's \
                         Checked wrapper does for any environment"
                    )
                });
                continue;
            }
            Ok(Err(_)) => {}
        }
        // The refused action must leave the state as it was.
        let after = match do_step(env, valid.as_action(), &mut obs) {
            Ok(Ok(s)) => (obs.clone(), s.reward, s.terminated, s.truncated),
            Ok(Err(e)) => {
                return fail(format!(
                    "after refusing {action:?}, the valid action {valid:?} was refused too: {e}"
                ))
            }
            Err(p) => {
                return fail(format!(
                    "after refusing {action:?}, step with the valid action {valid:?} {p}"
                ))
            }
        };
        let same = after.0.len() == baseline.0.len()
            && after
                .0
                .iter()
                .zip(&baseline.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
            && after.1.to_bits() == baseline.1.to_bits()
            && (after.2, after.3) == (baseline.2, baseline.3);
        if !same {
            return fail(format!(
                "refusing the invalid action {action:?} changed the environment: the next \
                 valid step differs from the same step without it"
            ));
        }
    }
    match warning {
        Some(w) => warn(w),
        None => pass(format!(
            "{} refused with an error, the state unchanged",
            match space {
                Space::Discrete { .. } => "out-of-range indices (n, usize::MAX) and a continuous action",
                Space::Box { .. } =>
                    "actions of the wrong length and kind, with a NaN, an infinite or an out-of-bounds element",
            }
        )),
    }
}

fn check_snapshot(env: &mut dyn Env, options: &CheckOptions) -> Outcome {
    // Somewhere mid-episode first.
    if let Err(e) = rollout(env, Some(options.seed), options.seed, 7) {
        return skip(format!("stepping fails (see `step`): {e}"));
    }
    let snap: EnvSnapshot =
        match guard(|| env.snapshot()) {
            Err(p) => return fail(format!("snapshot() {p}")),
            Ok(None) => return skip(
                "snapshots not offered (Env::snapshot returns None): a resumed run starts from \
                 a fresh reset and is not bit-identical to an uninterrupted one",
            ),
            Ok(Some(s)) => s,
        };
    let continuation = |env: &mut dyn Env| rollout(env, None, options.seed ^ 0x5eed, 50);
    let first = match continuation(env) {
        Ok(r) => r,
        Err(e) => return skip(format!("stepping fails (see `step`): {e}")),
    };
    match guard(|| env.restore(&snap)) {
        Err(p) => return fail(format!("restore() of the environment's own snapshot {p}")),
        Ok(Err(e)) => {
            return fail(format!(
                "restore() of the environment's own snapshot failed: {e}"
            ))
        }
        Ok(Ok(())) => {}
    }
    match guard(|| env.snapshot()) {
        Ok(Some(again)) if again == snap => {}
        Ok(Some(_)) => {
            return fail(
                "snapshot() → restore() → snapshot() gives a different snapshot: restore does \
                 not put back everything snapshot records",
            )
        }
        Ok(None) => return fail("snapshot() returned None after a restore, Some before"),
        Err(p) => return fail(format!("snapshot() after restore() {p}")),
    }
    let second = match continuation(env) {
        Ok(r) => r,
        Err(e) => return fail(format!("after restore(): {e}")),
    };
    for (a, b) in first.events.iter().zip(&second.events) {
        if !a.same(b) {
            return fail(format!(
                "after restore(), the same actions gave a different trajectory at {} {}: {}; the \
                 snapshot misses part of the state (a counter, a flag, a random number \
                 generator?)",
                a.call,
                a.t,
                a.difference(b)
            ));
        }
    }
    pass("restore() then the same 50 actions replay bit for bit; snapshot → restore → snapshot round-trips")
}
