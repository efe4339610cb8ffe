"""``unlearn-gym pretrain`` and ``unlearn-gym train-classifier``: the models a scenario starts from."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import _resolve_device, _set_threads

__all__ = ["cmd_pretrain", "cmd_train_classifier"]


def _scenario_kwargs(args: argparse.Namespace) -> dict:
    kw = {"contamination": args.contamination, "forget_size": args.forget_size, "seed": args.data_seed}
    for key in ("data_dir", "torchvision_root", "retain_npz", "forget_npz"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if args.download:
        kw["download"] = True
    return kw


def _load_scenario(args: argparse.Namespace):
    from ..data import ScenarioDataError, load_scenario

    kw = _scenario_kwargs(args)
    try:
        return load_scenario(args.scenario, **kw), kw
    except ScenarioDataError as e:
        raise SystemExit(f"error: {e}") from None


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a class-conditional DDPM on the scenario into OUT (resuming its train state); print a JSON summary."""
    from ..models.pretrain import PretrainConfig, pretrain

    _set_threads(args.threads)
    scenario, kw = _load_scenario(args)
    print(f"scenario {scenario.name}: {scenario.sizes()}", file=sys.stderr)
    config = PretrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        retain_only=args.retain_only,
    )
    result = pretrain(
        scenario,
        args.out,
        preset=args.preset,
        config=config,
        device=_resolve_device(args.device),
        resume=not args.no_resume,
        scenario_args={"name": scenario.name, **{k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}},
        progress=not args.no_progress,
    )
    summary = {
        "out": str(result.out),
        "step": result.step,
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "seconds": round(result.seconds, 1),
    }
    print(json.dumps(summary))
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train the evaluation classifier on the scenario, save it into OUT and print its report as JSON."""
    from ..metrics.classifier import ClassifierTrainConfig, save_classifier, train_classifier

    _set_threads(args.threads)
    scenario, kw = _load_scenario(args)
    config = ClassifierTrainConfig(epochs=args.epochs, seed=args.seed)
    model, report = train_classifier(scenario, config, progress=not args.no_progress)
    save_classifier(
        model, args.out, {"scenario": {"name": scenario.name, **{k: str(v) for k, v in kw.items()}}, "report": report}
    )
    print(json.dumps({"out": args.out, **report}))
    return 0
