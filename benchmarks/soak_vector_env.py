"""Soak of the batched vector env: many steps of N tiny runs with random actions, forced divergences and resets.

Every ``--diverge-every`` steps one run (in turn) gets non-finite weights, so its next update
diverges; the env must terminate that run alone, reset it in the same step (SAME_STEP autoreset)
and have it step normally again. Every ``--reset-every`` steps half the runs are reset through
``options["reset_mask"]``. Resident memory is read after ``--warmup`` steps and at the end; the
script exits non-zero if it grew by more than 5%, if a diverged run did not recover, or if a
non-diverged step returned a non-finite observation or reward.

    python benchmarks/soak_vector_env.py --steps 10000 --num-envs 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch

import unlearn_gym  # noqa: F401  (registers the envs)
from unlearn_gym.perf import _checkpoint_dir


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--executor", default="auto", choices=["auto", "loop", "vmap"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--diverge-every", type=int, default=300)
    p.add_argument("--reset-every", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.num_envs
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        _checkpoint_dir(tmp, "tiny", args.seed)
        venv = gym.make_vec(
            "unlearn_gym/SISS-v0", num_envs=n, vectorization_mode="vector_entry_point", executor=args.executor,
            checkpoint=tmp, batch_size=args.batch_size, probe_size=1, horizon=args.horizon, device="cpu",
        )  # fmt: skip
        engine = venv.unwrapped.engine
        venv.reset(seed=list(range(args.seed, args.seed + n)))
        rss_start = rss_mib()
        rss_warm = None
        forced, diverged, recovered, truncated, masked_resets, bad = 0, 0, 0, 0, 0, 0
        pending: set[int] = set()  # runs that diverged and have not stepped since
        t0 = time.perf_counter()
        for step in range(1, args.steps + 1):
            if step % args.reset_every == 0:
                venv.reset(options={"reset_mask": np.arange(n) % 2 == (step // args.reset_every) % 2})
                masked_resets += 1
            if step % args.diverge_every == 0:
                run = forced % n
                with torch.no_grad():
                    next(iter(engine.params.values()))[run].fill_(float("nan"))
                forced += 1
            actions = rng.uniform(-1.2, 1.2, size=(n, 1)).astype(np.float32)
            obs, rewards, terminated, truncations, infos = venv.step(actions)
            for i in list(pending):  # the step after a divergence: the restarted run steps normally
                if infos["_diverged"][i] and not infos["diverged"][i]:
                    recovered += 1
                    pending.discard(i)
            for i in np.flatnonzero(terminated):
                if infos["final_info"]["diverged"][i]:
                    diverged += 1
                    pending.add(int(i))
            truncated += int(truncations.sum())
            finite = np.isfinite(obs).all(axis=1) & np.isfinite(rewards)
            bad += int((~finite).sum())
            if step == args.warmup:
                rss_warm = rss_mib()
            if step % 1000 == 0:
                rate = step / (time.perf_counter() - t0)
                print(f"step {step}: RSS {rss_mib():.1f} MiB, {rate:.2f} vector steps/s", flush=True)
        seconds = time.perf_counter() - t0
        rss_end = rss_mib()
        if pending:  # a divergence on the last step: one more step shows the run back
            _, _, _, _, infos = venv.step(np.zeros((n, 1), dtype=np.float32))
            recovered += sum(1 for i in pending if infos["_diverged"][i] and not infos["diverged"][i])
        venv.close()
    growth = (rss_end - rss_warm) / rss_warm if rss_warm else float("nan")
    report = {
        "steps": args.steps,
        "num_envs": n,
        "executor": engine.executor,
        "batch_size": args.batch_size,
        "horizon": args.horizon,
        "threads": args.threads,
        "seconds": round(seconds, 1),
        "env_steps_per_s": round(args.steps * n / seconds, 2),
        "rss_mib": {"start": round(rss_start, 1), "after_warmup": round(rss_warm or 0, 1), "end": round(rss_end, 1)},
        "rss_growth_after_warmup": round(growth, 4),
        "forced_divergences": forced,
        "diverged": diverged,
        "recovered": recovered,
        "truncations": truncated,
        "masked_resets": masked_resets,
        "non_finite_steps": bad,
    }
    print(json.dumps(report))
    ok = abs(growth) <= 0.05 and diverged == forced and recovered == diverged and bad == 0
    if not ok:
        print("soak FAILED: memory grew > 5%, a run was lost, or a step was non-finite", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
