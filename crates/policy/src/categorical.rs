//! The categorical (softmax) distribution over `n` discrete actions, with
//! optional per-state action masks, and its Fisher metric. The policy that
//! makes it from a network is [`crate::CategoricalPolicy`].

use candle_core::{DType, Device, Tensor, D};
use rand::Rng;

use crate::error::{Context, PolicyError, Result};

/// The logit given to a masked action: −10⁹ is added to its logit.
///
/// Any legal logit above −10⁹ + 745 then leaves the masked action a
/// probability `exp(−10⁹ + …)` that underflows to exactly 0 in f32 and f64,
/// while every quantity stays finite: `0 · log 0` becomes `0 · (−10⁹) = 0` in
/// the entropy and the KL, and gradients through masked entries are `0`.
/// (−∞ would give `0 · ∞ = NaN` in the entropy and its gradient.)
pub const MASKED_LOGIT: f64 = -1e9;

/// Which actions are legal in each of N states (`true` = legal).
///
/// A state must have at least one legal action. The mask is kept on the host
/// and turned into an additive bias (0 or [`MASKED_LOGIT`]) on the logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionMask {
    legal: Vec<bool>,
    n_actions: usize,
}

impl ActionMask {
    /// A mask for `legal.len() / n_actions` states, state-major (`legal[s * n_actions + a]`).
    ///
    /// Errors: [`PolicyError::Mask`] when `n_actions` is 0, the length is not a
    /// multiple of `n_actions`, or a state has no legal action.
    pub fn new(legal: Vec<bool>, n_actions: usize) -> Result<Self> {
        if n_actions == 0 || !legal.len().is_multiple_of(n_actions) {
            return Err(PolicyError::Mask {
                reason: format!(
                    "{} entries is not a whole number of states of {n_actions} actions",
                    legal.len()
                ),
            });
        }
        if let Some(s) = legal
            .chunks(n_actions)
            .position(|row| !row.iter().any(|&x| x))
        {
            return Err(PolicyError::Mask {
                reason: format!("state {s} has no legal action"),
            });
        }
        Ok(ActionMask { legal, n_actions })
    }

    /// The mask, state-major.
    pub fn legal(&self) -> &[bool] {
        &self.legal
    }

    /// Number of actions per state.
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// Number of states.
    pub fn n_states(&self) -> usize {
        self.legal.len() / self.n_actions
    }

    /// The mask of the states `rows` (in that order), e.g. for a minibatch.
    ///
    /// Errors: [`PolicyError::Mask`] for a row index out of range.
    pub fn rows(&self, rows: &[usize]) -> Result<ActionMask> {
        let n = self.n_states();
        let mut legal = Vec::with_capacity(rows.len() * self.n_actions);
        for &r in rows {
            if r >= n {
                return Err(PolicyError::Mask {
                    reason: format!("row {r} out of range for a mask of {n} states"),
                });
            }
            legal.extend_from_slice(&self.legal[r * self.n_actions..(r + 1) * self.n_actions]);
        }
        Ok(ActionMask {
            legal,
            n_actions: self.n_actions,
        })
    }

    /// The additive bias `[N, n_actions]`: 0 for legal, [`MASKED_LOGIT`] for masked.
    fn bias(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let b: Vec<f64> = self
            .legal
            .iter()
            .map(|&l| if l { 0.0 } else { MASKED_LOGIT })
            .collect();
        crate::flat::tensor_from_f64(&b, &[self.n_states(), self.n_actions], dtype, device)
    }
}

/// Applies an optional mask to raw logits `[N, A]`.
pub(crate) fn masked_logits(logits: &Tensor, mask: Option<&ActionMask>) -> Result<Tensor> {
    let Some(mask) = mask else {
        return Ok(logits.clone());
    };
    let (n, a) = logits.dims2().ctx("masking logits")?;
    if mask.n_states() != n || mask.n_actions != a {
        return Err(PolicyError::Mask {
            reason: format!(
                "mask is for {} states × {} actions, the logits are {n} × {a}",
                mask.n_states(),
                mask.n_actions
            ),
        });
    }
    let bias = mask.bias(logits.dtype(), logits.device())?;
    (logits + bias).ctx("masking logits")
}

/// A batch of N categorical distributions over A actions, held as
/// differentiable tensors: the (masked) logits and their log-softmax.
///
/// All quantities come from `candle_nn::ops::log_softmax` (max-subtracted,
/// so logits of ±10⁴ are fine); probabilities are `exp(log p)`.
#[derive(Debug, Clone)]
pub struct Categorical {
    logits: Tensor,
    log_probs: Tensor,
}

impl Categorical {
    /// The distributions `softmax(logits + mask bias)`.
    ///
    /// - `logits`: `[N, A]`, F32 or F64; gradients flow through.
    /// - `mask`: optional [`ActionMask`] for the N states; masked actions get
    ///   probability exactly 0.
    ///
    /// Errors: [`PolicyError::Shape`] for logits that are not `[N, A]` with
    /// A ≥ 1; [`PolicyError::Mask`] for a mask of another size.
    pub fn from_logits(logits: &Tensor, mask: Option<&ActionMask>) -> Result<Self> {
        match logits.dims() {
            &[_, a] if a >= 1 => {}
            got => {
                return Err(PolicyError::Shape {
                    what: "logits",
                    expected: "[N, A] with A ≥ 1".to_string(),
                    got: got.to_vec(),
                })
            }
        }
        crate::flat::check_float_dtype(logits.dtype())?;
        let logits = match mask {
            Some(_) => masked_logits(logits, mask)?,
            // own storage, so that a detached copy is a snapshot even when
            // `logits` is a Var
            None => logits.copy().ctx("categorical logits")?,
        };
        Self::from_owned_logits(logits)
    }

    /// As [`Categorical::from_logits`] without mask for logits that own their
    /// storage (computed, not a `Var`): skips the copy.
    pub(crate) fn from_owned_logits(logits: Tensor) -> Result<Self> {
        let log_probs =
            candle_nn::ops::log_softmax(&logits, D::Minus1).ctx("categorical log_softmax")?;
        Ok(Categorical { logits, log_probs })
    }

    /// The (masked) logits `[N, A]`.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// `log p(a | s)` for every action, `[N, A]` (masked actions: ≈ −10⁹).
    pub fn log_probs(&self) -> &Tensor {
        &self.log_probs
    }

    /// `p(a | s)` for every action, `[N, A]` (masked actions: exactly 0).
    pub fn probs(&self) -> Result<Tensor> {
        self.log_probs.exp().ctx("categorical probs")
    }

    /// Number of states N.
    pub fn batch_size(&self) -> usize {
        self.logits.dims()[0]
    }

    /// Number of actions A.
    pub fn n_actions(&self) -> usize {
        self.logits.dims()[1]
    }

    /// `log p(a_s | s)` of one action per state, `[N]`.
    ///
    /// - `actions`: U32 tensor `[N]` of action indices in `0..A` (see
    ///   [`crate::Actions::to_tensor`]).
    ///
    /// Errors: [`PolicyError::Shape`] / [`PolicyError::DType`] for a wrong
    /// tensor, [`PolicyError::ActionOutOfRange`] for an index ≥ A.
    pub fn log_prob(&self, actions: &Tensor) -> Result<Tensor> {
        let n = self.batch_size();
        if actions.dims() != [n] {
            return Err(PolicyError::Shape {
                what: "actions",
                expected: format!("[{n}] (one action index per state)"),
                got: actions.dims().to_vec(),
            });
        }
        if actions.dtype() != DType::U32 {
            return Err(PolicyError::DType {
                what: "actions",
                expected: DType::U32,
                got: actions.dtype(),
            });
        }
        if n == 0 {
            return Tensor::zeros(0, self.log_probs.dtype(), self.log_probs.device())
                .ctx("categorical log_prob");
        }
        let max = actions
            .max(0)
            .and_then(|m| m.to_scalar::<u32>())
            .ctx("categorical log_prob")?;
        if max as usize >= self.n_actions() {
            return Err(PolicyError::ActionOutOfRange {
                action: u64::from(max),
                n_actions: self.n_actions(),
            });
        }
        actions
            .unsqueeze(1)
            .and_then(|idx| self.log_probs.gather(&idx, 1))
            .and_then(|lp| lp.squeeze(1))
            .ctx("categorical log_prob")
    }

    /// Entropy `H(p_s) = −Σ_a p log p` per state, `[N]` (masked actions contribute 0).
    pub fn entropy(&self) -> Result<Tensor> {
        self.log_probs
            .exp()
            .and_then(|p| p * &self.log_probs)
            .and_then(|x| x.sum(1))
            .and_then(|x| x.neg())
            .ctx("categorical entropy")
    }

    /// Exact `KL(self ‖ other) = Σ_a p (log p − log q)` per state, `[N]`.
    ///
    /// Actions masked in `self` contribute 0. An action legal in `self` but
    /// masked in `other` contributes ≈ p · 10⁹ (the true KL is +∞): masks of
    /// the two distributions should agree, as they do for π_old and π_θ
    /// evaluated on the same states.
    ///
    /// Errors: [`PolicyError::Mismatch`] for different N or A.
    pub fn kl(&self, other: &Categorical) -> Result<Tensor> {
        if self.logits.dims() != other.logits.dims() {
            return Err(PolicyError::Mismatch {
                reason: format!(
                    "KL between categorical batches of shapes {:?} and {:?}",
                    self.logits.dims(),
                    other.logits.dims()
                ),
            });
        }
        (&self.log_probs - &other.log_probs)
            .and_then(|d| self.log_probs.exp()? * d)
            .and_then(|x| x.sum(1))
            .ctx("categorical kl")
    }

    /// The same distributions without gradient graph (π_old in a KL).
    pub fn detach(&self) -> Self {
        Categorical {
            logits: self.logits.detach(),
            log_probs: self.log_probs.detach(),
        }
    }

    /// Probabilities on the host, `N` rows of `A` values.
    fn host_probs(&self) -> Result<Vec<Vec<f64>>> {
        self.log_probs
            .exp()
            .and_then(|p| p.to_dtype(DType::F64))
            .and_then(|p| p.to_vec2::<f64>())
            .ctx("categorical probabilities to host")
    }

    /// Draws one action per state by inverse-CDF sampling on the host, with
    /// one `rng.random::<f64>()` per state. Actions of probability 0 (masked)
    /// are never drawn.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Vec<usize>> {
        let probs = self.host_probs()?;
        Ok(probs
            .iter()
            .map(|row| sample_row(row, rng.random::<f64>()))
            .collect())
    }

    /// The Fisher metric of these distributions in their logits (at their
    /// current values, without gradient graph).
    pub(crate) fn fisher_metric(&self) -> Result<CategoricalMetric> {
        Ok(CategoricalMetric {
            probs: self.probs()?.detach(),
        })
    }

    /// The most probable action per state (ties: the lowest index).
    pub fn mode(&self) -> Result<Vec<usize>> {
        let idx = self
            .log_probs
            .argmax(1)
            .and_then(|t| t.to_vec1::<u32>())
            .ctx("categorical mode")?;
        Ok(idx.into_iter().map(|i| i as usize).collect())
    }
}

/// Inverse CDF of one row of probabilities at `u ∈ [0, 1)`, skipping zeros.
fn sample_row(row: &[f64], u: f64) -> usize {
    let total: f64 = row.iter().sum();
    let target = u * total;
    let mut acc = 0.0;
    let mut last_positive = 0;
    for (a, &p) in row.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last_positive = a;
            if target < acc {
                return a;
            }
        }
    }
    // Rounding left target ≥ the running sum: the last action with p > 0.
    last_positive
}

/// The Fisher information metric of N softmax distributions in their logits
/// z, `M_s = diag(p_s) − p_s p_sᵀ` (the Hessian in z of `KL(p_s ‖
/// softmax(z))` at `p_s`): the `M` of the Fisher `F = Jᵀ M J / N`
/// ([`crate::fisher`]). Masked actions have `p = 0` and drop out exactly.
#[derive(Debug, Clone)]
pub(crate) struct CategoricalMetric {
    /// `p [N, A]` at the distributions it was built from, without gradient graph.
    probs: Tensor,
}

impl CategoricalMetric {
    /// `M_s u_s = p_s ⊙ u_s − p_s (p_s · u_s)` at every state, for logit
    /// tangents `u [N, A]`.
    pub(crate) fn apply(&self, u: &Tensor) -> Result<Tensor> {
        let c = "categorical fisher metric";
        let pu = (&self.probs * u).ctx(c)?;
        let p_dot_u = pu.sum_keepdim(1).ctx(c)?;
        self.probs
            .broadcast_mul(&p_dot_u)
            .and_then(|x| pu - x)
            .ctx(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_row_skips_zero_probabilities() {
        let row = [0.0, 0.5, 0.0, 0.5, 0.0];
        for i in 0..1000 {
            let a = sample_row(&row, i as f64 / 1000.0);
            assert!(a == 1 || a == 3, "drew masked action {a}");
        }
        // u just below 1 with rounding: the last positive action.
        assert_eq!(sample_row(&row, 1.0 - f64::EPSILON), 3);
        assert_eq!(sample_row(&[0.0, 1.0], 0.0), 1);
    }

    #[test]
    fn mask_rejects_bad_shapes() {
        assert!(ActionMask::new(vec![true; 5], 2).is_err());
        assert!(ActionMask::new(vec![true, false, false, false], 2).is_err());
        assert!(ActionMask::new(vec![], 0).is_err());
        let m = ActionMask::new(vec![true, false, false, true, true, true], 2).expect("valid");
        assert_eq!(m.n_states(), 3);
        assert_eq!(
            m.rows(&[2, 0]).expect("in range").legal(),
            &[true, true, true, false]
        );
        assert!(m.rows(&[3]).is_err());
    }
}
