//! The value loss and its gradient by the value network's own reverse pass,
//! shared by PPO, the vanilla policy gradient (for a separate value network
//! without value clipping) and TRPO's critic fit.

use candle_core::{DType, Tensor};
use klrl_policy::{MlpLinearization, ValueNet};

use crate::error::Result;
use crate::rollout::candle_err;

/// The value loss mean((V(s) − R)²) over the rows of `obs [B, obs_dim]` /
/// `returns [B]` and its gradient with respect to
/// [`ValueNet::unshared_vars`] (flat order).
///
/// The gradient is the reverse pass of the network linearised at the
/// current parameters: with u = ∂loss/∂V = 2 (V − R) / B, it is Jᵀu
/// ([`klrl_policy::MlpLinearization::vjp`]), the gradient `backward()` would
/// give, without building candle's graph (about 4× faster for the 64-64
/// value nets of classic control). With a shared trunk only the head's part
/// is returned.
pub fn value_loss_and_grad(
    value: &ValueNet,
    obs: &Tensor,
    returns: &Tensor,
) -> Result<(f64, Vec<f64>)> {
    let mut grad = Vec::new();
    let loss = value_loss_and_grad_into(value, obs, returns, &mut grad)?;
    Ok((loss, grad))
}

/// [`value_loss_and_grad`] with the gradient written into `grad` (cleared
/// first; its capacity is reused, so a step loop allocates it once).
pub fn value_loss_and_grad_into(
    value: &ValueNet,
    obs: &Tensor,
    returns: &Tensor,
    grad: &mut Vec<f64>,
) -> Result<f64> {
    let (loss, u, lin) = value_loss_and_cotangent(value, obs, returns)?;
    grad.clear();
    lin.vjp_flat_into(&u, None, grad)?;
    keep_unshared(value, grad);
    Ok(loss)
}

/// [`value_loss_and_grad_into`] for an f32 CPU value network, the gradient
/// (`grad` set to it) in f32 as computed (no widening pass; half the memory for the optimiser
/// to read, see [`crate::adam::GradPart`]); the same values.
///
/// Errors: as [`value_loss_and_grad_into`]; a network that is not f32 on
/// the CPU.
pub fn value_loss_and_grad_into_f32(
    value: &ValueNet,
    obs: &Tensor,
    returns: &Tensor,
    grad: &mut Vec<f32>,
) -> Result<f64> {
    let (loss, u, lin) = value_loss_and_cotangent(value, obs, returns)?;
    // Every entry is written: a buffer of the right length is not zeroed.
    grad.resize(lin.num_params(), 0.0);
    lin.vjp_flat_f32_into(&u, None, grad)?;
    keep_unshared(value, grad);
    Ok(loss)
}

/// The value loss mean((V − R)²), its cotangent u = 2 (V − R) / B at the
/// network's output and the network's linearisation at `obs`.
fn value_loss_and_cotangent(
    value: &ValueNet,
    obs: &Tensor,
    returns: &Tensor,
) -> Result<(f64, Tensor, MlpLinearization)> {
    let e = candle_err("value loss");
    let b = obs.dims().first().copied().unwrap_or(0).max(1) as f64;
    let (v, lin) = value.mlp().linearize(obs)?;
    let diff = v
        .broadcast_sub(&returns.unsqueeze(1).map_err(&e)?)
        .map_err(&e)?;
    let diff_host = diff
        .flatten_all()
        .and_then(|d| d.to_dtype(DType::F64))
        .and_then(|d| d.to_vec1::<f64>())
        .map_err(&e)?;
    let loss = diff_host.iter().map(|d| d * d).sum::<f64>() / b;
    let u = diff.affine(2.0 / b, 0.0).map_err(&e)?;
    Ok((loss, u, lin))
}

/// A shared trunk's part of the gradient is the policy's: keep the head's
/// (the tail).
fn keep_unshared<T>(value: &ValueNet, grad: &mut Vec<T>) {
    let own = klrl_policy::flat::flat_len(&value.unshared_vars());
    grad.drain(..grad.len() - own);
}

/// `main()` on this thread while `side()` runs as a task of the current
/// rayon pool: on a second thread when the pool has one (the trainer's
/// `train.threads` ≥ 2), after `main` on one thread. For two computations
/// that share nothing each computes exactly what it computes alone, so the
/// results are bit-identical for any thread count.
pub fn alongside<A, B: Send>(side: impl FnOnce() -> B + Send, main: impl FnOnce() -> A) -> (A, B) {
    let mut out = None;
    let a = rayon::in_place_scope(|s| {
        s.spawn(|_| out = Some(side()));
        main()
    });
    // in_place_scope returns only after every task it spawned has run.
    (a, out.expect("the scope ran its task"))
}

/// `policy_part()` on this thread while [`value_loss_and_grad_into`]
/// (into `value_grad`, then each entry multiplied by `scale`, e.g. the loss's
/// c_v) runs [`alongside`]: the policy's and the value network's gradients
/// at the same time on two threads (the networks share no parameter).
/// Returns the policy part's result and the value loss (unscaled).
///
/// Below [`ALONGSIDE_MIN_WORK`] multiply-adds (minibatch rows × value
/// parameters) both parts run on this thread, one after the other: handing
/// so little work to another thread costs more than it saves. The results
/// are the same either way.
pub fn alongside_value_grad<R>(
    value: &ValueNet,
    obs: &Tensor,
    returns: &Tensor,
    scale: f64,
    value_grad: &mut Vec<f64>,
    policy_part: impl FnOnce() -> R,
) -> (R, Result<f64>) {
    let value_part = || {
        let loss = value_loss_and_grad_into(value, obs, returns, value_grad)?;
        value_grad.iter_mut().for_each(|g| *g *= scale);
        Ok(loss)
    };
    alongside_value_part(value, obs, value_part, policy_part)
}

/// `policy_part()` on this thread and `value_part()` (the value network's
/// loss and gradient at `obs`) [`alongside`], or both here one after the
/// other below [`ALONGSIDE_MIN_WORK`] (rows × value parameters): the rule
/// of [`alongside_value_grad`] for any value part.
pub fn alongside_value_part<R, V: Send>(
    value: &ValueNet,
    obs: &Tensor,
    value_part: impl FnOnce() -> V + Send,
    policy_part: impl FnOnce() -> R,
) -> (R, V) {
    let rows = obs.dims().first().copied().unwrap_or(0);
    if rows.saturating_mul(value.num_params()) < ALONGSIDE_MIN_WORK {
        let r = policy_part();
        return (r, value_part());
    }
    alongside(value_part, policy_part)
}

/// The least work (rows × value parameters) for which
/// [`alongside_value_grad`] hands the value gradient to a second thread:
/// 2^16 ≈ 65k multiply-adds. Measured on the 2-core machine with the
/// trainer's polling worker (`crate::keep_warm`; `klrl bench
/// --set train.threads=2`, update phase, 2026-12-02): with the hand-off at
/// 2^19, SB3's default PPO (minibatches of 64 rows, 64-64 networks,
/// 64 × 4.4k ≈ 0.28M) kept the value gradient on one thread and took
/// 1.62–1.68 s; handing it over took 1.25–1.32 s. The MovieRec, Acrobot
/// and Pendulum-gSDE PPO configs (minibatches of 64) gained 13–17 %. Before
/// the worker polled, waking it cost more than this work (SB3's default was
/// 12 % slower handed over).
pub const ALONGSIDE_MIN_WORK: usize = 1 << 16;
