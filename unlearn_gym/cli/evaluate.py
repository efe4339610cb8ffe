"""``unlearn-gym evaluate``: sample a model and report its forget rate, retain accuracy, Table 1 and the attacks."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import _evaluation_kwargs, _resolve_classifier_dir, _resolve_device, _robustness_config, _set_threads

__all__ = ["EVALUATE_METRICS", "cmd_evaluate"]


def _format_table(figures: dict) -> str:
    lines = [
        f"forget_rate                  {figures['forget_rate']:.3f}   (label-{figures['contaminated_label']} samples "
        f"classified as {figures['contaminant']!r}; lower = more forgotten)",
        f"retain_accuracy              {figures['retain_accuracy']:.3f}   (other labels classified as themselves)",
        f"contaminated_label_accuracy  {figures['contaminated_label_accuracy']:.3f}",
    ]
    if "erasure" in figures:  # an SFD generator
        e = figures["erasure"]
        lines += [
            f"unlearning_accuracy          {e['unlearning_accuracy']:.3f}   (1 − accuracy on the erased label {e['forget_class']})",
            f"remaining_accuracy           {e['remaining_accuracy']:.3f}   (the other labels)",
        ]
    lines += [
        "",
        "label |   n  | accuracy | classified as",
        "------+------+----------+--------------",
    ]
    for y, row in figures["per_label"].items():
        counts = ", ".join(f"{k}:{v}" for k, v in sorted(row["counts"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{y:>5} | {row['n']:>4} | {row['accuracy']:>8.3f} | {counts}")
    s = figures["seconds"]
    lines.append("")
    lines.append(
        f"{figures['samples_per_label']} samples per label, "
        + (f"{figures['ddim_steps']} DDIM steps" if figures.get("ddim_steps") else "the one-step generator")
        + f", seed {figures['seed']}; "
        f"{s['total']:.1f} s ({s['sampling']:.1f} s sampling)"
    )
    return "\n".join(lines)


EVALUATE_METRICS = ("basic", "full", "robustness")


def _parse_metrics(text: str) -> set[str]:
    """``--metrics``: a comma-separated subset of basic, full, robustness (basic is always computed)."""
    parts = {p.strip() for p in text.split(",") if p.strip()}
    if not parts or parts - set(EVALUATE_METRICS):
        raise SystemExit(
            f"error: --metrics: expected a comma-separated subset of {', '.join(EVALUATE_METRICS)} "
            f"(e.g. full,robustness), got {text!r}"
        )
    return parts


def _format_robustness(rob: dict) -> str:
    mia, rel = rob["membership"], rob["relearn"]
    s = mia["settings"]
    lines = [f"membership inference ({s['attack']} attack; AUC 0.5 = chance):"]
    for part in ("forget", "retain"):
        a = mia[part]
        lines.append(
            f"  {part:6}  AUC {a['auc']:.3f} [{a['auc_ci95'][0]:.3f}, {a['auc_ci95'][1]:.3f}]   "
            f"TPR@{a['fpr']:.0%} FPR {a['tpr']:.3f} [{a['tpr_ci95'][0]:.3f}, {a['tpr_ci95'][1]:.3f}]   "
            f"({a['n_members']} members, {a['n_nonmembers']} non-members)"
        )
    level = rel["pretrained_forget_rate"]
    lines.append(
        f"relearning ({rel['settings']['steps']} steps; pretrained level "
        + ("not given: --pretrained DIR" if level is None else f"{level:.3f}")
        + "):"
    )
    for mode, c in rel["curves"].items():
        curve = " ".join(f"{r:.2f}@{st}" for st, r in zip(c["steps"], c["forget_rates"]))
        half = c["steps_to_half"]
        lines.append(
            f"  {mode:6}  forget rate after K {c['final_forget_rate']:.3f}; steps to half "
            f"{'–' if half is None else half}; curve {curve}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class _Models:
    """What one ``evaluate`` run reads from disk."""

    checkpoint: Path
    """The evaluated model's directory (the bundled default model without ``--checkpoint``)."""
    unet: Any
    config: dict
    """The evaluated model's config (scenario, scheduler, sampler, sfd)."""
    classifier: Any
    others: list[tuple[Path, Any, dict]]
    """(directory, UNet, config) of each ``--compare`` model."""
    pretrained_dir: Path | str | None
    """``--pretrained`` as given ('bundled': the bundled model's directory), or None."""
    pretrained: Any
    """The pretrained model (with ``--metrics robustness`` and ``--pretrained``), else None."""


def _load_models(args: argparse.Namespace, device: str, robust: bool) -> _Models:
    """Load the model, its classifier, the ``--compare`` models and (for robustness) the pretrained model."""
    from ..assets import bundled_model_dir
    from ..metrics.classifier import load_classifier
    from ..models.checkpoint import CheckpointError, load_model

    checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_model_dir()
    try:
        unet, config = load_model(checkpoint, device)
        classifier = load_classifier(_resolve_classifier_dir(checkpoint, config, args.classifier), device)
        others = [(Path(c), *load_model(c, device)) for c in args.compare]
        pretrained_dir = bundled_model_dir() if args.pretrained == "bundled" else args.pretrained
        pretrained = load_model(pretrained_dir, device)[0] if robust and pretrained_dir else None
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    return _Models(checkpoint, unet, config, classifier, others, pretrained_dir, pretrained)


def _inception_modules(args: argparse.Namespace, device: str) -> tuple[Any, Any]:
    """``--features inception``: InceptionV3's 2048 pool features and its logits (FID/KID and IS)."""
    from ..metrics.features import InceptionUnavailableError, inception_feature

    try:  # before any sampling: fail fast where the weights are absent
        feature = inception_feature(2048, weights_path=args.inception_weights, device=device)
        logits_module = inception_feature("logits_unbiased", weights_path=args.inception_weights, device=device)
    except InceptionUnavailableError as e:
        raise SystemExit(f"error: --features inception: {e}") from None
    return feature, logits_module


def _save_grid(ev, samples: int, num_labels: int, out: Path) -> Path:
    """OUT/samples.png: one row per label, the first ``columns`` samples of each."""
    import torch
    from torchvision.utils import save_image

    per, cols = samples, min(samples, 10)
    rows = torch.stack([ev.images[y * per : y * per + cols] for y in range(num_labels)])
    grid_path = out / "samples.png"
    save_image(rows.flatten(0, 1).cpu() * 0.5 + 0.5, grid_path, nrow=cols, padding=2, pad_value=0.5)
    return grid_path


def _add_fidelity_table(
    figures: dict, args: argparse.Namespace, models: _Models, ev, eval_kw: dict, inception: tuple[Any, Any], out: Path
) -> str:
    """``--metrics full``: sample the ``--compare`` models, add Table 1 to ``figures``, write OUT/table.md
    and return its markdown."""
    from ..data.scenarios import ScenarioDataError, scenario_of_checkpoint
    from ..metrics.forget import evaluate_model
    from ..metrics.table import SampleSet, fidelity_table, to_markdown

    feature, logits_module = inception
    try:
        scenario = scenario_of_checkpoint(models.config)
    except ScenarioDataError as e:
        raise SystemExit(f"error: --metrics full needs the scenario's real images: {e}") from None
    t0 = time.perf_counter()
    # table rows are named by the paths as given (the bundled model: "bundled")
    main_name = "bundled" if args.checkpoint is None else args.checkpoint
    samples = {main_name: SampleSet.from_evaluation(ev)}
    others_figures = {}
    for path, other, _ in models.others:
        name = str(path) if str(path) not in samples else f"{path} ({len(samples) + 1})"
        other_ev = evaluate_model(other, models.classifier, **eval_kw)
        samples[name] = SampleSet.from_evaluation(other_ev)
        others_figures[name] = {k: other_ev.figures[k] for k in ("forget_rate", "retain_accuracy")}
    sampling_others = time.perf_counter() - t0
    table = fidelity_table(
        samples, scenario, models.classifier, feature=feature, logits_module=logits_module, seed=args.seed
    )
    figures["table"] = table
    figures["compare"] = others_figures
    figures["seconds"]["compare_sampling"] = round(sampling_others, 3)
    figures["seconds"]["table"] = table.get("seconds", {}).get("total")
    markdown = to_markdown(table)
    (out / "table.md").write_text(markdown + "\n")
    figures["table_markdown"] = str(out / "table.md")
    return markdown


def _add_robustness(figures: dict, args: argparse.Namespace, models: _Models, robustness_config) -> None:
    """``--metrics robustness``: add the membership inference and relearning figures to ``figures``."""
    from ..data.scenarios import ScenarioDataError, scenario_of_checkpoint
    from ..metrics.relearn import sampled_forget_rate
    from ..metrics.robustness import robustness_figures

    config, classifier = models.config, models.classifier
    try:
        scenario = scenario_of_checkpoint(config)
    except ScenarioDataError as e:
        raise SystemExit(f"error: --metrics robustness needs the scenario's real images: {e}") from None
    kw = dict(scheduler_config=config.get("scheduler"), sampler=config.get("sampler"))
    level = None
    if models.pretrained is not None:  # the level that "steps to half" refers to, sampled the same way
        level = sampled_forget_rate(models.pretrained, classifier, scenario, robustness_config.relearn, **kw)
        level = level["forget_rate"]
    figures["robustness"] = robustness_figures(
        models.unet,
        scenario,
        classifier,
        robustness_config,
        pretrained_forget_rate=level,
        progress=not args.no_progress,
        **kw,
    )
    figures["robustness"]["pretrained"] = None if models.pretrained_dir is None else str(models.pretrained_dir)
    figures["seconds"]["robustness"] = figures["robustness"]["seconds"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Sample a model and report its forget rate and retain accuracy; optionally Table 1 and the attacks."""
    from ..metrics.forget import evaluate_model
    from ..models.checkpoint import write_json_atomic

    metrics = _parse_metrics(args.metrics)
    full, robust = "full" in metrics, "robustness" in metrics
    _set_threads(args.threads)
    device = _resolve_device(args.device)
    models = _load_models(args, device, robust)
    config, classifier = models.config, models.classifier
    robustness_config = _robustness_config(args, ddim_steps=args.ddim_steps, eval_seed=args.seed) if robust else None
    inception = (None, None)
    if full and args.features == "inception":
        inception = _inception_modules(args, device)
    scen = config["scenario"]
    eval_kw = _evaluation_kwargs(config, args, seed=args.seed, batch_size=args.batch_size)
    ev = evaluate_model(models.unet, classifier, **eval_kw)
    if config.get("sfd"):  # an SFD generator: how well its class erasure went
        from ..metrics.forget import erasure_figures

        ev.figures["erasure"] = erasure_figures(ev.figures["per_label"], config["sfd"]["forget_class"])
    figures = {
        "checkpoint": str(models.checkpoint),
        "scenario": scen["name"],
        "contaminated_label": scen["contaminated_label"],
        "contaminant": classifier.class_names[scen["contaminant_class"]],
        "device": device,
        **ev.figures,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_path = _save_grid(ev, args.samples, scen["num_labels"], out)
    figures["grid"] = str(grid_path)
    if full:
        markdown = _add_fidelity_table(figures, args, models, ev, eval_kw, inception, out)
    if robust:
        _add_robustness(figures, args, models, robustness_config)
    write_json_atomic(figures, out / "evaluation.json")
    if args.json:
        print(json.dumps(figures))
    else:
        print(_format_table(figures))
        if full:
            print()
            print(markdown)
        if robust:
            print()
            print(_format_robustness(figures["robustness"]))
        print(f"\nsample grid: {grid_path}\nfigures:     {out / 'evaluation.json'}")
    return 0
