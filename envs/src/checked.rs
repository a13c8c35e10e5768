//! [`Checked`]: validates an environment's inputs, call order and outputs
//! (Gymnasium's `OrderEnforcing` and `PassiveEnvChecker`, as typed errors).

use crate::{Action, Env, EnvError, EnvSnapshot, Space, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NeverReset,
    Running,
    Ended,
}

/// Wraps any [`Env`] and turns misuse and misbehaviour into [`EnvError`]s:
///
/// - an action outside the action space (out of range, wrong length, NaN,
///   outside the box) or forbidden by the action mask;
/// - `step` before the first `reset`, or after the episode ended;
/// - an observation of the wrong length or with a non-finite element;
/// - a non-finite reward.
///
/// The checks cost a few comparisons per step. [`VecEnv`](crate::VecEnv)
/// applies this wrapper to every copy, so a custom environment gets them for
/// free.
#[derive(Debug, Clone)]
pub struct Checked<E> {
    inner: E,
    phase: Phase,
}

impl<E: Env> Checked<E> {
    /// Wrap `inner`.
    pub fn new(inner: E) -> Self {
        Checked {
            inner,
            phase: Phase::NeverReset,
        }
    }

    /// The wrapped environment.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The wrapped environment, mutably.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> E {
        self.inner
    }

    /// Whether `action` is in the action space and allowed by the current
    /// action mask.
    pub fn check_action(&self, action: Action<'_>) -> Result<(), EnvError> {
        self.inner
            .action_space()
            .check_action(self.inner.name(), action)?;
        if let (Action::Discrete(a), Some(mask)) = (action, self.inner.action_mask()) {
            if !mask.get(a).copied().unwrap_or(false) {
                return Err(EnvError::MaskedAction {
                    env: self.inner.name().to_string(),
                    action: a,
                });
            }
        }
        Ok(())
    }

    fn needs_reset(&self) -> EnvError {
        EnvError::NeedsReset {
            env: self.inner.name().to_string(),
            when: match self.phase {
                Phase::NeverReset => "before the first reset()",
                _ => "after the episode ended (terminated or truncated)",
            },
        }
    }

    #[inline]
    fn check_obs(&self, call: &'static str, obs: &[f32]) -> Result<(), EnvError> {
        let expected = self.inner.observation_space().flat_dim();
        if obs.len() != expected {
            return Err(EnvError::ObservationLength {
                env: self.inner.name().to_string(),
                call,
                expected,
                got: obs.len(),
            });
        }
        if let Some((index, &value)) = obs.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(EnvError::NonFiniteObservation {
                env: self.inner.name().to_string(),
                call,
                index,
                value,
            });
        }
        if let (Some(mask), Some(n)) = (self.inner.action_mask(), self.inner.action_space().n()) {
            if mask.len() != n {
                return Err(EnvError::MaskLength {
                    env: self.inner.name().to_string(),
                    expected: n,
                    got: mask.len(),
                });
            }
        }
        Ok(())
    }
}

impl<E: Env> Env for Checked<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn observation_space(&self) -> &Space {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &Space {
        self.inner.action_space()
    }
    fn action_mask(&self) -> Option<&[bool]> {
        self.inner.action_mask()
    }

    /// State: ints = [phase: 0 never reset, 1 running, 2 ended] and the
    /// wrapped environment.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new("Checked");
        s.ints = vec![match self.phase {
            Phase::NeverReset => 0,
            Phase::Running => 1,
            Phase::Ended => 2,
        }];
        s.children = vec![self.inner.snapshot()?];
        Some(s)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        snapshot.expect(self.inner.name(), "Checked", [0, 1, 0, 0, 1])?;
        let phase = match snapshot.ints[0] {
            0 => Phase::NeverReset,
            1 => Phase::Running,
            2 => Phase::Ended,
            p => {
                return Err(EnvError::Snapshot {
                    env: self.inner.name().to_string(),
                    reason: format!("unknown phase {p}"),
                })
            }
        };
        self.inner.restore(&snapshot.children[0])?;
        self.phase = phase;
        Ok(())
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        self.inner.reset(seed, obs)?;
        self.check_obs("reset", obs)?;
        self.phase = Phase::Running;
        Ok(())
    }

    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        if self.phase != Phase::Running {
            return Err(self.needs_reset());
        }
        self.check_action(action)?;
        self.step_prevalidated(action, obs)
    }
}

impl<E: Env> Checked<E> {
    /// [`Env::step`] for an action the caller has already passed through
    /// [`Checked::check_action`] in the current state (the vectorised
    /// environment validates a whole batch before stepping any copy).
    #[inline]
    pub(crate) fn step_prevalidated(
        &mut self,
        action: Action<'_>,
        obs: &mut Vec<f32>,
    ) -> Result<Step, EnvError> {
        if self.phase != Phase::Running {
            return Err(self.needs_reset());
        }
        let step = self.inner.step(action, obs)?;
        if !step.reward.is_finite() {
            return Err(EnvError::NonFiniteReward {
                env: self.inner.name().to_string(),
                reward: step.reward,
            });
        }
        self.check_obs("step", obs)?;
        if step.done() {
            self.phase = Phase::Ended;
        }
        Ok(step)
    }
}
