//! `klrl envs`: list the registered environments, or check one with
//! [`klrl_envs::check_env`].

use anyhow::anyhow;
use clap::Args;
use klrl_envs::{check_env, CheckOptions, CheckReport, EnvError, Registry, Space};

use crate::CliError;

/// Arguments of `klrl envs`.
#[derive(Args)]
pub struct EnvsArgs {
    /// Print JSON instead of text: one object per environment, or the check
    /// report as one object.
    #[arg(long)]
    json: bool,
    /// Check the environment NAME (built with its default parameters and its
    /// registered time limit) against the Env contract instead of listing:
    /// spaces, observations, determinism, episode ends, truncation, valid and
    /// invalid actions, snapshots. Exit status 1 if a check fails.
    #[arg(long, value_name = "NAME")]
    check: Option<String>,
    /// With --check: seed of the resets and of the random actions.
    #[arg(long, default_value_t = 0, requires = "check")]
    seed: u64,
    /// With --check: steps of random actions in the step and determinism checks.
    #[arg(long, default_value_t = 1000, requires = "check")]
    steps: usize,
}

/// Describe a space compactly: `Discrete(2)` or `Box(4; [-4.8, 4.8] …)`.
fn describe(space: &Space) -> String {
    match space {
        Space::Discrete { n } => format!("Discrete({n})"),
        Space::Box { low, high, shape } => {
            let dims = shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×");
            let bounds = |v: &[f32]| {
                v.iter()
                    .map(|x| fmt_bound(*x))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "Box({dims}; low [{}], high [{}])",
                bounds(low),
                bounds(high)
            )
        }
    }
}

fn fmt_bound(x: f32) -> String {
    if x >= f32::MAX {
        "inf".into()
    } else if x <= -f32::MAX {
        "-inf".into()
    } else {
        format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Run `klrl envs` with the environments of `registry`.
pub fn run(args: EnvsArgs, registry: &Registry) -> Result<(), CliError> {
    if let Some(name) = &args.check {
        return check(registry, name, &args);
    }
    for spec in registry.specs() {
        let (obs, act) = registry.spaces(&spec.name).map_err(CliError::failure)?;
        if args.json {
            let v = serde_json::json!({
                "name": spec.name,
                "description": spec.description,
                "observation_space": describe(&obs),
                "action_space": describe(&act),
                "max_episode_steps": spec.max_episode_steps,
                "reward_threshold": spec.reward_threshold,
            });
            println!("{v}");
        } else {
            println!("{}", spec.name);
            println!("    {}", spec.description);
            println!("    observation: {}", describe(&obs));
            println!("    action:      {}", describe(&act));
            let limit = spec
                .max_episode_steps
                .map_or("none".to_string(), |n| format!("{n} steps"));
            let threshold = spec
                .reward_threshold
                .map_or("none".to_string(), |t| t.to_string());
            println!("    time limit:  {limit}; reward threshold: {threshold}");
        }
    }
    Ok(())
}

/// `klrl envs --check NAME`: print the report; exit 1 if a check failed, 2
/// for an unknown name.
fn check(registry: &Registry, name: &str, args: &EnvsArgs) -> Result<(), CliError> {
    let mut env = registry
        .make(name, &toml::Table::new())
        .map_err(|e| match e {
            EnvError::UnknownEnv { .. } => CliError::usage(e),
            e => CliError::failure(
                anyhow::Error::new(e)
                    .context(format!("cannot build {name} with default parameters")),
            ),
        })?;
    let options = CheckOptions {
        seed: args.seed,
        steps: args.steps,
        max_episode_steps: registry.get(name).and_then(|s| s.max_episode_steps),
    };
    let report = check_env(env.as_mut(), &options);
    if args.json {
        println!("{}", report_json(&report));
    } else {
        print!("{report}");
    }
    if report.passed() {
        return Ok(());
    }
    let failed: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.verdict == klrl_envs::Verdict::Fail)
        .map(|o| o.check)
        .collect();
    Err(CliError::failure(anyhow!(
        "{name} failed {} of {} checks: {}",
        failed.len(),
        report.outcomes.len(),
        failed.join(", ")
    )))
}

fn report_json(report: &CheckReport) -> serde_json::Value {
    serde_json::json!({
        "env": report.env,
        "passed": report.passed(),
        "seed": report.options.seed,
        "steps": report.options.steps,
        "max_episode_steps": report.options.max_episode_steps,
        "checks": report.outcomes.iter().map(|o| serde_json::json!({
            "check": o.check,
            "verdict": o.verdict.label(),
            "detail": o.detail,
        })).collect::<Vec<_>>(),
    })
}
