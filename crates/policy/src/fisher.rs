//! The Fisher-vector product `F v` of the mean KL, in the exact Gauss–Newton
//! form, without second derivatives.
//!
//! For a policy whose distribution at state s has parameters `z_s = f(s; θ)`
//! (logits or means), the Hessian of the mean KL `(1/N) Σ_s KL(π_old(·|s) ‖
//! π_θ(·|s))` at `θ = θ_old` is the Fisher information
//!
//! `F = (1/N) Σ_s J_sᵀ M_s J_s`,  `J_s = ∂z_s/∂θ`,
//!
//! where `M_s` is the Fisher metric of the distribution family in its own
//! parameters (Schulman et al. 2015, TRPO Appendix C; Martens, "New insights
//! and perspectives on the natural gradient method", JMLR 2020, §9.2):
//!
//! - categorical, `p = softmax(z)`: `M = diag(p) − p pᵀ`, so
//!   `(M u)_s = p_s ⊙ u_s − p_s (p_s · u_s)`. Masked actions have `p = 0` and
//!   drop out exactly.
//! - diagonal Gaussian with state-independent `log σ`: `M = diag(1/σ²)` on
//!   the mean, and the `log σ` block of `F` is `2 I` (no cross terms at θ_old).
//! - diagonal Gaussian with a per-state `log σ(s)` (gSDE, the state-dependent
//!   log-std head): in the per-state parameters `(μ_s, log σ_s)` the metric is
//!   `M_s = diag(1/σ_s², 2)` (the Fisher of `N(μ, σ²)` per dimension), and
//!   `J_s` is the Jacobian of `θ ↦ (μ_s, log σ_s)`: the MLP's for the head's
//!   2d outputs; for gSDE the MLP's on μ and [`GsdeLinearization`] on
//!   `log σ_s` (through gSDE's parameter and, with `learn_features`, the
//!   features).
//!
//! `F v = Jᵀ (M (J v)) / N` is computed with one forward-mode tangent pass
//! ([`crate::MlpLinearization::jvp`]) and one reverse pass
//! ([`crate::MlpLinearization::vjp`], the gradient of `Σ z ⊙ stopgrad(M J v) / N`).
//! No double backward is needed (candle detaches gradients unless
//! `CANDLE_GRAD_DO_NOT_DETACH=1`, huggingface/candle#2462). `F` is symmetric
//! positive semi-definite by construction.

use candle_core::{Tensor, D};

use crate::categorical::{masked_logits, ActionMask};
use crate::error::{check_finite, Context, PolicyError, Result};
use crate::flat::{tensor_from_f64, tensor_to_f64};
use crate::gsde::GsdeLinearization;
use crate::mlp::{Mlp, MlpLinearization};

/// The metric `M` of the output distribution.
#[derive(Debug, Clone)]
enum OutputMetric {
    /// Softmax probabilities `p [N, A]` at θ_old (0 for masked actions).
    Categorical { probs: Tensor },
    /// `1 / (N σ²)` of shape `[d]`, and d (the log σ block's size).
    DiagGaussian { inv_var_over_n: Tensor, dim: usize },
    /// A state-dependent log-std head, outputs `(μ, log σ) [N, 2d]`: the
    /// per-output weights `[1/(N σ²), 2/N]`, `[N, 2d]`.
    GaussianHead { weights: Tensor },
    /// gSDE: `1 / (N σ(s)²)` `[N, d]` on the means, `2/N` on `log σ(s)`,
    /// and the map from the features and gSDE's parameter to `log σ(s)`.
    Gsde {
        inv_var_over_n: Tensor,
        head: GsdeLinearization,
    },
}

/// The linear operator `v ↦ F v` for one batch of states at the parameters
/// θ_old of the moment it was built ([`crate::Policy::fisher`]).
///
/// Building it runs one forward pass and stores the activations; each
/// [`FisherOperator::apply`] then costs one tangent pass and one reverse pass
/// (about two forward passes' worth of matrix products). The operator keeps a
/// copy of θ_old: changing the policy's parameters afterwards (a line search)
/// does not change it.
#[derive(Debug, Clone)]
pub struct FisherOperator {
    lin: MlpLinearization,
    metric: OutputMetric,
    mlp_params: usize,
}

impl FisherOperator {
    /// The Fisher of a categorical policy with logits `mlp(obs)` (+ mask).
    pub(crate) fn categorical(mlp: &Mlp, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Self> {
        let (logits, lin) = mlp.linearize(obs)?;
        let logits = masked_logits(&logits, mask)?;
        let probs = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .and_then(|l| l.exp())
            .ctx("fisher probabilities")?;
        Ok(Self::from_parts(lin, OutputMetric::Categorical { probs }))
    }

    /// The Fisher of a diagonal Gaussian policy with mean `mlp(obs)` and
    /// state-independent `log_std [d]`.
    pub(crate) fn diag_gaussian(mlp: &Mlp, log_std: &Tensor, obs: &Tensor) -> Result<Self> {
        let (_, lin) = mlp.linearize(obs)?;
        let n = lin.batch_size() as f64;
        let inv_var_over_n = log_std
            .detach()
            .affine(-2.0, 0.0)
            .and_then(|x| x.exp())
            .and_then(|x| x.affine(1.0 / n, 0.0))
            .ctx("fisher 1/σ²")?;
        Ok(Self::from_parts(
            lin,
            OutputMetric::DiagGaussian {
                inv_var_over_n,
                dim: log_std.elem_count(),
            },
        ))
    }

    /// The Fisher of a Gaussian policy whose `mlp` outputs `(μ, log σ)`,
    /// `[N, 2d]`: the Gaussian metric `diag(1/σ², 2)` per state, in the
    /// outputs (no parameter outside the MLP).
    pub(crate) fn gaussian_head(mlp: &Mlp, obs: &Tensor, action_dim: usize) -> Result<Self> {
        let c = "fisher log-std head";
        let (out, lin) = mlp.linearize(obs)?;
        let n = lin.batch_size() as f64;
        let inv_var = out
            .narrow(1, action_dim, action_dim)
            .and_then(|l| l.affine(-2.0, 0.0))
            .and_then(|l| l.exp())
            .and_then(|x| x.affine(1.0 / n, 0.0))
            .ctx(c)?;
        let two = Tensor::full(2.0 / n, inv_var.shape(), inv_var.device())
            .and_then(|t| t.to_dtype(inv_var.dtype()))
            .ctx(c)?;
        let weights = Tensor::cat(&[&inv_var, &two], 1).ctx(c)?;
        Ok(Self::from_parts(
            lin,
            OutputMetric::GaussianHead { weights },
        ))
    }

    /// The Fisher of a gSDE policy linearised at `lin` (the mean MLP) and
    /// `head` (its per-state `log σ(s)`): `Jᵀ diag(1/σ(s)², 2) J / N` with J
    /// the Jacobian of `θ ↦ (μ(s), log σ(s))` (the variance's dependence on
    /// the features included when `learn_features`).
    pub(crate) fn gsde(lin: MlpLinearization, head: GsdeLinearization) -> Result<Self> {
        let n = lin.batch_size() as f64;
        let inv_var_over_n = head
            .log_std()
            .affine(-2.0, 0.0)
            .and_then(|x| x.exp())
            .and_then(|x| x.affine(1.0 / n, 0.0))
            .ctx("fisher gsde 1/σ²")?;
        Ok(Self::from_parts(
            lin,
            OutputMetric::Gsde {
                inv_var_over_n,
                head,
            },
        ))
    }

    fn from_parts(lin: MlpLinearization, metric: OutputMetric) -> Self {
        FisherOperator {
            mlp_params: lin.num_params(),
            lin,
            metric,
        }
    }

    /// Length of the vectors the operator acts on (the policy's `num_params()`).
    pub fn num_params(&self) -> usize {
        self.mlp_params + self.extra_params()
    }

    /// Number of states N the KL is averaged over.
    pub fn batch_size(&self) -> usize {
        self.lin.batch_size()
    }

    fn extra_params(&self) -> usize {
        match &self.metric {
            OutputMetric::Categorical { .. } | OutputMetric::GaussianHead { .. } => 0,
            OutputMetric::DiagGaussian { dim, .. } => *dim,
            OutputMetric::Gsde { head, .. } => head.param_len(),
        }
    }

    /// `F v` for a flat vector `v` in the policy's parameter order.
    ///
    /// Errors: [`PolicyError::FlatLength`] if `v.len() != num_params()`,
    /// [`PolicyError::NonFinite`] for NaN or infinite entries.
    pub fn apply(&self, v: &[f64]) -> Result<Vec<f64>> {
        if v.len() != self.num_params() {
            return Err(PolicyError::FlatLength {
                what: "fisher_vector_product",
                expected: self.num_params(),
                got: v.len(),
            });
        }
        check_finite("fisher_vector_product", v)?;
        if let OutputMetric::Gsde {
            inv_var_over_n,
            head,
        } = &self.metric
        {
            return self.apply_gsde(v, inv_var_over_n, head);
        }
        let mut out = Vec::with_capacity(v.len());
        let tangents = self.lin.tangents_from_flat(&v[..self.mlp_params])?;
        let u = self.lin.jvp(&tangents)?;
        let mu = self.metric_times(&u)?;
        for g in &self.lin.vjp(&mu)? {
            out.extend(tensor_to_f64(&g.weight)?);
            out.extend(tensor_to_f64(&g.bias)?);
        }
        // log σ block of a Gaussian: 2 v_logσ (the mean over states of a constant).
        out.extend(v[self.mlp_params..].iter().map(|x| 2.0 * x));
        Ok(out)
    }

    /// gSDE: `(dμ, dz) = J_mlp v`, `dℓ = J_ℓ (dz, v_L)`; then `Jᵀ` of
    /// `(dμ / (Nσ²), 2 dℓ / N)`.
    fn apply_gsde(
        &self,
        v: &[f64],
        inv_var_over_n: &Tensor,
        head: &GsdeLinearization,
    ) -> Result<Vec<f64>> {
        let c = "fisher gsde";
        let n = self.batch_size() as f64;
        let tangents = self.lin.tangents_from_flat(&v[..self.mlp_params])?;
        let (d_mean, d_features) = self.lin.jvp_with_features(&tangents)?;
        let d_param = tensor_from_f64(
            &v[self.mlp_params..],
            head.param_dims(),
            d_mean.dtype(),
            d_mean.device(),
        )?;
        let d_log_std = head.jvp(d_features.as_ref(), &d_param)?;
        let u_mean = (d_mean * inv_var_over_n).ctx(c)?;
        let u_log_std = d_log_std.affine(2.0 / n, 0.0).ctx(c)?;
        let (g_param, g_features) = head.vjp(&u_log_std)?;
        let mut out = Vec::with_capacity(v.len());
        for g in &self.lin.vjp_with_features(&u_mean, g_features.as_ref())? {
            out.extend(tensor_to_f64(&g.weight)?);
            out.extend(tensor_to_f64(&g.bias)?);
        }
        out.extend(tensor_to_f64(&g_param)?);
        Ok(out)
    }

    /// `(F + damping · I) v`, the damped product conjugate gradient solves with
    /// in TRPO (`cg_damping`, e.g. 0.1 in SB3-contrib, 1e-3 in the rl-zoo for
    /// CartPole).
    ///
    /// Errors: as [`FisherOperator::apply`], and
    /// [`PolicyError::InvalidParameter`] for a negative or non-finite `damping`.
    pub fn apply_damped(&self, v: &[f64], damping: f64) -> Result<Vec<f64>> {
        if !(damping.is_finite() && damping >= 0.0) {
            return Err(PolicyError::InvalidParameter {
                param: "damping",
                reason: format!("{damping}; must be finite and ≥ 0"),
            });
        }
        let mut fv = self.apply(v)?;
        fv.iter_mut().zip(v).for_each(|(f, x)| *f += damping * x);
        Ok(fv)
    }

    /// `M u / N` for output tangents `u [N, out]`.
    fn metric_times(&self, u: &Tensor) -> Result<Tensor> {
        let c = "fisher metric";
        match &self.metric {
            OutputMetric::Categorical { probs } => {
                let n = self.batch_size() as f64;
                let pu = (probs * u).ctx(c)?;
                let p_dot_u = pu.sum_keepdim(1).ctx(c)?;
                probs
                    .broadcast_mul(&p_dot_u)
                    .and_then(|x| pu - x)
                    .and_then(|x| x.affine(1.0 / n, 0.0))
                    .ctx(c)
            }
            OutputMetric::DiagGaussian { inv_var_over_n, .. } => {
                u.broadcast_mul(inv_var_over_n).ctx(c)
            }
            OutputMetric::GaussianHead { weights } => (u * weights).ctx(c),
            OutputMetric::Gsde { .. } => Err(PolicyError::InvalidParameter {
                param: "metric",
                reason: "gSDE's product goes through apply_gsde".to_string(),
            }),
        }
    }
}
