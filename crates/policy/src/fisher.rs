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
//!
//! The operator depends on the policy and its distributions, not the other
//! way round: `J` and `Jᵀ` come from the linearisation a policy's
//! [`Policy::dist_with_pullback`] returns, `M` from the distributions
//! (`Categorical`'s and `DiagGaussian`'s Fisher metric), and
//! `policy.fisher(obs, mask)` is the extension trait [`PolicyFisher`],
//! implemented for every [`Policy`].

use candle_core::Tensor;

use crate::categorical::{ActionMask, CategoricalMetric};
use crate::error::{check_finite, Context, PolicyError, Result};
use crate::flat::{extend_f64, tensor_from_f64};
use crate::gaussian::DiagGaussianMetric;
use crate::gsde::GsdeLinearization;
use crate::mlp::MlpLinearization;
use crate::policy::{Dist, Policy};

/// `policy.fisher(obs, mask)`: the Fisher of the mean KL, for every
/// [`Policy`] (bring it into scope with `use klrl_policy::PolicyFisher`).
pub trait PolicyFisher: Policy {
    /// The operator `v ↦ F v` of the mean KL's Hessian (the Fisher) at the
    /// current parameters, over the states `obs` (see [`crate::fisher`]).
    /// Build once per update, apply once per conjugate-gradient iteration.
    ///
    /// Errors: as [`Policy::dist`].
    fn fisher(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<FisherOperator>;

    /// `F v` of the mean KL over `obs` at the current parameters. Builds a
    /// [`FisherOperator`] each call; build it once with
    /// [`PolicyFisher::fisher`] when applying it repeatedly. Damping is the
    /// caller's ([`FisherOperator::apply_damped`]).
    fn fisher_vector_product(
        &self,
        obs: &Tensor,
        mask: Option<&ActionMask>,
        v: &[f64],
    ) -> Result<Vec<f64>>;
}

impl<P: Policy + ?Sized> PolicyFisher for P {
    fn fisher(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<FisherOperator> {
        FisherOperator::new(self, obs, mask)
    }

    fn fisher_vector_product(
        &self,
        obs: &Tensor,
        mask: Option<&ActionMask>,
        v: &[f64],
    ) -> Result<Vec<f64>> {
        self.fisher(obs, mask)?.apply(v)
    }
}

/// The metric `M` of the output distribution.
#[derive(Debug, Clone)]
enum OutputMetric {
    /// Softmax probabilities at θ_old (0 for masked actions); the logits
    /// are the MLP's outputs.
    Categorical(CategoricalMetric),
    /// `1 / (N σ²)` of shape `[d]`, and d (the log σ block's size): the
    /// means are the MLP's outputs, `log σ` a parameter of its own.
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
/// θ_old of the moment it was built ([`PolicyFisher::fisher`]).
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
    /// The Fisher of `policy`'s mean KL over the states `obs` at its current
    /// parameters: `J` from the linearisation of
    /// [`Policy::dist_with_pullback`], `M` from the distributions it returns.
    ///
    /// Errors: as [`Policy::dist`].
    pub fn new<P: Policy + ?Sized>(
        policy: &P,
        obs: &Tensor,
        mask: Option<&ActionMask>,
    ) -> Result<Self> {
        let c = "fisher metric";
        let (dist, pullback) = policy.dist_with_pullback(obs, mask)?;
        let (lin, log_std, gsde) = pullback.into_parts();
        let n = lin.batch_size() as f64;
        let dist = match dist {
            Dist::Categorical(d) => {
                let metric = OutputMetric::Categorical(d.fisher_metric()?);
                return Ok(Self::from_parts(lin, metric));
            }
            Dist::DiagGaussian(d) => d,
        };
        let inv_var_over_n = dist
            .fisher_metric()?
            .inv_var()
            .affine(1.0 / n, 0.0)
            .ctx(c)?;
        let metric = match (gsde, log_std) {
            // gSDE: log σ(s) through its head
            (Some(head), _) => OutputMetric::Gsde {
                inv_var_over_n,
                head,
            },
            // a state-independent log σ [d]
            (None, Some(log_std)) => OutputMetric::DiagGaussian {
                inv_var_over_n,
                dim: log_std.elem_count(),
            },
            // the state-dependent head: the MLP's outputs are (μ, log σ)
            (None, None) => {
                let two = Tensor::full(
                    DiagGaussianMetric::LOG_STD / n,
                    inv_var_over_n.shape(),
                    inv_var_over_n.device(),
                )
                .and_then(|t| t.to_dtype(inv_var_over_n.dtype()))
                .ctx(c)?;
                let weights = Tensor::cat(&[&inv_var_over_n, &two], 1).ctx(c)?;
                OutputMetric::GaussianHead { weights }
            }
        };
        Ok(Self::from_parts(lin, metric))
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
        let (u, _) = self.lin.jvp_flat(&v[..self.mlp_params])?;
        let mu = self.metric_times(&u)?;
        self.lin.vjp_flat_into(&mu, None, &mut out)?;
        // log σ block of a Gaussian: 2 v_logσ (the mean over states of a constant).
        out.extend(
            v[self.mlp_params..]
                .iter()
                .map(|x| DiagGaussianMetric::LOG_STD * x),
        );
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
        let (d_mean, d_features) = self.lin.jvp_flat(&v[..self.mlp_params])?;
        let d_param = tensor_from_f64(
            &v[self.mlp_params..],
            head.param_dims(),
            d_mean.dtype(),
            d_mean.device(),
        )?;
        let d_log_std = head.jvp(d_features.as_ref(), &d_param)?;
        let u_mean = (d_mean * inv_var_over_n).ctx(c)?;
        let u_log_std = d_log_std
            .affine(DiagGaussianMetric::LOG_STD / n, 0.0)
            .ctx(c)?;
        let (g_param, g_features) = head.vjp(&u_log_std)?;
        let mut out = Vec::with_capacity(v.len());
        self.lin
            .vjp_flat_into(&u_mean, g_features.as_ref(), &mut out)?;
        extend_f64(&mut out, &g_param)?;
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
            OutputMetric::Categorical(metric) => {
                let n = self.batch_size() as f64;
                metric.apply(u)?.affine(1.0 / n, 0.0).ctx(c)
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
