//! `klrl bench`: short runs of the default configs as JSON and as a table,
//! the seeds (`--seed-start`) and the final evaluation (`--eval-episodes`),
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

/// A 512-step CartPole PPO config in a fresh directory.
fn short_config(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("klrl-bench-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("short.toml");
    std::fs::write(
        &config,
        "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 512\nn_envs = 2\nn_steps = 128\n\
         [algo]\nname = \"ppo\"\nobjective = \"clip\"\nn_epochs = 2\n",
    )
    .unwrap();
    (dir, config)
}

#[test]
fn seed_start_and_eval_episodes_choose_the_seeds_and_the_evaluation() {
    let (dir, config) = short_config("seeds");
    let config = config.to_str().unwrap();
    let out = klrl(&[
        "bench",
        config,
        "--seed-start",
        "5",
        "--seeds",
        "2",
        "--eval-episodes",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let runs = v.as_array().expect("an array");
    let seeds: Vec<u64> = runs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [5, 6], "{v}");
    for r in runs {
        let seed = r["seed"].as_u64().unwrap();
        let e = &r["eval"];
        assert_eq!(e["episodes"].as_u64(), Some(3), "{r}");
        assert_eq!(e["seed"].as_u64(), Some(1_000_000 + seed), "{r}");
        assert_eq!(e["deterministic"].as_bool(), Some(true), "{r}");
        assert!(e["mean_return"].as_f64().unwrap() >= 1.0, "{r}");
    }

    // The evaluation is `klrl train`'s, to the bit, for the same config and seed.
    let run_dir = dir.join("run");
    let train = klrl(&[
        "train",
        config,
        "--seed",
        "6",
        "--set",
        "run.eval_episodes=3",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(train.status.success(), "{train:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["eval"], runs[1]["eval"],
        "train {summary} vs bench {}",
        runs[1]
    );

    // Default: seeds 0.., the config's run.eval_episodes (10); 0 skips the evaluation.
    let out = klrl(&["bench", config, "--seeds", "1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["seed"].as_u64(), Some(0), "{v}");
    assert_eq!(v[0]["eval"]["episodes"].as_u64(), Some(10), "{v}");
    let out = klrl(&["bench", config, "--seeds", "1", "--eval-episodes", "0"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].trim_end().ends_with("eval"), "{text}");
    assert!(lines[1].trim_end().ends_with(" -"), "no evaluation: {text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_seed_start_and_eval_episodes_exit_with_status_2() {
    for args in [
        &["--seed-start", "-1"][..],
        &["--seed-start", "two"],
        &["--eval-episodes", "-3"],
        &["--eval-episodes", "1.5"],
        // seeds u64::MAX and one past it
        &["--seed-start", "18446744073709551615", "--seeds", "2"],
    ] {
        let out = klrl(&[&["bench"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // names the value (and, unless clap reads it as a flag, the option)
        assert!(stderr.contains(args[1]), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
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
