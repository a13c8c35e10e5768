//! `klrl-kl`: a small toolbox of KL divergences and related information
//! quantities, in plain `f64`.
//!
//! What it is for: checking and explaining the numbers that KL-constrained
//! policy updates (PPO with a KL penalty, TRPO) depend on — the divergence
//! between two action distributions, between two Gaussian policies, the sample
//! estimators k1/k2/k3 that training loops log — and the everyday uses of the
//! same formulas (comparing two histograms, the VAE regulariser, mutual
//! information). It backs the `klrl kl` command.
//!
//! What it is not for: differentiable, batched tensor code. The policy crate
//! computes KL on candle tensors for training; this crate has no tensor
//! dependency and is the slow, exact reference those implementations are tested
//! against.
//!
//! Contents, one concept per module:
//! - [`discrete`]: entropy, cross-entropy, KL(P‖Q), Jensen–Shannon, smoothing,
//!   [`DiscreteComparison`] (both directions at once), [`Base`] (nats or bits);
//! - [`gaussian`]: univariate and diagonal Gaussian KL, the VAE term;
//! - [`multivariate`]: full-covariance Gaussian KL via [`Cholesky`];
//! - [`mutual_information`](mod@mutual_information): I(X;Y) from a joint table;
//! - [`estimators`]: Schulman's k1, k2, k3 sample estimators.
//!
//! Conventions: results are in nats (natural log) unless converted with
//! [`Base::from_nats`] / [`to_bits`]; discrete inputs are weights normalised by
//! their sum; 0·log 0 = 0; a divergence that is infinite (Q(x) = 0 where
//! P(x) > 0) is `f64::INFINITY`, never clipped. Invalid input is a [`KlError`]
//! that names the argument and, where there is one, the index.
//!
//! # Example
//! ```
//! use klrl_kl::{kl_divergence, to_bits, DiscreteComparison, Base, univariate_kl};
//!
//! // A fair die against a loaded one that favours six.
//! let fair = [1.0; 6];
//! let loaded = [0.1, 0.1, 0.1, 0.1, 0.1, 0.5];
//! let kl = kl_divergence(&fair, &loaded)?;
//! // Σ pᵢ ln(pᵢ/qᵢ) = (5 ln(5/3) + ln(1/3)) / 6 ≈ 0.2426 nats.
//! let expected = (5.0 * (5.0f64 / 3.0).ln() + (1.0f64 / 3.0).ln()) / 6.0;
//! assert!((kl - expected).abs() < 1e-12);
//!
//! // Both directions, in bits.
//! let c = DiscreteComparison::new(&fair, &loaded, Base::Bits)?;
//! assert!((c.kl_pq - to_bits(kl)).abs() < 1e-12);
//! assert!(c.kl_qp != c.kl_pq); // KL is not symmetric
//!
//! // Q rules out an outcome that P allows: the divergence is infinite.
//! assert_eq!(kl_divergence(&[0.5, 0.5], &[1.0, 0.0])?, f64::INFINITY);
//!
//! // Gaussians: KL(N(0, 1) ‖ N(1, 1)) = ½.
//! assert!((univariate_kl(0.0, 1.0, 1.0, 1.0)? - 0.5).abs() < 1e-15);
//! # Ok::<(), klrl_kl::KlError>(())
//! ```

#![warn(missing_docs)]

pub mod discrete;
pub mod error;
pub mod estimators;
pub mod gaussian;
pub mod multivariate;
pub mod mutual_information;

pub use discrete::{
    cross_entropy, entropy, js_divergence, kl_divergence, normalize, smooth, to_bits, Base,
    DiscreteComparison,
};
pub use error::{InputProblem, KlError};
pub use estimators::{k1, k1_mean, k2, k2_mean, k3, k3_mean, KlEstimates};
pub use gaussian::{diagonal_kl, univariate_kl, vae_kl, vae_kl_per_dim};
pub use multivariate::{mvn_kl, Cholesky};
pub use mutual_information::mutual_information;
