//! The KL trust-region projection (`klrl_policy::projection`): the bound at
//! every state (in f64 and recomputed by `Dist::kl` in f32), states inside
//! returned unchanged, optimality against brute-force searches, gradients
//! against finite differences (also through `Policy::dist_with_pullback`),
//! and typed errors.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use klrl_policy::projection::{categorical as cat, gaussian as gauss};
use klrl_policy::{
    ActionMask, Activation, Categorical, DiagGaussian, Dist, KlProjection, Policy, PolicyError,
    MASKED_LOGIT,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------- helpers

fn normal(r: &mut ChaCha8Rng, scale: f64) -> f64 {
    gaussian_vec(r, 1, scale)[0]
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

fn cat_dist(logits: &[f64], a: usize, mask: Option<&ActionMask>, dtype: DType) -> Dist {
    let t = tensor(logits, &[logits.len() / a, a], dtype);
    Dist::Categorical(Categorical::from_logits(&t, mask).expect("categorical"))
}

fn gauss_dist(mean: &[f64], log_std: &[f64], dtype: DType) -> Dist {
    let d = log_std.len();
    let m = tensor(mean, &[mean.len() / d, d], dtype);
    let l = tensor(log_std, &[d], dtype);
    Dist::DiagGaussian(DiagGaussian::new(&m, &l).expect("gaussian"))
}

fn as_cat(d: &Dist) -> &Categorical {
    match d {
        Dist::Categorical(c) => c,
        Dist::DiagGaussian(_) => panic!("expected a categorical"),
    }
}

fn as_gauss(d: &Dist) -> &DiagGaussian {
    match d {
        Dist::DiagGaussian(g) => g,
        Dist::Categorical(_) => panic!("expected a Gaussian"),
    }
}

/// `ln softmax` in f64, written independently of the crate.
fn log_softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::MIN, f64::max);
    let s: f64 = z.iter().map(|x| (x - max).exp()).sum();
    z.iter().map(|x| x - max - s.ln()).collect()
}

/// `KL(p ‖ q)` of probability vectors in f64 (0 ln 0 = 0).
fn kl_probs(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&a, &b)| if a > 0.0 { a * (a / b).ln() } else { 0.0 })
        .sum()
}

/// `KL(softmax(zp) ‖ softmax(zq))` per row in f64, from logits.
fn kl_rows(zp: &[f64], zq: &[f64], a: usize) -> Vec<f64> {
    zp.chunks(a)
        .zip(zq.chunks(a))
        .map(|(p, q)| {
            let (lp, lq) = (log_softmax(p), log_softmax(q));
            lp.iter()
                .zip(&lq)
                .map(|(&x, &y)| {
                    if x.exp() > 0.0 {
                        x.exp() * (x - y)
                    } else {
                        0.0
                    }
                })
                .sum()
        })
        .collect()
}

/// `KL(N(μp, σp²) ‖ N(μq, σq²))` per state in f64, diagonal, from log σ.
fn kl_gauss_rows(mp: &[f64], lp: &[f64], mq: &[f64], lq: &[f64]) -> Vec<f64> {
    let d = lp.len();
    mp.chunks(d)
        .zip(mq.chunks(d))
        .map(|(a, b)| {
            (0..d)
                .map(|j| {
                    lq[j] - lp[j]
                        + ((2.0 * lp[j]).exp() + (a[j] - b[j]).powi(2))
                            / (2.0 * (2.0 * lq[j]).exp())
                        - 0.5
                })
                .sum()
        })
        .collect()
}

/// A random mask over n × a, at least one legal action per state.
fn random_mask(r: &mut ChaCha8Rng, n: usize, a: usize) -> ActionMask {
    let mut legal = vec![false; n * a];
    for s in 0..n {
        let keep = r.random_range(0..a);
        for j in 0..a {
            legal[s * a + j] = j == keep || r.random::<f64>() < 0.6;
        }
    }
    ActionMask::new(legal, a).expect("mask")
}

/// Random old and new raw logits: N(0, scale²) entries, a third of them
/// pushed to ±20; the new ones moved from the old by a per-state amount
/// from tiny to far (and sometimes given their own ±20 entries).
fn categorical_case(r: &mut ChaCha8Rng, n: usize, a: usize, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let moves = [0.003, 0.03, 0.3, 1.0, 3.0, 10.0];
    let mut old = Vec::with_capacity(n * a);
    let mut new = Vec::with_capacity(n * a);
    for s in 0..n {
        let mv = moves[s % moves.len()];
        for _ in 0..a {
            let mut o = normal(r, scale);
            if r.random::<f64>() < 1.0 / 3.0 {
                o = if r.random::<bool>() { 20.0 } else { -20.0 };
            }
            let mut x = o + normal(r, mv);
            if mv > 1.0 && r.random::<f64>() < 0.2 {
                x = if r.random::<bool>() { 20.0 } else { -20.0 };
            }
            old.push(o);
            new.push(x);
        }
    }
    (new, old)
}

/// Random old and new Gaussians: means of scale `mean_scale`, moved per
/// state from tiny to far; log σ_old ~ N(0, 1), log σ moved by `ls_move`.
fn gaussian_case(
    r: &mut ChaCha8Rng,
    n: usize,
    d: usize,
    mean_scale: f64,
    ls_move: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let moves = [1e-3, 0.03, 0.3, 1.0, 10.0];
    let old_mean = gaussian_vec(r, n * d, mean_scale);
    let mean: Vec<f64> = old_mean
        .iter()
        .enumerate()
        .map(|(i, &m)| m + normal(r, moves[(i / d) % moves.len()]))
        .collect();
    let old_log_std = gaussian_vec(r, d, 1.0);
    let log_std: Vec<f64> = old_log_std
        .iter()
        .map(|&l| l + normal(r, ls_move))
        .collect();
    (mean, log_std, old_mean, old_log_std)
}

// ------------------------------------------------------------ 1. the bound

#[test]
fn categorical_kl_is_within_eps_at_every_state() {
    let mut r = rng(100);
    let mut worst = std::collections::BTreeMap::new();
    let (mut active, mut total) = (0, 0);
    for dtype in [DType::F32, DType::F64] {
        for eps in [1e-3, 1e-2, 0.05, 0.3] {
            let proj = KlProjection::new(eps).expect("projection");
            for a in [2, 3, 6] {
                for (scale, masked) in [(0.5, false), (3.0, false), (3.0, true), (20.0, true)] {
                    let n = 48;
                    let (new, old) = categorical_case(&mut r, n, a, scale);
                    let mask = masked.then(|| random_mask(&mut r, n, a));
                    let new_d = cat_dist(&new, a, mask.as_ref(), dtype);
                    let old_d = cat_dist(&old, a, mask.as_ref(), dtype);
                    let p = proj.project(&new_d, &old_d).expect("project");
                    // f64 on the host, from the stored logits
                    let old_z = values(as_cat(&old_d).logits());
                    let new_z = values(as_cat(&new_d).logits());
                    let p_z = values(as_cat(&p).logits());
                    let kl_host = kl_rows(&old_z, &p_z, a);
                    // the crate's KL in the working dtype
                    let kl_dist = values(&old_d.kl(&p).expect("kl"));
                    let before = kl_rows(&old_z, &new_z, a);
                    for s in 0..n {
                        let label = format!("{dtype:?} ε {eps} A {a} scale {scale} state {s}");
                        assert!(kl_host[s] <= eps, "{label}: f64 KL {}", kl_host[s]);
                        assert!(kl_dist[s] <= eps, "{label}: Dist::kl {}", kl_dist[s]);
                        let w = worst
                            .entry(format!("{dtype:?} ε {eps}"))
                            .or_insert((0.0, 0.0));
                        *w = (
                            f64::max(w.0, kl_host[s] / eps),
                            f64::max(w.1, kl_dist[s] / eps),
                        );
                        total += 1;
                        if before[s] > eps {
                            active += 1;
                            // active states end on the boundary
                            assert!(kl_host[s] >= 0.99 * eps, "{label}: {}", kl_host[s]);
                        }
                    }
                }
            }
        }
    }
    eprintln!("categorical: {active}/{total} states projected; worst KL/ε (f64, Dist::kl):");
    for (k, (a, b)) in &worst {
        eprintln!("  {k}: {a:.7} {b:.7}");
    }
    assert!(active > total / 4 && active < total);
}

#[test]
fn gaussian_kl_is_within_eps_at_every_state() {
    let mut r = rng(200);
    let mut worst = std::collections::BTreeMap::new();
    let (mut active, mut total) = (0, 0);
    for dtype in [DType::F32, DType::F64] {
        for eps in [1e-3, 1e-2, 0.05, 0.3] {
            for cov_frac in [0.1, 0.5, 0.9] {
                let proj = KlProjection::new(eps)
                    .and_then(|p| p.with_cov_frac(cov_frac))
                    .expect("projection");
                for d in [1, 3, 6] {
                    for (mean_scale, ls_move) in [(1.0, 0.0), (1.0, 0.01), (10.0, 0.3), (3.0, 2.0)]
                    {
                        let n = 30;
                        let (mean, ls, old_mean, old_ls) =
                            gaussian_case(&mut r, n, d, mean_scale, ls_move);
                        let new_d = gauss_dist(&mean, &ls, dtype);
                        let old_d = gauss_dist(&old_mean, &old_ls, dtype);
                        let p = proj.project(&new_d, &old_d).expect("project");
                        let pg = as_gauss(&p);
                        assert_eq!(pg.log_std().dims(), &[d]);
                        let (om, ol) = (
                            values(as_gauss(&old_d).mean()),
                            values(as_gauss(&old_d).log_std()),
                        );
                        let kl_host =
                            kl_gauss_rows(&om, &ol, &values(pg.mean()), &values(pg.log_std()));
                        let kl_dist = values(&old_d.kl(&p).expect("kl"));
                        let before = kl_gauss_rows(
                            &om,
                            &ol,
                            &values(as_gauss(&new_d).mean()),
                            &values(as_gauss(&new_d).log_std()),
                        );
                        for s in 0..n {
                            let label = format!(
                                "{dtype:?} ε {eps} cov_frac {cov_frac} d {d} scale {mean_scale} move {ls_move} state {s}"
                            );
                            assert!(kl_host[s] <= eps, "{label}: f64 KL {}", kl_host[s]);
                            assert!(kl_dist[s] <= eps, "{label}: Dist::kl {}", kl_dist[s]);
                            let w = worst
                                .entry(format!("{dtype:?} ε {eps}"))
                                .or_insert((0.0, 0.0));
                            *w = (
                                f64::max(w.0, kl_host[s] / eps),
                                f64::max(w.1, kl_dist[s] / eps),
                            );
                            total += 1;
                            active += usize::from(before[s] > eps);
                        }
                    }
                }
            }
        }
    }
    eprintln!("gaussian: {active}/{total} states outside before; worst KL/ε (f64, Dist::kl):");
    for (k, (a, b)) in &worst {
        eprintln!("  {k}: {a:.7} {b:.7}");
    }
    assert!(active > total / 4 && active < total);
}

// --------------------------------------------------------- 2. identity

#[test]
fn categorical_states_inside_are_returned_unchanged() {
    let mut r = rng(300);
    let (n, a, eps) = (40, 5, 0.05);
    let proj = KlProjection::new(eps).expect("projection");
    for dtype in [DType::F32, DType::F64] {
        let (new, old) = categorical_case(&mut r, n, a, 2.0);
        let mask = random_mask(&mut r, n, a);
        let new_d = cat_dist(&new, a, Some(&mask), dtype);
        let old_d = cat_dist(&old, a, Some(&mask), dtype);
        let p = proj.project(&new_d, &old_d).expect("project");
        let before = kl_rows(
            &values(as_cat(&old_d).logits()),
            &values(as_cat(&new_d).logits()),
            a,
        );
        let (z_in, z_out) = (values(as_cat(&new_d).logits()), values(as_cat(&p).logits()));
        let (lp_in, lp_out) = (
            values(as_cat(&new_d).log_probs()),
            values(as_cat(&p).log_probs()),
        );
        let (mut inside, mut outside) = (0, 0);
        for (s, &kl) in before.iter().enumerate() {
            let row = s * a..(s + 1) * a;
            if kl <= 0.9 * eps {
                inside += 1;
                // bit for bit: the same logits and the same log-softmax
                assert_eq!(z_in[row.clone()], z_out[row.clone()], "{dtype:?} state {s}");
                assert_eq!(lp_in[row.clone()], lp_out[row], "{dtype:?} state {s}");
            } else if kl > eps {
                outside += 1;
                assert_ne!(lp_in[row.clone()], lp_out[row], "{dtype:?} state {s}");
            }
        }
        assert!(
            inside >= 5 && outside >= 5,
            "{inside} inside, {outside} outside"
        );
    }
}

#[test]
fn gaussian_states_inside_are_returned_unchanged() {
    let mut r = rng(301);
    let (n, d, eps) = (25, 3, 0.05);
    let proj = KlProjection::new(eps).expect("projection");
    for dtype in [DType::F32, DType::F64] {
        for ls_move in [0.0, 1.0] {
            let (mean, ls, old_mean, old_ls) = gaussian_case(&mut r, n, d, 2.0, ls_move);
            let new_d = gauss_dist(&mean, &ls, dtype);
            let old_d = gauss_dist(&old_mean, &old_ls, dtype);
            let p = proj.project(&new_d, &old_d).expect("project");
            let pg = as_gauss(&p);
            let (ls_in, ls_out) = (values(as_gauss(&new_d).log_std()), values(pg.log_std()));
            let v = gauss::variance_part(&ls_in, &values(as_gauss(&old_d).log_std()));
            if v <= 0.9 * proj.cov_frac * eps {
                assert_eq!(ls_in, ls_out, "{dtype:?}: log_std inside, changed");
            } else {
                assert_ne!(ls_in, ls_out, "{dtype:?}: log_std outside, unchanged");
            }
            // means inside the mean bound (measured with the projected σ̃) are kept
            let (m_in, m_out) = (values(as_gauss(&new_d).mean()), values(pg.mean()));
            let m_old = values(as_gauss(&old_d).mean());
            let mut inside = 0;
            for s in 0..n {
                let row = s * d..(s + 1) * d;
                let m = gauss::mean_part(&m_in[row.clone()], &m_old[row.clone()], &ls_out);
                if m <= 0.9 * (1.0 - proj.cov_frac) * eps {
                    inside += 1;
                    assert_eq!(m_in[row.clone()], m_out[row], "{dtype:?} state {s}");
                } else if m > (1.0 - proj.cov_frac) * eps {
                    assert_ne!(m_in[row.clone()], m_out[row], "{dtype:?} state {s}");
                }
            }
            assert!(inside >= 3, "{inside}");
        }
    }
}

// ---------------------------------------------------------- 3. optimality

/// An independent oracle for `min obj(x) s.t. con(x) ≤ eps` in 1 or 2
/// coordinates, for a convex `con` with `con(center) = 0` and an objective
/// whose unconstrained minimiser is infeasible, so that the optimum lies on
/// the boundary: boundary points are found by bisection along rays from
/// `center`, and `obj` along the boundary is minimised over the ray angle
/// by a dense grid refined around its best point. It uses nothing of the
/// derivations (no mixtures, no radial formula).
fn boundary_argmin(
    center: &[f64],
    eps: f64,
    con: &dyn Fn(&[f64]) -> f64,
    obj: &dyn Fn(&[f64]) -> f64,
) -> (Vec<f64>, f64) {
    let feasible = |x: &[f64]| con(x) <= eps; // NaN / ∞ outside the domain: infeasible
    let on_ray = |v: &[f64]| -> Vec<f64> {
        let at =
            |rho: f64| -> Vec<f64> { center.iter().zip(v).map(|(c, d)| c + rho * d).collect() };
        let (mut lo, mut hi) = (0.0, 1e-3);
        while feasible(&at(hi)) {
            lo = hi;
            hi *= 2.0;
            assert!(hi < 1e6, "unbounded feasible set");
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if feasible(&at(mid)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        at(lo)
    };
    if center.len() == 1 {
        let cands = [on_ray(&[1.0]), on_ray(&[-1.0])];
        let best = cands
            .iter()
            .min_by(|a, b| obj(a).total_cmp(&obj(b)))
            .expect("two candidates");
        return (best.clone(), obj(best));
    }
    let point = |theta: f64| on_ray(&[theta.cos(), theta.sin()]);
    let g = |theta: f64| obj(&point(theta));
    let (mut lo, mut hi, mut n) = (0.0, std::f64::consts::TAU, 2000);
    let mut best = (0.0, f64::INFINITY);
    for _ in 0..12 {
        let step = (hi - lo) / n as f64;
        for i in 0..=n {
            let theta = lo + step * i as f64;
            let v = g(theta);
            if v < best.1 {
                best = (theta, v);
            }
        }
        lo = best.0 - 2.0 * step;
        hi = best.0 + 2.0 * step;
        n = 40;
    }
    (point(best.0), best.1)
}

/// Random feasible points near `center` (uniform in a box of half-width
/// `half`): the smallest objective among them.
fn random_feasible_min(
    r: &mut ChaCha8Rng,
    center: &[f64],
    half: f64,
    eps: f64,
    con: &dyn Fn(&[f64]) -> f64,
    obj: &dyn Fn(&[f64]) -> f64,
) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..100_000 {
        let x: Vec<f64> = center
            .iter()
            .map(|c| c + half * (2.0 * r.random::<f64>() - 1.0))
            .collect();
        if con(&x) <= eps {
            best = best.min(obj(&x));
        }
    }
    best
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn categorical_projection_is_the_brute_force_argmin() {
    let mut r = rng(400);
    let (mut worst_arg, mut worst_api, mut cases): (f64, f64, usize) = (0.0, 0.0, 0);
    for a in [2usize, 3] {
        for eps in [0.01, 0.1] {
            for case in 0..8 {
                let scale = if case < 4 { 1.5 } else { 4.0 };
                let old = gaussian_vec(&mut r, a, scale);
                let new = gaussian_vec(&mut r, a, scale);
                let p: Vec<f64> = log_softmax(&new).iter().map(|x| x.exp()).collect();
                let po: Vec<f64> = log_softmax(&old).iter().map(|x| x.exp()).collect();
                if kl_probs(&po, &p) <= eps {
                    continue; // inside: covered by the identity tests
                }
                cases += 1;
                let label = format!("A {a} ε {eps} case {case}");
                // coordinates: the first A − 1 probabilities
                let to_q = |x: &[f64]| -> Vec<f64> {
                    let mut q = x.to_vec();
                    q.push(1.0 - x.iter().sum::<f64>());
                    q
                };
                let con = |x: &[f64]| -> f64 {
                    let q = to_q(x);
                    if q.iter().all(|&v| v > 0.0) {
                        kl_probs(&po, &q)
                    } else {
                        f64::INFINITY
                    }
                };
                let obj = |x: &[f64]| kl_probs(&p, &to_q(x));

                let ours = cat::project_row(&new, &old, eps);
                let q: Vec<f64> = log_softmax(&ours.logits).iter().map(|x| x.exp()).collect();
                let ours_obj = kl_probs(&p, &q);
                assert!(
                    kl_probs(&po, &q) <= eps * (1.0 + 1e-9),
                    "{label}: infeasible"
                );

                let (arg, best) = boundary_argmin(&po[..a - 1], eps, &con, &obj);
                assert!(
                    best >= ours_obj - 1e-12,
                    "{label}: boundary {best} < ours {ours_obj}"
                );
                let random = random_feasible_min(&mut r, &po[..a - 1], 0.5, eps, &con, &obj);
                assert!(
                    random >= ours_obj - 1e-12,
                    "{label}: random {random} < ours {ours_obj}"
                );
                let err = max_abs_diff(&to_q(&arg), &q);
                assert!(
                    err <= 1e-4,
                    "{label}: argmin {:?} vs ours {q:?}",
                    to_q(&arg)
                );
                worst_arg = worst_arg.max(err);

                // the public API (working radius ε(1 − 10⁻⁴)) lands within 1e-4 too
                let api = KlProjection::new(eps)
                    .expect("projection")
                    .project(
                        &cat_dist(&new, a, None, DType::F64),
                        &cat_dist(&old, a, None, DType::F64),
                    )
                    .expect("project");
                let q_api: Vec<f64> = values(as_cat(&api).log_probs())
                    .iter()
                    .map(|x| x.exp())
                    .collect();
                let err_api = max_abs_diff(&to_q(&arg), &q_api);
                assert!(err_api <= 1e-4, "{label}: API {q_api:?}");
                worst_api = worst_api.max(err_api);
            }
        }
    }
    eprintln!(
        "categorical, {cases} projected cases: max |q − oracle argmin| = {worst_arg:e} (host, radius ε), {worst_api:e} (KlProjection)"
    );
    assert!(cases >= 16, "{cases}");
}

#[test]
fn gaussian_projection_is_the_brute_force_argmin_of_both_subproblems() {
    let mut r = rng(401);
    let mut worst_arg: f64 = 0.0;
    let mut mean_cases = 0;
    for d in [1usize, 2] {
        for (eps_cov, eps_mean) in [(0.01, 0.02), (0.05, 0.005)] {
            for case in 0..4 {
                let lo = gaussian_vec(&mut r, d, 0.5);
                // σ moved from σ_old by at least e^±0.4 in every dimension: outside
                let l: Vec<f64> = lo
                    .iter()
                    .map(|x| {
                        let sign = if r.random::<bool>() { 1.0 } else { -1.0 };
                        x + sign * (0.4 + normal(&mut r, 0.6).abs())
                    })
                    .collect();
                let mo = gaussian_vec(&mut r, d, 1.0);
                let m: Vec<f64> = mo.iter().map(|x| x + 0.5 + normal(&mut r, 1.0)).collect();
                let label = format!("d {d} ε_Σ {eps_cov} ε_μ {eps_mean} case {case}");

                // variances (G2) over x = log σ̃: min of the variance part of
                // KL(π ‖ q) s.t. the variance part of KL(π_old ‖ q) ≤ ε_Σ, written out
                let part = |x: &[f64], base: &[f64]| -> f64 {
                    (0..d)
                        .map(|j| {
                            0.5 * ((2.0 * (base[j] - x[j])).exp() - 1.0 + 2.0 * (x[j] - base[j]))
                        })
                        .sum()
                };
                let var_obj = |x: &[f64]| part(x, &l);
                let var_con = |x: &[f64]| part(x, &lo);
                assert!(var_con(&l) > eps_cov, "{label}: variance inside");
                let ours_l = gauss::project_log_std(&l, &lo, eps_cov).log_std;
                assert!(var_con(&ours_l) <= eps_cov * (1.0 + 1e-9), "{label}");
                let (arg, best) = boundary_argmin(&lo, eps_cov, &var_con, &var_obj);
                assert!(
                    best >= var_obj(&ours_l) - 1e-12,
                    "{label}: variance objective"
                );
                let random = random_feasible_min(&mut r, &lo, 0.5, eps_cov, &var_con, &var_obj);
                assert!(
                    random >= var_obj(&ours_l) - 1e-12,
                    "{label}: variance objective"
                );
                let err_l = max_abs_diff(&arg, &ours_l);
                assert!(err_l <= 1e-4, "{label}: log σ̃ {ours_l:?} vs {arg:?}");

                // means (G5) in the metric of the projected variances
                let inv_var: Vec<f64> = ours_l.iter().map(|x| (-2.0 * x).exp()).collect();
                let dist2 = |x: &[f64], y: &[f64]| -> f64 {
                    (0..d)
                        .map(|j| 0.5 * (x[j] - y[j]).powi(2) * inv_var[j])
                        .sum()
                };
                let mean_obj = |x: &[f64]| dist2(&m, x);
                let mean_con = |x: &[f64]| dist2(x, &mo);
                if mean_con(&m) <= eps_mean {
                    continue;
                }
                mean_cases += 1;
                let ours_m = gauss::project_mean_row(&m, &mo, &ours_l, eps_mean);
                assert!(mean_con(&ours_m) <= eps_mean * (1.0 + 1e-12), "{label}");
                let (arg_m, best_m) = boundary_argmin(&mo, eps_mean, &mean_con, &mean_obj);
                assert!(
                    best_m >= mean_obj(&ours_m) - 1e-12,
                    "{label}: mean objective"
                );
                let half = 2.0
                    * (2.0 * eps_mean).sqrt()
                    * ours_l.iter().map(|x| x.exp()).fold(0.0, f64::max);
                let random = random_feasible_min(&mut r, &mo, half, eps_mean, &mean_con, &mean_obj);
                assert!(
                    random >= mean_obj(&ours_m) - 1e-12,
                    "{label}: mean objective"
                );
                let err_m = max_abs_diff(&arg_m, &ours_m);
                assert!(err_m <= 1e-4, "{label}: μ̃ {ours_m:?} vs {arg_m:?}");
                worst_arg = worst_arg.max(err_l).max(err_m);
            }
        }
    }
    eprintln!(
        "gaussian: 16 variance and {mean_cases} mean cases: max |(μ̃, log σ̃) − oracle argmin| = {worst_arg:e}"
    );
    assert!(mean_cases >= 10, "{mean_cases}");
}

// ---------------------------------------------------------- 4. gradients

/// Central differences of `f` at `x` in the coordinates `which`.
fn central_diff(f: impl Fn(&[f64]) -> f64, x: &[f64], which: &[usize], h: f64) -> Vec<f64> {
    which
        .iter()
        .map(|&i| {
            let mut p = x.to_vec();
            p[i] += h;
            let mut m = x.to_vec();
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn categorical_vjp_matches_finite_differences() {
    let mut r = rng(500);
    let (n, a, eps) = (18, 4, 0.05);
    let proj = KlProjection::new(eps).expect("projection");
    let (raw, old) = categorical_case(&mut r, n, a, 2.0);
    let mask = random_mask(&mut r, n, a);
    let old_d = cat_dist(&old, a, Some(&mask), DType::F64);
    let cot = gaussian_vec(&mut r, n * a, 1.0);
    // L(z) = Σ c ⊙ y(z) over the projected logits y
    // (over the legal outputs only: the masked ones, ≈ −10⁹, are constant
    // under the perturbations below and would drown them in rounding)
    let loss_of = |z: &[f64]| -> f64 {
        let p = proj
            .project(&cat_dist(z, a, Some(&mask), DType::F64), &old_d)
            .expect("project");
        values(as_cat(&p).logits())
            .iter()
            .zip(&cot)
            .zip(mask.legal())
            .map(|((y, c), &legal)| if legal { y * c } else { 0.0 })
            .sum()
    };
    let z = Var::from_tensor(&tensor(&raw, &[n, a], DType::F64)).expect("var");
    let new_d = Dist::Categorical(Categorical::from_logits(z.as_tensor(), Some(&mask)).expect("c"));
    let p = proj.project(&new_d, &old_d).expect("project");
    let loss = (as_cat(&p).logits() * tensor(&cot, &[n, a], DType::F64))
        .and_then(|x| x.sum_all())
        .expect("loss");
    let grad = values(
        &loss
            .backward()
            .expect("backward")
            .get(z.as_tensor())
            .expect("grad")
            .clone(),
    );
    let legal: Vec<usize> = (0..n * a).filter(|&i| mask.legal()[i]).collect();
    let fd = central_diff(loss_of, &raw, &legal, 1e-5);
    let before = kl_rows(&old_d_logits(&old_d), &values(as_cat(&new_d).logits()), a);
    let mut max_err: f64 = 0.0;
    for (k, &i) in legal.iter().enumerate() {
        let err = (grad[i] - fd[k]).abs();
        max_err = max_err.max(err);
        assert!(
            err <= 1e-6 * (1.0 + fd[k].abs()),
            "logit {i}: {} vs {}",
            grad[i],
            fd[k]
        );
    }
    // masked inputs: zero gradient at projected states, the cotangent (y = z) at the others
    for i in (0..n * a).filter(|&i| !mask.legal()[i]) {
        let expected = if before[i / a] > eps { 0.0 } else { cot[i] };
        assert_eq!(grad[i], expected, "masked logit {i}");
    }
    let active = before.iter().filter(|&&k| k > eps).count();
    assert!(
        active >= 4 && active <= n - 4,
        "{active} of {n} states projected"
    );
    eprintln!("categorical VJP: {active}/{n} states projected, max |VJP − FD| = {max_err:e}");
}

fn old_d_logits(d: &Dist) -> Vec<f64> {
    values(as_cat(d).logits())
}

#[test]
fn gaussian_vjp_matches_finite_differences() {
    let mut r = rng(501);
    let (n, d, eps) = (15, 3, 0.05);
    let proj = KlProjection::new(eps)
        .and_then(|p| p.with_cov_frac(0.4))
        .expect("projection");
    for ls_move in [0.0, 0.7] {
        let (mean, ls, old_mean, old_ls) = gaussian_case(&mut r, n, d, 2.0, ls_move);
        let old_d = gauss_dist(&old_mean, &old_ls, DType::F64);
        let c_mean = gaussian_vec(&mut r, n * d, 1.0);
        let c_ls = gaussian_vec(&mut r, d, 1.0);
        // L(μ, log σ) = Σ c_μ ⊙ μ̃ + Σ c_σ ⊙ log σ̃, x = (μ, log σ) flattened
        let loss_of = |x: &[f64]| -> f64 {
            let p = proj
                .project(&gauss_dist(&x[..n * d], &x[n * d..], DType::F64), &old_d)
                .expect("project");
            let pg = as_gauss(&p);
            values(pg.mean())
                .iter()
                .zip(&c_mean)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + values(pg.log_std())
                    .iter()
                    .zip(&c_ls)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
        };
        let mv = Var::from_tensor(&tensor(&mean, &[n, d], DType::F64)).expect("var");
        let lv = Var::from_tensor(&tensor(&ls, &[d], DType::F64)).expect("var");
        let new_d =
            Dist::DiagGaussian(DiagGaussian::new(mv.as_tensor(), lv.as_tensor()).expect("g"));
        let p = proj.project(&new_d, &old_d).expect("project");
        let pg = as_gauss(&p);
        let loss = (pg.mean() * tensor(&c_mean, &[n, d], DType::F64))
            .and_then(|x| x.sum_all())
            .and_then(|x| x + (pg.log_std() * tensor(&c_ls, &[d], DType::F64))?.sum_all()?)
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let mut grad = values(grads.get(mv.as_tensor()).expect("mean grad"));
        grad.extend(values(grads.get(lv.as_tensor()).expect("log_std grad")));
        let x: Vec<f64> = mean.iter().chain(&ls).copied().collect();
        let all: Vec<usize> = (0..x.len()).collect();
        let fd = central_diff(loss_of, &x, &all, 1e-5);
        let max_err = grad
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0, f64::max);
        let var_active = values(pg.log_std()) != ls;
        let means_active = (0..n)
            .filter(|&s| values(pg.mean())[s * d..(s + 1) * d] != mean[s * d..(s + 1) * d])
            .count();
        eprintln!(
            "gaussian VJP (variance projected: {var_active}, means projected: {means_active}/{n}): max rel |VJP − FD| = {max_err:e}"
        );
        assert!(max_err <= 1e-6, "{grad:?} vs {fd:?}");
        assert_eq!(var_active, ls_move > 0.0);
        assert!(means_active >= 3 && means_active <= n - 3);
    }
}

/// A loss of the projected distributions as an optimiser would build it:
/// the importance-weighted surrogate, an entropy bonus and the paper's
/// regression term `KL(π̃ ‖ π_θ)` (here without stop-gradient, so that
/// gradients reach θ both through the projection and directly).
fn projected_loss(
    proj: &Dist,
    dist: &Dist,
    actions: &Tensor,
    old_lp: &Tensor,
    adv: &Tensor,
) -> Tensor {
    let surrogate = (proj.log_prob(actions).expect("log_prob") - old_lp)
        .and_then(|x| x.exp())
        .and_then(|r| r * adv)
        .and_then(|x| x.mean_all())
        .expect("surrogate");
    let entropy = proj
        .entropy()
        .expect("entropy")
        .mean_all()
        .expect("mean entropy");
    let regression = proj.kl(dist).expect("kl").mean_all().expect("mean kl");
    (surrogate.neg().expect("neg") - entropy.affine(0.01, 0.0).expect("H"))
        .and_then(|x| x + regression.affine(0.5, 0.0)?)
        .expect("loss")
}

/// The gradient through `dist_with_pullback` → projection → loss equals
/// central differences of the loss in the flat parameters.
fn check_pullback<P: Policy>(
    policy: &mut P,
    mask: Option<&ActionMask>,
    seed: u64,
    choose: impl Fn(&Dist, &Dist) -> KlProjection,
    label: &str,
) {
    let mut r = rng(seed);
    let obs = observations(&mut r, DType::F64);
    let old = policy.dist(&obs, mask).expect("old").detach();
    let actions = old
        .sample(&mut r)
        .and_then(|a| a.to_tensor(DType::F64, &Device::Cpu))
        .expect("actions");
    let old_lp = old.log_prob(&actions).expect("old log_prob");
    let adv =
        Tensor::from_vec(gaussian_vec(&mut r, N_STATES, 1.0), N_STATES, &Device::Cpu).expect("adv");
    let theta: Vec<f64> = policy
        .get_flat()
        .expect("flat")
        .iter()
        .zip(gaussian_vec(&mut r, policy.num_params(), 0.3))
        .map(|(a, b)| a + b)
        .collect();
    policy.set_flat(&theta).expect("move");
    let proj = choose(&policy.dist(&obs, mask).expect("dist"), &old);

    let (dist, pullback) = policy.dist_with_pullback(&obs, mask).expect("pullback");
    let projected = proj.project(&dist, &old).expect("project");
    let loss = projected_loss(&projected, &dist, &actions, &old_lp, &adv);
    let ours = pullback
        .flat_grad(&loss.backward().expect("backward"))
        .expect("flat grad");

    let loss_at = |policy: &mut P, th: &[f64]| -> f64 {
        policy.set_flat(th).expect("set");
        let d = policy.dist(&obs, mask).expect("dist");
        let p = proj.project(&d, &old).expect("project");
        projected_loss(&p, &d, &actions, &old_lp, &adv)
            .to_scalar::<f64>()
            .expect("scalar")
    };
    let h = 1e-5;
    let fd: Vec<f64> = (0..theta.len())
        .map(|k| {
            let mut p = theta.clone();
            p[k] += h;
            let mut m = theta.clone();
            m[k] -= h;
            (loss_at(policy, &p) - loss_at(policy, &m)) / (2.0 * h)
        })
        .collect();
    policy.set_flat(&theta).expect("restore");
    let e = rel_err(&ours, &fd);
    eprintln!("{label}: ‖pullback − FD‖/‖FD‖ = {e:e}");
    assert!(e <= 1e-6, "{label}: relative error {e:e}");
    assert!(norm(&fd) > 1e-3, "{label}: degenerate gradient");
}

#[test]
fn pullback_gradient_through_the_categorical_projection_matches_finite_differences() {
    let mut p = categorical(Activation::Tanh, 21);
    let m = mask(7);
    // ε between two well-separated per-state KLs: about half the states projected
    let choose = |new: &Dist, old: &Dist| {
        let kl = values(&old.kl(new).expect("kl"));
        let eps = split_between(&kl);
        let n_active = kl.iter().filter(|&&k| k > eps).count();
        eprintln!(
            "categorical: ε = {eps:.4}, {n_active}/{} states projected",
            kl.len()
        );
        KlProjection::new(eps).expect("projection")
    };
    check_pullback(&mut p, Some(&m), 8, choose, "masked categorical");
}

#[test]
fn pullback_gradient_through_the_gaussian_projection_matches_finite_differences() {
    let mut p = gaussian(Activation::Tanh, 22);
    // ε_Σ half the variance part (projected); ε_μ between two mean parts
    let choose = |new: &Dist, old: &Dist| {
        let (g, o) = (as_gauss(new), as_gauss(old));
        let (ls, ols) = (values(g.log_std()), values(o.log_std()));
        let eps_cov = 0.5 * gauss::variance_part(&ls, &ols);
        let ls_tilde = gauss::project_log_std(&ls, &ols, eps_cov * (1.0 - 1e-4)).log_std;
        let (m, mo) = (values(g.mean()), values(o.mean()));
        let d = ls.len();
        let parts: Vec<f64> = m
            .chunks(d)
            .zip(mo.chunks(d))
            .map(|(a, b)| gauss::mean_part(a, b, &ls_tilde))
            .collect();
        let eps_mean = split_between(&parts);
        let n_active = parts.iter().filter(|&&k| k > eps_mean).count();
        eprintln!(
            "gaussian: ε_Σ = {eps_cov:.4}, ε_μ = {eps_mean:.4}, {n_active}/{} means projected",
            parts.len()
        );
        KlProjection::new(eps_cov + eps_mean)
            .and_then(|p| p.with_cov_frac(eps_cov / (eps_cov + eps_mean)))
            .expect("projection")
    };
    check_pullback(&mut p, None, 9, choose, "gaussian");
}

/// A value between two consecutive sorted entries of `v` in its middle half,
/// at the widest relative gap (so no state sits near the boundary).
fn split_between(v: &[f64]) -> f64 {
    // states with a single legal action have KL 0 and are never projected
    let mut s: Vec<f64> = v.iter().copied().filter(|&x| x > 1e-9).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let k = (n / 4..3 * n / 4)
        .max_by(|&i, &j| (s[i] / s[i - 1]).total_cmp(&(s[j] / s[j - 1])))
        .expect("non-empty");
    assert!(s[k] / s[k - 1] > 1.01, "no gap in {s:?}");
    (s[k] * s[k - 1]).sqrt()
}

// -------------------------------------------------------------- 5. errors

#[test]
fn bad_parameters_and_inputs_are_typed_errors() {
    let c = |z: &[f64], a: usize| cat_dist(z, a, None, DType::F32);
    let g = |m: &[f64], l: &[f64]| gauss_dist(m, l, DType::F32);
    let cat2 = c(&[0.0, 1.0, 2.0, 3.0], 2);
    let gau = g(&[0.0, 1.0], &[0.0, 0.0]);
    let ok = KlProjection::new(0.01).expect("valid");

    for bad in [
        KlProjection { eps: 0.0, ..ok },
        KlProjection { eps: -1.0, ..ok },
        KlProjection {
            eps: f64::NAN,
            ..ok
        },
        KlProjection {
            eps: f64::INFINITY,
            ..ok
        },
    ] {
        let e = bad.project(&cat2, &cat2).expect_err("bad eps");
        assert!(
            matches!(e, PolicyError::InvalidParameter { param: "eps", .. }),
            "{e}"
        );
    }
    for cov_frac in [0.0, 1.0, 1.5, f64::NAN] {
        let e = KlProjection { cov_frac, ..ok }
            .project(&gau, &gau)
            .expect_err("bad cov_frac");
        assert!(
            matches!(
                e,
                PolicyError::InvalidParameter {
                    param: "cov_frac",
                    ..
                }
            ),
            "{e}"
        );
    }
    assert!(KlProjection::new(-0.5).is_err());
    assert!(ok.with_cov_frac(2.0).is_err());

    let mismatches = [
        (cat2.clone(), gau.clone()),
        (gau.clone(), cat2.clone()),
        (cat2.clone(), c(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 3)),
        (cat2.clone(), c(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 2)),
        (gau.clone(), g(&[0.0, 1.0, 2.0], &[0.0, 0.0, 0.0])),
        (gau.clone(), g(&[0.0, 1.0, 2.0, 3.0], &[0.0, 0.0])),
    ];
    for (new, old) in &mismatches {
        let e = ok.project(new, old).expect_err("mismatch");
        assert!(matches!(e, PolicyError::Mismatch { .. }), "{e}");
    }

    let non_finite = [
        (c(&[0.0, f64::NAN, 2.0, 3.0], 2), cat2.clone(), "new logits"),
        (
            cat2.clone(),
            c(&[0.0, 1.0, f64::INFINITY, 3.0], 2),
            "old logits",
        ),
        (
            g(&[0.0, f64::INFINITY], &[0.0, 0.0]),
            gau.clone(),
            "new mean",
        ),
        (g(&[0.0, 1.0], &[f64::NAN, 0.0]), gau.clone(), "new log_std"),
        (gau.clone(), g(&[f64::NAN, 1.0], &[0.0, 0.0]), "old mean"),
        (
            gau.clone(),
            g(&[0.0, 1.0], &[0.0, f64::NEG_INFINITY]),
            "old log_std",
        ),
    ];
    for (new, old, what) in &non_finite {
        let e = ok.project(new, old).expect_err("non-finite");
        assert!(
            matches!(&e, PolicyError::NonFinite { what: w, .. } if w.ends_with(what)),
            "{what}: {e}"
        );
    }

    // masked logits are finite and fine; so is an empty Gaussian batch
    let m = ActionMask::new(vec![true, false, true, true], 2).expect("mask");
    let masked = cat_dist(&[0.0, 1.0, 2.0, 3.0], 2, Some(&m), DType::F32);
    assert!(ok.project(&masked, &masked).is_ok());
    assert!(values(as_cat(&masked).logits())[1] <= MASKED_LOGIT + 10.0);
    let empty_g = g(&[], &[0.0, 0.0]);
    assert_eq!(
        ok.project(&empty_g, &empty_g).expect("empty").batch_size(),
        0
    );
}

#[test]
fn old_of_another_dtype_is_accepted_and_new_sets_the_output_dtype() {
    let new = cat_dist(&[2.0, -1.0, 0.5], 3, None, DType::F32);
    let old = cat_dist(&[0.0, 0.0, 0.0], 3, None, DType::F64);
    let p = KlProjection::new(0.02)
        .expect("valid")
        .project(&new, &old)
        .expect("project");
    assert_eq!(as_cat(&p).logits().dtype(), DType::F32);
    let k = kl_rows(&[0.0, 0.0, 0.0], &values(as_cat(&p).logits()), 3)[0];
    assert!(k <= 0.02 && k > 0.0199, "{k}");
}

/// A per-state σ (gSDE with learned features, the state-dependent log-std
/// head): every state's KL(π_old ‖ π̃) is within ε (recomputed here), no
/// state inside ε moves away from π_old, and the gradient through
/// `dist_with_pullback` → projection → loss matches finite differences.
/// (gSDE with detached features has no finite-difference oracle: its
/// gradient treats the features in the variance as constants.)
#[test]
fn per_state_sigma_is_projected_state_by_state() {
    use klrl_policy::{GaussianStd, GsdeConfig};
    let kinds = [
        (
            GaussianStd::Gsde(GsdeConfig {
                full_std: true,
                use_expln: false,
                learn_features: true,
            }),
            "gsde learn_features",
        ),
        (GaussianStd::StateDependent, "state-dependent head"),
    ];
    for (i, (std, name)) in kinds.into_iter().enumerate() {
        let choose = |new: &Dist, old: &Dist| {
            let kl = values(&old.kl(new).expect("kl"));
            let eps = split_between(&kl);
            // the bound, state by state
            let proj = KlProjection::new(eps)
                .and_then(|p| p.with_cov_frac(0.3))
                .expect("projection");
            let p = proj.project(new, old).expect("project");
            let after = values(&old.kl(&p).expect("kl"));
            // (the decoupled projection also moves a state inside the total ε
            // whose variance part alone is above cov_frac · ε)
            let mut projected = 0;
            for (s, (&b, &a)) in kl.iter().zip(&after).enumerate() {
                assert!(a <= eps * (1.0 + 1e-9), "state {s}: {a} > {eps}");
                assert!(b > eps || a <= b, "state {s}: moved away, {b} → {a}");
                projected += usize::from(a != b);
            }
            assert!(projected >= 3 && projected <= kl.len() - 3, "{projected}");
            eprintln!(
                "{name}: ε = {eps:.4}, {projected}/{} states projected",
                kl.len()
            );
            proj
        };
        let mut p = gaussian_with(Activation::Tanh, std, 30 + i as u64);
        check_pullback(&mut p, None, 40 + i as u64, choose, name);
    }
}
