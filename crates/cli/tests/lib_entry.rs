//! `klrl_cli::run_with_args`, the program as a library, with a registry of
//! one's own: its environments are found by name, and `klrl envs --check`
//! exits 1 for one that breaks the Env contract.

use std::process::ExitCode;

use klrl_cli::run_with_args;
use klrl_envs::{Action, Env, EnvError, Registry, Space, Step};

/// One-step episodes whose observation is NaN after the step.
struct NanAfterStep(Space, Space);

impl Env for NanAfterStep {
    fn name(&self) -> &str {
        "NanAfterStep-v0"
    }
    fn observation_space(&self) -> &Space {
        &self.0
    }
    fn action_space(&self) -> &Space {
        &self.1
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        obs.clear();
        obs.push(0.0);
        Ok(())
    }
    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        self.1.check_action("NanAfterStep-v0", action)?;
        obs.clear();
        obs.push(f32::NAN);
        Ok(Step {
            terminated: true,
            ..Default::default()
        })
    }
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register("NanAfterStep-v0", "broken on purpose", None, None, |_| {
        Ok(Box::new(NanAfterStep(
            Space::uniform_box(1, -1.0, 1.0),
            Space::discrete(2),
        )))
    })
    .unwrap();
    r
}

#[test]
fn envs_check_exit_status_follows_the_report() {
    let run = |args: &[&str]| {
        let mut all = vec!["klrl"];
        all.extend(args);
        run_with_args(registry(), all)
    };
    assert_eq!(
        run(&["envs", "--check", "NanAfterStep-v0"]),
        ExitCode::from(1)
    );
    assert_eq!(
        run(&["envs", "--check", "Chain-v0", "--steps", "200"]),
        ExitCode::SUCCESS
    );
    assert_eq!(run(&["envs", "--check", "Nope-v0"]), ExitCode::from(2));
    assert_eq!(run(&["envs", "--bogus"]), ExitCode::from(2));
    assert_eq!(
        run(&["kl", "discrete", "--p", "0.5,0.5", "--q", "0.5,0.5"]),
        ExitCode::SUCCESS
    );
}
