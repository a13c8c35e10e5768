//! TRPO/NPG numerics on small networks: the natural-gradient solve against a
//! direct solve with the explicitly built Fisher matrix, NPG's trust-region
//! length, exact restoration of rejected steps, the value gradient, and the
//! checkpoint state.

use candle_core::{DType, Device, Tensor};
use klrl_optim::batch::Batch;
use klrl_optim::trpo::{natural_gradient, value_loss_and_grad, Trpo};
use klrl_optim::{AlgoState, Algorithm, TrpoConfig};
use klrl_policy::{
    Actions, Activation, CategoricalPolicy, DiagGaussianPolicy, Dist, MlpConfig, Policy,
    PolicyFisher, ValueNet,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn mlp(hidden: &[usize]) -> MlpConfig {
    MlpConfig {
        hidden: hidden.to_vec(),
        activation: Activation::Tanh,
    }
}

/// A categorical policy and a value net of the given precision.
fn nets(
    obs_dim: usize,
    n_actions: usize,
    hidden: &[usize],
    dtype: DType,
    seed: u64,
) -> (CategoricalPolicy, ValueNet) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = mlp(hidden);
    let p =
        CategoricalPolicy::new(obs_dim, n_actions, &cfg, dtype, &Device::Cpu, &mut rng).unwrap();
    let v = ValueNet::new(obs_dim, &cfg, dtype, &Device::Cpu, &mut rng).unwrap();
    (p, v)
}

/// A batch of `n` random states with actions drawn from `policy` and random
/// advantages and returns.
fn random_batch(policy: &dyn Policy, n: usize, rng: &mut ChaCha8Rng) -> Batch {
    let d = policy.obs_dim();
    let obs: Vec<f32> = (0..n * d).map(|_| rng.random_range(-2.0..2.0)).collect();
    let t = policy.obs_tensor(&obs).unwrap();
    let dist = policy.dist(&t, None).unwrap();
    let actions = dist.sample(rng).unwrap();
    let a = actions.to_tensor(policy.dtype(), policy.device()).unwrap();
    let old_log_probs = dist
        .log_prob(&a)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let advantages: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let returns: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..3.0)).collect();
    Batch {
        obs_dim: d,
        obs,
        actions,
        old_log_probs,
        old_values: vec![0.0; n],
        advantages,
        returns,
        masks: None,
        progress: 0.0,
        update: 0,
        reference: None,
    }
}

/// Solve A x = b by Gaussian elimination with partial pivoting (row-major A).
fn gauss_solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(col * n + k, piv * n + k);
        }
        b.swap(col, piv);
        for r in col + 1..n {
            let f = a[r * n + col] / a[col * n + col];
            for k in col..n {
                a[r * n + k] -= f * a[col * n + k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    x
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// FVP + CG, as the TRPO update uses them, recover (F + λI)⁻¹ g where F is
/// built column by column (F eᵢ) and the system solved directly.
#[test]
fn conjugate_gradient_recovers_the_damped_natural_gradient() {
    let (policy, _) = nets(3, 3, &[8], DType::F64, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let batch = random_batch(&policy, 40, &mut rng);
    let obs = policy.obs_tensor(&batch.obs).unwrap();
    let fisher = policy.fisher(&obs, None).unwrap();
    let p = policy.num_params();
    assert_eq!(p, 3 * 8 + 8 + 8 * 3 + 3);
    let damping = 1e-2;
    let mut a = vec![0.0; p * p];
    for i in 0..p {
        let mut e = vec![0.0; p];
        e[i] = 1.0;
        let col = fisher.apply_damped(&e, damping).unwrap();
        for r in 0..p {
            a[r * p + i] = col[r];
        }
    }
    // F is symmetric (to rounding) and F + λI positive definite.
    for r in 0..p {
        for c in 0..r {
            assert!((a[r * p + c] - a[c * p + r]).abs() < 1e-12);
        }
    }
    // The surrogate gradient as the right-hand side.
    let dist = policy.dist(&obs, None).unwrap();
    let act = batch.actions.to_tensor(DType::F64, &Device::Cpu).unwrap();
    let adv = Tensor::from_vec(
        batch
            .advantages
            .iter()
            .map(|&x| x as f64)
            .collect::<Vec<_>>(),
        batch.len(),
        &Device::Cpu,
    )
    .unwrap();
    let lp = dist.log_prob(&act).unwrap();
    let surrogate = (lp.exp().unwrap() * adv).unwrap().mean_all().unwrap();
    let g = policy.flat_grad(&surrogate).unwrap();
    let direct = gauss_solve(a, g.clone(), p);
    let config = TrpoConfig {
        cg_damping: damping,
        cg_iters: 3 * p,
        cg_residual_tol: 1e-30,
        ..TrpoConfig::default()
    };
    let cg = natural_gradient(&fisher, &g, &config).unwrap();
    let err: Vec<f64> = cg.x.iter().zip(&direct).map(|(x, y)| x - y).collect();
    let rel = norm(&err) / norm(&direct);
    assert!(rel < 1e-6, "relative error {rel}, {} iterations", cg.iters);
    // With the default 15 iterations the solve is only approximate: the
    // reported residual is what is left.
    let short = natural_gradient(
        &fisher,
        &g,
        &TrpoConfig {
            cg_iters: 2,
            ..config
        },
    )
    .unwrap();
    assert_eq!(short.iters, 2);
    assert!(short.residual > 1e3 * cg.residual);
}

fn npg_config(max_kl: f64, damping: f64) -> TrpoConfig {
    TrpoConfig {
        max_kl,
        cg_damping: damping,
        vf_epochs: 1,
        vf_minibatch_size: 64,
        ..TrpoConfig::default()
    }
}

/// NPG's step has exactly the trust-region length ½ sᵀ(F + λI)s = δ.
#[test]
fn npg_step_has_the_trust_region_length() {
    for (seed, max_kl, damping) in [(3, 0.01, 0.1), (4, 0.05, 1e-3), (5, 1e-4, 0.0)] {
        let (mut policy, mut value) = nets(4, 2, &[16], DType::F64, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
        let batch = random_batch(&policy, 200, &mut rng);
        let obs = policy.obs_tensor(&batch.obs).unwrap();
        let fisher = policy.fisher(&obs, None).unwrap();
        let theta_old = policy.get_flat().unwrap();
        let mut npg = Trpo::new(npg_config(max_kl, damping), false, &value);
        assert_eq!(npg.name(), "npg");
        let d = npg
            .update(&mut policy, &mut value, &batch, &mut rng)
            .unwrap();
        assert_eq!(d.accepted, 1.0);
        assert_eq!(d.ls_steps, 0.0);
        let s: Vec<f64> = policy
            .get_flat()
            .unwrap()
            .iter()
            .zip(&theta_old)
            .map(|(n, o)| n - o)
            .collect();
        let fs = fisher.apply_damped(&s, damping).unwrap();
        let q = 0.5 * s.iter().zip(&fs).map(|(a, b)| a * b).sum::<f64>();
        assert!(
            ((q - max_kl) / max_kl).abs() < 1e-9,
            "½ sᵀ(F+λI)s = {q}, δ = {max_kl}"
        );
        // The quadratic model is close to the exact KL for a small δ.
        assert!(d.kl_old_new > 0.0 && d.kl_old_new < 2.0 * max_kl, "{d:?}");
        assert!(d.beta.is_nan() && d.clip_frac.is_nan());
        assert_eq!(d.epochs_run, 1.0);
    }
}

/// The same for a diagonal Gaussian policy, whose Fisher has the log σ block.
#[test]
fn npg_step_has_the_trust_region_length_for_a_gaussian_policy() {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let cfg = mlp(&[16]);
    let mut policy =
        DiagGaussianPolicy::new(3, 2, &cfg, DType::F64, &Device::Cpu, &mut rng).unwrap();
    let mut value = ValueNet::new(3, &cfg, DType::F64, &Device::Cpu, &mut rng).unwrap();
    let batch = random_batch(&policy, 150, &mut rng);
    assert!(matches!(
        batch.actions,
        Actions::Continuous { action_dim: 2, .. }
    ));
    let obs = policy.obs_tensor(&batch.obs).unwrap();
    let fisher = policy.fisher(&obs, None).unwrap();
    let theta_old = policy.get_flat().unwrap();
    let (max_kl, damping) = (0.02, 0.05);
    let mut npg = Trpo::new(npg_config(max_kl, damping), false, &value);
    npg.update(&mut policy, &mut value, &batch, &mut rng)
        .unwrap();
    let s: Vec<f64> = policy
        .get_flat()
        .unwrap()
        .iter()
        .zip(&theta_old)
        .map(|(n, o)| n - o)
        .collect();
    // log σ (the last two parameters) moves too.
    assert!(s[s.len() - 2..].iter().all(|x| *x != 0.0));
    let fs = fisher.apply_damped(&s, damping).unwrap();
    let q = 0.5 * s.iter().zip(&fs).map(|(a, b)| a * b).sum::<f64>();
    assert!(((q - max_kl) / max_kl).abs() < 1e-9, "{q}");
}

/// `fvp_subsample` < 1: Fisher products on a random subset of the states
/// drawn from the update's RNG; the update stays in the trust region (the KL
/// check uses every state) and is reproducible from the seed.
#[test]
fn fisher_subsampling_is_seeded_and_stays_in_the_trust_region() {
    let config = TrpoConfig {
        fvp_subsample: 0.25,
        vf_minibatch_size: 64,
        ..TrpoConfig::default()
    };
    let run = |seed: u64| {
        let (mut policy, mut value) = nets(4, 3, &[32], DType::F32, 21);
        let batch = random_batch(&policy, 400, &mut ChaCha8Rng::seed_from_u64(22));
        let mut trpo = Trpo::new(config.clone(), true, &value);
        let d = trpo
            .update(
                &mut policy,
                &mut value,
                &batch,
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
            .unwrap();
        (policy.get_flat().unwrap(), d)
    };
    let (a, da) = run(1);
    let (b, _) = run(1);
    let (c, _) = run(2);
    assert_eq!(a, b);
    assert_ne!(a, c, "a different subset gives a different step");
    assert_eq!(da.accepted, 1.0);
    assert!(
        da.kl_old_new <= config.max_kl && da.kl_old_new > 0.0,
        "{da:?}"
    );
}

/// f32 parameters read as f64 and written back are bit-identical.
#[test]
fn flat_round_trip_of_f32_parameters_is_exact() {
    let (mut policy, _) = nets(4, 2, &[64, 64], DType::F32, 7);
    let bits = |p: &CategoricalPolicy| -> Vec<u32> {
        p.vars()
            .iter()
            .flat_map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .map(f32::to_bits)
            .collect()
    };
    let before = bits(&policy);
    let flat = policy.get_flat().unwrap();
    policy.set_flat(&flat).unwrap();
    assert_eq!(bits(&policy), before);
}

/// A rejected line search leaves the policy bit-identical and reports
/// `accepted = 0`: (a) a surrogate that cannot improve (all advantages 0, so
/// g = 0 and there is no direction), (b) a trust region far smaller than
/// what the one allowed candidate needs in f32 (δ = 1e-12, one try).
#[test]
fn rejected_steps_restore_the_parameters_exactly() {
    let (mut policy, mut value) = nets(4, 2, &[64, 64], DType::F32, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let batch = random_batch(&policy, 256, &mut rng);
    let before = policy.get_flat().unwrap();
    let config = TrpoConfig {
        vf_minibatch_size: 64,
        ..TrpoConfig::default()
    };
    let mut zero = batch.clone();
    zero.advantages.iter_mut().for_each(|a| *a = 0.0);
    let mut trpo = Trpo::new(config.clone(), true, &value);
    let d = trpo
        .update(&mut policy, &mut value, &zero, &mut rng)
        .unwrap();
    assert_eq!((d.accepted, d.grad_norm, d.kl_old_new), (0.0, 0.0, 0.0));
    assert_eq!(policy.get_flat().unwrap(), before);

    let tiny = TrpoConfig {
        max_kl: 1e-12,
        ls_max_steps: 1,
        ..config
    };
    let mut trpo = Trpo::new(tiny, true, &value);
    let d = trpo
        .update(&mut policy, &mut value, &batch, &mut rng)
        .unwrap();
    assert_eq!(d.accepted, 0.0, "{d:?}");
    assert_eq!(d.ls_steps, 1.0);
    assert_eq!(d.kl_old_new, 0.0);
    assert!(d.grad_norm > 0.0 && d.cg_iters > 0.0);
    let after = policy.get_flat().unwrap();
    assert!(after
        .iter()
        .zip(&before)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // The value function is fitted whatever the policy step did.
    assert!(d.value_loss.is_finite());
}

/// The value gradient from the reverse pass equals candle's `backward()`.
#[test]
fn value_gradient_matches_backward() {
    for dtype in [DType::F64, DType::F32] {
        let (_, value) = nets(5, 2, &[16, 16], dtype, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let obs: Vec<f32> = (0..30 * 5).map(|_| rng.random_range(-1.0..1.0)).collect();
        let ret: Vec<f32> = (0..30).map(|_| rng.random_range(-1.0..3.0)).collect();
        let o = value.obs_tensor(&obs).unwrap();
        let r = Tensor::from_vec(ret, 30, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let (loss, grad) = value_loss_and_grad(&value, &o, &r).unwrap();
        let l = (value.forward(&o).unwrap() - &r)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let expected = klrl_policy::flat::flat_grad(&value.vars(), &l).unwrap();
        let l = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        assert!((loss - l).abs() <= tol * l.abs());
        assert_eq!(grad.len(), expected.len());
        let scale = norm(&expected);
        for (a, b) in grad.iter().zip(&expected) {
            assert!((a - b).abs() <= tol * scale, "{a} vs {b}");
        }
    }
}

/// With a shared trunk only the value head moves, so the value fit leaves
/// the policy unchanged.
#[test]
fn value_fit_on_a_shared_trunk_moves_only_the_head() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut policy =
        CategoricalPolicy::new(4, 2, &mlp(&[32]), DType::F32, &Device::Cpu, &mut rng).unwrap();
    let mut value = ValueNet::with_shared_trunk(policy.mlp(), &mut rng).unwrap();
    let batch = random_batch(&policy, 128, &mut rng);
    let mut flat_batch = batch.clone();
    flat_batch.advantages.iter_mut().for_each(|a| *a = 0.0);
    let before = policy.get_flat().unwrap();
    let head_before = klrl_policy::flat::get_flat(&value.unshared_vars()).unwrap();
    let mut trpo = Trpo::new(
        TrpoConfig {
            vf_minibatch_size: 32,
            vf_epochs: 3,
            ..TrpoConfig::default()
        },
        true,
        &value,
    );
    let d = trpo
        .update(&mut policy, &mut value, &flat_batch, &mut rng)
        .unwrap();
    assert_eq!(d.accepted, 0.0);
    assert_eq!(policy.get_flat().unwrap(), before);
    assert_ne!(
        klrl_policy::flat::get_flat(&value.unshared_vars()).unwrap(),
        head_before
    );
}

/// The checkpoint state holds the value Adam's moments and step count, and
/// loading it reproduces the next update exactly.
#[test]
fn state_round_trip_reproduces_the_next_update() {
    // Two independent copies of the networks (cloning a candle `Var` shares it).
    let (mut p1, mut v1) = nets(4, 3, &[16], DType::F32, 13);
    let (mut p2, mut v2) = nets(4, 3, &[16], DType::F32, 13);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let batch = random_batch(&p1, 64, &mut rng);
    let config = TrpoConfig {
        vf_minibatch_size: 16,
        vf_epochs: 2,
        ..TrpoConfig::default()
    };
    let mut a = Trpo::new(config.clone(), true, &v1);
    a.update(&mut p1, &mut v1, &batch, &mut rng).unwrap();
    let state = a.state();
    assert_eq!(state.algo, "trpo");
    assert_eq!(state.scalar("vf_adam_t").unwrap(), 8.0);
    // A fresh optimiser on copies of the updated networks, loaded with the state.
    p2.set_flat(&p1.get_flat().unwrap()).unwrap();
    let flat_v1 = klrl_policy::flat::get_flat(&v1.vars()).unwrap();
    klrl_policy::flat::set_flat(&v2.vars(), &flat_v1).unwrap();
    let mut b = Trpo::new(config, true, &v2);
    b.load_state(&state).unwrap();
    let mut r1 = ChaCha8Rng::seed_from_u64(15);
    let mut r2 = r1.clone();
    let d1 = a.update(&mut p1, &mut v1, &batch, &mut r1).unwrap();
    let d2 = b.update(&mut p2, &mut v2, &batch, &mut r2).unwrap();
    assert_eq!(d1.value_loss.to_bits(), d2.value_loss.to_bits());
    assert_eq!(p1.get_flat().unwrap(), p2.get_flat().unwrap());
    assert_eq!(
        klrl_policy::flat::get_flat(&v1.vars()).unwrap(),
        klrl_policy::flat::get_flat(&v2.vars()).unwrap()
    );
    // Wrong algorithm or wrong sizes are errors naming the problem.
    let mut npg = Trpo::new(TrpoConfig::default(), false, &v2);
    let e = npg.load_state(&state).unwrap_err().to_string();
    assert!(e.contains("`trpo`") && e.contains("`npg`"), "{e}");
    let mut short = state.clone();
    short.vectors.get_mut("vf_adam_m").unwrap().pop();
    let e = b.load_state(&short).unwrap_err().to_string();
    assert!(e.contains("vf_adam_m"), "{e}");
    let e = b
        .load_state(&AlgoState::new("trpo"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("vf_adam_t"), "{e}");
}

/// The batch helper every test above starts from is on-policy: its actions
/// are drawn from π(·|s) (each action's frequency over 2000 states is within
/// 4 standard errors of its mean probability) and its `old_log_probs` are
/// log π(a|s), recomputed here on the host in f64 from the logits, so every
/// update above starts at probability ratios of 1.
#[test]
fn random_batch_is_drawn_from_the_policy() {
    let (policy, _) = nets(2, 3, &[4], DType::F32, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let n = 2000;
    let b = random_batch(&policy, n, &mut rng);
    assert_eq!(b.len(), n);
    let Actions::Discrete(a) = &b.actions else {
        panic!("a categorical policy draws discrete actions")
    };
    let t = policy.obs_tensor(&b.obs).unwrap();
    let Dist::Categorical(c) = policy.dist(&t, None).unwrap() else {
        panic!("categorical")
    };
    let logits = c
        .logits()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let (mut counts, mut mean_p) = ([0.0f64; 3], [0.0f64; 3]);
    for ((z, &ai), &old) in logits.iter().zip(a).zip(&b.old_log_probs) {
        assert!(ai < 3, "action {ai}");
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        // f32 log-probabilities of order 1: agreement to f32 rounding.
        assert!(
            (old as f64 - (z[ai] - lse)).abs() < 1e-5,
            "{old} vs {}",
            z[ai] - lse
        );
        counts[ai] += 1.0;
        for (k, p) in mean_p.iter_mut().enumerate() {
            *p += (z[k] - lse).exp() / n as f64;
        }
    }
    for k in 0..3 {
        let freq = counts[k] / n as f64;
        let se = (mean_p[k] * (1.0 - mean_p[k]) / n as f64).sqrt();
        assert!(
            (freq - mean_p[k]).abs() < 4.0 * se,
            "action {k}: frequency {freq}, mean probability {}",
            mean_p[k]
        );
    }
}
