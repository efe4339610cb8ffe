"""Image-fidelity metrics of generated samples: FID, KID, IS, SSIM and a memorisation score.

Every function takes float tensors of shape (N, 1, 28, 28) with values in [−1, 1] (the project's
image convention, DESIGN §9), batches internally, returns Python floats and is deterministic for
equal inputs (and equal ``seed``) on the same device.

Features. FID, KID and IS need a feature network. Offline, that is the scenario's evaluation
:class:`~unlearn_gym.metrics.classifier.Classifier`: :class:`ClassifierFeatures` wraps it as a
torchmetrics ``feature=`` module that returns its (N, 128) penultimate activations (FID, KID) or
its (N, C) logits (IS), in float64. The usual InceptionV3 features are available through
:func:`inception_feature` where torch-fidelity and its weights file are present locally; numbers
from the two feature networks are not comparable with each other.

Any ``feature`` argument may be a :class:`Classifier` (its features or logits are used), a
:class:`ClassifierFeatures`, the module :func:`inception_feature` returns, or any ``nn.Module``
that maps (N, 1, 28, 28) images in [−1, 1] to (N, d) features. :func:`fid`, :func:`kid` and
:func:`inception_score` extract features with :func:`extract_features` and hand them to
:func:`fid_from_features`, :func:`kid_from_features` and :func:`inception_score_from_logits`,
which run torchmetrics' metrics with an identity feature module: callers that compare many sample
sets with one real set (:mod:`~unlearn_gym.metrics.table`) compute the real features once.

torchmetrics details this module relies on (checked against torchmetrics 1.9):

- With a custom feature module, ``FrechetInceptionDistance`` and ``KernelInceptionDistance``
  pass the image tensor to it unchanged (their ``normalize`` only matters for Inception, or for
  FID's dummy forward when the module has no ``num_features``). FID accumulates its sums in
  float64 but casts the result back to the dtype of the features: the adapters here return
  float64 features so the result stays float64.
- ``InceptionScore(normalize=True)`` casts the input to uint8 even for a custom module: it is
  left ``False`` and fed logits.
- KID (its random subsets) and IS (its random split order) draw from torch's *global* RNG:
  :func:`kid` and :func:`inception_score` run them under ``torch.random.fork_rng`` seeded with
  ``seed``, so results are reproducible and the caller's global RNG state is untouched.
- KID raises when ``subset_size`` exceeds the number of real or fake samples (default 1000):
  :func:`kid` uses ``min(1000, n_real, n_fake)`` unless told otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .classifier import Classifier

__all__ = [
    "ClassifierFeatures",
    "InceptionUnavailableError",
    "MemorisationScore",
    "as_feature_module",
    "extract_features",
    "fid",
    "fid_from_features",
    "inception_feature",
    "inception_score",
    "inception_score_from_logits",
    "inception_weights_file",
    "kid",
    "kid_from_features",
    "memorisation",
    "nearest_neighbours",
    "ssim",
]

INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_NAME}"
DEFAULT_BATCH_SIZE = 500
KID_MAX_SUBSET_SIZE = 1000


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


def _check_same_image_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"{names}: expected images of one shape (C, H, W), got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        )


def _batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global CPU RNG for the block and restore the caller's state afterwards.

    torchmetrics' KID and IS call ``torch.randperm(n)`` without a generator or device: CPU RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _quiet_torchmetrics() -> Iterator[None]:
    """Silence torchmetrics' "will save all extracted features in buffer" construction warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*will save all extracted features in buffer.*")
        yield


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] → [0, 1] float64 (ink 1, background 0 for MNIST-like images)."""
    return ((x.double() + 1.0) / 2.0).clamp(0.0, 1.0)


# -- FID, KID, IS --------------------------------------------------------------------------------


class _PrecomputedFeatures(nn.Module):
    """Identity ``feature=`` module: lets torchmetrics' metrics consume features computed beforehand."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_features(x: torch.Tensor, name: str, *, min_count: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a float tensor (N, d), got {got}")
    if x.shape[0] < min_count:
        raise ValueError(f"{name}: expected at least {min_count} rows, got {x.shape[0]}")


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


def fid_from_features(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """FID between two sets of (N, d) features; see :func:`fid`.

    Args:
        real_features: (N_r, d) features of real images, N_r ≥ 2.
        fake_features: (N_f, d) features of generated images, N_f ≥ 2.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_features(real_features, "fid: real features", min_count=2)
    _check_features(fake_features, "fid: fake features", min_count=2)
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            f"fid: expected features of one width, got {real_features.shape[1]} and {fake_features.shape[1]}"
        )
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(real_features.shape[1]), normalize=True)
    metric.update(real_features.double().cpu(), real=True)
    metric.update(fake_features.double().cpu(), real=False)
    return float(metric.compute())


def kid_from_features(
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    *,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two sets of (N, d) features; see :func:`kid`.

    Args:
        real_features: (N_r, d) features of real images.
        fake_features: (N_f, d) features of generated images.
        subset_size: features per subset; default min(1000, N_r, N_f). Must be in [2, min(N_r, N_f)].
        subsets: number of subsets.
        seed: seed of the subset draws.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_features(real_features, "kid: real features", min_count=2)
    _check_features(fake_features, "kid: fake features", min_count=2)
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            f"kid: expected features of one width, got {real_features.shape[1]} and {fake_features.shape[1]}"
        )
    limit = min(real_features.shape[0], fake_features.shape[0])
    if subset_size is None:
        subset_size = min(KID_MAX_SUBSET_SIZE, limit)
    if not 2 <= subset_size <= limit:
        raise ValueError(f"kid: subset_size must be in [2, {limit}] (the smaller set's size), got {subset_size}")
    if subsets < 1:
        raise ValueError(f"kid: subsets must be >= 1, got {subsets}")
    with _quiet_torchmetrics():
        metric = KernelInceptionDistance(
            feature=_PrecomputedFeatures(real_features.shape[1]), subsets=subsets, subset_size=subset_size
        )
    metric.update(real_features.double().cpu(), real=True)
    metric.update(fake_features.double().cpu(), real=False)
    with _seeded_global_rng(seed):
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score_from_logits(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS of (N, C) logits; see :func:`inception_score`.

    Args:
        logits: (N, C) class logits of generated images, N ≥ 1.
        splits: number of parts (fewer when N < splits).
        seed: seed of the shuffle.
    """
    from torchmetrics.image.inception import InceptionScore

    _check_features(logits, "inception_score: logits", min_count=1)
    if splits < 1:
        raise ValueError(f"inception_score: splits must be >= 1, got {splits}")
    with _quiet_torchmetrics():
        metric = InceptionScore(feature=_PrecomputedFeatures(logits.shape[1]), splits=splits, normalize=False)
    metric.update(logits.double().cpu())
    with _seeded_global_rng(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*degrees of freedom is <= 0.*")
        mean, std = metric.compute()
    return float(mean), float(std)


def fid(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module, *, batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Fréchet distance between Gaussians fitted to the features of ``real`` and ``fake``.

    FID = ‖μ_r − μ_f‖² + tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½), computed by torchmetrics'
    ``FrechetInceptionDistance`` in float64 on the features of ``feature``.

    Args:
        real: (N_r, 1, 28, 28) real images in [−1, 1], N_r ≥ 2.
        fake: (N_f, 1, 28, 28) generated images in [−1, 1], N_f ≥ 2.
        feature: the feature network (see :func:`as_feature_module`); a :class:`Classifier`
            contributes its 128 penultimate features.
        batch_size: images per feature-network call.

    Returns:
        FID ≥ 0 up to rounding (about −1e-12 is possible for equal sets): 0 for equal feature
        statistics.
    """
    _check_images(real, "fid: real", min_count=2)
    _check_images(fake, "fid: fake", min_count=2)
    _check_same_image_shape(real, fake, "fid: real, fake")
    return fid_from_features(
        extract_features(real, feature, batch_size=batch_size), extract_features(fake, feature, batch_size=batch_size)
    )


def kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature: nn.Module,
    *,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[float, float]:
    """Kernel Inception Distance: the unbiased MMD² with the cubic kernel k(a, b) = (aᵀb / d + 1)³.

    torchmetrics' ``KernelInceptionDistance`` draws ``subsets`` random subsets of ``subset_size``
    real and fake features and averages the MMD² estimates; the subsets come from torch's global
    RNG, which this function seeds with ``seed`` inside ``torch.random.fork_rng`` (the caller's
    RNG state is left untouched). Features are float64.

    Args:
        real: (N_r, 1, 28, 28) real images in [−1, 1].
        fake: (N_f, 1, 28, 28) generated images in [−1, 1].
        feature: the feature network (see :func:`as_feature_module`).
        subset_size: features per subset; default min(1000, N_r, N_f). Must be in [2, min(N_r, N_f)].
        subsets: number of subsets.
        seed: seed of the subset draws: equal seeds give equal numbers.
        batch_size: images per feature-network call.

    Returns:
        (mean, std) of MMD² over the subsets (std is the population std, ≈ 0 when the subsets
        cover both whole sets). The unbiased estimate can be slightly negative for equal
        distributions.
    """
    _check_images(real, "kid: real", min_count=2)
    _check_images(fake, "kid: fake", min_count=2)
    _check_same_image_shape(real, fake, "kid: real, fake")
    return kid_from_features(
        extract_features(real, feature, batch_size=batch_size),
        extract_features(fake, feature, batch_size=batch_size),
        subset_size=subset_size,
        subsets=subsets,
        seed=seed,
    )


def inception_score(
    fake: torch.Tensor,
    logits_module: nn.Module,
    *,
    splits: int = 10,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[float, float]:
    """Inception Score IS = exp(E_x KL(p(y|x) ‖ p(y))) with the classes of ``logits_module``.

    Computed by torchmetrics' ``InceptionScore`` on float64 logits (its ``normalize`` stays
    ``False``: ``True`` would cast the input to uint8). The samples are shuffled (torch's global
    RNG, seeded with ``seed`` inside ``torch.random.fork_rng``) and cut into ``splits`` parts; IS
    is computed per part. With C classes, 1 ≤ IS ≤ C: C for confident predictions spread evenly
    over all classes, 1 for a single class (or for unconfident predictions).

    Args:
        fake: (N, 1, 28, 28) generated images in [−1, 1].
        logits_module: a :class:`Classifier` (its logits are used) or any module mapping images
            to (N, C) logits (e.g. ``inception_feature("logits_unbiased")``).
        splits: number of parts (fewer when N < splits).
        seed: seed of the shuffle: equal seeds give equal numbers.
        batch_size: images per network call.

    Returns:
        (mean, std) of IS over the parts; std is the sample std (NaN with a single part).
    """
    _check_images(fake, "inception_score: fake", min_count=1)
    logits = extract_features(fake, logits_module, output="logits", batch_size=batch_size)
    return inception_score_from_logits(logits, splits=splits, seed=seed)


# -- SSIM and memorisation -----------------------------------------------------------------------


def nearest_neighbours(
    queries: torch.Tensor, references: torch.Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the reference image nearest in pixel L2 distance.

    Args:
        queries: (N, C, H, W) images.
        references: (M, C, H, W) images, M ≥ 1.
        batch_size: queries per distance computation.

    Returns:
        (index (N,) int64 into ``references``, distance (N,) float64), on the queries' device.
        Ties go to the lowest index.
    """
    ref = references.reshape(references.shape[0], -1).to(device=queries.device, dtype=torch.float64)
    idx, dist = [], []
    for q in _batches(queries, batch_size):
        d = torch.cdist(q.reshape(q.shape[0], -1).double(), ref)
        value, index = d.min(dim=1)
        idx.append(index)
        dist.append(value)
    if not idx:
        return torch.empty(0, dtype=torch.long, device=queries.device), torch.empty(0, dtype=torch.float64)
    return torch.cat(idx), torch.cat(dist)


def ssim(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    pairing: Literal["nearest", "index"] = "nearest",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> float:
    """Mean structural similarity (SSIM) between generated images and real images paired with them.

    SSIM compares two images, so the generated and real sets must be paired. By default
    (``pairing="nearest"``) each generated image is paired with its nearest real image in pixel L2
    distance, so the figure measures how closely samples resemble *some* real image — a
    memorisation-style similarity: on the forget set, lower is better (the model no longer draws
    those images); on the retain set, higher is better. ``pairing="index"`` pairs ``fake[i]`` with
    ``real[i]`` (equal N), e.g. for reconstructions.

    Both sets are mapped to [0, 1] and compared by torchmetrics'
    ``structural_similarity_index_measure`` (Gaussian window σ = 1.5, 11×11, reflection padding,
    ``data_range=1``) in float32: its grouped convolution is about 25× slower in float64 on CPU,
    and the per-image SSIM differs by ~1e-6; the mean over images is accumulated in float64.

    Args:
        real: (N_r, 1, 28, 28) real images in [−1, 1].
        fake: (N_f, 1, 28, 28) generated images in [−1, 1].
        pairing: ``"nearest"`` (default) or ``"index"`` (requires N_r = N_f).
        batch_size: images per SSIM computation.

    Returns:
        Mean SSIM over the generated images, in [−1, 1]; 1 when every generated image equals its
        paired real image.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_images(real, "ssim: real", min_count=1)
    _check_images(fake, "ssim: fake", min_count=1)
    _check_same_image_shape(real, fake, "ssim: real, fake")
    if pairing == "nearest":
        index, _ = nearest_neighbours(fake, real, batch_size=batch_size)
        paired = real.to(fake.device)[index]
    elif pairing == "index":
        if real.shape[0] != fake.shape[0]:
            raise ValueError(
                f"ssim: pairing='index' needs as many real as fake images, got {real.shape[0]} and {fake.shape[0]}"
            )
        paired = real.to(fake.device)
    else:
        raise ValueError(f"ssim: pairing must be 'nearest' or 'index', got {pairing!r}")
    total = 0.0
    for start in range(0, fake.shape[0], batch_size):
        f = _to_unit(fake[start : start + batch_size]).float()
        r = _to_unit(paired[start : start + batch_size]).float()
        values = structural_similarity_index_measure(f, r, data_range=1.0, reduction="none")
        total += float(values.double().sum())
    return total / fake.shape[0]


@dataclass(frozen=True)
class MemorisationScore:
    """How closely generated images copy the forget set (see :func:`memorisation`)."""

    mean: float
    """Mean over generated images of the highest cosine similarity to any forget image."""
    share_above: float
    """Share of generated images whose highest similarity is ≥ ``threshold`` (near-copies)."""
    threshold: float
    """The similarity counted as a near-copy."""
    space: str
    """``"pixel"`` (images mapped to [0, 1]) or ``"feature"`` (the feature network's features)."""

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def memorisation(
    fake: torch.Tensor,
    forget_images: torch.Tensor,
    *,
    threshold: float = 0.95,
    feature: nn.Module | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> MemorisationScore:
    """For each generated image, its highest cosine similarity to any image of the forget set.

    In pixel space (default) images are mapped from [−1, 1] to [0, 1] first, so the MNIST
    background (0) adds nothing and the cosine measures the overlap of ink: 1 for an exact copy
    (up to brightness), about 0.5–0.8 for different writings of one digit. With ``feature`` the
    cosine is taken between feature vectors instead.

    Args:
        fake: (N, 1, 28, 28) generated images in [−1, 1].
        forget_images: (M, 1, 28, 28) forget-set images in [−1, 1], M ≥ 1.
        threshold: similarity at or above which a generated image counts as a near-copy.
        feature: optional feature network (see :func:`as_feature_module`); default: pixels.
        batch_size: images per computation.

    Returns:
        :class:`MemorisationScore` with the mean highest similarity and the share of near-copies.
    """
    _check_images(fake, "memorisation: fake", min_count=1)
    _check_images(forget_images, "memorisation: forget_images", min_count=1)
    _check_same_image_shape(fake, forget_images, "memorisation: fake, forget_images")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"memorisation: threshold must be in [-1, 1], got {threshold}")

    if feature is None:

        def embed(x: torch.Tensor) -> torch.Tensor:
            return _to_unit(x).reshape(x.shape[0], -1)

    else:
        module = as_feature_module(feature, "features", image_shape=tuple(fake.shape[1:]))

        def embed(x: torch.Tensor) -> torch.Tensor:
            return module(x).double().cpu()

    def unit_rows(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    ref = unit_rows(torch.cat([embed(b).cpu() for b in _batches(forget_images, batch_size)]))
    best = torch.cat([(unit_rows(embed(b).cpu()) @ ref.T).max(dim=1).values for b in _batches(fake, batch_size)])
    best = best.clamp(-1.0, 1.0)  # rounding can put an exact copy at 1 + 2e-16
    return MemorisationScore(
        mean=float(best.mean()),
        share_above=float((best >= threshold - 1e-12).double().mean()),
        threshold=float(threshold),
        space="pixel" if feature is None else "feature",
    )
