//! The whole `klrl` program for an environment of your own: register it next
//! to the built-ins and hand the registry to `klrl_cli::run`. Every
//! subcommand (`train`, `eval`, `compare`, `bench`, `envs`, `kl`) then works,
//! with the new environment usable in configs by name.
//!
//! The environment, `Corridor-v0`: a walker in a corridor of `length` + 1
//! cells (parameter `length`, default 8) starts in one of the first half of
//! the cells and must reach the last one. Actions: 0 step left, 1 step right.
//! Each step costs 0.1; the step onto the last cell pays +1 instead and
//! terminates the episode. The registry adds a time limit of 50 steps.
//! Observation: [position / length, 1]. The best policy walks right and
//! earns 1 − 0.1·(steps − 1) > 0; a walker that does not get there in 50
//! steps earns −5.
//!
//! Run it from the workspace root, as you would run `klrl`:
//!
//! ```text
//! cargo run --release --example own_program -- envs --check Corridor-v0
//! cargo run --release --example own_program -- train configs/own-program-corridor.toml --out runs/corridor
//! cargo run --release --example own_program -- eval runs/corridor --deterministic
//! cargo run --release --example own_program -- compare configs/own-program-corridor.toml configs/own-program-corridor-trpo.toml --seeds 2 --out results/corridor
//! ```
//!
//! Training takes under a second and evaluates to the best return from each
//! start (the test suite runs all four commands).

use klrl::envs::{
    parse_params, Action, Env, EnvError, EnvRng, EnvSnapshot, Registry, RngState, Space, Step,
};
use rand::{Rng, SeedableRng};
use serde::Deserialize;

fn main() -> std::process::ExitCode {
    let mut registry = Registry::builtin();
    registry
        .register(
            Corridor::NAME,
            "Walk right to the end of a corridor; 2 actions, 2-d observation",
            Some(50),
            None,
            |params| {
                Ok(Box::new(Corridor::new(parse_params(
                    Corridor::NAME,
                    params,
                )?)?))
            },
        )
        .expect("Corridor-v0 is not a built-in name");
    klrl_cli::run(registry)
}

/// Parameters of `Corridor-v0` (`[env.params]` in a config).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CorridorParams {
    /// Index of the last cell, the goal; at least 2. Default 8.
    length: u64,
}

impl Default for CorridorParams {
    fn default() -> Self {
        CorridorParams { length: 8 }
    }
}

struct Corridor {
    length: u64,
    position: u64,
    needs_reset: bool,
    rng: EnvRng,
    observation_space: Space,
    action_space: Space,
}

impl Corridor {
    const NAME: &'static str = "Corridor-v0";

    fn new(params: CorridorParams) -> Result<Self, EnvError> {
        if params.length < 2 {
            return Err(EnvError::param(
                Self::NAME,
                "length",
                format!("must be at least 2, got {}", params.length),
            ));
        }
        Ok(Corridor {
            length: params.length,
            position: 0,
            needs_reset: true,
            rng: EnvRng::seed_from_u64(0),
            observation_space: Space::uniform_box(2, 0.0, 1.0),
            action_space: Space::discrete(2),
        })
    }

    fn write_obs(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.extend_from_slice(&[self.position as f32 / self.length as f32, 1.0]);
    }
}

impl Env for Corridor {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        self.position = self.rng.random_range(0..self.length / 2);
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        self.action_space.check_action(Self::NAME, action)?;
        if self.needs_reset {
            return Err(EnvError::NeedsReset {
                env: Self::NAME.into(),
                when: "after the episode ended or before the first reset()",
            });
        }
        self.position = match action {
            Action::Discrete(0) => self.position.saturating_sub(1),
            _ => self.position + 1,
        };
        let terminated = self.position == self.length;
        self.needs_reset = terminated;
        self.write_obs(obs);
        Ok(Step {
            reward: if terminated { 1.0 } else { -0.1 },
            terminated,
            truncated: false,
            info: Default::default(),
        })
    }

    /// Snapshots make checkpoints resume bit for bit: ints = [position],
    /// flags = [needs_reset], the RNG.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new(Self::NAME);
        s.ints = vec![self.position];
        s.flags = vec![self.needs_reset];
        s.rngs = vec![RngState::of(&self.rng)];
        Some(s)
    }

    fn restore(&mut self, s: &EnvSnapshot) -> Result<(), EnvError> {
        s.expect(Self::NAME, Self::NAME, [0, 1, 1, 1, 0])?;
        self.position = s.ints[0];
        self.needs_reset = s.flags[0];
        self.rng = s.rngs[0].to_rng();
        Ok(())
    }
}
