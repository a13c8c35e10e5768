//! Differentiable per-state KL trust-region projections (Otto et al., ICLR
//! 2021, "Differentiable Trust Region Layers for Deep Reinforcement
//! Learning", arXiv 2101.09207), for both distribution kinds of this crate.
//!
//! # What it computes
//!
//! Given the network's distributions π (differentiable) and the old ones
//! π_old (constants) at N states, [`KlProjection::project`] returns π̃ with,
//! at every state s,
//!
//! ```text
//! π̃(·|s) = argmin_q KL(π(·|s) ‖ q)   s.t.   KL(π_old(·|s) ‖ q) ≤ ε           (P1)
//! ```
//!
//! an M-projection of π onto the KL ball around π_old, with the constraint
//! measured as PPO and TRPO measure it, `KL(π_old ‖ ·)`. States already
//! inside the ball are returned unchanged. Unlike TRPO's mean-KL bound, the
//! bound holds at every state, exactly, whatever the update did to the
//! network; gradients flow through the projection (implicit function
//! theorem), so a loss of π̃ trains the network. The paper adds a
//! regression loss pulling π towards stop-grad(π̃); that belongs to the
//! optimiser, not here.
//!
//! - Categorical: the solution is the mixture `(1 − t)π + tπ_old` with t
//!   from a 1-D root; derivation, equations (C1)–(C4) in [`categorical`].
//! - Diagonal Gaussian with state-independent σ: the paper's decoupled
//!   mean/covariance projections, ε split by `cov_frac`; derivation,
//!   equations (G1)–(G7) in [`gaussian`].
//!
//! Everything is solved per state in f64 on the host (the pure functions of
//! [`categorical`] and [`gaussian`]); the tensor functions are candle custom
//! ops whose backward computes the vector–Jacobian product on the host in
//! f64 (candle 0.11's `backward()` calls `CustomOp1::bwd` /
//! `CustomOp2::bwd`, backprop.rs). Tensors on another device are copied to
//! the CPU and back (both copies are differentiable).
//!
//! # The working radius: why slightly less than ε
//!
//! The constraint is solved in f64, but the projected distribution is
//! stored in the network's dtype and its KL is recomputed from those values
//! (`Dist::kl`, in f32 usually). Rounding the output and recomputing the KL
//! each move it by a few units of roundoff u times the magnitudes of the
//! KL's terms, which can exceed ε's last digits. Each bound is therefore
//! solved for the smaller [`working_radius`]
//!
//! ```text
//! ε' = max(ε_nominal·(1 − REL_MARGIN) − ROUNDOFF_FACTOR · u · S,  ε_nominal/2)  (P2)
//! ```
//!
//! with `u` the unit roundoff of the output dtype (2⁻²⁴ for f32, 2⁻⁵³ for
//! f64), S the sum of the magnitudes of the KL's terms at that state
//! ([`categorical::roundoff_scale`], [`gaussian::variance_roundoff_scale`],
//! [`gaussian::mean_roundoff_scale`]) and [`REL_MARGIN`] absorbing the
//! f64 solver's tolerance. A state counts as inside when its KL is at most
//! ε'. In f64 ε' is ε(1 − 10⁻⁴) for all practical purposes. (The `ε/2`
//! floor only matters for ε of order u·S, where no f32 guarantee is possible.)
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use klrl_policy::{Categorical, Dist, KlProjection};
//!
//! let dev = Device::Cpu;
//! let old = Categorical::from_logits(&Tensor::new(&[[0.0f32, 0.0, 0.0]], &dev)?, None)?;
//! let new = Categorical::from_logits(&Tensor::new(&[[3.0f32, 0.0, -3.0]], &dev)?, None)?;
//! let (old, new) = (Dist::Categorical(old), Dist::Categorical(new));
//! let projected = KlProjection::new(0.05)?.project(&new, &old)?;
//! let kl = old.kl(&projected)?.to_vec1::<f32>()?;
//! assert!(kl[0] <= 0.05);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod categorical;
pub mod gaussian;
mod solve;

use candle_core::{CpuStorage, DType, Device, Layout, Tensor};

use crate::categorical::Categorical;
use crate::error::{check_finite, Context, PolicyError, Result};
use crate::flat::tensor_to_f64;
use crate::gaussian::DiagGaussian;
use crate::policy::Dist;

/// Relative margin of the working radius (P2): each bound is solved for
/// `ε·(1 − 10⁻⁴)` at most, so that the f64 root finder's tolerance (10⁻¹⁰
/// relative) and f64 rounding can never carry the result past ε.
pub const REL_MARGIN: f64 = 1e-4;

/// How many units of roundoff, per unit of the KL's term magnitudes, the
/// working radius (P2) leaves for rounding the output to its dtype and
/// recomputing the KL from it. 8 covers the few roundings of each term
/// (output, log-softmax or exp, products, the sum) with room to spare; the
/// integration tests check the f32 recomputation at ε down to 10⁻³ with
/// logits of ±20 and far-moved Gaussians (worst `Dist::kl`/ε 0.9995 and
/// 0.9977 there; with the factor set to 0 they exceed ε at ε = 10⁻³).
pub const ROUNDOFF_FACTOR: f64 = 8.0;

/// Default share of ε given to the Gaussian variance bound.
///
/// The paper bounds mean and covariance with two separate radii, the
/// covariance's much smaller than the mean's (a fork of its public
/// implementation defaults to `mean_bound = 0.03`, `cov_bound = 0.001`; not
/// checked against the original repository). A small share keeps the
/// exploration noise from collapsing quickly: on Pendulum-v1 (PPO, ε = 0.02,
/// 100k steps, seeds 0 and 1) 0.1 evaluated at −505 / −709 and 0.5 at
/// −771 / −675.
pub const DEFAULT_COV_FRAC: f64 = 0.1;

/// A per-state KL trust-region projection (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlProjection {
    /// The trust-region radius ε: every state's `KL(π_old ‖ π̃) ≤ ε`. Finite
    /// and > 0; typical values are TRPO's δ, 0.01–0.05.
    pub eps: f64,
    /// The share of ε given to the variance part of a Gaussian's KL
    /// (`ε_Σ = cov_frac·ε`, `ε_μ = (1 − cov_frac)·ε`), in (0, 1); unused for
    /// categorical distributions. Default [`DEFAULT_COV_FRAC`].
    pub cov_frac: f64,
}

impl KlProjection {
    /// A projection onto the KL ball of radius `eps`, with `cov_frac =`
    /// [`DEFAULT_COV_FRAC`].
    ///
    /// Errors: [`PolicyError::InvalidParameter`] unless `eps` is finite and > 0.
    pub fn new(eps: f64) -> Result<Self> {
        let p = KlProjection {
            eps,
            cov_frac: DEFAULT_COV_FRAC,
        };
        p.validate()?;
        Ok(p)
    }

    /// The same projection with another share of ε for the Gaussian variances.
    ///
    /// Errors: [`PolicyError::InvalidParameter`] unless `cov_frac ∈ (0, 1)`.
    pub fn with_cov_frac(self, cov_frac: f64) -> Result<Self> {
        let p = KlProjection { cov_frac, ..self };
        p.validate()?;
        Ok(p)
    }

    /// Checks `eps` and `cov_frac` (the fields are public, so [`Self::project`]
    /// checks again).
    ///
    /// Errors: [`PolicyError::InvalidParameter`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(PolicyError::InvalidParameter {
                param: "eps",
                reason: format!(
                    "the trust-region radius must be finite and > 0, got {}",
                    self.eps
                ),
            });
        }
        if !(self.cov_frac > 0.0 && self.cov_frac < 1.0) {
            return Err(PolicyError::InvalidParameter {
                param: "cov_frac",
                reason: format!(
                    "the variance share of eps must lie in (0, 1), got {}",
                    self.cov_frac
                ),
            });
        }
        Ok(())
    }

    /// The projection π̃ of `new` onto the trust region around `old` (P1),
    /// differentiable with respect to `new`'s tensors; `old` is detached.
    ///
    /// - `new`: the network's distributions at N states (F32 or F64).
    /// - `old`: π_old at the same states, of the same kind and shape (its
    ///   dtype may differ); its values are read once.
    ///
    /// The result has `new`'s dtype and device: a [`Dist::Categorical`]
    /// whose logits are the input's at inactive states and `ln q` at active
    /// ones, or a [`Dist::DiagGaussian`] with projected means `[N, d]` and
    /// one projected `log_std [d]` (a per-state `[N, d]` when either side has
    /// a per-state σ: each state's variances are then projected on their own).
    ///
    /// Errors: [`PolicyError::InvalidParameter`] for a bad `eps` or
    /// `cov_frac`; [`PolicyError::Mismatch`] for distributions of different
    /// kinds or shapes; [`PolicyError::NonFinite`] for a NaN or infinite
    /// input value (masked logits, −10⁹, are finite).
    pub fn project(&self, new: &Dist, old: &Dist) -> Result<Dist> {
        self.validate()?;
        match (new, &old.detach()) {
            (Dist::Categorical(p), Dist::Categorical(o)) => {
                self.project_categorical(p, o).map(Dist::Categorical)
            }
            (Dist::DiagGaussian(p), Dist::DiagGaussian(o)) => {
                self.project_gaussian(p, o).map(Dist::DiagGaussian)
            }
            _ => Err(PolicyError::Mismatch {
                reason: "KL projection between a categorical and a Gaussian distribution"
                    .to_string(),
            }),
        }
    }

    /// (C1)–(C4) of [`categorical`] at every state.
    fn project_categorical(&self, new: &Categorical, old: &Categorical) -> Result<Categorical> {
        let logits = new.logits();
        if logits.dims() != old.logits().dims() {
            return Err(PolicyError::Mismatch {
                reason: format!(
                    "KL projection of categorical logits {:?} onto old logits {:?}",
                    logits.dims(),
                    old.logits().dims()
                ),
            });
        }
        let a = new.n_actions();
        check_finite("KL projection: new logits", &tensor_to_f64(logits)?)?;
        let old_logits = tensor_to_f64(old.logits())?;
        check_finite("KL projection: old logits", &old_logits)?;
        let u = unit_roundoff(logits.dtype());
        let radius = old_logits
            .chunks(a)
            .map(|row| working_radius(self.eps, categorical::roundoff_scale(row, self.eps), u))
            .collect();
        let op = categorical::ProjectionOp {
            old_logits,
            radius,
            n_actions: a,
        };
        let c = "KL projection (categorical)";
        let y = to_cpu(logits)?.apply_op1(op).ctx(c)?;
        Categorical::from_owned_logits(back_to(y, logits.device())?)
    }

    /// (G1)–(G7) of [`gaussian`]: the variances, then every state's mean.
    fn project_gaussian(&self, new: &DiagGaussian, old: &DiagGaussian) -> Result<DiagGaussian> {
        if new.mean().dims() != old.mean().dims() {
            return Err(PolicyError::Mismatch {
                reason: format!(
                    "KL projection of Gaussian means {:?} onto old means {:?}",
                    new.mean().dims(),
                    old.mean().dims()
                ),
            });
        }
        if new.is_state_dependent() || old.is_state_dependent() {
            return self.project_gaussian_per_state(new, old);
        }
        let d = new.action_dim();
        let mean = tensor_to_f64(new.mean())?;
        let log_std = tensor_to_f64(new.log_std())?;
        let old_mean = tensor_to_f64(old.mean())?;
        let old_log_std = tensor_to_f64(old.log_std())?;
        check_finite("KL projection: new mean", &mean)?;
        check_finite("KL projection: new log_std", &log_std)?;
        check_finite("KL projection: old mean", &old_mean)?;
        check_finite("KL projection: old log_std", &old_log_std)?;
        let u = unit_roundoff(new.mean().dtype());

        // 1. variances (G2)-(G4), shared by all states
        let var_radius = working_radius(
            self.cov_frac * self.eps,
            gaussian::variance_roundoff_scale(&log_std, &old_log_std, self.eps),
            u,
        );
        let projected_log_std =
            gaussian::project_log_std(&log_std, &old_log_std, var_radius).log_std;
        // 2. means (G5)-(G7), per state, in the metric of the projected variances
        let mean_eps = (1.0 - self.cov_frac) * self.eps;
        let radius = mean
            .chunks(d)
            .zip(old_mean.chunks(d))
            .map(|(m, mo)| {
                let scale = gaussian::mean_roundoff_scale(m, mo, &projected_log_std, self.eps);
                working_radius(mean_eps, scale, u)
            })
            .collect();

        let c = "KL projection (Gaussian)";
        let log_std_op = gaussian::LogStdOp {
            old_log_std,
            radius: vec![var_radius],
        };
        let log_std_t = to_cpu(new.log_std())?.apply_op1(log_std_op).ctx(c)?;
        let mean_op = gaussian::MeanOp {
            old_mean,
            radius,
            dim: d,
        };
        let mean_t = to_cpu(new.mean())?.apply_op2(&log_std_t, mean_op).ctx(c)?;
        let device = new.mean().device();
        DiagGaussian::new(&back_to(mean_t, device)?, &back_to(log_std_t, device)?)
    }
}

impl KlProjection {
    /// (G1)–(G7) with a per-state σ (gSDE, a state-dependent log-std head):
    /// each state's variances are projected with their own η, then its mean
    /// in the metric of its projected variances. A shared σ on either side is
    /// broadcast to every state first.
    fn project_gaussian_per_state(
        &self,
        new: &DiagGaussian,
        old: &DiagGaussian,
    ) -> Result<DiagGaussian> {
        let c = "KL projection (Gaussian, per-state σ)";
        let d = new.action_dim();
        let shape = new.mean().shape().clone();
        let new_log_std = new.log_std().broadcast_as(&shape).ctx(c)?;
        let mean = tensor_to_f64(new.mean())?;
        let log_std = tensor_to_f64(&new_log_std)?;
        let old_mean = tensor_to_f64(old.mean())?;
        let old_log_std = tensor_to_f64(&old.log_std().broadcast_as(&shape).ctx(c)?)?;
        check_finite("KL projection: new mean", &mean)?;
        check_finite("KL projection: new log_std", &log_std)?;
        check_finite("KL projection: old mean", &old_mean)?;
        check_finite("KL projection: old log_std", &old_log_std)?;
        let u = unit_roundoff(new.mean().dtype());
        let mean_eps = (1.0 - self.cov_frac) * self.eps;
        let mut var_radius = Vec::with_capacity(mean.len() / d);
        let mut radius = Vec::with_capacity(mean.len() / d);
        for (((m, mo), l), lo) in mean
            .chunks(d)
            .zip(old_mean.chunks(d))
            .zip(log_std.chunks(d))
            .zip(old_log_std.chunks(d))
        {
            // 1. this state's variances (G2)-(G4)
            let vr = working_radius(
                self.cov_frac * self.eps,
                gaussian::variance_roundoff_scale(l, lo, self.eps),
                u,
            );
            let projected = gaussian::project_log_std(l, lo, vr).log_std;
            var_radius.push(vr);
            // 2. its mean (G5)-(G7) in the metric of the projected variances
            let scale = gaussian::mean_roundoff_scale(m, mo, &projected, self.eps);
            radius.push(working_radius(mean_eps, scale, u));
        }
        let log_std_op = gaussian::LogStdOp {
            old_log_std,
            radius: var_radius,
        };
        let log_std_t = to_cpu(&new_log_std)?
            .contiguous()
            .ctx(c)?
            .apply_op1(log_std_op)
            .ctx(c)?;
        let mean_op = gaussian::MeanOp {
            old_mean,
            radius,
            dim: d,
        };
        let mean_t = to_cpu(new.mean())?.apply_op2(&log_std_t, mean_op).ctx(c)?;
        let device = new.mean().device();
        DiagGaussian::new(&back_to(mean_t, device)?, &back_to(log_std_t, device)?)
    }
}

/// The working radius (P2) of a bound `nominal`, for KL terms of total
/// magnitude `scale` recomputed with unit roundoff `unit_roundoff`.
pub fn working_radius(nominal: f64, scale: f64, unit_roundoff: f64) -> f64 {
    (nominal * (1.0 - REL_MARGIN) - ROUNDOFF_FACTOR * unit_roundoff * scale).max(0.5 * nominal)
}

/// The unit roundoff of the crate's float dtypes: 2⁻⁵³ for F64, 2⁻²⁴ for
/// F32 (and, conservatively, for any other dtype).
pub fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON / 2.0,
        _ => f64::from(f32::EPSILON) / 2.0,
    }
}

/// A contiguous copy on the CPU, where the custom ops run (no copy if `t`
/// is already there and contiguous).
fn to_cpu(t: &Tensor) -> Result<Tensor> {
    t.to_device(&Device::Cpu)
        .and_then(|x| x.contiguous())
        .ctx("KL projection: to CPU")
}

/// `t` moved to `device` (no copy for the CPU).
fn back_to(t: Tensor, device: &Device) -> Result<Tensor> {
    if device.is_cpu() {
        Ok(t)
    } else {
        t.to_device(device).ctx("KL projection: back to the device")
    }
}

/// The values of a contiguous CPU storage as f64, with its dtype.
pub(crate) fn host_values(
    op: &str,
    storage: &CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(Vec<f64>, DType)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expects a contiguous tensor");
    };
    match storage {
        CpuStorage::F64(v) => Ok((v[start..end].to_vec(), DType::F64)),
        CpuStorage::F32(v) => Ok((
            v[start..end].iter().map(|&x| f64::from(x)).collect(),
            DType::F32,
        )),
        _ => candle_core::bail!("{op}: expects F32 or F64 values"),
    }
}

/// A CPU storage of `dtype` (F32 or F64) holding `values`.
pub(crate) fn storage_from_f64(values: Vec<f64>, dtype: DType) -> CpuStorage {
    match dtype {
        DType::F32 => CpuStorage::F32(values.into_iter().map(|x| x as f32).collect()),
        _ => CpuStorage::F64(values),
    }
}

/// All values of a tensor as f64 (for the ops' backward passes).
pub(crate) fn tensor_values(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated() {
        assert!(KlProjection::new(0.01).is_ok());
        for eps in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(KlProjection::new(eps).is_err(), "eps {eps}");
        }
        let p = KlProjection::new(0.01).expect("valid");
        for f in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(p.with_cov_frac(f).is_err(), "cov_frac {f}");
        }
        assert!(p.with_cov_frac(0.2).is_ok());
    }

    #[test]
    fn the_working_radius_is_a_little_inside() {
        let u32_ = unit_roundoff(DType::F32);
        let r = working_radius(0.01, 3.0, u32_);
        assert!(r < 0.01 * (1.0 - REL_MARGIN) && r > 0.0099);
        let r = working_radius(0.01, 3.0, unit_roundoff(DType::F64));
        assert!((r - 0.01 * (1.0 - REL_MARGIN)).abs() < 1e-14);
        // the floor: ε far below the roundoff
        assert_eq!(working_radius(1e-9, 1e3, u32_), 0.5e-9);
    }
}
