//! PPO: the loss against hand-derived gradients on a one-state categorical
//! policy, clipping, the value loss, early stopping, the adaptive-β rule in a
//! run, determinism and the state round trip.

use candle_core::{DType, Device};
use klrl_envs::Registry;
use klrl_optim::batch::Batch;
use klrl_optim::{
    AlgoConfig, Algorithm, ExperimentConfig, Ppo, PpoConfig, PpoObjective, Trainer,
    UpdateDiagnostics,
};
use klrl_policy::{flat, Actions, Activation, CategoricalPolicy, MlpConfig, Policy, ValueNet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------
// A one-state, two-action world where every gradient is known in closed form.
//
// The policy has no hidden layer and sees the observation x = 1, so its logits
// are z_k = w_k + b_k and ∂/∂w_k = ∂/∂b_k = ∂/∂z_k. With p = softmax(z):
//   ∂(r_i Â_i)/∂z_k = Â_i r_i (δ_{k a_i} − p_k),   r_i = p_{a_i} / p_old_{a_i},
//   ∂KL(p_old ‖ p)/∂z_k = p_k − p_old_k.
// The value function is V = u x + c = u + c.
// ---------------------------------------------------------------------------

fn linear() -> MlpConfig {
    MlpConfig {
        hidden: vec![],
        activation: Activation::Tanh,
    }
}

/// A categorical policy over 2 actions with logits `z` at the observation 1.
fn policy_with_logits(z: [f64; 2]) -> CategoricalPolicy {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut p =
        CategoricalPolicy::new(1, 2, &linear(), DType::F64, &Device::Cpu, &mut rng).unwrap();
    // flat order: weight [2, 1], then bias [2]
    p.set_flat(&[z[0], z[1], 0.0, 0.0]).unwrap();
    p
}

/// V(s) = `v` everywhere.
fn value_constant(v: f64) -> ValueNet {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let value = ValueNet::new(1, &linear(), DType::F64, &Device::Cpu, &mut rng).unwrap();
    flat::set_flat(&value.vars(), &[0.0, v]).unwrap();
    value
}

fn softmax(z: [f64; 2]) -> [f64; 2] {
    let m = z[0].max(z[1]);
    let e = [(z[0] - m).exp(), (z[1] - m).exp()];
    [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]
}

/// A batch at the single state with the given actions and advantages,
/// collected by a policy with probabilities `p_old`.
fn batch(actions: &[usize], adv: &[f32], p_old: [f64; 2], old_v: &[f32], ret: &[f32]) -> Batch {
    let n = actions.len();
    Batch {
        obs_dim: 1,
        obs: vec![1.0; n],
        actions: Actions::Discrete(actions.to_vec()),
        old_log_probs: actions.iter().map(|&a| p_old[a].ln() as f32).collect(),
        old_values: old_v.to_vec(),
        advantages: adv.to_vec(),
        returns: ret.to_vec(),
        masks: None,
        progress: 0.0,
        update: 0,
        reference: None,
    }
}

/// π_old(a) as the batch stores it: log-probabilities are kept in f32.
fn stored(q: [f64; 2], a: usize) -> f64 {
    f64::from(q[a].ln() as f32).exp()
}

fn ppo(objective: PpoObjective, beta: f64, policy: &dyn Policy, value: &ValueNet) -> Ppo {
    let config = PpoConfig {
        objective,
        beta,
        clip_eps: 0.2,
        ..PpoConfig::default()
    };
    Ppo::new(config, policy, value)
}

fn scalar(t: &candle_core::Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn assert_close(got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < tol, "got {got:?}, expected {expected:?}");
    }
}

/// The gradient of the policy loss wrt the policy parameters [w0, w1, b0, b1]
/// and the loss itself.
fn policy_grad(
    objective: PpoObjective,
    beta: f64,
    z: [f64; 2],
    z_old: [f64; 2],
    b: &Batch,
) -> (Vec<f64>, f64, klrl_optim::ppo::PpoLoss) {
    let policy = policy_with_logits(z);
    let old_policy = policy_with_logits(z_old);
    let value = value_constant(0.0);
    let algo = ppo(objective, beta, &policy, &value);
    let mb = b.minibatch(&policy, None, false).unwrap();
    let old = old_policy.dist(&mb.obs, None).unwrap().detach();
    let loss = algo.loss(&policy, &value, &mb, &old, 0.2, false).unwrap();
    let g = policy.flat_grad(&loss.policy).unwrap();
    (g, scalar(&loss.policy), loss)
}

#[test]
fn kl_penalty_loss_and_gradient_match_the_hand_derivation() {
    let (z, z_old) = ([0.3, -0.4], [0.0, 0.1]);
    let (p, q) = (softmax(z), softmax(z_old));
    let beta = 3.0;
    let actions = [0usize, 1, 0];
    let adv = [1.5f32, -0.5, 0.25];
    let b = batch(&actions, &adv, q, &[0.0; 3], &[0.0; 3]);
    let (g, loss, parts) = policy_grad(PpoObjective::KlPenalty, beta, z, z_old, &b);

    let n = actions.len() as f64;
    let kl = q[0] * (q[0] / p[0]).ln() + q[1] * (q[1] / p[1]).ln();
    let mut surrogate = 0.0;
    let mut dz = [0.0; 2];
    for (&a, &ad) in actions.iter().zip(&adv) {
        let r = p[a] / stored(q, a);
        surrogate += r * ad as f64 / n;
        for k in 0..2 {
            let delta = if k == a { 1.0 } else { 0.0 };
            dz[k] -= ad as f64 * r * (delta - p[k]) / n;
        }
    }
    for k in 0..2 {
        dz[k] += beta * (p[k] - q[k]);
    }
    assert!((loss - (-surrogate + beta * kl)).abs() < 1e-12, "{loss}");
    assert!((scalar(parts.kl.as_ref().unwrap()) - kl).abs() < 1e-12);
    assert!(parts.clip_frac.is_none());
    assert_close(&g, &[dz[0], dz[1], dz[0], dz[1]], 1e-12);
    // The gradient is not trivially zero: the check above could fail.
    assert!(dz[0].abs() > 1e-3);
}

#[test]
fn the_penalty_alone_pulls_the_policy_back_to_the_old_one() {
    // Zero advantages: only β KL(π_old ‖ π_θ) remains; its gradient is
    // β (p − p_old), zero at θ = θ_old.
    let b = batch(
        &[0, 1],
        &[0.0, 0.0],
        softmax([0.0, 0.0]),
        &[0.0; 2],
        &[0.0; 2],
    );
    let (g, loss, _) = policy_grad(PpoObjective::KlAdaptive, 2.0, [0.0, 0.0], [0.0, 0.0], &b);
    assert_close(&g, &[0.0; 4], 1e-15);
    assert!(loss.abs() < 1e-15);
    let (g, _, _) = policy_grad(PpoObjective::KlAdaptive, 2.0, [1.0, 0.0], [0.0, 0.0], &b);
    let p = softmax([1.0, 0.0]);
    let d0 = 2.0 * (p[0] - 0.5);
    assert_close(&g, &[d0, -d0, d0, -d0], 1e-12);
}

#[test]
fn clipping_zeroes_the_gradient_of_the_clipped_side_only() {
    // p_old = (0.5, 0.5), p = (0.7, 0.3): r = 1.4 for action 0, 0.6 for action 1,
    // both outside [0.8, 1.2].
    let z_old = [0.0, 0.0];
    let z = [0.0, (0.3f64 / 0.7).ln()];
    let p = softmax(z);
    assert!((p[0] - 0.7).abs() < 1e-12);
    let q = softmax(z_old);
    let cases = [
        // (action, advantage, clipped?)
        (0usize, 1.0f32, true), // r Â = 1.4 > clip 1.2 Â: min picks the constant
        (0, -1.0, false),       // −1.4 < −1.2: the unclipped term, gradient flows
        (1, -1.0, true),        // −0.6 > −0.8: the clipped constant
        (1, 1.0, false),        // 0.6 < 0.8: unclipped
    ];
    for (a, ad, clipped) in cases {
        let b = batch(&[a], &[ad], q, &[0.0], &[0.0]);
        let (g, loss, parts) = policy_grad(PpoObjective::Clip, 0.0, z, z_old, &b);
        let r = p[a] / stored(q, a);
        assert!((scalar(parts.clip_frac.as_ref().unwrap()) - 1.0).abs() < 1e-15);
        assert!(parts.kl.is_none());
        if clipped {
            let r_clip = r.clamp(0.8, 1.2);
            assert!(
                (loss + r_clip * ad as f64).abs() < 1e-12,
                "{a} {ad}: {loss}"
            );
            assert_close(&g, &[0.0; 4], 1e-15);
        } else {
            assert!((loss + r * ad as f64).abs() < 1e-12, "{a} {ad}: {loss}");
            let dz: Vec<f64> = (0..2)
                .map(|k| -(ad as f64) * r * (if k == a { 1.0 } else { 0.0 } - p[k]))
                .collect();
            assert_close(&g, &[dz[0], dz[1], dz[0], dz[1]], 1e-12);
            assert!(dz[0].abs() > 0.1);
        }
    }
    // Inside the clip range nothing is clipped: the gradient equals the
    // unclipped surrogate's.
    let z_near = [0.1, 0.0];
    let b = batch(&[0, 1], &[1.0, 1.0], q, &[0.0; 2], &[0.0; 2]);
    let (g_clip, _, parts) = policy_grad(PpoObjective::Clip, 0.0, z_near, z_old, &b);
    let (g_plain, _, _) = policy_grad(PpoObjective::KlPenalty, 0.0, z_near, z_old, &b);
    assert_eq!(scalar(parts.clip_frac.as_ref().unwrap()), 0.0);
    assert_close(&g_clip, &g_plain, 1e-15);
}

#[test]
fn clip_with_adaptive_penalty_adds_both_terms() {
    let z_old = [0.0, 0.0];
    let z = [0.0, (0.3f64 / 0.7).ln()];
    let q = softmax(z_old);
    let b = batch(&[0], &[1.0], q, &[0.0], &[0.0]);
    let (g, loss, parts) = policy_grad(PpoObjective::ClipKlAdaptive, 2.0, z, z_old, &b);
    let p = softmax(z);
    let kl = q[0] * (q[0] / p[0]).ln() + q[1] * (q[1] / p[1]).ln();
    // The clipped surrogate is the constant 1.2; only the penalty has a gradient.
    assert!((loss - (-1.2 + 2.0 * kl)).abs() < 1e-12);
    let d0 = 2.0 * (p[0] - q[0]);
    assert_close(&g, &[d0, -d0, d0, -d0], 1e-12);
    assert!(parts.clip_frac.is_some() && parts.kl.is_some());
}

#[test]
fn value_loss_is_the_mse_and_its_clipped_version_takes_the_larger_error() {
    let policy = policy_with_logits([0.0, 0.0]);
    let value = value_constant(2.0);
    // V = 2, V_old = 1, R = 3 and 0; clip 0.5 → V_clip = 1.5.
    let b = batch(&[0, 1], &[0.0, 0.0], [0.5, 0.5], &[1.0, 1.0], &[3.0, 0.0]);
    let mb = b.minibatch(&policy, None, false).unwrap();
    let plain = klrl_optim::losses::value_loss(&value, &mb, None).unwrap();
    assert!((scalar(&plain) - (1.0 + 4.0) / 2.0).abs() < 1e-12);
    let clipped = klrl_optim::losses::value_loss(&value, &mb, Some(0.5)).unwrap();
    // max(1, 2.25) and max(4, 2.25)
    assert!((scalar(&clipped) - (2.25 + 4.0) / 2.0).abs() < 1e-12);
    // Gradient of the plain loss wrt [u, c]: mean 2 (V − R) = (−2 + 4) / 2 = 1 each.
    let g = flat::flat_grad(&value.vars(), &plain).unwrap();
    assert_close(&g, &[1.0, 1.0], 1e-12);
    // In the clipped loss, sample 1 uses the clipped prediction, whose
    // gradient is 0 (V − V_old = 1 is outside ±0.5): only sample 2 counts.
    let g = flat::flat_grad(&value.vars(), &clipped).unwrap();
    assert_close(&g, &[2.0, 2.0], 1e-12);

    // The total: policy + vf_coef · value − ent_coef · entropy.
    let config = PpoConfig {
        objective: PpoObjective::Clip,
        vf_coef: 0.7,
        ent_coef: 0.1,
        ..PpoConfig::default()
    };
    let algo = Ppo::new(config, &policy, &value);
    let old = policy.dist(&mb.obs, None).unwrap().detach();
    let l = algo.loss(&policy, &value, &mb, &old, 0.2, false).unwrap();
    let expected = scalar(&l.policy) + 0.7 * 2.5 - 0.1 * std::f64::consts::LN_2;
    assert!((scalar(&l.total) - expected).abs() < 1e-12);
    assert!((scalar(&l.entropy) - std::f64::consts::LN_2).abs() < 1e-12);
}

#[test]
fn a_non_finite_loss_is_an_error_and_leaves_the_parameters() {
    let mut policy = policy_with_logits([0.2, -0.1]);
    let mut value = value_constant(0.0);
    let mut algo = ppo(PpoObjective::Clip, 0.0, &policy, &value);
    let mut b = batch(&[0, 1], &[1.0, -1.0], [0.5, 0.5], &[0.0; 2], &[0.0; 2]);
    b.returns = vec![f32::NAN, 0.0];
    let before = (
        policy.get_flat().unwrap(),
        flat::get_flat(&value.vars()).unwrap(),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let err = algo
        .update(&mut policy, &mut value, &b, &mut rng)
        .unwrap_err();
    assert!(
        matches!(err, klrl_optim::OptimError::NonFinite { what: "loss", .. }),
        "{err}"
    );
    assert_eq!(policy.get_flat().unwrap(), before.0);
    assert_eq!(flat::get_flat(&value.vars()).unwrap(), before.1);
}

/// A minibatch whose loss is not finite is skipped and counted; the others
/// are applied: with minibatches of one transition and one bad return, each
/// epoch skips exactly one step.
#[test]
fn a_non_finite_minibatch_is_skipped_and_counted() {
    let mut policy = policy_with_logits([0.2, -0.1]);
    let mut value = value_constant(0.0);
    let config = PpoConfig {
        objective: PpoObjective::Clip,
        minibatch_size: 1,
        n_epochs: 3,
        ..PpoConfig::default()
    };
    let mut algo = Ppo::new(config, &policy, &value);
    let mut b = batch(
        &[0, 1, 0],
        &[1.0, -1.0, 0.5],
        [0.5, 0.5],
        &[0.0; 3],
        &[0.0; 3],
    );
    b.returns = vec![0.3, f32::NAN, -0.2];
    let before = policy.get_flat().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let d = algo.update(&mut policy, &mut value, &b, &mut rng).unwrap();
    assert_eq!(d.rejected_steps, 3.0, "{d:?}");
    assert_eq!(d.epochs_run, 2.0, "3 epochs of 3 steps, 3 skipped");
    assert_eq!(d.rejected, 0.0);
    let after = policy.get_flat().unwrap();
    assert!(after != before && after.iter().all(|x| x.is_finite()));
    assert!(flat::get_flat(&value.vars())
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));
    assert_eq!(
        algo.state().scalars["adam_t"],
        6.0,
        "only applied steps count"
    );
}

#[test]
fn a_minibatch_of_one_gives_finite_updates() {
    let mut policy = policy_with_logits([0.2, -0.1]);
    let mut value = value_constant(0.0);
    let config = PpoConfig {
        objective: PpoObjective::ClipKlAdaptive,
        minibatch_size: 1,
        n_epochs: 2,
        ..PpoConfig::default()
    };
    let mut algo = Ppo::new(config, &policy, &value);
    let b = batch(
        &[0, 1, 1],
        &[1.0, -1.0, 0.5],
        softmax([0.2, -0.1]),
        &[0.0; 3],
        &[1.0; 3],
    );
    let before = policy.get_flat().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let d = algo.update(&mut policy, &mut value, &b, &mut rng).unwrap();
    let after = policy.get_flat().unwrap();
    // A one-sample minibatch has no spread to normalise its advantage by:
    // the update must still be finite, and must still move the policy.
    assert!(after.iter().all(|x| x.is_finite()), "{after:?}");
    assert_ne!(after, before);
    assert_eq!(d.epochs_run, 2.0);
    assert!(d.kl_old_new > 0.0 && d.kl_old_new.is_finite());
    // Six steps of one sample each: the clipped fraction is k/6.
    assert!((0.0..=1.0).contains(&d.clip_frac), "{d:?}");
    assert!(
        ((d.clip_frac * 6.0) - (d.clip_frac * 6.0).round()).abs() < 1e-9,
        "{d:?}"
    );
    // The adaptive rule moved β = 1 by a factor of 2, ½ or 1.
    assert!([0.5, 1.0, 2.0].contains(&d.beta), "{d:?}");
}

// ---------------------------------------------------------------------------
// Runs on CartPole.
// ---------------------------------------------------------------------------

fn cartpole(algo: &str) -> ExperimentConfig {
    let text = format!(
        "[env]\nname = \"CartPole-v1\"\n[train]\ntotal_steps = 100000\nn_envs = 4\nn_steps = 64\n\
         gamma = 0.98\ngae_lambda = 0.8\nseed = 7\n[algo]\nname = \"ppo\"\n{algo}\n"
    );
    toml::from_str(&text).unwrap()
}

fn run(config: ExperimentConfig, updates: usize) -> (Trainer, Vec<UpdateDiagnostics>) {
    let mut t = Trainer::from_config(config, &Registry::builtin()).unwrap();
    let d = (0..updates)
        .map(|_| t.update().unwrap().diagnostics)
        .collect();
    (t, d)
}

#[test]
fn early_stopping_fires_on_a_tiny_threshold_and_never_on_a_huge_one() {
    // 4 minibatches of 64 per epoch (whole-batch KL by a separate forward pass).
    let base = "objective = \"clip\"\nn_epochs = 10\nminibatch_size = 64";
    let (_, tiny) = run(cartpole(&format!("{base}\nearly_stop_kl = 1e-9")), 3);
    for d in &tiny {
        // The first step always happens; the check before the second stops.
        assert_eq!(d.epochs_run, 0.25, "{d:?}");
    }
    let (_, huge) = run(cartpole(&format!("{base}\nearly_stop_kl = 1e9")), 3);
    for d in &huge {
        assert_eq!(d.epochs_run, 10.0, "{d:?}");
    }
    // Moderate threshold: stops somewhere in between (after more than the
    // first step, before the tenth epoch ends, at a whole minibatch), and
    // only after the batch's KL passed it: the policy the stop leaves is the
    // one measured, so the update's exact KL is above the threshold.
    let (_, mid) = run(
        cartpole(&format!("{base}\nlr = 3e-3\nearly_stop_kl = 0.003")),
        3,
    );
    let stopped: Vec<_> = mid.iter().filter(|d| d.epochs_run < 10.0).collect();
    assert!(!stopped.is_empty(), "{mid:?}");
    for d in stopped {
        assert!(d.epochs_run > 0.25, "{d:?}");
        assert_eq!((d.epochs_run * 4.0).fract(), 0.0, "{d:?}");
        assert!(d.kl_old_new > 0.003, "{d:?}");
    }

    // One minibatch per epoch (the KL comes from the minibatch's own pass).
    let whole = "objective = \"kl_penalty\"\nbeta = 0.1\nn_epochs = 10\nminibatch_size = 256";
    let (_, tiny) = run(cartpole(&format!("{whole}\nearly_stop_kl = 1e-9")), 2);
    assert!(tiny.iter().all(|d| d.epochs_run == 1.0), "{tiny:?}");
    let (_, huge) = run(cartpole(&format!("{whole}\nearly_stop_kl = 1e9")), 2);
    assert!(huge.iter().all(|d| d.epochs_run == 10.0), "{huge:?}");
}

#[test]
fn adaptive_beta_rises_with_a_tiny_target_and_falls_with_a_huge_one() {
    let base =
        "objective = \"kl_adaptive\"\nbeta = 1.0\nn_epochs = 4\nminibatch_size = 64\nlr = 1e-3";
    let (t, up) = run(cartpole(&format!("{base}\nkl_target = 1e-7")), 5);
    let betas: Vec<f64> = up.iter().map(|d| d.beta).collect();
    // Every update moved the policy by far more than 1.5 × 1e-7: β doubles each time.
    assert_eq!(betas, vec![2.0, 4.0, 8.0, 16.0, 32.0], "{up:?}");
    assert_eq!(t.algo.state().scalar("beta").unwrap(), 32.0);
    let (_, down) = run(cartpole(&format!("{base}\nkl_target = 10.0")), 5);
    let betas: Vec<f64> = down.iter().map(|d| d.beta).collect();
    assert_eq!(betas, vec![0.5, 0.25, 0.125, 0.0625, 0.03125], "{down:?}");
    // Fixed penalty: β stays; clip: NaN.
    let (_, fixed) = run(cartpole("objective = \"kl_penalty\"\nbeta = 3.0"), 2);
    assert!(fixed.iter().all(|d| d.beta == 3.0));
    let (_, clip) = run(cartpole("objective = \"clip\""), 1);
    assert!(clip[0].beta.is_nan() && (0.0..=1.0).contains(&clip[0].clip_frac));
}

#[test]
fn diagnostics_are_filled_as_documented() {
    let (_, d) = run(
        cartpole("objective = \"clip_kl_adaptive\"\nlr = 1e-3\nlr_anneal = true\nn_epochs = 3"),
        2,
    );
    let d1 = d[1];
    for (name, v) in UpdateDiagnostics::COLUMNS.iter().zip(d1.values()) {
        // No hard limit: step_frac is empty; the adaptive penalty's target is the limit column.
        // No [algo.reference]: its four columns are empty too.
        let nan_expected = matches!(
            *name,
            "cg_iters"
                | "cg_residual"
                | "ls_steps"
                | "step_frac"
                | "kl_ref"
                | "kl_ref_max"
                | "kl_ref_limit"
                | "ref_coef"
        );
        assert_eq!(v.is_nan(), nan_expected, "{name} = {v}");
    }
    assert_eq!(d1.kl_limit, 0.01);
    assert!(d1.kl_old_new > 0.0 && d1.kl_max >= d1.kl_old_new);
    assert!(d1.kl_k3 >= 0.0);
    assert_eq!(d1.accepted, 1.0);
    assert_eq!(d1.epochs_run, 3.0);
    // lr annealed by 1 − progress: the second update starts after 256 of 100k steps.
    assert!((d1.lr - 1e-3 * (1.0 - 256.0 / 100_000.0)).abs() < 1e-15);
    assert!((0.0..=1.0).contains(&d1.clip_frac));
}

#[test]
fn same_config_and_seed_give_bit_identical_parameters() {
    let c = cartpole("objective = \"clip_kl_adaptive\"\nn_epochs = 3");
    let (a, _) = run(c.clone(), 3);
    let (b, _) = run(c.clone(), 3);
    assert_eq!(a.policy.get_flat().unwrap(), b.policy.get_flat().unwrap());
    assert_eq!(
        flat::get_flat(&a.value.vars()).unwrap(),
        flat::get_flat(&b.value.vars()).unwrap()
    );
    let mut other = c;
    other.train.seed += 1;
    let (o, _) = run(other, 3);
    assert_ne!(a.policy.get_flat().unwrap(), o.policy.get_flat().unwrap());
}

/// Copy everything a checkpoint holds from `from` into the fresh `to`;
/// `with_algo` false leaves `to`'s optimiser state fresh.
fn restore(from: &Trainer, to: &mut Trainer, with_algo: bool) {
    to.policy
        .set_flat(&from.policy.get_flat().unwrap())
        .unwrap();
    flat::set_flat(
        &to.value.vars(),
        &flat::get_flat(&from.value.vars()).unwrap(),
    )
    .unwrap();
    if with_algo {
        to.algo.load_state(&from.algo.state()).unwrap();
    }
    to.rng = from.rng.clone();
    to.venv.restore(&from.venv.snapshot().unwrap()).unwrap();
    to.collector
        .set_current_observations(from.collector.current_observations().unwrap().to_vec());
    to.updates = from.updates;
    to.env_steps = from.env_steps;
}

#[test]
fn a_restored_trainer_continues_bit_identically() {
    let c = cartpole("objective = \"kl_adaptive\"\nn_epochs = 3\nlr = 1e-3\nlr_anneal = true");
    let (mut a, _) = run(c.clone(), 2);
    let mut b = Trainer::from_config(c.clone(), &Registry::builtin()).unwrap();
    let mut fresh_adam = Trainer::from_config(c, &Registry::builtin()).unwrap();
    restore(&a, &mut b, true);
    restore(&a, &mut fresh_adam, false);
    assert_eq!(a.algo.state(), b.algo.state());
    for _ in 0..2 {
        let da = a.update().unwrap().diagnostics;
        let db = b.update().unwrap().diagnostics;
        assert_eq!(da.kl_old_new.to_bits(), db.kl_old_new.to_bits());
        assert_eq!(da.beta, db.beta);
        fresh_adam.update().unwrap();
    }
    assert_eq!(a.policy.get_flat().unwrap(), b.policy.get_flat().unwrap());
    assert_eq!(
        flat::get_flat(&a.value.vars()).unwrap(),
        flat::get_flat(&b.value.vars()).unwrap()
    );
    assert_eq!(a.algo.state(), b.algo.state());
    // The optimiser state matters: without it the run diverges.
    assert_ne!(
        a.policy.get_flat().unwrap(),
        fresh_adam.policy.get_flat().unwrap()
    );
}

#[test]
fn state_of_another_algorithm_or_size_is_rejected() {
    let c = cartpole("objective = \"kl_adaptive\"");
    let (a, _) = run(c.clone(), 1);
    let mut state = a.algo.state();
    assert!(state.scalar("beta").is_ok() && state.vectors.contains_key("adam_m"));
    let mut b = Trainer::from_config(c.clone(), &Registry::builtin()).unwrap();
    state.algo = "trpo".into();
    assert!(b.algo.load_state(&state).is_err());
    let mut state = a.algo.state();
    state.vectors.get_mut("adam_v").unwrap().pop();
    let e = b.algo.load_state(&state).unwrap_err().to_string();
    assert!(e.contains("adam_v"), "{e}");
    let mut state = a.algo.state();
    state.scalars.insert("beta".into(), f64::NAN);
    assert!(b.algo.load_state(&state).is_err());
    // A bigger network: the moments do not fit.
    let mut big = c;
    big.policy.hidden = vec![32];
    big.algo = AlgoConfig::Ppo(PpoConfig::default());
    let mut t = Trainer::from_config(big, &Registry::builtin()).unwrap();
    assert!(t.algo.load_state(&a.algo.state()).is_err());
}

#[test]
fn the_ppo_and_pg_configs_parse_validate_and_build() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let files = [
        "bench/cartpole-ppo-zoo.toml",
        "cartpole-ppo-kl-adaptive.toml",
        "cartpole-ppo-kl-fixed.toml",
        "cartpole-ppo-clip.toml",
        "cartpole-vanilla-pg.toml",
        "bandit-ppo-kl-adaptive.toml",
        "bandit-ppo-kl-fixed.toml",
        "bandit-ppo-clip.toml",
        "bandit-vanilla-pg.toml",
    ];
    for file in files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.starts_with('#'), "{file} should start with a comment");
        let c: ExperimentConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        c.validate().unwrap();
        let expected = if file.contains("vanilla-pg") {
            "vanilla-pg"
        } else {
            "ppo"
        };
        let t = Trainer::from_config(c, &Registry::builtin()).unwrap();
        assert_eq!(t.algo.name(), expected, "{file}");
    }
}

/// A policy that moved absurdly far from π_old (log-ratio 800: exp overflows
/// even in f64) still gives a finite loss and gradient: the log-ratio is
/// clamped to ±LOG_RATIO_MAX before exp, so the sample contributes
/// e^LOG_RATIO_MAX · Â with no gradient, not inf · Â.
#[test]
fn an_absurd_ratio_gives_a_finite_loss() {
    let (z, z_old) = ([0.0, 0.0], [0.0, -800.0]);
    // The batch took action 1, which π_old gave probability e^-800 (stored in f32).
    let b = Batch {
        old_log_probs: vec![-800.0],
        ..batch(&[1], &[1.0], [0.5, 0.5], &[0.0], &[0.0])
    };
    let (g, loss, parts) = policy_grad(PpoObjective::KlPenalty, 1.0, z, z_old, &b);
    assert!(
        loss.is_finite() && g.iter().all(|x| x.is_finite()),
        "{loss} {g:?}"
    );
    // −r Â with r = e^20 (clamped), plus β KL(π_old ‖ π) = ln 2 (π_old puts
    // all its mass on action 0, π gives it ½).
    let expected = -(klrl_optim::ppo::LOG_RATIO_MAX.exp()) + 2f64.ln();
    assert!(
        (loss - expected).abs() < 1e-6 * expected.abs(),
        "{loss} vs {expected}"
    );
    assert!(scalar(&parts.total).is_finite());
}
