//! [`RecordEpisodeStatistics`]: return and length of every finished episode.

use crate::{Action, Env, EnvError, EnvSnapshot, EpisodeRecord, Space, Step};

/// Accumulates the undiscounted return and the length of the running episode
/// and reports them in [`StepInfo::episode`](crate::StepInfo::episode) on the
/// step that ends it (Gymnasium's `RecordEpisodeStatistics`). Put it outside
/// [`TimeLimit`](crate::TimeLimit) so truncated episodes are counted too.
#[derive(Debug, Clone)]
pub struct RecordEpisodeStatistics<E> {
    inner: E,
    ret: f64,
    len: u64,
}

impl<E: Env> RecordEpisodeStatistics<E> {
    /// Wrap `inner`.
    pub fn new(inner: E) -> Self {
        RecordEpisodeStatistics {
            inner,
            ret: 0.0,
            len: 0,
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
}

impl<E: Env> Env for RecordEpisodeStatistics<E> {
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
    /// State: floats = [return so far], ints = [length so far], and the
    /// wrapped environment.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new("RecordEpisodeStatistics");
        s.floats = vec![self.ret];
        s.ints = vec![self.len];
        s.children = vec![self.inner.snapshot()?];
        Some(s)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        snapshot.expect(
            self.inner.name(),
            "RecordEpisodeStatistics",
            [1, 1, 0, 0, 1],
        )?;
        self.inner.restore(&snapshot.children[0])?;
        self.ret = snapshot.floats[0];
        self.len = snapshot.ints[0];
        Ok(())
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        self.ret = 0.0;
        self.len = 0;
        self.inner.reset(seed, obs)
    }
    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action, obs)?;
        self.ret += step.reward;
        self.len += 1;
        if step.done() {
            step.info.episode = Some(EpisodeRecord {
                ret: self.ret,
                len: self.len,
            });
            self.ret = 0.0;
            self.len = 0;
        }
        Ok(step)
    }
}
