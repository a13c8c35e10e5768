//! gSDE in the rollouts: the exploring actions are μ(s) + θ_εᵀ z(s) with one
//! noise matrix per environment copy, drawn from the run's RNG at the start
//! of every rollout and every `sde_sample_freq` steps — reproduced here from
//! a copy of the RNG, independently of the collector; and a state-dependent
//! σ asked of a discrete action space is a config error naming the field.

use candle_core::{DType, Device};
use klrl_envs::{Registry, VecEnv};
use klrl_optim::rollout::Collector;
use klrl_optim::{ExperimentConfig, OptimError, Trainer};
use klrl_policy::{
    Activation, DiagGaussianPolicy, GaussianHead, GaussianStd, GsdeConfig, MlpConfig, Policy,
    ValueNet,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn pendulums(n: usize) -> VecEnv<Box<dyn klrl_envs::Env>> {
    let reg = Registry::builtin();
    let envs = (0..n)
        .map(|_| reg.make("Pendulum-v1", &toml::Table::new()).unwrap())
        .collect();
    let mut v = VecEnv::new(envs).unwrap();
    v.reset(Some(7)).unwrap();
    v
}

fn policy(rng: &mut ChaCha8Rng) -> DiagGaussianPolicy {
    let cfg = MlpConfig {
        hidden: vec![8, 8],
        activation: Activation::Tanh,
    };
    let head = GaussianHead {
        std: GaussianStd::Gsde(GsdeConfig::sb3()),
        log_std_init: -1.0,
    };
    DiagGaussianPolicy::with_head(3, 1, &cfg, &head, DType::F64, &Device::Cpu, rng).unwrap()
}

#[test]
fn noise_is_redrawn_on_schedule_one_matrix_per_copy() {
    let (n_envs, n_steps) = (3, 10);
    for freq in [-1i64, 1, 4] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let p = policy(&mut rng);
        let v =
            ValueNet::new(3, &MlpConfig::default(), DType::F64, &Device::Cpu, &mut rng).unwrap();
        let mut venv = pendulums(n_envs);
        let mut collector = Collector::new(None, None);
        collector.sde_sample_freq = freq;
        let mut replay = rng.clone();
        for _rollout in 0..2 {
            let r = collector
                .collect(&mut venv, &p, &v, n_steps, &mut rng)
                .unwrap();
            let actions = r.actions.as_continuous().unwrap();
            let mut noise = None;
            let mut distinct = std::collections::HashSet::new();
            for t in 0..n_steps {
                // the schedule: fresh at t = 0, then every `freq` steps
                if t == 0 || (freq > 0 && t as i64 % freq == 0) {
                    noise = p.sample_sde_noise(n_envs, &mut replay).unwrap();
                }
                let noise = noise.as_ref().unwrap();
                let obs = p
                    .obs_tensor(&r.obs[t * n_envs * 3..(t + 1) * n_envs * 3])
                    .unwrap();
                let (mean, z) = p.mlp().forward_with_features(&obs).unwrap();
                let mean = mean.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let z = z.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let eps = noise.noise(&z).unwrap();
                for e in 0..n_envs {
                    assert_eq!(
                        actions[t * n_envs + e],
                        (mean[e] + eps[e]) as f32,
                        "freq {freq}, step {t}, copy {e}"
                    );
                    distinct.insert(
                        noise.weights()[e * 8..(e + 1) * 8]
                            .iter()
                            .map(|x| x.to_bits())
                            .collect::<Vec<_>>(),
                    );
                }
            }
            // one matrix per copy per draw, all different
            let draws = if freq > 0 {
                n_steps.div_ceil(freq as usize)
            } else {
                1
            };
            assert_eq!(distinct.len(), draws * n_envs, "freq {freq}");
        }
        // the collector drew nothing else from the RNG
        assert_eq!(rng, replay, "freq {freq}");
    }
}

#[test]
fn a_state_dependent_sigma_needs_continuous_actions() {
    for (field, body) in [
        ("policy.use_sde", "use_sde = true"),
        ("policy.state_dependent_std", "state_dependent_std = true"),
    ] {
        let config: ExperimentConfig = toml::from_str(&format!(
            "[env]\nname = \"CartPole-v1\"\n[policy]\n{body}\n"
        ))
        .unwrap();
        config.validate().unwrap();
        let Err(e) = Trainer::from_config(config, &Registry::builtin()) else {
            panic!("{field}: accepted for CartPole");
        };
        match e {
            OptimError::Config { field: f, reason } => {
                assert_eq!(f, field);
                assert_eq!(
                    reason,
                    "a state-dependent σ needs continuous (Box) actions; CartPole-v1 has Discrete(2)"
                );
            }
            other => panic!("{field}: {other}"),
        }
    }
}
