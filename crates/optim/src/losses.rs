//! Pieces shared by the first-order optimisers (PPO, the vanilla policy
//! gradient): the parameter list one Adam steps, the value loss, and reading
//! scalar losses to the host. No algorithm imports another; they all import
//! from here and from [`crate::measure`].

use candle_core::{DType, Tensor, Var};
use klrl_policy::{Policy, ValueNet};

use crate::batch::MiniBatch;
use crate::error::Result;
use crate::rollout::candle_err;

/// The parameters one Adam steps: the policy's, then the value function's
/// that are not the policy's (all of them for a separate network, the head on
/// a shared trunk), so that shared parameters are counted once.
pub fn trainable_vars(policy: &dyn Policy, value: &ValueNet) -> Vec<Var> {
    let mut vars = policy.vars();
    vars.extend(value.unshared_vars());
    vars
}

/// The value loss Ê[(R − V(s))²] (Stable-Baselines3's, without a ½). With
/// `clip_vf = Some(c)`, the prediction is also clipped to V_old ± c and the
/// larger of the two squared errors is taken per sample (CleanRL's
/// `clip_vloss`; Huang et al. detail 9).
pub fn value_loss(value: &ValueNet, mb: &MiniBatch, clip_vf: Option<f64>) -> Result<Tensor> {
    let e = candle_err("value loss");
    let v = value.forward(&mb.obs)?;
    let unclipped = (&v - &mb.returns).and_then(|d| d.sqr()).map_err(&e)?;
    let per_sample = match clip_vf {
        None => unclipped,
        Some(c) => {
            // V_clip = V_old + clip(V − V_old, −c, c)
            let clipped = (&v - &mb.old_values)
                .and_then(|d| d.clamp(-c, c))
                .and_then(|d| d + &mb.old_values)
                .and_then(|v| (v - &mb.returns)?.sqr())
                .map_err(&e)?;
            unclipped.maximum(&clipped).map_err(&e)?
        }
    };
    per_sample.mean_all().map_err(e)
}

/// Reads scalar tensors to the host in one transfer.
pub fn scalars_to_host(scalars: &[&Tensor]) -> Result<Vec<f64>> {
    let e = candle_err("losses to host");
    let flat = scalars
        .iter()
        .map(|t| t.reshape(1))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(&e)?;
    Tensor::cat(&flat, 0)
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(e)
}
