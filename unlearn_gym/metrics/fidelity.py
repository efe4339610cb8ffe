"""Image-fidelity metrics of generated samples: FID, KID, IS, SSIM and a memorisation score.

Every function takes float tensors of shape (N, 1, 28, 28) with values in [−1, 1] (the project's
image convention, DESIGN §9), batches internally, returns Python floats and is deterministic for
equal inputs (and equal ``seed``) on the same device.

Features. FID, KID and IS need a feature network: the scenario's evaluation classifier offline, or
InceptionV3 where its weights are on disk (see :mod:`~unlearn_gym.metrics.features`, which says what
a ``feature`` argument may be). :func:`fid`, :func:`kid` and :func:`inception_score` extract
features with :func:`~unlearn_gym.metrics.features.extract_features` and hand them to
:func:`fid_from_features`, :func:`kid_from_features` and :func:`inception_score_from_logits`,
which run torchmetrics' metrics with an identity feature module: callers that compare many sample
sets with one real set (:mod:`~unlearn_gym.metrics.table`) compute the real features once.

torchmetrics details this module relies on (checked against torchmetrics 1.9):

- With a custom feature module, ``FrechetInceptionDistance`` and ``KernelInceptionDistance``
  pass the image tensor to it unchanged (their ``normalize`` only matters for Inception, or for
  FID's dummy forward when the module has no ``num_features``). FID accumulates its sums in
  float64 but casts the result back to the dtype of the features: the adapters of
  :mod:`~unlearn_gym.metrics.features` return float64 features so the result stays float64.
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
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from .features import DEFAULT_BATCH_SIZE, _batches, _check_images, as_feature_module, extract_features

__all__ = [
    "KID_MAX_SUBSET_SIZE",
    "MemorisationScore",
    "fid",
    "fid_from_features",
    "inception_score",
    "inception_score_from_logits",
    "kid",
    "kid_from_features",
    "memorisation",
    "nearest_neighbours",
    "ssim",
]

KID_MAX_SUBSET_SIZE = 1000


# -- helpers -------------------------------------------------------------------------------------


def _check_same_image_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"{names}: expected images of one shape (C, H, W), got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        )


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
