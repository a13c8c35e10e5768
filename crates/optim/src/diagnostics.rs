//! What every policy update reports: the columns of a run's `metrics.csv`.

use serde::{Deserialize, Serialize};

/// Diagnostics of one update, returned by every optimiser. Fields that an
/// algorithm does not have are NaN (e.g. `cg_iters` for PPO, `beta` for
/// PPO-clip) and written as empty cells.
///
/// KL columns are in nats and measure KL(π_old ‖ π_new) between the policy
/// that collected the batch and the policy after the update, over the batch's
/// states.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateDiagnostics {
    /// Exact mean over the batch states of KL(π_old(·|s) ‖ π_new(·|s)).
    pub kl_old_new: f64,
    /// Exact mean of the reverse direction, KL(π_new ‖ π_old).
    pub kl_new_old: f64,
    /// Largest per-state KL(π_old ‖ π_new) in the batch.
    pub kl_max: f64,
    /// Sample estimate k1 = mean(−log r) of KL(π_old ‖ π_new), r = π_new(a)/π_old(a).
    pub kl_k1: f64,
    /// Sample estimate k3 = mean((r − 1) − log r).
    pub kl_k3: f64,
    /// The KL-penalty coefficient β used in this update (after adaptation: the
    /// value the next update will use).
    pub beta: f64,
    /// Fraction of samples whose ratio left [1 − ε, 1 + ε] (PPO-clip).
    pub clip_frac: f64,
    /// Mean entropy of π_new over the batch states.
    pub entropy: f64,
    /// The policy loss (negated surrogate objective) at the last step.
    pub policy_loss: f64,
    /// The value loss at the last step.
    pub value_loss: f64,
    /// 1 − Var(returns − V) / Var(returns) before the update.
    pub explained_var: f64,
    /// Global gradient norm of the policy loss (before clipping), last step.
    pub grad_norm: f64,
    /// Conjugate-gradient iterations (TRPO, NPG).
    pub cg_iters: f64,
    /// Conjugate-gradient residual ‖g − F x‖ at the end (TRPO, NPG).
    pub cg_residual: f64,
    /// Backtracking line-search steps tried (TRPO).
    pub ls_steps: f64,
    /// 1 if the update was applied, 0 if the line search rejected every
    /// candidate and the parameters were restored.
    pub accepted: f64,
    /// Learning rate used (after annealing).
    pub lr: f64,
    /// Policy epochs run (fewer than configured when `early_stop_kl` fired).
    pub epochs_run: f64,
    /// The KL limit in force for this update, in nats: TRPO's δ, a hard
    /// `max_kl`, the projection's per-state ε, or the penalties' target
    /// d_targ (see [`crate::config::AlgoConfig::kl_limit`]); NaN when the
    /// algorithm has none.
    pub kl_limit: f64,
    /// The fraction α of the update's step that was kept by a hard limit's
    /// search along θ_old → θ (1: the whole step, 0: θ_old restored); NaN
    /// when no hard limit applies (TRPO reports its line search in
    /// `ls_steps` and `accepted`).
    pub step_frac: f64,
    /// Exact mean over the batch states of KL(π_new(·|s) ‖ π_ref(·|s)), the
    /// distance to the reference policy of `[algo.reference]`; NaN without one.
    pub kl_ref: f64,
    /// Largest per-state KL(π_new ‖ π_ref) in the batch.
    pub kl_ref_max: f64,
    /// The reference bound ε_ref (constraint mode) or target (adaptive
    /// mode); NaN for a fixed penalty or without a reference.
    pub kl_ref_limit: f64,
    /// The coefficient of Ê[KL(π ‖ π_ref)] the next update uses (the
    /// Lagrange multiplier in constraint mode).
    pub ref_coef: f64,
    /// 1 if the update was rejected because a loss, gradient, new parameter
    /// or the measured KL was not finite: the policy, the value network and
    /// the optimiser state were restored bit for bit to what they were
    /// before it (the rollout still counts); 0 otherwise. The run stops after
    /// `train.max_rejected_updates` rejected updates in a row.
    pub rejected: f64,
    /// Minibatch steps (PPO, vanilla PG, the value fits of TRPO and NPG)
    /// skipped in this update because their loss, gradient or new parameters
    /// were not finite; each skip leaves parameters and optimiser state as
    /// they were. NaN when the update failed before counting them.
    pub rejected_steps: f64,
}

impl UpdateDiagnostics {
    /// Column names, in the order of [`UpdateDiagnostics::values`].
    pub const COLUMNS: [&'static str; 26] = [
        "kl_old_new",
        "kl_new_old",
        "kl_max",
        "kl_k1",
        "kl_k3",
        "beta",
        "clip_frac",
        "entropy",
        "policy_loss",
        "value_loss",
        "explained_var",
        "grad_norm",
        "cg_iters",
        "cg_residual",
        "ls_steps",
        "accepted",
        "lr",
        "epochs_run",
        "kl_limit",
        "step_frac",
        "kl_ref",
        "kl_ref_max",
        "kl_ref_limit",
        "ref_coef",
        "rejected",
        "rejected_steps",
    ];

    /// All fields NaN (none measured yet), the rejection counts 0.
    pub fn empty() -> Self {
        let n = f64::NAN;
        UpdateDiagnostics {
            kl_old_new: n,
            kl_new_old: n,
            kl_max: n,
            kl_k1: n,
            kl_k3: n,
            beta: n,
            clip_frac: n,
            entropy: n,
            policy_loss: n,
            value_loss: n,
            explained_var: n,
            grad_norm: n,
            cg_iters: n,
            cg_residual: n,
            ls_steps: n,
            accepted: n,
            lr: n,
            epochs_run: n,
            kl_limit: n,
            step_frac: n,
            kl_ref: n,
            kl_ref_max: n,
            kl_ref_limit: n,
            ref_coef: n,
            rejected: 0.0,
            rejected_steps: 0.0,
        }
    }

    /// The values in the order of [`UpdateDiagnostics::COLUMNS`].
    pub fn values(&self) -> [f64; 26] {
        [
            self.kl_old_new,
            self.kl_new_old,
            self.kl_max,
            self.kl_k1,
            self.kl_k3,
            self.beta,
            self.clip_frac,
            self.entropy,
            self.policy_loss,
            self.value_loss,
            self.explained_var,
            self.grad_norm,
            self.cg_iters,
            self.cg_residual,
            self.ls_steps,
            self.accepted,
            self.lr,
            self.epochs_run,
            self.kl_limit,
            self.step_frac,
            self.kl_ref,
            self.kl_ref_max,
            self.kl_ref_limit,
            self.ref_coef,
            self.rejected,
            self.rejected_steps,
        ]
    }
}

/// Explained variance 1 − Var(y − ŷ) / Var(y); NaN when Var(y) = 0.
pub fn explained_variance(pred: &[f32], target: &[f32]) -> f64 {
    let var = |v: &mut dyn Iterator<Item = f64>| {
        let xs: Vec<f64> = v.collect();
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n
    };
    let var_y = var(&mut target.iter().map(|&y| y as f64));
    if var_y == 0.0 || target.is_empty() {
        return f64::NAN;
    }
    let var_res = var(&mut target.iter().zip(pred).map(|(&y, &p)| y as f64 - p as f64));
    1.0 - var_res / var_y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_values_line_up() {
        let mut d = UpdateDiagnostics::empty();
        d.kl_old_new = 1.0;
        d.epochs_run = 18.0;
        d.cg_iters = 13.0;
        let v = d.values();
        let at = |name: &str| {
            v[UpdateDiagnostics::COLUMNS
                .iter()
                .position(|c| *c == name)
                .unwrap()]
        };
        assert_eq!(at("kl_old_new"), 1.0);
        assert_eq!(at("epochs_run"), 18.0);
        assert_eq!(at("cg_iters"), 13.0);
        assert!(at("beta").is_nan());
        // Every field appears exactly once in the serialised form, under its column name.
        let json = serde_json::to_value(d).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), UpdateDiagnostics::COLUMNS.len());
        for c in UpdateDiagnostics::COLUMNS {
            assert!(json.get(c).is_some(), "{c}");
        }
    }

    #[test]
    fn explained_variance_cases() {
        assert_eq!(explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(explained_variance(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), 0.0);
        assert!(explained_variance(&[0.0, 0.0], &[5.0, 5.0]).is_nan());
        let ev = explained_variance(&[1.5, 1.5], &[1.0, 2.0]);
        assert_eq!(ev, 0.0);
    }
}
