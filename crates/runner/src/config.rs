//! Run configs: the optimiser's [`ExperimentConfig`] plus a `[run]` section,
//! read from TOML with unknown fields denied, overridden with `--set
//! key=value`, and validated — ranges, the environment's own parameters (by
//! building it once) and the algorithm — before anything runs or any file is
//! written. Every error names the file, the field path and the reason:
//! `configs/x.toml: algo.max_kl: must be > 0, got -0.01`.

use std::path::{Path, PathBuf};

use klrl_envs::{Action, Env, EnvError, Registry, Space};
use klrl_optim::config::EnvConfig;
use klrl_optim::{AlgoConfig, ExperimentConfig, KlLimit, NetConfig, OptimError, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};

/// The config `klrl train` runs without a file: PPO with a hard limit of
/// 0.01 nats on every update's mean KL(π_old ‖ π_new) on CartPole-v1 (the
/// best-measuring KL-limited learner of the kl_vs_trust_region study).
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/cartpole-ppo-kl-limit.toml");

/// How [`DEFAULT_CONFIG`] is named in messages.
pub const DEFAULT_CONFIG_NAME: &str = "configs/cartpole-ppo-kl-limit.toml (built in)";

/// The `[run]` section: logging, checkpoints and evaluation of a run. Every
/// field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Write a checkpoint every this many updates; 0 writes one only at the
    /// end (and on Ctrl-C). Default 10.
    pub checkpoint_every: u64,
    /// How many of the newest checkpoints to keep (at least 1). Default 2, so
    /// the previous checkpoint survives until the next is complete.
    pub keep_checkpoints: usize,
    /// Episodes of the evaluation at the end of training (most probable
    /// action / mean action); 0 skips it. Default 10.
    pub eval_episodes: usize,
    /// When standard output is not a terminal, print a progress line every
    /// this many updates (at least 1). Default 10.
    pub log_every: u64,
    /// Finished training episodes averaged into `ep_return_mean` and
    /// `ep_len_mean` (a moving window, as Stable-Baselines3's
    /// `rollout/ep_rew_mean`; 20 matches the "rolling mean of 20 episodes"
    /// used for the reward thresholds in REFERENCE.md). Default 20.
    pub return_window: usize,
    /// Write TensorBoard event files under `tb/`. Default true.
    pub tensorboard: bool,
    /// Start from a trained policy: a run directory (its newest checkpoint)
    /// or a checkpoint directory, relative to where `klrl` runs. Its policy
    /// parameters are loaded (the `[policy]` tables must agree), its value
    /// network's and observation normaliser's where they fit; with
    /// `[algo.reference]` `source = "initial"` it is the reference. `klrl
    /// train --init-from DIR` sets it. Default: none (a fresh network).
    pub init_from: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            checkpoint_every: 10,
            keep_checkpoints: 2,
            eval_episodes: 10,
            log_every: 10,
            return_window: 20,
            tensorboard: true,
            init_from: None,
        }
    }
}

impl RunConfig {
    /// Range checks, naming the field.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        if self.keep_checkpoints < 1 {
            return Err((
                "run.keep_checkpoints".into(),
                format!("must be >= 1, got {}", self.keep_checkpoints),
            ));
        }
        if self.log_every < 1 {
            return Err((
                "run.log_every".into(),
                format!("must be >= 1, got {}", self.log_every),
            ));
        }
        if self.init_from.as_deref() == Some("") {
            return Err(("run.init_from".into(), "must not be empty".into()));
        }
        if self.return_window < 1 {
            return Err((
                "run.return_window".into(),
                format!("must be >= 1, got {}", self.return_window),
            ));
        }
        Ok(())
    }
}

/// A config file as written: the experiment's four sections and `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// `[env]`: registry name and parameters.
    pub env: EnvConfig,
    /// `[train]`: rollouts, advantages, seed.
    #[serde(default)]
    pub train: TrainConfig,
    /// `[policy]`: network shape.
    #[serde(default)]
    pub policy: NetConfig,
    /// `[algo]`: the algorithm, selected by `name`.
    #[serde(default)]
    pub algo: AlgoConfig,
    /// `[run]`: logging, checkpoints, evaluation.
    #[serde(default)]
    pub run: RunConfig,
}

/// A validated config, with what validation learnt about the environment.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// Where it came from (a path, or the built-in default), for messages.
    pub source: String,
    /// The experiment (validated).
    pub experiment: ExperimentConfig,
    /// The `[run]` section (validated).
    pub run: RunConfig,
    /// The environment's reward threshold from the registry, if it has one.
    pub reward_threshold: Option<f64>,
    /// Whether the environment reports expected regret (bandits): the
    /// `regret` column of metrics.csv.
    pub reports_regret: bool,
}

impl ResolvedConfig {
    /// The resolved config as TOML (what a run directory's `config.toml` holds).
    pub fn to_toml(&self) -> String {
        let file = RunFile {
            env: self.experiment.env.clone(),
            train: self.experiment.train.clone(),
            policy: self.experiment.policy.clone(),
            algo: self.experiment.algo.clone(),
            run: self.run.clone(),
        };
        toml::to_string(&file).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
    }

    /// The KL limit the algorithm is held to or steered toward, with its
    /// kind (target, mean bound, per-state bound): see
    /// [`AlgoConfig::kl_limit`]; `None` when it has none.
    pub fn kl_limit(&self) -> Option<KlLimit> {
        self.experiment.algo.kl_limit()
    }
}

/// Where a config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// TOML text with a name for messages (the built-in default).
    Text {
        /// Name used in messages.
        name: String,
        /// The TOML.
        text: String,
    },
}

impl ConfigSource {
    /// The built-in default config.
    pub fn default_config() -> Self {
        ConfigSource::Text {
            name: DEFAULT_CONFIG_NAME.into(),
            text: DEFAULT_CONFIG.into(),
        }
    }

    fn read(&self) -> Result<(String, String)> {
        match self {
            ConfigSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| RunnerError::Config {
                    location: p.display().to_string(),
                    reason: format!("cannot read the config: {e}"),
                })?;
                Ok((p.display().to_string(), text))
            }
            ConfigSource::Text { name, text } => Ok((name.clone(), text.clone())),
        }
    }
}

/// Where in the `[algo]` table a value does not deserialize, and why.
/// serde reads an internally tagged enum (`name = "ppo"` choosing the
/// variant) by buffering the whole table first, so its error only says
/// `algo`; deserializing the table without its `name` into the chosen
/// variant's own struct finds the field (`algo.lr`, `algo.reference.beta`).
/// `None` when that does not fail or `name` is not a known algorithm.
fn algo_field_error(algo: &toml::Value) -> Option<(String, String)> {
    fn locate<T: serde::de::DeserializeOwned>(v: toml::Value) -> Option<(String, String)> {
        let e = serde_path_to_error::deserialize::<_, T>(v).err()?;
        let inner = e.path().to_string();
        let path = match inner.as_str() {
            "." => "algo".to_string(),
            p => format!("algo.{p}"),
        };
        Some((path, e.inner().message().trim().to_string()))
    }
    let mut table = algo.as_table()?.clone();
    let name = table.remove("name")?;
    let rest = toml::Value::Table(table);
    match name.as_str()? {
        "ppo" => locate::<klrl_optim::config::PpoConfig>(rest),
        "trpo" | "npg" => locate::<klrl_optim::config::TrpoConfig>(rest),
        "vanilla-pg" => locate::<klrl_optim::config::PgConfig>(rest),
        _ => None,
    }
}

/// Read, override and validate a config.
///
/// `seed` (from `--seed`) sets `train.seed`; each of `sets` is `key=value`
/// with a dotted key path (`algo.max_kl=0.02`), the value parsed as a TOML
/// value and taken as a string if it is not one. Everything goes through the
/// same validation as the file: serde with unknown fields denied,
/// [`ExperimentConfig::validate`], [`RunConfig::validate`], and building the
/// environment once from `registry` (which checks its parameters).
pub fn load(
    source: &ConfigSource,
    sets: &[String],
    seed: Option<u64>,
    registry: &Registry,
) -> Result<ResolvedConfig> {
    let (file, text) = source.read()?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        RunnerError::Syntax {
            file: file.clone(),
            line,
            column,
            reason: e.message().trim().to_string(),
        }
    })?;
    let mut keys = Vec::new();
    for arg in sets {
        keys.push(apply_set(&mut table, arg)?);
    }
    if let Some(seed) = seed {
        // A config stores the seed as a TOML integer (a signed 64-bit one).
        let seed = i64::try_from(seed).map_err(|_| {
            RunnerError::Usage(format!("--seed must be <= {}, got {seed}", i64::MAX))
        })?;
        let train = table
            .entry("train")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match train {
            toml::Value::Table(t) => {
                t.insert("seed".into(), toml::Value::Integer(seed));
            }
            _ => {
                return Err(RunnerError::Config {
                    location: format!("{file}: train"),
                    reason: "must be a table".into(),
                })
            }
        }
    }
    let algo_table = table.get("algo").cloned();
    let parsed: RunFile = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let mut path = e.path().to_string();
            let mut reason = e.inner().message().trim().to_string();
            if path == "algo" {
                if let Some((p, r)) = algo_table.as_ref().and_then(algo_field_error) {
                    (path, reason) = (p, r);
                }
            }
            // An unknown field that a --set introduced is the --set's fault.
            for (arg, key) in sets.iter().zip(&keys) {
                let last = key.rsplit('.').next().unwrap_or(key);
                if reason.contains(&format!("unknown field `{last}`"))
                    && (path == "." || key.starts_with(&path))
                {
                    return RunnerError::BadSet {
                        arg: arg.clone(),
                        reason: format!("unknown key `{key}`: {reason}"),
                    };
                }
            }
            RunnerError::Config {
                location: if path == "." {
                    file.clone()
                } else {
                    format!("{file}: {path}")
                },
                reason,
            }
        },
    )?;
    let experiment = ExperimentConfig {
        env: parsed.env,
        train: parsed.train,
        policy: parsed.policy,
        algo: parsed.algo,
    };
    experiment.validate().map_err(|e| match e {
        OptimError::Config { field, reason } => RunnerError::Config {
            location: format!("{file}: {field}"),
            reason,
        },
        other => RunnerError::Config {
            location: file.clone(),
            reason: other.to_string(),
        },
    })?;
    parsed
        .run
        .validate()
        .map_err(|(field, reason)| RunnerError::Config {
            location: format!("{file}: {field}"),
            reason,
        })?;
    let (reward_threshold, reports_regret) = probe_env(&file, &experiment, registry)?;
    Ok(ResolvedConfig {
        source: file,
        experiment,
        run: parsed.run,
        reward_threshold,
        reports_regret,
    })
}

/// Build the environment once (checking its parameters) and take one step to
/// see whether it reports regret.
fn probe_env(
    file: &str,
    experiment: &ExperimentConfig,
    registry: &Registry,
) -> Result<(Option<f64>, bool)> {
    let name = &experiment.env.name;
    let env_error = |e: EnvError| {
        let field = match e {
            EnvError::UnknownEnv { .. } => "env.name",
            _ => "env.params",
        };
        RunnerError::Config {
            location: format!("{file}: {field}"),
            reason: e.to_string(),
        }
    };
    let mut env = registry
        .make(name, &experiment.env.params)
        .map_err(env_error)?;
    let threshold = registry.get(name).and_then(|s| s.reward_threshold);
    let mut obs = Vec::new();
    env.reset(Some(experiment.train.seed), &mut obs)
        .map_err(env_error)?;
    let step = match env.action_space().clone() {
        Space::Discrete { n } => {
            let a = (0..n)
                .find(|&a| env.action_mask().is_none_or(|m| m[a]))
                .unwrap_or(0);
            env.step(Action::Discrete(a), &mut obs)
        }
        Space::Box { low, high, .. } => {
            let a: Vec<f32> = low
                .iter()
                .zip(&high)
                .map(|(&l, &h)| 0.0f32.clamp(l, h))
                .collect();
            env.step(Action::Continuous(&a), &mut obs)
        }
    }
    .map_err(env_error)?;
    Ok((threshold, step.info.optimal_expected_reward.is_some()))
}

/// Apply one `key=value` override to `table`, returning the key.
fn apply_set(table: &mut toml::Table, arg: &str) -> Result<String> {
    let bad = |reason: &str| RunnerError::BadSet {
        arg: arg.to_string(),
        reason: reason.to_string(),
    };
    let Some((key, value)) = arg.split_once('=') else {
        return Err(bad("expected key=value, e.g. algo.max_kl=0.02"));
    };
    let key = key.trim();
    let path: Vec<&str> = key.split('.').collect();
    if key.is_empty() || path.iter().any(|p| p.is_empty()) {
        return Err(bad("the key must be a dotted path such as algo.max_kl"));
    }
    const SECTIONS: [&str; 5] = ["env", "train", "policy", "algo", "run"];
    if !SECTIONS.contains(&path[0]) {
        return Err(bad(&format!(
            "unknown key `{key}`: the first part must be one of {}",
            SECTIONS.join(", ")
        )));
    }
    if path.len() == 1 {
        return Err(bad(&format!(
            "`{key}` is a section; set one of its fields, e.g. {key}.<field>=..."
        )));
    }
    let value = parse_value(value.trim());
    let mut t = table;
    for (i, part) in path[..path.len() - 1].iter().enumerate() {
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(bad(&format!(
                    "unknown key `{key}`: `{}` is not a table",
                    path[..=i].join(".")
                )))
            }
        };
    }
    t.insert(path[path.len() - 1].to_string(), value);
    Ok(key.to_string())
}

/// A `--set` value: a TOML value (`0.02`, `true`, `[64, 64]`, `"x"`), or the
/// text as a string when it is not one (`CartPole-v1`).
fn parse_value(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| text.into()),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The fields `klrl train --resume DIR --set KEY=VALUE` may change: the
/// run's length, the algorithms' learning rates, how many rejected updates
/// in a row it survives, its compute threads (results do not depend on
/// them), and the logging, checkpoint
/// and evaluation fields of `[run]` (not `run.init_from`). Everything else
/// (the environment, the network, the algorithm and its other settings,
/// `train.n_envs`, `n_steps`, `seed`, `dtype`, the normalisation flags, …)
/// shapes what the checkpoint holds or what the updates mean, so a change
/// would break the run; [`load_amended`] refuses it.
pub const AMENDABLE: [&str; 11] = [
    "train.total_steps",
    "train.max_rejected_updates",
    "train.threads",
    "algo.lr",
    "algo.vf_lr",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.eval_episodes",
    "run.log_every",
    "run.return_window",
    "run.tensorboard",
];

/// The saved config of the run in `dir` with `sets` applied, for a resume
/// that amends it. Every key must be one of [`AMENDABLE`] (else a
/// [`RunnerError::BadSet`] naming the field, before anything is read), and
/// the result goes through the same validation as any config. Nothing is
/// written.
pub fn load_amended(dir: &Path, sets: &[String], registry: &Registry) -> Result<ResolvedConfig> {
    for arg in sets {
        let key = arg.split_once('=').map_or(arg.as_str(), |(k, _)| k).trim();
        if !AMENDABLE.contains(&key) {
            return Err(RunnerError::BadSet {
                arg: arg.clone(),
                reason: format!(
                    "`{key}` cannot change when resuming: it would break the run \
                     (a resume may change only {})",
                    AMENDABLE.join(", ")
                ),
            });
        }
    }
    let path = dir.join("config.toml");
    if !path.is_file() {
        return Err(RunnerError::Usage(format!(
            "{}: no config.toml; not a klrl run directory",
            dir.display()
        )));
    }
    load(&ConfigSource::File(path), sets, None, registry)
}

/// Load the resolved config of a run directory or checkpoint (`config.toml`).
pub fn load_saved(dir: &Path, registry: &Registry) -> Result<ResolvedConfig> {
    let path = dir.join("config.toml");
    if !path.is_file() {
        return Err(RunnerError::Usage(format!(
            "{}: no config.toml; not a klrl run directory or checkpoint",
            dir.display()
        )));
    }
    load(&ConfigSource::File(path), &[], None, registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, sets: &[&str]) -> Result<ResolvedConfig> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load(
            &ConfigSource::Text {
                name: "x.toml".into(),
                text: text.into(),
            },
            &sets,
            None,
            &Registry::builtin(),
        )
    }

    const CART: &str = "[env]\nname = \"CartPole-v1\"\n[algo]\nname = \"trpo\"\n";

    #[test]
    fn the_default_config_is_valid_and_round_trips() {
        let c = load(
            &ConfigSource::default_config(),
            &[],
            None,
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(c.experiment.env.name, "CartPole-v1");
        assert_eq!(c.reward_threshold, Some(475.0));
        assert!(!c.reports_regret);
        let again = load_text(&c.to_toml(), &[]).unwrap();
        assert_eq!(again.experiment, c.experiment);
        assert_eq!(again.run, c.run);
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_reason() {
        let e = load_text(CART, &["algo.max_kl=-0.01"]).unwrap_err();
        assert_eq!(e.to_string(), "x.toml: algo.max_kl: must be > 0, got -0.01");
        assert!(e.is_usage());
        let e = load_text("[env]\nname = \"CartPole-v1\"\n[train]\ngama = 1\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.toml: train.gama: unknown field `gama`"),
            "{e}"
        );
        let e = load_text("[env]\nname = \"Nope-v0\"\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.toml: env.name: unknown environment `Nope-v0`"),
            "{e}"
        );
        let e = load_text(
            "[env]\nname = \"CartPole-v1\"\nparams = { gravity = -3.0 }\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "x.toml: env.params: CartPole-v1: invalid parameter `gravity`: must be finite and > 0"
            ),
            "{e}"
        );
        let e = load_text(
            "[env]\nname = \"CartPole-v1\"\n[algo]\nname = \"sac\"\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `sac`"), "{e}");
        let e =
            load_text("[env]\nname = \"CartPole-v1\"\n[run]\nlog_every = 0\n", &[]).unwrap_err();
        assert_eq!(e.to_string(), "x.toml: run.log_every: must be >= 1, got 0");
    }

    #[test]
    fn syntax_errors_show_the_line() {
        let e = load_text(
            "[env]\nname = \"CartPole-v1\"\n[train]\nn_envs = = 3\n",
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, RunnerError::Syntax { line: 4, .. }), "{e}");
        assert!(e.to_string().starts_with("x.toml:4:"), "{e}");
    }

    #[test]
    fn overrides_parse_toml_values_and_fall_back_to_strings() {
        let c = load_text(
            CART,
            &[
                "algo.max_kl=0.02",
                "policy.hidden=[8]",
                "env.name=Acrobot-v1",
                "run.tensorboard=false",
            ],
        )
        .unwrap();
        let AlgoConfig::Trpo(t) = &c.experiment.algo else {
            panic!()
        };
        assert_eq!(t.max_kl, 0.02);
        assert_eq!(c.experiment.policy.hidden, vec![8]);
        assert_eq!(c.experiment.env.name, "Acrobot-v1");
        assert!(!c.run.tensorboard);
    }

    #[test]
    fn bad_overrides_are_rejected() {
        for (arg, expected) in [
            ("algo.max_kl", "--set algo.max_kl: expected key=value"),
            (
                "algo.max_kll=1",
                "--set algo.max_kll=1: unknown key `algo.max_kll`",
            ),
            (
                "train.gama=1",
                "--set train.gama=1: unknown key `train.gama`",
            ),
            ("foo.bar=1", "--set foo.bar=1: unknown key `foo.bar`"),
            (
                "env.name.x=1",
                "--set env.name.x=1: unknown key `env.name.x`",
            ),
            ("=1", "--set =1: the key must be"),
        ] {
            let e = load_text(CART, &[arg]).unwrap_err();
            assert!(e.to_string().starts_with(expected), "{arg}: {e}");
            assert!(e.is_usage());
        }
    }

    #[test]
    fn seeds_beyond_toml_integers_are_rejected() {
        let e = load(
            &ConfigSource::default_config(),
            &[],
            Some(u64::MAX),
            &Registry::builtin(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--seed must be <= 9223372036854775807, got 18446744073709551615"
        );
        assert!(e.is_usage());
    }

    #[test]
    fn bandits_report_regret() {
        let c = load_text("[env]\nname = \"MovieRec-v0\"\n", &[]).unwrap();
        assert!(c.reports_regret);
        assert_eq!(c.reward_threshold, None);
    }
}
