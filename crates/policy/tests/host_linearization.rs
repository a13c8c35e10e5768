//! The MLP's host passes (CPU) against the candle tensor-op implementation
//! they replace: the forward pass, `J v` and `Jᵀ u` (with and without the
//! features' tangent and cotangent, per-layer and flat) must be the same
//! bits, for f32 and f64, tanh and relu, linear models, one-wide layers and
//! batches from 1 to 2049 rows. The tensor path is itself tested against
//! finite differences and candle's backward (`tests/fisher.rs`). The
//! detached forward passes are checked against `Mlp::forward` the same way.

use candle_core::{DType, Device, Tensor};
use klrl_policy::{Activation, LinearTangent, Mlp, MlpConfig, MlpLinearization};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn bits(t: &Tensor) -> Vec<u64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("to host")
        .into_iter()
        .map(f64::to_bits)
        .collect()
}

fn layer_bits(ls: &[LinearTangent]) -> Vec<Vec<u64>> {
    ls.iter()
        .flat_map(|l| [bits(&l.weight), bits(&l.bias)])
        .collect()
}

fn random(r: &mut ChaCha8Rng, shape: &[usize], scale: f64, dtype: DType) -> Tensor {
    let k: usize = shape.iter().product();
    let v: Vec<f64> = (0..k)
        .map(|_| scale * (r.random::<f64>() * 2.0 - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

fn case(in_dim: usize, hidden: &[usize], out_dim: usize, n: usize, act: Activation, dtype: DType) {
    let what = format!("in {in_dim}, hidden {hidden:?}, out {out_dim}, N {n}, {act:?}, {dtype:?}");
    let mut r = ChaCha8Rng::seed_from_u64((in_dim * 1000 + n) as u64);
    let config = MlpConfig {
        hidden: hidden.to_vec(),
        activation: act,
    };
    let mlp = Mlp::new(in_dim, out_dim, &config, 1.0, dtype, &Device::Cpu, &mut r).expect("mlp");
    // Non-zero biases, so that the bias paths are exercised.
    let mut theta = klrl_policy::flat::get_flat(&mlp.vars()).expect("flat");
    for t in theta.iter_mut() {
        *t += 0.1 * (r.random::<f64>() - 0.5);
    }
    klrl_policy::flat::set_flat(&mlp.vars(), &theta).expect("set");
    // Inputs of several magnitudes: tanh's polynomial and exponential
    // branches, relu's both sides.
    let x = random(&mut r, &[n, in_dim], 3.0, dtype);

    let (out_h, host) = mlp.linearize(&x).expect("host");
    let (out_t, tensor) = MlpLinearization::with_tensor_ops(mlp.layers(), act, &x).expect("tensor");
    assert_eq!(bits(&out_h), bits(&out_t), "forward: {what}");
    let forward = mlp.forward(&x).expect("forward");
    assert_eq!(
        bits(&out_h),
        bits(&forward),
        "forward vs Mlp::forward: {what}"
    );
    assert_eq!(
        bits(&host.features().expect("f")),
        bits(&tensor.features().expect("f")),
        "features: {what}"
    );

    // J v, per layer and flat.
    let v: Vec<f64> = (0..mlp.num_params())
        .map(|_| r.random::<f64>() - 0.5)
        .collect();
    let tangents = host.tangents_from_flat(&v).expect("tangents");
    let (jh, fh) = host.jvp_with_features(&tangents).expect("host jvp");
    let (jt, ft) = tensor.jvp_with_features(&tangents).expect("tensor jvp");
    assert_eq!(bits(&jh), bits(&jt), "jvp: {what}");
    assert_eq!(
        fh.as_ref().map(bits),
        ft.as_ref().map(bits),
        "jvp features: {what}"
    );
    let (jf, ff) = host.jvp_flat(&v).expect("jvp flat");
    assert_eq!(bits(&jf), bits(&jt), "jvp_flat: {what}");
    assert_eq!(
        ff.as_ref().map(bits),
        ft.as_ref().map(bits),
        "jvp_flat features: {what}"
    );

    // Jᵀ u, with and without a feature cotangent, per layer and flat.
    let u = random(&mut r, &[n, out_dim], 1.0, dtype);
    let features = mlp.feature_dim();
    let g = random(&mut r, &[n, features], 1.0, dtype);
    for g in [None, Some(&g)] {
        let vh = host.vjp_with_features(&u, g).expect("host vjp");
        let vt = tensor.vjp_with_features(&u, g).expect("tensor vjp");
        assert_eq!(
            layer_bits(&vh),
            layer_bits(&vt),
            "vjp (g: {}): {what}",
            g.is_some()
        );
        let mut flat = vec![7.0];
        host.vjp_flat_into(&u, g, &mut flat).expect("flat");
        let expected: Vec<u64> = std::iter::once(7.0f64.to_bits())
            .chain(layer_bits(&vt).into_iter().flatten())
            .collect();
        let got: Vec<u64> = flat.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, expected, "vjp_flat_into (g: {}): {what}", g.is_some());
        // In f32: the same values, written over whatever the buffer held
        // (an f64 network has no f32 gradient; a buffer of another length
        // is refused).
        let mut flat32 = vec![f32::NAN; flat.len() - 1];
        let r32 = host.vjp_flat_f32_into(&u, g, &mut flat32);
        if dtype == DType::F32 {
            r32.expect("flat f32");
            let widened: Vec<u64> = std::iter::once(7.0f64.to_bits())
                .chain(flat32.iter().map(|&x| f64::from(x).to_bits()))
                .collect();
            assert_eq!(widened, expected, "vjp_flat_f32_into: {what}");
            let mut short = vec![0.0f32; flat.len() - 2];
            assert!(host.vjp_flat_f32_into(&u, g, &mut short).is_err());
        } else {
            assert!(r32.is_err(), "an f64 network's f32 gradient: {what}");
        }
    }
}

#[test]
fn host_passes_are_the_tensor_ops_bit_for_bit() {
    for dtype in [DType::F32, DType::F64] {
        for act in [Activation::Tanh, Activation::Relu] {
            case(4, &[64, 64], 2, 256, act, dtype);
            case(3, &[256, 256], 1, 64, act, dtype);
            case(3, &[64, 64], 1, 2049, act, dtype);
            case(1, &[1], 1, 1, act, dtype);
            case(5, &[7, 5, 3], 4, 3, act, dtype);
            case(6, &[], 3, 17, act, dtype);
        }
    }
}

#[test]
fn host_passes_reject_what_does_not_fit() {
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let mlp = Mlp::new(
        3,
        2,
        &MlpConfig::default(),
        1.0,
        DType::F32,
        &Device::Cpu,
        &mut r,
    )
    .expect("mlp");
    let x = random(&mut r, &[5, 3], 1.0, DType::F32);
    let (_, lin) = mlp.linearize(&x).expect("lin");
    let wrong_u = random(&mut r, &[4, 2], 1.0, DType::F32);
    assert!(lin.vjp(&wrong_u).is_err());
    let mut out = Vec::new();
    assert!(lin.vjp_flat_into(&wrong_u, None, &mut out).is_err());
    assert!(out.is_empty(), "nothing appended on an error");
    let u = random(&mut r, &[5, 2], 1.0, DType::F32);
    let wrong_g = random(&mut r, &[5, 63], 1.0, DType::F32);
    assert!(lin.vjp_with_features(&u, Some(&wrong_g)).is_err());
    assert!(lin.jvp_flat(&[0.0; 3]).is_err());
    assert!(lin.tangents_from_flat(&[0.0; 3]).is_err());
    // A cotangent of another dtype is an error, not a silent conversion.
    let u64 = random(&mut r, &[5, 2], 1.0, DType::F64);
    assert!(lin.vjp(&u64).is_err());
}
