//! Policy gradients by the network's own reverse pass: a loss is built with
//! candle's autograd only over the cheap distribution head, on leaf copies
//! of the network's outputs, and its gradient is carried back to the
//! parameters by [`crate::MlpLinearization::vjp`].
//!
//! For a loss `L(z(θ), log σ)` of the network outputs `z` (logits or means,
//! `[N, out]`) and, for a Gaussian, the state-independent `log σ`, the chain
//! rule gives `∂L/∂θ_mlp = Jᵀ ∂L/∂z` with `J = ∂z/∂θ_mlp` and `∂L/∂log σ`
//! directly. For gSDE the leaf is the per-state `log σ(s) [N, d]` and its
//! gradient goes through [`GsdeLinearization::vjp`] to gSDE's parameter (and,
//! with `learn_features`, into the MLP at its last hidden features); for the
//! state-dependent log-std head, `log σ(s)` are outputs of the MLP. [`crate::Policy::dist_with_pullback`] returns the distributions
//! built on the leaves `z` and `log σ` (candle [`Var`]s with no history), so
//! that `loss.backward()` only walks the head — log-softmax, ratio, clipping,
//! KL, entropy — and [`OutputPullback::flat_grad`] does the rest with the
//! hand-written pass. The result equals `Policy::flat_grad(&loss)` on a loss
//! built from [`crate::Policy::dist`] (tested to 1e-10 relative in f64),
//! without candle's generic backward through the MLP: its bias gradient is a
//! strided row sum and every op allocates its gradient buffers.

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::{Context, PolicyError, Result};
use crate::flat::extend_f64;
use crate::gsde::GsdeLinearization;
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
    /// gSDE: the map from the features and its `log σ [latent, ·]` to the
    /// per-state `log σ(s)` held by the leaf `log_std`.
    gsde: Option<GsdeLinearization>,
}

impl OutputPullback {
    /// A pullback through `lin` from the leaf `outputs [N, out]` and, for a
    /// Gaussian policy with a state-independent σ, the leaf `log_std [d]`.
    pub(crate) fn new(lin: MlpLinearization, outputs: Var, log_std: Option<Var>) -> Self {
        OutputPullback {
            lin,
            outputs,
            log_std,
            gsde: None,
        }
    }

    /// A pullback for a gSDE policy: the leaf `state_log_std [N, d]` holds
    /// `log σ(s)`, whose gradient `head` carries to gSDE's parameter and (with
    /// `learn_features`) to the MLP's features.
    pub(crate) fn gsde(
        lin: MlpLinearization,
        outputs: Var,
        state_log_std: Var,
        head: GsdeLinearization,
    ) -> Self {
        OutputPullback {
            lin,
            outputs,
            log_std: Some(state_log_std),
            gsde: Some(head),
        }
    }

    /// Its parts: the MLP's linearisation, the `log σ` leaf and gSDE's head
    /// (what [`crate::FisherOperator`] needs for `J` and `Jᵀ`).
    pub(crate) fn into_parts(self) -> (MlpLinearization, Option<Var>, Option<GsdeLinearization>) {
        (self.lin, self.log_std, self.gsde)
    }

    /// The leaf holding the network's outputs `[N, out]`: the raw logits
    /// (before any action mask) of a categorical policy, the means of a
    /// Gaussian one.
    pub fn outputs(&self) -> &Var {
        &self.outputs
    }

    /// The leaf copy of `log σ` of a Gaussian policy: `[d]` for a
    /// state-independent σ, the per-state `[N, d]` for gSDE; `None`
    /// otherwise (categorical; the state-dependent head, whose `log σ(s)`
    /// are part of the outputs).
    pub fn log_std(&self) -> Option<&Var> {
        self.log_std.as_ref()
    }

    /// Number of states N.
    pub fn batch_size(&self) -> usize {
        self.lin.batch_size()
    }

    /// Length of the flat gradient (the policy's `num_params()`).
    pub fn num_params(&self) -> usize {
        let std_params = match (&self.gsde, &self.log_std) {
            (Some(head), _) => head.param_len(),
            (None, Some(v)) => v.elem_count(),
            (None, None) => 0,
        };
        self.lin.num_params() + std_params
    }

    /// `∂L/∂θ` as a flat vector, from the gradients of a `backward()` of a
    /// loss built on the distributions this pullback came with. Leaves the
    /// loss does not depend on contribute zeros.
    ///
    /// Errors: [`PolicyError::Candle`] if a gradient cannot be read.
    pub fn flat_grad(&self, grads: &GradStore) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        self.flat_grad_into(grads, &mut out)?;
        Ok(out)
    }

    /// [`OutputPullback::flat_grad`] appended to `out` (whose capacity a step
    /// loop can reuse).
    ///
    /// Errors: as [`OutputPullback::flat_grad`]; `out` may then hold part of
    /// the gradient.
    pub fn flat_grad_into(&self, grads: &GradStore, out: &mut Vec<f64>) -> Result<()> {
        let d_out = grads.get(self.outputs.as_tensor());
        let d_log_std = self.log_std.as_ref().and_then(|v| grads.get(v.as_tensor()));
        self.flat_grad_from_outputs_into(d_out, d_log_std, out)
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
        let mut out = Vec::new();
        self.flat_grad_from_outputs_into(d_outputs, d_log_std, &mut out)?;
        Ok(out)
    }

    /// [`OutputPullback::flat_grad_from_outputs`] appended to `out` (whose
    /// capacity a step loop can reuse).
    ///
    /// Errors: as [`OutputPullback::flat_grad_from_outputs`]; `out` may then
    /// hold part of the gradient.
    pub fn flat_grad_from_outputs_into(
        &self,
        d_outputs: Option<&Tensor>,
        d_log_std: Option<&Tensor>,
        out: &mut Vec<f64>,
    ) -> Result<()> {
        self.flat_grad_into_any(d_outputs, d_log_std, out)
    }

    /// [`OutputPullback::flat_grad_from_outputs`] for an f32 CPU policy, in
    /// f32, the precision it is computed in: `out` becomes the gradient
    /// ([`OutputPullback::num_params`] entries; its old values are not read,
    /// and a buffer of the right length is not zero-filled first), the MLP's
    /// products written straight into it
    /// ([`MlpLinearization::vjp_flat_f32_into`]); the same values.
    ///
    /// Errors: as [`OutputPullback::flat_grad_from_outputs`];
    /// [`PolicyError::DType`] for a policy that is not f32 on the CPU (or an
    /// f64 `d_log_std`); `out` then holds no meaningful values.
    pub fn flat_grad_from_outputs_f32_into(
        &self,
        d_outputs: Option<&Tensor>,
        d_log_std: Option<&Tensor>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.resize(self.num_params(), 0.0);
        let mut cursor = Overwrite { out, at: 0 };
        self.flat_grad_into_any(d_outputs, d_log_std, &mut cursor)
    }

    /// [`OutputPullback::flat_grad_from_outputs_into`] into either vector.
    fn flat_grad_into_any<O: FlatOut>(
        &self,
        d_outputs: Option<&Tensor>,
        d_log_std: Option<&Tensor>,
        out: &mut O,
    ) -> Result<()> {
        out.reserve_more(self.num_params());
        if let Some(head) = &self.gsde {
            return self.gsde_flat_grad(head, d_outputs, d_log_std, out);
        }
        match d_outputs {
            Some(u) => out.append_vjp(&self.lin, u, None)?,
            None => out.append_zeros(self.lin.num_params())?,
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
                out.append_tensor(g)?;
            }
            (Some(v), None) => out.append_zeros(v.elem_count())?,
            (None, Some(g)) => {
                return Err(PolicyError::Shape {
                    what: "log_std gradient",
                    expected: "none (the policy has no log_std)".to_string(),
                    got: g.dims().to_vec(),
                })
            }
            (None, None) => {}
        }
        Ok(())
    }
}

impl OutputPullback {
    /// gSDE: `Jᵀ` of `θ ↦ (μ(s), log σ(s))`, the MLP's reverse pass with the
    /// features' cotangent from the variance (`learn_features`), then the
    /// gradient at gSDE's `log σ` parameter.
    fn gsde_flat_grad<O: FlatOut>(
        &self,
        head: &GsdeLinearization,
        d_outputs: Option<&Tensor>,
        d_log_std: Option<&Tensor>,
        out: &mut O,
    ) -> Result<()> {
        let c = "gsde pullback";
        let leaf = self
            .log_std
            .as_ref()
            .expect("a gSDE pullback has a log σ leaf");
        let (g_param, g_features) = match d_log_std {
            Some(g) => {
                if g.dims() != leaf.dims() {
                    return Err(PolicyError::Shape {
                        what: "log_std gradient",
                        expected: format!("{:?}", leaf.dims()),
                        got: g.dims().to_vec(),
                    });
                }
                let (gp, gz) = head.vjp(g)?;
                (Some(gp), gz)
            }
            None => (None, None),
        };
        let zeros;
        let u = match (d_outputs, &g_features) {
            (Some(u), _) => Some(u),
            (None, Some(_)) => {
                zeros = self.outputs.as_tensor().zeros_like().ctx(c)?;
                Some(&zeros)
            }
            (None, None) => None,
        };
        match u {
            Some(u) => out.append_vjp(&self.lin, u, g_features.as_ref())?,
            None => out.append_zeros(self.lin.num_params())?,
        }
        match g_param {
            Some(g) => out.append_tensor(&g)?,
            None => out.append_zeros(head.param_len())?,
        }
        Ok(())
    }
}

/// A leaf variable holding a copy of `t` (no gradient history).
pub(crate) fn leaf(t: &Tensor) -> Result<Var> {
    Var::from_tensor(&t.detach()).ctx("output leaf")
}

/// A flat gradient the pullback appends to: f64 (any policy), or f32 for an
/// f32 CPU policy (its gradient as computed, without widening).
trait FlatOut {
    fn reserve_more(&mut self, n: usize);
    fn append_zeros(&mut self, n: usize) -> Result<()>;
    /// `Jᵀ u + J_zᵀ g` of the MLP.
    fn append_vjp(&mut self, lin: &MlpLinearization, u: &Tensor, g: Option<&Tensor>) -> Result<()>;
    /// A gradient tensor's elements, row-major.
    fn append_tensor(&mut self, t: &Tensor) -> Result<()>;
}

impl FlatOut for Vec<f64> {
    fn reserve_more(&mut self, n: usize) {
        self.reserve(n);
    }

    fn append_zeros(&mut self, n: usize) -> Result<()> {
        self.resize(self.len() + n, 0.0);
        Ok(())
    }

    fn append_vjp(&mut self, lin: &MlpLinearization, u: &Tensor, g: Option<&Tensor>) -> Result<()> {
        lin.vjp_flat_into(u, g, self)
    }

    fn append_tensor(&mut self, t: &Tensor) -> Result<()> {
        extend_f64(self, t)
    }
}

/// An f32 gradient written over a buffer of its final length, front to
/// back.
struct Overwrite<'a> {
    out: &'a mut [f32],
    at: usize,
}

impl Overwrite<'_> {
    /// The next `n` entries.
    fn next(&mut self, n: usize) -> Result<&mut [f32]> {
        let end = self.at + n;
        if end > self.out.len() {
            return Err(PolicyError::FlatLength {
                what: "f32 policy gradient",
                expected: self.out.len(),
                got: end,
            });
        }
        let range = self.at..end;
        self.at = end;
        Ok(&mut self.out[range])
    }
}

impl FlatOut for Overwrite<'_> {
    fn reserve_more(&mut self, _n: usize) {}

    fn append_zeros(&mut self, n: usize) -> Result<()> {
        self.next(n)?.fill(0.0);
        Ok(())
    }

    fn append_vjp(&mut self, lin: &MlpLinearization, u: &Tensor, g: Option<&Tensor>) -> Result<()> {
        lin.vjp_flat_f32_into(u, g, self.next(lin.num_params())?)
    }

    fn append_tensor(&mut self, t: &Tensor) -> Result<()> {
        if t.dtype() != candle_core::DType::F32 {
            return Err(PolicyError::DType {
                what: "an f32 policy's gradient",
                expected: candle_core::DType::F32,
                got: t.dtype(),
            });
        }
        let values = t
            .flatten_all()
            .and_then(|f| f.to_vec1::<f32>())
            .ctx("gradient to host")?;
        self.next(values.len())?.copy_from_slice(&values);
        Ok(())
    }
}
