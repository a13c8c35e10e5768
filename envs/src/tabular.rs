//! Finite MDPs with closed-form values: [`TabularMdp`], and its built-in
//! instance `Chain-v0`.
//!
//! A [`TabularMdp`] is a finite episodic MDP (S, A, P, r, terminal states,
//! ρ0): transition probabilities `P(s' | s, a)`, transition rewards
//! `r(s, a, s')` (their expectation `r(s, a) = Σ_s' P(s'|s,a) r(s,a,s')` is what
//! the closed forms use), a set of terminal states (value 0, the episode ends
//! on entering one) and an initial-state distribution ρ0. As an [`Env`] its
//! observation is the one-hot state (f32) and its actions are `0..n_actions`.
//!
//! Beside stepping, it answers exactly (in f64, no learning) the questions a
//! test of a policy-gradient, PPO or TRPO implementation needs, for a tabular
//! policy π given as one row `π(·|s)` per state:
//!
//! - [`TabularMdp::policy_value`]: `V^π`, the solution of the Bellman equation
//!   `(I − γ P_π) V = r_π` (Sutton & Barto 2018, eq. 4.4), by Gaussian
//!   elimination with partial pivoting;
//! - [`TabularMdp::q_values`]: `Q^π(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) V^π(s')`;
//! - [`TabularMdp::expected_return`]: `J(π) = Σ_s ρ0(s) V^π(s)`;
//! - [`TabularMdp::discounted_state_visitation`]: the normalised discounted
//!   state distribution `d^π` of the policy-gradient theorem (Sutton et al.
//!   2000; Kakade & Langford 2002);
//! - [`TabularMdp::kl_per_state`] and [`TabularMdp::mean_kl`]: exact
//!   `KL(π1(·|s) ‖ π2(·|s))`, and its average under a state weighting (TRPO's
//!   constraint, Schulman et al. 2015, eq. 12, with the weighting `d^π`);
//! - [`TabularMdp::optimal_value`]: `V*` by value iteration.
//!
//! # `Chain-v0`
//!
//! A corridor of `n_states` cells; both ends are terminal. The agent starts in
//! cell `start_state` (default 1, next to the left end) and moves left
//! (action 0) or right (action 1); with probability `slip` it moves the other
//! way. Entering the left end pays `left_reward` (default 0.1), entering the
//! right end `right_reward` (default 1), every other move `step_reward`
//! (default 0). A myopic policy grabs the small reward next door; with
//! γ = 0.99 the large reward `n_states − 2` cells away is worth far more
//! (0.99⁸ ≈ 0.92 against 0.1 with the defaults), so a learner has to look
//! ahead. The idea follows the chain tasks used to study exploration and
//! myopia (Strens 2000, "A Bayesian framework for reinforcement learning";
//! Osband et al. 2016, "Deep exploration via bootstrapped DQN"). The registry
//! adds a time limit of [`TabularMdp::CHAIN_MAX_EPISODE_STEPS`] steps, far
//! beyond the ≈ 10 steps a sensible policy needs, which only ends episodes of a
//! policy that dithers in the middle.

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, RngState, Space, Step};

/// Tolerance on the sums of probability rows (transitions, ρ0, policies).
const SUM_TOL: f64 = 1e-9;
/// Value iteration stops when the largest change of a value is below this.
const VALUE_ITERATION_TOL: f64 = 1e-12;
/// Value iteration gives up after this many sweeps.
const VALUE_ITERATION_MAX_SWEEPS: usize = 10_000_000;
/// Upper bound on `n_states` of `Chain-v0`: the tables are dense
/// (S × A × S), so 1024 cells already take 32 MB, and the closed forms cost
/// O(S³).
const MAX_CHAIN_STATES: usize = 1024;

/// Parameters of `Chain-v0` (all optional in a config).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainParams {
    /// Number of cells including the two terminal ends, in 3..=1024. Default 10.
    pub n_states: usize,
    /// Probability that a move goes the opposite way, in [0, 1]. Default 0.1.
    pub slip: f64,
    /// Reward for entering the left end (cell 0), finite. Default 0.1.
    pub left_reward: f64,
    /// Reward for entering the right end (cell `n_states − 1`), finite.
    /// Default 1.0.
    pub right_reward: f64,
    /// Reward for every move that enters an inner cell, finite. Default 0.0.
    pub step_reward: f64,
    /// The cell every episode starts in, an inner cell `1..=n_states − 2`.
    /// Default 1.
    pub start_state: usize,
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            n_states: 10,
            slip: 0.1,
            left_reward: 0.1,
            right_reward: 1.0,
            step_reward: 0.0,
            start_state: 1,
        }
    }
}

/// A finite episodic MDP with exact solutions; see the module docs.
#[derive(Debug, Clone)]
pub struct TabularMdp {
    name: String,
    n_states: usize,
    n_actions: usize,
    /// `P(s'|s,a)` at `(s * n_actions + a) * n_states + s'`.
    transitions: Vec<f64>,
    /// `r(s,a,s')`, laid out like `transitions`.
    rewards: Vec<f64>,
    /// `r(s,a) = Σ_s' P(s'|s,a) r(s,a,s')` at `s * n_actions + a`.
    expected_rewards: Vec<f64>,
    terminal: Vec<bool>,
    initial: Vec<f64>,
    state: usize,
    rng: EnvRng,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl TabularMdp {
    /// Registry name of the chain.
    pub const CHAIN_NAME: &'static str = "Chain-v0";
    /// Time limit the registry gives `Chain-v0`.
    pub const CHAIN_MAX_EPISODE_STEPS: u64 = 200;

    /// A finite MDP from its tables, checked: `transitions[s][a][s']` =
    /// `P(s'|s,a)` (each row non-negative and summing to 1 within 1e-9),
    /// `rewards[s][a][s']` = `r(s,a,s')` (finite), `terminal[s]`, and `initial`
    /// = ρ0 (a distribution putting no mass on terminal states). The rows of
    /// terminal states must be present and valid but are never used. `name`
    /// is what errors and [`Env::name`] report. Its RNG starts from seed 0 until
    /// `reset(Some(seed))`.
    pub fn new(
        name: &str,
        transitions: &[Vec<Vec<f64>>],
        rewards: &[Vec<Vec<f64>>],
        terminal: &[bool],
        initial: &[f64],
    ) -> Result<Self, EnvError> {
        let n_states = transitions.len();
        if n_states == 0 {
            return Err(EnvError::param(
                name,
                "transitions",
                "needs at least one state",
            ));
        }
        let n_actions = transitions[0].len();
        if n_actions == 0 {
            return Err(EnvError::param(
                name,
                "transitions",
                "needs at least one action",
            ));
        }
        let mut p = Vec::with_capacity(n_states * n_actions * n_states);
        let mut r = Vec::with_capacity(n_states * n_actions * n_states);
        for (s, ps) in transitions.iter().enumerate() {
            let rs = rewards.get(s).ok_or_else(|| {
                EnvError::param(
                    name,
                    "rewards",
                    format!("has {} states, expected {n_states}", rewards.len()),
                )
            })?;
            if ps.len() != n_actions || rs.len() != n_actions {
                return Err(EnvError::param(
                    name,
                    if ps.len() != n_actions {
                        "transitions"
                    } else {
                        "rewards"
                    },
                    format!(
                        "state {s} has {} / {} actions, expected {n_actions}",
                        ps.len(),
                        rs.len()
                    ),
                ));
            }
            for a in 0..n_actions {
                let (row, rrow) = (&ps[a], &rs[a]);
                if row.len() != n_states || rrow.len() != n_states {
                    return Err(EnvError::param(
                        name,
                        if row.len() != n_states {
                            "transitions"
                        } else {
                            "rewards"
                        },
                        format!(
                            "row ({s}, {a}) has {} / {} next states, expected {n_states}",
                            row.len(),
                            rrow.len()
                        ),
                    ));
                }
                check_distribution(name, "transitions", &format!("row ({s}, {a})"), row)?;
                if let Some(x) = rrow.iter().find(|x| !x.is_finite()) {
                    return Err(EnvError::param(
                        name,
                        "rewards",
                        format!("row ({s}, {a}) has the non-finite reward {x}"),
                    ));
                }
                p.extend_from_slice(row);
                r.extend_from_slice(rrow);
            }
        }
        if rewards.len() != n_states {
            return Err(EnvError::param(
                name,
                "rewards",
                format!("has {} states, expected {n_states}", rewards.len()),
            ));
        }
        if terminal.len() != n_states {
            return Err(EnvError::param(
                name,
                "terminal",
                format!("has {} entries, expected {n_states}", terminal.len()),
            ));
        }
        if initial.len() != n_states {
            return Err(EnvError::param(
                name,
                "initial",
                format!("has {} entries, expected {n_states}", initial.len()),
            ));
        }
        check_distribution(name, "initial", "ρ0", initial)?;
        if let Some(s) = (0..n_states).find(|&s| terminal[s] && initial[s] > 0.0) {
            return Err(EnvError::param(
                name,
                "initial",
                format!("puts probability {} on the terminal state {s}", initial[s]),
            ));
        }
        let expected_rewards = p
            .chunks(n_states)
            .zip(r.chunks(n_states))
            .map(|(pr, rr)| pr.iter().zip(rr).map(|(a, b)| a * b).sum())
            .collect();
        Ok(TabularMdp {
            name: name.to_string(),
            n_states,
            n_actions,
            transitions: p,
            rewards: r,
            expected_rewards,
            terminal: terminal.to_vec(),
            initial: initial.to_vec(),
            state: 0,
            rng: EnvRng::seed_from_u64(0),
            needs_reset: true,
            observation_space: Space::uniform_box(n_states, 0.0, 1.0),
            action_space: Space::discrete(n_actions),
        })
    }

    /// `Chain-v0` (see the module docs), its parameters checked.
    pub fn chain(params: ChainParams) -> Result<Self, EnvError> {
        let name = Self::CHAIN_NAME;
        let ChainParams {
            n_states: n,
            slip,
            left_reward,
            right_reward,
            step_reward,
            start_state,
        } = params;
        if !(3..=MAX_CHAIN_STATES).contains(&n) {
            return Err(EnvError::param(
                name,
                "n_states",
                format!("must be in 3..={MAX_CHAIN_STATES}, got {n}"),
            ));
        }
        if !(0.0..=1.0).contains(&slip) {
            return Err(EnvError::param(
                name,
                "slip",
                format!("must be in [0, 1], got {slip}"),
            ));
        }
        for (param, v) in [
            ("left_reward", left_reward),
            ("right_reward", right_reward),
            ("step_reward", step_reward),
        ] {
            if !v.is_finite() {
                return Err(EnvError::param(
                    name,
                    param,
                    format!("must be finite, got {v}"),
                ));
            }
        }
        if !(1..=n - 2).contains(&start_state) {
            return Err(EnvError::param(
                name,
                "start_state",
                format!("must be an inner cell in 1..={}, got {start_state}", n - 2),
            ));
        }
        let entry_reward = |s: usize| match s {
            0 => left_reward,
            s if s == n - 1 => right_reward,
            _ => step_reward,
        };
        let mut transitions = vec![vec![vec![0.0; n]; 2]; n];
        let mut rewards = vec![vec![vec![0.0; n]; 2]; n];
        for s in 1..n - 1 {
            for (a, intended, other) in [(0, s - 1, s + 1), (1, s + 1, s - 1)] {
                transitions[s][a][intended] += 1.0 - slip;
                transitions[s][a][other] += slip;
                rewards[s][a][intended] = entry_reward(intended);
                rewards[s][a][other] = entry_reward(other);
            }
        }
        // Terminal rows are never used; make them self-loops so they are valid.
        for s in [0, n - 1] {
            for row in &mut transitions[s] {
                row[s] = 1.0;
            }
        }
        let mut terminal = vec![false; n];
        terminal[0] = true;
        terminal[n - 1] = true;
        let mut initial = vec![0.0; n];
        initial[start_state] = 1.0;
        Self::new(name, &transitions, &rewards, &terminal, &initial)
    }

    /// Number of states.
    pub fn n_states(&self) -> usize {
        self.n_states
    }

    /// Number of actions.
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// `P(s'|s,a)`, or `None` if an index is out of range.
    pub fn transition(&self, s: usize, a: usize, s_next: usize) -> Option<f64> {
        (s < self.n_states && a < self.n_actions && s_next < self.n_states)
            .then(|| self.transitions[(s * self.n_actions + a) * self.n_states + s_next])
    }

    /// `r(s,a,s')`, or `None` if an index is out of range.
    pub fn transition_reward(&self, s: usize, a: usize, s_next: usize) -> Option<f64> {
        (s < self.n_states && a < self.n_actions && s_next < self.n_states)
            .then(|| self.rewards[(s * self.n_actions + a) * self.n_states + s_next])
    }

    /// The expected reward `r(s,a) = Σ_s' P(s'|s,a) r(s,a,s')`, or `None` if an
    /// index is out of range.
    pub fn expected_reward(&self, s: usize, a: usize) -> Option<f64> {
        (s < self.n_states && a < self.n_actions)
            .then(|| self.expected_rewards[s * self.n_actions + a])
    }

    /// Whether each state is terminal.
    pub fn terminal_states(&self) -> &[bool] {
        &self.terminal
    }

    /// The initial-state distribution ρ0.
    pub fn initial_distribution(&self) -> &[f64] {
        &self.initial
    }

    /// The current state (the one the next action is taken in).
    pub fn state(&self) -> usize {
        self.state
    }

    /// The uniform policy, one row per state.
    pub fn uniform_policy(&self) -> Vec<Vec<f64>> {
        vec![vec![1.0 / self.n_actions as f64; self.n_actions]; self.n_states]
    }

    /// `V^π(s)` for every state: the solution of `(I − γ P_π) V = r_π` with
    /// `P_π(s'|s) = Σ_a π(a|s) P(s'|s,a)`, `r_π(s) = Σ_a π(a|s) r(s,a)` for
    /// non-terminal `s`, and `V(s) = 0` for terminal `s`. Solved by Gaussian
    /// elimination with partial pivoting (O(S³)).
    ///
    /// `policy` has one row `π(·|s)` per state (terminal rows included), each
    /// non-negative and summing to 1 within 1e-9; `gamma` ∈ [0, 1]. With
    /// γ = 1 the system is singular unless the policy reaches a terminal state
    /// with probability 1 from every state, which is reported as an
    /// [`EnvError::InvalidParameter`] on `gamma`.
    pub fn policy_value(&self, policy: &[Vec<f64>], gamma: f64) -> Result<Vec<f64>, EnvError> {
        self.check_policy("policy", policy)?;
        self.check_gamma(gamma)?;
        let n = self.n_states;
        let p_pi = self.policy_transitions(policy);
        let mut a = vec![0.0; n * n];
        let mut b = vec![0.0; n];
        for s in 0..n {
            a[s * n + s] = 1.0;
            if self.terminal[s] {
                continue;
            }
            for s2 in 0..n {
                // V of a terminal successor is 0 whatever P says.
                if !self.terminal[s2] {
                    a[s * n + s2] -= gamma * p_pi[s * n + s2];
                }
            }
            b[s] = (0..self.n_actions)
                .map(|act| policy[s][act] * self.expected_rewards[s * self.n_actions + act])
                .sum();
        }
        solve(&mut a, &mut b, n).ok_or_else(|| self.singular(gamma))?;
        Ok(b)
    }

    /// `Q^π(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) V^π(s')` for non-terminal `s`
    /// (0 for terminal `s`), one row per state. Arguments as for
    /// [`policy_value`](Self::policy_value).
    pub fn q_values(&self, policy: &[Vec<f64>], gamma: f64) -> Result<Vec<Vec<f64>>, EnvError> {
        let v = self.policy_value(policy, gamma)?;
        Ok(self.backup(&v, gamma))
    }

    /// `J(π) = Σ_s ρ0(s) V^π(s)`, the expected discounted return of an episode.
    /// Arguments as for [`policy_value`](Self::policy_value).
    pub fn expected_return(&self, policy: &[Vec<f64>], gamma: f64) -> Result<f64, EnvError> {
        let v = self.policy_value(policy, gamma)?;
        Ok(self.initial.iter().zip(&v).map(|(p, v)| p * v).sum())
    }

    /// The normalised discounted state-visitation distribution
    /// `d^π(s) = ρ^π(s) / Σ_s' ρ^π(s')`, where
    /// `ρ^π(s) = Σ_t γ^t Pr(s_t = s, episode not ended before t | π, s_0 ~ ρ0)`
    /// counts the states actions are taken in, so terminal states get 0. It
    /// solves `(I − γ P̃_πᵀ) ρ^π = ρ0`, P̃_π being `P_π` restricted to
    /// non-terminal states. Without terminal states and with γ < 1 this is the
    /// usual `(1 − γ) Σ_t γ^t Pr(s_t = s)`. Arguments as for
    /// [`policy_value`](Self::policy_value).
    pub fn discounted_state_visitation(
        &self,
        policy: &[Vec<f64>],
        gamma: f64,
    ) -> Result<Vec<f64>, EnvError> {
        self.check_policy("policy", policy)?;
        self.check_gamma(gamma)?;
        let n = self.n_states;
        let p_pi = self.policy_transitions(policy);
        let mut a = vec![0.0; n * n];
        let mut b = self.initial.clone();
        for s2 in 0..n {
            a[s2 * n + s2] = 1.0;
            if self.terminal[s2] {
                continue;
            }
            for s in 0..n {
                if !self.terminal[s] {
                    a[s2 * n + s] -= gamma * p_pi[s * n + s2];
                }
            }
        }
        solve(&mut a, &mut b, n).ok_or_else(|| self.singular(gamma))?;
        for (x, &t) in b.iter_mut().zip(&self.terminal) {
            if t {
                *x = 0.0;
            }
        }
        // Σρ^π ≥ Σρ0 = 1 since every term is non-negative.
        let total: f64 = b.iter().sum();
        Ok(b.into_iter().map(|x| x / total).collect())
    }

    /// `KL(π1(·|s) ‖ π2(·|s)) = Σ_a π1(a|s) ln(π1(a|s) / π2(a|s))` for every
    /// state, in nats, with `0 ln 0 = 0`, and `+∞` where `π1(a|s) > 0 = π2(a|s)`.
    /// Both policies are checked as in [`policy_value`](Self::policy_value).
    pub fn kl_per_state(&self, pi1: &[Vec<f64>], pi2: &[Vec<f64>]) -> Result<Vec<f64>, EnvError> {
        self.check_policy("pi1", pi1)?;
        self.check_policy("pi2", pi2)?;
        Ok(pi1
            .iter()
            .zip(pi2)
            .map(|(p, q)| {
                p.iter()
                    .zip(q)
                    .map(|(&p, &q)| match (p > 0.0, q > 0.0) {
                        (false, _) => 0.0,
                        (true, false) => f64::INFINITY,
                        (true, true) => p * (p / q).ln(),
                    })
                    .sum::<f64>()
                    // Rounding can leave −1e-17 for identical rows.
                    .max(0.0)
            })
            .collect())
    }

    /// The state-weighted mean KL `Σ_s w(s) KL_s / Σ_s w(s)` with `KL_s` from
    /// [`kl_per_state`](Self::kl_per_state), e.g. with `weights = d^π_old`
    /// (TRPO's average KL) or 1 on non-terminal states. A state of weight 0
    /// contributes 0 even where its KL is infinite. `weights` has one finite,
    /// non-negative entry per state, not all 0.
    pub fn mean_kl(
        &self,
        pi1: &[Vec<f64>],
        pi2: &[Vec<f64>],
        weights: &[f64],
    ) -> Result<f64, EnvError> {
        if weights.len() != self.n_states {
            return Err(EnvError::param(
                &self.name,
                "weights",
                format!(
                    "has {} entries, expected one per state ({})",
                    weights.len(),
                    self.n_states
                ),
            ));
        }
        if let Some((s, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(EnvError::param(
                &self.name,
                "weights",
                format!("entry {s} is {w}; weights must be finite and >= 0"),
            ));
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(EnvError::param(&self.name, "weights", "all weights are 0"));
        }
        let kl = self.kl_per_state(pi1, pi2)?;
        Ok(weights
            .iter()
            .zip(&kl)
            .filter(|(w, _)| **w > 0.0)
            .map(|(w, k)| w * k)
            .sum::<f64>()
            / total)
    }

    /// `V*(s)` by value iteration, `V ← max_a [r(s,a) + γ Σ_s' P(s'|s,a) V(s')]`
    /// (Sutton & Barto 2018, eq. 4.10) from `V = 0`, until no value changes by
    /// more than 1e-12; terminal states have value 0. `gamma` ∈ [0, 1); with
    /// γ = 1 it is accepted but fails unless value iteration converges (an
    /// [`EnvError::InvalidParameter`] on `gamma` after 10⁷ sweeps).
    pub fn optimal_value(&self, gamma: f64) -> Result<Vec<f64>, EnvError> {
        self.check_gamma(gamma)?;
        let mut v = vec![0.0; self.n_states];
        for _ in 0..VALUE_ITERATION_MAX_SWEEPS {
            let q = self.backup(&v, gamma);
            let mut change: f64 = 0.0;
            for (s, row) in q.iter().enumerate() {
                let best = if self.terminal[s] {
                    0.0
                } else {
                    row.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                };
                change = change.max((best - v[s]).abs());
                v[s] = best;
            }
            if !change.is_finite() {
                break;
            }
            if change < VALUE_ITERATION_TOL {
                return Ok(v);
            }
        }
        Err(EnvError::param(
            &self.name,
            "gamma",
            format!("value iteration did not converge with gamma = {gamma}"),
        ))
    }

    /// `r(s,a) + γ Σ_s' P(s'|s,a) v(s')` for non-terminal `s`, 0 for terminal.
    fn backup(&self, v: &[f64], gamma: f64) -> Vec<Vec<f64>> {
        let (n, m) = (self.n_states, self.n_actions);
        (0..n)
            .map(|s| {
                (0..m)
                    .map(|a| {
                        if self.terminal[s] {
                            return 0.0;
                        }
                        let row = &self.transitions[(s * m + a) * n..(s * m + a + 1) * n];
                        let next: f64 = row.iter().zip(v).map(|(p, v)| p * v).sum();
                        self.expected_rewards[s * m + a] + gamma * next
                    })
                    .collect()
            })
            .collect()
    }

    /// `P_π(s'|s)`, row-major `n_states × n_states`.
    fn policy_transitions(&self, policy: &[Vec<f64>]) -> Vec<f64> {
        let (n, m) = (self.n_states, self.n_actions);
        let mut p_pi = vec![0.0; n * n];
        for (s, pi_s) in policy.iter().enumerate() {
            for (a, &w) in pi_s.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let row = &self.transitions[(s * m + a) * n..(s * m + a + 1) * n];
                for (dst, p) in p_pi[s * n..(s + 1) * n].iter_mut().zip(row) {
                    *dst += w * p;
                }
            }
        }
        p_pi
    }

    fn check_policy(&self, param: &str, policy: &[Vec<f64>]) -> Result<(), EnvError> {
        if policy.len() != self.n_states {
            return Err(EnvError::param(
                &self.name,
                param,
                format!(
                    "has {} rows, expected one per state ({})",
                    policy.len(),
                    self.n_states
                ),
            ));
        }
        for (s, row) in policy.iter().enumerate() {
            if row.len() != self.n_actions {
                return Err(EnvError::param(
                    &self.name,
                    param,
                    format!(
                        "row {s} has {} entries, expected one per action ({})",
                        row.len(),
                        self.n_actions
                    ),
                ));
            }
            check_distribution(&self.name, param, &format!("row {s}"), row)?;
        }
        Ok(())
    }

    fn check_gamma(&self, gamma: f64) -> Result<(), EnvError> {
        if (0.0..=1.0).contains(&gamma) {
            Ok(())
        } else {
            Err(EnvError::param(
                &self.name,
                "gamma",
                format!("must be in [0, 1], got {gamma}"),
            ))
        }
    }

    fn singular(&self, gamma: f64) -> EnvError {
        EnvError::param(
            &self.name,
            "gamma",
            format!(
                "I − γ P_π is singular with gamma = {gamma}: the policy does not reach a terminal state with probability 1 from every state"
            ),
        )
    }

    fn write_obs(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.resize(self.n_states, 0.0);
        obs[self.state] = 1.0;
    }
}

impl Env for TabularMdp {
    fn name(&self) -> &str {
        &self.name
    }
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// State: ints = \[state\], flags = \[needs_reset\], the RNG.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new(&self.name);
        s.ints = vec![self.state as u64];
        s.flags = vec![self.needs_reset];
        s.rngs = vec![RngState::of(&self.rng)];
        Some(s)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        snapshot.expect(&self.name, &self.name, [0, 1, 1, 1, 0])?;
        let state = snapshot.ints[0];
        if state >= self.n_states as u64 {
            return Err(EnvError::Snapshot {
                env: self.name.clone(),
                reason: format!("state {state} out of range (n_states = {})", self.n_states),
            });
        }
        self.state = state as usize;
        self.needs_reset = snapshot.flags[0];
        self.rng = snapshot.rngs[0].to_rng();
        Ok(())
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        self.state = sample_index(&mut self.rng, &self.initial);
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        self.action_space.check_action(&self.name, action)?;
        let (Action::Discrete(a), false) = (action, self.needs_reset) else {
            return Err(EnvError::NeedsReset {
                env: self.name.clone(),
                when: "after the episode ended (terminated) or before the first reset()",
            });
        };
        let (n, m) = (self.n_states, self.n_actions);
        let row = (self.state * m + a) * n;
        let next = sample_index(&mut self.rng, &self.transitions[row..row + n]);
        let reward = self.rewards[row + next];
        self.state = next;
        let terminated = self.terminal[next];
        self.needs_reset = terminated;
        self.write_obs(obs);
        Ok(Step {
            reward,
            terminated,
            truncated: false,
            info: Default::default(),
        })
    }
}

/// Check that `row` is a probability vector (finite, ≥ 0, sum 1 ± 1e-9).
fn check_distribution(env: &str, param: &str, what: &str, row: &[f64]) -> Result<(), EnvError> {
    if let Some((i, x)) = row
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
    {
        return Err(EnvError::param(
            env,
            param,
            format!("{what}: entry {i} is {x}; probabilities must be finite and >= 0"),
        ));
    }
    let sum: f64 = row.iter().sum();
    if (sum - 1.0).abs() > SUM_TOL {
        return Err(EnvError::param(
            env,
            param,
            format!("{what} sums to {sum}, not 1"),
        ));
    }
    Ok(())
}

/// Draw an index from the distribution `probs` by inverse CDF; rounding that
/// leaves the uniform draw above the last cumulative sum picks the last index
/// with positive probability.
fn sample_index(rng: &mut EnvRng, probs: &[f64]) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        acc += p;
        if u < acc && p > 0.0 {
            return i;
        }
    }
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
}

/// Solve `A x = b` in place (`A` row-major `n × n`, the solution left in `b`)
/// by Gaussian elimination with partial pivoting. `None` if a pivot is below
/// 1e-12 times the largest entry of `A` (numerically singular).
fn solve(a: &mut [f64], b: &mut [f64], n: usize) -> Option<()> {
    let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let tiny = 1e-12 * scale.max(f64::MIN_POSITIVE);
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[pivot * n + col].abs() <= tiny {
            return None;
        }
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
            }
            b.swap(pivot, col);
        }
        let d = a[col * n + col];
        for row in col + 1..n {
            let f = a[row * n + col] / d;
            if f == 0.0 {
                continue;
            }
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            b[row] -= f * b[col];
        }
    }
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row * n + k] * b[k]).sum();
        b[row] = (b[row] - tail) / a[row * n + row];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_matches_a_known_system() {
        // A needs a row swap (zero first pivot). x = [1, 2, 3].
        let mut a = vec![0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 3.0];
        let mut b = vec![7.0, 6.0, 13.0];
        solve(&mut a, &mut b, 3).unwrap();
        for (x, e) in b.iter().zip([1.0, 2.0, 3.0]) {
            assert!((x - e).abs() < 1e-12, "{b:?}");
        }
        let mut a = vec![1.0, 2.0, 2.0, 4.0];
        let mut b = vec![1.0, 2.0];
        assert!(solve(&mut a, &mut b, 2).is_none());
    }

    #[test]
    fn sample_index_skips_zero_probability_entries() {
        let mut rng = EnvRng::seed_from_u64(0);
        for _ in 0..1000 {
            let i = sample_index(&mut rng, &[0.0, 0.3, 0.0, 0.7, 0.0]);
            assert!(i == 1 || i == 3);
        }
    }
}
