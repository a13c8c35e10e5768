//! What the classic-control ports (CartPole, Acrobot, MountainCar,
//! MountainCarContinuous, Pendulum) share besides their physics: re-seeding,
//! the checks before a step, and exact snapshots of `(state, needs_reset,
//! rng)` (MountainCarContinuous has one more flag and writes its own).

use rand::SeedableRng;

use crate::{Action, EnvError, EnvRng, EnvSnapshot, RngState, Space};

/// `reset(Some(seed))` re-seeds the environment's generator; `None` keeps
/// its stream (Gymnasium's convention).
pub(crate) fn reseed(rng: &mut EnvRng, seed: Option<u64>) {
    if let Some(seed) = seed {
        *rng = EnvRng::seed_from_u64(seed);
    }
}

/// The checks before a step: the action is in the space, and the episode is
/// running (not ended, and reset at least once).
#[inline]
pub(crate) fn check_step(
    env: &str,
    space: &Space,
    action: Action<'_>,
    needs_reset: bool,
) -> Result<(), EnvError> {
    space.check_action(env, action)?;
    if needs_reset {
        return Err(needs_reset_error(env));
    }
    Ok(())
}

#[cold]
fn needs_reset_error(env: &str) -> EnvError {
    EnvError::NeedsReset {
        env: env.into(),
        when: "after the episode ended (terminated) or before the first reset()",
    }
}

/// Snapshot of a classic port: the physical state, `[needs_reset]`, the RNG.
pub(crate) fn snapshot(env: &str, state: &[f64], needs_reset: bool, rng: &EnvRng) -> EnvSnapshot {
    let mut s = EnvSnapshot::new(env);
    s.floats = state.to_vec();
    s.flags = vec![needs_reset];
    s.rngs = vec![RngState::of(rng)];
    s
}

/// Restore a [`snapshot`]; nothing changes when it does not fit.
pub(crate) fn restore(
    env: &str,
    snapshot: &EnvSnapshot,
    state: &mut [f64],
    needs_reset: &mut bool,
    rng: &mut EnvRng,
) -> Result<(), EnvError> {
    snapshot.expect(env, env, [state.len(), 0, 1, 1, 0])?;
    state.copy_from_slice(&snapshot.floats);
    *needs_reset = snapshot.flags[0];
    *rng = snapshot.rngs[0].to_rng();
    Ok(())
}
