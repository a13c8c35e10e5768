//! The categorical (softmax) policy: a network's outputs are the logits of
//! a [`Categorical`] distribution over `n` discrete actions, with optional
//! per-state action masks.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::categorical::{ActionMask, Categorical};
use crate::error::Result;
use crate::init::GAIN_POLICY_HEAD;
use crate::mlp::{Mlp, MlpConfig};
use crate::policy::{Dist, Policy};
use crate::pullback::OutputPullback;

/// A softmax policy: an [`Mlp`] maps an observation to A logits,
/// `π(a | s) = softmax(f(s; θ))_a`.
///
/// Parameter order (flat vectors, [`Policy::vars`]): the MLP's layers, input
/// side first, weight then bias; names `policy.{i}.weight`, `policy.{i}.bias`.
#[derive(Debug, Clone)]
pub struct CategoricalPolicy {
    mlp: Mlp,
}

impl CategoricalPolicy {
    /// A policy for observations of width `obs_dim` and `n_actions` actions,
    /// orthogonally initialised (hidden gain √2, head gain 0.01 so the initial
    /// policy is nearly uniform, biases 0).
    ///
    /// - `obs_dim`: observation width, ≥ 1.
    /// - `n_actions`: number of discrete actions, ≥ 1.
    /// - `config`: hidden layers ([`MlpConfig::default`]: 64-64 tanh).
    /// - `dtype`: `DType::F32` (usual) or `DType::F64`.
    /// - `device`: `Device::Cpu`, or a CUDA device with the `cuda` feature.
    /// - `rng`: random source for the initial weights.
    pub fn new<R: Rng + ?Sized>(
        obs_dim: usize,
        n_actions: usize,
        config: &MlpConfig,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        let mlp = Mlp::new(
            obs_dim,
            n_actions,
            config,
            GAIN_POLICY_HEAD,
            dtype,
            device,
            rng,
        )?;
        Ok(CategoricalPolicy { mlp })
    }

    /// A policy around an existing network whose output width is the number of actions.
    pub fn from_mlp(mlp: Mlp) -> Self {
        CategoricalPolicy { mlp }
    }

    /// The logits network.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// Number of actions.
    pub fn n_actions(&self) -> usize {
        self.mlp.out_dim()
    }

    /// Raw (unmasked) logits `[N, A]` of observations `[N, obs_dim]`.
    pub fn logits(&self, obs: &Tensor) -> Result<Tensor> {
        self.mlp.forward(obs)
    }
}

impl Policy for CategoricalPolicy {
    fn obs_dim(&self) -> usize {
        self.mlp.in_dim()
    }

    fn action_dim(&self) -> usize {
        self.mlp.out_dim()
    }

    fn dtype(&self) -> DType {
        self.mlp.dtype()
    }

    fn device(&self) -> &Device {
        self.mlp.device()
    }

    fn dist(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Dist> {
        categorical_of(self.mlp.forward(obs)?, mask)
    }

    fn dist_detached(&self, obs: &Tensor, mask: Option<&ActionMask>) -> Result<Dist> {
        categorical_of(self.mlp.forward_detached(obs)?, mask)
    }

    fn dist_with_pullback(
        &self,
        obs: &Tensor,
        mask: Option<&ActionMask>,
    ) -> Result<(Dist, OutputPullback)> {
        let (logits, lin) = self.mlp.linearize(obs)?;
        let leaf = crate::pullback::leaf(&logits)?;
        let dist = match mask {
            // the leaf is never written to: no copy needed
            None => Categorical::from_owned_logits(leaf.as_tensor().clone())?,
            Some(_) => Categorical::from_logits(leaf.as_tensor(), mask)?,
        };
        Ok((
            Dist::Categorical(dist),
            OutputPullback::new(lin, leaf, None),
        ))
    }

    fn logits_with_pullback(&self, obs: &Tensor) -> Result<Option<(Tensor, OutputPullback)>> {
        let (logits, lin) = self.mlp.linearize(obs)?;
        let leaf = crate::pullback::leaf(&logits)?;
        Ok(Some((
            leaf.as_tensor().clone(),
            OutputPullback::new(lin, leaf, None),
        )))
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        self.mlp.named_vars("policy")
    }

    fn vars(&self) -> Vec<Var> {
        self.mlp.vars()
    }
}

/// The distributions of the logits `logits` (a fresh tensor: not copied).
fn categorical_of(logits: Tensor, mask: Option<&ActionMask>) -> Result<Dist> {
    let dist = match mask {
        None => Categorical::from_owned_logits(logits)?,
        Some(_) => Categorical::from_logits(&logits, mask)?,
    };
    Ok(Dist::Categorical(dist))
}
