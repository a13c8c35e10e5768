//! Generalised advantage estimation, GAE(λ) (Schulman et al. 2016,
//! "High-dimensional continuous control using generalized advantage
//! estimation", eq. 16), with termination and truncation kept apart.

/// One rollout segment of `n_steps × n_envs` transitions, time-major: entry
/// `t * n_envs + e` is step `t` of environment copy `e`.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Number of environment copies.
    pub n_envs: usize,
    /// r_t.
    pub rewards: &'a [f32],
    /// V(s_t), the value of the observation the action was taken in.
    pub values: &'a [f32],
    /// The transition reached a terminal state: no bootstrap.
    pub terminated: &'a [bool],
    /// The episode was cut short (time limit) after this transition.
    pub truncated: &'a [bool],
    /// V(final observation) for truncated transitions (read only where
    /// `truncated && !terminated`; anything elsewhere).
    pub final_values: &'a [f32],
    /// V(s_T) of the observation after the last step of the segment, one per copy.
    pub last_values: &'a [f32],
}

/// Advantages Â_t and value targets (returns) R_t = Â_t + V(s_t).
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// Â_t, time-major like the segment.
    pub advantages: Vec<f32>,
    /// Â_t + V(s_t): the value function's regression targets.
    pub returns: Vec<f32>,
}

/// Compute GAE(λ) over a segment.
///
/// With V'_t the value of the next state,
///
/// - δ_t = r_t + γ V'_t − V(s_t), where V'_t = 0 if the transition terminated,
///   V(final observation) if it was truncated, V(s_{t+1}) otherwise (and
///   V(s_T) = `last_values` after the segment's last step);
/// - Â_t = δ_t + γλ (1 − done_t) Â_{t+1}, done_t = terminated or truncated:
///   the recursion never runs across an episode boundary.
///
/// A truncated step therefore bootstraps from the value of the observation the
/// time limit cut off, inside the recursion itself. (Stable-Baselines3 adds
/// γ V(final obs) to the reward instead, which is the same δ; CleanRL treats
/// truncation as termination, which biases values near the time limit.)
///
/// With γ = 0 (a bandit: every round is a fresh context) the return is the
/// immediate reward and nothing is bootstrapped: Â_t = r_t − V(s_t) and
/// R_t = r_t exactly, for any λ, and no value of a next state is read (a
/// non-finite one cannot leak in through 0 · V').
///
/// # Panics
/// If the slices' lengths disagree; the rollout buffer builds them together.
pub fn gae(seg: &Segment<'_>, gamma: f32, lambda: f32) -> Advantages {
    let n = seg.rewards.len();
    let ne = seg.n_envs;
    assert!(
        ne > 0 && n.is_multiple_of(ne),
        "segment length {n} is not a multiple of n_envs {ne}"
    );
    for (name, len) in [
        ("values", seg.values.len()),
        ("terminated", seg.terminated.len()),
        ("truncated", seg.truncated.len()),
        ("final_values", seg.final_values.len()),
    ] {
        assert_eq!(len, n, "segment field {name} has length {len}, rewards {n}");
    }
    assert_eq!(
        seg.last_values.len(),
        ne,
        "last_values must have one entry per copy"
    );
    if gamma == 0.0 {
        return Advantages {
            advantages: seg
                .rewards
                .iter()
                .zip(seg.values)
                .map(|(r, v)| r - v)
                .collect(),
            returns: seg.rewards.to_vec(),
        };
    }
    let steps = n / ne;
    let mut advantages = vec![0.0f32; n];
    for e in 0..ne {
        let mut next_adv = 0.0f32;
        for t in (0..steps).rev() {
            let i = t * ne + e;
            let next_value = if seg.terminated[i] {
                0.0
            } else if seg.truncated[i] {
                seg.final_values[i]
            } else if t + 1 < steps {
                seg.values[i + ne]
            } else {
                seg.last_values[e]
            };
            let delta = seg.rewards[i] + gamma * next_value - seg.values[i];
            let done = seg.terminated[i] || seg.truncated[i];
            let carry = if done { 0.0 } else { gamma * lambda * next_adv };
            next_adv = delta + carry;
            advantages[i] = next_adv;
        }
    }
    let returns = advantages
        .iter()
        .zip(seg.values)
        .map(|(a, v)| a + v)
        .collect();
    Advantages {
        advantages,
        returns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One copy, five steps: a termination at t = 1 and a truncation at t = 3.
    /// γ = 0.9, λ = 0.5. Computed by hand:
    ///
    /// t=4 (segment end, bootstrap V(s_5)=last=2.0): δ4 = 1 + 0.9·2 − 0.5 = 2.3; Â4 = 2.3
    /// t=3 (truncated, V(final)=4.0):               δ3 = 1 + 0.9·4 − 1.0 = 3.6; Â3 = 3.6 (no carry)
    /// t=2 (continues into t=3, V(s_3)=1.0):          δ2 = 0 + 0.9·1 − 2.0 = −1.1; Â2 = −1.1 + 0.45·3.6 = 0.52
    /// t=1 (terminated):                              δ1 = 5 + 0 − 3.0 = 2.0; Â1 = 2.0
    /// t=0 (continues, V(s_1)=3.0):                   δ0 = 1 + 0.9·3 − 1.5 = 2.2; Â0 = 2.2 + 0.45·2.0 = 3.1
    #[test]
    fn hand_computed_segment_with_termination_and_truncation() {
        let seg = Segment {
            n_envs: 1,
            rewards: &[1.0, 5.0, 0.0, 1.0, 1.0],
            values: &[1.5, 3.0, 2.0, 1.0, 0.5],
            terminated: &[false, true, false, false, false],
            truncated: &[false, false, false, true, false],
            final_values: &[99.0, 99.0, 99.0, 4.0, 99.0],
            last_values: &[2.0],
        };
        let out = gae(&seg, 0.9, 0.5);
        let expected = [3.1, 2.0, 0.52, 3.6, 2.3];
        for (a, e) in out.advantages.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{:?} vs {expected:?}", out.advantages);
        }
        let values = [1.5, 3.0, 2.0, 1.0, 0.5];
        for ((r, a), v) in out.returns.iter().zip(&out.advantages).zip(values) {
            assert_eq!(*r, a + v);
        }
    }

    #[test]
    fn terminated_and_truncated_together_is_terminal() {
        let seg = Segment {
            n_envs: 1,
            rewards: &[1.0],
            values: &[0.25],
            terminated: &[true],
            truncated: &[true],
            final_values: &[10.0],
            last_values: &[10.0],
        };
        assert_eq!(gae(&seg, 0.99, 0.95).advantages, vec![0.75]);
    }

    #[test]
    fn copies_are_independent_and_time_major() {
        // Two copies interleaved; copy 1 terminates at t=0, copy 0 never ends.
        let seg = Segment {
            n_envs: 2,
            rewards: &[1.0, 2.0, 1.0, 2.0],
            values: &[0.0, 0.0, 0.0, 0.0],
            terminated: &[false, true, false, false],
            truncated: &[false, false, false, false],
            final_values: &[0.0; 4],
            last_values: &[0.0, 0.0],
        };
        let out = gae(&seg, 1.0, 1.0);
        // Copy 0: Monte-Carlo returns 2, 1. Copy 1: 2 (terminated), then 2.
        assert_eq!(out.advantages, vec![2.0, 2.0, 1.0, 2.0]);
    }

    /// A bandit: Â = r − V(s) and R = r bit for bit, whatever λ, the episode
    /// flags and the next-state values (here non-finite, so any bootstrap
    /// term, even multiplied by γ = 0, would show as NaN).
    #[test]
    fn gamma_zero_is_reward_minus_value_with_no_bootstrap() {
        let rewards = [1.0f32, 0.0, 0.1, -0.7, 3.0, 0.3];
        let values = [0.1f32, 0.9, -0.2, 0.35, 2.5, 0.7];
        let seg = Segment {
            n_envs: 2,
            rewards: &rewards,
            values: &values,
            terminated: &[false, true, false, false, false, false],
            truncated: &[false, false, true, false, false, false],
            final_values: &[
                f32::NAN,
                f32::INFINITY,
                f32::NAN,
                f32::NAN,
                f32::NAN,
                f32::NAN,
            ],
            last_values: &[f32::INFINITY, f32::NAN],
        };
        for lambda in [0.0, 0.95, 1.0] {
            let out = gae(&seg, 0.0, lambda);
            for i in 0..rewards.len() {
                let expected = rewards[i] - values[i];
                assert_eq!(
                    out.advantages[i].to_bits(),
                    expected.to_bits(),
                    "λ {lambda}, {i}"
                );
                assert_eq!(
                    out.returns[i].to_bits(),
                    rewards[i].to_bits(),
                    "λ {lambda}, {i}"
                );
            }
        }
    }

    #[test]
    fn lambda_one_is_discounted_return_minus_value_and_lambda_zero_is_td() {
        let rewards = [0.5, -1.0, 2.0, 0.25];
        let values = [0.3, -0.2, 0.7, 0.1];
        let seg = Segment {
            n_envs: 1,
            rewards: &rewards,
            values: &values,
            terminated: &[false; 4],
            truncated: &[false; 4],
            final_values: &[0.0; 4],
            last_values: &[0.9],
        };
        let g = 0.95f32;
        let mc = gae(&seg, g, 1.0);
        let td = gae(&seg, g, 0.0);
        let mut ret = 0.9f32;
        for t in (0..4).rev() {
            ret = rewards[t] + g * ret;
            assert!((mc.advantages[t] - (ret - values[t])).abs() < 1e-5);
            let next = if t == 3 { 0.9 } else { values[t + 1] };
            assert!((td.advantages[t] - (rewards[t] + g * next - values[t])).abs() < 1e-6);
        }
    }
}
