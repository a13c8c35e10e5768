//! Your own environment, trained without touching the library: a small
//! inventory problem implementing `klrl::envs::Env`, handed to
//! `Trainer::new` and trained with PPO (adaptive KL penalty), then compared
//! with the classic base-stock heuristic.
//!
//! The shop sells one product. Every morning it sees its stock `I` (0 to
//! 20 units) and orders `q` units (0 to 10; delivered at once, stock capped
//! at 20); during the day a Poisson(5) number of customers each want one
//! unit; unmet demand is lost. The day's profit is
//! `price · sold − cost · q − holding · left over`, with price 4, cost 2 and
//! holding 0.5 per unit kept overnight. An episode is 50 days (a time-limit
//! truncation), starting from a random stock of 0 to 10 units.
//!
//! The heuristic is the base-stock ("order up to S") policy, with S from the
//! newsvendor critical ratio: the smallest S with P(D ≤ S) ≥ c_u / (c_u + c_o),
//! where a unit short costs the lost margin c_u = price − cost and a unit too
//! many costs c_o = holding (Arrow, Harris & Marschak 1951; e.g. Zipkin,
//! *Foundations of Inventory Management*, 2000, §6). For comparison the
//! example also scans every S for the best base-stock level on the same
//! evaluation days.
//!
//! Run it from the workspace root:
//!
//! ```text
//! cargo run --release --example custom_env
//! ```
//!
//! Expected output: a progress line every 50 updates, the learned order for
//! each stock level next to the base-stock rule's S − I, then the mean 50-day
//! profit over 100 evaluation episodes (the same demand for every policy) of
//! the learned policy, the critical-ratio base-stock policy (S = 7), and the
//! best base-stock level; the learned policy comes within a few percent of
//! the base-stock policies. About 5 s. The last line reads
//! `final: learned=… base_stock=… best_base_stock=… S=7`.
//!
//! With `KLRL_EXAMPLE_QUICK=1` it trains for 40k steps instead of 200k.

use anyhow::{Context, Result};
use klrl::envs::{Action, Env, EnvError, EnvRng, Space, Step, StepInfo};
use klrl::optim::config::EnvConfig;
use klrl::optim::{AlgoConfig, ExperimentConfig, NetConfig, PpoConfig, TrainConfig, Trainer};
use rand::{Rng, SeedableRng};

/// Largest stock the shop can hold.
const CAPACITY: usize = 20;
/// Largest order per day.
const MAX_ORDER: usize = 10;
/// Mean daily demand λ (Poisson).
const DEMAND_MEAN: f64 = 5.0;
/// Selling price, purchase cost and overnight holding cost per unit.
const PRICE: f64 = 4.0;
const COST: f64 = 2.0;
const HOLDING: f64 = 0.5;
/// Days per episode.
const HORIZON: u32 = 50;

/// The single-product inventory environment.
struct Inventory {
    stock: usize,
    day: u32,
    rng: EnvRng,
    obs_space: Space,
    act_space: Space,
}

impl Inventory {
    fn new() -> Self {
        Inventory {
            stock: 0,
            day: 0,
            rng: EnvRng::seed_from_u64(0),
            // The stock level one-hot: the policy network then acts as a table.
            obs_space: Space::uniform_box(CAPACITY + 1, 0.0, 1.0),
            act_space: Space::discrete(MAX_ORDER + 1),
        }
    }

    fn observe(&self, obs: &mut Vec<f32>) {
        obs.clear();
        obs.extend((0..=CAPACITY).map(|i| if i == self.stock { 1.0 } else { 0.0 }));
    }
}

/// A Poisson(λ) draw by Knuth's multiplication method (fine for small λ).
fn poisson(rng: &mut EnvRng, lambda: f64) -> usize {
    let limit = (-lambda).exp();
    let (mut k, mut p) = (0, rng.random::<f64>());
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

impl Env for Inventory {
    fn name(&self) -> &str {
        "Inventory"
    }
    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut Vec<f32>) -> Result<(), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        self.stock = self.rng.random_range(0..=MAX_ORDER);
        self.day = 0;
        self.observe(obs);
        Ok(())
    }

    fn step(&mut self, action: Action<'_>, obs: &mut Vec<f32>) -> Result<Step, EnvError> {
        // A wrong action is a typed error (out of range, or not a discrete one).
        self.act_space.check_action(self.name(), action)?;
        let Action::Discrete(order) = action else {
            return Err(EnvError::InvalidAction {
                env: self.name().into(),
                action: format!("{action:?}"),
                reason: "the order quantity must be a discrete action".into(),
            });
        };
        let available = (self.stock + order).min(CAPACITY);
        let demand = poisson(&mut self.rng, DEMAND_MEAN);
        let sold = demand.min(available);
        self.stock = available - sold;
        self.day += 1;
        self.observe(obs);
        Ok(Step {
            reward: PRICE * sold as f64 - COST * order as f64 - HOLDING * self.stock as f64,
            terminated: false,
            truncated: self.day == HORIZON,
            info: StepInfo::default(),
        })
    }
}

/// Mean return of `order(stock)` over `episodes` episodes seeded `seed + k`
/// (as `Trainer::evaluate` seeds them, so every policy sees the same demand).
fn evaluate_rule(order: impl Fn(usize) -> usize, episodes: u64, seed: u64) -> Result<f64> {
    let (mut env, mut obs, mut total) = (Inventory::new(), Vec::new(), 0.0);
    for k in 0..episodes {
        env.reset(Some(seed + k), &mut obs)?;
        loop {
            let step = env.step(Action::Discrete(order(env.stock)), &mut obs)?;
            total += step.reward;
            if step.done() {
                break;
            }
        }
    }
    Ok(total / episodes as f64)
}

/// The newsvendor base-stock level: the smallest S with
/// P(D ≤ S) ≥ c_u / (c_u + c_o), c_u = price − cost, c_o = holding.
fn critical_ratio_level() -> usize {
    let ratio = (PRICE - COST) / (PRICE - COST + HOLDING);
    let (mut pmf, mut cdf) = ((-DEMAND_MEAN).exp(), 0.0);
    for s in 0..CAPACITY {
        cdf += pmf;
        if cdf >= ratio {
            return s;
        }
        pmf *= DEMAND_MEAN / (s + 1) as f64;
    }
    CAPACITY
}

fn main() -> Result<()> {
    // One compute thread: candle's thread pool is ~20× slower on networks this small.
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let quick = std::env::var_os("KLRL_EXAMPLE_QUICK").is_some();

    let config = ExperimentConfig {
        env: EnvConfig {
            name: "Inventory".into(),
            params: Default::default(),
        },
        train: TrainConfig {
            total_steps: if quick { 40_000 } else { 200_000 },
            n_envs: 8,
            n_steps: 64,
            // Tomorrow matters through today's leftover stock only.
            gamma: 0.9,
            gae_lambda: 0.9,
            scale_rewards: true,
            ..TrainConfig::default()
        },
        policy: NetConfig::default(),
        algo: AlgoConfig::Ppo(PpoConfig {
            lr: 1e-3,
            lr_anneal: true,
            minibatch_size: 128,
            ..PpoConfig::default()
        }),
    };
    let envs = (0..config.train.n_envs).map(|_| Inventory::new()).collect();
    let mut trainer = Trainer::new(config, envs)?;
    trainer.train(|r| {
        if r.update % 50 == 0 {
            let n = r.episodes.len().max(1) as f64;
            let mean = r.episodes.iter().map(|e| e.ret).sum::<f64>() / n;
            println!(
                "update {:>4}  steps {:>6}  50-day profit {:>6.1}  KL {:.5}  beta {:.4}",
                r.update, r.env_steps, mean, r.diagnostics.kl_old_new, r.diagnostics.beta
            );
        }
        true
    })?;

    let (episodes, seed) = (100, 1_000_000);
    let s = critical_ratio_level();
    let learned = trainer.evaluate(&mut Inventory::new(), episodes as usize, true, seed)?;
    let base_stock = evaluate_rule(
        |stock| s.saturating_sub(stock).min(MAX_ORDER),
        episodes,
        seed,
    )?;
    let mut best = (0, f64::NEG_INFINITY);
    for level in 0..=CAPACITY {
        let ret = evaluate_rule(
            |stock| level.saturating_sub(stock).min(MAX_ORDER),
            episodes,
            seed,
        )?;
        if ret > best.1 {
            best = (level, ret);
        }
    }
    // The learned order for each starting stock, next to the base-stock rule's S − I.
    let states: Vec<f32> = (0..=MAX_ORDER)
        .flat_map(|i| (0..=CAPACITY).map(move |j| if i == j { 1.0 } else { 0.0 }))
        .collect();
    let obs = trainer.policy.obs_tensor(&states)?;
    let orders = trainer.policy.dist(&obs, None)?.mode()?;
    println!("\nstock     {:?}", (0..=MAX_ORDER).collect::<Vec<_>>());
    let orders = orders
        .as_discrete()
        .context("the policy orders whole units")?;
    println!("learned   {orders:?}");
    let rule: Vec<usize> = (0..=MAX_ORDER).map(|i| s.saturating_sub(i)).collect();
    println!("S − stock {rule:?}");

    println!("\nmean 50-day profit over {episodes} evaluation episodes (same demand):");
    println!("  learned PPO policy        {:>7.1}", learned.mean_return());
    println!("  base-stock S = {s:<2} (ratio) {base_stock:>7.1}");
    println!("  best base-stock S = {:<2}   {:>7.1}", best.0, best.1);
    println!(
        "final: learned={:.1} base_stock={base_stock:.1} best_base_stock={:.1} S={s}",
        learned.mean_return(),
        best.1
    );
    Ok(())
}
