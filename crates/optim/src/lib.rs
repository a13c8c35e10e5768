//! On-policy optimisers for klrl (being built): GAE, conjugate gradient,
//! running normalisation and the adaptive-β rule so far; PPO with a KL
//! penalty, PPO-clip, TRPO, NPG and vanilla policy gradient follow.

pub mod adam;
pub mod beta;
pub mod cg;
pub mod diagnostics;
pub mod gae;
pub mod normalize;
