//! Tests of the movie-recommendation bandit `MovieRec-v0` / `MovieRecSession-v0`.

use klrl_envs::{
    Action, Checked, Env, EnvError, EnvRng, MovieRec, MovieRecParams, Registry, VecEnv,
};
use rand::{Rng, SeedableRng};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `u_s · v_m + b_m`, computed from the world's accessors.
fn logit(env: &MovieRec, s: usize, m: usize) -> f64 {
    let u = env.taste(s).unwrap();
    let v = env.genre_vector(m).unwrap();
    u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() + env.movie_bias(m).unwrap()
}

fn session(len: u64, mask_repeats: bool) -> MovieRecParams {
    MovieRecParams {
        session_length: len,
        mask_repeats,
        ..Default::default()
    }
}

#[test]
fn click_rates_match_the_logistic_click_model() {
    let mut env = MovieRec::new(MovieRecParams::default()).unwrap();
    let mut obs = Vec::new();
    let n_seg = 4;
    for movie in [0, 7] {
        let mut shown = vec![0u64; n_seg];
        let mut clicks = vec![0u64; n_seg];
        env.reset(Some(42 + movie as u64), &mut obs).unwrap();
        for _ in 0..40_000 {
            let s = env.current_segment().unwrap();
            let p = sigmoid(logit(&env, s, movie));
            assert!((env.expected_click_prob(movie).unwrap() - p).abs() < 1e-12);
            let step = env.step(Action::Discrete(movie), &mut obs).unwrap();
            assert!((step.info.expected_reward.unwrap() - p).abs() < 1e-12);
            assert!(step.reward == 0.0 || step.reward == 1.0);
            shown[s] += 1;
            clicks[s] += step.reward as u64;
            if step.done() {
                env.reset(None, &mut obs).unwrap();
            }
        }
        for s in 0..n_seg {
            let p = sigmoid(logit(&env, s, movie));
            let n = shown[s] as f64;
            assert!(n > 2000.0, "segment {s} seen {n} times");
            let rate = clicks[s] as f64 / n;
            let sd = (p * (1.0 - p) / n).sqrt();
            assert!(
                (rate - p).abs() < 5.0 * sd,
                "movie {movie} segment {s}: rate {rate}, model {p} (sd {sd})"
            );
        }
        // Segments arrive with the mix probabilities (5 sigma).
        let total: u64 = shown.iter().sum();
        for (s, &k) in shown.iter().enumerate() {
            let q = env.segment_probs()[s];
            let sd = (q * (1.0 - q) / total as f64).sqrt();
            assert!((k as f64 / total as f64 - q).abs() < 5.0 * sd, "mix {s}");
        }
    }
}

#[test]
fn the_world_gives_learning_signal() {
    // Over several worlds: the best movie of a segment is typically clicked
    // with probability 0.3–0.7, a random movie much less often.
    let mut best = Vec::new();
    let mut random = Vec::new();
    for world_seed in 0..50 {
        let env = MovieRec::new(MovieRecParams {
            world_seed,
            ..Default::default()
        })
        .unwrap();
        for s in 0..4 {
            let probs: Vec<f64> = (0..20).map(|m| sigmoid(logit(&env, s, m))).collect();
            let b = env.best_movie_for_segment(s).unwrap();
            assert_eq!(probs[b], probs.iter().copied().fold(0.0, f64::max));
            best.push(probs[b]);
            random.push(probs.iter().sum::<f64>() / 20.0);
        }
    }
    best.sort_by(f64::total_cmp);
    let median = best[best.len() / 2];
    let mean_random = random.iter().sum::<f64>() / random.len() as f64;
    let in_range = best.iter().filter(|p| (0.3..=0.7).contains(*p)).count();
    assert!((0.4..0.6).contains(&median), "median best {median}");
    assert!(in_range * 2 > best.len(), "{in_range} of {}", best.len());
    assert!(mean_random < 0.25, "random movie {mean_random}");
    // Different world seeds give different worlds.
    let a = MovieRec::new(MovieRecParams::default()).unwrap();
    let b = MovieRec::new(MovieRecParams {
        world_seed: 1,
        ..Default::default()
    })
    .unwrap();
    assert_ne!(a.taste(0), b.taste(0));
}

#[test]
fn oracle_is_the_best_click_probability_and_regret_is_nonnegative() {
    let mut env = MovieRec::new(MovieRecParams::default()).unwrap();
    let mut obs = Vec::new();
    let mut rng = EnvRng::seed_from_u64(1);
    env.reset(Some(3), &mut obs).unwrap();
    let (mut random_regret, mut n) = (0.0, 0);
    for _ in 0..5000 {
        let probs: Vec<f64> = (0..20)
            .map(|m| env.expected_click_prob(m).unwrap())
            .collect();
        let max = probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(env.best_expected_reward().unwrap(), max);
        assert_eq!(probs[env.best_movie().unwrap()], max);
        let a = rng.random_range(0..20);
        let step = env.step(Action::Discrete(a), &mut obs).unwrap();
        let (p, p_best) = (
            step.info.expected_reward.unwrap(),
            step.info.optimal_expected_reward.unwrap(),
        );
        assert_eq!(p, probs[a]);
        assert_eq!(p_best, max);
        assert!(p_best - p >= 0.0);
        random_regret += p_best - p;
        n += 1;
        if step.done() {
            env.reset(None, &mut obs).unwrap();
        }
    }
    let random_regret = random_regret / n as f64;
    assert!(
        random_regret > 0.15, // 0.235 measured for world 0
        "uniform policy's mean regret {random_regret}"
    );

    // The oracle policy has zero regret, and its click rate is the mean of the
    // optimal click probabilities (5 sigma).
    env.reset(Some(4), &mut obs).unwrap();
    let (mut clicks, mut expected, mut var) = (0.0, 0.0, 0.0);
    for _ in 0..5000 {
        let step = env
            .step(Action::Discrete(env.best_movie().unwrap()), &mut obs)
            .unwrap();
        let (p, p_best) = (
            step.info.expected_reward.unwrap(),
            step.info.optimal_expected_reward.unwrap(),
        );
        assert_eq!(p, p_best);
        clicks += step.reward;
        expected += p;
        var += p * (1.0 - p);
        if step.done() {
            env.reset(None, &mut obs).unwrap();
        }
    }
    assert!(
        (clicks - expected).abs() < 5.0 * var.sqrt(),
        "{clicks} vs {expected}"
    );
}

#[test]
fn boredom_lowers_the_click_probability_of_repeated_genres() {
    let params = MovieRecParams {
        boredom: 0.8,
        ..session(5, false)
    };
    let mut env = MovieRec::new(params).unwrap();
    let mut obs = Vec::new();
    env.reset(Some(0), &mut obs).unwrap();
    let s = env.current_segment().unwrap();
    let m = env.best_movie().unwrap();
    let g = env.dominant_genre(m).unwrap();
    let same_genre = (0..20)
        .find(|&k| k != m && env.dominant_genre(k) == Some(g))
        .unwrap();
    let other = (0..20).find(|&k| env.dominant_genre(k) != Some(g)).unwrap();
    let before_other = env.expected_click_prob(other).unwrap();
    for k in 0..3 {
        // The k-th recommendation of genre g is penalised by k · boredom.
        let want = sigmoid(logit(&env, s, m) - 0.8 * k as f64);
        assert!((env.expected_click_prob(m).unwrap() - want).abs() < 1e-12);
        let want2 = sigmoid(logit(&env, s, same_genre) - 0.8 * k as f64);
        assert!((env.expected_click_prob(same_genre).unwrap() - want2).abs() < 1e-12);
        let step = env.step(Action::Discrete(m), &mut obs).unwrap();
        assert!((step.info.expected_reward.unwrap() - want).abs() < 1e-12);
        assert!(!step.done());
        // Observation: context, genre counts / T, round fraction.
        assert_eq!(obs.len(), 8 + 5 + 1);
        assert_eq!(obs[8 + g], (k + 1) as f32 / 5.0);
        assert_eq!(obs[13], (k + 1) as f32 / 5.0);
    }
    assert_eq!(
        env.expected_click_prob(other).unwrap(),
        before_other,
        "other genres unaffected"
    );
    assert!(env.expected_click_prob(m).unwrap() < sigmoid(logit(&env, s, m)));
    // The user and their context stay for the session.
    assert_eq!(env.current_segment(), Some(s));
    let step = env.step(Action::Discrete(other), &mut obs).unwrap();
    assert!(!step.done());
    let step = env.step(Action::Discrete(other), &mut obs).unwrap();
    assert!(
        step.terminated && !step.truncated,
        "session ends after 5 rounds"
    );
    let err = env.step(Action::Discrete(0), &mut obs).unwrap_err();
    assert!(matches!(err, EnvError::NeedsReset { .. }), "{err}");
}

#[test]
fn repeating_the_greedy_choice_is_not_optimal_in_a_session() {
    // Expected clicks per session: the per-round oracle vs always recommending
    // the first round's best movie. Averaged over many sessions and worlds.
    let (mut oracle, mut repeat) = (0.0, 0.0);
    for world_seed in 0..20 {
        let params = MovieRecParams {
            world_seed,
            ..MovieRecParams::session()
        };
        for policy in 0..2 {
            let mut env = MovieRec::new(params).unwrap();
            let mut obs = Vec::new();
            env.reset(Some(world_seed), &mut obs).unwrap();
            let first = env.best_movie().unwrap();
            for _ in 0..50 {
                loop {
                    let a = if policy == 0 {
                        env.best_movie().unwrap()
                    } else {
                        first
                    };
                    let step = env.step(Action::Discrete(a), &mut obs).unwrap();
                    let regret = step.info.optimal_expected_reward.unwrap()
                        - step.info.expected_reward.unwrap();
                    assert!(regret >= 0.0);
                    if policy == 0 {
                        assert_eq!(regret, 0.0);
                        oracle += step.info.expected_reward.unwrap();
                    } else {
                        repeat += step.info.expected_reward.unwrap();
                    }
                    if step.done() {
                        assert!(step.terminated);
                        break;
                    }
                }
                env.reset(None, &mut obs).unwrap();
            }
        }
    }
    // Sessions and users differ between the two runs only through the
    // actions, which do not touch the user stream.
    assert!(repeat < 0.6 * oracle, "repeat {repeat} vs oracle {oracle}");
}

#[test]
fn masks_forbid_repeats_through_checked_and_vec_env() {
    let params = session(4, true);
    let mut env = Checked::new(MovieRec::new(params).unwrap());
    let mut obs = Vec::new();
    env.reset(Some(0), &mut obs).unwrap();
    assert!(env.action_mask().unwrap().iter().all(|&b| b));
    let best = env.inner().best_movie().unwrap();
    env.step(Action::Discrete(best), &mut obs).unwrap();
    let mask = env.action_mask().unwrap();
    assert_eq!(mask.iter().filter(|&&b| !b).count(), 1);
    assert!(!mask[best]);
    // The oracle moves to the best legal movie.
    assert_ne!(env.inner().best_movie().unwrap(), best);
    let err = env.step(Action::Discrete(best), &mut obs).unwrap_err();
    assert_eq!(
        err,
        EnvError::MaskedAction {
            env: "MovieRecSession-v0".into(),
            action: best
        }
    );
    // The bare environment refuses too.
    let err = env
        .inner_mut()
        .step(Action::Discrete(best), &mut obs)
        .unwrap_err();
    assert!(matches!(err, EnvError::MaskedAction { .. }), "{err}");

    // VecEnv: masks per copy, reset with the session.
    let envs = (0..2).map(|_| MovieRec::new(params).unwrap()).collect();
    let mut venv = VecEnv::new(envs).unwrap();
    // A repeat is an error naming the copy.
    venv.reset(Some(1)).unwrap();
    venv.step_discrete(&[0, 0]).unwrap();
    let err = venv.step_discrete(&[1, 0]).unwrap_err();
    assert!(
        err.to_string().contains("copy 1") && err.to_string().contains("masked"),
        "{err}"
    );
    venv.reset(Some(1)).unwrap();
    for round in 0..4 {
        let masks = venv.action_masks().unwrap().to_vec();
        assert_eq!(masks.iter().filter(|&&b| !b).count(), 2 * round);
        // Each copy recommends its lowest legal movie.
        let actions: Vec<usize> = masks
            .chunks(20)
            .map(|m| m.iter().position(|&b| b).unwrap())
            .collect();
        assert_eq!(actions, vec![round; 2]);
        venv.step_discrete(&actions).unwrap();
        assert_eq!(venv.terminated(), &[round == 3, round == 3]);
    }
    // After the autoreset every movie is legal again.
    assert!(venv.action_masks().unwrap().iter().all(|&b| b));

    // Without mask_repeats there is no mask.
    assert!(MovieRec::new(session(4, false))
        .unwrap()
        .action_mask()
        .is_none());
}

#[test]
fn drift_changes_the_best_movies_and_no_drift_does_not() {
    let run = |drift: f64| {
        let mut env = MovieRec::new(MovieRecParams {
            drift,
            ..Default::default()
        })
        .unwrap();
        let mut obs = Vec::new();
        env.reset(Some(0), &mut obs).unwrap();
        let start: Vec<usize> = (0..4)
            .map(|s| env.best_movie_for_segment(s).unwrap())
            .collect();
        let probs = env.segment_probs().to_vec();
        let mut changed = 0;
        let mut last = start.clone();
        for _ in 0..5000 {
            let step = env.step(Action::Discrete(0), &mut obs).unwrap();
            if step.done() {
                env.reset(None, &mut obs).unwrap();
            }
            let now: Vec<usize> = (0..4)
                .map(|s| env.best_movie_for_segment(s).unwrap())
                .collect();
            changed += now.iter().zip(&last).filter(|(a, b)| a != b).count();
            last = now;
        }
        (changed, probs != env.segment_probs())
    };
    let (changed, mix_moved) = run(0.05);
    // About 800 changes in 5000 steps (near-ties flip often).
    assert!(changed >= 50, "best movies changed {changed} times");
    assert!(mix_moved);
    assert_eq!(run(0.0), (0, false));
}

#[test]
fn copies_with_one_world_seed_share_the_drifting_world() {
    let params = MovieRecParams {
        drift: 0.1,
        ..Default::default()
    };
    let envs = (0..3).map(|_| MovieRec::new(params).unwrap()).collect();
    let mut venv = VecEnv::new(envs).unwrap();
    venv.reset(Some(10)).unwrap();
    let mut rng = EnvRng::seed_from_u64(0);
    for _ in 0..300 {
        let a: Vec<usize> = (0..3).map(|_| rng.random_range(0..20)).collect();
        venv.step_discrete(&a).unwrap();
    }
    let taste0 = venv.env(0).taste(2).unwrap().to_vec();
    let fresh = MovieRec::new(params).unwrap();
    assert_ne!(taste0, fresh.taste(2).unwrap(), "the world drifted");
    for i in 1..3 {
        assert_eq!(venv.env(i).taste(2).unwrap(), &taste0[..]);
        assert_eq!(venv.env(i).segment_probs(), venv.env(0).segment_probs());
    }
    // ... while their users differ.
    let obs = venv.observations();
    assert_ne!(obs[..8], obs[8..16]);

    // set_drift: stop the drift, and reject bad rates.
    let mut env = MovieRec::new(params).unwrap();
    env.set_drift(0.0).unwrap();
    let mut o = Vec::new();
    env.reset(Some(0), &mut o).unwrap();
    let before = env.taste(0).unwrap().to_vec();
    env.step(Action::Discrete(0), &mut o).unwrap();
    assert_eq!(env.taste(0).unwrap(), &before[..]);
    let err = env.set_drift(1.5).unwrap_err();
    assert!(err.to_string().contains("`drift`"), "{err}");
}

#[test]
fn same_seeds_same_trajectory() {
    let run = |world_seed, seed| {
        let mut env = MovieRec::new(MovieRecParams {
            world_seed,
            drift: 0.01,
            ..MovieRecParams::session()
        })
        .unwrap();
        let mut obs = Vec::new();
        env.reset(Some(seed), &mut obs).unwrap();
        let mut trace = obs.clone();
        for t in 0..300 {
            let step = env.step(Action::Discrete(t % 20), &mut obs).unwrap();
            trace.extend_from_slice(&obs);
            trace.push(step.reward as f32);
            trace.push(step.info.expected_reward.unwrap() as f32);
            if step.done() {
                env.reset(None, &mut obs).unwrap();
                trace.extend_from_slice(&obs);
            }
        }
        trace
    };
    assert_eq!(run(0, 5), run(0, 5));
    assert_ne!(run(0, 5), run(0, 6));
    assert_ne!(run(0, 5), run(1, 5));
}

#[test]
fn observations_and_episodes_have_the_documented_shape() {
    // Plain bandit: observation = context near the segment's features,
    // `rounds` users per episode, the last step truncated.
    let mut env = Checked::new(
        MovieRec::new(MovieRecParams {
            rounds: 7,
            context_noise: 0.0,
            ..Default::default()
        })
        .unwrap(),
    );
    assert_eq!(env.observation_space().flat_dim(), 8);
    assert_eq!(env.action_space().n(), Some(20));
    assert_eq!(env.name(), "MovieRec-v0");
    let mut obs = Vec::new();
    let err = env.inner().best_expected_reward().unwrap_err();
    assert!(matches!(err, EnvError::NeedsReset { .. }), "{err}");
    env.reset(Some(0), &mut obs).unwrap();
    for t in 0..7 {
        let s = env.inner().current_segment().unwrap();
        let f: Vec<f32> = env
            .inner()
            .segment_features(s)
            .unwrap()
            .iter()
            .map(|&x| x as f32)
            .collect();
        assert_eq!(obs, f);
        let step = env.step(Action::Discrete(3), &mut obs).unwrap();
        assert_eq!((step.terminated, step.truncated), (false, t == 6));
    }
    assert!(env.step(Action::Discrete(3), &mut obs).is_err());
    let err = env.inner().expected_click_prob(20).unwrap_err();
    assert!(matches!(err, EnvError::InvalidAction { .. }), "{err}");

    // Context noise: the context scatters around the features with the given std.
    let mut env = MovieRec::new(MovieRecParams {
        context_noise: 0.5,
        ..Default::default()
    })
    .unwrap();
    env.reset(Some(1), &mut obs).unwrap();
    let (mut sq, mut n) = (0.0, 0.0);
    for _ in 0..2000 {
        let s = env.current_segment().unwrap();
        for (o, f) in obs.iter().zip(env.segment_features(s).unwrap()) {
            sq += (*o as f64 - f).powi(2);
            n += 1.0;
        }
        if env.step(Action::Discrete(0), &mut obs).unwrap().done() {
            env.reset(None, &mut obs).unwrap();
        }
    }
    let std = (sq / n).sqrt();
    assert!((std - 0.5).abs() < 0.02, "context noise std {std}");
}

#[test]
fn registry_builds_both_variants() {
    let registry = Registry::builtin();
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let mut env = registry
        .make("MovieRecSession-v0", &toml::Table::new())
        .unwrap();
    assert_eq!(env.name(), "MovieRecSession-v0");
    assert_eq!(env.observation_space().flat_dim(), 8 + 5 + 1);
    let mut obs = Vec::new();
    env.reset(Some(0), &mut obs).unwrap();
    for t in 0..10 {
        let step = env.step(Action::Discrete(t), &mut obs).unwrap();
        assert_eq!(step.terminated, t == 9);
    }
    let env = registry
        .make(
            "MovieRecSession-v0",
            &table("session_length = 3\nn_genres = 2\nmask_repeats = true"),
        )
        .unwrap();
    assert_eq!(env.observation_space().flat_dim(), 8 + 2 + 1);
    assert!(env.action_mask().is_some());
    let env = registry
        .make("MovieRec-v0", &table("n_movies = 7\ncontext_dim = 3"))
        .unwrap();
    assert_eq!(env.observation_space().flat_dim(), 3);
    assert_eq!(env.action_space().n(), Some(7));

    // Each keeps the name it was made by whatever its session length: a
    // one-round MovieRecSession-v0 is a plain bandit (no session features,
    // episodes of `rounds` users) that still reports MovieRecSession-v0.
    let mut env = registry
        .make(
            "MovieRecSession-v0",
            &table("session_length = 1\nrounds = 5"),
        )
        .unwrap();
    assert_eq!(env.name(), "MovieRecSession-v0");
    assert_eq!(env.observation_space().flat_dim(), 8);
    env.reset(Some(0), &mut obs).unwrap();
    for t in 0..5 {
        let step = env.step(Action::Discrete(0), &mut obs).unwrap();
        assert_eq!((step.terminated, step.truncated), (false, t == 4));
    }
    let env = registry
        .make("MovieRec-v0", &table("session_length = 3"))
        .unwrap();
    assert_eq!(env.name(), "MovieRec-v0");
    assert_eq!(env.observation_space().flat_dim(), 8 + 5 + 1);
}

#[test]
fn bad_parameters_are_rejected_with_the_parameter_named() {
    let registry = Registry::builtin();
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    for (bad, param) in [
        ("n_movies = 0", "n_movies"),
        ("n_genres = 0", "n_genres"),
        ("n_segments = 0", "n_segments"),
        ("context_dim = 0", "context_dim"),
        ("n_movies = 100000000", "n_movies"),
        ("n_movies = 100000\nn_genres = 100000", "n_movies"),
        ("context_noise = -0.1", "context_noise"),
        ("context_noise = nan", "context_noise"),
        ("context_noise = inf", "context_noise"),
        ("rounds = 0", "rounds"),
        ("session_length = 0", "session_length"),
        ("boredom = -1.0", "boredom"),
        ("boredom = nan", "boredom"),
        ("drift = -0.1", "drift"),
        ("drift = 2.0", "drift"),
        ("drift = nan", "drift"),
        ("session_length = 21\nmask_repeats = true", "session_length"),
    ] {
        let err = registry.make("MovieRec-v0", &table(bad)).err().unwrap();
        assert!(
            matches!(&err, EnvError::InvalidParameter { param: p, .. } if p == param),
            "{bad}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("`{param}`")),
            "{bad}: {err}"
        );
    }
    for bad in ["n_movie = 3", "n_movies = -1", "drift = \"a\""] {
        let err = registry.make("MovieRec-v0", &table(bad)).err().unwrap();
        assert!(
            matches!(err, EnvError::BadParameters { .. }),
            "{bad}: {err}"
        );
    }
    // mask_repeats with session_length = n_movies is fine.
    assert!(registry
        .make(
            "MovieRec-v0",
            &table("session_length = 20\nmask_repeats = true")
        )
        .is_ok());
}
