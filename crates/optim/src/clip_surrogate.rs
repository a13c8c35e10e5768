//! PPO's clipped surrogate sample by sample on host memory, from
//! log π_θ(a|s), and its derivative in log π_θ(a|s), the floating-point
//! operations of candle 0.11.1's graph and backward in their order: what
//! the two host loss heads share, [`crate::clip_head`] (categorical
//! policies, log π from the logits) and [`crate::gaussian_clip_head`]
//! (diagonal Gaussian policies, log π from the means and log σ). Each head
//! computes log π_θ(a|s) its own way, hands it to `Surrogate::sample`, and
//! carries the returned ∂/∂log π back through its distribution.
//!
//! For log π_θ(a|s), log π_old(a|s) and Â of one sample:
//!
//! 1. r = exp(clamp(log π_θ(a|s) − log π_old(a|s), ±LOG_RATIO_MAX))  (eq. 6);
//! 2. c = min(r Â, clip(r, 1 − ε, 1 + ε) Â)  (eq. 7), and whether |r − 1| > ε;
//! 3. ∂(−Ê c)/∂log π_θ(a|s): −1/n through the mean, to the argument(s) of
//!    the minimum equal to it (halved at a tie), Â through either product,
//!    through the clamps where they let r through, r through the exp.
//!
//! Also here: the mean and coefficient of the reference term (`KlPenalty`;
//! each head computes the per-state KL), the CPU kernels the heads replay
//! (`Real`: libm's `exp` and `ln`, candle's row sums with its AVX2 order for
//! f32) and candle's `minimum` / `maximum` with their gradient rule.
//! [`supported`] says where these are candle's.

use candle_core::{DType, Device, WithDType};

use crate::ppo::LOG_RATIO_MAX;

/// Whether the host heads run for tensors of this dtype on this device:
/// CPU, f32 or f64, and (for f32) a CPU whose sums `Real::sum`
/// reproduces (x86 — with or without AVX2). Elsewhere (ARM's NEON sum) the
/// caller keeps candle's graph.
pub fn supported(dtype: DType, device: &Device) -> bool {
    let arch = cfg!(any(target_arch = "x86", target_arch = "x86_64"));
    device.is_cpu() && (dtype == DType::F64 || (dtype == DType::F32 && arch))
}

/// The clipped surrogate of a minibatch of `n` samples with clip range ε:
/// the constants as candle converts them to the dtype.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Surrogate<T> {
    lo_log: T,
    hi_log: T,
    lo: T,
    hi: T,
    eps: T,
    minus_one: T,
    inv_n: T,
    /// ∂(−Ê c)/∂c_i, as candle's backward forms it.
    g_c: T,
    /// Whether c is the clipped surrogate (eq. 7) or r Â (eq. 6, the KL
    /// penalised objectives without clipping).
    clips: bool,
}

/// One sample's terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample<T> {
    /// c = min(r Â, clip(r, 1 − ε, 1 + ε) Â).
    pub surrogate: T,
    /// 1 where |r − 1| > ε, else 0.
    pub clipped: T,
    /// ∂(−Ê c)/∂log π_θ(a|s): the gradient the log-probability tensor
    /// holds after candle's backward.
    pub d_log_p: T,
}

impl<T: Real> Surrogate<T> {
    /// The surrogate of `n` samples with clip range `clip_eps`.
    pub(crate) fn new(clip_eps: f64, n: usize) -> Self {
        let zero = T::ZERO;
        // mean_all = sum · (1/n) + 0 (candle's `Tensor / f64` is an affine)
        let inv_n = T::from_f64(1.0 / n as f64);
        Surrogate {
            // Scalars (a clamp bound, ε) as candle converts them: `as`.
            lo_log: T::from_f64(-LOG_RATIO_MAX),
            hi_log: T::from_f64(LOG_RATIO_MAX),
            lo: T::from_f64(1.0 - clip_eps),
            hi: T::from_f64(1.0 + clip_eps),
            eps: T::from_f64(clip_eps),
            minus_one: T::from_f64(-1.0),
            inv_n,
            // neg's backward 0 − 1, the mean's affine, each gradient added to
            // a zero (GradStore starts from zeros)
            g_c: zero + ((zero - T::ONE) * inv_n + zero),
            clips: true,
        }
    }

    /// The same with c = r Â, the unclipped surrogate (eq. 6) of the
    /// objectives that do not clip (`PpoObjective::clips`), when `clips` is
    /// false: no clip fraction (0), ∂c/∂r = Â.
    pub(crate) fn clipping(self, clips: bool) -> Self {
        Surrogate { clips, ..self }
    }

    /// One sample with log π_θ(a|s) = `log_p`, log π_old(a|s) = `old` and
    /// advantage `adv`.
    pub(crate) fn sample(&self, log_p: T, old: T, adv: T) -> Sample<T> {
        let zero = T::ZERO;
        // 1. r = exp(clamp(log π_θ(a|s) − log π_old(a|s), ±LOG_RATIO_MAX)),
        //    clamp = maximum then minimum
        let d = log_p - old;
        let d_lo = maximum(d, self.lo_log);
        let d_clamped = minimum(d_lo, self.hi_log);
        let r = d_clamped.exp();

        let (c, clipped, g_r) = if self.clips {
            // 2. min(r Â, clip(r, 1 − ε, 1 + ε) Â)  (eq. 7)
            let unclipped = r * adv;
            let r_lo = maximum(r, self.lo);
            let r_clipped = minimum(r_lo, self.hi);
            let clipped_adv = r_clipped * adv;
            let c = minimum(clipped_adv, unclipped);
            // |r − 1| > ε, with r − 1 as candle's affine(1, −1)
            let clipped = T::indicator((r * T::ONE + self.minus_one).abs() > self.eps);

            // 3. backward, in candle's topological order. The minimum's
            // gradient goes to the argument(s) equal to it:
            let (g_clipped_adv, g_unclipped) = min_max_grads(c, clipped_adv, unclipped, self.g_c);
            let g_r_clipped = zero + (zero + g_clipped_adv) * adv;
            let (g_r_lo, _) = min_max_grads(r_clipped, r_lo, self.hi, g_r_clipped);
            let (g_r_from_clip, _) = min_max_grads(r_lo, r, self.lo, zero + g_r_lo);
            // ∂/∂r of both terms: Â from r Â, then the clipped branch (two
            // terms added to a zero: the same in either order)
            let g_r = (zero + (zero + g_unclipped) * adv) + g_r_from_clip;
            (c, clipped, g_r)
        } else {
            // 2. r Â  (eq. 6); 3. its backward: the mean's gradient times Â
            (r * adv, zero, zero + self.g_c * adv)
        };
        // ∂exp(x)/∂x = exp(x)
        let g_d_clamped = zero + g_r * r;
        let (g_d_lo, _) = min_max_grads(d_clamped, d_lo, self.hi_log, g_d_clamped);
        let (g_d, _) = min_max_grads(d_lo, d, self.lo_log, zero + g_d_lo);
        // d = log p − log π_old: the subtraction's backward adds to a zero
        Sample {
            surrogate: c,
            clipped,
            d_log_p: zero + g_d,
        }
    }

    /// −L^CLIP = −(Σ c · (1/n) + 0) from the samples' `surrogate`s, in the
    /// dtype (what the reference term is added to).
    pub(crate) fn loss(&self, surrogate: &[T]) -> T {
        -(T::sum(surrogate) * self.inv_n + T::ZERO)
    }

    /// The clip fraction Σ clipped · (1/n) + 0, widened to f64.
    pub(crate) fn clip_frac(&self, clipped: &[T]) -> f64 {
        (T::sum(clipped) * self.inv_n + T::ZERO).to_f64()
    }
}

/// The reference term c Ê[KL(π_θ ‖ π_ref)] of a minibatch of `n` states
/// ([`crate::reference::RefTerm::penalty`]: `mean_all`, then `affine(c,
/// 0)`, added to −L^CLIP): the constants as candle converts them to the
/// dtype. Each head computes the per-state KL its own way and carries
/// `g_kl` back through it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KlPenalty<T> {
    coef: T,
    inv_n: T,
    /// ∂(c Ê[KL])/∂KL_s, as candle's backward forms it.
    pub g_kl: T,
}

impl<T: Real> KlPenalty<T> {
    /// The term with coefficient `coef` over `n` states.
    pub(crate) fn new(coef: f64, n: usize) -> Self {
        let zero = T::ZERO;
        let (coef, inv_n) = (T::from_f64(coef), T::from_f64(1.0 / n as f64));
        // The loss's `+` passes 0 + 1; the affine(c, 0)'s backward g · c + 0;
        // the mean's g · (1/n) + 0; each added to a zero (the reshapes and
        // the broadcast back to the states add zeros again: no change).
        let g_mean = zero + (T::ONE * coef + zero);
        KlPenalty {
            coef,
            inv_n,
            g_kl: zero + (g_mean * inv_n + zero),
        }
    }

    /// Ê[KL] = Σ_s KL_s · (1/n) + 0 from the per-state KLs (`mean_all`).
    pub(crate) fn mean(&self, kl: &[T]) -> T {
        T::sum(kl) * self.inv_n + T::ZERO
    }

    /// (Σ_s KL_s · (1/n) + 0) · c + 0 from the per-state KLs.
    pub(crate) fn loss(&self, kl: &[T]) -> T {
        (T::sum(kl) * self.inv_n + T::ZERO) * self.coef + T::ZERO
    }
}

/// candle's `maximum`: `if a < b { b } else { a }`.
pub(crate) fn maximum<T: Real>(a: T, b: T) -> T {
    if a < b {
        b
    } else {
        a
    }
}

/// candle's `minimum`: `if a > b { b } else { a }`.
pub(crate) fn minimum<T: Real>(a: T, b: T) -> T {
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
pub(crate) fn min_max_grads<T: Real>(out: T, lhs: T, rhs: T, g: T) -> (T, T) {
    let (m_lhs, m_rhs) = (T::indicator(out == lhs), T::indicator(out == rhs));
    // mask · g / (other mask + 1), the + 1 an affine (· 1 + 1)
    let to_lhs = (m_lhs * g) / (m_rhs * T::ONE + T::ONE);
    let to_rhs = (m_rhs * g) / (m_lhs * T::ONE + T::ONE);
    (to_lhs, to_rhs)
}

/// f32 or f64 with the operations of candle's CPU kernels.
pub(crate) trait Real:
    WithDType
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
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
