//! The Fisher-vector product against the exact Hessian-vector product of the
//! mean KL by double backward.
//!
//! candle detaches gradients unless `CANDLE_GRAD_DO_NOT_DETACH=1`
//! (huggingface/candle#2462), read once per thread: this file runs in its own
//! process and sets the variable before any candle call. The library itself
//! never relies on it.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use klrl_policy::{ActionMask, Activation, Policy, PolicyFisher};

/// H v with H the Hessian of mean KL(π_old ‖ π_θ) at θ = θ_old:
/// g = ∇θ KL (graph kept), then ∇θ (g · v).
fn double_backward_hvp<P: Policy>(
    policy: &P,
    obs: &Tensor,
    mask: Option<&ActionMask>,
    v: &[f64],
) -> Vec<f64> {
    let old = policy.dist(obs, mask).expect("dist").detach();
    let new = policy.dist(obs, mask).expect("dist");
    let kl = old.kl(&new).expect("kl").mean_all().expect("mean");
    let grads = kl.backward().expect("backward");
    let mut offset = 0;
    let mut gv = Tensor::zeros((), DType::F64, &Device::Cpu).expect("zero");
    for var in policy.vars() {
        let k = var.elem_count();
        let vt =
            Tensor::from_vec(v[offset..offset + k].to_vec(), var.dims(), &Device::Cpu).expect("v");
        offset += k;
        let g = grads
            .get(var.as_tensor())
            .expect("every parameter has a gradient");
        gv = (gv + (g * vt).and_then(|x| x.sum_all()).expect("dot")).expect("sum");
    }
    policy.flat_grad(&gv).expect("second backward")
}

fn check<P: Policy>(policy: &P, mask: Option<&ActionMask>, seed: u64, label: &str) {
    let mut r = rng(seed);
    let obs = observations(&mut r, DType::F64);
    let fisher = policy.fisher(&obs, mask).expect("fisher");
    for trial in 0..3 {
        let v = gaussian_vec(&mut r, policy.num_params(), 1.0);
        let fv = fisher.apply(&v).expect("fvp");
        let hv = double_backward_hvp(policy, &obs, mask, &v);
        assert!(
            norm(&hv) > 1e-3,
            "{label}: Hv vanished (gradients detached?)"
        );
        let e = rel_err(&fv, &hv);
        eprintln!("{label} trial {trial}: relative difference {e:e}");
        assert!(e <= 1e-6, "{label} trial {trial}: ‖Fv − Hv‖/‖Hv‖ = {e:e}");
    }
}

#[test]
fn fvp_equals_double_backward_hessian_vector_product() {
    // SAFETY: set before any candle call in this process; candle reads it
    // lazily per thread. Edition 2021, where set_var is safe.
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    check(
        &categorical(Activation::Tanh, 1),
        None,
        100,
        "categorical tanh",
    );
    check(
        &categorical(Activation::Relu, 2),
        None,
        101,
        "categorical relu",
    );
    check(
        &categorical(Activation::Tanh, 3),
        Some(&mask(5)),
        102,
        "masked categorical",
    );
    check(&gaussian(Activation::Tanh, 4), None, 103, "gaussian tanh");
    check(&gaussian(Activation::Relu, 6), None, 104, "gaussian relu");
    for (i, (std, name)) in state_dependent_kinds().into_iter().enumerate() {
        for (act, an) in [(Activation::Tanh, "tanh"), (Activation::Relu, "relu")] {
            let p = gaussian_with(act, std, 110 + i as u64);
            check(&p, None, 120 + i as u64, &format!("{name} {an}"));
        }
    }
}
