"""A reference model's evaluation, sampled once and cached on disk.

A benchmark compares every unlearned model with reference models that do not change from run to
run: the pretrained model (the "pretrained (no unlearning)" row) and, e.g., a model retrained
without the forget set. Their evaluation by sampling depends only on the model's files, the
classifier's files and the evaluation settings, so :func:`evaluate_reference_model` samples it once
and keeps the result in a JSON file named by a SHA-256 of exactly those inputs (plus the device
type, the torch version and this module's format). A later call with the same inputs reads the file
instead of sampling; any change to a weights file or a setting gives another key, a miss.

Where: ``$UNLEARN_GYM_CACHE/reference/`` if that variable is set, else
``$XDG_CACHE_HOME/unlearn-gym/reference/`` (default ``~/.cache/unlearn-gym/reference/``). A user
cache rather than the run's output folder, because the key fixes the result: every bench run, every
``--out`` folder and every reference model share it, and deleting ``runs/`` does not discard it.
Files are written atomically (a temporary file, fsync, rename) and read as JSON only (the samples
as base64 of little-endian raw arrays, a whitelist of dtypes); nothing is unpickled. A corrupt or
foreign file is a miss and is rewritten.

The figures agree with a fresh evaluation up to the floating-point summation order of another torch
thread count (which is not part of the key): the same samples to about 1e-6, the same classes but
for a sample on a decision boundary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .forget import SampleEvaluation

__all__ = ["ReferenceEvalSettings", "ReferenceEvaluation", "evaluate_reference_model", "reference_cache_dir"]

_KIND = "unlearn-gym reference evaluation"
_FORMAT = 1
"""Bump when the evaluation's code changes what it computes: every older file then misses."""
_DTYPES = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}
"""The dtypes a cache file may hold (little-endian), by name."""


@dataclass(frozen=True)
class ReferenceEvalSettings:
    """How a reference model is evaluated (the arguments of
    :func:`~unlearn_gym.metrics.forget.evaluate_model` that shape its figures)."""

    samples_per_label: int = 20
    """Samples of every label but the contaminated one."""
    contaminated_label_samples: int | None = 100
    """Samples of the contaminated label (None: ``samples_per_label``)."""
    ddim_steps: int = 10
    """DDIM steps of each sample."""
    seed: int = 0
    """Seed of the initial noise (the same for every model compared)."""
    batch_size: int = 125
    """Samples per UNet batch."""

    def __post_init__(self) -> None:
        if self.samples_per_label < 1 or self.ddim_steps < 1 or self.batch_size < 1:
            raise ValueError(
                "samples_per_label, ddim_steps and batch_size must be >= 1, got "
                f"{self.samples_per_label}, {self.ddim_steps} and {self.batch_size}"
            )
        if self.contaminated_label_samples is not None and self.contaminated_label_samples < 1:
            raise ValueError(f"contaminated_label_samples must be None or >= 1, got {self.contaminated_label_samples}")


@dataclass(frozen=True)
class ReferenceEvaluation:
    """What :func:`evaluate_reference_model` returns."""

    evaluation: SampleEvaluation
    """The figures and the samples they were computed on (tensors on the CPU when read from the cache)."""
    hit: bool
    """True when read from the cache, False when sampled now."""
    path: Path | None
    """The cache file (None: caching off, or the file could not be written)."""

    @property
    def figures(self) -> dict:
        """The evaluation's JSON-able figures (forget rate, retain accuracy, per label, settings)."""
        return self.evaluation.figures


def reference_cache_dir() -> Path:
    """``$UNLEARN_GYM_CACHE/reference``, else ``$XDG_CACHE_HOME/unlearn-gym/reference`` (default ``~/.cache``)."""
    from ..cache import cache_dir

    return cache_dir("reference")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_digest(directory: Path) -> dict[str, str]:
    """SHA-256 of every weights and config file in a model or classifier directory."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json"))
    return {p.name: _sha256(p) for p in files}


def _encode(t: torch.Tensor) -> dict:
    """A tensor as JSON: its dtype, shape and base64 of its little-endian bytes."""
    a = t.detach().cpu().numpy()
    name = "float32" if a.dtype.kind == "f" else "int64"
    raw = a.astype(_DTYPES[name]).tobytes()
    return {"dtype": name, "shape": list(a.shape), "data": base64.b64encode(raw).decode()}


def _decode(obj: dict) -> torch.Tensor:
    a = np.frombuffer(base64.b64decode(obj["data"], validate=True), dtype=_DTYPES[obj["dtype"]])
    return torch.from_numpy(a.astype(a.dtype.newbyteorder("="))).reshape(obj["shape"])  # a copy: writable


def _read(path: Path, key: dict) -> SampleEvaluation | None:
    """The cached evaluation at ``path`` if it is one for ``key``; None if absent, corrupt or another's."""
    try:
        obj = json.loads(path.read_text())
        if obj.get("kind") != _KIND or obj.get("key") != key:
            return None
        return SampleEvaluation(obj["figures"], *(_decode(obj[k]) for k in ("images", "labels", "predictions")))
    except (OSError, ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
        return None


def evaluate_reference_model(
    checkpoint: str | os.PathLike,
    classifier: str | os.PathLike | None = None,
    settings: ReferenceEvalSettings = ReferenceEvalSettings(),
    *,
    device: str | torch.device = "cpu",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> ReferenceEvaluation:
    """Evaluate a model directory by sampling (forget rate, retain accuracy, per label), once.

    The key of the cache: SHA-256 of the model directory's and the classifier directory's
    ``.safetensors`` and ``.json`` files, ``settings``, the device type, the torch version and the
    cache format. A hit returns the stored figures and samples without loading either model.

    Args:
        checkpoint: a model directory (``model.safetensors`` + ``config.json``) whose config names
            its scenario (labels, contaminated label, contaminant class) and scheduler.
        classifier: the evaluation classifier's directory (None: the checkpoint's ``classifier/``,
            or the bundled one for the default scenario).
        settings: the evaluation settings.
        device: where to sample on a miss (part of the key: another device's floats differ).
        cache: False: always sample, and write nothing.
        cache_dir: the cache folder (None: :func:`reference_cache_dir`).
        log: called with one line on a hit, a miss and a failed write (None: silent).

    Returns:
        The evaluation, whether it was a hit, and the cache file.
    """
    from ..models.checkpoint import load_model, load_model_config, write_json_atomic
    from .classifier import classifier_dir_for, load_classifier
    from .forget import evaluate_model

    log = log or (lambda _msg: None)
    checkpoint = Path(checkpoint)
    config = load_model_config(checkpoint)
    classifier_dir = classifier_dir_for(checkpoint, config, classifier)
    device = torch.device(device)
    key = {
        "format": _FORMAT,
        "model": _files_digest(checkpoint),
        "classifier": _files_digest(classifier_dir),
        "settings": asdict(settings),
        "device": device.type,
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir) / f"{digest}.json" if cache_dir is not None else reference_cache_dir() / f"{digest}.json"
    if cache:
        cached = _read(path, key)
        if cached is not None:
            log(f"reference evaluation of {checkpoint}: cached in {path}")
            return ReferenceEvaluation(cached, True, path)

    unet, config = load_model(checkpoint, device)
    scen = config["scenario"]
    ev = evaluate_model(
        unet,
        load_classifier(classifier_dir, device),
        num_labels=scen["num_labels"],
        contaminated_label=scen["contaminated_label"],
        contaminant_class=scen["contaminant_class"],
        samples_per_label=settings.samples_per_label,
        contaminated_label_samples=settings.contaminated_label_samples,
        num_inference_steps=settings.ddim_steps,
        seed=settings.seed,
        batch_size=settings.batch_size,
        scheduler_config=config.get("scheduler"),
        progress=False,
    )
    # the figures as a hit returns them (JSON's types): equal either way
    ev = SampleEvaluation(json.loads(json.dumps(ev.figures)), ev.images, ev.labels, ev.predictions)
    if not cache:
        return ReferenceEvaluation(ev, False, None)
    record = {"kind": _KIND, "key": key, "figures": ev.figures}
    record |= {k: _encode(getattr(ev, k)) for k in ("images", "labels", "predictions")}
    try:
        write_json_atomic(record, path)  # a temporary file, fsync, rename
    except OSError as e:
        log(f"warning: reference evaluation of {checkpoint} not cached ({path}: {e})")
        return ReferenceEvaluation(ev, False, None)
    log(f"reference evaluation of {checkpoint}: sampled, cached in {path}")
    return ReferenceEvaluation(ev, False, path)
