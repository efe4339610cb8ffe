"""Train Stable-Baselines3 PPO on ``gymnasium.make("unlearn_gym/SISS-v0")``, with TensorBoard.

    python examples/train_ppo.py --timesteps 2048 --out runs/ppo-example
    tensorboard --logdir runs/ppo-example/tb

Plain SB3: a Monitor-wrapped env, VecNormalize (observations and rewards), PPO with small
rollouts because every env step is one real unlearning update of the DDPM, and unlearn-gym's
callback that logs λ, the losses, the reward terms and the episode metrics. ``unlearn-gym train``
does the same with zoo-style YAML hyperparameters, checkpoints, resume and an exported agent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import unlearn_gym  # noqa: F401  (registers unlearn_gym/SISS-v0)
from unlearn_gym.agents.callbacks import UnlearningLogCallback


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=2048, help="env steps (unlearning updates) to train")
    parser.add_argument("--checkpoint", default=None, help="pretrained model directory (default: bundled)")
    parser.add_argument("--batch-size", type=int, default=16, help="B of each SISS update")
    parser.add_argument("--horizon", type=int, default=20, help="T: updates per episode")
    parser.add_argument("--n-steps", type=int, default=128, help="PPO rollout length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/ppo-example")
    parser.add_argument(
        "--env-kwargs",
        default="{}",
        help="other SISS-v0 keywords as JSON, e.g. '{\"sample_forget\": 16}' (a smaller sampled probe)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))  # SB3's MLP and the DDPM share the cores

    def make_env():
        env = gym.make(
            "unlearn_gym/SISS-v0",
            checkpoint=args.checkpoint,
            batch_size=args.batch_size,
            horizon=args.horizon,
            **json.loads(args.env_kwargs),
        )
        return Monitor(env)  # records the true episode return before VecNormalize scales rewards

    venv = VecNormalize(DummyVecEnv([make_env]), norm_obs=True, norm_reward=True)
    venv.seed(args.seed)
    out = Path(args.out)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=args.n_steps,
        batch_size=min(32, args.n_steps),
        n_epochs=10,
        learning_rate=3e-4,
        policy_kwargs={"net_arch": [64, 64], "log_std_init": -0.5},
        seed=args.seed,
        device="cpu",
        tensorboard_log=str(out / "tb"),
    )
    model.learn(args.timesteps, callback=UnlearningLogCallback(), tb_log_name="ppo")
    model.save(out / "model.zip")
    venv.save(str(out / "vecnormalize.pkl"))
    print(f"saved {out / 'model.zip'}; TensorBoard: tensorboard --logdir {out / 'tb'}")
    return out


if __name__ == "__main__":
    main()
