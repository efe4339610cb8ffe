"""Feature networks for the image-fidelity metrics: the evaluation classifier, InceptionV3, any module.

Every function takes float tensors of shape (N, 1, 28, 28) with values in [−1, 1] (the project's
image convention, DESIGN §9) and batches internally.

FID, KID and IS (:mod:`~unlearn_gym.metrics.fidelity`) need a feature network. Offline, that is the
scenario's evaluation :class:`~unlearn_gym.metrics.classifier.Classifier`:
:class:`ClassifierFeatures` wraps it as a torchmetrics ``feature=`` module that returns its
(N, 128) penultimate activations (FID, KID) or its (N, C) logits (IS), in float64. The usual
InceptionV3 features are available through :func:`inception_feature` where torch-fidelity and its
weights file are present locally; numbers from the two feature networks are not comparable with
each other.

Any ``feature`` argument may be a :class:`Classifier` (its features or logits are used), a
:class:`ClassifierFeatures`, the module :func:`inception_feature` returns, or any ``nn.Module``
that maps (N, 1, 28, 28) images in [−1, 1] to (N, d) features (:func:`as_feature_module` turns each
into a torchmetrics ``feature=`` module). :func:`extract_features` runs images through one, in
batches, to (N, d) float64 features on the CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .classifier import Classifier

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ClassifierFeatures",
    "InceptionUnavailableError",
    "as_feature_module",
    "extract_features",
    "inception_feature",
    "inception_weights_file",
]

INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_NAME}"
DEFAULT_BATCH_SIZE = 500


class InceptionUnavailableError(RuntimeError):
    """The InceptionV3 feature network cannot be built here; the message says what to install or download."""


# -- feature modules -----------------------------------------------------------------------------


def _module_device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    if param is None:
        param = next(module.buffers(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, restoring its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class ClassifierFeatures(nn.Module):
    """The evaluation classifier as a torchmetrics ``feature=`` module.

    Maps (N, 1, 28, 28) images in [−1, 1] (any float dtype, any device) to float64 features on the
    classifier's device: the (N, 128) penultimate activations (``output="features"``, for FID and
    KID) or the (N, C) logits (``output="logits"``, for IS). The classifier runs in eval mode
    without gradients; its own train/eval mode is restored afterwards.

    Args:
        classifier: the scenario's evaluation classifier.
        output: ``"features"`` or ``"logits"``.

    Attributes:
        num_features: d, the width of the output (torchmetrics reads it instead of probing the
            module with a dummy 3×299×299 image).
    """

    def __init__(self, classifier: Classifier, output: Literal["features", "logits"] = "features"):
        super().__init__()
        if output not in ("features", "logits"):
            raise ValueError(f"ClassifierFeatures: output must be 'features' or 'logits', got {output!r}")
        self.classifier = classifier
        self.output = output
        self.num_features = int(classifier.num_features if output == "features" else classifier.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) in [−1, 1] → (N, d) float64."""
        param = next(self.classifier.parameters())
        x = x.to(device=param.device, dtype=param.dtype)
        with torch.no_grad(), _eval_mode(self.classifier):
            out = self.classifier.features(x) if self.output == "features" else self.classifier(x)
        return out.double()

    def extra_repr(self) -> str:
        return f"output={self.output!r}, num_features={self.num_features}"


class _Float64Features(nn.Module):
    """Wraps any (N, 1, H, W) → (N, d) module: eval mode, no gradients, float64 output, ``num_features``."""

    def __init__(self, module: nn.Module, num_features: int):
        super().__init__()
        self.module = module
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _eval_mode(self.module):
            out = self.module(x.to(_module_device(self.module)))
        return out.reshape(out.shape[0], -1).double()


def as_feature_module(
    feature: nn.Module,
    output: Literal["features", "logits"] = "features",
    *,
    image_shape: tuple[int, ...] = (1, 28, 28),
) -> nn.Module:
    """The torchmetrics ``feature=`` module for ``feature``.

    Args:
        feature: a :class:`Classifier` (wrapped in :class:`ClassifierFeatures` with ``output``),
            a module that already has an int ``num_features`` (used as is: e.g.
            :class:`ClassifierFeatures` or the module of :func:`inception_feature`), or any other
            module mapping (N, *image_shape) images in [−1, 1] to (N, d) (wrapped: eval mode, no
            gradients, float64 output; d is found with one forward pass on a blank, all −1, image).
        output: which output of a :class:`Classifier` to use.
        image_shape: (C, H, W) of the probe image for modules without ``num_features``.

    Returns:
        A module with ``num_features`` that maps (N, C, H, W) images in [−1, 1] to (N, d).
    """
    if isinstance(feature, Classifier):
        return ClassifierFeatures(feature, output)
    if not isinstance(feature, nn.Module):
        raise TypeError(f"feature: expected a Classifier or another torch.nn.Module, got {type(feature).__name__}")
    if isinstance(getattr(feature, "num_features", None), int):
        return feature
    with torch.no_grad(), _eval_mode(feature):
        probe = feature(torch.full((1, *image_shape), -1.0, device=_module_device(feature)))
    return _Float64Features(feature, probe.reshape(1, -1).shape[1])


# -- InceptionV3 (optional) ----------------------------------------------------------------------


def _torch_fidelity_available() -> bool:
    return importlib.util.find_spec("torch_fidelity") is not None


def inception_weights_file(weights_path: str | os.PathLike | None = None) -> Path:
    """Where the InceptionV3 weights must be for :func:`inception_feature`; raises if they are not there.

    Args:
        weights_path: an explicit weights file; default: torch-fidelity's download location,
            ``torch.hub.get_dir()/checkpoints/weights-inception-2015-12-05-6726825d.pth``
            (``$TORCH_HOME/hub/checkpoints/...``).

    Raises:
        InceptionUnavailableError: the file does not exist (nothing is downloaded).
    """
    path = (
        Path(weights_path)
        if weights_path is not None
        else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_NAME
    )
    if not path.is_file():
        raise InceptionUnavailableError(
            f"InceptionV3 weights not found at {path}: download {INCEPTION_WEIGHTS_URL} (on a machine with network "
            f"access) and save it there, or pass weights_path=FILE; unlearn-gym never downloads them itself. "
            f"Offline, use the scenario classifier's features instead (feature=classifier)."
        )
    return path


class _InceptionAdapter(nn.Module):
    """(N, 1, H, W) in [−1, 1] → uint8 (N, 3, H, W) in [0, 255] → torchmetrics' InceptionV3 → (N, d) float64."""

    def __init__(self, inception: nn.Module, num_features: int):
        super().__init__()
        self.inception = inception
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        with torch.no_grad():
            out = self.inception(x.to(_module_device(self.inception)))
        return out.double()


def inception_feature(
    feature: Literal[64, 192, 768, 2048, "logits_unbiased"] = 2048,
    *,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """torchmetrics' default InceptionV3 feature extractor, for images in the project's convention.

    The returned module converts (N, 1, H, W) images in [−1, 1] to 3-channel uint8 images, which
    InceptionV3 resizes to 299×299, and returns float64 features (pool features for FID/KID, or
    ``"logits_unbiased"`` for IS). It is built only when torch-fidelity is installed and its
    weights file is already on disk: nothing is downloaded, so this fails fast offline.

    Args:
        feature: the InceptionV3 layer: 64, 192, 768 or 2048 pool features, or ``"logits_unbiased"``.
        weights_path: the weights file; default: torch-fidelity's download location (see
            :func:`inception_weights_file`).
        device: where to put the network.

    Returns:
        A module with ``num_features`` for the ``feature`` argument of :func:`fid`, :func:`kid`
        and (with ``"logits_unbiased"``) :func:`inception_score`.

    Raises:
        InceptionUnavailableError: torch-fidelity is not installed, or the weights file is missing.
        ValueError: ``feature`` is not one of the layers above.
    """
    valid = (64, 192, 768, 2048, "logits_unbiased")
    if feature not in valid:
        raise ValueError(f"inception_feature: feature must be one of {valid}, got {feature!r}")
    if not _torch_fidelity_available():
        raise InceptionUnavailableError(
            "InceptionV3 features need torch-fidelity: pip install torch-fidelity (or pip install "
            f"'torchmetrics[image]'), then put its weights file {INCEPTION_WEIGHTS_NAME} in "
            f"torch.hub's checkpoints folder (download {INCEPTION_WEIGHTS_URL}). Offline, use the scenario "
            "classifier's features instead (feature=classifier)."
        )
    path = inception_weights_file(weights_path)
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=str(path)
    )
    num_features = 1008 if feature == "logits_unbiased" else int(feature)
    return _InceptionAdapter(net, num_features).to(device)


# -- helpers -------------------------------------------------------------------------------------


def _check_images(x: torch.Tensor, name: str, *, min_count: int = 1) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a float tensor (N, C, H, W) with values in [-1, 1], got {got}")
    if x.shape[0] < min_count:
        raise ValueError(f"{name}: expected at least {min_count} images, got {x.shape[0]}")
    if x.numel() and (x.min() < -1.001 or x.max() > 1.001):
        raise ValueError(
            f"{name}: expected values in [-1, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )


def _batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


# -- extraction ----------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(
    images: torch.Tensor,
    feature: nn.Module,
    *,
    output: Literal["features", "logits"] = "features",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """Run ``images`` through a feature network in batches.

    Args:
        images: (N, 1, 28, 28) images in [−1, 1].
        feature: a :class:`Classifier` or another feature network (see :func:`as_feature_module`).
        output: for a :class:`Classifier`: its ``"features"`` (N, 128) or ``"logits"`` (N, C).
        batch_size: images per network call.

    Returns:
        (N, d) float64 features on the CPU.
    """
    _check_images(images, "extract_features: images", min_count=0)
    module = as_feature_module(feature, output, image_shape=tuple(images.shape[1:]))
    chunks = [module(batch).double().cpu() for batch in _batches(images, batch_size)]
    return torch.cat(chunks) if chunks else torch.empty((0, module.num_features), dtype=torch.float64)
