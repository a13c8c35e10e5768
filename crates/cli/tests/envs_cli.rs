//! `klrl envs` lists every registered environment with its spaces.

use std::process::Command;

use klrl_envs::{Registry, Space};

fn klrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_klrl"))
        .args(args)
        .output()
        .expect("run klrl")
}

#[test]
fn lists_every_registered_environment_with_its_spaces() {
    let out = klrl(&["envs"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let registry = Registry::builtin();
    for spec in registry.specs() {
        // Each environment is a block: name, description, observation, action, limits.
        let start = text
            .find(&format!("{}\n", spec.name))
            .unwrap_or_else(|| panic!("{} not listed:\n{text}", spec.name));
        let block = &text[start..];
        let (obs, act) = registry.spaces(&spec.name).unwrap();
        let obs_line = block.lines().nth(2).unwrap();
        let act_line = block.lines().nth(3).unwrap();
        assert!(
            obs_line.contains(&format!("observation: Box({};", obs.flat_dim())),
            "{}: {obs_line}",
            spec.name
        );
        match act {
            Space::Discrete { n } => assert!(
                act_line.contains(&format!("action:      Discrete({n})")),
                "{act_line}"
            ),
            Space::Box { .. } => assert!(
                act_line.contains(&format!("action:      Box({};", act.flat_dim())),
                "{act_line}"
            ),
        }
    }
}

#[test]
fn json_output_has_one_object_per_environment() {
    let out = klrl(&["envs", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["observation_space"].as_str().unwrap().starts_with("Box("));
            assert!(v["action_space"].is_string());
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: Vec<String> = Registry::builtin()
        .specs()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = klrl(&["envs", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

#[test]
fn check_passes_every_builtin_environment() {
    for spec in Registry::builtin().specs() {
        let out = klrl(&["envs", "--check", &spec.name, "--steps", "500"]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{}: {text}", spec.name);
        assert!(
            text.starts_with(&format!(
                "check of {} (seed 0, 500 steps): 9 passed",
                spec.name
            )),
            "{text}"
        );
        for check in [
            "spaces",
            "reset",
            "step",
            "determinism",
            "episode_end",
            "truncation",
            "valid_actions",
            "invalid_actions",
            "snapshot",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("PASS  {check} "))),
                "{}: {check} not passed in\n{text}",
                spec.name
            );
        }
    }
}

#[test]
fn check_json_has_every_check_with_its_verdict() {
    let out = klrl(&["envs", "--check", "Pendulum-v1", "--seed", "4", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["env"], "Pendulum-v1");
    assert_eq!(v["passed"], true);
    assert_eq!(v["seed"], 4);
    assert_eq!(v["max_episode_steps"], 200);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 9);
    assert!(checks.iter().all(|c| c["verdict"] == "PASS"), "{v}");
    assert_eq!(checks[4]["check"], "episode_end");
    assert!(checks[4]["detail"].as_str().unwrap().contains("NeedsReset"));
}

#[test]
fn check_of_an_unknown_environment_or_bad_arguments_exits_2() {
    let out = klrl(&["envs", "--check", "CartPool-v1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown environment `CartPool-v1`; registered environments: CartPole-v1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // --seed and --steps only go with --check.
    let out = klrl(&["envs", "--seed", "3"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = klrl(&["envs", "--check", "CartPole-v1", "--steps", "many"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
