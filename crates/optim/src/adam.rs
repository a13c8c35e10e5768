//! Adam (Kingma & Ba 2015, "Adam: a method for stochastic optimization",
//! Algorithm 1) on flat parameter vectors, and global gradient-norm clipping.
//!
//! klrl keeps the optimiser on the host instead of using `candle_nn::AdamW`:
//! its moments are plain vectors that checkpoints save and restore exactly
//! (candle's are private), there is no weight decay to forget to turn off
//! (candle's AdamW defaults to 0.01), and clipping the global norm of the
//! policy and value gradients together is one pass over one vector.

use candle_core::{backprop::GradStore, Var};
use klrl_policy::flat;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// Adam's state and hyperparameters for one flat parameter vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// β₁, decay of the first-moment estimate; default 0.9.
    pub beta1: f64,
    /// β₂, decay of the second-moment estimate; default 0.999.
    pub beta2: f64,
    /// ε added to the denominator; default 1e-5 (the PPO implementations'
    /// choice, Huang et al. 2022 detail 3; PyTorch's default is 1e-8).
    pub eps: f64,
    /// First-moment estimate m.
    pub m: Vec<f64>,
    /// Second-moment estimate v.
    pub v: Vec<f64>,
    /// Steps taken (t in the paper).
    pub t: u64,
}

impl Adam {
    /// Zero moments for `n` parameters with the given ε and β₁ = 0.9, β₂ = 0.999.
    pub fn new(n: usize, eps: f64) -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// One descent step θ ← θ − lr · m̂ / (√v̂ + ε) for gradient `grad` of the
    /// loss, in PyTorch's form (bias corrections applied to m and to √v).
    ///
    /// # Panics
    /// If the lengths differ from [`Adam::len`] (a programming error: the
    /// optimiser is built for the network it steps).
    pub fn step(&mut self, theta: &mut [f64], grad: &[f64], lr: f64) {
        assert_eq!(theta.len(), self.len(), "Adam: parameter length");
        assert_eq!(grad.len(), self.len(), "Adam: gradient length");
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        // One pass of independent lanes (zipped slices, no bounds checks): the
        // compiler vectorises it.
        for (((t, &g), m), v) in theta
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *t -= step_size * *m / denom;
        }
    }
}

impl Adam {
    /// [`Adam::step`] only if every new parameter is finite and at most
    /// `limit` in magnitude (the largest value the network's dtype holds, see
    /// [`largest_value`]). Returns whether the step was taken; if not,
    /// `theta` and the moments are untouched.
    ///
    /// Each coordinate moves by step_size · |m′| / (√v̂′ + ε) ≤ step_size ·
    /// (β₁|m| + (1 − β₁)|g|) / ε, so when Σ|θ| + step_size · (β₁ Σ|m| +
    /// (1 − β₁) Σ|g|) / ε ≤ `limit` (three sums, in which a NaN or ∞
    /// propagates) every new parameter fits and the step is taken at once.
    /// Otherwise — absurd learning rates, parameters near the limit — a
    /// first pass computes the new parameters without changing anything and
    /// the step is taken only if they all fit.
    pub fn try_step(&mut self, theta: &mut [f64], grad: &[f64], lr: f64, limit: f64) -> bool {
        assert_eq!(theta.len(), self.len(), "Adam: parameter length");
        assert_eq!(grad.len(), self.len(), "Adam: gradient length");
        let t = (self.t + 1) as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let l1 = |x: &[f64]| x.iter().map(|x| x.abs()).sum::<f64>();
        let bound = l1(theta)
            + step_size * (self.beta1 * l1(&self.m) + (1.0 - self.beta1) * l1(grad)) / self.eps;
        if bound <= limit {
            self.step(theta, grad, lr);
            return true;
        }
        let fits = (0..theta.len()).all(|i| {
            let g = grad[i];
            let m = self.beta1 * self.m[i] + (1.0 - self.beta1) * g;
            let v = self.beta2 * self.v[i] + (1.0 - self.beta2) * g * g;
            let next = theta[i] - step_size * m / (v.sqrt() / bc2_sqrt + self.eps);
            next.is_finite() && next.abs() <= limit
        });
        if fits {
            self.step(theta, grad, lr);
        }
        fits
    }

    /// One Adam step on network variables from the gradients of a backward
    /// pass: reads the flat gradient of `vars`, clips its global norm to
    /// `max_grad_norm`, steps, and writes the parameters back. Returns the
    /// gradient norm before clipping.
    ///
    /// Errors: a non-finite gradient, or new parameters that are not finite
    /// or do not fit the variables' dtype ([`OptimError::NonFinite`]), leave
    /// the parameters and the moments unchanged.
    pub fn step_vars(
        &mut self,
        vars: &[Var],
        grads: &GradStore,
        lr: f64,
        max_grad_norm: f64,
        update: u64,
    ) -> Result<f64> {
        let grad = flat::flat_grad_from_store(vars, grads)?;
        self.step_flat(vars, grad, lr, max_grad_norm, update)
    }

    /// [`Adam::step_vars`] with the gradient already a flat vector (in the
    /// order of `vars`), e.g. assembled from several backward passes.
    pub fn step_flat(
        &mut self,
        vars: &[Var],
        mut grad: Vec<f64>,
        lr: f64,
        max_grad_norm: f64,
        update: u64,
    ) -> Result<f64> {
        let norm = clip_grad_norm(&mut grad, max_grad_norm);
        if !norm.is_finite() {
            return Err(OptimError::NonFinite {
                what: "gradient",
                update,
            });
        }
        let mut theta = flat::get_flat(vars)?;
        if !self.try_step(&mut theta, &grad, lr, largest_value(vars)) {
            return Err(OptimError::NonFinite {
                what: "new parameters",
                update,
            });
        }
        flat::set_flat(vars, &theta)?;
        Ok(norm)
    }
}

/// The largest magnitude the dtype of `vars` holds (f32's for an f32
/// network: a larger f64 value would be stored as infinity).
pub fn largest_value(vars: &[Var]) -> f64 {
    match vars.first().map(|v| v.dtype()) {
        Some(candle_core::DType::F64) | None => f64::MAX,
        Some(candle_core::DType::F16) => 65504.0,
        Some(candle_core::DType::BF16) => 3.389_531_389_251_535e38,
        Some(_) => f64::from(f32::MAX),
    }
}

/// Scale `grad` so its Euclidean norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping. A non-finite
/// `max_norm` disables clipping.
pub fn clip_grad_norm(grad: &mut [f64], max_norm: f64) -> f64 {
    let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    if max_norm.is_finite() && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grad.iter_mut() {
            *g *= scale;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first Adam step moves every coordinate by lr · sign(g) (up to ε):
    /// m̂ = g, √v̂ = |g|.
    #[test]
    fn first_step_is_lr_times_sign() {
        let mut adam = Adam::new(3, 1e-8);
        let mut theta = vec![1.0, 2.0, 3.0];
        adam.step(&mut theta, &[0.5, -4.0, 1e-3], 0.1);
        let expected = [0.9, 2.1, 2.9];
        for (t, e) in theta.iter().zip(expected) {
            assert!((t - e).abs() < 1e-6, "{theta:?}");
        }
    }

    /// Two steps against a hand computation with β₁ = 0.9, β₂ = 0.999.
    #[test]
    fn two_steps_match_the_closed_form() {
        let mut adam = Adam::new(1, 1e-5);
        let mut theta = vec![0.0];
        adam.step(&mut theta, &[1.0], 0.01);
        adam.step(&mut theta, &[3.0], 0.01);
        let m: f64 = 0.9 * 0.1 + 0.1 * 3.0; // 0.39
        let v: f64 = 0.999 * 0.001 + 0.001 * 9.0; // 0.009999
        let m_hat = m / (1.0 - 0.81);
        let denom = v.sqrt() / (1.0 - 0.999f64 * 0.999).sqrt() + 1e-5;
        let first = 0.01 * 1.0 / (1.0 + 1e-5);
        let expected = -first - 0.01 * m_hat / denom;
        assert!(
            (theta[0] - expected).abs() < 1e-12,
            "{} vs {expected}",
            theta[0]
        );
    }

    /// A step that would leave the dtype's range is refused and changes
    /// nothing; a normal one is the same as `step`.
    #[test]
    fn try_step_refuses_parameters_out_of_range_and_changes_nothing() {
        let mut adam = Adam::new(2, 1e-8);
        adam.step(&mut vec![0.0, 0.0], &[0.3, -0.2], 0.1);
        let before = adam.clone();
        let mut theta = vec![f64::from(f32::MAX) * 0.999, 1.0];
        let kept = theta.clone();
        assert!(!adam.try_step(&mut theta, &[-1.0, 1.0], 1e36, f64::from(f32::MAX)));
        assert_eq!((theta, &adam), (kept, &before));
        let mut huge_lr = vec![1.0, 1.0];
        assert!(!adam.try_step(&mut huge_lr, &[1.0, 1.0], f64::INFINITY, f64::MAX));
        assert_eq!(adam, before);
        let (mut a, mut b) = (vec![1.0, 2.0], vec![1.0, 2.0]);
        let mut twin = adam.clone();
        assert!(adam.try_step(&mut a, &[0.5, 0.5], 0.01, f64::MAX));
        twin.step(&mut b, &[0.5, 0.5], 0.01);
        assert_eq!((a, adam), (b, twin));
    }

    #[test]
    fn minimises_a_quadratic() {
        let mut adam = Adam::new(2, 1e-8);
        let mut theta = vec![5.0, -3.0];
        for _ in 0..2000 {
            let grad = [2.0 * (theta[0] - 1.0), 20.0 * (theta[1] + 2.0)];
            adam.step(&mut theta, &grad, 0.05);
        }
        assert!(
            (theta[0] - 1.0).abs() < 1e-3 && (theta[1] + 2.0).abs() < 1e-3,
            "{theta:?}"
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_original() {
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 0.5), 5.0);
        let n = (g[0] * g[0] + g[1] * g[1]).sqrt();
        assert!((n - 0.5).abs() < 1e-6);
        assert!((g[0] / g[1] - 0.75).abs() < 1e-12);
        let mut small = vec![0.1, 0.1];
        clip_grad_norm(&mut small, 0.5);
        assert_eq!(small, vec![0.1, 0.1]);
        let mut any = vec![30.0, 40.0];
        assert_eq!(clip_grad_norm(&mut any, f64::INFINITY), 50.0);
        assert_eq!(any, vec![30.0, 40.0]);
    }
}
