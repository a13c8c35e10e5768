//! The KL trust-region projection of diagonal Gaussians with a
//! state-independent standard deviation, and its gradient: Otto et al.
//! (2021, §4 "KL projection") with the mean and the covariance projected
//! separately, adapted to the constraint direction `KL(π_old ‖ ·)`.
//!
//! # The decoupled problem
//!
//! For diagonal Gaussians, with `s̃_j = σ̃_j²` the candidate's variances,
//!
//! ```text
//! KL(π_old ‖ q) = M(μ̃, s̃) + V(s̃)                                            (G1)
//! M = ½ Σ_j (μ̃_j − μ_old,j)² / s̃_j                             (mean part)
//! V = ½ Σ_j (σ_old,j²/s̃_j − 1 + ln(s̃_j/σ_old,j²))          (variance part)
//! ```
//!
//! The radius ε is split: `ε_Σ = cov_frac·ε` bounds V and `ε_μ = (1 −
//! cov_frac)·ε` bounds M, so `KL(π_old ‖ π̃) ≤ ε_μ + ε_Σ = ε` at every
//! state. Like the paper, the variances are projected first and the means
//! then with the projected variances; the result is the solution of the
//! two sub-problems below, not the joint optimum of `KL(π ‖ q)` under the
//! total bound. (The paper's mean part measures distances in `Σ_old`, the
//! metric of `KL(q ‖ π_old)`; in this direction it is `Σ̃`.)
//!
//! # Variances
//!
//! ```text
//! σ̃² = argmin_s ½ Σ_j (σ_j²/s_j − 1 + ln(s_j/σ_j²))   s.t.   V(s) ≤ ε_Σ.   (G2)
//! ```
//!
//! Stationarity of `½(σ_j²/s_j + ln s_j) + η·½(σ_old,j²/s_j + ln s_j)` in
//! `s_j`: `−σ_j²/s_j² + 1/s_j + η(−σ_old,j²/s_j² + 1/s_j) = 0`, so
//!
//! ```text
//! s_j(w) = (1 − w)·σ_j² + w·σ_old,j²,   w = η/(1 + η) ∈ [0, 1).            (G3)
//! ```
//!
//! `V(s(w))` decreases in w: each term is `h(x_j) = ½(1/x − 1 + ln x)` at
//! `x_j = s_j/σ_old,j²`, and h decreases on (0, 1], increases on [1, ∞) with
//! `h(1) = 0`; as w grows, `x_j` moves linearly from `σ_j²/σ_old,j²` to 1,
//! towards h's minimum, so every term decreases (strictly unless
//! σ_j = σ_old,j), and `V(s(1)) = 0`. Hence w = 0 when `V(σ²) ≤ ε_Σ`, else
//! the unique root of `V(s(w)) = ε_Σ`, found in f64 by safeguarded Newton
//! (`projection/solve.rs`; V is not convex in w, so the bisection guard is
//! needed). σ and σ_old do not depend on the state, so neither does σ̃: the
//! projected `log σ̃` stays one vector `[d]`.
//!
//! With `δ_j = ln(σ_j²/σ_old,j²)` and `L_j = ln x_j = ln((1 − w)e^{δ_j} + w)`:
//! `V = Σ_j h(L_j)` with `h(L) = ½(e^{−L} − 1 + L)`, `log σ̃_j = log σ_old,j + ½L_j`,
//! and `dL_j/dw = e^{−L_j} − e^{δ_j − L_j}`, `∂L_j/∂δ_j = (1 − w) e^{δ_j − L_j}`.
//! Gradient by the implicit function theorem: `dw/dδ_k = −(∂V/∂δ_k)/(∂V/∂w)`,
//! so for a cotangent `g = ∂L/∂log σ̃`
//!
//! ```text
//! Γ             = Σ_j (g_j/2) dL_j/dw,    V_w = Σ_j h'(L_j) dL_j/dw   (< 0)
//! ∂L/∂log σ_k   = 2 [ (g_k/2) ∂L_k/∂δ_k − Γ h'(L_k) ∂L_k/∂δ_k / V_w ].      (G4)
//! ```
//!
//! # Means (per state, with the projected variances s̃)
//!
//! ```text
//! μ̃ = argmin_m ½ Σ_j (μ_j − m_j)²/s̃_j   s.t.   ½ Σ_j (m_j − μ_old,j)²/s̃_j ≤ ε_μ.   (G5)
//! ```
//!
//! Objective and constraint are squared distances in the same metric
//! `diag(1/s̃)`, so the solution is the radial projection onto the ball
//! around μ_old (the paper's closed form with `ω = √(m/ε_μ)`): with
//! `Δ = μ − μ_old` and `m = ½ Σ_j Δ_j²/s̃_j`, `μ̃ = μ` if `m ≤ ε_μ`, else
//!
//! ```text
//! μ̃ = μ_old + k Δ,   k = √(ε_μ/m).                                           (G6)
//! ```
//!
//! Gradient of an active state: `dk = −½ (k/m) dm`,
//! `∂m/∂μ_j = Δ_j/s̃_j`, `∂m/∂log σ̃_j = −Δ_j²/s̃_j`; for `g = ∂L/∂μ̃`,
//!
//! ```text
//! ∂L/∂m = −½ (k/m) Σ_j g_j Δ_j
//! ∂L/∂μ_j = k g_j + ∂L/∂m · Δ_j/s̃_j,   ∂L/∂log σ̃_j = −∂L/∂m · Δ_j²/s̃_j,     (G7)
//! ```
//!
//! the latter summed over the states and carried on to log σ by (G4). An
//! inactive state (or an inactive variance projection) is the identity.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::solve::{log_mix, solve_decreasing};
use super::{host_values, storage_from_f64, tensor_values};

/// `V` of (G1): the variance part of `KL(π_old ‖ q)` for q with standard
/// deviations `exp(log_std)`, π_old with `exp(old_log_std)`.
pub fn variance_part(log_std: &[f64], old_log_std: &[f64]) -> f64 {
    log_std
        .iter()
        .zip(old_log_std)
        .map(|(&l, &lo)| h(2.0 * (l - lo)))
        .sum()
}

/// `M` of (G1) at one state: `½ Σ_j (mean_j − old_mean_j)² / exp(2 log_std_j)`.
pub fn mean_part(mean: &[f64], old_mean: &[f64], log_std: &[f64]) -> f64 {
    mean.iter()
        .zip(old_mean)
        .zip(log_std)
        .map(|((&m, &mo), &l)| 0.5 * (m - mo).powi(2) * (-2.0 * l).exp())
        .sum()
}

/// `h(L) = ½(e^{−L} − 1 + L)`: one dimension's variance part at `L = ln(s/σ_old²)`.
fn h(l: f64) -> f64 {
    0.5 * ((-l).exp_m1() + l)
}

/// `h'(L) = ½(1 − e^{−L})`.
fn dh(l: f64) -> f64 {
    -0.5 * (-l).exp_m1()
}

/// The scale of the rounding error of the variance part of `KL(π_old ‖ π̃)`
/// recomputed in low precision (see [`super::working_radius`]): the sum of the
/// magnitudes of its terms, `Σ_j (1 + |log σ_old,j| + |log σ̃_j| + σ_old,j²/σ̃_j²)`,
/// bounded before solving by `|log σ̃_j| ≤ max(|log σ_j|, |log σ_old,j|)` and
/// `σ_old,j²/σ̃_j² ≤ max(1, σ_old,j²/σ_j²)` (σ̃² lies between σ² and σ_old²), plus ε.
pub fn variance_roundoff_scale(log_std: &[f64], old_log_std: &[f64], eps: f64) -> f64 {
    log_std
        .iter()
        .zip(old_log_std)
        .map(|(&l, &lo)| 1.0 + lo.abs() + l.abs().max(lo.abs()) + (2.0 * (lo - l)).exp().max(1.0))
        .sum::<f64>()
        + eps
}

/// The scale of the rounding error of the mean part at one state: rounding
/// `μ̃` moves `Δ̃_j` by `u |μ̃_j|`, and `M` by `u |μ̃_j| |Δ̃_j|/s̃_j ≤ u |μ̃_j| √(2ε)/σ̃_j`,
/// with `|μ̃_j| ≤ |μ_j| + 2|μ_old,j|`; hence `1 + √(2ε) Σ_j (|μ_j| + 2|μ_old,j|)/σ̃_j`.
///
/// - `log_std`: the projected `log σ̃`.
pub fn mean_roundoff_scale(mean: &[f64], old_mean: &[f64], log_std: &[f64], eps: f64) -> f64 {
    1.0 + (2.0 * eps).sqrt()
        * mean
            .iter()
            .zip(old_mean)
            .zip(log_std)
            .map(|((&m, &mo), &l)| (m.abs() + 2.0 * mo.abs()) * (-l).exp())
            .sum::<f64>()
}

/// The solved variance projection (G2)–(G3).
#[derive(Debug, Clone, PartialEq)]
pub struct LogStdProjection {
    /// The weight `w ∈ [0, 1)` of σ_old² in (G3); 0 when inside.
    pub w: f64,
    /// `log σ̃ [d]`: the input `log_std` itself when `w = 0`.
    pub log_std: Vec<f64>,
}

/// `δ_j = ln(σ_j²/σ_old,j²)` and the solved weight w (0 when inactive).
fn solve_variance(log_std: &[f64], old_log_std: &[f64], radius: f64) -> (Vec<f64>, f64) {
    let delta: Vec<f64> = log_std
        .iter()
        .zip(old_log_std)
        .map(|(&l, &lo)| 2.0 * (l - lo))
        .collect();
    let v = |w: f64| {
        let (mut val, mut slope) = (0.0, 0.0);
        for &d in &delta {
            let l = log_mix(d, w);
            val += h(l);
            slope += dh(l) * ((-l).exp() - (d - l).exp());
        }
        (val, slope)
    };
    let w = if v(0.0).0 > radius {
        solve_decreasing(v, radius)
    } else {
        0.0
    };
    (delta, w)
}

/// Projects the log standard deviations: the solution of (G2) with `ε_Σ = radius`.
///
/// - `log_std`: the network's `log σ [d]`.
/// - `old_log_std`: π_old's `log σ_old [d]`.
/// - `radius`: the bound on the variance part V, finite and > 0.
pub fn project_log_std(log_std: &[f64], old_log_std: &[f64], radius: f64) -> LogStdProjection {
    let (delta, w) = solve_variance(log_std, old_log_std, radius);
    let log_std = if w == 0.0 {
        log_std.to_vec()
    } else {
        delta
            .iter()
            .zip(old_log_std)
            .map(|(&d, &lo)| lo + 0.5 * log_mix(d, w))
            .collect()
    };
    LogStdProjection { w, log_std }
}

/// The vector–Jacobian product of [`project_log_std`] (G4): `∂L/∂log σ`
/// from `grad = ∂L/∂log σ̃`, other arguments as there.
pub fn project_log_std_vjp(
    log_std: &[f64],
    old_log_std: &[f64],
    radius: f64,
    grad: &[f64],
) -> Vec<f64> {
    let (delta, w) = solve_variance(log_std, old_log_std, radius);
    if w == 0.0 {
        return grad.to_vec();
    }
    let l: Vec<f64> = delta.iter().map(|&d| log_mix(d, w)).collect();
    // dL_j/dw and ∂L_j/∂δ_j
    let dl_dw: Vec<f64> = delta
        .iter()
        .zip(&l)
        .map(|(&d, &lj)| (-lj).exp() - (d - lj).exp())
        .collect();
    let dl_dd: Vec<f64> = delta
        .iter()
        .zip(&l)
        .map(|(&d, &lj)| (1.0 - w) * (d - lj).exp())
        .collect();
    let gamma: f64 = grad.iter().zip(&dl_dw).map(|(&g, &c)| 0.5 * g * c).sum();
    let v_w: f64 = l.iter().zip(&dl_dw).map(|(&lj, &c)| dh(lj) * c).sum();
    grad.iter()
        .zip(&l)
        .zip(&dl_dd)
        .map(|((&g, &lj), &b)| 2.0 * (0.5 * g * b - gamma * dh(lj) * b / v_w))
        .collect()
}

/// Projects one state's mean (G5)–(G6) with `ε_μ = radius`.
///
/// - `mean`: the network's `μ [d]` at this state.
/// - `old_mean`: `μ_old [d]`.
/// - `log_std`: the projected `log σ̃ [d]` (the metric).
/// - `radius`: the bound on the mean part M, finite and > 0.
///
/// Returns `μ̃ [d]`, the input itself when inside.
pub fn project_mean_row(mean: &[f64], old_mean: &[f64], log_std: &[f64], radius: f64) -> Vec<f64> {
    let m = mean_part(mean, old_mean, log_std);
    if m <= radius {
        return mean.to_vec();
    }
    let k = (radius / m).sqrt();
    mean.iter()
        .zip(old_mean)
        .map(|(&mu, &mo)| mo + k * (mu - mo))
        .collect()
}

/// The vector–Jacobian product of [`project_mean_row`] (G7): from
/// `grad = ∂L/∂μ̃`, returns `(∂L/∂μ, ∂L/∂log σ̃)`, arguments as there.
pub fn project_mean_row_vjp(
    mean: &[f64],
    old_mean: &[f64],
    log_std: &[f64],
    radius: f64,
    grad: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let m = mean_part(mean, old_mean, log_std);
    if m <= radius {
        return (grad.to_vec(), vec![0.0; log_std.len()]);
    }
    let k = (radius / m).sqrt();
    let delta: Vec<f64> = mean.iter().zip(old_mean).map(|(&a, &b)| a - b).collect();
    let inv_var: Vec<f64> = log_std.iter().map(|&l| (-2.0 * l).exp()).collect();
    let alpha: f64 = grad.iter().zip(&delta).map(|(g, d)| g * d).sum();
    let dl_dm = -0.5 * k / m * alpha;
    let d_mean = grad
        .iter()
        .zip(&delta)
        .zip(&inv_var)
        .map(|((&g, &d), &iv)| k * g + dl_dm * d * iv)
        .collect();
    let d_log_std = delta
        .iter()
        .zip(&inv_var)
        .map(|(&d, &iv)| -dl_dm * d * d * iv)
        .collect();
    (d_mean, d_log_std)
}

/// The variance projection as a candle op on `log σ` — one `[d]` shared by
/// every state, or `[N, d]` projected row by row (a per-state σ: gSDE, a
/// state-dependent head) — with `log σ_old` and the radii as constants.
pub(crate) struct LogStdOp {
    /// `log σ_old`, `[d]` or `[N, d]` (state-major), as the input.
    pub(crate) old_log_std: Vec<f64>,
    /// The bound on V of each row (see [`super::working_radius`]): one
    /// radius for a shared σ, N for a per-state one.
    pub(crate) radius: Vec<f64>,
}

impl LogStdOp {
    /// The row length d.
    fn row(&self) -> usize {
        self.old_log_std.len() / self.radius.len().max(1)
    }
}

impl CustomOp1 for LogStdOp {
    fn name(&self) -> &'static str {
        "kl-projection-log-std"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (l, dtype) = host_values(self.name(), storage, layout)?;
        check_dim(self.name(), l.len(), self.old_log_std.len())?;
        let d = self.row();
        let mut out = Vec::with_capacity(l.len());
        for (s, &radius) in self.radius.iter().enumerate() {
            let r = s * d..(s + 1) * d;
            out.extend(project_log_std(&l[r.clone()], &self.old_log_std[r], radius).log_std);
        }
        Ok((storage_from_f64(out, dtype), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let l = tensor_values(arg)?;
        let g = tensor_values(grad_res)?;
        check_dim(self.name(), l.len(), self.old_log_std.len())?;
        let d = self.row();
        let mut dl = Vec::with_capacity(l.len());
        for (s, &radius) in self.radius.iter().enumerate() {
            let r = s * d..(s + 1) * d;
            dl.extend(project_log_std_vjp(
                &l[r.clone()],
                &self.old_log_std[r.clone()],
                radius,
                &g[r],
            ));
        }
        Tensor::from_vec(dl, arg.shape(), arg.device())?
            .to_dtype(arg.dtype())
            .map(Some)
    }
}

/// The mean projection as a candle op on `(μ [N, d], log σ̃)` with `log σ̃`
/// `[d]` (shared) or `[N, d]` (per state), with `μ_old` and the per-state
/// radii as constants.
pub(crate) struct MeanOp {
    /// `μ_old`, state-major `N × d`.
    pub(crate) old_mean: Vec<f64>,
    /// The bound on M of each state (see [`super::working_radius`]).
    pub(crate) radius: Vec<f64>,
    /// Action dimension d.
    pub(crate) dim: usize,
}

impl CustomOp2 for MeanOp {
    fn name(&self) -> &'static str {
        "kl-projection-mean"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (mean, dtype) = host_values(self.name(), s1, l1)?;
        let (log_std, _) = host_values(self.name(), s2, l2)?;
        let d = self.dim;
        check_dim(self.name(), mean.len(), self.old_mean.len())?;
        let per_state = log_std.len() != d;
        if per_state {
            check_dim(self.name(), log_std.len(), mean.len())?;
        }
        let mut out = Vec::with_capacity(mean.len());
        for (s, &radius) in self.radius.iter().enumerate() {
            let r = s * d..(s + 1) * d;
            let ls = if per_state {
                &log_std[r.clone()]
            } else {
                &log_std[..]
            };
            out.extend(project_mean_row(
                &mean[r.clone()],
                &self.old_mean[r],
                ls,
                radius,
            ));
        }
        Ok((storage_from_f64(out, dtype), l1.shape().clone()))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let mean = tensor_values(arg1)?;
        let log_std = tensor_values(arg2)?;
        let g = tensor_values(grad_res)?;
        let d = self.dim;
        check_dim(self.name(), mean.len(), self.old_mean.len())?;
        let per_state = log_std.len() != d;
        if per_state {
            check_dim(self.name(), log_std.len(), mean.len())?;
        }
        let mut d_mean = Vec::with_capacity(mean.len());
        let mut d_log_std = vec![0.0; log_std.len()];
        for (s, &radius) in self.radius.iter().enumerate() {
            let r = s * d..(s + 1) * d;
            let ls = if per_state {
                &log_std[r.clone()]
            } else {
                &log_std[..]
            };
            let (dm, dl) = project_mean_row_vjp(
                &mean[r.clone()],
                &self.old_mean[r.clone()],
                ls,
                radius,
                &g[r.clone()],
            );
            d_mean.extend(dm);
            let acc = if per_state {
                &mut d_log_std[r]
            } else {
                &mut d_log_std[..]
            };
            for (a, x) in acc.iter_mut().zip(dl) {
                *a += x;
            }
        }
        let d_mean =
            Tensor::from_vec(d_mean, arg1.shape(), arg1.device())?.to_dtype(arg1.dtype())?;
        let d_log_std =
            Tensor::from_vec(d_log_std, arg2.shape(), arg2.device())?.to_dtype(arg2.dtype())?;
        Ok((Some(d_mean), Some(d_log_std)))
    }
}

/// Checks that an op is applied to as many values as it was built for.
fn check_dim(op: &str, got: usize, expected: usize) -> candle_core::Result<()> {
    if got != expected {
        candle_core::bail!("{op}: built for {expected} values, applied to {got}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd<F: Fn(&[f64]) -> f64>(f: F, x: &[f64]) -> Vec<f64> {
        let h = 1e-6;
        (0..x.len())
            .map(|i| {
                let mut p = x.to_vec();
                p[i] += h;
                let mut m = x.to_vec();
                m[i] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn variance_projection_lands_on_the_boundary_and_has_the_right_gradient() {
        let l = [0.8, -0.5, 0.1];
        let lo = [0.0, 0.2, 0.1];
        let g = [0.7, -0.4, 1.3];
        let p = project_log_std(&l, &lo, 0.02);
        assert!(p.w > 0.0);
        assert!((variance_part(&p.log_std, &lo) - 0.02).abs() <= 1e-12);
        let ours = project_log_std_vjp(&l, &lo, 0.02, &g);
        let num = fd(
            |x| {
                let y = project_log_std(x, &lo, 0.02).log_std;
                y.iter().zip(&g).map(|(a, b)| a * b).sum()
            },
            &l,
        );
        for (a, b) in ours.iter().zip(&num) {
            assert!((a - b).abs() <= 1e-7, "{ours:?} vs {num:?}");
        }
        // inside: identity
        assert_eq!(project_log_std(&l, &lo, 10.0).log_std, l.to_vec());
    }

    #[test]
    fn mean_projection_has_the_right_gradient() {
        let mu = [1.0, -2.0];
        let mo = [0.5, -1.0];
        let ls = [0.3, -0.2];
        let g = [0.4, 1.1];
        let (dm, dl) = project_mean_row_vjp(&mu, &mo, &ls, 0.05, &g);
        let loss = |mu: &[f64], ls: &[f64]| -> f64 {
            project_mean_row(mu, &mo, ls, 0.05)
                .iter()
                .zip(&g)
                .map(|(a, b)| a * b)
                .sum()
        };
        let num_m = fd(|x| loss(x, &ls), &mu);
        let num_l = fd(|x| loss(&mu, x), &ls);
        for (a, b) in dm.iter().chain(&dl).zip(num_m.iter().chain(&num_l)) {
            assert!((a - b).abs() <= 1e-7, "{a} vs {b}");
        }
        let out = project_mean_row(&mu, &mo, &ls, 0.05);
        assert!((mean_part(&out, &mo, &ls) - 0.05).abs() <= 1e-14);
    }
}
