"""``unlearn-gym unlearn``: run a static λ through SISS-v0 and evaluate the model before and after."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._common import _evaluation_kwargs, _resolve_classifier_dir, _resolve_device, _set_threads

__all__ = ["cmd_unlearn"]


def _parse_policy(spec: str) -> float:
    kind, _, value = spec.partition(":")
    if kind != "static":
        raise SystemExit(f"error: --policy: expected 'static:LAMBDA' (e.g. static:0.5), got {spec!r}")
    try:
        lam = float(value)
    except ValueError:
        raise SystemExit(f"error: --policy static:LAMBDA needs a number in [0, 1], got {value!r}") from None
    if not 0.0 <= lam <= 1.0:
        raise SystemExit(f"error: --policy static:LAMBDA needs LAMBDA in [0, 1], got {lam}")
    return lam


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Run the static λ on SISS-v0 for --steps updates, evaluate the model before and after, save it in OUT/model."""
    import gymnasium as gym
    from tqdm.auto import tqdm

    from ..assets import bundled_model_dir
    from ..envs.conventions import action_from_lam
    from ..metrics.classifier import load_classifier
    from ..metrics.forget import evaluate_model
    from ..models.checkpoint import CheckpointError, load_model_config, save_model, write_json_atomic

    lam = _parse_policy(args.policy)
    _set_threads(args.threads)
    device = _resolve_device(args.device)
    checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_model_dir()
    try:
        config = load_model_config(checkpoint)
        classifier = load_classifier(_resolve_classifier_dir(checkpoint, config, args.classifier), device)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    env = gym.make(
        "unlearn_gym/SISS-v0",
        checkpoint=str(checkpoint),
        horizon=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        device=device,
    )
    env.reset(seed=args.seed)
    unet = env.unwrapped.unlearned_model()  # read-only here: evaluation of the env's model
    eval_kw = _evaluation_kwargs(config, args, seed=args.eval_seed)
    t0 = time.perf_counter()
    before = evaluate_model(unet, classifier, **eval_kw)
    t1 = time.perf_counter()
    action = action_from_lam([lam])
    episode_return, lams, diverged = 0.0, [], False
    for _ in tqdm(range(args.steps), desc=f"unlearn static:{lam}", disable=args.no_progress, dynamic_ncols=True):
        _, reward, terminated, truncated, info = env.step(action)
        episode_return += reward
        lams.append(info["lam"])
        if terminated:
            diverged = True
            break
    t2 = time.perf_counter()
    after = evaluate_model(unet, classifier, **eval_kw)
    t3 = time.perf_counter()
    out = Path(args.out)
    model_dir = save_model(
        unet, out / "model", {**config, "unlearn": {"policy": args.policy, "steps": len(lams), "seed": args.seed}}
    )
    result = {
        "policy": args.policy,
        "steps": len(lams),
        "diverged": diverged,
        "return": episode_return,
        "final_info": {k: v for k, v in info.items() if isinstance(v, (int, float, bool))},
        "before": before.figures,
        "after": after.figures,
        "seconds": {
            "evaluate_before": round(t1 - t0, 2),
            "unlearn": round(t2 - t1, 2),
            "evaluate_after": round(t3 - t2, 2),
        },
        "model": str(model_dir),
        "device": device,
    }
    write_json_atomic(result, out / "unlearn.json")
    if args.json:
        print(json.dumps(result))
    else:
        b, a = before.figures, after.figures
        print(
            f"policy {args.policy}, {len(lams)} SISS steps{' (diverged)' if diverged else ''}, return {episode_return:.4f}"
        )
        print("                  before   after")
        print(f"forget_rate       {b['forget_rate']:.3f}   {a['forget_rate']:.3f}")
        print(f"retain_accuracy   {b['retain_accuracy']:.3f}   {a['retain_accuracy']:.3f}")
        print(f"unlearned model: {model_dir}")
    return 0
