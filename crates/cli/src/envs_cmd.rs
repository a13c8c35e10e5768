//! `klrl envs`: list the registered environments.

use clap::Args;
use klrl_envs::{Registry, Space};

use crate::CliError;

/// Arguments of `klrl envs`.
#[derive(Args)]
pub struct EnvsArgs {
    /// Print one JSON object per environment instead of a table.
    #[arg(long)]
    json: bool,
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

/// Run `klrl envs`.
pub fn run(args: EnvsArgs) -> Result<(), CliError> {
    let registry = Registry::builtin();
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
