"""Static-λ SISS through the Gymnasium API: the smallest complete unlearning loop.

    python examples/static_lambda.py --lam 0.5 --steps 20

Every step applies one SISS update to the bundled default DDPM (or ``--checkpoint DIR``) and
prints what the env reports: the applied λ, the retain/forget loss estimates and the reward; at the
end, the sampled reward's verdict on the unlearned model (forget rate, retain accuracy, damage).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import unlearn_gym  # noqa: F401  (registers unlearn_gym/SISS-v0)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lam", type=float, default=0.5, help="the static mixture weight λ in [0, 1]")
    parser.add_argument("--steps", type=int, default=20, help="SISS updates (the episode horizon T)")
    parser.add_argument("--checkpoint", default=None, help="pretrained model directory (default: bundled)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = gym.make(
        "unlearn_gym/SISS-v0",
        checkpoint=args.checkpoint,
        horizon=args.steps,
        batch_size=args.batch_size,
    )
    obs, info = env.reset(seed=args.seed)
    action = np.array([2 * args.lam - 1], dtype=np.float32)  # λ = (a + 1) / 2
    episode_return, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(action)
        episode_return += reward
        done = terminated or truncated
        print(
            f"step {info['step']:3d}  λ={info['lam']:.2f}  ℓ_r={info['loss_r']:8.2f}  ℓ_f={info['loss_f']:8.2f}  "
            f"reward={reward:+.4f}"
        )
    # the sampled reward's verdict on the unlearned model, measured at the last step
    print(
        f"forget rate {info['sampled_forget_rate']:.3f}  retain accuracy {info['sampled_retain_accuracy']:.3f}  "
        f"damage {info['sampled_damage']:.3f}  (on the probe's samples)"
    )
    print(f"return {episode_return:+.4f}")
    env.close()
    return episode_return


if __name__ == "__main__":
    main()
