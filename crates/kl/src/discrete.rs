//! Divergences between discrete distributions on the same finite set
//! {0, …, n−1}: entropy, cross-entropy, KL and Jensen–Shannon.
//!
//! Every function accepts non-negative finite *weights* (counts are fine) and
//! normalises them by their sum before use, so `[3, 5, 2]` and `[0.3, 0.5, 0.2]`
//! are the same distribution. Terms follow the conventions of
//! Cover & Thomas, *Elements of Information Theory* (2nd ed., §2.1–2.3):
//! 0·log 0 = 0, 0·log(0/q) = 0, and p·log(p/0) = +∞ for p > 0. An infinite
//! divergence is returned as `f64::INFINITY`, never clipped; smoothing is an
//! explicit, opt-in step ([`smooth`]).

use crate::error::{InputProblem, KlError};

/// The unit of an information quantity: natural logarithm (nats) or base 2 (bits).
///
/// Every function in this crate returns nats; convert with [`Base::from_nats`]
/// or [`to_bits`]. Default: [`Base::Nats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Base {
    /// Natural logarithm; the unit is the nat. The default.
    #[default]
    Nats,
    /// Base-2 logarithm; the unit is the bit (1 bit = ln 2 nats).
    Bits,
}

impl Base {
    /// Convert a quantity in nats to this unit: `x` for nats, `x / ln 2` for bits.
    /// Infinity stays infinity.
    pub fn from_nats(self, nats: f64) -> f64 {
        match self {
            Base::Nats => nats,
            Base::Bits => to_bits(nats),
        }
    }

    /// The unit's name: `"nats"` or `"bits"`.
    pub fn unit(self) -> &'static str {
        match self {
            Base::Nats => "nats",
            Base::Bits => "bits",
        }
    }
}

/// Convert nats to bits: bits = nats / ln 2.
pub fn to_bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// Normalise non-negative weights to a probability vector: pᵢ = wᵢ / Σⱼ wⱼ.
///
/// `weights`: finite values ≥ 0 with a positive sum (counts or probabilities).
///
/// # Errors
/// [`InputProblem::Empty`] for an empty slice, [`InputProblem::NotFinite`] for
/// NaN or ±∞, [`InputProblem::Negative`] for a value below zero (−0.0 is
/// accepted as zero), [`InputProblem::AllZero`] when every weight is zero.
/// The first offending index is reported.
pub fn normalize(weights: &[f64]) -> Result<Vec<f64>, InputProblem> {
    if weights.is_empty() {
        return Err(InputProblem::Empty);
    }
    for (index, &value) in weights.iter().enumerate() {
        if !value.is_finite() {
            return Err(InputProblem::NotFinite { index, value });
        }
        if value < 0.0 {
            return Err(InputProblem::Negative { index, value });
        }
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(InputProblem::AllZero);
    }
    // A sum of finite values can still overflow (e.g. two copies of f64::MAX);
    // scaling first keeps the ratios exact enough and finite.
    if !total.is_finite() {
        let max = weights.iter().cloned().fold(0.0, f64::max);
        let scaled: Vec<f64> = weights.iter().map(|w| w / max).collect();
        let total: f64 = scaled.iter().sum();
        return Ok(scaled.into_iter().map(|w| w / total).collect());
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

/// Normalise the pair `p`, `q` and check that they have the same length.
fn normalize_pair(p: &[f64], q: &[f64]) -> Result<(Vec<f64>, Vec<f64>), KlError> {
    let p = normalize(p).map_err(KlError::invalid("p"))?;
    let q = normalize(q).map_err(KlError::invalid("q"))?;
    KlError::check_len("p", p.len(), "q", q.len())?;
    Ok((p, q))
}

/// One term of the relative entropy, x·ln(x/y), with 0·ln(0/y) = 0 and
/// x·ln(x/0) = +∞ for x > 0 (the same convention as `scipy.special.rel_entr`).
fn rel_entr(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y == 0.0 {
        f64::INFINITY
    } else {
        x * (x / y).ln()
    }
}

/// H(P) on already-normalised input.
fn entropy_normalized(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| x * x.ln())
        .sum::<f64>()
}

/// H(P, Q) on already-normalised input of equal length.
fn cross_entropy_normalized(p: &[f64], q: &[f64]) -> f64 {
    let mut sum = 0.0;
    for (&x, &y) in p.iter().zip(q) {
        if x == 0.0 {
            continue;
        }
        if y == 0.0 {
            return f64::INFINITY;
        }
        sum -= x * y.ln();
    }
    sum
}

/// KL(P‖Q) on already-normalised input of equal length.
pub(crate) fn kl_normalized(p: &[f64], q: &[f64]) -> f64 {
    let kl: f64 = p.iter().zip(q).map(|(&x, &y)| rel_entr(x, y)).sum();
    // Gibbs' inequality makes the exact value ≥ 0; rounding can leave a tiny
    // negative sum when P ≈ Q.
    kl.max(0.0)
}

/// JS(P, Q) on already-normalised input of equal length.
fn js_normalized(p: &[f64], q: &[f64]) -> f64 {
    let m: Vec<f64> = p.iter().zip(q).map(|(x, y)| 0.5 * (x + y)).collect();
    let js = 0.5 * kl_normalized(p, &m) + 0.5 * kl_normalized(q, &m);
    // Rounding can push a true zero a hair below it.
    js.max(0.0)
}

/// Shannon entropy in nats: H(P) = −Σᵢ pᵢ ln pᵢ, with 0·ln 0 = 0.
///
/// `p`: non-negative weights, normalised by their sum.
/// Ranges over [0, ln n]; 0 for a point mass, ln n for the uniform distribution.
///
/// # Errors
/// [`KlError::Invalid`] with `arg = "p"` (see [`normalize`]).
pub fn entropy(p: &[f64]) -> Result<f64, KlError> {
    let p = normalize(p).map_err(KlError::invalid("p"))?;
    Ok(entropy_normalized(&p))
}

/// Cross-entropy in nats: H(P, Q) = −Σᵢ pᵢ ln qᵢ = H(P) + KL(P‖Q).
///
/// Terms with pᵢ = 0 contribute 0; pᵢ > 0 with qᵢ = 0 makes the result +∞.
/// `p`, `q`: non-negative weights of equal length, each normalised by its sum.
///
/// # Errors
/// [`KlError::Invalid`] for a bad `p` or `q`, [`KlError::LengthMismatch`] when
/// the lengths differ.
pub fn cross_entropy(p: &[f64], q: &[f64]) -> Result<f64, KlError> {
    let (p, q) = normalize_pair(p, q)?;
    Ok(cross_entropy_normalized(&p, &q))
}

/// Kullback–Leibler divergence in nats: KL(P‖Q) = Σᵢ pᵢ ln(pᵢ / qᵢ)
/// (Kullback & Leibler 1951; Cover & Thomas eq. 2.26).
///
/// KL ≥ 0 with equality iff P = Q (Gibbs' inequality). It is not symmetric: for
/// KL(Q‖P) swap the arguments, or use [`DiscreteComparison`] for both directions.
/// Terms with pᵢ = 0 contribute 0; pᵢ > 0 with qᵢ = 0 makes the result
/// `f64::INFINITY` (Q rules out an outcome P allows). To get a finite number on
/// such input, [`smooth`] Q explicitly first.
///
/// `p`, `q`: non-negative weights of equal length, each normalised by its sum.
///
/// # Errors
/// [`KlError::Invalid`] for a bad `p` or `q`, [`KlError::LengthMismatch`] when
/// the lengths differ.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> Result<f64, KlError> {
    let (p, q) = normalize_pair(p, q)?;
    Ok(kl_normalized(&p, &q))
}

/// Jensen–Shannon divergence in nats (Lin 1991):
/// JS(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M), with M = ½(P + Q).
///
/// Symmetric, always finite, and bounded: 0 ≤ JS ≤ ln 2 (1 bit). Note that
/// `scipy.spatial.distance.jensenshannon` returns the Jensen–Shannon *distance*
/// √JS, not the divergence.
///
/// `p`, `q`: non-negative weights of equal length, each normalised by its sum.
///
/// # Errors
/// [`KlError::Invalid`] for a bad `p` or `q`, [`KlError::LengthMismatch`] when
/// the lengths differ.
pub fn js_divergence(p: &[f64], q: &[f64]) -> Result<f64, KlError> {
    let (p, q) = normalize_pair(p, q)?;
    Ok(js_normalized(&p, &q))
}

/// Additive (Laplace / Lidstone) smoothing: normalise `p`, then
/// p̃ᵢ = (pᵢ + ε) / (1 + n ε), where n is the number of outcomes.
///
/// Every outcome gets probability at least ε / (1 + nε) > 0 for ε > 0, so
/// KL(P‖smooth(Q, ε)) is finite. The result depends on ε (it is a different
/// distribution); report ε with any number computed from it. ε = 0 returns the
/// normalised input unchanged.
///
/// `p`: non-negative weights; `eps`: the pseudo-probability added to every
/// outcome, finite and ≥ 0 (no default; 1e-10 leaves non-zero entries almost
/// untouched, 1/n-scale values express a strong prior).
///
/// # Errors
/// [`KlError::Invalid`] with `arg = "p"` for bad weights, or `arg = "eps"` and
/// [`InputProblem::InvalidEpsilon`] for a negative or non-finite ε.
pub fn smooth(p: &[f64], eps: f64) -> Result<Vec<f64>, KlError> {
    if !eps.is_finite() || eps < 0.0 {
        return Err(KlError::Invalid {
            arg: "eps",
            problem: InputProblem::InvalidEpsilon { value: eps },
        });
    }
    let p = normalize(p).map_err(KlError::invalid("p"))?;
    let denom = 1.0 + p.len() as f64 * eps;
    Ok(p.into_iter().map(|x| (x + eps) / denom).collect())
}

/// Both directions of KL between two discrete distributions, with the
/// entropies and Jensen–Shannon divergence, in one unit: the summary `klrl kl
/// discrete` prints.
///
/// Identities that hold between the fields (up to rounding):
/// H(P,Q) = H(P) + KL(P‖Q), H(Q,P) = H(Q) + KL(Q‖P).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteComparison {
    /// P normalised to sum to 1.
    pub p: Vec<f64>,
    /// Q normalised to sum to 1.
    pub q: Vec<f64>,
    /// KL(P‖Q) = Σ pᵢ log(pᵢ/qᵢ); may be +∞.
    pub kl_pq: f64,
    /// KL(Q‖P) = Σ qᵢ log(qᵢ/pᵢ); may be +∞.
    pub kl_qp: f64,
    /// JS(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = ½(P+Q); finite, ≤ 1 bit.
    pub js: f64,
    /// H(P) = −Σ pᵢ log pᵢ.
    pub entropy_p: f64,
    /// H(Q) = −Σ qᵢ log qᵢ.
    pub entropy_q: f64,
    /// H(P,Q) = −Σ pᵢ log qᵢ; may be +∞.
    pub cross_entropy_pq: f64,
    /// H(Q,P) = −Σ qᵢ log pᵢ; may be +∞.
    pub cross_entropy_qp: f64,
    /// The unit every quantity above is expressed in.
    pub base: Base,
}

impl DiscreteComparison {
    /// Compute every field for weights `p` and `q` (normalised by their sums) in
    /// unit `base` ([`Base::Nats`] by default convention).
    ///
    /// # Errors
    /// [`KlError::Invalid`] for a bad `p` or `q`, [`KlError::LengthMismatch`]
    /// when the lengths differ.
    pub fn new(p: &[f64], q: &[f64], base: Base) -> Result<Self, KlError> {
        let (p, q) = normalize_pair(p, q)?;
        let b = |x: f64| base.from_nats(x);
        Ok(DiscreteComparison {
            kl_pq: b(kl_normalized(&p, &q)),
            kl_qp: b(kl_normalized(&q, &p)),
            js: b(js_normalized(&p, &q)),
            entropy_p: b(entropy_normalized(&p)),
            entropy_q: b(entropy_normalized(&q)),
            cross_entropy_pq: b(cross_entropy_normalized(&p, &q)),
            cross_entropy_qp: b(cross_entropy_normalized(&q, &p)),
            p,
            q,
            base,
        })
    }

    /// The outcome contributing most to KL(P‖Q), as `(index, contribution)`
    /// with contribution pᵢ log(pᵢ/qᵢ) in this comparison's unit; the first
    /// infinite term if there is one. Used to explain the asymmetry.
    pub fn largest_term_pq(&self) -> (usize, f64) {
        largest_term(&self.p, &self.q, self.base)
    }

    /// The outcome contributing most to KL(Q‖P), as `(index, contribution)`;
    /// see [`DiscreteComparison::largest_term_pq`].
    pub fn largest_term_qp(&self) -> (usize, f64) {
        largest_term(&self.q, &self.p, self.base)
    }
}

fn largest_term(p: &[f64], q: &[f64], base: Base) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, (&x, &y)) in p.iter().zip(q).enumerate() {
        let t = base.from_nats(rel_entr(x, y));
        if t > best.1 {
            best = (i, t);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_probabilities_agree() {
        let a = kl_divergence(&[3.0, 5.0, 2.0], &[1.0, 2.0, 1.0]).unwrap();
        let b = kl_divergence(&[0.3, 0.5, 0.2], &[0.25, 0.5, 0.25]).unwrap();
        assert!((a - b).abs() < 1e-15);
    }

    #[test]
    fn zero_in_q_gives_infinity_and_zero_in_p_is_finite() {
        assert_eq!(
            kl_divergence(&[0.5, 0.5], &[1.0, 0.0]).unwrap(),
            f64::INFINITY
        );
        assert_eq!(
            cross_entropy(&[0.5, 0.5], &[1.0, 0.0]).unwrap(),
            f64::INFINITY
        );
        let kl = kl_divergence(&[1.0, 0.0], &[0.5, 0.5]).unwrap();
        assert!((kl - std::f64::consts::LN_2).abs() < 1e-15);
    }

    #[test]
    fn js_of_disjoint_supports_is_ln2() {
        let js = js_divergence(&[1.0, 0.0], &[0.0, 1.0]).unwrap();
        assert!((js - std::f64::consts::LN_2).abs() < 1e-15);
    }

    #[test]
    fn bad_weights_name_the_argument_and_index() {
        let e = kl_divergence(&[0.3, 0.5, 0.2], &[0.5, 0.6, -0.1]).unwrap_err();
        assert_eq!(
            e,
            KlError::Invalid {
                arg: "q",
                problem: InputProblem::Negative {
                    index: 2,
                    value: -0.1
                }
            }
        );
        assert_eq!(e.to_string(), "q: index 2 is negative (-0.1)");
        assert!(matches!(
            entropy(&[1.0, f64::NAN]),
            Err(KlError::Invalid {
                arg: "p",
                problem: InputProblem::NotFinite { index: 1, .. }
            })
        ));
        assert!(matches!(
            entropy(&[0.0, 0.0]),
            Err(KlError::Invalid {
                problem: InputProblem::AllZero,
                ..
            })
        ));
        assert!(matches!(
            entropy(&[]),
            Err(KlError::Invalid {
                problem: InputProblem::Empty,
                ..
            })
        ));
        assert!(matches!(
            js_divergence(&[1.0, 2.0], &[1.0, 2.0, 3.0]),
            Err(KlError::LengthMismatch {
                left_len: 2,
                right_len: 3,
                ..
            })
        ));
    }

    #[test]
    fn smoothing_makes_kl_finite_and_follows_its_formula() {
        let q = smooth(&[1.0, 0.0, 3.0], 0.01).unwrap();
        let expect = [(0.25 + 0.01) / 1.03, 0.01 / 1.03, (0.75 + 0.01) / 1.03];
        for (a, b) in q.iter().zip(expect) {
            assert!((a - b).abs() < 1e-15);
        }
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(kl_divergence(&[1.0, 1.0, 1.0], &q).unwrap().is_finite());
        assert!(smooth(&[1.0], -1e-3).is_err());
        assert!(smooth(&[1.0], f64::NAN).is_err());
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let p = normalize(&[f64::MAX, f64::MAX]).unwrap();
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn comparison_fields_and_largest_term() {
        let c = DiscreteComparison::new(&[0.1, 0.9], &[0.5, 0.5], Base::Bits).unwrap();
        assert!((c.cross_entropy_pq - (c.entropy_p + c.kl_pq)).abs() < 1e-14);
        assert!((c.cross_entropy_qp - (c.entropy_q + c.kl_qp)).abs() < 1e-14);
        assert!((c.entropy_q - 1.0).abs() < 1e-15);
        assert_eq!(c.largest_term_pq().0, 1);
        assert_eq!(c.largest_term_qp().0, 0);
    }
}
