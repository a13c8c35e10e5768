//! The one-dimensional root finder both projections share: the multiplier
//! of the active KL constraint, as a mixing weight `w ∈ [0, 1]`.
//!
//! Both projections reduce to `g(w) = radius` for a continuous `g` that
//! decreases from `g(0) > radius` to `g(1) = 0` (the categorical `f(t)` of
//! [`super::categorical`] and the variance part `V(w)` of
//! [`super::gaussian`]). `g` may be `+∞` at `w = 0` (a categorical π that is
//! 0 where π_old is not). Newton steps are taken while they stay inside the
//! bracket `[lo, hi]` that holds the root; otherwise the bracket is bisected.

/// Relative tolerance on `g(w) − radius` at which the root is accepted.
///
/// The projections aim at a radius below ε by [`super::REL_MARGIN`] (10⁻⁴
/// relative), so a root accurate to 10⁻¹⁰ never crosses ε.
const REL_TOL: f64 = 1e-10;

/// Iteration cap: bisection alone would reach machine precision in ~60.
const MAX_ITER: usize = 200;

/// The `w ∈ (0, 1]` with `g(w) = radius`, within [`REL_TOL`].
///
/// - `g`: returns `(g(w), g'(w))`; decreasing on `[0, 1]`, `g(0) > radius`
///   (may be `+∞`), `g(1) = 0`.
/// - `radius`: the target value, `> 0`.
///
/// When the tolerance cannot be met (rounding in `g` larger than
/// `REL_TOL · radius`), returns the end of the final bracket on the feasible
/// side (`g(w) ≤ radius`), so the result never violates the constraint by
/// more than the tolerance.
pub(crate) fn solve_decreasing(g: impl Fn(f64) -> (f64, f64), radius: f64) -> f64 {
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    let (g0, dg0) = g(0.0);
    // Newton from w = 0 when g is finite there; otherwise start mid-bracket.
    let mut w = newton_or_bisect(0.0, g0 - radius, dg0, lo, hi);
    for _ in 0..MAX_ITER {
        let (gw, dgw) = g(w);
        let r = gw - radius;
        if r.abs() <= REL_TOL * radius {
            return w;
        }
        if r > 0.0 {
            lo = w;
        } else {
            hi = w;
        }
        if hi - lo <= 4.0 * f64::EPSILON * hi {
            break;
        }
        w = newton_or_bisect(w, r, dgw, lo, hi);
    }
    hi
}

/// `ln((1 − w)·e^δ + w)`: the log of a two-point mixture with weights
/// `1 − w` and `w` of `e^δ` and 1, for `δ ∈ [−∞, ∞)` and `w ∈ [0, 1]`.
///
/// Both projections mix the new and the old distribution and need the log
/// of the mixed value relative to the old one: `ln(q_a / π_old,a)` with
/// `δ = ln(π_a / π_old,a)` (categorical), `ln(σ̃²/σ_old²)` with
/// `δ = ln(σ²/σ_old²)` (Gaussian). Near `δ = 0` it is `ln1p((1 − w)·expm1 δ)`,
/// accurate when the mixture is close to 1 (KLs of order ε ≪ 1 are sums of
/// such values); for larger `|δ|` a log-sum-exp, which cannot overflow and
/// keeps the relative accuracy of tiny mixtures.
pub(crate) fn log_mix(delta: f64, w: f64) -> f64 {
    if delta.abs() <= 1.0 {
        // the mixture lies in [e^−1, e]: no cancellation in 1 + (1 − w)(e^δ − 1)
        ((1.0 - w) * delta.exp_m1()).ln_1p()
    } else {
        // ln(e^a + e^b), a = ln(1 − w) + δ, b = ln w: no overflow for large δ,
        // full relative accuracy of tiny mixtures for very negative δ
        let a = (-w).ln_1p() + delta;
        let b = w.ln();
        let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
        if hi == f64::NEG_INFINITY {
            return hi;
        }
        hi + (lo - hi).exp().ln_1p()
    }
}

/// The Newton step from `w` (residual `r`, slope `dg`) if it lands strictly
/// inside `(lo, hi)`, else the bracket's midpoint.
fn newton_or_bisect(w: f64, r: f64, dg: f64, lo: f64, hi: f64) -> f64 {
    let next = w - r / dg;
    if r.is_finite() && dg.is_finite() && dg < 0.0 && next > lo && next < hi {
        next
    } else {
        0.5 * (lo + hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_mix_matches_the_direct_formula() {
        for &delta in &[
            f64::NEG_INFINITY,
            -30.0,
            -1.0,
            -1e-9,
            0.0,
            1e-9,
            0.5,
            1.0,
            1.5,
            40.0,
            800.0,
        ] {
            for &w in &[0.0, 1e-12, 0.3, 0.999, 1.0] {
                let got = log_mix(delta, w);
                let direct = ((1.0 - w) * delta.exp() + w).ln();
                let tol = 1e-12 * direct.abs().max(1.0);
                if direct.is_finite() {
                    assert!(
                        (got - direct).abs() <= tol,
                        "δ {delta} w {w}: {got} vs {direct}"
                    );
                } else if delta < 700.0 {
                    assert_eq!(got, direct, "δ {delta} w {w}");
                } else {
                    // e^800 overflows the direct formula; log_mix stays finite
                    assert!((got - ((1.0 - w).ln() + delta)).abs() <= 1e-9 || w == 1.0);
                }
            }
        }
        // tiny mixtures keep their relative accuracy
        let x = log_mix(1e-12, 0.5);
        assert!((x - 0.5e-12).abs() <= 1e-24, "{x}");
    }

    #[test]
    fn finds_the_root_of_a_convex_decreasing_function() {
        // g(w) = (1 − w)², root of g = 0.25 at w = 0.5
        let w = solve_decreasing(|w| ((1.0 - w).powi(2), -2.0 * (1.0 - w)), 0.25);
        assert!((w - 0.5).abs() < 1e-9, "{w}");
    }

    #[test]
    fn survives_an_infinite_start_and_a_non_convex_function() {
        // g(w) = −ln w (infinite at 0), root of g = 0.1 at w = e^−0.1
        let w = solve_decreasing(|w| (-w.ln(), -1.0 / w), 0.1);
        assert!((w - (-0.1f64).exp()).abs() < 1e-9, "{w}");
        // g(w) = cos(πw/2)³ is concave then convex; root of g = 0.3
        let g = |w: f64| {
            let c = (std::f64::consts::FRAC_PI_2 * w).cos();
            let s = (std::f64::consts::FRAC_PI_2 * w).sin();
            (c.powi(3), -3.0 * c * c * s * std::f64::consts::FRAC_PI_2)
        };
        let w = solve_decreasing(g, 0.3);
        assert!((g(w).0 - 0.3).abs() <= 1e-10 * 0.3, "{w}");
    }

    #[test]
    fn a_flat_function_ends_on_the_feasible_side() {
        // rounding noise larger than the tolerance: the answer satisfies g ≤ radius
        let g = |w: f64| (1e-3 * (1.0 - w) + if w < 0.7 { 1e-30 } else { 0.0 }, -1e-3);
        let w = solve_decreasing(g, 1e-3 * 0.3);
        assert!(g(w).0 <= 1e-3 * 0.3 * (1.0 + 1e-10), "{w}");
    }
}
