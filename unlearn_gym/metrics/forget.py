"""Sample-based forgetting figures: forget rate, retain accuracy and per-label class counts.

For each conditioning label y, draw n samples x ~ p_θ(x | y) with DDIM and classify them with the
scenario's classifier:

- ``forget_rate`` = share of samples of the contaminated label y_c that the classifier assigns to
  the contaminant class (trouser, or the mislabelled digit of ``mislabelled-7s``): what unlearning must drive to 0.
- ``retain_accuracy`` = share of samples of every other label y ≠ y_c classified as y: what
  unlearning must keep.
- ``contaminated_label_accuracy`` = share of samples of y_c classified as y_c itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..models.sampling import sample_per_label

__all__ = ["SampleEvaluation", "evaluate_model", "forget_figures", "erasure_figures"]


@dataclass(frozen=True)
class SampleEvaluation:
    """The figures of :func:`evaluate_model` and the samples they were computed on."""

    figures: dict
    """JSON-able: forget_rate, retain_accuracy, contaminated_label_accuracy, per_label, settings, seconds."""
    images: torch.Tensor
    """(L·n, C, H, W) samples in [−1, 1], label-major."""
    labels: torch.Tensor
    """(L·n,) their conditioning labels."""
    predictions: torch.Tensor
    """(L·n,) the classifier's classes."""


def forget_figures(
    labels: torch.Tensor,
    predictions: torch.Tensor,
    *,
    contaminated_label: int,
    contaminant_class: int,
    class_names: tuple[str, ...],
) -> dict:
    """forget_rate, retain_accuracy, contaminated_label_accuracy and per-label class counts.

    Args:
        labels: (N,) conditioning labels y of the samples.
        predictions: (N,) classifier classes of the samples.
        contaminated_label: y_c.
        contaminant_class: the classifier class of the contaminant.
        class_names: names of the classifier's classes (keys of the per-label counts).
    """
    labels, predictions = labels.cpu(), predictions.cpu()
    is_c = labels == contaminated_label
    others = ~is_c
    per_label = {}
    for y in sorted(set(labels.tolist())):
        pred_y = predictions[labels == y]
        counts = torch.bincount(pred_y, minlength=len(class_names))
        per_label[str(y)] = {
            "n": int(len(pred_y)),
            "accuracy": float((pred_y == y).float().mean()),
            "counts": {class_names[c]: int(counts[c]) for c in range(len(class_names)) if counts[c] > 0},
        }
    nan = float("nan")
    return {
        "forget_rate": float((predictions[is_c] == contaminant_class).float().mean()) if is_c.any() else nan,
        "retain_accuracy": float((predictions[others] == labels[others]).float().mean()) if others.any() else nan,
        "contaminated_label_accuracy": float((predictions[is_c] == contaminated_label).float().mean())
        if is_c.any()
        else nan,
        "per_label": per_label,
    }


def erasure_figures(per_label: dict, forget_class: int) -> dict:
    """Class erasure (SFD): ``unlearning_accuracy`` = 1 − accuracy on samples of the erased label
    c_f; ``remaining_accuracy`` = mean accuracy over the other labels' samples (from ``per_label``)."""
    key = str(int(forget_class))
    if key not in per_label:
        raise KeyError(f"no samples of the erased label {forget_class} in the evaluation")
    others = [row for y, row in per_label.items() if y != key]
    n = sum(row["n"] for row in others)
    return {
        "forget_class": int(forget_class),
        "unlearning_accuracy": 1.0 - per_label[key]["accuracy"],
        "remaining_accuracy": sum(row["accuracy"] * row["n"] for row in others) / n if n else float("nan"),
    }


def evaluate_model(
    unet: torch.nn.Module,
    classifier: torch.nn.Module,
    *,
    num_labels: int,
    contaminated_label: int,
    contaminant_class: int,
    samples_per_label: int = 200,
    contaminated_label_samples: int | None = None,
    num_inference_steps: int = 20,
    seed: int = 0,
    batch_size: int = 125,
    scheduler_config: dict | None = None,
    progress: bool = True,
    sampler: dict | None = None,
    only_labels: tuple[int, ...] | None = None,
) -> SampleEvaluation:
    """Sample ``samples_per_label`` images of every label and score them.

    ``contaminated_label_samples``: samples of the contaminated label y_c instead of
    ``samples_per_label`` (the forget rate's resolution is 1/that); None = the same count.

    ``sampler``: None (DDIM with ``num_inference_steps``) or a model config's ``"sampler"`` entry,
    e.g. ``{"kind": "one-step", "t_star": 440}`` for an SFD generator.
    ``only_labels``: sample only these labels (e.g. ``(contaminated_label,)`` when only the forget
    rate is wanted; ``retain_accuracy`` is then NaN unless another label is among them).

    Equal ``seed`` (and settings, on the same device) gives equal figures: the initial noise comes
    from one generator seeded with ``seed``.
    """
    t0 = time.perf_counter()
    counts = [samples_per_label] * num_labels
    if contaminated_label_samples is not None:
        counts[contaminated_label] = int(contaminated_label_samples)
    images, labels = sample_per_label(
        unet,
        num_labels,
        counts,
        seed=seed,
        num_inference_steps=num_inference_steps,
        batch_size=batch_size,
        scheduler_config=scheduler_config,
        progress=progress,
        sampler=sampler,
        only_labels=only_labels,
    )
    t1 = time.perf_counter()
    classifier = classifier.to(images.device)
    predictions = classifier.predict(images)
    t2 = time.perf_counter()
    figures = forget_figures(
        labels,
        predictions,
        contaminated_label=contaminated_label,
        contaminant_class=contaminant_class,
        class_names=classifier.class_names,
    )
    figures |= {
        "samples_per_label": samples_per_label,
        "contaminated_label_samples": counts[contaminated_label],
        "ddim_steps": num_inference_steps if (sampler or {}).get("kind", "ddim") == "ddim" else None,
        "sampler": sampler or {"kind": "ddim"},
        "seed": seed,
        "seconds": {"sampling": round(t1 - t0, 3), "classify": round(t2 - t1, 3), "total": round(t2 - t0, 3)},
    }
    return SampleEvaluation(figures, images, labels, predictions)
