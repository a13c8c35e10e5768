//! [`VecEnv`]: N copies of an environment stepped together.

use crate::{
    Action, Checked, Env, EnvError, EnvSnapshot, EpisodeRecord, RecordEpisodeStatistics, Space,
    StepInfo,
};

/// A batch of actions, one per copy, in copy order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Actions<'a> {
    /// One discrete action per copy.
    Discrete(&'a [usize]),
    /// `num_envs × action_dim` values, copy-major.
    Continuous(&'a [f32]),
}

type Wrapped<E> = Checked<RecordEpisodeStatistics<E>>;

/// N copies of an environment stepped in lock-step (Gymnasium's `SyncVectorEnv`
/// with same-step autoreset, as in Stable-Baselines3).
///
/// - Observations of all copies live in one contiguous, copy-major `f32`
///   buffer ([`VecEnv::observations`]), ready to become a tensor.
/// - When a copy's episode ends, it is reset in the same call: its slot in
///   [`VecEnv::observations`] holds the first observation of the new episode,
///   and [`VecEnv::final_observation`] hands back the last observation of the
///   episode that ended, from which a learner bootstraps a truncation.
/// - [`VecEnv::reset`] with `Some(seed)` seeds copy `i` with `seed + i`.
/// - Each copy is wrapped in [`Checked`] and [`RecordEpisodeStatistics`]: bad
///   actions and misbehaving environments are typed errors, and finished
///   episodes are reported in [`VecEnv::infos`].
/// - Stepping allocates nothing. With [`VecEnv::with_threads`] the copies are
///   split across scoped threads, which pays off only for environments whose
///   step costs more than the tens of microseconds a thread start costs.
///
/// Actions are validated before any copy steps, so an invalid action changes
/// nothing. An error raised inside a copy's `step` or `reset` leaves the batch
/// half-stepped; the vectorised environment then refuses to step until
/// [`VecEnv::reset`] is called.
pub struct VecEnv<E: Env = Box<dyn Env>> {
    envs: Vec<Wrapped<E>>,
    scratch: Vec<Vec<f32>>,
    obs_dim: usize,
    act_dim: usize,
    observation_space: Space,
    action_space: Space,
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    infos: Vec<StepInfo>,
    /// `num_envs × n` action masks when the environment provides them.
    masks: Option<Vec<bool>>,
    threads: usize,
    ready: bool,
}

/// The part of a vectorised environment's state that one thread steps.
struct Chunk<'a, E: Env> {
    first_index: usize,
    envs: &'a mut [Wrapped<E>],
    scratch: &'a mut [Vec<f32>],
    obs: &'a mut [f32],
    final_obs: &'a mut [f32],
    rewards: &'a mut [f64],
    terminated: &'a mut [bool],
    truncated: &'a mut [bool],
    infos: &'a mut [StepInfo],
    masks: Option<&'a mut [bool]>,
}

impl<E: Env> VecEnv<E> {
    /// Vectorise `envs` (at least one). All copies must have the same spaces.
    pub fn new(envs: Vec<E>) -> Result<Self, EnvError> {
        let first = envs.first().ok_or_else(|| EnvError::VecEnv {
            reason: "needs at least one environment".into(),
        })?;
        let observation_space = first.observation_space().clone();
        let action_space = first.action_space().clone();
        if !matches!(observation_space, Space::Box { .. }) {
            return Err(EnvError::VecEnv {
                reason: format!("{}: the observation space must be a Box", first.name()),
            });
        }
        for (i, e) in envs.iter().enumerate() {
            if e.observation_space() != &observation_space || e.action_space() != &action_space {
                return Err(EnvError::VecEnv {
                    reason: format!("copy {i} ({}) has different spaces from copy 0", e.name()),
                });
            }
        }
        let n = envs.len();
        let obs_dim = observation_space.flat_dim();
        let act_dim = action_space.flat_dim();
        Ok(VecEnv {
            envs: envs
                .into_iter()
                .map(|e| Checked::new(RecordEpisodeStatistics::new(e)))
                .collect(),
            scratch: (0..n).map(|_| Vec::with_capacity(obs_dim)).collect(),
            obs_dim,
            act_dim,
            observation_space,
            action_space,
            obs: vec![0.0; n * obs_dim],
            final_obs: vec![0.0; n * obs_dim],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            infos: vec![StepInfo::default(); n],
            masks: None,
            threads: 1,
            ready: false,
        })
    }

    /// Step the copies on up to `threads` scoped threads (1 = sequential, the
    /// default). Results do not depend on the thread count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Number of copies.
    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }

    /// The observation space of one copy.
    pub fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    /// The action space of one copy.
    pub fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// Elements of one observation.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Copy `i`, unwrapped.
    pub fn env(&self, i: usize) -> &E {
        self.envs[i].inner().inner()
    }

    /// Copy `i`, unwrapped and mutable (e.g. to change a bandit's drift).
    pub fn env_mut(&mut self, i: usize) -> &mut E {
        self.envs[i].inner_mut().inner_mut()
    }

    /// Reset every copy; `Some(seed)` seeds copy `i` with `seed + i`.
    pub fn reset(&mut self, seed: Option<u64>) -> Result<(), EnvError> {
        self.ready = false;
        let d = self.obs_dim;
        for (i, (env, scratch)) in self.envs.iter_mut().zip(&mut self.scratch).enumerate() {
            env.reset(seed.map(|s| s.wrapping_add(i as u64)), scratch)
                .map_err(|e| in_copy(i, e))?;
            self.obs[i * d..(i + 1) * d].copy_from_slice(scratch);
        }
        self.rewards.fill(0.0);
        self.terminated.fill(false);
        self.truncated.fill(false);
        self.infos.fill(StepInfo::default());
        self.masks = match (self.action_space.n(), self.envs[0].action_mask()) {
            (Some(n), Some(_)) => Some(vec![true; self.envs.len() * n]),
            _ => None,
        };
        if let (Some(masks), Some(n)) = (&mut self.masks, self.action_space.n()) {
            for (env, m) in self.envs.iter().zip(masks.chunks_mut(n)) {
                copy_mask(env, m);
            }
        }
        self.ready = true;
        Ok(())
    }

    /// Step every copy with its action, autoresetting copies whose episode ended.
    pub fn step(&mut self, actions: Actions<'_>) -> Result<(), EnvError> {
        if !self.ready {
            return Err(EnvError::VecEnv {
                reason: "step() called before reset() (or after an error); call reset() first"
                    .into(),
            });
        }
        let n = self.envs.len();
        let expected = match actions {
            Actions::Discrete(_) => n,
            Actions::Continuous(_) => n * self.act_dim,
        };
        let got = match actions {
            Actions::Discrete(a) => a.len(),
            Actions::Continuous(a) => a.len(),
        };
        if got != expected {
            return Err(EnvError::VecEnv {
                reason: format!("step() got {got} action values, expected {expected}"),
            });
        }
        // Validate every action before stepping any copy, so a bad action
        // leaves the batch untouched and can be corrected and retried.
        for i in 0..n {
            let action = match actions {
                Actions::Discrete(a) => Action::Discrete(a[i]),
                Actions::Continuous(a) => {
                    Action::Continuous(&a[i * self.act_dim..(i + 1) * self.act_dim])
                }
            };
            self.envs[i]
                .check_action(action)
                .map_err(|e| in_copy(i, e))?;
        }
        self.ready = false;
        let threads = self.threads.min(n);
        let per = n.div_ceil(threads);
        let (d, ad) = (self.obs_dim, self.act_dim);
        let n_act = self.action_space.n().unwrap_or(0);
        let mut chunks = Vec::new();
        let mut rest = Chunk {
            first_index: 0,
            envs: &mut self.envs,
            scratch: &mut self.scratch,
            obs: &mut self.obs,
            final_obs: &mut self.final_obs,
            rewards: &mut self.rewards,
            terminated: &mut self.terminated,
            truncated: &mut self.truncated,
            infos: &mut self.infos,
            masks: self.masks.as_deref_mut(),
        };
        if threads == 1 {
            step_chunk(rest, actions, d, ad, n_act)?;
        } else {
            while rest.envs.len() > per {
                let (head, tail) = rest.split(per, d, n_act);
                chunks.push(head);
                rest = tail;
            }
            chunks.push(rest);
            std::thread::scope(|s| {
                let handles: Vec<_> = chunks
                    .into_iter()
                    .map(|c| s.spawn(move || step_chunk(c, actions, d, ad, n_act)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("an environment panicked while stepping"))
                    .collect::<Result<Vec<()>, EnvError>>()
            })?;
        }
        self.ready = true;
        Ok(())
    }

    /// [`VecEnv::step`] with one discrete action per copy.
    pub fn step_discrete(&mut self, actions: &[usize]) -> Result<(), EnvError> {
        self.step(Actions::Discrete(actions))
    }

    /// [`VecEnv::step`] with `num_envs × action_dim` continuous values.
    pub fn step_continuous(&mut self, actions: &[f32]) -> Result<(), EnvError> {
        self.step(Actions::Continuous(actions))
    }

    /// Current observations, `num_envs × obs_dim`, copy-major. After a step
    /// in which copy `i` finished, its slot holds the new episode's first
    /// observation.
    pub fn observations(&self) -> &[f32] {
        &self.obs
    }

    /// The last observation of the episode copy `i` just finished, or `None`
    /// if it did not finish in the last step.
    pub fn final_observation(&self, i: usize) -> Option<&[f32]> {
        (self.terminated[i] || self.truncated[i])
            .then(|| &self.final_obs[i * self.obs_dim..(i + 1) * self.obs_dim])
    }

    /// Rewards of the last step, one per copy.
    pub fn rewards(&self) -> &[f64] {
        &self.rewards
    }

    /// Terminated flags of the last step.
    pub fn terminated(&self) -> &[bool] {
        &self.terminated
    }

    /// Truncated flags of the last step.
    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }

    /// Step infos of the last step; `infos()[i].episode` is set when copy `i`
    /// finished an episode.
    pub fn infos(&self) -> &[StepInfo] {
        &self.infos
    }

    /// Action masks for the current observations, `num_envs × n`, copy-major,
    /// when the environment provides them.
    pub fn action_masks(&self) -> Option<&[bool]> {
        self.masks.as_deref()
    }

    /// The exact state of every copy (with its wrappers) and of the buffers
    /// (observations, final observations, rewards, flags, infos, masks), or
    /// `None` if some copy does not support snapshots (see [`Env::snapshot`]).
    ///
    /// Layout: floats = observations ‖ final observations ‖ rewards ‖ per copy
    /// [expected_reward, optimal_expected_reward, episode return] (NaN when
    /// absent); ints = per copy episode length; flags = terminated ‖
    /// truncated ‖ per copy [has expected, has optimal, has episode] ‖
    /// [ready, has masks] ‖ masks; children = the copies.
    pub fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new("VecEnv");
        s.children = self
            .envs
            .iter()
            .map(|e| e.snapshot())
            .collect::<Option<Vec<_>>>()?;
        s.floats.extend(self.obs.iter().map(|&x| x as f64));
        s.floats.extend(self.final_obs.iter().map(|&x| x as f64));
        s.floats.extend_from_slice(&self.rewards);
        s.flags.extend_from_slice(&self.terminated);
        s.flags.extend_from_slice(&self.truncated);
        for info in &self.infos {
            s.floats.extend([
                info.expected_reward.unwrap_or(f64::NAN),
                info.optimal_expected_reward.unwrap_or(f64::NAN),
                info.episode.map_or(f64::NAN, |e| e.ret),
            ]);
            s.ints.push(info.episode.map_or(0, |e| e.len));
            s.flags.extend([
                info.expected_reward.is_some(),
                info.optimal_expected_reward.is_some(),
                info.episode.is_some(),
            ]);
        }
        s.flags.push(self.ready);
        s.flags.push(self.masks.is_some());
        if let Some(m) = &self.masks {
            s.flags.extend_from_slice(m);
        }
        Some(s)
    }

    /// Restore [`VecEnv::snapshot`] into copies built with the same
    /// environment and parameters. On an error the vectorised environment
    /// must be [`VecEnv::reset`] before it steps again.
    pub fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        let n = self.envs.len();
        let d = self.obs_dim;
        let n_act = self.action_space.n().unwrap_or(0);
        let name = self.envs[0].name().to_string();
        if snapshot.kind == "VecEnv" && snapshot.children.len() != n {
            return Err(EnvError::Snapshot {
                env: name,
                reason: format!(
                    "the snapshot has {} environment copies, this vectorised environment {n}",
                    snapshot.children.len()
                ),
            });
        }
        let has_masks = snapshot.flags.get(5 * n + 1).copied().unwrap_or(false);
        let mask_len = if has_masks { n * n_act } else { 0 };
        snapshot.expect(
            &name,
            "VecEnv",
            [2 * n * d + n + 3 * n, n, 5 * n + 2 + mask_len, 0, n],
        )?;
        self.ready = false;
        for (i, (env, child)) in self.envs.iter_mut().zip(&snapshot.children).enumerate() {
            env.restore(child).map_err(|e| in_copy(i, e))?;
        }
        let f = &snapshot.floats;
        for (dst, &src) in self.obs.iter_mut().zip(&f[..n * d]) {
            *dst = src as f32;
        }
        for (dst, &src) in self.final_obs.iter_mut().zip(&f[n * d..2 * n * d]) {
            *dst = src as f32;
        }
        self.rewards.copy_from_slice(&f[2 * n * d..2 * n * d + n]);
        let info_f = &f[2 * n * d + n..];
        let flags = &snapshot.flags;
        self.terminated.copy_from_slice(&flags[..n]);
        self.truncated.copy_from_slice(&flags[n..2 * n]);
        let info_flags = &flags[2 * n..5 * n];
        for (i, info) in self.infos.iter_mut().enumerate() {
            let (fl, fv) = (&info_flags[3 * i..3 * i + 3], &info_f[3 * i..3 * i + 3]);
            *info = StepInfo {
                expected_reward: fl[0].then_some(fv[0]),
                optimal_expected_reward: fl[1].then_some(fv[1]),
                episode: fl[2].then_some(EpisodeRecord {
                    ret: fv[2],
                    len: snapshot.ints[i],
                }),
            };
        }
        self.masks = has_masks.then(|| flags[5 * n + 2..].to_vec());
        self.ready = flags[5 * n];
        Ok(())
    }
}

impl<'a, E: Env> Chunk<'a, E> {
    /// Split off the first `k` copies.
    fn split(self, k: usize, d: usize, n_act: usize) -> (Chunk<'a, E>, Chunk<'a, E>) {
        let (e0, e1) = self.envs.split_at_mut(k);
        let (s0, s1) = self.scratch.split_at_mut(k);
        let (o0, o1) = self.obs.split_at_mut(k * d);
        let (f0, f1) = self.final_obs.split_at_mut(k * d);
        let (r0, r1) = self.rewards.split_at_mut(k);
        let (t0, t1) = self.terminated.split_at_mut(k);
        let (u0, u1) = self.truncated.split_at_mut(k);
        let (i0, i1) = self.infos.split_at_mut(k);
        let (m0, m1) = match self.masks {
            Some(m) => {
                let (a, b) = m.split_at_mut(k * n_act);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let head = Chunk {
            first_index: self.first_index,
            envs: e0,
            scratch: s0,
            obs: o0,
            final_obs: f0,
            rewards: r0,
            terminated: t0,
            truncated: u0,
            infos: i0,
            masks: m0,
        };
        let tail = Chunk {
            first_index: self.first_index + k,
            envs: e1,
            scratch: s1,
            obs: o1,
            final_obs: f1,
            rewards: r1,
            terminated: t1,
            truncated: u1,
            infos: i1,
            masks: m1,
        };
        (head, tail)
    }
}

fn step_chunk<E: Env>(
    mut c: Chunk<'_, E>,
    actions: Actions<'_>,
    d: usize,
    ad: usize,
    n_act: usize,
) -> Result<(), EnvError> {
    for j in 0..c.envs.len() {
        let i = c.first_index + j;
        let action = match actions {
            Actions::Discrete(a) => Action::Discrete(a[i]),
            Actions::Continuous(a) => Action::Continuous(&a[i * ad..(i + 1) * ad]),
        };
        let env = &mut c.envs[j];
        let scratch = &mut c.scratch[j];
        let step = env
            .step_prevalidated(action, scratch)
            .map_err(|e| in_copy(i, e))?;
        let slot = j * d..(j + 1) * d;
        c.rewards[j] = step.reward;
        c.terminated[j] = step.terminated;
        c.truncated[j] = step.truncated;
        c.infos[j] = step.info;
        if step.done() {
            c.final_obs[slot.clone()].copy_from_slice(scratch);
            env.reset(None, scratch).map_err(|e| in_copy(i, e))?;
        }
        c.obs[slot].copy_from_slice(scratch);
        if let Some(m) = c.masks.as_deref_mut() {
            copy_mask(env, &mut m[j * n_act..(j + 1) * n_act]);
        }
    }
    Ok(())
}

fn copy_mask<E: Env>(env: &E, out: &mut [bool]) {
    // Checked has verified the mask's length after every reset and step.
    match env.action_mask() {
        Some(m) => out.copy_from_slice(m),
        None => out.fill(true),
    }
}

fn in_copy(index: usize, e: EnvError) -> EnvError {
    EnvError::InCopy {
        index,
        source: Box::new(e),
    }
}
