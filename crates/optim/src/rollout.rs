//! Collecting on-policy experience: a segment of `n_steps × n_envs`
//! transitions from a vectorised environment, carrying the next observation
//! across segments.

use candle_core::Tensor;
use klrl_envs::{Actions as EnvActions, Env, EpisodeRecord, Space, VecEnv};
use klrl_policy::{ActionMask, Actions, Policy, ValueNet};
use rand::Rng;

use crate::error::{OptimError, Result};
use crate::gae::{gae, Advantages, Segment};
use crate::normalize::{ObsNormalizer, RewardScaler};

/// One segment of experience, time-major (`t * n_envs + e`), with everything
/// GAE and the updates need. Observations are as the policy saw them (after
/// observation normalisation), rewards as the learner sees them (after reward
/// scaling).
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Number of environment copies.
    pub n_envs: usize,
    /// Steps per copy.
    pub n_steps: usize,
    /// Observation width.
    pub obs_dim: usize,
    /// Observations s_t, `n_steps · n_envs · obs_dim`.
    pub obs: Vec<f32>,
    /// The same observations as the environment gave them, before
    /// normalisation, when the collector keeps them
    /// ([`Collector::keep_raw_obs`]; a reference policy with its own
    /// normaliser needs them). `None` otherwise, or when `obs` are raw already.
    pub raw_obs: Option<Vec<f32>>,
    /// Actions a_t as sampled (continuous actions before clipping to the box).
    pub actions: Actions,
    /// log π_old(a_t | s_t).
    pub log_probs: Vec<f32>,
    /// V(s_t) under the value function that collected the segment.
    pub values: Vec<f32>,
    /// r_t (scaled when reward scaling is on).
    pub rewards: Vec<f32>,
    /// The transition ended the episode in a terminal state.
    pub terminated: Vec<bool>,
    /// The transition ended the episode by truncation (time limit).
    pub truncated: Vec<bool>,
    /// V(final observation) for truncated transitions, 0 elsewhere.
    pub final_values: Vec<f32>,
    /// V(s_T) after the last step, one per copy.
    pub last_values: Vec<f32>,
    /// Action masks of the states s_t, `n_steps · n_envs · n_actions`, when
    /// the environment has them.
    pub masks: Option<Vec<bool>>,
    /// Episodes that finished during the segment (unscaled returns).
    pub episodes: Vec<EpisodeRecord>,
    /// Sum over the segment of the expected regret of the chosen actions, and
    /// the number of steps that reported one (bandits).
    pub regret: Option<(f64, u64)>,
}

impl Rollout {
    /// Number of transitions, `n_steps · n_envs`.
    pub fn len(&self) -> usize {
        self.n_steps * self.n_envs
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// GAE(λ) advantages and returns of this segment (see [`crate::gae`]).
    pub fn advantages(&self, gamma: f32, lambda: f32) -> Advantages {
        gae(
            &Segment {
                n_envs: self.n_envs,
                rewards: &self.rewards,
                values: &self.values,
                terminated: &self.terminated,
                truncated: &self.truncated,
                final_values: &self.final_values,
                last_values: &self.last_values,
            },
            gamma,
            lambda,
        )
    }

    /// The action mask of the whole segment, for the policy.
    pub fn action_mask(&self) -> Result<Option<ActionMask>> {
        match (&self.masks, &self.actions) {
            (Some(m), Actions::Discrete(a)) if !a.is_empty() => {
                Ok(Some(ActionMask::new(m.clone(), m.len() / a.len())?))
            }
            _ => Ok(None),
        }
    }
}

/// Steps a vectorised environment with a policy and records rollouts.
///
/// Holds what carries over from one segment to the next: the normalised
/// current observation and the running normalisation statistics.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Observation normalisation, when enabled (checkpointed with the run).
    pub obs_norm: Option<ObsNormalizer>,
    /// Reward scaling, when enabled (checkpointed with the run).
    pub reward_scaler: Option<RewardScaler>,
    /// Keep the raw observations in [`Rollout::raw_obs`] (when observations
    /// are normalised). Default false.
    pub keep_raw_obs: bool,
    /// The current observations as the policy sees them.
    current_obs: Vec<f32>,
    /// Whether `current_obs` has been taken from the environment since its reset.
    primed: bool,
    /// gSDE (a policy whose [`Policy::sample_sde_noise`] gives noise): draw
    /// new noise matrices every this many steps of a rollout, or −1 only at
    /// its start (`policy.sde_sample_freq`). As SB3's `collect_rollouts`,
    /// every rollout starts with fresh matrices, so no noise state carries
    /// from one rollout (or checkpoint) to the next. Default −1.
    pub sde_sample_freq: i64,
}

impl Collector {
    /// A collector with optional observation normalisation and reward scaling.
    pub fn new(obs_norm: Option<ObsNormalizer>, reward_scaler: Option<RewardScaler>) -> Self {
        Collector {
            obs_norm,
            reward_scaler,
            keep_raw_obs: false,
            current_obs: Vec::new(),
            primed: false,
            sde_sample_freq: -1,
        }
    }

    /// Forget the current observation: call after resetting the environment.
    pub fn unprime(&mut self) {
        self.primed = false;
    }

    /// The current observations as the policy sees them (normalised), or
    /// `None` when none has been taken since the last reset; for checkpoints.
    pub fn current_observations(&self) -> Option<&[f32]> {
        self.primed.then_some(&self.current_obs[..])
    }

    /// Set the current observations (as [`Collector::current_observations`]
    /// returned them) when resuming from a checkpoint, so the next segment
    /// starts exactly where the saved run stopped.
    pub fn set_current_observations(&mut self, obs: Vec<f32>) {
        self.current_obs = obs;
        self.primed = true;
    }

    /// Normalise raw observations with the current statistics, updating them
    /// first when `update` is set.
    fn observe(&mut self, raw: &[f32], update: bool) -> Vec<f32> {
        let mut obs = raw.to_vec();
        if let Some(norm) = &mut self.obs_norm {
            if update {
                norm.stats.update(raw);
            }
            norm.normalize(&mut obs);
        }
        obs
    }

    /// Collect `n_steps` steps from every copy of `venv` (which must have been
    /// reset) with actions sampled from `policy` using `rng`.
    pub fn collect<E: Env, R: Rng>(
        &mut self,
        venv: &mut VecEnv<E>,
        policy: &dyn Policy,
        value: &ValueNet,
        n_steps: usize,
        rng: &mut R,
    ) -> Result<Rollout> {
        let n_envs = venv.num_envs();
        let obs_dim = venv.obs_dim();
        if policy.obs_dim() != obs_dim {
            return Err(OptimError::Mismatch(format!(
                "the policy takes {}-d observations, the environment gives {obs_dim}-d ones",
                policy.obs_dim()
            )));
        }
        let action_space = venv.action_space().clone();
        let (discrete, act_dim) = match &action_space {
            Space::Discrete { n } => (true, *n),
            Space::Box { low, .. } => (false, low.len()),
        };
        if policy.action_dim() != act_dim {
            return Err(OptimError::Mismatch(format!(
                "the policy has {} actions/dimensions, the environment's action space is {action_space:?}",
                policy.action_dim()
            )));
        }
        if !self.primed {
            self.current_obs = self.observe(venv.observations(), true);
            self.primed = true;
        }
        let n = n_steps * n_envs;
        let mut out = Rollout {
            n_envs,
            n_steps,
            obs_dim,
            obs: Vec::with_capacity(n * obs_dim),
            raw_obs: (self.keep_raw_obs && self.obs_norm.is_some())
                .then(|| Vec::with_capacity(n * obs_dim)),
            actions: if discrete {
                Actions::Discrete(Vec::with_capacity(n))
            } else {
                Actions::Continuous {
                    values: Vec::with_capacity(n * act_dim),
                    action_dim: act_dim,
                }
            },
            log_probs: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            rewards: Vec::with_capacity(n),
            terminated: Vec::with_capacity(n),
            truncated: Vec::with_capacity(n),
            final_values: vec![0.0; n],
            last_values: Vec::new(),
            masks: venv.action_masks().map(|_| Vec::with_capacity(n * act_dim)),
            episodes: Vec::new(),
            regret: None,
        };
        // Final observations of truncated episodes, valued in one batch at the end.
        let mut final_obs: Vec<f32> = Vec::new();
        let mut final_index: Vec<usize> = Vec::new();
        let mut clipped = vec![0.0f32; if discrete { 0 } else { n_envs * act_dim }];
        // gSDE: one noise matrix per copy, fresh at the start of the rollout
        // and every `sde_sample_freq` steps (Raffin et al. 2021, §3; SB3's
        // reset_noise(n_envs)); `None` for every other policy (no RNG draw).
        let mut sde_noise = policy.sample_sde_noise(n_envs, rng)?;
        for step in 0..n_steps {
            let f = self.sde_sample_freq;
            if sde_noise.is_some() && f > 0 && step > 0 && step as i64 % f == 0 {
                sde_noise = policy.sample_sde_noise(n_envs, rng)?;
            }
            let obs_t = policy.obs_tensor(&self.current_obs)?;
            let mask = match venv.action_masks() {
                Some(m) => Some(ActionMask::new(m.to_vec(), act_dim)?),
                None => None,
            };
            let (dist, actions) = match &sde_noise {
                Some(noise) => policy.sample_with_sde_noise(&obs_t, noise)?,
                None => {
                    let dist = policy.dist_detached(&obs_t, mask.as_ref())?;
                    let actions = dist.sample(rng)?;
                    (dist, actions)
                }
            };
            let log_p = dist
                .log_prob(&actions.to_tensor(policy.dtype(), policy.device())?)?
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle_err("log-probabilities to host"))?;
            let v = values_of(value, &obs_t)?;
            out.obs.extend_from_slice(&self.current_obs);
            if let Some(raw) = &mut out.raw_obs {
                raw.extend_from_slice(venv.observations());
            }
            out.log_probs.extend_from_slice(&log_p);
            out.values.extend_from_slice(&v);
            if let (Some(all), Some(m)) = (&mut out.masks, venv.action_masks()) {
                all.extend_from_slice(m);
            }
            match (&actions, &mut out.actions) {
                (Actions::Discrete(a), Actions::Discrete(all)) => {
                    all.extend_from_slice(a);
                    venv.step(EnvActions::Discrete(a))?;
                }
                (
                    Actions::Continuous { values: a, .. },
                    Actions::Continuous { values: all, .. },
                ) => {
                    all.extend_from_slice(a);
                    clip_to_box(&action_space, a, &mut clipped);
                    venv.step(EnvActions::Continuous(&clipped))?;
                }
                _ => unreachable!("the policy's action kind matches the space, checked above"),
            }
            let t_base = out.rewards.len();
            let mut rewards: Vec<f32> = venv.rewards().iter().map(|&r| r as f32).collect();
            let done: Vec<bool> = (0..n_envs)
                .map(|e| venv.terminated()[e] || venv.truncated()[e])
                .collect();
            if let Some(scaler) = &mut self.reward_scaler {
                scaler.scale(&mut rewards, &done);
            }
            out.rewards.extend_from_slice(&rewards);
            out.terminated.extend_from_slice(venv.terminated());
            out.truncated.extend_from_slice(venv.truncated());
            for (e, info) in venv.infos().iter().enumerate() {
                if let Some(ep) = info.episode {
                    out.episodes.push(ep);
                }
                if let (Some(best), Some(got)) =
                    (info.optimal_expected_reward, info.expected_reward)
                {
                    let (sum, count) = out.regret.get_or_insert((0.0, 0));
                    *sum += best - got;
                    *count += 1;
                }
                if venv.truncated()[e] && !venv.terminated()[e] {
                    let f = venv
                        .final_observation(e)
                        .expect("a truncated copy has a final observation");
                    final_obs.extend_from_slice(&self.observe(f, false));
                    final_index.push(t_base + e);
                }
            }
            self.current_obs = self.observe(venv.observations(), true);
        }
        let last = policy.obs_tensor(&self.current_obs)?;
        out.last_values = values_of(value, &last)?;
        if !final_index.is_empty() {
            let v = values_of(value, &policy.obs_tensor(&final_obs)?)?;
            for (i, v) in final_index.into_iter().zip(v) {
                out.final_values[i] = v;
            }
        }
        Ok(out)
    }
}

/// V(s) for a batch, on the host.
fn values_of(value: &ValueNet, obs: &Tensor) -> Result<Vec<f32>> {
    value
        .forward_detached(obs)?
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_err("values to host"))
}

/// Clip each copy's continuous action to the box (the sampled, unclipped
/// action is what the log-probability refers to, as in Stable-Baselines3).
fn clip_to_box(space: &Space, actions: &[f32], out: &mut [f32]) {
    let Space::Box { low, high, .. } = space else {
        return;
    };
    let d = low.len();
    for (i, (o, &a)) in out.iter_mut().zip(actions).enumerate() {
        *o = a.clamp(low[i % d], high[i % d]);
    }
}

/// Wrap a candle error with what was being done.
pub(crate) fn candle_err(context: &'static str) -> impl Fn(candle_core::Error) -> OptimError {
    move |source| {
        OptimError::Policy(klrl_policy::PolicyError::Candle {
            context: context.to_string(),
            source,
        })
    }
}
