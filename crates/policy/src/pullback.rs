//! Policy gradients by the network's own reverse pass: a loss is built with
//! candle's autograd only over the cheap distribution head, on leaf copies
//! of the network's outputs, and its gradient is carried back to the
//! parameters by [`crate::MlpLinearization::vjp`].
//!
//! For a loss `L(z(θ), log σ)` of the network outputs `z` (logits or means,
//! `[N, out]`) and, for a Gaussian, the state-independent `log σ`, the chain
//! rule gives `∂L/∂θ_mlp = Jᵀ ∂L/∂z` with `J = ∂z/∂θ_mlp` and `∂L/∂log σ`
//! directly. [`crate::Policy::dist_with_pullback`] returns the distributions
//! built on the leaves `z` and `log σ` (candle [`Var`]s with no history), so
//! that `loss.backward()` only walks the head — log-softmax, ratio, clipping,
//! KL, entropy — and [`OutputPullback::flat_grad`] does the rest with the
//! hand-written pass. The result equals `Policy::flat_grad(&loss)` on a loss
//! built from [`crate::Policy::dist`] (tested to 1e-10 relative in f64),
//! without candle's generic backward through the MLP: its bias gradient is a
//! strided row sum and every op allocates its gradient buffers.

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::{Context, PolicyError, Result};
use crate::flat::tensor_to_f64;
use crate::mlp::MlpLinearization;

/// The leaves a policy's distributions were built on, and the reverse pass
/// from gradients at those leaves to the flat parameter gradient (in the
/// order of [`crate::Policy::vars`]).
///
/// Built by [`crate::Policy::dist_with_pullback`]. Like a
/// [`crate::FisherOperator`], it holds a copy of the parameters at the time
/// it was built: it is the pullback at those parameters.
#[derive(Debug, Clone)]
pub struct OutputPullback {
    lin: MlpLinearization,
    outputs: Var,
    log_std: Option<Var>,
}

impl OutputPullback {
    /// A pullback through `lin` from the leaf `outputs [N, out]` and, for a
    /// Gaussian policy, the leaf `log_std [d]`.
    pub(crate) fn new(lin: MlpLinearization, outputs: Var, log_std: Option<Var>) -> Self {
        OutputPullback {
            lin,
            outputs,
            log_std,
        }
    }

    /// The leaf holding the network's outputs `[N, out]`: the raw logits
    /// (before any action mask) of a categorical policy, the means of a
    /// Gaussian one.
    pub fn outputs(&self) -> &Var {
        &self.outputs
    }

    /// The leaf copy of `log σ [d]` (Gaussian policies; `None` otherwise).
    pub fn log_std(&self) -> Option<&Var> {
        self.log_std.as_ref()
    }

    /// Number of states N.
    pub fn batch_size(&self) -> usize {
        self.lin.batch_size()
    }

    /// Length of the flat gradient (the policy's `num_params()`).
    pub fn num_params(&self) -> usize {
        self.lin.num_params() + self.log_std.as_ref().map_or(0, |v| v.elem_count())
    }

    /// `∂L/∂θ` as a flat vector, from the gradients of a `backward()` of a
    /// loss built on the distributions this pullback came with. Leaves the
    /// loss does not depend on contribute zeros.
    ///
    /// Errors: [`PolicyError::Candle`] if a gradient cannot be read.
    pub fn flat_grad(&self, grads: &GradStore) -> Result<Vec<f64>> {
        let d_out = grads.get(self.outputs.as_tensor());
        let d_log_std = self.log_std.as_ref().and_then(|v| grads.get(v.as_tensor()));
        self.flat_grad_from_outputs(d_out, d_log_std)
    }

    /// `∂L/∂θ` as a flat vector from `∂L/∂z` (`d_outputs`, `[N, out]`, of
    /// the policy's dtype) and `∂L/∂log σ` (`d_log_std`, `[d]`); `None`
    /// means zero.
    ///
    /// Errors: [`PolicyError::Shape`] for gradients of the wrong shape, or a
    /// `d_log_std` for a policy without `log σ`.
    pub fn flat_grad_from_outputs(
        &self,
        d_outputs: Option<&Tensor>,
        d_log_std: Option<&Tensor>,
    ) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.num_params());
        match d_outputs {
            Some(u) => {
                for g in self.lin.vjp(u)? {
                    out.extend(tensor_to_f64(&g.weight)?);
                    out.extend(tensor_to_f64(&g.bias)?);
                }
            }
            None => out.resize(self.lin.num_params(), 0.0),
        }
        match (&self.log_std, d_log_std) {
            (Some(v), Some(g)) => {
                if g.dims() != v.dims() {
                    return Err(PolicyError::Shape {
                        what: "log_std gradient",
                        expected: format!("{:?}", v.dims()),
                        got: g.dims().to_vec(),
                    });
                }
                out.extend(tensor_to_f64(g)?);
            }
            (Some(v), None) => out.resize(out.len() + v.elem_count(), 0.0),
            (None, Some(g)) => {
                return Err(PolicyError::Shape {
                    what: "log_std gradient",
                    expected: "none (the policy has no log_std)".to_string(),
                    got: g.dims().to_vec(),
                })
            }
            (None, None) => {}
        }
        Ok(out)
    }
}

/// A leaf variable holding a copy of `t` (no gradient history).
pub(crate) fn leaf(t: &Tensor) -> Result<Var> {
    Var::from_tensor(&t.detach()).ctx("output leaf")
}
