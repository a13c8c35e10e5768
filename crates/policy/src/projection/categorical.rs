//! The KL trust-region projection of categorical distributions, per state,
//! and its gradient.
//!
//! Otto et al. (2021) project Gaussians only; this is the same construction
//! for a softmax policy, derived here.
//!
//! # The problem
//!
//! At one state, with π = softmax(z) the network's distribution and π_old
//! the old one (a constant), find
//!
//! ```text
//! q* = argmin_{q ∈ simplex} KL(π ‖ q)   s.t.   f(q) = KL(π_old ‖ q) ≤ ε.     (C1)
//! ```
//!
//! # Solution: a mixture of π and π_old
//!
//! (C1) is convex (both KLs are convex in their second argument) and
//! strictly feasible at q = π_old (Slater, ε > 0), so the KKT conditions
//! characterise q*. The Lagrangian
//! `Σ_a π_a ln(π_a/q_a) + η (Σ_a π_old,a ln(π_old,a/q_a) − ε) + λ (Σ_a q_a − 1)`
//! is stationary in q_a when `−π_a/q_a − η π_old,a/q_a + λ = 0`, i.e.
//! `q_a = (π_a + η π_old,a)/λ`; summing over a gives `λ = 1 + η`, so
//!
//! ```text
//! q(t) = (1 − t)·π + t·π_old,   t = η/(1 + η) ∈ [0, 1).                      (C2)
//! ```
//!
//! Complementary slackness: either η = 0 (t = 0, q* = π, when
//! `KL(π_old ‖ π) ≤ ε`) or the constraint is active, `f(t) = ε` with
//! `f(t) = KL(π_old ‖ q(t))`. `f` is convex in t (a convex function of an
//! affine q(t)), `f(1) = 0` is its minimum, hence f is non-increasing on
//! [0, 1] and strictly decreasing where positive: the root of `f(t) = ε` in
//! (0, 1) is unique. It is found per state in f64 by Newton's method from
//! t = 0, which on a convex decreasing function approaches the root
//! monotonically from the left (safeguarded by bisection,
//! `projection/solve.rs`). With `δ_a = ln(π_a/π_old,a)`,
//!
//! ```text
//! f(t)  = −Σ_a π_old,a · ln((1 − t)·e^{δ_a} + t)                               (C3)
//! f'(t) =  Σ_a π_old,a (π_a − π_old,a)/q_a  < 0,
//! ```
//!
//! summed over the actions with π_old,a > 0 (in the log domain, so that
//! logits of ±20 or a π that is 0 where π_old is not (f(0) = +∞) are fine).
//!
//! # Output and masks
//!
//! The output is a row of logits `y`: for an inactive state `y = z`
//! unchanged (the projected distribution is then bit-for-bit the input's);
//! for an active one `y_a = ln q_a`, and [`crate::MASKED_LOGIT`] where
//! `q_a = 0` (π_a = π_old,a = 0: an action masked in both, whose output gets
//! no gradient).
//!
//! # Gradient (implicit function theorem)
//!
//! For an active state, `f(t(π), π) = ε` for all π near the input, so
//! `dt/dπ_a = −(∂f/∂π_a)/(∂f/∂t)` with `∂f/∂π_a = −(1 − t) π_old,a/q_a` and
//! `∂f/∂t = f'(t)` of (C3). With `y_a = ln q_a`,
//! `dq_a = (1 − t) dπ_a + (π_old,a − π_a) dt`. For a cotangent `g = ∂L/∂y`:
//!
//! ```text
//! γ        = ∂L/∂t  = Σ_a g_a (π_old,a − π_a)/q_a
//! ∂L/∂π_a  = (1 − t)/q_a · (g_a + γ π_old,a / f'(t))                          (C4)
//! ∂L/∂z_b  = π_b (∂L/∂π_b − Σ_a π_a ∂L/∂π_a)           (through π = softmax z)
//! ```
//!
//! computed as `w_a = π_a ∂L/∂π_a` with the bounded ratio `π_a/q_a ≤ 1/(1 − t)`.
//! An inactive state passes `g` through unchanged (`y = z`).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::solve::{log_mix, solve_decreasing};
use super::{host_values, storage_from_f64};
use crate::categorical::MASKED_LOGIT;

/// `ln softmax(z)` in f64 (max-subtracted; masked logits give ≈ −10⁹).
pub fn log_softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
    z.iter().map(|&x| x - lse).collect()
}

/// `KL(softmax(z_p) ‖ softmax(z_q))` in f64, for logits `z_p`, `z_q` of one state.
pub fn kl(z_p: &[f64], z_q: &[f64]) -> f64 {
    let (lp, lq) = (log_softmax(z_p), log_softmax(z_q));
    lp.iter()
        .zip(&lq)
        .map(|(&a, &b)| {
            if a.exp() > 0.0 {
                a.exp() * (a - b)
            } else {
                0.0
            }
        })
        .sum()
}

/// The scale `1 + 2 H(π_old) + ε` of the rounding error of `KL(π_old ‖ q)`
/// recomputed in low precision from logits (see [`super::working_radius`]).
///
/// The recomputed KL is `Σ_a π_old,a (ln π_old,a − ln q_a)`; its rounding
/// errors are bounded by the unit roundoff times
/// `Σ_a π_old,a (|ln π_old,a| + |ln q_a|) = H(π_old) + H(π_old, q) = 2 H(π_old) + KL`.
///
/// - `old_logits`: π_old's logits at one state.
/// - `eps`: the trust-region radius ε.
pub fn roundoff_scale(old_logits: &[f64], eps: f64) -> f64 {
    let entropy: f64 = log_softmax(old_logits)
        .iter()
        .map(|&l| if l.exp() > 0.0 { -l.exp() * l } else { 0.0 })
        .sum();
    1.0 + 2.0 * entropy + eps
}

/// One state's projection: the mixing weight and the output logits.
#[derive(Debug, Clone, PartialEq)]
pub struct RowProjection {
    /// The weight `t ∈ [0, 1)` of π_old in `q = (1 − t)π + tπ_old` (C2); 0
    /// when the state is already inside the trust region.
    pub t: f64,
    /// The output logits `y`: the input logits if `t = 0`, else `ln q`
    /// ([`MASKED_LOGIT`] where q is 0).
    pub logits: Vec<f64>,
}

/// Everything the forward and backward passes share at one state.
struct Solved {
    /// `ln π`.
    log_p: Vec<f64>,
    /// `ln π_old`.
    log_p_old: Vec<f64>,
    /// The mixing weight t (0 when inactive).
    t: f64,
    /// Whether the constraint is active (`KL(π_old ‖ π) > radius`).
    active: bool,
}

impl Solved {
    /// Solves (C1) at one state.
    fn new(logits: &[f64], old_logits: &[f64], radius: f64) -> Self {
        let log_p = log_softmax(logits);
        let log_p_old = log_softmax(old_logits);
        // f(t) and f'(t) of (C3), over the actions π_old can take
        let f = |t: f64| {
            let (mut val, mut slope) = (0.0, 0.0);
            for (&lp, &lo) in log_p.iter().zip(&log_p_old) {
                let po = lo.exp();
                if po > 0.0 {
                    let delta = lp - lo;
                    let lr = log_mix(delta, t); // ln(q/π_old)
                    val -= po * lr;
                    // π_old (π − π_old)/q = π_old (e^{δ − lr} − e^{−lr})
                    slope += po * ((delta - lr).exp() - (-lr).exp());
                }
            }
            (val, slope)
        };
        let kl0 = f(0.0).0;
        let active = kl0 > radius;
        let t = if active {
            solve_decreasing(f, radius)
        } else {
            0.0
        };
        Solved {
            log_p,
            log_p_old,
            t,
            active,
        }
    }

    /// `(π_a/q_a, π_old,a/q_a)` for every action (0 where q_a = 0).
    fn ratios(&self) -> Vec<(f64, f64)> {
        let t = self.t;
        self.log_p
            .iter()
            .zip(&self.log_p_old)
            .map(|(&lp, &lo)| {
                if lo.exp() > 0.0 {
                    let lr = log_mix(lp - lo, t);
                    ((lp - lo - lr).exp(), (-lr).exp())
                } else if lp.exp() > 0.0 {
                    (1.0 / (1.0 - t), 0.0)
                } else {
                    (0.0, 0.0)
                }
            })
            .collect()
    }

    /// The output logits (see [`RowProjection::logits`]).
    fn output(&self, logits: &[f64]) -> Vec<f64> {
        if !self.active {
            return logits.to_vec();
        }
        let t = self.t;
        self.log_p
            .iter()
            .zip(&self.log_p_old)
            .map(|(&lp, &lo)| {
                if lo.exp() > 0.0 {
                    lo + log_mix(lp - lo, t)
                } else if lp.exp() > 0.0 {
                    (1.0 - t).ln() + lp
                } else {
                    MASKED_LOGIT
                }
            })
            .collect()
    }

    /// `∂L/∂z` from `g = ∂L/∂y` (C4).
    fn vjp(&self, grad: &[f64]) -> Vec<f64> {
        if !self.active {
            return grad.to_vec();
        }
        let t = self.t;
        let ratios = self.ratios();
        let p_old: Vec<f64> = self.log_p_old.iter().map(|l| l.exp()).collect();
        // f'(t) = Σ π_old (π − π_old)/q and γ = Σ g (π_old − π)/q
        let slope: f64 = ratios
            .iter()
            .zip(&p_old)
            .map(|(&(a, b), &po)| po * (a - b))
            .sum();
        let gamma: f64 = ratios
            .iter()
            .zip(grad)
            .map(|(&(a, b), &g)| if a > 0.0 || b > 0.0 { g * (b - a) } else { 0.0 })
            .sum();
        // w_a = π_a ∂L/∂π_a = (1 − t)(π_a/q_a)(g_a + γ π_old,a / f'(t))
        let w: Vec<f64> = ratios
            .iter()
            .zip(grad)
            .zip(&p_old)
            .map(|((&(a, _), &g), &po)| {
                if a > 0.0 {
                    (1.0 - t) * a * (g + gamma * po / slope)
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        w.iter()
            .zip(&self.log_p)
            .map(|(&wa, &lp)| wa - lp.exp() * total)
            .collect()
    }
}

/// Projects one state: the solution of (C1) with `ε = radius`.
///
/// - `logits`: the network's logits z at this state (masked entries carry
///   [`MASKED_LOGIT`]); π = softmax(z).
/// - `old_logits`: π_old's logits at this state, same length.
/// - `radius`: the bound on `KL(π_old ‖ q)`, finite and > 0.
pub fn project_row(logits: &[f64], old_logits: &[f64], radius: f64) -> RowProjection {
    let s = Solved::new(logits, old_logits, radius);
    RowProjection {
        t: s.t,
        logits: s.output(logits),
    }
}

/// The vector–Jacobian product of [`project_row`]'s output logits: `∂L/∂z`
/// from `grad = ∂L/∂y` (C4), arguments as for [`project_row`].
pub fn project_row_vjp(logits: &[f64], old_logits: &[f64], radius: f64, grad: &[f64]) -> Vec<f64> {
    Solved::new(logits, old_logits, radius).vjp(grad)
}

/// The differentiable projection of a batch as a candle op on the logits
/// `[N, A]`, with π_old's logits and the per-state radii as constants.
pub(crate) struct ProjectionOp {
    /// π_old's logits, state-major `N × A`.
    pub(crate) old_logits: Vec<f64>,
    /// The radius of each state (see [`super::working_radius`]).
    pub(crate) radius: Vec<f64>,
    /// Number of actions A.
    pub(crate) n_actions: usize,
}

impl ProjectionOp {
    /// `f` applied to each state's (logits, old logits, radius, row of `other`).
    fn rows(
        &self,
        z: &[f64],
        other: &[f64],
        f: impl Fn(&[f64], &[f64], f64, &[f64]) -> Vec<f64>,
    ) -> Vec<f64> {
        let a = self.n_actions;
        let mut out = Vec::with_capacity(z.len());
        for (s, &radius) in self.radius.iter().enumerate() {
            let r = s * a..(s + 1) * a;
            let other_row = if other.is_empty() {
                &[][..]
            } else {
                &other[r.clone()]
            };
            out.extend(f(&z[r.clone()], &self.old_logits[r], radius, other_row));
        }
        out
    }
}

impl CustomOp1 for ProjectionOp {
    fn name(&self) -> &'static str {
        "kl-projection-categorical"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, dtype) = host_values(self.name(), storage, layout)?;
        check_len(self, z.len())?;
        let y = self.rows(&z, &[], |z, old, radius, _| {
            project_row(z, old, radius).logits
        });
        Ok((storage_from_f64(y, dtype), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let z = super::tensor_values(arg)?;
        let g = super::tensor_values(grad_res)?;
        check_len(self, z.len())?;
        let dz = self.rows(&z, &g, project_row_vjp);
        Tensor::from_vec(dz, arg.shape(), arg.device())?
            .to_dtype(arg.dtype())
            .map(Some)
    }
}

/// Checks that the op is applied to the `N × A` logits it was built for.
fn check_len(op: &ProjectionOp, len: usize) -> candle_core::Result<()> {
    if len != op.radius.len() * op.n_actions || op.old_logits.len() != len {
        candle_core::bail!(
            "kl-projection-categorical: built for {} states × {} actions, applied to {len} values",
            op.radius.len(),
            op.n_actions
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_vjp(z: &[f64], old: &[f64], radius: f64, g: &[f64]) -> Vec<f64> {
        let h = 1e-6;
        (0..z.len())
            .map(|i| {
                let mut zp = z.to_vec();
                zp[i] += h;
                let mut zm = z.to_vec();
                zm[i] -= h;
                let yp = project_row(&zp, old, radius).logits;
                let ym = project_row(&zm, old, radius).logits;
                yp.iter()
                    .zip(&ym)
                    .zip(g)
                    .map(|((a, b), gi)| gi * (a - b) / (2.0 * h))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn inside_is_unchanged_and_outside_lands_on_the_boundary() {
        let old = [0.1, -0.3, 0.7];
        let near = [0.12, -0.31, 0.69];
        let p = project_row(&near, &old, 0.01);
        assert_eq!(p.t, 0.0);
        assert_eq!(p.logits, near.to_vec());
        let far = [3.0, -2.0, 0.0];
        let p = project_row(&far, &old, 0.01);
        assert!(p.t > 0.0 && p.t < 1.0);
        let k = kl(&old, &p.logits);
        assert!((k - 0.01).abs() <= 1e-11, "{k}");
    }

    #[test]
    fn vjp_matches_finite_differences() {
        let old = [0.1, -0.3, 0.7, 2.0];
        let z = [3.0, -2.0, 0.0, -1.0];
        let g = [0.3, -1.1, 0.4, 0.9];
        for radius in [0.01, 0.5] {
            let ours = project_row_vjp(&z, &old, radius, &g);
            let fd = fd_vjp(&z, &old, radius, &g);
            for (a, b) in ours.iter().zip(&fd) {
                assert!((a - b).abs() <= 1e-6, "radius {radius}: {ours:?} vs {fd:?}");
            }
        }
    }

    #[test]
    fn a_pi_that_misses_an_old_action_is_projected_onto_it() {
        // π masks action 2, π_old does not: KL(π_old ‖ π) = ∞
        let old = [0.0, 0.0, 0.0];
        let z = [0.0, 1.0, MASKED_LOGIT];
        let p = project_row(&z, &old, 0.05);
        assert!(p.t > 0.0);
        assert!(p.logits.iter().all(|y| y.is_finite() && *y > -100.0));
        assert!((kl(&old, &p.logits) - 0.05).abs() <= 1e-11);
    }
}
