"""Helpers the ``unlearn-gym`` commands share: the device, torch threads, JSON and integer-list options,
the classifier and the evaluation settings of a checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available here; use --device cpu or auto")
    return name


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _json_arg(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {flag} must be a JSON object, e.g. '{{\"batch_size\": 16}}': {e}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: {flag} must be a JSON object, got {text!r}")
    return value


def _int_list(text: str, flag: str, minimum: int | None = None) -> tuple[int, ...]:
    """Comma-separated integers of a CLI option (at least one; each ≥ ``minimum`` when given)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"error: {flag}: expected comma-separated integers, e.g. 0,1,2, got {text!r}") from None
    if not values:
        raise SystemExit(f"error: {flag}: expected comma-separated integers, e.g. 0,1,2, got {text!r}")
    if minimum is not None and min(values) < minimum:
        raise SystemExit(f"error: {flag}: expected integers >= {minimum}, got {text!r}")
    return values


def _resolve_classifier_dir(checkpoint: Path, config: dict, explicit: str | None) -> Path:
    from ..metrics.classifier import classifier_dir_for

    try:
        return classifier_dir_for(checkpoint, config, explicit)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


def _evaluation_kwargs(config: dict, args: argparse.Namespace, *, seed: int, batch_size: int = 125) -> dict:
    """Keywords of :func:`~unlearn_gym.metrics.forget.evaluate_model` for a checkpoint's config and the CLI options."""
    scen = config["scenario"]
    return dict(
        num_labels=scen["num_labels"],
        contaminated_label=scen["contaminated_label"],
        contaminant_class=scen["contaminant_class"],
        samples_per_label=args.samples,
        num_inference_steps=args.ddim_steps,
        seed=seed,
        batch_size=batch_size,
        scheduler_config=config.get("scheduler"),
        progress=not args.no_progress,
        sampler=config.get("sampler"),
    )


def _robustness_config(args: argparse.Namespace, *, ddim_steps: int, eval_seed: int):
    """A :class:`~unlearn_gym.metrics.robustness.RobustnessConfig` from the robustness options."""
    from ..metrics.membership import MembershipConfig
    from ..metrics.relearn import RelearnConfig
    from ..metrics.robustness import RobustnessConfig

    try:
        return RobustnessConfig(
            membership=MembershipConfig(
                num_samples=args.mia_samples, attack=args.mia_attack, bootstrap=args.mia_bootstrap, seed=eval_seed
            ),
            relearn=RelearnConfig(
                steps=args.relearn_steps,
                eval_every=args.relearn_every,
                lr=args.relearn_lr,
                batch_size=args.relearn_batch_size,
                forget_images=args.relearn_forget_images,
                forget_per_batch=args.relearn_forget_per_batch,
                samples=args.relearn_samples,
                ddim_steps=ddim_steps,
                eval_seed=eval_seed,
            ),
        )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
