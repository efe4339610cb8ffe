"""``unlearn-gym perf``: time a plain DDPM step, the SISS update and env.step, or N batched runs."""

from __future__ import annotations

import argparse
import json

from ._common import _int_list, _resolve_device, _set_threads

__all__ = ["cmd_perf"]


def cmd_perf(args: argparse.Namespace) -> int:
    """Time a plain DDPM step, the SISS update and env.step; with --num-envs, N batched runs per executor."""
    from ..engines import EXECUTORS
    from ..perf import profile_runs, profile_step

    _set_threads(args.threads)
    device = _resolve_device(args.device)
    if args.num_envs is None:
        result = profile_step(args.preset, args.batch, device, repeats=args.repeats)
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:16} {v}")
        return 0
    executors = tuple(args.executor.split(","))
    bad = [e for e in executors if e not in EXECUTORS]
    if bad:
        raise SystemExit(f"error: --executor expected some of {list(EXECUTORS)}, got {bad}")
    if "graph" in executors and not device.startswith("cuda"):
        raise SystemExit(
            f"error: --executor graph needs a CUDA device (it captures the update as a CUDA graph), got --device "
            f"{device!r}; drop graph from --executor or use --device cuda"
        )
    result = profile_runs(
        args.preset, args.batch, device, _int_list(args.num_envs, "--num-envs", minimum=1), executors, args.repeats
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['preset']} preset, batch {result['batch_size']}, {result['device']}, {result['threads']} thread(s); "
        f"single env.step {result['single_ms']} ms"
    )
    print(f"{'N':>4} {'executor':>8} {'ms/step':>9} {'ms/run':>8} {'env-steps/s':>12} {'speed-up':>9}")
    for r in result["runs"]:
        print(
            f"{r['num_envs']:>4} {r['executor']:>8} {r['batched_ms']:>9} {r['ms_per_run']:>8} "
            f"{r['env_steps_per_s']:>12} {r['speedup_vs_sequential']:>9}"
        )
    return 0
