//! Generalized state-dependent exploration (gSDE; Raffin, Kober & Stulp,
//! "Smooth exploration for robotic reinforcement learning", CoRL 2021,
//! arXiv 2005.05719, §3), as Stable-Baselines3 implements it
//! (`stable_baselines3/common/distributions.py`,
//! `StateDependentNoiseDistribution`).
//!
//! The policy's action at state s is `a = μ(s) + ε(s)` with the noise
//!
//! `ε(s) = θ_εᵀ z(s)`,  `θ_ε,ij ~ N(0, σ_ij²)`  (paper eq. 4–5),
//!
//! where `z(s)` are the policy network's last hidden features and the noise
//! matrix `θ_ε [latent, d]` is held fixed for `sde_sample_freq` steps (one
//! matrix per environment copy, as SB3's `reset_noise(n_envs)`). For a fixed
//! state the action is Gaussian with a diagonal covariance
//!
//! `Var[a_j | s] = Σ_i z_i(s)² σ_ij² + ε_var`  (paper eq. 6; `ε_var` = 10⁻⁶ as SB3),
//!
//! so log-probabilities, entropies and exact per-state KLs are those of
//! [`crate::DiagGaussian`] with a per-state `log σ_j(s) = ½ log Var[a_j | s]`.
//!
//! The learned parameter is `L = log σ` of shape `[latent, d]` (`full_std`,
//! SB3's default) or `[latent, 1]` (one σ per feature, shared by every action
//! dimension). With `use_expln`, `σ = exp(L)` for `L ≤ 0` and
//! `σ = ln(1 + L + 10⁻⁶) + 1` for `L > 0` (the paper's expln: the variance
//! grows like a logarithm, not an exponential). With `learn_features =
//! false` (SB3's default) the features in the variance are detached: the
//! variance's gradient reaches `L` only. With `learn_features = true` it
//! reaches the MLP through `z(s)` too, and the hand-written passes
//! ([`GsdeLinearization`]) carry that term.

use candle_core::Tensor;
use rand::{Rng, RngCore};
use rand_distr::StandardNormal;

use crate::error::{Context, PolicyError, Result};
use crate::flat::{tensor_from_f64, tensor_to_f64};

/// `ε_var`, added to every variance (SB3's `epsilon`): keeps `log σ(s)`
/// finite where all features are 0 (e.g. ReLU features at some states).
pub const GSDE_VARIANCE_EPS: f64 = 1e-6;

/// The gSDE options, with SB3's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GsdeConfig {
    /// `true`: one σ per (feature, action) pair, `L [latent, d]`; `false`:
    /// one σ per feature row, `L [latent, 1]`, broadcast over the action
    /// dimensions. SB3 default `true`.
    pub full_std: bool,
    /// The expln transform `σ = exp(L)` (L ≤ 0), `ln(1 + L + 10⁻⁶) + 1`
    /// (L > 0) instead of `σ = exp(L)`. SB3 default `false`.
    pub use_expln: bool,
    /// Let the variance depend on the features `z(s)` in the gradient (and
    /// so on the MLP's parameters). SB3 default `false` (detached).
    pub learn_features: bool,
}

impl GsdeConfig {
    /// SB3's defaults: `full_std = true`, `use_expln = false`,
    /// `learn_features = false`.
    pub fn sb3() -> Self {
        GsdeConfig {
            full_std: true,
            use_expln: false,
            learn_features: false,
        }
    }

    /// Columns of the parameter `L`: d (`full_std`) or 1.
    pub fn log_std_cols(&self, action_dim: usize) -> usize {
        if self.full_std {
            action_dim
        } else {
            1
        }
    }
}

/// `σ(L)` elementwise, differentiable (candle ops).
fn std_of(log_std: &Tensor, expln: bool) -> candle_core::Result<Tensor> {
    if !expln {
        return log_std.exp();
    }
    // exp(min(L, 0)): the branch not taken must not overflow (0 · ∞ = NaN in
    // the backward of where_cond).
    let below = log_std.minimum(0.0)?.exp()?;
    let above = log_std
        .relu()?
        .affine(1.0, 1.0 + GSDE_VARIANCE_EPS)?
        .log()?
        .affine(1.0, 1.0)?;
    log_std.le(0.0)?.where_cond(&below, &above)
}

/// The full `σ² [latent, d]` from `L [latent, d or 1]`, differentiable.
fn variance_matrix(log_std: &Tensor, action_dim: usize, config: &GsdeConfig) -> Result<Tensor> {
    let c = "gsde variance matrix";
    let std = std_of(log_std, config.use_expln).ctx(c)?;
    let std = if config.full_std {
        std
    } else {
        std.broadcast_as((log_std.dims()[0], action_dim)).ctx(c)?
    };
    std.sqr().ctx(c)
}

/// Per-state `log σ(s) = ½ log(z(s)² σ² + ε_var)`, `[N, d]`, differentiable
/// in `log_std` and (with `learn_features`) in `features`.
///
/// - `features`: `z(s)`, `[N, latent]` (detached here unless `learn_features`).
/// - `log_std`: `L`, `[latent, d]` or `[latent, 1]`.
pub(crate) fn state_log_std(
    features: &Tensor,
    log_std: &Tensor,
    action_dim: usize,
    config: &GsdeConfig,
) -> Result<Tensor> {
    let c = "gsde log std";
    let z = if config.learn_features {
        features.clone()
    } else {
        features.detach()
    };
    let s = variance_matrix(log_std, action_dim, config)?;
    z.sqr()
        .and_then(|z2| z2.matmul(&s))
        .and_then(|v| v.affine(1.0, GSDE_VARIANCE_EPS))
        .and_then(|v| v.log())
        .and_then(|v| v.affine(0.5, 0.0))
        .ctx(c)
}

/// The map `(z, L) ↦ log σ(s)` linearised at fixed features and parameters:
/// what the Jacobian-vector and vector-Jacobian products of the policy's
/// hand-written passes need (see [`crate::pullback`], [`crate::fisher`]).
///
/// With `V = z² S + ε_var`, `S = σ(L)²` and `ℓ = ½ log V`:
///
/// `dℓ = (2 (z ⊙ dz) S + z² dS) ⊘ (2V)`,  `dS = 2 σ σ'(L) ⊙ dL`;
///
/// the transposes are `∂L = (z²)ᵀ w ⊙ 2σσ'` (summed over the action columns
/// without `full_std`) and `∂z = 2 z ⊙ (w Sᵀ)` with `w = u ⊘ (2V)`.
#[derive(Debug, Clone)]
pub struct GsdeLinearization {
    /// `z [N, latent]`.
    z: Tensor,
    /// `z² [N, latent]`.
    z2: Tensor,
    /// `S = σ² [latent, d]`.
    s: Tensor,
    /// `∂S/∂L = 2σσ'(L)`, `[latent, d]`.
    ds_dl: Tensor,
    /// `1 / (2V)`, `[N, d]`.
    half_inv_v: Tensor,
    /// Per-state `log σ(s) = ½ log V`, `[N, d]`.
    log_std: Tensor,
    config: GsdeConfig,
    /// Shape of `L`.
    param_dims: Vec<usize>,
}

impl GsdeLinearization {
    /// The linearisation at features `features [N, latent]` (detached) and
    /// the parameter `log_std` (`L`, read once).
    pub(crate) fn new(
        features: &Tensor,
        log_std: &Tensor,
        action_dim: usize,
        config: &GsdeConfig,
    ) -> Result<Self> {
        let c = "gsde linearize";
        let dtype = log_std.dtype();
        let device = log_std.device();
        let latent = log_std.dims()[0];
        let cols = log_std.dims()[1];
        let l = tensor_to_f64(log_std)?;
        // σ and σ' on the host in f64 (latent · d values)
        let (std, dstd) = std_host(&l, latent, cols, action_dim, config);
        let s: Vec<f64> = std.iter().map(|x| x * x).collect();
        let ds: Vec<f64> = std.iter().zip(&dstd).map(|(a, b)| 2.0 * a * b).collect();
        let s_host = tensor_from_f64(&s, &[latent, action_dim], dtype, device)?;
        let ds_dl = tensor_from_f64(&ds, &[latent, action_dim], dtype, device)?;
        let z = features.detach();
        let z2 = z.sqr().ctx(c)?;
        // The same ops as `state_log_std`, so ℓ here and in `Policy::dist` agree.
        let s_t = variance_matrix(&log_std.detach(), action_dim, config)?;
        let v = z2
            .matmul(&s_t)
            .and_then(|v| v.affine(1.0, GSDE_VARIANCE_EPS))
            .ctx(c)?;
        let log_std_s = v.log().and_then(|v| v.affine(0.5, 0.0)).ctx(c)?;
        let half_inv_v = v.recip().and_then(|v| v.affine(0.5, 0.0)).ctx(c)?;
        Ok(GsdeLinearization {
            z,
            z2,
            s: s_host,
            ds_dl,
            half_inv_v,
            log_std: log_std_s,
            config: *config,
            param_dims: log_std.dims().to_vec(),
        })
    }

    /// Per-state `log σ(s)`, `[N, d]`.
    pub fn log_std(&self) -> &Tensor {
        &self.log_std
    }

    /// Shape of `L`.
    pub fn param_dims(&self) -> &[usize] {
        &self.param_dims
    }

    /// Number of entries of `L`.
    pub fn param_len(&self) -> usize {
        self.param_dims.iter().product()
    }

    /// `dℓ [N, d]` for the parameter tangent `d_log_std` (shape of `L`) and,
    /// with `learn_features`, the features' tangent `d_features [N, latent]`.
    pub fn jvp(&self, d_features: Option<&Tensor>, d_log_std: &Tensor) -> Result<Tensor> {
        let c = "gsde jvp";
        let ds = self.ds_dl.broadcast_mul(d_log_std).ctx(c)?;
        let mut dv = self.z2.matmul(&ds).ctx(c)?;
        if let (true, Some(dz)) = (self.config.learn_features, d_features) {
            let zdz = (&self.z * dz).and_then(|x| x.affine(2.0, 0.0)).ctx(c)?;
            dv = (dv + zdz.matmul(&self.s).ctx(c)?).ctx(c)?;
        }
        (dv * &self.half_inv_v).ctx(c)
    }

    /// The transpose: for `u = ∂/∂ℓ [N, d]`, the gradient at `L` (its
    /// shape) and, with `learn_features`, at the features `[N, latent]`.
    pub fn vjp(&self, u: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let c = "gsde vjp";
        if u.dims() != self.half_inv_v.dims() {
            return Err(PolicyError::Shape {
                what: "gsde log_std cotangent",
                expected: format!("{:?}", self.half_inv_v.dims()),
                got: u.dims().to_vec(),
            });
        }
        let w = (u * &self.half_inv_v).ctx(c)?;
        let g_s = self.z2.t().and_then(|z| z.matmul(&w)).ctx(c)?;
        let mut g_l = (g_s * &self.ds_dl).ctx(c)?;
        if !self.config.full_std {
            g_l = g_l.sum_keepdim(1).ctx(c)?;
        }
        let g_z = if self.config.learn_features {
            let ws = w.matmul(&self.s.t().ctx(c)?).ctx(c)?;
            Some((&self.z * ws).and_then(|x| x.affine(2.0, 0.0)).ctx(c)?)
        } else {
            None
        };
        Ok((g_l, g_z))
    }
}

/// The exploration matrices `θ_ε`, one per environment copy, drawn from
/// `N(0, σ²)` with the σ of the moment they were drawn (SB3's
/// `sample_weights(log_std, batch_size=n_envs)`).
#[derive(Debug, Clone, PartialEq)]
pub struct SdeNoise {
    copies: usize,
    latent: usize,
    action_dim: usize,
    /// copy-major, then row-major `[copies, latent, d]`.
    weights: Vec<f64>,
}

impl SdeNoise {
    /// Draws `copies` matrices with entries `σ_ij · N(0, 1)` from `rng`, in
    /// the order copy, feature, action.
    ///
    /// - `std`: the full `σ [latent, d]`, row-major, all > 0.
    pub fn sample(
        std: &[f64],
        latent: usize,
        action_dim: usize,
        copies: usize,
        rng: &mut dyn RngCore,
    ) -> Result<Self> {
        if std.len() != latent * action_dim {
            return Err(PolicyError::FlatLength {
                what: "gsde std matrix",
                expected: latent * action_dim,
                got: std.len(),
            });
        }
        let mut weights = Vec::with_capacity(copies * std.len());
        for _ in 0..copies {
            for &s in std {
                let e: f64 = rng.sample(StandardNormal);
                weights.push(s * e);
            }
        }
        Ok(SdeNoise {
            copies,
            latent,
            action_dim,
            weights,
        })
    }

    /// Number of copies (matrices).
    pub fn copies(&self) -> usize {
        self.copies
    }

    /// Feature width (rows of each matrix).
    pub fn latent(&self) -> usize {
        self.latent
    }

    /// Action dimension (columns of each matrix).
    pub fn action_dim(&self) -> usize {
        self.action_dim
    }

    /// The matrices, `[copies, latent, d]` flattened row-major.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// `ε = θ_ε[e]ᵀ z` for copy `e` (row `e` of the features) and every copy:
    /// `features` is `[copies, latent]` row-major; returns `[copies, d]`.
    ///
    /// Errors: [`PolicyError::FlatLength`] for features of the wrong size.
    pub fn noise(&self, features: &[f64]) -> Result<Vec<f64>> {
        if features.len() != self.copies * self.latent {
            return Err(PolicyError::FlatLength {
                what: "gsde features",
                expected: self.copies * self.latent,
                got: features.len(),
            });
        }
        let (k, d) = (self.latent, self.action_dim);
        let mut out = vec![0.0; self.copies * d];
        for e in 0..self.copies {
            let z = &features[e * k..(e + 1) * k];
            let m = &self.weights[e * k * d..(e + 1) * k * d];
            for (i, &zi) in z.iter().enumerate() {
                for j in 0..d {
                    out[e * d + j] += zi * m[i * d + j];
                }
            }
        }
        Ok(out)
    }
}

/// `σ(L)` and `σ'(L)` of the full `[latent, d]` matrix (row-major, f64)
/// from the parameter `L` (`[latent, cols]`, cols = d or 1).
fn std_host(
    l: &[f64],
    latent: usize,
    cols: usize,
    action_dim: usize,
    config: &GsdeConfig,
) -> (Vec<f64>, Vec<f64>) {
    let mut std = Vec::with_capacity(latent * action_dim);
    let mut dstd = Vec::with_capacity(latent * action_dim);
    for i in 0..latent {
        for j in 0..action_dim {
            let x = l[i * cols + if config.full_std { j } else { 0 }];
            let (s, ds) = if !config.use_expln || x <= 0.0 {
                (x.exp(), x.exp())
            } else {
                let y = 1.0 + x + GSDE_VARIANCE_EPS;
                (y.ln() + 1.0, 1.0 / y)
            };
            std.push(s);
            dstd.push(ds);
        }
    }
    (std, dstd)
}

/// `σ [latent, d]` (full, row-major, f64) of the parameter `log_std`.
pub(crate) fn std_matrix_host(
    log_std: &Tensor,
    action_dim: usize,
    config: &GsdeConfig,
) -> Result<Vec<f64>> {
    let (latent, cols) = (log_std.dims()[0], log_std.dims()[1]);
    let l = tensor_to_f64(log_std)?;
    Ok(std_host(&l, latent, cols, action_dim, config).0)
}

/// The rollout's per-state `log σ(s) = ½ ln(Σ_i z_i² σ_ij² + ε_var)` and
/// noise `θ_e ᵀ z(s_e)`, both `[copies, d]`, on the host in f64 from the
/// features `z [copies, latent]` (row-major) and the parameter `log_std`:
/// one pass over the features instead of a chain of small tensor ops.
pub(crate) fn rollout_log_std_and_noise(
    features: &[f64],
    log_std: &Tensor,
    noise: &SdeNoise,
    config: &GsdeConfig,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (k, d) = (noise.latent, noise.action_dim);
    let std = std_matrix_host(log_std, d, config)?;
    if std.len() != k * d {
        return Err(PolicyError::FlatLength {
            what: "gsde std matrix",
            expected: k * d,
            got: std.len(),
        });
    }
    let eps = noise.noise(features)?;
    let mut ls = vec![0.0; noise.copies * d];
    for e in 0..noise.copies {
        let z = &features[e * k..(e + 1) * k];
        for j in 0..d {
            let v: f64 = z
                .iter()
                .enumerate()
                .map(|(i, zi)| (zi * std[i * d + j]).powi(2))
                .sum();
            ls[e * d + j] = 0.5 * (v + GSDE_VARIANCE_EPS).ln();
        }
    }
    Ok((ls, eps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// expln's σ and its derivative against the candle version and central
    /// differences, on both sides of 0.
    #[test]
    fn expln_matches_its_derivative() {
        let cfg = GsdeConfig {
            full_std: true,
            use_expln: true,
            learn_features: false,
        };
        let l = [-1.5, -0.2, 0.3, 2.0];
        let t = Tensor::from_vec(l.to_vec(), (2, 2), &Device::Cpu).unwrap();
        let z = Tensor::from_vec(vec![1.0f64, 0.0, 0.0, 1.0], (2, 2), &Device::Cpu).unwrap();
        let lin = GsdeLinearization::new(&z, &t, 2, &cfg).unwrap();
        let s = tensor_to_f64(&lin.s).unwrap();
        let ds = tensor_to_f64(&lin.ds_dl).unwrap();
        let var = tensor_to_f64(&variance_matrix(&t, 2, &cfg).unwrap()).unwrap();
        for k in 0..4 {
            assert!((s[k] - var[k]).abs() <= 1e-15 * var[k], "{k}");
            let h = 1e-6;
            let f = |x: f64| {
                let y = Tensor::from_vec(vec![x], 1, &Device::Cpu).unwrap();
                tensor_to_f64(&std_of(&y, true).unwrap()).unwrap()[0].powi(2)
            };
            let fd = (f(l[k] + h) - f(l[k] - h)) / (2.0 * h);
            assert!(
                (fd - ds[k]).abs() <= 1e-8 * ds[k].abs().max(1.0),
                "{k}: {fd} vs {}",
                ds[k]
            );
        }
        // The L > 0 branch: σ = ln(1 + L + 1e-6) + 1.
        assert!((s[3].sqrt() - ((3.0f64 + 1e-6).ln() + 1.0)).abs() < 1e-15);
        // candle's gradient of Σσ² through where_cond is finite for large L
        let v = Var::from_tensor(&Tensor::new(&[800.0f64, -800.0], &Device::Cpu).unwrap()).unwrap();
        let g = std_of(v.as_tensor(), true)
            .and_then(|s| s.sqr())
            .and_then(|s| s.sum_all())
            .and_then(|s| s.backward())
            .unwrap();
        let g = tensor_to_f64(g.get(v.as_tensor()).unwrap()).unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }

    #[test]
    fn noise_is_theta_transpose_z_per_copy() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let std = [1.0, 2.0, 0.5, 0.25, 3.0, 1.5]; // [3, 2]
        let n = SdeNoise::sample(&std, 3, 2, 2, &mut rng).unwrap();
        let z = [1.0, -2.0, 0.5, 0.0, 1.0, 3.0];
        let e = n.noise(&z).unwrap();
        let w = n.weights();
        for c in 0..2 {
            for j in 0..2 {
                let want: f64 = (0..3).map(|i| z[c * 3 + i] * w[c * 6 + i * 2 + j]).sum();
                assert_eq!(e[c * 2 + j], want);
            }
        }
        assert!(n.noise(&z[..4]).is_err());
        assert!(SdeNoise::sample(&std[..5], 3, 2, 1, &mut rng).is_err());
    }

    use rand::SeedableRng;
}
