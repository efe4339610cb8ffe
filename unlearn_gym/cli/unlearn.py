"""``unlearn-gym unlearn``: run one λ-policy's episode on SISS-v0 and evaluate the model before and after."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._common import _resolve_device, _set_threads

__all__ = ["cmd_unlearn"]


def _policy(spec: str):
    """The policy of ``--policy`` (any spec of ``bench --policies``: static:L, linear:A:B, vi-adaptive, ppo, ...)."""
    from ..policy_specs import policy_from_spec

    try:
        return policy_from_spec(spec)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: --policy: {e}") from None


def cmd_unlearn(args: argparse.Namespace) -> int:
    """One episode of --policy on SISS-v0 for --steps updates (the bench's episode runner), the model evaluated
    before (the pretrained reference, cached per checkpoint) and after by sampling; the unlearned model saved in OUT/model."""
    from tqdm.auto import tqdm

    from ..assets import bundled_model_dir
    from ..bench import BenchConfig, EpisodeRunner
    from ..models.checkpoint import CheckpointError, load_model_config, save_model, write_json_atomic

    if args.samples < 1:
        raise SystemExit(f"error: --samples must be >= 1, got {args.samples}")
    policy = _policy(args.policy)
    _set_threads(args.threads)
    device = _resolve_device(args.device)
    checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_model_dir()
    config = BenchConfig(
        env_kwargs=dict(
            checkpoint=str(checkpoint), horizon=args.steps, batch_size=args.batch_size, lr=args.lr, device=device
        ),
        seeds=(args.seed,),
        samples_per_label=args.samples,
        contaminated_label_samples=None,
        ddim_steps=args.ddim_steps,
        eval_seed=args.eval_seed,
        classifier=args.classifier,
    )
    try:
        model_config = load_model_config(checkpoint)
        runner = EpisodeRunner({args.policy: policy}, config)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    for warning in runner.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    t0 = time.perf_counter()
    runner.env.reset(seed=args.seed)
    before = runner.evaluate_pretrained()
    t1 = time.perf_counter()
    bar = tqdm(total=args.steps, desc=f"unlearn {args.policy}", disable=args.no_progress, dynamic_ncols=True)
    last = {}

    def on_step(t: int, info: dict) -> None:
        last["info"] = info
        bar.update(1)

    record, after, _ = runner.episode(args.policy, args.seed, None, on_step=on_step)
    bar.close()
    out = Path(args.out)
    unlearn_info = {"policy": args.policy, "steps": record["length"], "seed": args.seed}
    model_dir = save_model(runner.base.unlearned_model(), out / "model", {**model_config, "unlearn": unlearn_info})
    runner.close()
    result = {
        "policy": args.policy,
        "steps": record["length"],
        "diverged": record["diverged"],
        "return": record["return"],
        "mean_lambda": record["mean_lambda"],
        "final_info": {k: v for k, v in last.get("info", {}).items() if isinstance(v, (int, float, bool))},
        "before": before.figures,
        "after": after.figures,
        "seconds": {
            "evaluate_before": round(t1 - t0, 2),
            "unlearn": record["seconds_unlearn"],
            "evaluate_after": record["seconds_evaluate"],
        },
        "model": str(model_dir),
        "device": device,
    }
    write_json_atomic(result, out / "unlearn.json")
    if args.json:
        print(json.dumps(result))
    else:
        b, a = before.figures, after.figures
        diverged = " (diverged)" if record["diverged"] else ""
        print(f"policy {args.policy}, {record['length']} SISS steps{diverged}, return {record['return']:.4f}")
        print("                  before   after")
        print(f"forget_rate       {b['forget_rate']:.3f}   {a['forget_rate']:.3f}")
        print(f"retain_accuracy   {b['retain_accuracy']:.3f}   {a['retain_accuracy']:.3f}")
        print(f"unlearned model: {model_dir}")
    return 0
