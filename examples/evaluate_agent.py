"""Evaluate a saved agent: SB3's ``evaluate_policy``, then forget rate and retain accuracy.

    python examples/evaluate_agent.py                       # the bundled PPO agent
    python examples/evaluate_agent.py --agent runs/my-ppo   # one trained by `unlearn-gym train`

``load_agent`` reads the exported agent (agent.json + policy.safetensors; nothing is unpickled)
and returns a policy with SB3's ``predict``, its observation normalisation frozen. The env is
made with the settings the agent was trained at.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import unlearn_gym  # noqa: F401
from unlearn_gym.agents import load_agent
from unlearn_gym.assets import bundled_agent_dir
from unlearn_gym.bench import BenchConfig, run_benchmark


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default=None, help="exported agent directory (default: the bundled PPO)")
    parser.add_argument("--checkpoint", default=None, help="the env's pretrained model (default: the agent's)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20, help="evaluation samples per retain label")
    parser.add_argument("--contaminated-samples", type=int, default=100, help="evaluation samples of label 1")
    parser.add_argument("--ddim-steps", type=int, default=10)
    args = parser.parse_args(argv)

    agent = load_agent(args.agent or bundled_agent_dir())
    env_kwargs = dict(agent.env_kwargs)
    if args.checkpoint:
        env_kwargs["checkpoint"] = args.checkpoint
    print(agent, "trained at", env_kwargs)

    # 1. SB3's evaluation loop: returns only
    env = Monitor(gym.make(agent.env_id, **env_kwargs))
    mean, std = evaluate_policy(agent, env, n_eval_episodes=args.episodes, deterministic=True)
    print(f"evaluate_policy: return {mean:.4f} ± {std:.4f} (std over {args.episodes} episodes)")
    env.close()

    # 2. the runner: returns, and the unlearned models sampled and classified
    config = BenchConfig(
        env_id=agent.env_id,
        env_kwargs=env_kwargs,
        seeds=tuple(range(args.episodes)),
        samples_per_label=args.samples,
        contaminated_label_samples=args.contaminated_samples,
        ddim_steps=args.ddim_steps,
    )
    result = run_benchmark({agent.algo: agent}, config, progress=False)
    row = result["summary"][agent.algo]
    print(
        f"bench: return {row['return']['mean']:.4f} ± {row['return']['ci95']:.4f} (95% CI), "
        f"forget_rate {row['forget_rate']['mean']:.3f}, retain_accuracy {row['retain_accuracy']['mean']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
