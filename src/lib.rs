//! klrl: reinforcement learning with KL-constrained policy updates.
//!
//! This facade re-exports the workspace crates under one name so that examples and
//! user code can write `klrl::envs::…`, `klrl::kl::…`, `klrl::policy::…`,
//! `klrl::optim::…` and `klrl::runner::…`. The `klrl` command-line program lives in
//! `crates/cli`.

pub use klrl_envs as envs;
pub use klrl_kl as kl;
pub use klrl_optim as optim;
pub use klrl_policy as policy;
pub use klrl_runner as runner;
