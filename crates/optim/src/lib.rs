//! On-policy optimisers for klrl (being built): GAE and conjugate gradient
//! so far; PPO with a KL penalty, PPO-clip, TRPO, NPG and vanilla policy
//! gradient follow.

pub mod cg;
pub mod gae;
