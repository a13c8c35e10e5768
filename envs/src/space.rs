//! Observation and action spaces: `Discrete(n)` and `Box { low, high, shape }`,
//! following Gymnasium's `spaces.Discrete` and `spaces.Box`.

use rand::Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};

use crate::EnvError;

/// A point of a space, borrowed: an action handed to `step`, or an observation
/// checked with [`Space::contains`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action<'a> {
    /// An element of a [`Space::Discrete`] space: `0..n`.
    Discrete(usize),
    /// An element of a [`Space::Box`] space, flattened in row-major order.
    Continuous(&'a [f32]),
}

/// An owned point of a space, as returned by [`Space::sample`].
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedAction {
    /// See [`Action::Discrete`].
    Discrete(usize),
    /// See [`Action::Continuous`].
    Continuous(Vec<f32>),
}

impl OwnedAction {
    /// Borrow as an [`Action`].
    pub fn as_action(&self) -> Action<'_> {
        match self {
            OwnedAction::Discrete(a) => Action::Discrete(*a),
            OwnedAction::Continuous(v) => Action::Continuous(v),
        }
    }
}

/// A Gymnasium-style space.
#[derive(Debug, Clone, PartialEq)]
pub enum Space {
    /// The integers `0..n` (Gymnasium `Discrete(n)` with `start = 0`).
    Discrete {
        /// Number of elements; at least 1.
        n: usize,
    },
    /// A box in R^shape with per-element bounds (which may be infinite),
    /// stored flattened in row-major order.
    Box {
        /// Lower bounds, one per element.
        low: Vec<f32>,
        /// Upper bounds, one per element; `low[i] <= high[i]`.
        high: Vec<f32>,
        /// The shape; the product of its entries is `low.len()`.
        shape: Vec<usize>,
    },
}

impl Space {
    /// `Discrete(n)`.
    pub fn discrete(n: usize) -> Self {
        Space::Discrete { n }
    }

    /// A one-dimensional box with the given bounds.
    ///
    /// # Panics
    /// If the bound vectors differ in length or `low > high` somewhere; spaces
    /// are built by environment code, not from user input.
    pub fn box1d(low: Vec<f32>, high: Vec<f32>) -> Self {
        assert_eq!(low.len(), high.len(), "box bounds differ in length");
        assert!(low.iter().zip(&high).all(|(l, h)| l <= h), "box low > high");
        let shape = vec![low.len()];
        Space::Box { low, high, shape }
    }

    /// A one-dimensional box `[low, high]^dim`.
    pub fn uniform_box(dim: usize, low: f32, high: f32) -> Self {
        Space::box1d(vec![low; dim], vec![high; dim])
    }

    /// Number of scalars needed to hold one element: 1 for `Discrete`, the
    /// product of the shape for `Box`.
    pub fn flat_dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { low, .. } => low.len(),
        }
    }

    /// Number of discrete actions, or `None` for a box.
    pub fn n(&self) -> Option<usize> {
        match self {
            Space::Discrete { n } => Some(*n),
            Space::Box { .. } => None,
        }
    }

    /// Whether `x` is an element of this space. NaN is never contained.
    pub fn contains(&self, x: Action<'_>) -> bool {
        self.why_not_contained(x).is_none()
    }

    /// `None` if `x` is an element of this space, otherwise the reason it is not.
    pub fn why_not_contained(&self, x: Action<'_>) -> Option<String> {
        match (self, x) {
            (Space::Discrete { n }, Action::Discrete(a)) => {
                (a >= *n).then(|| format!("must be in 0..{n}"))
            }
            (Space::Box { low, high, .. }, Action::Continuous(v)) => {
                if v.len() != low.len() {
                    return Some(format!(
                        "has {} elements, the space has {}",
                        v.len(),
                        low.len()
                    ));
                }
                for (i, ((&x, &l), &h)) in v.iter().zip(low).zip(high).enumerate() {
                    if x.is_nan() {
                        return Some(format!("element {i} is NaN"));
                    }
                    if x < l || x > h {
                        return Some(format!("element {i} = {x} is outside [{l}, {h}]"));
                    }
                }
                None
            }
            (Space::Discrete { .. }, Action::Continuous(_)) => {
                Some("a continuous action was given to a discrete space".into())
            }
            (Space::Box { .. }, Action::Discrete(_)) => {
                Some("a discrete action was given to a box space".into())
            }
        }
    }

    /// Check that `x` is an element of this space, or return an
    /// [`EnvError::InvalidAction`] naming `env`.
    #[inline]
    pub fn check_action(&self, env: &str, x: Action<'_>) -> Result<(), EnvError> {
        // Fast path for the common case, kept inline; the message is built cold.
        if let (Space::Discrete { n }, Action::Discrete(a)) = (self, x) {
            if a < *n {
                return Ok(());
            }
        }
        self.check_action_slow(env, x)
    }

    #[cold]
    fn check_action_slow(&self, env: &str, x: Action<'_>) -> Result<(), EnvError> {
        match self.why_not_contained(x) {
            None => Ok(()),
            Some(reason) => Err(EnvError::InvalidAction {
                env: env.to_string(),
                action: format!("{x:?}"),
                reason,
            }),
        }
    }

    /// Draw an element. As in Gymnasium: uniform for `Discrete` and for bounded
    /// box elements; standard normal where both bounds are infinite; a shifted
    /// exponential where one bound is infinite.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> OwnedAction {
        match self {
            Space::Discrete { n } => OwnedAction::Discrete(rng.random_range(0..*n)),
            Space::Box { low, .. } => {
                let mut v = vec![0.0; low.len()];
                self.sample_box_into(rng, &mut v);
                OwnedAction::Continuous(v)
            }
        }
    }

    /// Draw a box element into `out` without allocating.
    ///
    /// # Panics
    /// If the space is not a box or `out` has the wrong length.
    pub fn sample_box_into<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [f32]) {
        let Space::Box { low, high, .. } = self else {
            panic!("sample_box_into on a discrete space")
        };
        assert_eq!(out.len(), low.len(), "sample_box_into: wrong buffer length");
        for ((o, &l), &h) in out.iter_mut().zip(low).zip(high) {
            *o = match (l.is_finite(), h.is_finite()) {
                (true, true) => {
                    if l == h {
                        l
                    } else {
                        // Uniform in [l, h]; clamp guards the f32 rounding of l + u (h - l).
                        let u: f64 = rng.random();
                        ((l as f64 + u * (h as f64 - l as f64)) as f32).clamp(l, h)
                    }
                }
                (false, false) => {
                    let z: f64 = StandardNormal.sample(rng);
                    z as f32
                }
                (true, false) => {
                    let e: f64 = Exp1.sample(rng);
                    l + e as f32
                }
                (false, true) => {
                    let e: f64 = Exp1.sample(rng);
                    h - e as f32
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn discrete_contains_and_samples_in_range() {
        let s = Space::discrete(3);
        assert!(s.contains(Action::Discrete(0)));
        assert!(s.contains(Action::Discrete(2)));
        assert!(!s.contains(Action::Discrete(3)));
        assert!(!s.contains(Action::Continuous(&[0.0])));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            match s.sample(&mut rng) {
                OwnedAction::Discrete(a) => seen[a] += 1,
                other => panic!("sampled {other:?}"),
            }
        }
        // Each of three values has expected count 1000; 5 sigma is about 130.
        assert!(seen.iter().all(|&c| (870..=1130).contains(&c)), "{seen:?}");
    }

    #[test]
    fn box_contains_rejects_nan_wrong_length_and_out_of_bounds() {
        let s = Space::box1d(vec![-1.0, 0.0], vec![1.0, f32::INFINITY]);
        assert!(s.contains(Action::Continuous(&[0.5, 1e30])));
        assert!(!s.contains(Action::Continuous(&[f32::NAN, 0.0])));
        assert!(!s.contains(Action::Continuous(&[0.0])));
        assert!(!s.contains(Action::Continuous(&[1.5, 0.0])));
        assert!(!s.contains(Action::Continuous(&[0.0, -0.1])));
        assert!(!s.contains(Action::Discrete(0)));
        let err = s
            .check_action("Test", Action::Continuous(&[2.0, 0.0]))
            .unwrap_err();
        assert!(
            err.to_string().contains("element 0 = 2 is outside [-1, 1]"),
            "{err}"
        );
    }

    #[test]
    fn box_samples_are_contained_for_all_bound_kinds() {
        let inf = f32::INFINITY;
        let s = Space::box1d(
            vec![-2.0, -inf, 0.0, -inf, 3.0],
            vec![2.0, inf, inf, 1.0, 3.0],
        );
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..1000 {
            let a = s.sample(&mut rng);
            assert!(s.contains(a.as_action()), "{a:?}");
        }
    }

    #[test]
    fn same_seed_same_samples() {
        let s = Space::uniform_box(4, -1.0, 1.0);
        let a = s.sample(&mut ChaCha8Rng::seed_from_u64(3));
        let b = s.sample(&mut ChaCha8Rng::seed_from_u64(3));
        let c = s.sample(&mut ChaCha8Rng::seed_from_u64(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
