//! `Policy::dist_with_pullback`: the gradient of a PPO-style loss built on the
//! output leaves and carried back by the MLP's reverse pass equals candle's
//! backward through the whole network, for both policy kinds, both
//! activations and with action masks.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use klrl_policy::{ActionMask, Activation, Dist, Policy};
use rand::Rng;

/// A loss exercising every part of the head PPO uses: the clipped ratio of
/// `log π(a|s)` to fixed old log-probabilities times advantages, the exact KL
/// from fixed old distributions, and the entropy.
fn ppo_like_loss(
    dist: &Dist,
    old: &Dist,
    actions: &Tensor,
    old_lp: &Tensor,
    adv: &Tensor,
) -> Tensor {
    let ratio = (dist.log_prob(actions).expect("log_prob") - old_lp)
        .and_then(|x| x.exp())
        .expect("ratio");
    let unclipped = (&ratio * adv).expect("r A");
    let surrogate = ratio
        .clamp(0.8, 1.2)
        .and_then(|r| r * adv)
        .and_then(|x| x.minimum(&unclipped))
        .and_then(|x| x.mean_all())
        .expect("surrogate");
    let kl = old.kl(dist).expect("kl").mean_all().expect("mean kl");
    let entropy = dist
        .entropy()
        .expect("entropy")
        .mean_all()
        .expect("mean entropy");
    (surrogate.neg().expect("neg") + kl.affine(0.7, 0.0).expect("βKL"))
        .and_then(|x| x - entropy.affine(0.01, 0.0)?)
        .expect("loss")
}

/// Compares the two gradients at a policy moved away from π_old (so the
/// ratio is clipped for some samples and the KL is not at its minimum).
fn check<P: Policy>(policy: &mut P, mask: Option<&ActionMask>, seed: u64, label: &str) {
    let mut r = rng(seed);
    let obs = observations(&mut r, DType::F64);
    let old = policy.dist(&obs, mask).expect("old").detach();
    let actions = old.sample(&mut r).expect("sample");
    let actions_t = actions
        .to_tensor(DType::F64, &Device::Cpu)
        .expect("actions");
    let old_lp = old.log_prob(&actions_t).expect("old log_prob");
    let adv: Vec<f64> = (0..N_STATES)
        .map(|_| r.random::<f64>() * 2.0 - 1.0)
        .collect();
    let adv = Tensor::from_vec(adv, N_STATES, &Device::Cpu).expect("adv");
    // A step of 0.25 per parameter: with 0.05 the categorical tanh policy
    // clipped none of its 16 samples, and the clipped branch went untested.
    let theta: Vec<f64> = policy
        .get_flat()
        .expect("flat")
        .iter()
        .zip(gaussian_vec(&mut r, policy.num_params(), 0.25))
        .map(|(a, b)| a + b)
        .collect();
    policy.set_flat(&theta).expect("move");
    // The premise: the clip is active for some samples (the minimum picks the
    // clipped, constant term: r > 1.2 with Â > 0 or r < 0.8 with Â < 0), not
    // for all, and π_θ is away from π_old.
    {
        let dist = policy.dist(&obs, mask).expect("dist");
        let ratio = (dist.log_prob(&actions_t).expect("log_prob") - &old_lp)
            .and_then(|x| x.exp())
            .and_then(|x| x.to_vec1::<f64>())
            .expect("ratios");
        let a = adv.to_vec1::<f64>().expect("adv");
        let clipped = ratio
            .iter()
            .zip(&a)
            .filter(|&(&r, &a)| (r > 1.2 && a > 0.0) || (r < 0.8 && a < 0.0))
            .count();
        eprintln!("{label}: clip active on {clipped} of {N_STATES} samples");
        assert!(
            clipped > 0 && clipped < N_STATES,
            "{label}: {clipped} clipped"
        );
        let kl = old
            .kl(&dist)
            .expect("kl")
            .mean_all()
            .and_then(|k| k.to_scalar::<f64>())
            .expect("mean kl");
        assert!(kl > 1e-6, "{label}: KL {kl}");
    }

    let reference = {
        let dist = policy.dist(&obs, mask).expect("dist");
        let loss = ppo_like_loss(&dist, &old, &actions_t, &old_lp, &adv);
        policy.flat_grad(&loss).expect("backward")
    };
    let (dist, pullback) = policy.dist_with_pullback(&obs, mask).expect("pullback");
    assert_eq!(pullback.num_params(), policy.num_params(), "{label}");
    assert_eq!(pullback.batch_size(), N_STATES, "{label}");
    let loss = ppo_like_loss(&dist, &old, &actions_t, &old_lp, &adv);
    let grads = loss.backward().expect("head backward");
    let ours = pullback.flat_grad(&grads).expect("pullback grad");
    // the parameters themselves got no gradient: only the head was walked
    for v in policy.vars() {
        assert!(
            grads.get(v.as_tensor()).is_none(),
            "{label}: backward reached θ"
        );
    }
    let e = rel_err(&ours, &reference);
    eprintln!("{label}: ‖pullback − backward‖/‖backward‖ = {e:e}");
    assert!(e <= 1e-10, "{label}: relative error {e:e}");
    assert!(norm(&reference) > 1e-3, "{label}: degenerate gradient");
    // the loss values agree too
    let reference_loss = {
        let d = policy.dist(&obs, mask).expect("dist");
        ppo_like_loss(&d, &old, &actions_t, &old_lp, &adv)
            .to_scalar::<f64>()
            .expect("scalar")
    };
    let l = loss.to_scalar::<f64>().expect("scalar");
    assert!(
        (l - reference_loss).abs() <= 1e-12 * reference_loss.abs().max(1.0),
        "{label}"
    );
}

#[test]
fn categorical_matches_backward() {
    for (act, name) in [(Activation::Tanh, "tanh"), (Activation::Relu, "relu")] {
        let mut p = categorical(act, 11);
        check(&mut p, None, 1, &format!("categorical {name}"));
    }
}

#[test]
fn masked_categorical_matches_backward() {
    let mut p = categorical(Activation::Tanh, 12);
    let m = mask(5);
    check(&mut p, Some(&m), 2, "masked categorical");
}

#[test]
fn gaussian_matches_backward_including_log_std() {
    for (act, name) in [(Activation::Tanh, "tanh"), (Activation::Relu, "relu")] {
        let mut p = gaussian(act, 13);
        check(&mut p, None, 3, &format!("gaussian {name}"));
    }
}

#[test]
fn output_gradients_map_through_the_reverse_pass() {
    // flat_grad_from_outputs(u, g) is the gradient of Σ z ⊙ u + log σ · g.
    let p = gaussian(Activation::Tanh, 14);
    let mut r = rng(4);
    let obs = observations(&mut r, DType::F64);
    let u = gaussian_vec(&mut r, N_STATES * ACT_DIM, 1.0);
    let u = Tensor::from_vec(u, (N_STATES, ACT_DIM), &Device::Cpu).expect("u");
    let g = Tensor::new(&[0.3f64, -1.2], &Device::Cpu).expect("g");
    let (_, pullback) = p.dist_with_pullback(&obs, None).expect("pullback");
    let ours = pullback
        .flat_grad_from_outputs(Some(&u), Some(&g))
        .expect("grad");
    let mean = p.mlp().forward(&obs).expect("forward");
    let loss = (mean * &u)
        .and_then(|x| x.sum_all())
        .and_then(|x| x + (p.log_std().expect("log_std").as_tensor() * &g)?.sum_all()?)
        .expect("loss");
    let reference = p.flat_grad(&loss).expect("backward");
    assert!(rel_err(&ours, &reference) <= 1e-12);
    // no gradient at all: zeros of the right length
    let zeros = pullback.flat_grad_from_outputs(None, None).expect("zeros");
    assert_eq!(zeros, vec![0.0; p.num_params()]);
    // wrong shapes are typed errors
    let bad = Tensor::zeros((N_STATES, ACT_DIM + 1), DType::F64, &Device::Cpu).expect("bad");
    assert!(pullback.flat_grad_from_outputs(Some(&bad), None).is_err());
    assert!(pullback.flat_grad_from_outputs(None, Some(&u)).is_err());
    let c = categorical(Activation::Tanh, 15);
    let (_, pc) = c
        .dist_with_pullback(&obs, None)
        .expect("categorical pullback");
    assert!(pc.flat_grad_from_outputs(None, Some(&g)).is_err());
}

#[test]
fn the_pullback_keeps_the_parameters_it_was_built_at() {
    let mut p = categorical(Activation::Tanh, 16);
    let mut r = rng(6);
    let obs = observations(&mut r, DType::F64);
    let u = gaussian_vec(&mut r, N_STATES * N_ACTIONS, 1.0);
    let u = Tensor::from_vec(u, (N_STATES, N_ACTIONS), &Device::Cpu).expect("u");
    let (_, pullback) = p.dist_with_pullback(&obs, None).expect("pullback");
    let before = pullback
        .flat_grad_from_outputs(Some(&u), None)
        .expect("grad");
    let theta: Vec<f64> = p
        .get_flat()
        .expect("flat")
        .iter()
        .map(|x| x * 1.5)
        .collect();
    p.set_flat(&theta).expect("move");
    let after = pullback
        .flat_grad_from_outputs(Some(&u), None)
        .expect("grad");
    assert_eq!(before, after);
}

/// At a pre-activation of exactly 0 the ReLU derivative is a convention;
/// the hand-written reverse pass uses candle's, [z ≥ 0], so the two agree
/// exactly there too. All-zero observations with the zero initial biases
/// put every first-layer pre-activation at exactly 0.
#[test]
fn relu_at_exactly_zero_follows_candles_convention() {
    let p = gaussian(Activation::Relu, 21);
    // (`named_vars` shares the policy's variables.)
    let obs = Tensor::zeros((N_STATES, OBS_DIM), DType::F64, &Device::Cpu).expect("obs");
    // Zero biases: z₁ = W₁·0 + 0 = 0 exactly, hence h₁ = 0 and z₂ = 0 too.
    for (name, var) in p.named_vars() {
        if name.contains("bias") {
            var.set(&var.as_tensor().zeros_like().expect("zeros"))
                .expect("set");
        }
    }
    let mut r = rng(5);
    let u = gaussian_vec(&mut r, N_STATES * ACT_DIM, 1.0);
    let u = Tensor::from_vec(u, (N_STATES, ACT_DIM), &Device::Cpu).expect("u");
    let (_, pullback) = p.dist_with_pullback(&obs, None).expect("pullback");
    let ours = pullback
        .flat_grad_from_outputs(Some(&u), None)
        .expect("grad");
    let mean = p.mlp().forward(&obs).expect("forward");
    let loss = (mean * &u).and_then(|x| x.sum_all()).expect("loss");
    let reference = p.flat_grad(&loss).expect("backward");
    // With [z > 0] the hidden biases would get no gradient and this fails.
    assert!(
        rel_err(&ours, &reference) <= 1e-12,
        "{}",
        rel_err(&ours, &reference)
    );
}

/// gSDE (every option) and the state-dependent log-std head: the pullback
/// through the per-state `log σ(s)` (and, with `learn_features`, into the
/// MLP at its features) equals candle's backward through the whole network.
#[test]
fn state_dependent_std_matches_backward() {
    for (i, (std, name)) in state_dependent_kinds().into_iter().enumerate() {
        for (act, an) in [(Activation::Tanh, "tanh"), (Activation::Relu, "relu")] {
            let mut p = gaussian_with(act, std, 40 + i as u64);
            check(&mut p, None, 7 + i as u64, &format!("{name} {an}"));
        }
    }
}

/// With `learn_features`, the variance's gradient reaches the hidden layers;
/// without, it does not: the gradient of Σ log σ(s) alone has zero MLP part.
#[test]
fn gsde_features_are_detached_unless_learned() {
    use klrl_policy::{GaussianStd, GsdeConfig};
    for learn in [false, true] {
        let std = GaussianStd::Gsde(GsdeConfig {
            full_std: true,
            use_expln: false,
            learn_features: learn,
        });
        let p = gaussian_with(Activation::Tanh, std, 60);
        let mut r = rng(61);
        let obs = observations(&mut r, DType::F64);
        let (dist, pullback) = p.dist_with_pullback(&obs, None).expect("pullback");
        let loss = dist.entropy().expect("entropy").sum_all().expect("sum");
        let ours = pullback
            .flat_grad(&loss.backward().expect("backward"))
            .expect("grad");
        let mlp = p.mlp().num_params();
        let mlp_norm = norm(&ours[..mlp]);
        assert!(
            norm(&ours[mlp..]) > 1e-3,
            "the log σ parameter has a gradient"
        );
        if learn {
            assert!(mlp_norm > 1e-3, "learn_features: {mlp_norm}");
        } else {
            assert_eq!(mlp_norm, 0.0);
        }
        let reference = p
            .flat_grad(
                &p.dist(&obs, None)
                    .and_then(|d| d.entropy())
                    .expect("entropy")
                    .sum_all()
                    .expect("sum"),
            )
            .expect("backward");
        assert!(rel_err(&ours, &reference) <= 1e-12, "learn = {learn}");
    }
}

/// The f32 gradient of an f32 policy (`flat_grad_from_outputs_f32_into`)
/// holds exactly the values of the f64 one, whatever the buffer held
/// before (NaNs, another length), for a state-independent `log σ`, gSDE
/// with `learn_features` and a categorical policy; an f64 policy has none.
#[test]
fn f32_gradient_is_the_f64_one_before_widening() {
    use klrl_policy::{
        CategoricalPolicy, DiagGaussianPolicy, GaussianHead, GaussianStd, GsdeConfig,
    };
    let gsde = GaussianStd::Gsde(GsdeConfig {
        full_std: true,
        use_expln: false,
        learn_features: true,
    });
    let mut r = rng(70);
    let obs = observations(&mut r, DType::F32);
    let random = |r: &mut rand_chacha::ChaCha8Rng, rows: usize, cols: usize| {
        let v: Vec<f32> = gaussian_vec(r, rows * cols, 1.0)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).expect("tensor")
    };
    let mut policies: Vec<(Box<dyn Policy>, &str)> = Vec::new();
    for (std, name) in [(GaussianStd::StateIndependent, "gaussian"), (gsde, "gsde")] {
        let head = GaussianHead {
            std,
            log_std_init: -0.3,
        };
        let p = DiagGaussianPolicy::with_head(
            OBS_DIM,
            ACT_DIM,
            &small_config(Activation::Tanh),
            &head,
            DType::F32,
            &Device::Cpu,
            &mut r,
        )
        .expect("policy");
        policies.push((Box::new(p), name));
    }
    let c = CategoricalPolicy::new(
        OBS_DIM,
        N_ACTIONS,
        &small_config(Activation::Tanh),
        DType::F32,
        &Device::Cpu,
        &mut r,
    )
    .expect("categorical");
    policies.push((Box::new(c), "categorical"));
    for (p, name) in &policies {
        let (_, pullback) = p.dist_with_pullback(&obs, None).expect("pullback");
        let u = random(&mut r, N_STATES, p.action_dim());
        // d log σ: the shared [d] vector, or gSDE's per-state [N, d].
        let g = match *name {
            "gaussian" => Some(random(&mut r, 1, ACT_DIM).reshape(ACT_DIM).expect("g")),
            "gsde" => Some(random(&mut r, N_STATES, ACT_DIM)),
            _ => None,
        };
        let wide = pullback
            .flat_grad_from_outputs(Some(&u), g.as_ref())
            .expect("f64");
        for mut out in [vec![f32::NAN; wide.len()], vec![f32::NAN; 3], Vec::new()] {
            pullback
                .flat_grad_from_outputs_f32_into(Some(&u), g.as_ref(), &mut out)
                .expect("f32");
            let widened: Vec<f64> = out.iter().map(|&x| f64::from(x)).collect();
            assert_eq!(widened, wide, "{name}");
        }
        let mut zeros = vec![f32::NAN; 5];
        pullback
            .flat_grad_from_outputs_f32_into(None, None, &mut zeros)
            .expect("zeros");
        assert_eq!(zeros, vec![0.0; p.num_params()], "{name}");
    }
    let p64 = gaussian(Activation::Tanh, 71);
    let obs64 = observations(&mut r, DType::F64);
    let (_, pullback) = p64.dist_with_pullback(&obs64, None).expect("pullback");
    let u64 = Tensor::zeros((N_STATES, ACT_DIM), DType::F64, &Device::Cpu).expect("u");
    let mut out = Vec::new();
    assert!(pullback
        .flat_grad_from_outputs_f32_into(Some(&u64), None, &mut out)
        .is_err());
}
