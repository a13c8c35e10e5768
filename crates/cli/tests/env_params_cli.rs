//! Environment parameters (`[env.params]`) through `klrl train`: a bad value
//! is a configuration error (exit 2, naming the environment and the
//! parameter, nothing written); a good one is used and saved with the run.

mod common;
use common::{run, temp_dir};

/// Two CartPole updates of 2 × 64 steps.
const SMALL: &str = r#"
[env]
name = "CartPole-v1"

[train]
total_steps = 256
n_envs = 2
n_steps = 64

[policy]
hidden = [8]

[algo]
name = "ppo"
n_epochs = 1
minibatch_size = 64

[run]
eval_episodes = 1
"#;

#[test]
fn bad_physical_constants_exit_2_naming_the_parameter() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("small.toml"), SMALL).unwrap();
    let cases = [
        (
            "env.params.masspole=-0.1",
            "`masspole`: must be finite and > 0, got -0.1",
        ),
        ("env.params.tau=0.0", "`tau`: must be finite and > 0, got 0"),
        (
            "env.params.gravity=nan",
            "`gravity`: must be finite and > 0, got NaN",
        ),
        (
            "env.params.force_mag=inf",
            "`force_mag`: must be finite and > 0, got inf",
        ),
        ("env.params.total_mass=2.0", "unknown field `total_mass`"),
    ];
    for (set, expected) in cases {
        let out = run(&["train", "small.toml", "--set", set], &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains("env.params: CartPole-v1"), "{set}: {err}");
        assert!(
            err.contains(expected),
            "{set}: expected `{expected}` in {err}"
        );
        assert!(!dir.join("runs").exists(), "{set} created runs/");
    }
    // MountainCarContinuous-v0's goal_velocity is checked the same way.
    let out = run(
        &[
            "train",
            "small.toml",
            "--set",
            "env.name=MountainCarContinuous-v0",
            "--set",
            "env.params.goal_velocity=0.5",
        ],
        &dir,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("MountainCarContinuous-v0: invalid parameter `goal_velocity`: must be finite and <= 0.07"),
        "{err}"
    );
    assert!(!dir.join("runs").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn good_physical_constants_are_used_and_saved() {
    let dir = temp_dir("good");
    std::fs::write(dir.join("small.toml"), SMALL).unwrap();
    let out = run(
        &[
            "train",
            "small.toml",
            "--set",
            "env.params.masspole=0.3",
            "--set",
            "env.params.length=1",
            "--out",
            "run",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: toml::Table = std::fs::read_to_string(dir.join("run/config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let params = saved["env"]["params"].as_table().unwrap();
    assert_eq!(params["masspole"].as_float(), Some(0.3));
    assert_eq!(params["length"].as_integer(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}
