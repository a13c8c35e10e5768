//! The state-value function V(s) used as the baseline / critic.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::error::{Context, Result};
use crate::init::GAIN_VALUE_HEAD;
use crate::mlp::{Linear, Mlp, MlpConfig};

/// `V(s) = f(s; φ)`: an [`Mlp`] with one output, head gain 1.0 (Huang et al.,
/// PPO detail 2).
///
/// Two layouts:
/// - **separate** ([`ValueNet::new`], the default and the recommendation for
///   classic control, Huang et al. detail 13; required for TRPO/NPG, whose
///   step must change the policy only): its own 64-64 tanh MLP.
/// - **shared trunk** ([`ValueNet::with_shared_trunk`]): the hidden layers
///   *are* a policy's hidden layers (the same candle `Var`s, so both see every
///   update), topped by a value head of its own. Train both with one optimiser
///   on `policy.vars()` plus [`ValueNet::unshared_vars`] (not `vars()`, which
///   would list the trunk twice) and a joint loss, as PPO does for Atari
///   (Schulman et al. 2017, eq. 9).
///
/// Parameter order: layers input side first, weight then bias; names
/// `value.{i}.weight`, `value.{i}.bias`.
#[derive(Debug, Clone)]
pub struct ValueNet {
    mlp: Mlp,
    shared_layers: usize,
}

impl ValueNet {
    /// A separate value network for observations of width `obs_dim`.
    ///
    /// - `config`: hidden layers ([`MlpConfig::default`]: 64-64 tanh).
    /// - `dtype`: `DType::F32` or `DType::F64`; `device`: where it lives.
    /// - `rng`: random source for the orthogonal initial weights.
    pub fn new<R: Rng + ?Sized>(
        obs_dim: usize,
        config: &MlpConfig,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        let mlp = Mlp::new(obs_dim, 1, config, GAIN_VALUE_HEAD, dtype, device, rng)?;
        Ok(ValueNet {
            mlp,
            shared_layers: 0,
        })
    }

    /// A value head on the hidden layers of `trunk` (a policy's MLP, e.g.
    /// `policy.mlp()`): all layers of `trunk` but its head are shared, and a
    /// new head (orthogonal, gain 1.0, drawn from `rng`) maps the last hidden
    /// layer to V. With no hidden layers, the value net is a linear model of
    /// its own.
    pub fn with_shared_trunk<R: Rng + ?Sized>(trunk: &Mlp, rng: &mut R) -> Result<Self> {
        let shared = &trunk.layers()[..trunk.layers().len() - 1];
        let width = shared.last().map_or(trunk.in_dim(), Linear::out_features);
        let head = Linear::new(
            width,
            1,
            GAIN_VALUE_HEAD,
            trunk.dtype(),
            trunk.device(),
            rng,
        )?;
        let mut layers = shared.to_vec();
        layers.push(head);
        Ok(ValueNet {
            mlp: Mlp::from_layers(layers, trunk.activation())?,
            shared_layers: shared.len(),
        })
    }

    /// The network.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// Whether the hidden layers are shared with a policy.
    pub fn is_shared(&self) -> bool {
        self.shared_layers > 0
    }

    /// `V(s)` for observations `[N, obs_dim]`, shape `[N]`, differentiable.
    pub fn forward(&self, obs: &Tensor) -> Result<Tensor> {
        self.mlp.forward(obs)?.squeeze(1).ctx("value forward")
    }

    /// [`ValueNet::forward`] without a gradient graph: the same values, bit
    /// for bit, on host memory for a CPU network ([`Mlp::forward_detached`]),
    /// for the rollout's V(s) and bootstrap values. Besides the candle ops it
    /// saves, it keeps candle's matrix product out of the acting loop: that
    /// product asks for candle's thread count on every call, which without
    /// `RAYON_NUM_THREADS` set reads `/proc/cpuinfo` each time (a library
    /// user's CartPole run took 4.5 s instead of 3.0 s, 2026-12-02).
    pub fn forward_detached(&self, obs: &Tensor) -> Result<Tensor> {
        self.mlp
            .forward_detached(obs)?
            .squeeze(1)
            .ctx("value forward")
    }

    /// All parameters V depends on, in flat order (trunk included when shared).
    pub fn vars(&self) -> Vec<Var> {
        self.mlp.vars()
    }

    /// The parameters not shared with a policy: all of them for a separate
    /// network, the head for a shared trunk.
    pub fn unshared_vars(&self) -> Vec<Var> {
        self.mlp.layers()[self.shared_layers..]
            .iter()
            .flat_map(|l| [l.weight().clone(), l.bias().clone()])
            .collect()
    }

    /// The parameters with their names in parameter files.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.mlp.named_vars("value")
    }

    /// Number of scalar parameters of [`ValueNet::vars`].
    pub fn num_params(&self) -> usize {
        self.mlp.num_params()
    }

    /// Observations `[N, obs_dim]` of the network's dtype from a state-major `f32` buffer.
    pub fn obs_tensor(&self, obs: &[f32]) -> Result<Tensor> {
        crate::policy::obs_tensor(obs, self.mlp.in_dim(), self.mlp.dtype(), self.mlp.device())
    }

    /// Writes the parameters to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::save_vars(path, &self.named_vars())
    }

    /// Reads the parameters from a file written by [`ValueNet::save`]; checks
    /// everything before assigning anything (see [`crate::io::load_vars`]).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        crate::io::load_vars(path, &self.named_vars())
    }
}
