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
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..models.sampling import sample_per_label

__all__ = [
    "SampleEvaluation",
    "SampledOutcome",
    "OutcomeProbe",
    "evaluate_model",
    "forget_figures",
    "erasure_figures",
]


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


@dataclass(frozen=True)
class SampledOutcome:
    """What the classifier says of one model's samples from a fixed probe of initial noises."""

    forget_rate: float
    """F: share of the contaminated label's samples classified as the contaminant."""
    per_label_accuracy: np.ndarray
    """(L,) A_c: share of label c's samples classified as c (every label, the contaminated one too)."""
    contaminated_label: int
    """y_c."""

    @property
    def retain_accuracy(self) -> float:
        """Mean of A_c over the retain labels (every label but y_c)."""
        return float(np.delete(self.per_label_accuracy, self.contaminated_label).mean())

    @property
    def intact(self) -> np.ndarray:
        """(L,) K_c: share of label c's samples that the classifier recognises: A_c, and for y_c
        A_{y_c} + F (its digit or the contaminant: removing the contaminant is F's business)."""
        k = self.per_label_accuracy.copy()
        k[self.contaminated_label] += self.forget_rate
        return k

    def damage(self, reference: SampledOutcome) -> float:
        """D = ½·(max_c δ_c + mean_c δ_c), δ_c = K_c(reference) − K_c(self) over every label c: the
        damage against ``reference`` (the model at reset), worst label and mean alike. Unlearning
        that turns the contaminated label's trousers into ones leaves δ_{y_c} = 0; breaking the
        label (samples nobody recognises) raises it. Negative when every label improved."""
        drop = reference.intact - self.intact
        return 0.5 * (float(drop.max()) + float(drop.mean()))


class OutcomeProbe:
    """The sampled reward's eye: the classifier's verdict on samples of fixed initial noises.

    One probe is one seed: the initial noises x_T of ``forget_samples`` (k_f) samples of the
    contaminated label y_c and ``retain_samples`` (k_r) of every other label are drawn from a
    generator seeded with it, and DDIM with η = 0 is deterministic given x_T, so
    :meth:`measure` is a function of the weights θ alone: re-measuring the same θ gives the same
    outcome, and a change of outcome between two measurements is a change of the model, not of
    the noise. The forget rate resolves to 1/k_f, each label's accuracy to 1/k_r.

    Args:
        classifier: the scenario's evaluation classifier (``predict(images) -> classes``).
        num_labels: L, the DDPM's conditioning labels.
        contaminated_label: y_c.
        contaminant_class: the classifier class of the contaminant.
        forget_samples: k_f >= 1.
        retain_samples: k_r >= 1.
        ddim_steps: DDIM steps of each sample.
        scheduler_config: the model's DDPM schedule.
        sampler: a model config's ``"sampler"`` entry (None: DDIM).
        cache_size: pretrained outcomes kept by :meth:`measure_reference` (reset is always the same θ⁰).
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        *,
        num_labels: int,
        contaminated_label: int,
        contaminant_class: int,
        forget_samples: int = 32,
        retain_samples: int = 8,
        ddim_steps: int = 10,
        scheduler_config: dict | None = None,
        sampler: dict | None = None,
        cache_size: int = 256,
    ):
        for name, value in (("forget_samples", forget_samples), ("retain_samples", retain_samples)):
            if value < 1:
                raise ValueError(f"OutcomeProbe: {name} must be >= 1, got {value}")
        if ddim_steps < 1:
            raise ValueError(f"OutcomeProbe: ddim_steps must be >= 1, got {ddim_steps}")
        self.classifier = classifier
        self.contaminated_label = int(contaminated_label)
        self.contaminant_class = int(contaminant_class)
        counts = [int(retain_samples)] * int(num_labels)
        counts[self.contaminated_label] = int(forget_samples)
        self.counts = tuple(counts)
        self.ddim_steps = int(ddim_steps)
        self.scheduler_config = scheduler_config
        self.sampler = sampler
        self._cache: OrderedDict[int, SampledOutcome] = OrderedDict()
        self._cache_size = int(cache_size)

    @property
    def num_samples(self) -> int:
        """Samples per measurement: k_f + (L − 1)·k_r."""
        return sum(self.counts)

    def measure(self, unet: torch.nn.Module, seed: int) -> SampledOutcome:
        """Sample the probe ``seed`` from ``unet`` (DDIM, η = 0) and classify the samples."""
        images, labels = sample_per_label(
            unet,
            len(self.counts),
            list(self.counts),
            seed=int(seed),
            num_inference_steps=self.ddim_steps,
            scheduler_config=self.scheduler_config,
            sampler=self.sampler,
            batch_size=self.num_samples,
        )
        predictions = self.classifier.to(images.device).predict(images).cpu()
        labels = labels.cpu()
        is_c = labels == self.contaminated_label
        forget_rate = float((predictions[is_c] == self.contaminant_class).double().mean())
        accuracy = np.array([float((predictions[labels == c] == c).double().mean()) for c in range(len(self.counts))])
        return SampledOutcome(forget_rate, accuracy, self.contaminated_label)

    def measure_reference(self, unet: torch.nn.Module, seed: int) -> SampledOutcome:
        """:meth:`measure` of the model at reset, remembered per seed (the weights at reset are
        always the pretrained θ⁰, so probe ``seed``'s outcome there never changes)."""
        seed = int(seed)
        if seed in self._cache:
            self._cache.move_to_end(seed)
            return self._cache[seed]
        outcome = self.measure(unet, seed)
        self._cache[seed] = outcome
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return outcome
