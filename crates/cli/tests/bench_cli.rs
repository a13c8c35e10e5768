//! `klrl bench`: short runs of the default configs as JSON and as a table,
//! and bad arguments.

use std::process::Command;

fn klrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_klrl"))
        .args(args)
        .output()
        .expect("run klrl")
}

#[test]
fn json_has_one_record_per_config_and_seed() {
    let out = klrl(&[
        "bench",
        "--seeds",
        "2",
        "--set",
        "train.total_steps=1024",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let runs = v.as_array().expect("an array");
    assert_eq!(runs.len(), 4, "2 configs × 2 seeds: {v}");
    let algos: Vec<&str> = runs.iter().map(|r| r["algo"].as_str().unwrap()).collect();
    assert_eq!(algos, ["ppo-clip", "ppo-clip", "trpo", "trpo"]);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r["seed"].as_u64(), Some(i as u64 % 2), "{r}");
        let steps = r["steps"].as_u64().unwrap();
        assert!((1024..1024 + 1024).contains(&steps), "{r}");
        let wall = r["wall_s"].as_f64().unwrap();
        let phases = r["rollout_s"].as_f64().unwrap()
            + r["advantage_s"].as_f64().unwrap()
            + r["update_s"].as_f64().unwrap();
        assert!(wall > 0.0 && phases <= wall, "{r}");
        let rate = r["steps_per_s"].as_f64().unwrap();
        assert!((rate - steps as f64 / wall).abs() <= 1e-6 * rate, "{r}");
        assert_eq!(r["threshold"].as_f64(), Some(475.0));
        // 1024 steps are far too few to average 475
        assert!(r["steps_to_threshold"].is_null(), "{r}");
    }
}

#[test]
fn the_table_names_each_run_and_averages_the_seeds() {
    let dir = std::env::temp_dir().join(format!("klrl-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("short.toml");
    std::fs::write(
        &config,
        "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 512\nn_envs = 2\nn_steps = 128\n\
         [algo]\nname = \"ppo\"\nobjective = \"clip\"\nn_epochs = 2\n",
    )
    .unwrap();
    let out = klrl(&["bench", config.to_str().unwrap(), "--seeds", "2"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "header, 2 runs, mean:\n{text}");
    assert!(lines[0].contains("wall s") && lines[0].contains("update s"));
    assert!(lines[1].contains("short.toml") && lines[1].contains(" 512 "));
    assert!(lines[3].contains("mean of 2 (0 reached)"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_arguments_exit_with_status_2() {
    let out = klrl(&["bench", "--seeds", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = klrl(&["bench", "--set", "algo.max_kl=-1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_kl"));
    let out = klrl(&["bench", "/nonexistent/x.toml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
