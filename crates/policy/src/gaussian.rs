//! The diagonal Gaussian distribution over continuous actions, with a log
//! standard deviation shared by all states or one per state, and its Fisher
//! metric. The policy that makes it from a network is
//! [`crate::DiagGaussianPolicy`].

use candle_core::Tensor;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{Context, PolicyError, Result};
use crate::flat::tensor_to_f64;

/// `ln(2π)`, as [`DiagGaussian::log_prob`] uses it.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A batch of N diagonal Gaussians `N(μ_s, diag(σ_s²))` over d-dimensional
/// actions, with a log standard deviation shared by all states (`[d]`) or
/// one per state (`[N, d]`: gSDE, a state-dependent log-std head).
#[derive(Debug, Clone)]
pub struct DiagGaussian {
    mean: Tensor,
    log_std: Tensor,
}

impl DiagGaussian {
    /// The distributions with means `mean [N, d]` and log standard deviations
    /// `log_std`, either `[d]` (shared by all N states) or `[N, d]` (per
    /// state). Both are copied (the copies stay in the gradient graph), so
    /// later changes to the variables they came from do not change the
    /// distribution.
    ///
    /// Errors: [`PolicyError::Shape`] unless the shapes are `[N, d]` and
    /// `[d]` or `[N, d]`, [`PolicyError::DType`] if their dtypes differ.
    pub fn new(mean: &Tensor, log_std: &Tensor) -> Result<Self> {
        let (n, d) = match mean.dims() {
            &[n, d] if d >= 1 => (n, d),
            got => {
                return Err(PolicyError::Shape {
                    what: "mean",
                    expected: "[N, d] with d ≥ 1".to_string(),
                    got: got.to_vec(),
                })
            }
        };
        if log_std.dims() != [d] && log_std.dims() != [n, d] {
            return Err(PolicyError::Shape {
                what: "log_std",
                expected: format!("[{d}] or [{n}, {d}]"),
                got: log_std.dims().to_vec(),
            });
        }
        crate::flat::check_float_dtype(mean.dtype())?;
        if log_std.dtype() != mean.dtype() {
            return Err(PolicyError::DType {
                what: "log_std",
                expected: mean.dtype(),
                got: log_std.dtype(),
            });
        }
        // Own copies (still differentiable): a tensor that shares storage with
        // a Var would change when the Var is set, and `detach()` must give a
        // snapshot (π_old) that survives a parameter update.
        // Contiguous (a state-dependent head's columns are strided views of
        // its outputs): index_select and the projection's ops need it.
        Ok(DiagGaussian {
            mean: mean
                .contiguous()
                .and_then(|t| t.copy())
                .ctx("gaussian mean")?,
            log_std: log_std
                .contiguous()
                .and_then(|t| t.copy())
                .ctx("gaussian log_std")?,
        })
    }

    /// Means `[N, d]`.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// Log standard deviations: `[d]` shared by every state, or `[N, d]`
    /// ([`DiagGaussian::is_state_dependent`]).
    pub fn log_std(&self) -> &Tensor {
        &self.log_std
    }

    /// Whether each state has its own `log σ` (`log_std` is `[N, d]`).
    pub fn is_state_dependent(&self) -> bool {
        self.log_std.rank() == 2
    }

    /// `Σ_j log σ_j`: a scalar when shared, `[N]` per state.
    fn sum_log_std(&self) -> candle_core::Result<Tensor> {
        if self.is_state_dependent() {
            self.log_std.sum(1)
        } else {
            self.log_std.sum_all()
        }
    }

    /// Number of states N.
    pub fn batch_size(&self) -> usize {
        self.mean.dims()[0]
    }

    /// Action dimension d.
    pub fn action_dim(&self) -> usize {
        self.mean.dims()[1]
    }

    /// `log N(a; μ, σ²) = −½ Σ_j ((a_j − μ_j)/σ_j)² − Σ_j log σ_j − (d/2) ln 2π`, `[N]`.
    ///
    /// - `actions`: `[N, d]` of the distribution's dtype.
    ///
    /// Errors: [`PolicyError::Shape`] / [`PolicyError::DType`] for a wrong tensor.
    pub fn log_prob(&self, actions: &Tensor) -> Result<Tensor> {
        if actions.dims() != self.mean.dims() {
            return Err(PolicyError::Shape {
                what: "actions",
                expected: format!("{:?} (states × action dimension)", self.mean.dims()),
                got: actions.dims().to_vec(),
            });
        }
        if actions.dtype() != self.mean.dtype() {
            return Err(PolicyError::DType {
                what: "actions",
                expected: self.mean.dtype(),
                got: actions.dtype(),
            });
        }
        let c = "gaussian log_prob";
        let d = self.action_dim() as f64;
        let inv_std = self.log_std.neg().and_then(|x| x.exp()).ctx(c)?;
        let z = (actions - &self.mean)
            .and_then(|x| x.broadcast_mul(&inv_std))
            .ctx(c)?;
        let norm = self
            .sum_log_std()
            .and_then(|s| s.affine(1.0, 0.5 * d * LN_2PI))
            .ctx(c)?;
        z.sqr()
            .and_then(|x| x.sum(1))
            .and_then(|x| x.affine(-0.5, 0.0))
            .and_then(|x| x.broadcast_sub(&norm))
            .ctx(c)
    }

    /// Entropy `Σ_j log σ_j + (d/2)(1 + ln 2π)` per state, `[N]` (the same
    /// for every state when σ is shared).
    pub fn entropy(&self) -> Result<Tensor> {
        let d = self.action_dim() as f64;
        self.sum_log_std()
            .and_then(|s| s.affine(1.0, 0.5 * d * (1.0 + LN_2PI)))
            .and_then(|s| s.broadcast_as(self.batch_size()))
            .ctx("gaussian entropy")
    }

    /// Exact `KL(self ‖ other)` per state, `[N]`:
    /// `Σ_j [log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½]`.
    ///
    /// Errors: [`PolicyError::Mismatch`] for different N or d.
    pub fn kl(&self, other: &DiagGaussian) -> Result<Tensor> {
        if self.mean.dims() != other.mean.dims() {
            return Err(PolicyError::Mismatch {
                reason: format!(
                    "KL between Gaussian batches of shapes {:?} and {:?}",
                    self.mean.dims(),
                    other.mean.dims()
                ),
            });
        }
        let c = "gaussian kl";
        if self.is_state_dependent() || other.is_state_dependent() {
            return self.kl_per_state(other).ctx(c);
        }
        // 1 / (2σ_q²) = ½ exp(−2 log σ_q)
        let half_inv_var_q = other
            .log_std
            .affine(-2.0, 0.0)
            .and_then(|x| x.exp())
            .and_then(|x| x.affine(0.5, 0.0))
            .ctx(c)?;
        // state-independent part: Σ_j log σ_q − log σ_p + σ_p²/(2σ_q²) − ½
        let var_p = self.log_std.affine(2.0, 0.0).and_then(|x| x.exp()).ctx(c)?;
        let constant = (&other.log_std - &self.log_std)
            .and_then(|x| x + (var_p * &half_inv_var_q)?)
            .and_then(|x| x.affine(1.0, -0.5))
            .and_then(|x| x.sum_all())
            .ctx(c)?;
        (&self.mean - &other.mean)
            .and_then(|d| d.sqr())
            .and_then(|d| d.broadcast_mul(&half_inv_var_q))
            .and_then(|d| d.sum(1))
            .and_then(|d| d.broadcast_add(&constant))
            .ctx(c)
    }

    /// The KL with at least one per-state `log σ`: every term `[N, d]`.
    fn kl_per_state(&self, other: &DiagGaussian) -> candle_core::Result<Tensor> {
        let shape = self.mean.shape();
        let lp = self.log_std.broadcast_as(shape)?;
        let lq = other.log_std.broadcast_as(shape)?;
        let half_inv_var_q = lq.affine(-2.0, 0.0)?.exp()?.affine(0.5, 0.0)?;
        let var_p = lp.affine(2.0, 0.0)?.exp()?;
        let quad = ((&self.mean - &other.mean)?.sqr()? + var_p)?;
        ((lq - lp)? + (quad * half_inv_var_q)?)?
            .affine(1.0, -0.5)?
            .sum(1)
    }

    /// The distributions at the states `rows` (in that order; `rows` is a
    /// U32 index tensor), e.g. π_old of a minibatch.
    ///
    /// Errors: [`PolicyError::Candle`] for an index out of range.
    pub fn select_rows(&self, rows: &Tensor) -> Result<Self> {
        let c = "gaussian rows";
        let mean = self.mean.index_select(rows, 0).ctx(c)?;
        let log_std = if self.is_state_dependent() {
            self.log_std.index_select(rows, 0).ctx(c)?
        } else {
            self.log_std.clone()
        };
        DiagGaussian::new(&mean, &log_std)
    }

    /// The same distributions without gradient graph (π_old in a KL).
    pub fn detach(&self) -> Self {
        DiagGaussian {
            mean: self.mean.detach(),
            log_std: self.log_std.detach(),
        }
    }

    /// Draws `a = μ + σ ⊙ ε`, `ε ~ N(0, I)` from `rng` (state-major, d values
    /// per state), on the host in f64, returned as f32 for the environment.
    /// For a gSDE policy this draws from the per-state marginal; the
    /// rollouts' temporally correlated noise is
    /// [`crate::Policy::sample_with_sde_noise`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Vec<f32>> {
        let mean = tensor_to_f64(&self.mean)?;
        let std: Vec<f64> = tensor_to_f64(&self.log_std)?
            .into_iter()
            .map(f64::exp)
            .collect();
        let d = std.len();
        let per_state = self.is_state_dependent();
        Ok(mean
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let eps: f64 = rng.sample(StandardNormal);
                let s = if per_state { std[i] } else { std[i % d] };
                (m + s * eps) as f32
            })
            .collect())
    }

    /// The Fisher metric of these distributions in `(μ, log σ)` (at their
    /// current values, without gradient graph).
    pub(crate) fn fisher_metric(&self) -> Result<DiagGaussianMetric> {
        let inv_var = self
            .log_std
            .detach()
            .affine(-2.0, 0.0)
            .and_then(|x| x.exp())
            .ctx("gaussian fisher metric")?;
        Ok(DiagGaussianMetric { inv_var })
    }

    /// The means, state-major, as f32 (the deterministic action).
    pub fn mode(&self) -> Result<Vec<f32>> {
        Ok(tensor_to_f64(&self.mean)?
            .into_iter()
            .map(|x| x as f32)
            .collect())
    }
}

/// The Fisher information metric of N diagonal Gaussians in their parameters
/// `(μ_s, log σ_s)`: per action dimension `1/σ²` on the mean, 2 on `log σ`
/// and no cross term (the Fisher of `N(μ, σ²)`), the `M` of the Fisher
/// `F = Jᵀ M J / N` ([`crate::fisher`]).
#[derive(Debug, Clone)]
pub(crate) struct DiagGaussianMetric {
    /// `1/σ²`: `[d]` (σ shared by all states) or `[N, d]`.
    inv_var: Tensor,
}

impl DiagGaussianMetric {
    /// The metric's entry on each `log σ`.
    pub(crate) const LOG_STD: f64 = 2.0;

    /// The metric's entries on the means, `1/σ²`: `[d]` or `[N, d]`.
    pub(crate) fn inv_var(&self) -> &Tensor {
        &self.inv_var
    }
}
