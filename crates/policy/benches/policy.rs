//! Benchmarks of the policy crate on the CartPole-sized network (4 inputs,
//! 64-64 tanh, 2 actions, f32), and of gSDE and the state-dependent log-std
//! head against the plain Gaussian policy on the Pendulum-sized one
//! (`gaussian_std/…`), and the MLP's host passes against the tensor ops
//! they replaced (`linearize_vjp/…`), and the machine's practical f32
//! matrix-product peak (`gemm_peak/…`: one large product through the same
//! `gemm` kernels the networks use, the yardstick for the update's GFLOP/s), and one PPO-zoo minibatch
//! step's products at their own shapes (`zoo_step_products/…`).
//!
//! Run single-threaded as the README reports:
//! `RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 cargo bench -p klrl-policy`.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use klrl_policy::{
    CategoricalPolicy, DiagGaussianPolicy, GaussianHead, GaussianStd, GsdeConfig, MlpConfig,
    Policy, PolicyFisher,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn setup() -> (CategoricalPolicy, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let p = CategoricalPolicy::new(
        4,
        2,
        &MlpConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng,
    )
    .expect("policy");
    (p, rng)
}

fn obs(p: &CategoricalPolicy, n: usize, rng: &mut ChaCha8Rng) -> Tensor {
    let v: Vec<f32> = (0..n * 4).map(|_| rng.random_range(-1.0..1.0)).collect();
    p.obs_tensor(&v).expect("obs")
}

fn forward(c: &mut Criterion) {
    let (p, mut rng) = setup();
    let mut g = c.benchmark_group("forward");
    for n in [1, 8, 64, 2048] {
        let x = obs(&p, n, &mut rng);
        g.bench_with_input(BenchmarkId::new("logits", n), &x, |b, x| {
            b.iter(|| black_box(p.logits(x).expect("logits")))
        });
        g.bench_with_input(BenchmarkId::new("dist", n), &x, |b, x| {
            b.iter(|| black_box(p.dist(x, None).expect("dist")))
        });
    }
    g.finish();
}

fn distribution_ops(c: &mut Criterion) {
    let (p, mut rng) = setup();
    let x = obs(&p, 2048, &mut rng);
    let d = p.dist(&x, None).expect("dist");
    let old = d.detach();
    let a = d
        .sample(&mut rng)
        .and_then(|a| a.to_tensor(DType::F32, &Device::Cpu))
        .expect("actions");
    c.bench_function("logprob_entropy_kl/2048", |b| {
        b.iter(|| {
            let lp = d.log_prob(&a).expect("lp");
            let h = d.entropy().expect("h");
            let kl = old.kl(&d).expect("kl");
            black_box((lp, h, kl))
        })
    });
}

fn fisher(c: &mut Criterion) {
    let (p, mut rng) = setup();
    let x = obs(&p, 2048, &mut rng);
    let v: Vec<f64> = (0..p.num_params())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let f = p.fisher(&x, None).expect("fisher");
    let mut g = c.benchmark_group("fisher/2048");
    g.bench_function("apply", |b| b.iter(|| black_box(f.apply(&v).expect("fvp"))));
    g.bench_function("build", |b| {
        b.iter(|| black_box(p.fisher(&x, None).expect("fisher")))
    });
    g.finish();
}

fn adam_step(c: &mut Criterion) {
    let (p, mut rng) = setup();
    let x = obs(&p, 64, &mut rng);
    let old = p.dist(&x, None).expect("dist").detach();
    let a = old
        .sample(&mut rng)
        .and_then(|a| a.to_tensor(DType::F32, &Device::Cpu))
        .expect("actions");
    let adv_host: Vec<f32> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
    let adv = Tensor::from_vec(adv_host, 64, &Device::Cpu).expect("adv");
    let old_lp = old.log_prob(&a).expect("old lp");
    let params = ParamsAdamW {
        lr: 3e-4,
        eps: 1e-5,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::new(p.vars(), params).expect("adam");
    // PPO-KL surrogate: −mean(r Â) + β mean KL(π_old ‖ π_θ), β = 1.
    c.bench_function("adam_step/64", |b| {
        b.iter(|| {
            let d = p.dist(&x, None).expect("dist");
            let ratio = (d.log_prob(&a).expect("lp") - &old_lp)
                .and_then(|r| r.exp())
                .expect("ratio");
            let surr = (ratio * &adv).and_then(|s| s.mean_all()).expect("surr");
            let kl = old.kl(&d).expect("kl").mean_all().expect("kl");
            let loss = (kl - surr).expect("loss");
            opt.backward_step(&loss).expect("step");
        })
    });
}

/// A Pendulum-sized Gaussian policy (3 inputs, 64-64 tanh, 1 action, f32)
/// with σ from `std`.
fn gaussian(std: GaussianStd) -> DiagGaussianPolicy {
    let head = GaussianHead {
        std,
        log_std_init: -1.0,
    };
    DiagGaussianPolicy::with_head(
        3,
        1,
        &MlpConfig::default(),
        &head,
        DType::F32,
        &Device::Cpu,
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .expect("policy")
}

/// gSDE against the plain (state-independent σ) Gaussian policy: one
/// rollout step for 4 environment copies (the zoo's Pendulum PPO: distribution,
/// action, log-probability), and one policy-gradient step on a minibatch of
/// 64 (PPO-KL surrogate by the pullback, as PPO computes its gradient), and a
/// Fisher-vector product on 2048 states (TRPO).
fn gsde_vs_plain(c: &mut Criterion) {
    let kinds = [
        ("plain", GaussianStd::StateIndependent),
        ("gsde", GaussianStd::Gsde(GsdeConfig::sb3())),
        ("log_std_head", GaussianStd::StateDependent),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let host = |n: usize, rng: &mut ChaCha8Rng| -> Vec<f32> {
        (0..n * 3).map(|_| rng.random_range(-1.0..1.0)).collect()
    };
    let step_obs = host(4, &mut rng);
    let mb_obs = host(64, &mut rng);
    let big_obs = host(2048, &mut rng);
    let mut g = c.benchmark_group("gaussian_std");
    for (name, std) in kinds {
        let p = gaussian(std);
        let mut r = ChaCha8Rng::seed_from_u64(2);
        let noise = p.sample_sde_noise(4, &mut r).expect("noise");
        g.bench_function(BenchmarkId::new("rollout_step_4", name), |b| {
            b.iter(|| {
                let x = p.obs_tensor(&step_obs).expect("obs");
                let (d, a) = match &noise {
                    Some(n) => p.sample_with_sde_noise(&x, n).expect("act"),
                    None => {
                        let d = p.dist(&x, None).expect("dist");
                        let a = d.sample(&mut r).expect("sample");
                        (d, a)
                    }
                };
                let at = a.to_tensor(DType::F32, &Device::Cpu).expect("a");
                black_box(d.log_prob(&at).expect("lp").to_vec1::<f32>().expect("host"))
            })
        });
        let x = p.obs_tensor(&mb_obs).expect("obs");
        let old = p.dist(&x, None).expect("dist").detach();
        let a = old
            .sample(&mut r)
            .and_then(|a| a.to_tensor(DType::F32, &Device::Cpu))
            .expect("actions");
        let old_lp = old.log_prob(&a).expect("old lp");
        let adv = Tensor::from_vec(
            (0..64)
                .map(|_| r.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>(),
            64,
            &Device::Cpu,
        )
        .expect("adv");
        g.bench_function(BenchmarkId::new("update_grad_64", name), |b| {
            b.iter(|| {
                let (d, pullback) = p.dist_with_pullback(&x, None).expect("pullback");
                let ratio = (d.log_prob(&a).expect("lp") - &old_lp)
                    .and_then(|r| r.exp())
                    .expect("ratio");
                let surr = (ratio * &adv).and_then(|s| s.mean_all()).expect("surr");
                let kl = old.kl(&d).expect("kl").mean_all().expect("kl");
                let loss = (kl - surr).expect("loss");
                let grads = loss.backward().expect("backward");
                black_box(pullback.flat_grad(&grads).expect("grad"))
            })
        });
        let xb = p.obs_tensor(&big_obs).expect("obs");
        let v: Vec<f64> = (0..p.num_params())
            .map(|_| r.random_range(-1.0..1.0))
            .collect();
        let f = p.fisher(&xb, None).expect("fisher");
        g.bench_function(BenchmarkId::new("fisher_apply_2048", name), |b| {
            b.iter(|| black_box(f.apply(&v).expect("fvp")))
        });
    }
    g.finish();
}

/// The MLP's linearisation (forward keeping what the derivatives need, then
/// `Jᵀ u` into a flat f64 gradient, as a PPO minibatch step does) by the
/// host passes (`host`) against the candle tensor ops they replaced
/// (`tensor ops`; the same bits, `tests/host_linearization.rs`), for the
/// CartPole network at PPO-zoo's minibatch (4 → 64-64 → 2, N = 256) and a
/// 256-256 network at minibatch 64 (3 → 256-256 → 1).
fn linearization(c: &mut Criterion) {
    let mut g = c.benchmark_group("linearize_vjp");
    for (label, in_dim, hidden, out_dim, n) in [
        ("64-64 N=256", 4, vec![64, 64], 2, 256),
        ("256-256 N=64", 3, vec![256, 256], 1, 64),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let config = MlpConfig {
            hidden,
            ..MlpConfig::default()
        };
        let mlp = klrl_policy::Mlp::new(
            in_dim,
            out_dim,
            &config,
            1.0,
            DType::F32,
            &Device::Cpu,
            &mut rng,
        )
        .expect("mlp");
        let x: Vec<f32> = (0..n * in_dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::from_vec(x, (n, in_dim), &Device::Cpu).expect("x");
        let u: Vec<f32> = (0..n * out_dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let u = Tensor::from_vec(u, (n, out_dim), &Device::Cpu).expect("u");
        g.bench_function(BenchmarkId::new("host", label), |b| {
            b.iter(|| {
                let (_, lin) = mlp.linearize(&x).expect("lin");
                let mut out = Vec::new();
                lin.vjp_flat_into(&u, None, &mut out).expect("vjp");
                black_box(out)
            })
        });
        g.bench_function(BenchmarkId::new("tensor ops", label), |b| {
            b.iter(|| {
                let (_, lin) = klrl_policy::MlpLinearization::with_tensor_ops(
                    mlp.layers(),
                    mlp.activation(),
                    &x,
                )
                .expect("lin");
                let mut out = Vec::new();
                for l in lin.vjp(&u).expect("vjp") {
                    klrl_policy::flat::extend_f64(&mut out, &l.weight).expect("w");
                    klrl_policy::flat::extend_f64(&mut out, &l.bias).expect("b");
                }
                black_box(out)
            })
        });
    }
    g.finish();
}

/// The practical f32 peak of the matrix-product kernels on one thread: a
/// 1024 × 1024 × 1024 product through candle (whose CPU backend calls the
/// same `gemm` 0.19 kernels as the MLP's host passes), 2 · 1024³ FLOP per
/// iteration. GFLOP/s = 2.147 / (time in ms). The networks' products are far
/// smaller (e.g. 256 × 64 × 64) and reach less; this is the best case. Also
/// one 64 × 256 × 256 product, a 256-256 network's hidden layer.
fn gemm_peak(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 1024;
    let mut matrix = || {
        let v: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, (n, n), &Device::Cpu).expect("matrix")
    };
    let (a, b) = (matrix(), matrix());
    let mut g = c.benchmark_group("gemm_peak");
    g.bench_function("f32 1024x1024x1024", |bench| {
        bench.iter(|| black_box(a.matmul(&b).expect("matmul")))
    });
    // A 256-256 network's hidden layer at a 64-row minibatch (2 · 64 · 256²
    // = 8.4 MFLOP: GFLOP/s = 8.39 / (time in µs)).
    let (x, w) = (
        a.narrow(0, 0, 64).and_then(|t| t.narrow(1, 0, 256)),
        b.narrow(0, 0, 256).and_then(|t| t.narrow(1, 0, 256)),
    );
    let (x, w) = (
        x.and_then(|t| t.contiguous()).expect("x"),
        w.and_then(|t| t.contiguous()).expect("w"),
    );
    g.bench_function("f32 64x256x256", |bench| {
        bench.iter(|| black_box(x.matmul(&w).expect("matmul")))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// One PPO-zoo minibatch step's matrix products (CartPole, two 4-64-64
/// tanh networks — the policy with 2 outputs, the value with 1 —, 256
/// rows), each a `gemm` call with the operands' layouts and arguments of
/// the host passes (`crates/policy/src/host.rs`, `mlp_host.rs`): per
/// network the forward pass `h Wᵀ` of its three layers, then from the head
/// down `∂W = δᵀ h`, `∂b = 1ᵀ δ` and (above the first layer) `δ W`. That is
/// 2 · 256 · (3·64·64 + 2·4·64 + 2·64 + o·(3·64 + 1)) FLOP per network with
/// o outputs: 6 816 768 (o = 2) + 6 717 952 (o = 1) = 13.535 MFLOP per
/// step, GFLOP/s = 13 535 / (time in µs). The zoo run does
/// 391 updates × 20 epochs = 7 820 such steps, so this time × 7 820 is what
/// its update phase spends in products at `gemm`'s rate for these shapes —
/// against the floor of `gemm_peak`'s large-product rate (README,
/// "Arithmetic floor"). `benches/sb3/torch_matmul.py` times the same
/// products with torch.
fn zoo_step_products(c: &mut Criterion) {
    const N: usize = 256;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut data =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
    // A row-major `rows × cols` matrix or, transposed, its view.
    #[derive(Clone, Copy)]
    struct M<'a> {
        d: &'a [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    }
    fn m(d: &[f32], rows: usize, cols: usize) -> M<'_> {
        assert_eq!(d.len(), rows * cols);
        M {
            d,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    fn t(a: M<'_>) -> M<'_> {
        M {
            d: a.d,
            rows: a.cols,
            cols: a.rows,
            rs: a.cs,
            cs: a.rs,
        }
    }
    // `dst = a · b` with the host passes' (candle's) gemm arguments.
    fn product(a: M<'_>, b: M<'_>, dst: &mut [f32]) {
        let (mm, n, k) = (a.rows, b.cols, a.cols);
        assert!(a.cols == b.rows && dst.len() == mm * n);
        // SAFETY: every element the strides address lies inside a.d / b.d
        // (row-major data and their transposes, lengths asserted), dst
        // holds m × n elements at row stride n and is a unique borrow.
        unsafe {
            gemm::gemm(
                mm,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.d.as_ptr(),
                a.cs as isize,
                a.rs as isize,
                b.d.as_ptr(),
                b.cs as isize,
                b.rs as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    struct Net {
        x: Vec<f32>,
        h1: Vec<f32>,
        h2: Vec<f32>,
        w: [Vec<f32>; 3],
        delta: [Vec<f32>; 3],
        out: usize,
    }
    let mut net = |out: usize| Net {
        x: data(N * 4),
        h1: data(N * 64),
        h2: data(N * 64),
        w: [data(64 * 4), data(64 * 64), data(out * 64)],
        delta: [data(N * 64), data(N * 64), data(N * out)],
        out,
    };
    let nets = [net(2), net(1)];
    let ones = vec![1.0f32; N];
    let mut scratch = vec![0.0f32; N * 64];
    // `all`: every product of the step; else only the three 64 × 64 ×
    // 256 ones per network (h₁ W₁ᵀ, δ₁ᵀ h₁, δ₁ W₁: 12.583 MFLOP of the
    // 13.535), to tell the rate at the large shapes from the cost of the
    // 16 small products (the first layer's 4 inputs, the heads' 1–2
    // outputs, the bias gradients).
    let mut step = |all: bool| {
        for q in &nets {
            let o = q.out;
            // forward: z_l = h_{l-1} W_lᵀ
            if all {
                product(m(&q.x, N, 4), t(m(&q.w[0], 64, 4)), &mut scratch[..N * 64]);
            }
            product(
                m(&q.h1, N, 64),
                t(m(&q.w[1], 64, 64)),
                &mut scratch[..N * 64],
            );
            if all {
                product(m(&q.h2, N, 64), t(m(&q.w[2], o, 64)), &mut scratch[..N * o]);
                // reverse, head first: ∂W, ∂b, δ W
                product(
                    t(m(&q.delta[2], N, o)),
                    m(&q.h2, N, 64),
                    &mut scratch[..o * 64],
                );
                product(m(&ones, 1, N), m(&q.delta[2], N, o), &mut scratch[..o]);
                product(
                    m(&q.delta[2], N, o),
                    m(&q.w[2], o, 64),
                    &mut scratch[..N * 64],
                );
            }
            product(
                t(m(&q.delta[1], N, 64)),
                m(&q.h1, N, 64),
                &mut scratch[..64 * 64],
            );
            if all {
                product(m(&ones, 1, N), m(&q.delta[1], N, 64), &mut scratch[..64]);
            }
            product(
                m(&q.delta[1], N, 64),
                m(&q.w[1], 64, 64),
                &mut scratch[..N * 64],
            );
            if all {
                product(
                    t(m(&q.delta[0], N, 64)),
                    m(&q.x, N, 4),
                    &mut scratch[..64 * 4],
                );
                product(m(&ones, 1, N), m(&q.delta[0], N, 64), &mut scratch[..64]);
            }
        }
        black_box(&scratch);
    };
    let mut g = c.benchmark_group("zoo_step_products");
    g.bench_function("f32 two 4-64-64 nets, 256 rows (13.535 MFLOP)", |bench| {
        bench.iter(|| step(true))
    });
    g.bench_function(
        "f32 the six 256x64x64 products only (12.583 MFLOP)",
        |bench| bench.iter(|| step(false)),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = forward, distribution_ops, fisher, adam_step, gsde_vs_plain, linearization, gemm_peak,
        zoo_step_products
}
criterion_main!(benches);
