//! On-policy optimisers for klrl: PPO with a KL penalty (fixed and adaptive
//! β), PPO-clip, TRPO, NPG and an unconstrained vanilla policy gradient, on
//! the policies of `klrl-policy` and the environments of `klrl-envs`.
//!
//! The path of data: [`VecEnv`](klrl_envs::VecEnv) → [`rollout::Collector`]
//! → [`gae`] → [`Algorithm::update`] →
//! [`diagnostics::UpdateDiagnostics`]. [`trainer::Trainer`] runs that loop.
//!
//! Not here: logging, checkpoint files and the command line (the `klrl`
//! program), networks (`klrl-policy`), environments (`klrl-envs`).

pub mod adam;
pub mod algorithm;
pub mod batch;
pub mod beta;
pub mod build;
pub mod cg;
pub mod clip_head;
pub mod clip_surrogate;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod evaluate;
pub mod gae;
pub mod gaussian_clip_head;
pub mod keep_warm;
pub mod kl_limit;
pub mod losses;
pub mod measure;
pub mod normalize;
pub mod pg;
pub mod ppo;
pub mod reference;
pub mod rollout;
pub mod threads;
pub mod trainer;
pub mod trpo;
pub mod value_fit;

pub use algorithm::{AlgoState, Algorithm};
pub use build::build_algorithm;
pub use config::{
    AlgoConfig, ExperimentConfig, KlLimit, KlLimitKind, NetConfig, PgConfig, PpoConfig,
    PpoObjective, ReferenceConfig, ReferenceMode, ReferenceSource, TrainConfig, TrpoConfig,
};
pub use diagnostics::UpdateDiagnostics;
pub use error::{OptimError, Result};
pub use evaluate::{evaluate, Evaluation};
pub use pg::VanillaPg;
pub use ppo::Ppo;
pub use reference::{RefTerm, Reference};
pub use threads::Threads;
pub use trainer::{PhaseTimes, Trainer, UpdateReport};
pub use trpo::Trpo;
