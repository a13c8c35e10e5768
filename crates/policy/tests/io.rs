//! Safetensors checkpoints: bit-exact round trips, and all-or-nothing loading
//! with typed errors for files that do not match the network.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device};
use common::*;
use klrl_policy::{
    Activation, CategoricalPolicy, DiagGaussianPolicy, MlpConfig, Policy, PolicyError, ValueNet,
};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klrl-policy-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn perturb<P: Policy>(p: &mut P, seed: u64) {
    let theta: Vec<f64> = p
        .get_flat()
        .expect("flat")
        .iter()
        .zip(gaussian_vec(&mut rng(seed), p.num_params(), 1.0))
        .map(|(a, b)| a + b)
        .collect();
    p.set_flat(&theta).expect("set");
}

fn round_trip<P: Policy>(mut p: P, name: &str) {
    perturb(&mut p, 1); // non-trivial values in every tensor
    let path = tmp(name);
    p.save(&path).expect("save");
    let saved = p.get_flat().expect("flat");
    perturb(&mut p, 2);
    assert_ne!(bits(&p.get_flat().expect("flat")), bits(&saved));
    p.load(&path).expect("load");
    assert_eq!(
        bits(&p.get_flat().expect("flat")),
        bits(&saved),
        "{name}: not bit-exact"
    );
}

#[test]
fn save_load_round_trips_bit_exactly() {
    for dtype in [DType::F32, DType::F64] {
        let c = CategoricalPolicy::new(
            4,
            3,
            &MlpConfig::default(),
            dtype,
            &Device::Cpu,
            &mut rng(0),
        )
        .expect("c");
        round_trip(c, &format!("cat-{dtype:?}.safetensors"));
        let g = DiagGaussianPolicy::new(
            4,
            2,
            &MlpConfig::default(),
            dtype,
            &Device::Cpu,
            &mut rng(0),
        )
        .expect("g");
        round_trip(g, &format!("gauss-{dtype:?}.safetensors"));
    }
    let mut v = ValueNet::new(
        4,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(0),
    )
    .expect("v");
    let path = tmp("value.safetensors");
    let before = klrl_policy::flat::get_flat(&v.vars()).expect("flat");
    v.save(&path).expect("save");
    klrl_policy::flat::set_flat(&v.vars(), &vec![0.5; v.num_params()]).expect("set");
    v.load(&path).expect("load");
    assert_eq!(
        bits(&klrl_policy::flat::get_flat(&v.vars()).expect("flat")),
        bits(&before)
    );
}

/// Loads `path` into `p`, expects an error, and checks that nothing changed.
fn load_fails<P: Policy>(p: &mut P, path: &std::path::Path) -> PolicyError {
    let before = bits(&p.get_flat().expect("flat"));
    let err = p.load(path).expect_err("load must fail");
    assert_eq!(
        bits(&p.get_flat().expect("flat")),
        before,
        "network changed by a failed load: {err}"
    );
    err
}

#[test]
fn mismatched_files_are_typed_errors_and_change_nothing() {
    let cfg = MlpConfig::default();
    let cat = CategoricalPolicy::new(4, 2, &cfg, DType::F32, &Device::Cpu, &mut rng(0)).expect("c");
    let cat_path = tmp("mismatch-cat.safetensors");
    cat.save(&cat_path).expect("save");

    // other hidden width: the first differing tensor is named with both shapes
    let narrow = MlpConfig {
        hidden: vec![64, 32],
        activation: Activation::Tanh,
    };
    let mut other =
        CategoricalPolicy::new(4, 2, &narrow, DType::F32, &Device::Cpu, &mut rng(1)).expect("o");
    match load_fails(&mut other, &cat_path) {
        PolicyError::TensorShape {
            name,
            network,
            file,
            ..
        } => {
            assert_eq!(name, "policy.1.weight");
            assert_eq!(network, vec![32, 64]);
            assert_eq!(file, vec![64, 64]);
        }
        e => panic!("expected TensorShape, got {e}"),
    }
    let msg = load_fails(&mut other, &cat_path).to_string();
    assert!(
        msg.contains("policy.1.weight") && msg.contains("[32, 64]") && msg.contains("[64, 64]"),
        "{msg}"
    );

    // other observation width: shape error on the first layer
    let mut wide =
        CategoricalPolicy::new(5, 2, &cfg, DType::F32, &Device::Cpu, &mut rng(1)).expect("w");
    assert!(
        matches!(load_fails(&mut wide, &cat_path), PolicyError::TensorShape { ref name, .. } if name == "policy.0.weight")
    );

    // other dtype
    let mut f64_policy =
        CategoricalPolicy::new(4, 2, &cfg, DType::F64, &Device::Cpu, &mut rng(1)).expect("f");
    match load_fails(&mut f64_policy, &cat_path) {
        PolicyError::TensorDType {
            name,
            network,
            file,
            ..
        } => {
            assert_eq!(name, "policy.0.weight");
            assert_eq!((network, file), (DType::F64, DType::F32));
        }
        e => panic!("expected TensorDType, got {e}"),
    }

    // a categorical file lacks log_std; a Gaussian file has one too many
    let mut gauss =
        DiagGaussianPolicy::new(4, 2, &cfg, DType::F32, &Device::Cpu, &mut rng(1)).expect("g");
    assert!(
        matches!(load_fails(&mut gauss, &cat_path), PolicyError::MissingTensor { ref name, .. } if name == "policy.log_std")
    );
    let gauss_path = tmp("mismatch-gauss.safetensors");
    gauss.save(&gauss_path).expect("save");
    let mut cat2 = cat.clone();
    assert!(
        matches!(load_fails(&mut cat2, &gauss_path), PolicyError::UnexpectedTensor { ref name, .. } if name == "policy.log_std")
    );

    // a value file into a policy
    let v = ValueNet::new(4, &cfg, DType::F32, &Device::Cpu, &mut rng(2)).expect("v");
    let v_path = tmp("mismatch-value.safetensors");
    v.save(&v_path).expect("save");
    assert!(matches!(
        load_fails(&mut cat2, &v_path),
        PolicyError::UnexpectedTensor { .. }
    ));

    // not a safetensors file, and no file at all
    let junk = tmp("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").expect("write");
    assert!(matches!(
        load_fails(&mut cat2, &junk),
        PolicyError::File { .. }
    ));
    assert!(matches!(
        load_fails(&mut cat2, &tmp("does-not-exist.safetensors")),
        PolicyError::File { .. }
    ));
}

/// A parameter file with a NaN (or an infinity) in one tensor is refused,
/// naming the tensor and the element, and the network is left unchanged.
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let cfg = MlpConfig::default();
    for bad in [f32::NAN, f32::INFINITY] {
        let src =
            CategoricalPolicy::new(4, 2, &cfg, DType::F32, &Device::Cpu, &mut rng(2)).expect("c");
        // Poison one element of the second layer's bias, then save.
        for (name, var) in src.named_vars() {
            if name == "policy.1.bias" {
                let mut v: Vec<f32> = var.as_tensor().to_vec1().expect("bias");
                v[3] = bad;
                let t = candle_core::Tensor::from_vec(v, var.dims(), &Device::Cpu).expect("t");
                var.set(&t).expect("set");
            }
        }
        let path = tmp("non-finite.safetensors");
        src.save(&path).expect("save");
        let mut dst =
            CategoricalPolicy::new(4, 2, &cfg, DType::F32, &Device::Cpu, &mut rng(3)).expect("d");
        match load_fails(&mut dst, &path) {
            PolicyError::NonFiniteTensor {
                name, index, value, ..
            } => {
                assert_eq!(name, "policy.1.bias");
                assert_eq!(index, 3);
                assert_eq!(value.is_nan(), bad.is_nan());
            }
            e => panic!("expected NonFiniteTensor, got {e}"),
        }
        let msg = load_fails(&mut dst, &path).to_string();
        assert!(
            msg.contains("policy.1.bias") && msg.contains("non-finite"),
            "{msg}"
        );
    }
}
