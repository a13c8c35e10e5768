//! `MovieRec-v0` and `MovieRecSession-v0`: a contextual bandit that
//! recommends movies, klrl's running example.
//!
//! # The world
//!
//! Users come in `n_segments` taste segments. Segment `s` has a feature vector
//! `f_s ∈ R^context_dim` (what the recommender sees), a taste vector
//! `u_s ∈ R^n_genres` (hidden) and a mixing weight `softmax(ℓ)_s` (how often
//! its users arrive). Movie `m` has a genre vector `v_m ∈ R^n_genres` and a
//! bias `b_m` (general appeal). A user of segment `s` clicks on a recommended
//! movie `m` with probability
//!
//! ```text
//! p(click | s, m) = σ(u_s · v_m + b_m − boredom · k_g(m))        σ(x) = 1 / (1 + e^−x)
//! ```
//!
//! (a logistic click model, as in Li et al. 2010, "A contextual-bandit approach
//! to personalized news article recommendation", and Chapelle & Li 2011), where
//! `k_g(m)` is the number of earlier recommendations in this session whose
//! dominant genre is the dominant genre `g(m)` of movie `m` (always 0 in the
//! plain bandit, where every session is one round).
//!
//! Everything in the world is drawn once, at construction, from `world_seed`
//! (so a config fixes the world; the reset seed only drives which users arrive
//! and whether they click):
//!
//! - genres: movie `m` gets a primary genre, the genres dealt round-robin over
//!   the movies and then shuffled (so every genre has ⌊n_movies / n_genres⌋ or
//!   one more movies), `v_m[primary] = 1`; with probability 1/2 a second, other
//!   genre with weight 1/2. The primary genre is the movie's *dominant* genre.
//!   Sparse genre vectors make movies of one genre substitutes for each other.
//! - biases: `b_m ~ N(−2, 0.5²)`, tastes: `u_s[g] ~ N(0, 1.2²)`. With the
//!   default sizes the best movie's click probability for a segment is
//!   typically 0.3–0.7 (measured over 50 world seeds × 4 segments: median
//!   0.47, 10–90 % range 0.23–0.79) while a uniformly random movie is clicked
//!   with probability ≈ 0.18: there is a lot to learn, and a policy that
//!   learned it is clearly visible.
//! - features: `f_s[i] ~ N(0, 1)`, independent of the tastes: the policy has to
//!   learn which context means which taste. With `context_noise` well below 1
//!   the segments are told apart easily; raise it to blur them.
//! - mixing logits: `ℓ_s ~ N(0, 0.5²)`.
//!
//! # Episodes
//!
//! - Plain bandit (`session_length = 1`, `MovieRec-v0`): every step a new user
//!   arrives (segment drawn from the mix, observation `f_s + context_noise · ε`,
//!   ε standard normal); the action is a movie and the reward 1 for a click, 0
//!   otherwise. The stream of users has no terminal state; it is cut into
//!   episodes of `rounds` users, the last step reporting `truncated = true` (a
//!   learner may bootstrap; a bandit learner would use γ = 0 anyway).
//! - Sessions (`session_length = T > 1`, `MovieRecSession-v0`): one user
//!   stays for T rounds, and repeating a genre bores them (the `− boredom · k`
//!   term above: an additive penalty on the logit, so that it bites hardest
//!   where the click probability is near 1/2 and never pushes a probability
//!   below 0). The observation is the user's context, then per-genre counts of
//!   the dominant genres recommended so far divided by T, then the round
//!   fraction t / T. The session terminates (`terminated = true`) after T rounds.
//!   With `mask_repeats` a movie recommended earlier in the session is masked
//!   out through [`Env::action_mask`].
//!
//! # Oracle and regret
//!
//! Every step reports in its [`StepInfo`] the click probability of the chosen
//! movie (`expected_reward`) and of the best legal movie for this user in this
//! round, boredom included (`optimal_expected_reward`); regret is the
//! difference. In a session this per-round oracle is also optimal over the
//! whole session: the session's expected clicks are
//! `Σ_g Σ_{j < n_g} σ(best logit in g − boredom · j)` for n_g picks of genre g,
//! each genre's terms decrease in j, so taking the largest available term every
//! round (the greedy oracle) maximises the sum (an exchange argument; the same
//! holds with `mask_repeats`, where the j-th pick of a genre is its j-th best
//! movie). Summed per-round regret is therefore the session's regret. A policy
//! that keeps recommending the no-boredom favourite is not optimal.
//!
//! # Drift
//!
//! With `drift = δ > 0` the world is non-stationary: after every step each
//! segment taste component and each mixing logit `x` (prior `N(0, σ²)` above)
//! moves by the autoregressive step
//!
//! ```text
//! x ← √(1 − δ²) · x + δ · σ · ε,    ε ~ N(0, 1)
//! ```
//!
//! a Gaussian random walk with step standard deviation δσ, pulled gently back
//! towards 0 so that the prior above is its stationary law: the best movie for
//! a segment changes on a time scale of about 1/δ² steps, yet a world that
//! drifted for a long time still looks like a freshly drawn one (a plain random
//! walk would let the tastes grow without bound and every click probability
//! end at 0 or 1). The drift noise comes from its own random stream, derived
//! from `world_seed` and not touched by `reset`: copies of the environment with
//! the same `world_seed` that are stepped in lock-step (as a
//! [`VecEnv`](crate::VecEnv) does) see one and the same drifting world, which
//! is the point of running them side by side, and time keeps running across
//! episode boundaries. The flip side is that a drifting environment reset with
//! the same seed twice does not replay the same episode: the world has moved.
//! Features, genres and biases do not drift.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;

use crate::{Action, Env, EnvError, EnvRng, EnvSnapshot, RngState, Space, Step, StepInfo};

/// Standard deviation of a taste component `u_s[g]` (its prior and the drift's
/// stationary law): with [`BIAS_MEAN`] it puts the best movie's click
/// probability around 1/2.
const TASTE_STD: f64 = 1.2;
/// Mean of the movie biases `b_m`: a movie outside the user's tastes is
/// clicked with probability about σ(−2) ≈ 0.12.
const BIAS_MEAN: f64 = -2.0;
/// Standard deviation of the movie biases.
const BIAS_STD: f64 = 0.5;
/// Standard deviation of the segment mixing logits.
const MIX_LOGIT_STD: f64 = 0.5;
/// Weight of a movie's secondary genre (the primary genre has weight 1).
const SECONDARY_GENRE_WEIGHT: f64 = 0.5;
/// Probability that a movie has a secondary genre.
const SECONDARY_GENRE_PROB: f64 = 0.5;
/// Upper bound on every size parameter, so that a typo cannot ask for
/// terabytes of memory.
const MAX_SIZE: usize = 1 << 20;

/// Parameters of `MovieRec-v0` / `MovieRecSession-v0` (all optional in a
/// config; `MovieRecSession-v0` only changes the default of `session_length`
/// to [`MovieRec::SESSION_DEFAULT_LENGTH`]).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MovieRecParams {
    /// Number of movies = number of actions, ≥ 1. Default 20.
    pub n_movies: usize,
    /// Number of genres (length of the taste and genre vectors), ≥ 1. Default 5.
    pub n_genres: usize,
    /// Number of user taste segments, ≥ 1. Default 4.
    pub n_segments: usize,
    /// Length of a user's context (segment feature) vector, ≥ 1. Default 8.
    pub context_dim: usize,
    /// Standard deviation of the Gaussian noise added to a user's segment
    /// features to make their context, finite and ≥ 0. Default 0.3 (segments
    /// are about 4 apart, so they are easy to tell apart).
    pub context_noise: f64,
    /// Seed of the world (features, tastes, genres, biases, segment mix, and
    /// the drift noise). Default 0.
    pub world_seed: u64,
    /// Plain bandit only (`session_length = 1`): users per episode, ≥ 1; the
    /// last step of an episode is truncated. Not used for sessions, whose
    /// length is `session_length`. Default 100.
    pub rounds: u64,
    /// Rounds a user stays for, ≥ 1; 1 = the plain contextual bandit, more =
    /// a session that terminates after this many rounds. Default 1
    /// (`MovieRecSession-v0`: 10).
    pub session_length: u64,
    /// Logit penalty per earlier recommendation of the same dominant genre in
    /// the session, finite and ≥ 0; only matters when `session_length > 1`.
    /// Default 1.0 (a 1/2 click probability drops to 0.27 after one repeat of
    /// the genre, to 0.12 after two).
    pub boredom: f64,
    /// Mask out movies already recommended in the session (via
    /// [`Env::action_mask`]); needs `session_length ≤ n_movies`. Default false.
    pub mask_repeats: bool,
    /// Drift rate δ in [0, 1] of tastes and segment mix per step (see the
    /// module docs); 0 = a stationary world. Default 0.
    pub drift: f64,
}

impl Default for MovieRecParams {
    fn default() -> Self {
        MovieRecParams {
            n_movies: 20,
            n_genres: 5,
            n_segments: 4,
            context_dim: 8,
            context_noise: 0.3,
            world_seed: 0,
            rounds: 100,
            session_length: 1,
            boredom: 1.0,
            mask_repeats: false,
            drift: 0.0,
        }
    }
}

impl MovieRecParams {
    /// The defaults of `MovieRecSession-v0`: the defaults above with
    /// `session_length` = [`MovieRec::SESSION_DEFAULT_LENGTH`].
    pub fn session() -> Self {
        MovieRecParams {
            session_length: MovieRec::SESSION_DEFAULT_LENGTH,
            ..Default::default()
        }
    }
}

/// The movie-recommendation bandit (see the module docs for the model).
#[derive(Debug, Clone)]
pub struct MovieRec {
    name: &'static str,
    params: MovieRecParams,
    /// `n_segments × context_dim`, row-major.
    features: Vec<f64>,
    /// `n_segments × n_genres`, row-major; drifts.
    tastes: Vec<f64>,
    /// `n_movies × n_genres`, row-major.
    genres: Vec<f64>,
    /// Dominant (primary) genre of each movie.
    dominant: Vec<usize>,
    /// `b_m`.
    biases: Vec<f64>,
    /// `ℓ_s`; drifts.
    mix_logits: Vec<f64>,
    /// `softmax(ℓ)`, kept in step with `mix_logits`.
    mix_probs: Vec<f64>,
    drift_rng: EnvRng,
    rng: EnvRng,
    /// The current user's segment; `None` before the first reset.
    segment: Option<usize>,
    /// The current user's context.
    context: Vec<f64>,
    /// Recommendations per dominant genre in this session.
    genre_counts: Vec<u64>,
    /// Legal actions (all `true` unless `mask_repeats`).
    allowed: Vec<bool>,
    /// Steps taken in this episode.
    t: u64,
    needs_reset: bool,
    observation_space: Space,
    action_space: Space,
}

impl MovieRec {
    /// Registry name of the plain contextual bandit.
    pub const NAME: &'static str = "MovieRec-v0";
    /// Registry name of the session variant.
    pub const SESSION_NAME: &'static str = "MovieRecSession-v0";
    /// Default `session_length` of `MovieRecSession-v0`.
    pub const SESSION_DEFAULT_LENGTH: u64 = 10;

    /// Build the world from `params.world_seed`, after checking every
    /// parameter; an invalid one is an [`EnvError::InvalidParameter`] naming it.
    /// The environment reports the name [`MovieRec::NAME`] when
    /// `session_length = 1` and [`MovieRec::SESSION_NAME`] otherwise (the
    /// registry instead gives each environment the name it was made by). Its
    /// user RNG starts from seed 0 until `reset(Some(seed))`.
    pub fn new(params: MovieRecParams) -> Result<Self, EnvError> {
        let name = if params.session_length > 1 {
            Self::SESSION_NAME
        } else {
            Self::NAME
        };
        Self::with_name(name, params)
    }

    /// [`MovieRec::new`] reporting `name` whatever `session_length` is: the
    /// registry's `MovieRecSession-v0` with `session_length = 1` is still
    /// `MovieRecSession-v0` (and `MovieRec-v0` with sessions `MovieRec-v0`).
    pub(crate) fn with_name(name: &'static str, params: MovieRecParams) -> Result<Self, EnvError> {
        validate(name, &params)?;
        let MovieRecParams {
            n_movies: m,
            n_genres: g,
            n_segments: s,
            context_dim: d,
            ..
        } = params;

        let mut world_rng = EnvRng::seed_from_u64(params.world_seed);
        let mut drift_rng = EnvRng::seed_from_u64(params.world_seed);
        // A separate ChaCha stream: independent of the world draws, and the
        // same for every copy built with this world_seed.
        drift_rng.set_stream(1);

        let mut dominant: Vec<usize> = (0..m).map(|i| i % g).collect();
        dominant.shuffle(&mut world_rng);
        let mut genres = vec![0.0; m * g];
        for (row, &primary) in genres.chunks_mut(g).zip(&dominant) {
            row[primary] = 1.0;
            if g > 1 && world_rng.random::<f64>() < SECONDARY_GENRE_PROB {
                // Uniform over the g − 1 other genres.
                let k = world_rng.random_range(0..g - 1);
                let secondary = if k >= primary { k + 1 } else { k };
                row[secondary] = SECONDARY_GENRE_WEIGHT;
            }
        }
        let biases = (0..m)
            .map(|_| BIAS_MEAN + BIAS_STD * normal(&mut world_rng))
            .collect();
        let tastes = (0..s * g)
            .map(|_| TASTE_STD * normal(&mut world_rng))
            .collect();
        let features = (0..s * d).map(|_| normal(&mut world_rng)).collect();
        let mix_logits: Vec<f64> = (0..s)
            .map(|_| MIX_LOGIT_STD * normal(&mut world_rng))
            .collect();
        let mix_probs = softmax(&mix_logits);

        let extra = if params.session_length > 1 { g + 1 } else { 0 };
        let mut low = vec![f32::NEG_INFINITY; d];
        let mut high = vec![f32::INFINITY; d];
        low.extend(std::iter::repeat_n(0.0, extra));
        high.extend(std::iter::repeat_n(1.0, extra));

        Ok(MovieRec {
            name,
            params,
            features,
            tastes,
            genres,
            dominant,
            biases,
            mix_logits,
            mix_probs,
            drift_rng,
            rng: EnvRng::seed_from_u64(0),
            segment: None,
            context: vec![0.0; d],
            genre_counts: vec![0; g],
            allowed: vec![true; m],
            t: 0,
            needs_reset: true,
            observation_space: Space::box1d(low, high),
            action_space: Space::discrete(m),
        })
    }

    /// The parameters (with the current drift rate).
    pub fn params(&self) -> &MovieRecParams {
        &self.params
    }

    /// Change the drift rate δ (in [0, 1]) from the next step on, e.g. to let a
    /// world settle first and then start drifting.
    pub fn set_drift(&mut self, drift: f64) -> Result<(), EnvError> {
        check_drift(self.name, drift)?;
        self.params.drift = drift;
        Ok(())
    }

    /// Click probability of `movie` for the current user in the current round,
    /// boredom included: `σ(u_s · v_m + b_m − boredom · k_g(m))`. Masked movies
    /// have one too (it is what they would get if recommended anyway).
    ///
    /// Errors: `movie` out of range ([`EnvError::InvalidAction`]); no user yet
    /// because the environment was never reset ([`EnvError::NeedsReset`]).
    pub fn expected_click_prob(&self, movie: usize) -> Result<f64, EnvError> {
        self.action_space
            .check_action(self.name, Action::Discrete(movie))?;
        let s = self.current_user()?;
        Ok(self.click_prob(s, movie))
    }

    /// The largest click probability over the legal movies for the current
    /// user in the current round (the oracle; see the module docs).
    ///
    /// Errors: [`EnvError::NeedsReset`] before the first reset.
    pub fn best_expected_reward(&self) -> Result<f64, EnvError> {
        let s = self.current_user()?;
        Ok(self.best(s).1)
    }

    /// The legal movie with the largest click probability for the current user
    /// in the current round (the oracle's action; the lowest index on ties).
    ///
    /// Errors: [`EnvError::NeedsReset`] before the first reset.
    pub fn best_movie(&self) -> Result<usize, EnvError> {
        let s = self.current_user()?;
        Ok(self.best(s).0)
    }

    /// The current user's segment, `None` before the first reset.
    pub fn current_segment(&self) -> Option<usize> {
        self.segment
    }

    /// The movie a fresh user of `segment` clicks most (no boredom, no mask),
    /// under the current (possibly drifted) tastes; `None` if `segment` is out
    /// of range.
    pub fn best_movie_for_segment(&self, segment: usize) -> Option<usize> {
        (segment < self.params.n_segments).then(|| {
            argmax((0..self.params.n_movies).map(|m| self.logit(segment, m))).map_or(0, |(i, _)| i)
        })
    }

    /// The probability that the next user comes from each segment
    /// (`softmax(ℓ)`; changes under drift).
    pub fn segment_probs(&self) -> &[f64] {
        &self.mix_probs
    }

    /// The taste vector `u_s` of `segment` (changes under drift), `None` if out
    /// of range.
    pub fn taste(&self, segment: usize) -> Option<&[f64]> {
        let g = self.params.n_genres;
        self.tastes.get(segment * g..(segment + 1) * g)
    }

    /// The feature vector `f_s` of `segment`, `None` if out of range.
    pub fn segment_features(&self, segment: usize) -> Option<&[f64]> {
        let d = self.params.context_dim;
        self.features.get(segment * d..(segment + 1) * d)
    }

    /// The genre vector `v_m` of `movie`, `None` if out of range.
    pub fn genre_vector(&self, movie: usize) -> Option<&[f64]> {
        let g = self.params.n_genres;
        self.genres.get(movie * g..(movie + 1) * g)
    }

    /// The bias `b_m` of `movie`, `None` if out of range.
    pub fn movie_bias(&self, movie: usize) -> Option<f64> {
        self.biases.get(movie).copied()
    }

    /// The dominant genre of `movie` (the one boredom counts), `None` if out of
    /// range.
    pub fn dominant_genre(&self, movie: usize) -> Option<usize> {
        self.dominant.get(movie).copied()
    }

    fn current_user(&self) -> Result<usize, EnvError> {
        self.segment.ok_or_else(|| EnvError::NeedsReset {
            env: self.name.into(),
            when: "before the first reset()",
        })
    }

    /// `u_s · v_m + b_m`.
    fn logit(&self, s: usize, m: usize) -> f64 {
        let g = self.params.n_genres;
        let u = &self.tastes[s * g..(s + 1) * g];
        let v = &self.genres[m * g..(m + 1) * g];
        u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() + self.biases[m]
    }

    fn click_prob(&self, s: usize, m: usize) -> f64 {
        let k = self.genre_counts[self.dominant[m]] as f64;
        sigmoid(self.logit(s, m) - self.params.boredom * k)
    }

    /// (movie, click probability) of the best legal movie for segment `s`.
    fn best(&self, s: usize) -> (usize, f64) {
        let probs = (0..self.params.n_movies).map(|m| {
            if self.allowed[m] {
                self.click_prob(s, m)
            } else {
                f64::NEG_INFINITY
            }
        });
        // Validation guarantees a legal movie in every round of a session.
        argmax(probs).unwrap_or((0, 0.0))
    }

    /// A new user arrives: segment from the mix, noisy context.
    fn draw_user(&mut self) {
        let u: f64 = self.rng.random();
        let mut acc = 0.0;
        let mut seg = self.params.n_segments - 1;
        for (i, p) in self.mix_probs.iter().enumerate() {
            acc += p;
            if u < acc {
                seg = i;
                break;
            }
        }
        self.segment = Some(seg);
        let d = self.params.context_dim;
        for (c, f) in self
            .context
            .iter_mut()
            .zip(&self.features[seg * d..(seg + 1) * d])
        {
            *c = f + self.params.context_noise * normal(&mut self.rng);
        }
    }

    /// One step of the AR(1) drift of tastes and mixing logits.
    fn drift_world(&mut self) {
        let delta = self.params.drift;
        if delta == 0.0 {
            return;
        }
        let keep = (1.0 - delta * delta).sqrt();
        for x in &mut self.tastes {
            *x = keep * *x + delta * TASTE_STD * normal(&mut self.drift_rng);
        }
        for x in &mut self.mix_logits {
            *x = keep * *x + delta * MIX_LOGIT_STD * normal(&mut self.drift_rng);
        }
        self.mix_probs = softmax(&self.mix_logits);
    }

    fn start_session(&mut self) {
        self.genre_counts.fill(0);
        self.allowed.fill(true);
    }

    fn write_obs(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.extend(self.context.iter().map(|&c| c as f32));
        let len = self.params.session_length;
        if len > 1 {
            obs.extend(
                self.genre_counts
                    .iter()
                    .map(|&k| (k as f64 / len as f64) as f32),
            );
            obs.push((self.t as f64 / len as f64) as f32);
        }
    }
}

impl Env for MovieRec {
    fn name(&self) -> &str {
        self.name
    }
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }
    fn action_mask(&self) -> Option<&[bool]> {
        self.params.mask_repeats.then_some(&self.allowed[..])
    }

    /// State: floats = tastes ‖ mix_logits ‖ mix_probs ‖ context ‖ \[drift\];
    /// ints = \[segment (u64::MAX before the first reset), t\] ‖ genre_counts;
    /// flags = \[needs_reset\] ‖ allowed; RNGs = \[user, drift\]. The world's
    /// fixed parts (features, genres, biases) come from `world_seed`.
    fn snapshot(&self) -> Option<EnvSnapshot> {
        let mut s = EnvSnapshot::new(self.name);
        s.floats = [
            &self.tastes[..],
            &self.mix_logits,
            &self.mix_probs,
            &self.context,
            &[self.params.drift],
        ]
        .concat();
        s.ints = vec![self.segment.map_or(u64::MAX, |g| g as u64), self.t];
        s.ints.extend_from_slice(&self.genre_counts);
        s.flags = vec![self.needs_reset];
        s.flags.extend_from_slice(&self.allowed);
        s.rngs = vec![RngState::of(&self.rng), RngState::of(&self.drift_rng)];
        Some(s)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), EnvError> {
        let (nt, nl, nc) = (self.tastes.len(), self.mix_logits.len(), self.context.len());
        snapshot.expect(
            self.name,
            self.name,
            [
                nt + 2 * nl + nc + 1,
                2 + self.genre_counts.len(),
                1 + self.allowed.len(),
                2,
                0,
            ],
        )?;
        let segment = match snapshot.ints[0] {
            u64::MAX => None,
            g if (g as usize) < self.params.n_segments => Some(g as usize),
            g => {
                return Err(EnvError::Snapshot {
                    env: self.name.into(),
                    reason: format!("segment {g} out of range"),
                })
            }
        };
        let f = &snapshot.floats;
        self.tastes.copy_from_slice(&f[..nt]);
        self.mix_logits.copy_from_slice(&f[nt..nt + nl]);
        self.mix_probs.copy_from_slice(&f[nt + nl..nt + 2 * nl]);
        self.context
            .copy_from_slice(&f[nt + 2 * nl..nt + 2 * nl + nc]);
        self.params.drift = f[nt + 2 * nl + nc];
        self.segment = segment;
        self.t = snapshot.ints[1];
        self.genre_counts.copy_from_slice(&snapshot.ints[2..]);
        self.needs_reset = snapshot.flags[0];
        self.allowed.copy_from_slice(&snapshot.flags[1..]);
        self.rng = snapshot.rngs[0].to_rng();
        self.drift_rng = snapshot.rngs[1].to_rng();
        Ok(())
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        self.t = 0;
        self.start_session();
        self.draw_user();
        self.needs_reset = false;
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        self.action_space.check_action(self.name, action)?;
        let (Action::Discrete(movie), Some(s), false) = (action, self.segment, self.needs_reset)
        else {
            return Err(EnvError::NeedsReset {
                env: self.name.into(),
                when:
                    "after the episode ended (terminated or truncated) or before the first reset()",
            });
        };
        if !self.allowed[movie] {
            return Err(EnvError::MaskedAction {
                env: self.name.into(),
                action: movie,
            });
        }
        // The oracle and the click are computed in the round's state, before
        // this recommendation counts towards boredom.
        let p = self.click_prob(s, movie);
        let p_best = self.best(s).1;
        let clicked = self.rng.random::<f64>() < p;

        self.t += 1;
        self.genre_counts[self.dominant[movie]] += 1;
        if self.params.mask_repeats {
            self.allowed[movie] = false;
        }
        self.drift_world();

        let (terminated, truncated) = if self.params.session_length > 1 {
            (self.t >= self.params.session_length, false)
        } else {
            // Each round is its own one-round session; the next user arrives
            // (also on the last round, so the final observation is the state
            // a truncated episode bootstraps from).
            self.start_session();
            self.draw_user();
            (false, self.t >= self.params.rounds)
        };
        self.needs_reset = terminated || truncated;
        self.write_obs(obs);
        Ok(Step {
            reward: if clicked { 1.0 } else { 0.0 },
            terminated,
            truncated,
            info: StepInfo {
                expected_reward: Some(p),
                optimal_expected_reward: Some(p_best),
                episode: None,
            },
        })
    }
}

fn validate(name: &str, p: &MovieRecParams) -> Result<(), EnvError> {
    for (param, value) in [
        ("n_movies", p.n_movies),
        ("n_genres", p.n_genres),
        ("n_segments", p.n_segments),
        ("context_dim", p.context_dim),
    ] {
        if value == 0 || value > MAX_SIZE {
            return Err(EnvError::param(
                name,
                param,
                format!("must be in 1..={MAX_SIZE}, got {value}"),
            ));
        }
    }
    // The tables the world stores: movies × genres, segments × context_dim,
    // segments × genres; the error names the first factor.
    for (param, a, other, b) in [
        ("n_movies", p.n_movies, "n_genres", p.n_genres),
        ("context_dim", p.context_dim, "n_segments", p.n_segments),
        ("n_segments", p.n_segments, "n_genres", p.n_genres),
    ] {
        if a.saturating_mul(b) > MAX_SIZE {
            return Err(EnvError::param(
                name,
                param,
                format!("{param} × {other} = {a} × {b} exceeds {MAX_SIZE}"),
            ));
        }
    }
    if !(p.context_noise.is_finite() && p.context_noise >= 0.0) {
        return Err(EnvError::param(
            name,
            "context_noise",
            format!("must be finite and >= 0, got {}", p.context_noise),
        ));
    }
    if p.rounds == 0 {
        return Err(EnvError::param(name, "rounds", "must be >= 1, got 0"));
    }
    if p.session_length == 0 {
        return Err(EnvError::param(
            name,
            "session_length",
            "must be >= 1, got 0",
        ));
    }
    if !(p.boredom.is_finite() && p.boredom >= 0.0) {
        return Err(EnvError::param(
            name,
            "boredom",
            format!("must be finite and >= 0, got {}", p.boredom),
        ));
    }
    if p.mask_repeats && p.session_length > p.n_movies as u64 {
        return Err(EnvError::param(
            name,
            "session_length",
            format!(
                "with mask_repeats = true it must be <= n_movies = {} (otherwise a session runs out of movies), got {}",
                p.n_movies, p.session_length
            ),
        ));
    }
    check_drift(name, p.drift)
}

fn check_drift(name: &str, drift: f64) -> Result<(), EnvError> {
    if (0.0..=1.0).contains(&drift) {
        Ok(())
    } else {
        Err(EnvError::param(
            name,
            "drift",
            format!("must be in [0, 1], got {drift}"),
        ))
    }
}

fn normal(rng: &mut EnvRng) -> f64 {
    StandardNormal.sample(rng)
}

/// σ(x) = 1 / (1 + e^−x), written so that neither branch overflows.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// Index and value of the largest element (the first on ties), `None` if empty.
fn argmax(values: impl Iterator<Item = f64>) -> Option<(usize, f64)> {
    values.enumerate().fold(None, |best, (i, v)| match best {
        Some((_, b)) if b >= v => best,
        _ => Some((i, v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < 1e-15);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }

    #[test]
    fn every_genre_has_movies_and_genre_vectors_are_sparse() {
        let env = MovieRec::new(MovieRecParams::default()).unwrap();
        let mut per_genre = [0usize; 5];
        for m in 0..20 {
            let v = env.genre_vector(m).unwrap();
            let g = env.dominant_genre(m).unwrap();
            per_genre[g] += 1;
            assert_eq!(v[g], 1.0);
            let nonzero = v.iter().filter(|&&x| x != 0.0).count();
            assert!((1..=2).contains(&nonzero), "{v:?}");
        }
        assert_eq!(per_genre, [4; 5]);
    }

    #[test]
    fn drift_keeps_the_prior_as_stationary_law() {
        // After many steps the tastes should still have spread ≈ TASTE_STD.
        let params = MovieRecParams {
            n_segments: 50,
            drift: 0.2,
            ..Default::default()
        };
        let mut env = MovieRec::new(params).unwrap();
        for _ in 0..500 {
            env.drift_world();
        }
        let n = env.tastes.len() as f64;
        let var = env.tastes.iter().map(|x| x * x).sum::<f64>() / n;
        // 250 samples of mean 0: the variance estimate Σx²/n has standard
        // deviation sqrt(2/250) · σ² ≈ 0.089 σ², so 0.6..1.4 is ±4.5 of them.
        assert!(
            (0.6..1.4).contains(&(var / (TASTE_STD * TASTE_STD))),
            "{var}"
        );
    }
}
