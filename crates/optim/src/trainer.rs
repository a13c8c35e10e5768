//! The training loop: collect a rollout, compute advantages, update, report.

use std::time::Instant;

use candle_core::{DType, Device};
use klrl_envs::{Env, EpisodeRecord, Registry, Space, VecEnv};
use klrl_policy::{flat, CategoricalPolicy, DiagGaussianPolicy, Policy, ValueNet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::algorithm::Algorithm;
use crate::batch::Batch;
use crate::build::build_algorithm;
use crate::config::{ExperimentConfig, NetConfig, ReferenceSource};
use crate::diagnostics::UpdateDiagnostics;
use crate::error::{OptimError, Result};
use crate::evaluate::{evaluate, Evaluation};
use crate::keep_warm;
use crate::losses::trainable_vars;
use crate::normalize::{ObsNormalizer, RewardScaler};
use crate::reference::Reference;
use crate::rollout::{Collector, Rollout};

/// A freshly initialised policy for `obs_dim` observations and the action
/// space `space`, shaped by `net`, in `dtype` on `device` (initialised from a
/// fixed seed: for copies whose parameters are set afterwards, such as
/// reference policies).
pub fn new_policy(
    obs_dim: usize,
    space: &Space,
    net: &NetConfig,
    dtype: DType,
    device: &Device,
) -> Result<Box<dyn Policy + Send>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mlp = net.mlp();
    Ok(match space {
        Space::Discrete { n } => Box::new(CategoricalPolicy::new(
            obs_dim, *n, &mlp, dtype, device, &mut rng,
        )?),
        // the same σ kind (gSDE, the log-std head) as the run's policy, so
        // that its saved parameters fit
        Space::Box { low, .. } => Box::new(DiagGaussianPolicy::with_head(
            obs_dim,
            low.len(),
            &mlp,
            &net.gaussian_head(),
            dtype,
            device,
            &mut rng,
        )?),
    })
}

/// Seconds spent in each phase of an update.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimes {
    /// Stepping the environments and the policy (collect).
    pub rollout_s: f64,
    /// GAE.
    pub advantage_s: f64,
    /// The optimiser's update.
    pub update_s: f64,
}

/// What one call to [`Trainer::update`] did.
#[derive(Debug, Clone)]
pub struct UpdateReport {
    /// Index of the update (0-based).
    pub update: u64,
    /// Environment steps taken so far, this update's included.
    pub env_steps: u64,
    /// The optimiser's diagnostics.
    pub diagnostics: UpdateDiagnostics,
    /// Episodes that finished during this update's rollout.
    pub episodes: Vec<EpisodeRecord>,
    /// Mean expected regret per step in this rollout, where the environment
    /// reports it (bandits).
    pub regret: Option<f64>,
    /// Where the time went.
    pub times: PhaseTimes,
}

/// Everything a run owns: environments, networks, optimiser, normalisers and
/// the run's random number generator.
pub struct Trainer<E: Env = Box<dyn Env>> {
    /// The run's configuration (validated).
    pub config: ExperimentConfig,
    /// The environment copies.
    pub venv: VecEnv<E>,
    /// The policy π_θ.
    pub policy: Box<dyn Policy + Send>,
    /// The value function V.
    pub value: ValueNet,
    /// The optimiser.
    pub algo: Box<dyn Algorithm>,
    /// Rollout collection and normalisation statistics.
    pub collector: Collector,
    /// The run's RNG: network initialisation, then action sampling and minibatch shuffling.
    pub rng: ChaCha8Rng,
    /// Updates done.
    pub updates: u64,
    /// Environment steps done.
    pub env_steps: u64,
    /// The thread pool every rollout, update and evaluation runs on
    /// (`train.threads` threads).
    pool: std::sync::Arc<rayon::ThreadPool>,
    /// Updates rejected in a row, up to now (see
    /// [`crate::config::TrainConfig::max_rejected_updates`]); 0 after an
    /// accepted update. Checkpointed.
    pub rejected_in_a_row: u64,
    /// The non-finite quantity of the last rejected update.
    last_rejected: String,
    /// π_ref of `[algo.reference]`: built by [`Trainer::new`] for the
    /// `initial`, `uniform` and `fixed` sources, set with
    /// [`Trainer::set_reference`] for a saved one.
    reference: Option<Reference>,
}

impl Trainer<Box<dyn Env>> {
    /// Validate `config`, build its environment copies from `registry`, and
    /// set up a fresh run.
    pub fn from_config(config: ExperimentConfig, registry: &Registry) -> Result<Self> {
        config.validate()?;
        let envs = (0..config.train.n_envs)
            .map(|_| registry.make(&config.env.name, &config.env.params))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Trainer::new(config, envs)
    }
}

impl<E: Env> Trainer<E> {
    /// A fresh run of `config` on the given environment copies (one per
    /// `train.n_envs`): networks initialised from `train.seed`, copies reset
    /// with `seed + i`.
    pub fn new(config: ExperimentConfig, envs: Vec<E>) -> Result<Self> {
        config.validate()?;
        let t = &config.train;
        if envs.len() != t.n_envs {
            return Err(OptimError::config(
                "train.n_envs",
                format!(
                    "is {}, but {} environments were given",
                    t.n_envs,
                    envs.len()
                ),
            ));
        }
        let mut venv = VecEnv::new(envs)?;
        let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
        let dtype = if t.dtype == "f64" {
            DType::F64
        } else {
            DType::F32
        };
        let device = Device::Cpu;
        let obs_dim = venv.obs_dim();
        let mlp = config.policy.mlp();
        let (policy, value): (Box<dyn Policy + Send>, ValueNet) = match venv.action_space() {
            Space::Discrete { n } => {
                if let Some(field) = config.policy.state_dependent() {
                    return Err(OptimError::config(
                        field,
                        format!(
                            "a state-dependent σ needs continuous (Box) actions; {} has Discrete({n})",
                            config.env.name
                        ),
                    ));
                }
                let p = CategoricalPolicy::new(obs_dim, *n, &mlp, dtype, &device, &mut rng)?;
                let v = if config.policy.shared_trunk {
                    ValueNet::with_shared_trunk(p.mlp(), &mut rng)?
                } else {
                    ValueNet::new(obs_dim, &mlp, dtype, &device, &mut rng)?
                };
                (Box::new(p), v)
            }
            Space::Box { low, .. } => {
                let head = config.policy.gaussian_head();
                let p = DiagGaussianPolicy::with_head(
                    obs_dim,
                    low.len(),
                    &mlp,
                    &head,
                    dtype,
                    &device,
                    &mut rng,
                )?;
                let v = if config.policy.shared_trunk {
                    ValueNet::with_shared_trunk(p.mlp(), &mut rng)?
                } else {
                    ValueNet::new(obs_dim, &mlp, dtype, &device, &mut rng)?
                };
                (Box::new(p), v)
            }
        };
        let algo = build_algorithm(&config.algo, t, policy.as_ref(), &value)?;
        let mut collector = Collector::new(
            t.normalize_obs.then(|| ObsNormalizer::new(obs_dim)),
            t.scale_rewards
                .then(|| RewardScaler::new(t.n_envs, t.gamma)),
        );
        collector.keep_raw_obs = config.algo.reference().is_some();
        collector.sde_sample_freq = config.policy.sde_sample_freq;
        venv.reset(Some(t.seed))?;
        let pool = compute_pool(t.threads.resolve_here())?;
        let mut trainer = Trainer {
            pool,
            config,
            venv,
            policy,
            value,
            algo,
            collector,
            rng,
            updates: 0,
            env_steps: 0,
            rejected_in_a_row: 0,
            last_rejected: "values".into(),
            reference: None,
        };
        trainer.reference = trainer.configured_reference()?;
        Ok(trainer)
    }

    /// π_ref as `[algo.reference]` defines it, where the config alone
    /// defines it: a frozen copy of the current policy and observation
    /// normaliser (`initial`), the uniform or a fixed distribution; `None`
    /// for a saved policy (see [`Trainer::set_reference`]) or without a
    /// reference.
    fn configured_reference(&self) -> Result<Option<Reference>> {
        let Some(r) = self.config.algo.reference() else {
            return Ok(None);
        };
        let n_actions = match self.venv.action_space() {
            Space::Discrete { n } => Some(*n),
            Space::Box { .. } => None,
        };
        let discrete_only = |what: &str| {
            OptimError::config(
                "algo.reference.source",
                format!(
                    "\"{what}\" needs a discrete action space, this environment's is continuous"
                ),
            )
        };
        Ok(match r.source {
            ReferenceSource::Initial => Some(self.frozen_policy()?),
            ReferenceSource::Uniform => Some(Reference::uniform(
                n_actions.ok_or_else(|| discrete_only("uniform"))?,
            )?),
            ReferenceSource::Fixed => {
                let n = n_actions.ok_or_else(|| discrete_only("fixed"))?;
                let probs = r.probs.clone().unwrap_or_default();
                if probs.len() != n {
                    return Err(OptimError::config(
                        "algo.reference.probs",
                        format!(
                            "has {} probabilities, the environment has {n} actions",
                            probs.len()
                        ),
                    ));
                }
                Some(Reference::fixed(&probs)?)
            }
            ReferenceSource::Saved => None,
        })
    }

    /// A frozen copy of the current policy with the current observation
    /// normaliser (statistics as they are now).
    fn frozen_policy(&self) -> Result<Reference> {
        let mut copy = new_policy(
            self.venv.obs_dim(),
            self.venv.action_space(),
            &self.config.policy,
            self.policy.dtype(),
            self.policy.device(),
        )?;
        copy.set_flat(&self.policy.get_flat()?)?;
        Ok(Reference::network(copy, self.collector.obs_norm.clone()))
    }

    /// Take the current policy (and observation normaliser) as the
    /// `initial` reference again — after loading trained parameters into a
    /// fresh trainer (`klrl train --init-from`). Other sources are unchanged.
    pub fn refreeze_initial_reference(&mut self) -> Result<()> {
        if self
            .config
            .algo
            .reference()
            .is_some_and(|r| r.source == ReferenceSource::Initial)
        {
            self.reference = Some(self.frozen_policy()?);
        }
        Ok(())
    }

    /// Set π_ref: a saved policy, or a reference restored from a checkpoint.
    ///
    /// Errors: [`OptimError::Config`] when the config has no
    /// `[algo.reference]`; [`OptimError::Mismatch`] when π_ref does not fit
    /// the environment's spaces.
    pub fn set_reference(&mut self, reference: Reference) -> Result<()> {
        if self.config.algo.reference().is_none() {
            return Err(OptimError::config(
                "algo.reference",
                "a reference policy was given, but the config has no [algo.reference] table",
            ));
        }
        let (discrete, n) = match self.venv.action_space() {
            Space::Discrete { n } => (true, *n),
            Space::Box { low, .. } => (false, low.len()),
        };
        reference.check_fits(self.venv.obs_dim(), n, discrete)?;
        self.reference = Some(reference);
        Ok(())
    }

    /// π_ref, when set.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()
    }

    /// Transitions per update, `n_envs · n_steps`.
    pub fn batch_size(&self) -> u64 {
        (self.config.train.n_envs * self.config.train.n_steps) as u64
    }

    /// Whether `train.total_steps` have been taken.
    /// The number of compute threads the trainer runs on.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Run on `threads` compute threads from now on (a new pool), whatever
    /// `train.threads` says: e.g. `klrl compare` gives each of its parallel
    /// runs its share of the cores. Results do not depend on the count.
    ///
    /// # Errors
    /// [`OptimError::Config`] on `train.threads` if `threads` is 0 or above
    /// [`crate::threads::MAX_THREADS`], or the pool cannot start.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        if !(1..=crate::threads::MAX_THREADS).contains(&threads) {
            return Err(OptimError::config(
                "train.threads",
                format!(
                    "must be in [1, {}], got {threads}",
                    crate::threads::MAX_THREADS
                ),
            ));
        }
        if threads != self.threads() {
            self.pool = compute_pool(threads)?;
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.env_steps >= self.config.train.total_steps
    }

    /// One update: collect a rollout (Collect), compute GAE advantages
    /// (Advantages), run the optimiser (Update) — on the trainer's own
    /// thread pool (`train.threads`).
    ///
    /// Numerical faults never enter the parameters: an update that fails on
    /// a non-finite quantity ([`OptimError::NonFinite`]), or that leaves a
    /// non-finite parameter or KL, is rejected — the policy, the value
    /// network and the optimiser state are restored bit for bit, the rollout
    /// counts, and the report's diagnostics have `rejected` = 1 (every other
    /// column NaN but `accepted` = 0). Once `train.max_rejected_updates`
    /// updates in a row were rejected, the next call fails with
    /// [`OptimError::Diverged`] before doing anything.
    pub fn update(&mut self) -> Result<UpdateReport> {
        let limit = self.config.train.max_rejected_updates;
        if self.rejected_in_a_row >= limit {
            return Err(OptimError::Diverged {
                what: self.last_rejected.clone(),
                update: self.updates.saturating_sub(1),
                limit,
            });
        }
        let pool = self.pool.clone();
        pool.install(|| self.update_here())
    }

    /// [`Trainer::update`] on the calling thread's pool.
    fn update_here(&mut self) -> Result<UpdateReport> {
        let t0 = Instant::now();
        let progress = self.env_steps as f64 / self.config.train.total_steps as f64;
        let rollout = self.collector.collect(
            &mut self.venv,
            self.policy.as_ref(),
            &self.value,
            self.config.train.n_steps,
            &mut self.rng,
        )?;
        let t1 = Instant::now();
        let adv = rollout.advantages(
            self.config.train.gamma as f32,
            self.config.train.gae_lambda as f32,
        );
        let episodes = rollout.episodes.clone();
        let regret = rollout.regret.map(|(sum, n)| sum / n.max(1) as f64);
        let steps = rollout.len() as u64;
        let reference = self.reference_at(&rollout)?;
        let mut batch = Batch::new(rollout, adv, progress, self.updates);
        batch.reference = reference;
        let t2 = Instant::now();
        let vars = trainable_vars(self.policy.as_ref(), &self.value);
        let (params_before, algo_before) = (flat::get_flat(&vars)?, self.algo.state());
        // The update hands work to the second thread several times per
        // minibatch step: keep it polling instead of sleeping (the same results).
        let (algo, policy, value, rng) = (
            &mut self.algo,
            self.policy.as_mut(),
            &mut self.value,
            &mut self.rng,
        );
        let result = keep_warm::with_workers_awake(|| algo.update(policy, value, &batch, rng));
        let diagnostics = match rejection(result, &vars)? {
            Ok(d) => {
                self.rejected_in_a_row = 0;
                d
            }
            Err((what, steps)) => {
                flat::set_flat(&vars, &params_before)?;
                self.algo.load_state(&algo_before)?;
                self.rejected_in_a_row += 1;
                self.last_rejected = what.to_string();
                let mut d = UpdateDiagnostics::empty();
                d.accepted = 0.0;
                d.rejected = 1.0;
                d.rejected_steps = steps;
                d
            }
        };
        let t3 = Instant::now();
        self.updates += 1;
        self.env_steps += steps;
        Ok(UpdateReport {
            update: self.updates - 1,
            env_steps: self.env_steps,
            diagnostics,
            episodes,
            regret,
            times: PhaseTimes {
                rollout_s: (t1 - t0).as_secs_f64(),
                advantage_s: (t2 - t1).as_secs_f64(),
                update_s: (t3 - t2).as_secs_f64(),
            },
        })
    }

    /// The non-finite quantity of the last rejected update, and how many
    /// updates in a row have been rejected (0: the last update was accepted).
    pub fn rejections(&self) -> (&str, u64) {
        (&self.last_rejected, self.rejected_in_a_row)
    }

    /// π_ref at the rollout's states, once per update (raw observations
    /// when the run normalises its own).
    fn reference_at(&self, rollout: &Rollout) -> Result<Option<klrl_policy::Dist>> {
        match (&self.reference, self.config.algo.reference()) {
            (Some(r), _) => {
                let raw = rollout.raw_obs.as_deref().unwrap_or(&rollout.obs);
                let mask = rollout.action_mask()?;
                Ok(Some(r.dist(
                    raw,
                    rollout.len(),
                    mask.as_ref(),
                    self.policy.dtype(),
                    self.policy.device(),
                )?))
            }
            (None, Some(_)) => Err(OptimError::config(
                "algo.reference",
                "source = \"saved\": the reference policy was not loaded (Trainer::set_reference)",
            )),
            (None, None) => Ok(None),
        }
    }

    /// Run updates until `train.total_steps`, calling `on_update` after each;
    /// it returns `false` to stop early.
    pub fn train(&mut self, mut on_update: impl FnMut(&UpdateReport) -> bool) -> Result<()> {
        while !self.is_done() {
            let report = self.update()?;
            if !on_update(&report) {
                break;
            }
        }
        Ok(())
    }

    /// Evaluate the current policy on `env` (see [`evaluate`]), on the
    /// trainer's thread pool (hence `&mut self`: the pool's thread borrows
    /// the trainer while the caller waits).
    pub fn evaluate(
        &mut self,
        env: &mut dyn Env,
        episodes: usize,
        deterministic: bool,
        seed: u64,
    ) -> Result<Evaluation> {
        let pool = self.pool.clone();
        let (policy, obs_norm) = (&mut self.policy, &mut self.collector.obs_norm);
        pool.install(move || {
            evaluate(
                policy.as_ref(),
                obs_norm.as_ref(),
                env,
                episodes,
                deterministic,
                seed,
                u64::MAX,
            )
        })
    }
}

/// Whether the optimiser's update `result` is to be rejected: `Err((what,
/// rejected_steps))` for an update that failed on a non-finite quantity or
/// left a non-finite parameter (of `vars`) or KL; other errors are passed on.
fn rejection(
    result: Result<UpdateDiagnostics>,
    vars: &[candle_core::Var],
) -> Result<std::result::Result<UpdateDiagnostics, (&'static str, f64)>> {
    let d = match result {
        Ok(d) => d,
        Err(OptimError::NonFinite { what, .. }) => return Ok(Err((what, f64::NAN))),
        Err(e) => return Err(e),
    };
    Ok(if flat::get_flat(vars)?.iter().any(|x| !x.is_finite()) {
        Err(("new parameters", d.rejected_steps))
    } else if !(d.kl_old_new.is_finite() && d.kl_max.is_finite()) {
        Err(("KL(π_old ‖ π_new)", d.rejected_steps))
    } else {
        Ok(d)
    })
}

/// The trainer's own thread pool of `threads` workers (`klrl-compute-i`).
fn compute_pool(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("klrl-compute-{i}"))
        .build()
        .map(std::sync::Arc::new)
        .map_err(|e| {
            OptimError::config(
                "train.threads",
                format!("cannot start the thread pool: {e}"),
            )
        })
}
