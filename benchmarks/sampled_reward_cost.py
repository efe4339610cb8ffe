"""What the sampled reward costs an episode of SISS-v0, against the episode's updates.

The sampled reward (``reward="sampled"``) measures the probe twice per episode with the default
``eval_every=None``: the pretrained model at reset (remembered per probe seed, so a repeated seed
costs nothing) and the unlearned model at the last step; ``eval_every=k`` adds T/k − 1
measurements. This script times, on one env, the updates of an episode, the reset (measuring the
reference afresh, then again from the cache) and one measurement, and prints one JSON line::

    python benchmarks/sampled_reward_cost.py --horizon 100 --batch-size 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--episodes", type=int, default=2, help="episodes timed (seeds 0..N-1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import gymnasium as gym
    import torch

    import unlearn_gym  # noqa: F401

    torch.set_num_threads(args.threads)
    kwargs = dict(batch_size=args.batch_size, horizon=args.horizon, lr=args.lr, device=args.device)
    env = gym.make("unlearn_gym/SISS-v0", **kwargs)
    probe_env = gym.make("unlearn_gym/SISS-v0", reward="probe", **kwargs)
    base = env.unwrapped
    rows = []
    for seed in range(args.episodes):
        t0 = time.perf_counter()
        probe_env.reset(seed=seed)
        reset_probe = time.perf_counter() - t0
        t0 = time.perf_counter()
        env.reset(seed=seed)  # measures the reference afresh (a new probe seed)
        reset_sampled = time.perf_counter() - t0
        t0 = time.perf_counter()
        env.reset(seed=seed)  # the same probe seed: the reference from the cache
        reset_cached = time.perf_counter() - t0
        step_times = []
        for _ in range(args.horizon):
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
            step_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base.outcome_probe.measure(base.engine.model(), base._episode.outcome_seed)
        measure = time.perf_counter() - t0
        update = statistics.median(step_times[:-1])
        rows.append(
            {
                "seed": seed,
                "step_median_s": update,
                "last_step_s": step_times[-1],
                "measure_s": measure,
                "reset_probe_reward_s": reset_probe,
                "reset_sampled_s": reset_sampled,
                "reset_cached_s": reset_cached,
                "episode_updates_s": sum(step_times[:-1]) + update,
            }
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "seed"}
    extra = (med["reset_sampled_s"] - med["reset_probe_reward_s"]) + (med["last_step_s"] - med["step_median_s"])
    print(
        json.dumps(
            {
                "settings": {**kwargs, "threads": args.threads, "probe_samples": base.outcome_probe.num_samples}
                | {k: getattr(base.config, k) for k in ("sample_forget", "sample_retain", "sample_ddim_steps")},
                "median": {k: round(v, 4) for k, v in med.items()},
                "sampled_reward_s_per_episode": round(extra, 3),
                "overhead_vs_updates": round(extra / med["episode_updates_s"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
