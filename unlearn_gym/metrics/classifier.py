"""The evaluation classifier: a small CNN trained on a scenario's real images and true classes.

It judges samples (forget rate, retain accuracy) and is the offline feature extractor for
FID/KID/IS: ``features(x)`` returns the (N, 128) penultimate activations, and ``num_features``
is set as torchmetrics expects of a custom feature module.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.scenarios import ImageSet, Scenario
from ..models.checkpoint import CheckpointError, load_tensors, read_json, save_tensors_atomic, write_json_atomic

__all__ = [
    "classifier_dir_for",
    "Classifier",
    "ClassifierTrainConfig",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "classifier_accuracy",
]

CLASSIFIER_FORMAT = "unlearn-gym/classifier"


class Classifier(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc128-fc(C) on (N, 1, 28, 28) images in [−1, 1]."""

    def __init__(self, num_classes: int, class_names: tuple[str, ...] | None = None, width: int = 32):
        super().__init__()
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
        self.width = width
        self.num_features = 128
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * w * 7 * 7, self.num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [−1, 1] → (N, 128) penultimate features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [−1, 1] → (N, C) logits."""
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """(N,) predicted classes."""
        was = self.training
        self.eval()
        out = (
            torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
            if len(x)
            else torch.empty(0, dtype=torch.long)
        )
        self.train(was)
        return out


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Training of the evaluation classifier."""

    epochs: int = 12
    """Passes over the training split."""
    batch_size: int = 128
    """Images per step."""
    lr: float = 2e-3
    """Adam learning rate (cosine-decayed to 0)."""
    max_shift: int = 2
    """Random translation of up to this many pixels (augmentation)."""
    seed: int = 0
    """Seed of initialisation, order and augmentation."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClassifierTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"ClassifierTrainConfig.lr must be > 0, got {self.lr}")


def _shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with background (−1)."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).tolist()
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def classifier_accuracy(classifier: Classifier, data: ImageSet) -> float:
    """Share of ``data.images`` that ``classifier`` assigns to ``data.classes``."""
    if len(data) == 0:
        return float("nan")
    pred = classifier.predict(data.images.to(next(classifier.parameters()).device)).cpu()
    return float((pred == data.classes).float().mean())


def train_classifier(
    scenario: Scenario, config: ClassifierTrainConfig = ClassifierTrainConfig(), progress: bool = True
) -> tuple[Classifier, dict]:
    """Train the evaluation classifier on ``retain ∪ forget`` (true classes), test on held-out.

    Returns:
        (classifier in eval mode, report with ``heldout_accuracy``, ``train_accuracy``, ``seconds``).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    train = scenario.training_set()
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Classifier(scenario.num_classes, scenario.class_names)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = (len(train) + config.batch_size - 1) // config.batch_size
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    model.train()
    bar = tqdm(total=total, disable=not progress, desc="classifier", dynamic_ncols=True)
    for _ in range(config.epochs):
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), config.batch_size):
            idx = order[i : i + config.batch_size]
            x = _shift(train.images[idx], config.max_shift, gen)
            loss = F.cross_entropy(model(x), train.classes[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    heldout = ImageSet.concat(scenario.retain_heldout, scenario.forget_heldout)
    report = {
        "heldout_accuracy": classifier_accuracy(model, heldout),
        "train_accuracy": classifier_accuracy(model, train),
        "heldout_size": len(heldout),
        "seconds": time.perf_counter() - t0,
        "train": asdict(config),
    }
    return model, report


def save_classifier(model: Classifier, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``DIR/classifier.safetensors`` and ``DIR/config.json`` atomically."""
    directory = Path(directory)
    save_tensors_atomic(
        model.state_dict(), directory / "classifier.safetensors", metadata={"format": CLASSIFIER_FORMAT}
    )
    write_json_atomic(
        {
            "format": CLASSIFIER_FORMAT,
            "num_classes": model.num_classes,
            "class_names": list(model.class_names),
            "width": model.width,
            **(extra or {}),
        },
        directory / "config.json",
    )
    return directory


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a classifier directory written by :func:`save_classifier` (eval mode)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a classifier directory (config.json + classifier.safetensors)")
    cfg = read_json(directory / "config.json")
    if cfg.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(
            f"{directory}/config.json: expected format {CLASSIFIER_FORMAT!r}, got {cfg.get('format')!r}"
        )
    model = Classifier(int(cfg["num_classes"]), tuple(cfg["class_names"]), int(cfg.get("width", 32)))
    tensors, _ = load_tensors(directory / "classifier.safetensors")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{directory}/classifier.safetensors does not match its config.json: {e}") from e
    return model.to(device).eval()


def classifier_dir_for(checkpoint: str | Path, config: dict, explicit: str | Path | None = None) -> Path:
    """The evaluation classifier of a model directory: ``explicit``, else ``checkpoint/classifier``,
    else the bundled one for the default scenario. Raises FileNotFoundError saying what to do."""
    from ..assets import bundled_classifier_dir

    checkpoint = Path(checkpoint)
    if explicit:
        return Path(explicit)
    if (checkpoint / "classifier").is_dir():
        return checkpoint / "classifier"
    if config.get("scenario", {}).get("name") == "default":
        return bundled_classifier_dir()
    raise FileNotFoundError(
        f"no classifier for {checkpoint}: pass --classifier DIR, or train one with "
        "`unlearn-gym train-classifier --scenario ... --out DIR`"
    )
