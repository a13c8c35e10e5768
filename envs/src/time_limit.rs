//! [`TimeLimit`]: truncates episodes after a fixed number of steps.

use crate::{Action, Env, EnvError, EnvSnapshot, Space, Step};

/// Sets `truncated` on the step at which the episode reaches `max_episode_steps`
/// steps (Gymnasium's `TimeLimit`). An episode that terminates on that same
/// step reports both flags; learners treat it as terminated. Unlike
/// Gymnasium's, a step after the truncation is refused with
/// [`EnvError::NeedsReset`], as the [`Env`] contract asks.
#[derive(Debug, Clone)]
pub struct TimeLimit<E> {
    inner: E,
    max_episode_steps: u64,
    elapsed: u64,
}

impl<E: Env> TimeLimit<E> {
    /// Wrap `inner` with a limit of `max_episode_steps` (at least 1).
    pub fn new(inner: E, max_episode_steps: u64) -> Result<Self, EnvError> {
        if max_episode_steps == 0 {
            return Err(EnvError::param(
                inner.name(),
                "max_episode_steps",
                "must be >= 1, got 0",
            ));
        }
        Ok(TimeLimit {
            inner,
            max_episode_steps,
            elapsed: 0,
        })
    }

    /// The limit.
    pub fn max_episode_steps(&self) -> u64 {
        self.max_episode_steps
    }

    /// Steps taken in the current episode.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// The wrapped environment.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The wrapped environment, mutably.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }
}

impl<E: Env> Env for TimeLimit<E> {
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
    /// State: ints = [elapsed, max_episode_steps] and the wrapped environment.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new("TimeLimit");
        s.ints = vec![self.elapsed, self.max_episode_steps];
        s.children = vec![self.inner.snapshot()?];
        Some(s)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        snapshot.expect(self.inner.name(), "TimeLimit", [0, 2, 0, 0, 1])?;
        if snapshot.ints[1] != self.max_episode_steps {
            return Err(EnvError::Snapshot {
                env: self.inner.name().to_string(),
                reason: format!(
                    "the snapshot has a time limit of {} steps, this environment {}",
                    snapshot.ints[1], self.max_episode_steps
                ),
            });
        }
        self.inner.restore(&snapshot.children[0])?;
        self.elapsed = snapshot.ints[0];
        Ok(())
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        self.elapsed = 0;
        self.inner.reset(seed, obs)
    }
    /// After the step that reached the limit, `step` returns
    /// [`EnvError::NeedsReset`] until `reset` (the inner environment has not
    /// ended, but the episode has).
    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        if self.elapsed >= self.max_episode_steps {
            return Err(EnvError::NeedsReset {
                env: self.inner.name().to_string(),
                when: "after the episode was truncated by its time limit",
            });
        }
        let mut step = self.inner.step(action, obs)?;
        self.elapsed += 1;
        if self.elapsed >= self.max_episode_steps {
            step.truncated = true;
        }
        Ok(step)
    }
}
