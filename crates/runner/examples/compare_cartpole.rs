//! Compare PPO with the adaptive KL penalty and TRPO on CartPole-v1 through
//! the library, as `klrl compare` does:
//!
//! ```text
//! cargo run --release -p klrl-runner --example compare_cartpole -- OUT_DIR [TOTAL_STEPS]
//! ```
//!
//! Writes OUT_DIR/summary.md, return.png and kl.png.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use klrl_envs::Registry;
use klrl_runner::compare::{compare, CompareOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: compare_cartpole OUT_DIR [TOTAL_STEPS]")?,
    );
    let steps: u64 = args.next().map_or(Ok(30_000), |s| s.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/compare/cartpole");
    let opts = CompareOptions {
        configs: vec![root.join("ppo-kl-adaptive.toml"), root.join("trpo.toml")],
        seeds: 2,
        sets: vec![format!("train.total_steps={steps}")],
        out: out.clone(),
        jobs: None,
    };
    let stop = AtomicBool::new(false);
    let stats = compare(&opts, &Registry::builtin(), &stop, &|line| {
        println!("{line}")
    })?;
    for s in stats {
        println!(
            "{}: final return {:.1} ± {:.1}, mean KL {:.5}",
            s.label, s.final_return_mean, s.final_return_std, s.kl_mean
        );
    }
    println!("see {}", out.join("summary.md").display());
    Ok(())
}
