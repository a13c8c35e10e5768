//! PPO's clipped surrogate on a categorical policy, and its gradient in the
//! logits, computed on host memory: the loss head of [`crate::Ppo`]'s
//! minibatch step for the common case (objective `clip`, no entropy bonus,
//! no action mask, no reference term, no KL asked for, CPU f32 or f64).
//!
//! For logits `z [N, A]`, actions `a`, log π_old(a|s) and advantages Â:
//!
//! 1. log π_θ(·|s) = z − max z − log Σ exp(z − max z)   (log-softmax);
//! 2. r = exp(clamp(log π_θ(a|s) − log π_old(a|s), ±LOG_RATIO_MAX))   (eq. 6);
//! 3. L^CLIP = Ê[min(r Â, clip(r, 1 − ε, 1 + ε) Â)]   (eq. 7), the policy
//!    loss −L^CLIP, and the clip fraction Ê[|r − 1| > ε];
//! 4. ∂(−L^CLIP)/∂z by the chain rule back through 3, 2 and 1: per sample,
//!    ∂/∂r min(r Â, clip(r) Â) = Â where r Â is the minimum and r is not
//!    clipped (Â/2 from each side where the two terms are equal, the usual
//!    case inside the range), 0 where the clipped term is the smaller;
//!    ∂r/∂log p = r inside ±LOG_RATIO_MAX; ∂log p_a/∂z_j = δ_aj − p_j,
//!    which candle's backward forms as δ_aj·g − (g/Σ) exp(z_j − max z) (plus
//!    the max's path, which cancels in exact arithmetic but not in bits);
//!    each sample's term carries the mean's −1/n.
//!
//! **Same bits as the candle graph.** [`crate::Ppo`]'s general path builds
//! these terms with candle 0.11.1 ops and differentiates them with its
//! `backward()`; this module performs that computation's floating-point
//! operations, in its order, on plain slices — about 15 candle ops and their
//! backward (each an allocation and a dispatch) become one pass over the
//! rows. Matching it means matching, besides the ops themselves:
//!
//! - `candle_nn::ops::log_softmax` is composite: `max_keepdim` (the first
//!   maximum under `<`), `broadcast_sub`, `exp`, `sum_keepdim`, `log`,
//!   `broadcast_sub`; its backward runs through each of those ops;
//! - a scalar (a clamp bound, ε) is converted to the tensor's dtype with
//!   `as`, `mean_all` is a sum times `1/n` (an `affine`: `x · m + 0`);
//! - candle's CPU sums (`sum_keepdim`, `sum_all`) of f32 go through its
//!   `vec_sum`, which with AVX2 keeps 32 partial sums and adds them as a
//!   tree (`avx2_vec_sum` below); f64 sums in order;
//! - `minimum` / `maximum` pass the gradient to the argument equal to the
//!   result, halved when both are (candle's rule), and every gradient
//!   reaches its tensor as `0 + g` (candle's `GradStore` starts from
//!   zeros), which turns −0 into +0.
//!
//! Where the CPU's sum is one this module does not reproduce (ARM's NEON
//! path), [`supported`] says no and the caller keeps candle's graph.
//! `ppo/clip_head_tests.rs` checks the two against each other bit for bit.

use candle_core::{DType, Device, Tensor, WithDType};
use klrl_policy::PolicyError;

use crate::error::{OptimError, Result};
use crate::ppo::LOG_RATIO_MAX;
use crate::rollout::candle_err;

/// What the head computes for one minibatch.
#[derive(Debug, Clone)]
pub struct ClipHead {
    /// −L^CLIP (the objective of the step without an entropy bonus), in the
    /// logits' dtype, widened to f64.
    pub policy_loss: f64,
    /// The fraction of samples with |r − 1| > ε.
    pub clip_frac: f64,
    /// ∂(−L^CLIP)/∂z, `[N, A]`, of the logits' dtype and device.
    pub d_logits: Tensor,
}

/// Whether the head runs for logits of this dtype on this device: CPU, f32
/// or f64, and (for f32) a CPU whose sums this module reproduces (x86 —
/// with or without AVX2).
pub fn supported(dtype: DType, device: &Device) -> bool {
    let arch = cfg!(any(target_arch = "x86", target_arch = "x86_64"));
    device.is_cpu() && (dtype == DType::F64 || (dtype == DType::F32 && arch))
}

/// The clipped surrogate of the logits `logits [N, A]` (a contiguous CPU
/// tensor), the actions `actions` (U32 `[N]`), `old_log_probs` and
/// `advantages` (`[N]`, of the logits' dtype) with clip range `clip_eps`, and
/// its gradient in the logits.
///
/// Errors: [`OptimError::Mismatch`] for shapes or dtypes that do not fit (or
/// a dtype [`supported`] rejects); [`PolicyError::ActionOutOfRange`] for an
/// action ≥ A.
pub fn clip_head(
    logits: &Tensor,
    actions: &Tensor,
    old_log_probs: &Tensor,
    advantages: &Tensor,
    clip_eps: f64,
) -> Result<ClipHead> {
    let (n, a) = logits.dims2().map_err(candle_err("clip head logits"))?;
    let dtype = logits.dtype();
    let fits = n > 0
        && actions.dims() == [n]
        && actions.dtype() == DType::U32
        && old_log_probs.dims() == [n]
        && advantages.dims() == [n]
        && old_log_probs.dtype() == dtype
        && advantages.dtype() == dtype
        && supported(dtype, logits.device());
    if !fits {
        return Err(OptimError::Mismatch(format!(
            "clip head: logits {:?} {dtype:?}, actions {:?} {:?}, old log-probs {:?} {:?}, \
             advantages {:?} {:?}",
            logits.dims(),
            actions.dims(),
            actions.dtype(),
            old_log_probs.dims(),
            old_log_probs.dtype(),
            advantages.dims(),
            advantages.dtype()
        )));
    }
    let e = candle_err("clip head to host");
    let acts = actions.to_vec1::<u32>().map_err(&e)?;
    if let Some(&max) = acts.iter().max().filter(|&&m| m as usize >= a) {
        return Err(PolicyError::ActionOutOfRange {
            action: u64::from(max),
            n_actions: a,
        }
        .into());
    }
    let inputs = |t: &Tensor| t.flatten_all().map_err(&e);
    let (z, old, adv) = (inputs(logits)?, inputs(old_log_probs)?, inputs(advantages)?);
    let head = match dtype {
        DType::F32 => Host::<f32>::read(&z, &acts, &old, &adv, a)?.run(clip_eps),
        _ => Host::<f64>::read(&z, &acts, &old, &adv, a)?.run(clip_eps),
    };
    let (policy_loss, clip_frac, grad) = head;
    let d_logits = match grad {
        Grad::F32(g) => Tensor::from_vec(g, (n, a), logits.device()),
        Grad::F64(g) => Tensor::from_vec(g, (n, a), logits.device()),
    }
    .map_err(candle_err("clip head gradient"))?;
    Ok(ClipHead {
        policy_loss,
        clip_frac,
        d_logits,
    })
}

/// The gradient in the logits, of the run's dtype.
enum Grad {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// The inputs on the host.
struct Host<'a, T> {
    z: Vec<T>,
    actions: &'a [u32],
    old: Vec<T>,
    adv: Vec<T>,
    n_actions: usize,
}

impl<'a, T: Real> Host<'a, T> {
    fn read(
        z: &Tensor,
        actions: &'a [u32],
        old: &Tensor,
        adv: &Tensor,
        n_actions: usize,
    ) -> Result<Self> {
        let e = candle_err("clip head to host");
        Ok(Host {
            z: z.to_vec1::<T>().map_err(&e)?,
            actions,
            old: old.to_vec1::<T>().map_err(&e)?,
            adv: adv.to_vec1::<T>().map_err(&e)?,
            n_actions,
        })
    }

    /// (−L^CLIP, clip fraction, ∂(−L^CLIP)/∂z).
    fn run(&self, clip_eps: f64) -> (f64, f64, Grad) {
        let (n, a) = (self.actions.len(), self.n_actions);
        let zero = T::ZERO;
        // The scalars as candle converts them to the tensors' dtype.
        let (lo_log, hi_log) = (T::from_f64(-LOG_RATIO_MAX), T::from_f64(LOG_RATIO_MAX));
        let (lo, hi) = (T::from_f64(1.0 - clip_eps), T::from_f64(1.0 + clip_eps));
        let (eps, minus_one) = (T::from_f64(clip_eps), T::from_f64(-1.0));
        // mean_all = sum · (1/n) + 0
        let inv_n = T::from_f64(1.0 / n as f64);
        // ∂(−mean c)/∂c_i: neg's backward 0 − 1, the mean's affine, each
        // gradient added to a zero.
        let g_c = zero + ((zero - T::ONE) * inv_n + zero);

        let mut surrogate = Vec::with_capacity(n);
        let mut clipped = Vec::with_capacity(n);
        let mut grad = vec![zero; n * a];
        // One row's exp(z − max z), and the row of a broadcast's gradient.
        let mut e = vec![zero; a];
        let mut row = vec![zero; a];
        for i in 0..n {
            let z = &self.z[i * a..(i + 1) * a];
            let act = self.actions[i] as usize;
            let (old, adv) = (self.old[i], self.adv[i]);

            // 1. log-softmax: log p = (z − max z) − log Σ exp(z − max z)
            let mut max = z[0];
            for &s in z {
                if max < s {
                    max = s;
                }
            }
            for (e, &z) in e.iter_mut().zip(z) {
                *e = (z - max).exp();
            }
            let sum = T::sum(&e);
            let log_sum = sum.ln();
            let log_p = (z[act] - max) - log_sum;

            // 2. r = exp(clamp(log π_θ(a|s) − log π_old(a|s), ±LOG_RATIO_MAX))
            let d = log_p - old;
            let d_lo = maximum(d, lo_log);
            let d_clamped = minimum(d_lo, hi_log);
            let r = d_clamped.exp();

            // 3. min(r Â, clip(r, 1 − ε, 1 + ε) Â)  (eq. 7)
            let unclipped = r * adv;
            let r_lo = maximum(r, lo);
            let r_clipped = minimum(r_lo, hi);
            let clipped_adv = r_clipped * adv;
            let c = minimum(clipped_adv, unclipped);
            surrogate.push(c);
            // |r − 1| > ε, with r − 1 as candle's affine(1, −1)
            clipped.push(T::indicator((r * T::ONE + minus_one).abs() > eps));

            // 4. backward, in candle's topological order. The minimum's
            // gradient goes to the argument(s) equal to it:
            let (g_clipped_adv, g_unclipped) = min_max_grads(c, clipped_adv, unclipped, g_c);
            let g_r_clipped = zero + (zero + g_clipped_adv) * adv;
            let (g_r_lo, _) = min_max_grads(r_clipped, r_lo, hi, g_r_clipped);
            let (g_r_from_clip, _) = min_max_grads(r_lo, r, lo, zero + g_r_lo);
            // ∂/∂r of both terms: Â from r Â, then the clipped branch
            let g_r = (zero + (zero + g_unclipped) * adv) + g_r_from_clip;
            // ∂exp(x)/∂x = exp(x)
            let g_d_clamped = zero + g_r * r;
            let (g_d_lo, _) = min_max_grads(d_clamped, d_lo, hi_log, g_d_clamped);
            let (g_d, _) = min_max_grads(d_lo, d, lo_log, zero + g_d_lo);
            // ∂/∂log p(a|s): d = log p − log π_old; log p(a|s) is gathered
            // from the row (scatter_add into zeros).
            let g_log_p = zero + g_d;

            // Log-softmax backward: log p = δ − B(log Σ exp δ), δ = z − B(max).
            // ∂/∂δ_j from log p: the gathered entry only.
            let g = &mut grad[i * a..(i + 1) * a];
            for (j, g) in g.iter_mut().enumerate() {
                *g = if j == act { zero + g_log_p } else { zero };
            }
            // ∂/∂log Σ: −Σ_j ∂/∂log p_j (the broadcast's row sum)
            for (b, &g) in row.iter_mut().zip(g.iter()) {
                *b = zero - g;
            }
            let g_log_sum = zero + T::sum(&row);
            // ∂/∂Σ = ∂/∂log Σ / Σ, and ∂/∂δ_j += ∂/∂Σ · exp δ_j
            let g_sum = zero + g_log_sum / sum;
            for (g, &e) in g.iter_mut().zip(e.iter()) {
                *g = (zero + *g) + (zero + g_sum) * e;
            }
            // δ = z − B(max): ∂/∂z_j = ∂/∂δ_j, ∂/∂max = −Σ_j ∂/∂δ_j
            for (b, g) in row.iter_mut().zip(g.iter_mut()) {
                *b = zero - *g;
                *g = zero + *g;
            }
            let g_max = zero + T::sum(&row);
            // max: to the entries equal to it
            for (g, &z) in g.iter_mut().zip(z) {
                *g += T::indicator(max == z) * g_max;
            }
        }
        // −L^CLIP = −(Σ c · (1/n) + 0)
        let policy_loss = -(T::sum(&surrogate) * inv_n + zero);
        let clip_frac = T::sum(&clipped) * inv_n + zero;
        (policy_loss.to_f64(), clip_frac.to_f64(), T::grad(grad))
    }
}

/// candle's `maximum`: `if a < b { b } else { a }`.
fn maximum<T: Real>(a: T, b: T) -> T {
    if a < b {
        b
    } else {
        a
    }
}

/// candle's `minimum`: `if a > b { b } else { a }`.
fn minimum<T: Real>(a: T, b: T) -> T {
    if a > b {
        b
    } else {
        a
    }
}

/// The gradients candle's backward gives the two arguments of `out =
/// minimum(lhs, rhs)` (or `maximum`) for the gradient `g` at `out`: `g` to
/// the argument equal to `out`, `g / 2` to each when both are (the terms
/// that are then added to the arguments' gradients).
fn min_max_grads<T: Real>(out: T, lhs: T, rhs: T, g: T) -> (T, T) {
    let (m_lhs, m_rhs) = (T::indicator(out == lhs), T::indicator(out == rhs));
    // mask · g / (other mask + 1), the + 1 an affine (· 1 + 1)
    let to_lhs = (m_lhs * g) / (m_rhs * T::ONE + T::ONE);
    let to_rhs = (m_rhs * g) / (m_lhs * T::ONE + T::ONE);
    (to_lhs, to_rhs)
}

/// f32 or f64 with the operations of candle's CPU kernels.
trait Real:
    WithDType
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    /// `exp` as candle's `exp` (libm).
    fn exp(self) -> Self;
    /// `ln` as candle's `log` (libm).
    fn ln(self) -> Self;
    fn abs(self) -> Self;
    /// The sum of `xs` as candle's CPU `sum_keepdim` / `sum_all` over a
    /// contiguous last dimension computes it (`vec_reduce_sum`).
    fn sum(xs: &[Self]) -> Self;
    /// A comparison's result converted to the dtype: 1 or 0.
    fn indicator(b: bool) -> Self {
        if b {
            Self::ONE
        } else {
            Self::ZERO
        }
    }
    fn grad(g: Vec<Self>) -> Grad;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn sum(xs: &[f32]) -> f32 {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") {
            return avx2_vec_sum(xs);
        }
        xs.iter().fold(0.0, |acc, &x| acc + x)
    }
    fn grad(g: Vec<f32>) -> Grad {
        Grad::F32(g)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn sum(xs: &[f64]) -> f64 {
        xs.iter().fold(0.0, |acc, &x| acc + x)
    }
    fn grad(g: Vec<f64>) -> Grad {
        Grad::F64(g)
    }
}

/// candle 0.11.1's AVX2 `vec_sum` of f32 (`cpu/avx.rs`) in scalar code: four
/// 8-lane accumulators over blocks of 32, added pairwise (0+1, 2+3, then
/// the two), the lanes folded as `(l0+l4 + l1+l5) + (l2+l6 + l3+l7)`
/// (`_mm_add_ps` of the halves, two `_mm_hadd_ps`), then the remaining
/// elements one by one.
fn avx2_vec_sum(xs: &[f32]) -> f32 {
    const STEP: usize = 32;
    let np = xs.len() & !(STEP - 1);
    let mut acc = [[0.0f32; 8]; 4];
    for block in xs[..np].chunks_exact(STEP) {
        for (acc, lanes) in acc.iter_mut().zip(block.chunks_exact(8)) {
            for (a, &x) in acc.iter_mut().zip(lanes) {
                *a += x;
            }
        }
    }
    let mut x = [0.0f32; 8];
    for (l, x) in x.iter_mut().enumerate() {
        *x = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    let t0 = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    let mut sum = (t0[0] + t0[1]) + (t0[2] + t0[3]);
    for &x in &xs[np..] {
        sum += x;
    }
    sum
}
