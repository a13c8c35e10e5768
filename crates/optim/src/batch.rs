//! The training data of one update, and the minibatch tensors cut from it.

use candle_core::Tensor;
use klrl_policy::{ActionMask, Actions, Policy};

use crate::error::Result;
use crate::gae::Advantages;
use crate::normalize::normalize_advantages;
use crate::rollout::{candle_err, Rollout};

/// One update's worth of transitions on the host: a rollout with its
/// advantages and returns.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Observation width.
    pub obs_dim: usize,
    /// Observations, `len · obs_dim`.
    pub obs: Vec<f32>,
    /// Actions taken.
    pub actions: Actions,
    /// log π_old(a | s) at collection time.
    pub old_log_probs: Vec<f32>,
    /// V_old(s) at collection time.
    pub old_values: Vec<f32>,
    /// GAE advantages Â (not normalised).
    pub advantages: Vec<f32>,
    /// Value targets Â + V_old.
    pub returns: Vec<f32>,
    /// Action masks, `len · n_actions`, when the environment has them.
    pub masks: Option<Vec<bool>>,
    /// Fraction of the run's steps done before this update, in [0, 1):
    /// learning-rate and clip-range annealing use `1 − progress`.
    pub progress: f64,
    /// Index of this update (0-based).
    pub update: u64,
    /// π_ref at every state of the batch (detached), when the learner has a
    /// `[algo.reference]`: evaluated once per update by the trainer
    /// ([`crate::Trainer`]), rows cut for minibatches.
    pub reference: Option<klrl_policy::Dist>,
}

impl Batch {
    /// Assemble a batch from a rollout and its advantages.
    pub fn new(rollout: Rollout, adv: Advantages, progress: f64, update: u64) -> Self {
        Batch {
            obs_dim: rollout.obs_dim,
            obs: rollout.obs,
            actions: rollout.actions,
            old_log_probs: rollout.log_probs,
            old_values: rollout.values,
            advantages: adv.advantages,
            returns: adv.returns,
            masks: rollout.masks,
            progress,
            update,
            reference: None,
        }
    }

    /// Number of transitions.
    pub fn len(&self) -> usize {
        self.old_log_probs.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tensors for the transitions `idx` (all of them when `None`), with the
    /// advantages normalised over those transitions when `normalize_adv`.
    pub fn minibatch(
        &self,
        policy: &dyn Policy,
        idx: Option<&[usize]>,
        normalize_adv: bool,
    ) -> Result<MiniBatch> {
        let all: Vec<usize>;
        let idx = match idx {
            Some(i) => i,
            None => {
                all = (0..self.len()).collect();
                &all
            }
        };
        let d = self.obs_dim;
        let mut obs = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            obs.extend_from_slice(&self.obs[i * d..(i + 1) * d]);
        }
        let pick = |v: &[f32]| idx.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let mut adv = pick(&self.advantages);
        if normalize_adv {
            normalize_advantages(&mut adv);
        }
        let actions = match &self.actions {
            Actions::Discrete(a) => Actions::Discrete(idx.iter().map(|&i| a[i]).collect()),
            Actions::Continuous { values, action_dim } => {
                let k = *action_dim;
                let mut v = Vec::with_capacity(idx.len() * k);
                for &i in idx {
                    v.extend_from_slice(&values[i * k..(i + 1) * k]);
                }
                Actions::Continuous {
                    values: v,
                    action_dim: k,
                }
            }
        };
        let mask = match (&self.masks, &self.actions) {
            (Some(m), Actions::Discrete(a)) if !a.is_empty() => {
                let n = m.len() / a.len();
                let mut rows = Vec::with_capacity(idx.len() * n);
                for &i in idx {
                    rows.extend_from_slice(&m[i * n..(i + 1) * n]);
                }
                Some(ActionMask::new(rows, n)?)
            }
            _ => None,
        };
        let (dtype, device) = (policy.dtype(), policy.device());
        let vec1 = |v: Vec<f32>| -> Result<Tensor> {
            let n = v.len();
            Tensor::from_vec(v, n, device)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(candle_err("minibatch to tensor"))
        };
        Ok(MiniBatch {
            len: idx.len(),
            obs: policy.obs_tensor(&obs)?,
            actions: actions.to_tensor(dtype, device)?,
            old_log_probs: vec1(pick(&self.old_log_probs))?,
            old_values: vec1(pick(&self.old_values))?,
            returns: vec1(pick(&self.returns))?,
            advantages: vec1(adv)?,
            mask,
            reference: match (&self.reference, idx.len() == self.len()) {
                (Some(r), true) if all_rows(idx) => Some(r.clone()),
                (Some(r), _) => Some(crate::measure::select_rows(r, idx)?),
                (None, _) => None,
            },
        })
    }
}

/// Tensors of a set of transitions, in the policy's dtype and device.
#[derive(Debug, Clone)]
pub struct MiniBatch {
    /// Number of transitions B.
    pub len: usize,
    /// Observations `[B, obs_dim]`.
    pub obs: Tensor,
    /// Actions (U32 `[B]` or `[B, d]`).
    pub actions: Tensor,
    /// log π_old(a | s), `[B]`.
    pub old_log_probs: Tensor,
    /// V_old(s), `[B]`.
    pub old_values: Tensor,
    /// Value targets, `[B]`.
    pub returns: Tensor,
    /// Advantages (normalised if asked), `[B]`.
    pub advantages: Tensor,
    /// Action masks of the B states.
    pub mask: Option<ActionMask>,
    /// π_ref at the B states (detached), when the batch has it.
    pub reference: Option<klrl_policy::Dist>,
}

/// Whether `idx` is 0, 1, …, len − 1 in order.
fn all_rows(idx: &[usize]) -> bool {
    idx.iter().enumerate().all(|(i, &j)| i == j)
}
