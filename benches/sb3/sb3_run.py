"""One Stable-Baselines3 / sb3-contrib training run, timed; prints one JSON object.

    python sb3_run.py WORK --seed S [--steps N]

WORK is one of the keys of WORKS (the same work as a klrl config, named in
WORKS[...]["klrl"]). Measured, with one torch thread:

- setup_s: building the vectorised environments and the model;
- learn_s: the wall time of model.learn();
- train_s: the time in the algorithm's train() (the update phase), per call;
- steps_to_threshold / time_to_threshold_s: the first rollout end at which
  the rolling mean of the last 20 finished training episodes reaches the
  environment's reward threshold (CartPole: 475), as `klrl bench` counts it
  (checked once per batch; the time is taken after that batch's update, from
  the start of setup, as klrl's is from building the trainer);
- final_return_mean: that rolling mean at the end;
- eval: for Pendulum, a deterministic evaluation over 10 episodes after
  training (not timed).
The whole-process wall time is measured by the caller (compare.py).
"""

import argparse
import json
import time
from collections import deque

T_START = time.perf_counter()

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sb3_contrib import TRPO  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402

T_IMPORTED = time.perf_counter()

WINDOW = 20


def linear(initial):
    """rl-baselines3-zoo's lin_<x>: progress_remaining * x."""

    def schedule(progress_remaining):
        return progress_remaining * initial

    return schedule


# The work of each klrl config, in SB3's terms (rl-baselines3-zoo's
# hyperparams/ppo.yml and trpo.yml, or SB3's defaults).
WORKS = {
    "ppo-cartpole-zoo": dict(
        klrl="configs/bench/cartpole-ppo-zoo.toml",
        algo=PPO, env="CartPole-v1", n_envs=8, steps=100_000,
        kwargs=dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                    n_epochs=20, ent_coef=0.0, learning_rate=linear(1e-3),
                    clip_range=linear(0.2)),
    ),
    "trpo-cartpole-zoo": dict(
        klrl="configs/bench/cartpole-trpo-zoo.toml",
        algo=TRPO, env="CartPole-v1", n_envs=2, steps=100_000,
        kwargs=dict(n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98,
                    gamma=0.99, learning_rate=1e-3, n_critic_updates=20),
    ),
    # PPO("MlpPolicy", "CartPole-v1"): SB3's defaults, one env.
    "ppo-cartpole-sb3-default": dict(
        klrl="configs/bench/cartpole-ppo-sb3-default.toml",
        algo=PPO, env="CartPole-v1", n_envs=1, steps=100_000, kwargs=dict(),
    ),
    "ppo-pendulum-zoo-gsde": dict(
        klrl="configs/pendulum-ppo-gsde.toml",
        algo=PPO, env="Pendulum-v1", n_envs=4, steps=100_000,
        kwargs=dict(n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                    ent_coef=0.0, learning_rate=1e-3, clip_range=0.2,
                    use_sde=True, sde_sample_freq=4),
    ),
    "trpo-pendulum-zoo-gsde": dict(
        klrl="configs/pendulum-trpo-gsde.toml",
        algo=TRPO, env="Pendulum-v1", n_envs=2, steps=100_000,
        kwargs=dict(n_steps=1024, gamma=0.9, n_critic_updates=15,
                    use_sde=True, sde_sample_freq=4),
    ),
    # Per-update cost of a larger network (16 updates of 2048 transitions).
    "ppo-pendulum-256": dict(
        klrl="configs/bench/pendulum-ppo-256.toml",
        algo=PPO, env="Pendulum-v1", n_envs=1, steps=32_768,
        kwargs=dict(n_steps=2048, batch_size=64, n_epochs=10,
                    policy_kwargs=dict(net_arch=dict(pi=[256, 256], vf=[256, 256]))),
    ),
}


class Outcome(BaseCallback):
    """Rolling mean of the last WINDOW finished training episodes, checked at
    every rollout end, as `klrl bench` does after every update."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold
        self.window = deque(maxlen=WINDOW)
        self.episodes = 0
        self.pending_steps = None  # reached at this rollout end, time after its train()
        self.reached = None  # (steps, seconds)

    def _on_step(self):
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.window.append(float(ep["r"]))
                self.episodes += 1
        return True

    def _on_rollout_end(self):
        if (self.threshold is not None and self.reached is None and self.pending_steps is None
                and len(self.window) == WINDOW and np.mean(self.window) >= self.threshold):
            self.pending_steps = self.num_timesteps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("work", choices=sorted(WORKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="total steps (default: the work's)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads (as klrl's train.threads)")
    a = p.parse_args()
    w = WORKS[a.work]
    steps = a.steps or w["steps"]
    torch.set_num_threads(a.threads)

    t_setup = time.perf_counter()
    env = make_vec_env(w["env"], n_envs=w["n_envs"], seed=a.seed)
    model = w["algo"]("MlpPolicy", env, seed=a.seed, device="cpu", verbose=0, **w["kwargs"])
    threshold = gym.spec(w["env"]).reward_threshold
    outcome = Outcome(threshold)

    train_times = []
    inner_train = model.train

    def timed_train():
        t = time.perf_counter()
        inner_train()
        t_end = time.perf_counter()
        train_times.append(t_end - t)
        if outcome.pending_steps is not None and outcome.reached is None:
            outcome.reached = (outcome.pending_steps, t_end - t_setup)

    model.train = timed_train
    t_learn = time.perf_counter()
    model.learn(total_timesteps=steps, callback=outcome)
    t_done = time.perf_counter()

    result = dict(
        work=a.work, klrl_config=w["klrl"], algo=w["algo"].__name__, env=w["env"],
        seed=a.seed, steps=int(model.num_timesteps), updates=len(train_times),
        torch_threads=torch.get_num_threads(),
        import_s=T_IMPORTED - T_START,
        setup_s=t_learn - t_setup,
        learn_s=t_done - t_learn,
        setup_learn_s=t_done - t_setup,
        train_s=sum(train_times),
        train_per_update_s=(sum(train_times) / len(train_times)) if train_times else None,
        threshold=threshold,
        steps_to_threshold=outcome.reached[0] if outcome.reached else None,
        time_to_threshold_s=outcome.reached[1] if outcome.reached else None,
        final_return_mean=float(np.mean(outcome.window)) if outcome.window else None,
        episodes=outcome.episodes,
    )
    if w["env"] == "Pendulum-v1" and a.eval_episodes > 0:
        eval_env = make_vec_env(w["env"], n_envs=1, seed=1_000_000 + a.seed)
        mean, std = evaluate_policy(model, eval_env, n_eval_episodes=a.eval_episodes,
                                    deterministic=True)
        result["eval"] = dict(mean_return=float(mean), std_return=float(std),
                              episodes=a.eval_episodes, deterministic=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
