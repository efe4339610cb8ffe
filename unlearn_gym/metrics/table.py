"""The fidelity tables of the paper: Table 1 (forget and retain sets) and Appendix B (per class).

For each named model ("pretrained", "static SISS", "adaptive λ", …) we have generated samples with
their conditioning labels (a :class:`SampleSet`). :func:`fidelity_table` compares them with the
scenario's real images (training splits):

- **forget**: samples of the contaminated label y_c against the forget images. FID, KID: higher is
  better (the model no longer draws the forget set); SSIM to the nearest forget image and the
  memorisation score: lower is better. IS is that of the samples alone.
- **retain**: samples of every other label y ≠ y_c against the retain images of those labels.
  FID, KID: lower is better; SSIM to the nearest retain image: higher is better.
- **per class** (Appendix B): for every label y, samples of label y against the retain images of
  class y (for y_c: the genuine images of that label, which unlearning should steer samples to).

Features for FID/KID and logits for IS come from the scenario's evaluation classifier unless
``feature`` / ``logits_module`` say otherwise (e.g. :func:`~.features.inception_feature`). Real
features are computed once and shared by all models. A figure that cannot be computed (fewer than
two samples for FID/KID, none for IS/SSIM) is ``None``. Per-class parts have few samples: with
fewer samples than feature dimensions (128) the covariances in FID are singular and FID is biased
upwards, so compare per-class figures between models at equal sample counts, not with Table 1.
The result is a JSON-able dict; :func:`to_markdown` renders it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..data.scenarios import Scenario
from .classifier import Classifier
from .features import DEFAULT_BATCH_SIZE, extract_features
from .fidelity import (
    KID_MAX_SUBSET_SIZE,
    fid_from_features,
    inception_score_from_logits,
    kid_from_features,
    memorisation,
    ssim,
)

__all__ = ["SampleSet", "fidelity_table", "to_markdown", "TABLE_METRICS"]

TABLE_METRICS = ("fid", "kid", "is", "ssim")
"""The metrics of Table 1 and Appendix B, in column order."""

_METRIC_NAMES = {"fid": "FID", "kid": "KID", "is": "IS", "ssim": "SSIM"}
# Which direction is better, per part: forget = the model must no longer draw the forget set.
_BETTER = {
    "forget": {"fid": "↑", "kid": "↑", "is": "", "ssim": "↓"},
    "retain": {"fid": "↓", "kid": "↓", "is": "", "ssim": "↑"},
}


@dataclass(frozen=True)
class SampleSet:
    """Generated samples of one model and the labels they were conditioned on."""

    images: torch.Tensor
    """(N, 1, 28, 28) float images in [−1, 1]."""
    labels: torch.Tensor
    """(N,) int64 conditioning labels y."""

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4 or not self.images.is_floating_point():
            raise ValueError(f"SampleSet.images: expected a float tensor (N, C, H, W), got {_describe(self.images)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"SampleSet.labels: expected a tensor of shape ({self.images.shape[0]},) (one label per image), "
                f"got {_describe(self.labels)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_evaluation(cls, evaluation) -> SampleSet:
        """The samples of a :class:`~unlearn_gym.metrics.forget.SampleEvaluation` (anything with ``images``, ``labels``)."""
        return cls(evaluation.images, evaluation.labels)


def _describe(x: object) -> str:
    return f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Embedder:
    """Features (for FID/KID) and logits (for IS) of image sets; one classifier pass gives both."""

    def __init__(
        self, classifier: Classifier, feature: nn.Module | None, logits_module: nn.Module | None, batch_size: int
    ):
        self.classifier = classifier
        self.feature = feature
        self.logits_module = logits_module
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, 28, 28) → (features (N, d), logits (N, C)), float64 on the CPU."""
        if self.feature is None and self.logits_module is None:
            clf = self.classifier
            param = next(clf.parameters())
            was_training = clf.training
            clf.eval()
            feats, logits = [], []
            try:
                for i in range(0, images.shape[0], self.batch_size):
                    f = clf.features(images[i : i + self.batch_size].to(device=param.device, dtype=param.dtype))
                    feats.append(f.double().cpu())
                    logits.append(clf.head(f).double().cpu())
            finally:
                clf.train(was_training)
            if not feats:
                return torch.empty((0, clf.num_features), dtype=torch.float64), torch.empty(
                    (0, clf.num_classes), dtype=torch.float64
                )
            return torch.cat(feats), torch.cat(logits)
        feats = extract_features(images, self.feature or self.classifier, output="features", batch_size=self.batch_size)
        logits = extract_features(
            images, self.logits_module or self.classifier, output="logits", batch_size=self.batch_size
        )
        return feats, logits


def _part(
    real_images: torch.Tensor,
    real_features: torch.Tensor,
    fake_images: torch.Tensor,
    fake_features: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    kid_subsets: int,
    is_splits: int,
    seed: int,
    batch_size: int,
) -> dict:
    """FID, KID, IS and SSIM of one (real, fake) pair of image sets; ``None`` where not computable."""
    n_real, n_fake = int(real_images.shape[0]), int(fake_images.shape[0])
    out: dict = {"n_fake": n_fake, "n_real": n_real}
    enough = n_real >= 2 and n_fake >= 2
    out["fid"] = _finite_or_none(fid_from_features(real_features, fake_features)) if enough else None
    if enough:
        kid_mean, kid_std = kid_from_features(real_features, fake_features, subsets=kid_subsets, seed=seed)
        out["kid_mean"], out["kid_std"] = _finite_or_none(kid_mean), _finite_or_none(kid_std)
    else:
        out["kid_mean"] = out["kid_std"] = None
    if n_fake >= 1:
        is_mean, is_std = inception_score_from_logits(fake_logits, splits=is_splits, seed=seed)
        out["is_mean"], out["is_std"] = _finite_or_none(is_mean), _finite_or_none(is_std)
    else:
        out["is_mean"] = out["is_std"] = None
    out["ssim"] = ssim(real_images, fake_images, batch_size=batch_size) if n_real >= 1 and n_fake >= 1 else None
    return out


def fidelity_table(
    models: Mapping[str, SampleSet],
    scenario: Scenario,
    classifier: Classifier,
    *,
    feature: nn.Module | None = None,
    logits_module: nn.Module | None = None,
    per_class: bool = True,
    kid_subsets: int = 100,
    is_splits: int = 10,
    memorisation_threshold: float = 0.95,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict:
    """Table 1 (forget and retain sets) and Appendix B (per class) for several models.

    Args:
        models: model name → its generated samples and their conditioning labels, e.g.
            ``{"pretrained": SampleSet(x, y), "static SISS": ...}`` (table rows, in this order).
        scenario: gives the real images (``forget``, ``retain``: training splits), the
            contaminated label y_c and the number of labels.
        classifier: the scenario's evaluation classifier: features for FID/KID and logits for IS
            unless ``feature`` / ``logits_module`` are given.
        feature: another feature network for FID/KID (see
            :func:`~unlearn_gym.metrics.features.as_feature_module`), e.g. ``inception_feature()``.
        logits_module: another logits network for IS, e.g. ``inception_feature("logits_unbiased")``.
        per_class: also compute Appendix B (one part per label).
        kid_subsets: KID subsets (subset size min(1000, n_real, n_fake)).
        is_splits: IS splits.
        memorisation_threshold: pixel cosine similarity counted as a near-copy of a forget image.
        seed: seed of KID's subsets and IS's shuffle (equal seeds give equal tables).
        batch_size: images per network call.

    Returns:
        JSON-able dict::

            {"settings": {...},
             "models": {name: {"forget": part, "retain": part, "per_class": {"0": part, ...},
                               "seconds": {"features", "forget", "retain", "per_class", "total"}}},
             "seconds": {"real_features": s, "total": s}}

        where a part is ``{"n_fake", "n_real", "fid", "kid_mean", "kid_std", "is_mean", "is_std",
        "ssim"}`` (the forget part adds ``"memorisation_mean"`` and ``"memorisation_share"``, the
        per-class parts add ``"contaminated"``); figures that cannot be computed are ``None``.
    """
    t_start = time.perf_counter()
    if not models:
        raise ValueError("fidelity_table: models must name at least one SampleSet, got none")
    for name, samples in models.items():
        if not isinstance(samples, SampleSet):
            raise TypeError(f"fidelity_table: models[{name!r}]: expected a SampleSet, got {type(samples).__name__}")
    yc = int(scenario.contaminated_label)
    embed = _Embedder(classifier, feature, logits_module, batch_size)
    options = {"kid_subsets": kid_subsets, "is_splits": is_splits, "seed": seed, "batch_size": batch_size}

    # 1. real images and their features, shared by all models
    forget_real = scenario.forget.images
    retain_labels = scenario.retain.labels
    retain_mask = retain_labels != yc
    retain_real = scenario.retain.images[retain_mask]
    forget_real_f, _ = embed(forget_real)
    retain_all_f, _ = embed(scenario.retain.images)
    retain_real_f = retain_all_f[retain_mask]
    t_real = time.perf_counter() - t_start

    # 2. per model: forget part, retain part, one part per label
    rows: dict[str, dict] = {}
    for name, samples in models.items():
        t0 = time.perf_counter()
        images, labels = samples.images, samples.labels.cpu()
        fake_f, fake_logits = embed(images)
        t1 = time.perf_counter()

        is_c = labels == yc
        forget = _part(forget_real, forget_real_f, images[is_c], fake_f[is_c], fake_logits[is_c], **options)
        if int(is_c.sum()) >= 1 and len(forget_real) >= 1:
            mem = memorisation(images[is_c], forget_real, threshold=memorisation_threshold, batch_size=batch_size)
            forget["memorisation_mean"], forget["memorisation_share"] = mem.mean, mem.share_above
        else:
            forget["memorisation_mean"] = forget["memorisation_share"] = None
        t2 = time.perf_counter()

        others = ~is_c
        retain = _part(retain_real, retain_real_f, images[others], fake_f[others], fake_logits[others], **options)
        t3 = time.perf_counter()

        classes: dict[str, dict] = {}
        if per_class:
            for y in range(scenario.num_labels):
                fake_y, real_y = labels == y, retain_labels == y
                part = _part(
                    scenario.retain.images[real_y],
                    retain_all_f[real_y],
                    images[fake_y],
                    fake_f[fake_y],
                    fake_logits[fake_y],
                    **options,
                )
                classes[str(y)] = {"contaminated": y == yc, **part}
        t4 = time.perf_counter()
        rows[name] = {
            "forget": forget,
            "retain": retain,
            "per_class": classes,
            "seconds": {
                "features": round(t1 - t0, 3),
                "forget": round(t2 - t1, 3),
                "retain": round(t3 - t2, 3),
                "per_class": round(t4 - t3, 3),
                "total": round(t4 - t0, 3),
            },
        }

    if feature is None:
        feature_name = f"classifier features ({classifier.num_features})"
    else:
        feature_name = f"{type(feature).__name__} ({getattr(feature, 'num_features', '?')})"
    settings = {
        "scenario": scenario.name,
        "contaminated_label": yc,
        "contaminant_class": int(scenario.contaminant_class),
        "num_labels": int(scenario.num_labels),
        "real": {"forget": int(len(forget_real)), "retain": int(len(retain_real)), "split": "train"},
        "feature": feature_name,
        "logits": "classifier logits" if logits_module is None else type(logits_module).__name__,
        "kid_subset_size": f"min({KID_MAX_SUBSET_SIZE}, n_real, n_fake)",
        "kid_subsets": kid_subsets,
        "is_splits": is_splits,
        "ssim_pairing": "each sample against its nearest real image in pixel L2",
        "memorisation": "max pixel cosine similarity (images in [0, 1]) of each sample to the forget set",
        "memorisation_threshold": memorisation_threshold,
        "seed": seed,
    }
    return {
        "settings": settings,
        "models": rows,
        "seconds": {"real_features": round(t_real, 3), "total": round(time.perf_counter() - t_start, 3)},
    }


# -- markdown ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _cell(part: dict, metric: str, digits: int) -> str:
    if metric in ("kid", "is"):
        mean, std = part.get(f"{metric}_mean"), part.get(f"{metric}_std")
        return _fmt(mean, digits) if std is None or mean is None else f"{_fmt(mean, digits)} ± {_fmt(std, 2)}"
    return _fmt(part.get(metric), digits)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(table: dict, *, digits: int = 4) -> str:
    """Render a :func:`fidelity_table` result as markdown.

    Sections: "Table 1" (rows = models; columns = forget FID/KID/IS/SSIM, then retain
    FID/KID/IS/SSIM; arrows say which direction is better), the forget set's memorisation score,
    and "Appendix B" (one table per metric; rows = labels, columns = models), when per-class
    figures are present. KID and IS read "mean ± std"; "—" marks a figure that could not be
    computed.

    Args:
        table: the dict :func:`fidelity_table` returned (or its JSON round trip).
        digits: significant digits.

    Returns:
        Markdown text.
    """
    models: dict = table["models"]
    settings: dict = table.get("settings", {})
    yc = settings.get("contaminated_label")
    out: list[str] = []

    header = ["model"] + [
        f"{part} {_METRIC_NAMES[m]}{(' ' + _BETTER[part][m]) if _BETTER[part][m] else ''}"
        for part in ("forget", "retain")
        for m in TABLE_METRICS
    ]
    rows = [
        [name] + [_cell(row[part], m, digits) for part in ("forget", "retain") for m in TABLE_METRICS]
        for name, row in models.items()
    ]
    out.append("### Table 1: forget and retain sets\n")
    out.append(_md_table(header, rows))
    out.append(
        f"\nForget: samples of label {yc} against the forget set; retain: samples of every other label against "
        f"the retain set. Features: {settings.get('feature', '?')}; SSIM: "
        f"{settings.get('ssim_pairing', 'nearest real image')}."
    )

    threshold = settings.get("memorisation_threshold")
    out.append("\n### Memorisation of the forget set\n")
    out.append(
        _md_table(
            ["model", "mean max similarity ↓", f"share ≥ {threshold} ↓"],
            [
                [
                    name,
                    _fmt(row["forget"].get("memorisation_mean"), digits),
                    _fmt(row["forget"].get("memorisation_share"), digits),
                ]
                for name, row in models.items()
            ],
        )
    )

    if any(row.get("per_class") for row in models.values()):
        labels = sorted({y for row in models.values() for y in row.get("per_class", {})}, key=int)
        out.append("\n## Appendix B: per class\n")
        out.append(
            "Samples of label y against the retain images of class y"
            + (f" (label {yc}: the genuine images of that label)." if yc is not None else ".")
        )
        for m in TABLE_METRICS:
            better = _BETTER["retain"][m]
            out.append(f"\n### {_METRIC_NAMES[m]}{(' ' + better) if better else ''}\n")
            class_rows = []
            for y in labels:
                name_y = f"{y} (contaminated)" if yc is not None and int(y) == int(yc) else y
                cells = [
                    _cell(row["per_class"][y], m, digits) if y in row.get("per_class", {}) else "—"
                    for row in models.values()
                ]
                class_rows.append([name_y] + cells)
            out.append(_md_table(["label"] + list(models), class_rows))
    return "\n".join(out) + "\n"
