//! Evaluating a policy: run whole episodes and report their returns.

use candle_core::Tensor;
use klrl_envs::{Action, Env, Space};
use klrl_policy::{ActionMask, Actions, Policy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::normalize::ObsNormalizer;

/// Returns and lengths of evaluation episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Undiscounted return of each episode.
    pub returns: Vec<f64>,
    /// Length of each episode.
    pub lengths: Vec<u64>,
}

impl Evaluation {
    /// Number of episodes.
    pub fn episodes(&self) -> usize {
        self.returns.len()
    }
    /// Mean return.
    pub fn mean_return(&self) -> f64 {
        mean(&self.returns)
    }
    /// Population standard deviation of the returns.
    pub fn std_return(&self) -> f64 {
        let m = self.mean_return();
        (self.returns.iter().map(|r| (r - m).powi(2)).sum::<f64>()
            / self.returns.len().max(1) as f64)
            .sqrt()
    }
    /// Mean episode length.
    pub fn mean_length(&self) -> f64 {
        mean(&self.lengths.iter().map(|&l| l as f64).collect::<Vec<_>>())
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Run `episodes` episodes of `env` with `policy`: the most probable action
/// (or the mean) when `deterministic`, sampled actions otherwise. Episode k is
/// reset with seed `seed + k`, and sampling uses an RNG seeded with `seed`, so
/// an evaluation is reproducible. Observations go through `obs_norm` (frozen)
/// when the policy was trained with normalisation; continuous actions are
/// clipped to the action box. An episode that never ends is cut at
/// `max_steps` steps.
pub fn evaluate(
    policy: &dyn Policy,
    obs_norm: Option<&ObsNormalizer>,
    env: &mut dyn Env,
    episodes: usize,
    deterministic: bool,
    seed: u64,
    max_steps: u64,
) -> Result<Evaluation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let space = env.action_space().clone();
    let mut out = Evaluation {
        returns: Vec::with_capacity(episodes),
        lengths: Vec::with_capacity(episodes),
    };
    let mut raw = Vec::new();
    let mut clipped = Vec::new();
    for k in 0..episodes {
        env.reset(Some(seed.wrapping_add(k as u64)), &mut raw)?;
        let (mut ret, mut len) = (0.0, 0u64);
        loop {
            let mut obs = raw.clone();
            if let Some(n) = obs_norm {
                n.normalize(&mut obs);
            }
            let obs_t: Tensor = policy.obs_tensor(&obs)?;
            let mask = match (env.action_mask(), space.n()) {
                (Some(m), Some(n)) => Some(ActionMask::new(m.to_vec(), n)?),
                _ => None,
            };
            let dist = policy.dist_detached(&obs_t, mask.as_ref())?;
            let actions = if deterministic {
                dist.mode()?
            } else {
                dist.sample(&mut rng)?
            };
            let step =
                match (&actions, &space) {
                    (Actions::Discrete(a), Space::Discrete { .. }) => {
                        env.step(Action::Discrete(a[0]), &mut raw)?
                    }
                    (Actions::Continuous { values, .. }, Space::Box { low, high, .. }) => {
                        clipped.clear();
                        clipped.extend(
                            values
                                .iter()
                                .zip(low.iter().zip(high))
                                .map(|(&a, (&l, &h))| a.clamp(l, h)),
                        );
                        env.step(Action::Continuous(&clipped), &mut raw)?
                    }
                    _ => return Err(OptimError::Mismatch(
                        "the policy's action kind does not match the environment's action space"
                            .into(),
                    )),
                };
            ret += step.reward;
            len += 1;
            if step.done() || len >= max_steps {
                break;
            }
        }
        out.returns.push(ret);
        out.lengths.push(len);
    }
    Ok(out)
}
