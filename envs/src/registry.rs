//! The environment registry: build an environment from a name and a parameter
//! table, so configuration files can name environments.
//!
//! There is no global registry: a [`Registry`] is a value. Start from
//! [`Registry::builtin`] and [`Registry::register`] your own environments.

use serde::de::DeserializeOwned;

use crate::{Env, EnvError, Space, TimeLimit};

/// Builds an environment from its parameter table.
pub type Factory = Box<dyn Fn(&toml::Table) -> Result<Box<dyn Env>, EnvError> + Send + Sync>;

/// One registered environment.
pub struct EnvSpec {
    /// The name configs use, e.g. `CartPole-v1`.
    pub name: String,
    /// One line saying what the environment is.
    pub description: String,
    /// The default time limit applied by [`Registry::make`], if any. A config
    /// may override it with the parameter `max_episode_steps`.
    pub max_episode_steps: Option<u64>,
    /// Gymnasium's `reward_threshold`: the mean return at which the task
    /// counts as solved, if it has one.
    pub reward_threshold: Option<f64>,
    factory: Factory,
}

impl std::fmt::Debug for EnvSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSpec")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("max_episode_steps", &self.max_episode_steps)
            .field("reward_threshold", &self.reward_threshold)
            .finish_non_exhaustive()
    }
}

/// A set of named environment constructors.
#[derive(Debug, Default)]
pub struct Registry {
    specs: Vec<EnvSpec>,
}

impl Registry {
    /// A registry with no environments.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// A registry holding every built-in environment.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        for spec in crate::builtin_specs() {
            r.specs.push(spec);
        }
        r
    }

    /// Register an environment under `name`.
    ///
    /// `factory` receives the parameter table from the config (without
    /// `max_episode_steps`, which the registry handles) and should reject
    /// unknown or out-of-range parameters; [`parse_params`] does the former.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        max_episode_steps: Option<u64>,
        reward_threshold: Option<f64>,
        factory: impl Fn(&toml::Table) -> Result<Box<dyn Env>, EnvError> + Send + Sync + 'static,
    ) -> Result<(), EnvError> {
        if self.get(name).is_some() {
            return Err(EnvError::DuplicateEnv { name: name.into() });
        }
        self.specs.push(spec(
            name,
            description,
            max_episode_steps,
            reward_threshold,
            factory,
        ));
        Ok(())
    }

    /// The spec registered under `name`.
    pub fn get(&self, name: &str) -> Option<&EnvSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// All specs, in registration order.
    pub fn specs(&self) -> &[EnvSpec] {
        &self.specs
    }

    /// Build the environment `name` with `params`, wrapped in its
    /// [`TimeLimit`] when it has one. The parameter `max_episode_steps`
    /// (an integer in [1, [`MAX_EPISODE_STEPS`]]) overrides the registered
    /// limit.
    pub fn make(&self, name: &str, params: &toml::Table) -> Result<Box<dyn Env>, EnvError> {
        let spec = self.get(name).ok_or_else(|| EnvError::UnknownEnv {
            name: name.into(),
            known: self
                .specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let mut params = params.clone();
        let limit = match params.remove("max_episode_steps") {
            None => spec.max_episode_steps,
            Some(v) => match v.as_integer() {
                Some(n) if (1..=MAX_EPISODE_STEPS as i64).contains(&n) => Some(n as u64),
                _ => {
                    return Err(EnvError::param(
                        name,
                        "max_episode_steps",
                        format!("must be an integer in [1, {MAX_EPISODE_STEPS}], got {v}"),
                    ))
                }
            },
        };
        let env = (spec.factory)(&params)?;
        Ok(match limit {
            Some(n) => Box::new(TimeLimit::new(env, n)?),
            None => env,
        })
    }

    /// The observation and action spaces of `name` built with default
    /// parameters (what `klrl envs` prints).
    pub fn spaces(&self, name: &str) -> Result<(Space, Space), EnvError> {
        let env = self.make(name, &toml::Table::new())?;
        Ok((env.observation_space().clone(), env.action_space().clone()))
    }
}

/// Build an [`EnvSpec`] (used by [`Registry::register`] and the built-ins).
/// The largest `max_episode_steps` a config may set: a million steps, 1000
/// times the longest registered limit, so that a typo cannot make an
/// episode (and the evaluation that waits for it) endless.
pub const MAX_EPISODE_STEPS: u64 = 1_000_000;

pub(crate) fn spec(
    name: &str,
    description: &str,
    max_episode_steps: Option<u64>,
    reward_threshold: Option<f64>,
    factory: impl Fn(&toml::Table) -> Result<Box<dyn Env>, EnvError> + Send + Sync + 'static,
) -> EnvSpec {
    EnvSpec {
        name: name.into(),
        description: description.into(),
        max_episode_steps,
        reward_threshold,
        factory: Box::new(factory),
    }
}

/// Deserialise an environment's parameter struct from a config table, turning
/// an unknown field or a wrong type into [`EnvError::BadParameters`] naming `env`
/// and the field, e.g. `sutton_barto_reward: invalid type: integer `1`, expected a boolean`.
pub fn parse_params<P: DeserializeOwned>(env: &str, table: &toml::Table) -> Result<P, EnvError> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let path = e.path().to_string();
            let reason = e.inner().message().trim().to_string();
            EnvError::BadParameters {
                env: env.into(),
                reason: if path == "." {
                    reason
                } else {
                    format!("{path}: {reason}")
                },
            }
        },
    )
}
