"""Is the concept really gone? Membership inference attacks on a diffusion model (DESIGN §13).

A model remembers its training images: it denoises them better than images of the same kind that
it never saw. For each image x₀ with label y we compute a score s(x₀) and ask how well it
separates *members* (training images) from *non-members* (held-out images):

- ``"loss"`` attack (Matsumoto et al. 2023; Carlini et al. 2023): at K fixed pairs (t_k, ε_k),
  shared by every image, ℓ_k(x₀) = mean ‖ε_θ(γ_{t_k} x₀ + σ_{t_k} ε_k, t_k, y) − ε_k‖² over pixels,
  and s(x₀) = −(1/K) Σ_k ℓ_k(x₀).
- ``"secmi"`` attack (SecMI, Duan et al. 2023, its t-error "SecMI_stat"): deterministic DDIM
  inversion x₀ → x_t (t = ``secmi_t``, steps of Δ = ``secmi_interval``), one more deterministic step
  x_t → x_{t+Δ}, one deterministic reverse step x_{t+Δ} → x̃_t; s(x₀) = −mean (x̃_t − x_t)².

Two pairs of sets are attacked: (a) **forget**: ``scenario.forget`` (members; what unlearning must
erase) against ``scenario.forget_heldout`` (non-members of the same kind); (b) **retain**: the
retain training images against ``scenario.retain_heldout`` (what unlearning should leave alone).
Each pair is subsampled to equal counts, the members drawn to match the non-members' label counts.
The figures (ROC AUC, TPR at 1% FPR, bootstrap intervals) are those of
:mod:`~unlearn_gym.metrics.membership_stats`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from ..data.scenarios import ImageSet, Scenario
from ..models.unet import noise_schedule
from ..objectives.common import forward_noise
from .membership_stats import AttackResult, attack_figures

__all__ = [
    "MembershipConfig",
    "MembershipResult",
    "denoising_losses",
    "membership_inference",
    "membership_scores",
    "secmi_errors",
]


@dataclass(frozen=True)
class MembershipConfig:
    """Settings of :func:`membership_inference`."""

    num_samples: int = 64
    """Members and non-members per pair of sets, each capped at the smaller set's size (equal counts)."""
    attack: Literal["loss", "secmi"] = "loss"
    """``"loss"``: mean denoising loss at fixed (t, ε); ``"secmi"``: SecMI's deterministic t-error."""
    timesteps: tuple[int, ...] = (50, 100, 150, 200, 300)
    """``"loss"``: the timesteps t_k (each in [0, T))."""
    noises_per_timestep: int = 2
    """``"loss"``: noises ε drawn per timestep; K = len(timesteps) · noises_per_timestep evaluations per image."""
    secmi_t: int = 100
    """``"secmi"``: the timestep t of the t-error (a multiple of ``secmi_interval``)."""
    secmi_interval: int = 10
    """``"secmi"``: the DDIM step Δ of inversion and of the final forward/reverse pair."""
    fpr: float = 0.01
    """The FPR bound of the reported TPR."""
    bootstrap: int = 1000
    """Bootstrap resamples of the intervals."""
    confidence: float = 0.95
    """Coverage of the bootstrap intervals."""
    batch_size: int = 64
    """Images per UNet call."""
    seed: int = 0
    """Seed of the subsampling, the noises ε_k and the bootstrap."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        for name in ("num_samples", "noises_per_timestep", "bootstrap", "batch_size", "secmi_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"MembershipConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.attack not in ("loss", "secmi"):
            raise ValueError(f"MembershipConfig.attack must be 'loss' or 'secmi', got {self.attack!r}")
        if not self.timesteps or min(self.timesteps) < 0:
            raise ValueError(f"MembershipConfig.timesteps must be non-empty and >= 0, got {self.timesteps}")
        if self.secmi_t < self.secmi_interval or self.secmi_t % self.secmi_interval:
            raise ValueError(
                f"MembershipConfig.secmi_t must be a positive multiple of secmi_interval={self.secmi_interval}, "
                f"got {self.secmi_t}"
            )
        if not 0.0 <= self.fpr < 1.0:
            raise ValueError(f"MembershipConfig.fpr must be in [0, 1), got {self.fpr}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"MembershipConfig.confidence must be in (0, 1), got {self.confidence}")


def _schedule(unet: torch.nn.Module, scheduler_config: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    p = next(unet.parameters())
    sched = noise_schedule(scheduler_config).to(p.device, p.dtype)
    return sched.gamma, sched.sigma


@torch.no_grad()
def denoising_losses(
    unet: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    timesteps: tuple[int, ...],
    noises: torch.Tensor,
    scheduler_config: dict | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Per-image ε-prediction losses at fixed (t_k, ε_k), the same pairs for every image.

    ℓ_k(x₀) = mean over pixels of (ε_θ(γ_{t_k} x₀ + σ_{t_k} ε_k, t_k, y) − ε_k)².

    Args:
        unet: ε_θ(x_t, t, y), a class-conditional ``UNet2DModel`` (put in eval mode while scoring).
        images: (N, C, H, W) x₀ in [−1, 1].
        labels: (N,) conditioning labels y.
        timesteps: the K timesteps t_k, each in [0, T).
        noises: (K, C, H, W) the noises ε_k, one per timestep entry.
        scheduler_config: the DDPM schedule the model was trained with (default: DESIGN §4's).
        batch_size: images per UNet call.
        progress: called with 1 after every UNet call.

    Returns:
        (N, K) float32 losses on the CPU.
    """
    gamma, sigma = _schedule(unet, scheduler_config)
    T = gamma.shape[0]
    if len(noises) != len(timesteps) or noises.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"noises: expected shape ({len(timesteps)}, {', '.join(map(str, images.shape[1:]))}), "
            f"got {tuple(noises.shape)}"
        )
    if any(not 0 <= t < T for t in timesteps):
        raise ValueError(f"timesteps must lie in [0, {T}), got {tuple(timesteps)}")
    p = next(unet.parameters())
    noises = noises.to(p.device, p.dtype)
    was_training = unet.training
    unet.eval()
    out = torch.empty((len(images), len(timesteps)), dtype=torch.float32)
    try:
        for start in range(0, len(images), batch_size):
            x0 = images[start : start + batch_size].to(p.device, p.dtype)
            y = labels[start : start + batch_size].to(p.device)
            for k, t in enumerate(timesteps):
                eps = noises[k].expand_as(x0)
                tt = torch.full((len(x0),), t, device=p.device, dtype=torch.long)
                x_t = forward_noise(x0, tt, eps, gamma, sigma)
                err = (unet(x_t, tt, class_labels=y).sample - eps).pow(2).flatten(1).mean(1)
                out[start : start + len(x0), k] = err.float().cpu()
                if progress is not None:
                    progress(1)
    finally:
        unet.train(was_training)
    return out


@torch.no_grad()
def secmi_errors(
    unet: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    t: int = 100,
    interval: int = 10,
    scheduler_config: dict | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """SecMI's t-error of each image (Duan et al. 2023, "SecMI_stat"); deterministic.

    One deterministic DDIM step from s to s′ (η = 0, either direction) with ε̂ = ε_θ(x_s, s, y):
    x̂₀ = (x_s − σ_s ε̂)/γ_s, x_{s′} = γ_{s′} x̂₀ + σ_{s′} ε̂.

    1. inversion x₀ → x_t through s = 0, Δ, 2Δ, …, t (x₀ taken as x at s = 0);
    2. one more forward step x_t → x_{t+Δ};
    3. one reverse step x_{t+Δ} → x̃_t (ε̂ now read at t + Δ);
    4. error = mean over pixels of (x̃_t − x_t)².

    Args:
        unet: ε_θ(x_t, t, y).
        images: (N, C, H, W) x₀ in [−1, 1].
        labels: (N,) conditioning labels y.
        t: the timestep of the t-error (a multiple of ``interval``, with t + Δ < T).
        interval: Δ.
        scheduler_config: the DDPM schedule (default: DESIGN §4's).
        batch_size: images per UNet call.
        progress: called with 1 after every UNet call (t/Δ + 2 per batch).

    Returns:
        (N,) float32 errors on the CPU.
    """
    gamma, sigma = _schedule(unet, scheduler_config)
    if t % interval or t < interval or t + interval >= gamma.shape[0]:
        raise ValueError(
            f"t must be a positive multiple of interval={interval} below {gamma.shape[0] - interval}, got {t}"
        )
    p = next(unet.parameters())
    was_training = unet.training
    unet.eval()

    def step(x: torch.Tensor, s: int, s_next: int, y: torch.Tensor) -> torch.Tensor:
        eps = unet(x, torch.full((len(x),), s, device=p.device, dtype=torch.long), class_labels=y).sample
        if progress is not None:
            progress(1)
        x0_hat = (x - sigma[s] * eps) / gamma[s]
        return gamma[s_next] * x0_hat + sigma[s_next] * eps

    out = torch.empty(len(images), dtype=torch.float32)
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(p.device, p.dtype)
            y = labels[start : start + batch_size].to(p.device)
            for s in range(0, t, interval):  # 1. x₀ → x_t
                x = step(x, s, s + interval, y)
            x_next = step(x, t, t + interval, y)  # 2. x_t → x_{t+Δ}
            x_back = step(x_next, t + interval, t, y)  # 3. x_{t+Δ} → x̃_t
            out[start : start + len(x)] = (x_back - x).pow(2).flatten(1).mean(1).float().cpu()  # 4.
    finally:
        unet.train(was_training)
    return out


def membership_scores(
    unet: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: MembershipConfig = MembershipConfig(),
    *,
    generator: torch.Generator | None = None,
    scheduler_config: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Attack scores of images (higher = more member-like): −mean loss, or −SecMI t-error.

    Args:
        unet: ε_θ(x_t, t, y).
        images: (N, C, H, W) in [−1, 1].
        labels: (N,) their labels y.
        config: the attack and its settings.
        generator: CPU generator of the noises ε_k (``"loss"``); call it once for members and
            non-members together, or with equal states, so both see the same ε_k. Default: one
            seeded with ``config.seed``.
        scheduler_config: the DDPM schedule.
        progress: called with 1 after every UNet call.

    Returns:
        (N,) float64 scores.
    """
    if config.attack == "secmi":
        err = secmi_errors(
            unet,
            images,
            labels,
            t=config.secmi_t,
            interval=config.secmi_interval,
            scheduler_config=scheduler_config,
            batch_size=config.batch_size,
            progress=progress,
        )
        return -err.double().numpy()
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    timesteps = tuple(t for t in config.timesteps for _ in range(config.noises_per_timestep))
    noises = torch.randn((len(timesteps), *images.shape[1:]), generator=generator)
    losses = denoising_losses(
        unet,
        images,
        labels,
        timesteps=timesteps,
        noises=noises,
        scheduler_config=scheduler_config,
        batch_size=config.batch_size,
        progress=progress,
    )
    return -losses.double().mean(1).numpy()


def _matched_indices(
    member_labels: np.ndarray, nonmember_labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n non-members at random, and n members with the same label counts where there are enough."""
    non = rng.choice(len(nonmember_labels), n, replace=False)
    chosen: list[np.ndarray] = []
    for y, count in zip(*np.unique(nonmember_labels[non], return_counts=True)):
        pool = np.flatnonzero(member_labels == y)
        chosen.append(rng.choice(pool, min(count, len(pool)), replace=False))
    mem = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    if len(mem) < n:  # too few members of some label: fill at random
        rest = np.setdiff1d(np.arange(len(member_labels)), mem)
        mem = np.concatenate([mem, rng.choice(rest, n - len(mem), replace=False)])
    return np.sort(mem), np.sort(non)


@dataclass(frozen=True)
class MembershipResult:
    """Membership inference against one model on the scenario's two pairs of sets."""

    forget: AttackResult
    """``scenario.forget`` (members) against ``scenario.forget_heldout`` (non-members)."""
    retain: AttackResult
    """``scenario.retain`` (members) against ``scenario.retain_heldout`` (non-members)."""
    config: MembershipConfig
    """The settings used."""
    seconds: float
    """Wall time."""

    def to_dict(self) -> dict:
        """JSON-able: ``forget``, ``retain`` (see :meth:`AttackResult.to_dict`), ``settings``, ``seconds``."""
        return {
            "forget": self.forget.to_dict(),
            "retain": self.retain.to_dict(),
            "settings": asdict(self.config),
            "seconds": round(self.seconds, 3),
        }


def membership_inference(
    unet: torch.nn.Module,
    scenario: Scenario,
    config: MembershipConfig = MembershipConfig(),
    *,
    scheduler_config: dict | None = None,
    progress: bool = True,
) -> MembershipResult:
    """Membership inference on the forget pair and on the retain pair of ``scenario``.

    Every image gets the same noises ε_k (one CPU generator seeded with ``config.seed``); the
    subsamples and the bootstrap come from ``numpy.random.default_rng(config.seed)``. Equal seeds
    and models give equal results.

    Args:
        unet: the model under attack (not modified; its train/eval mode is restored).
        scenario: gives members (``forget``, ``retain``) and non-members (``forget_heldout``,
            ``retain_heldout``).
        config: attack settings.
        scheduler_config: the DDPM schedule the model was trained with.
        progress: a tqdm bar over UNet calls, on stderr.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    pairs = {"forget": (scenario.forget, scenario.forget_heldout), "retain": (scenario.retain, scenario.retain_heldout)}
    picked: dict[str, tuple[ImageSet, ImageSet]] = {}
    for name, (members, nonmembers) in pairs.items():
        n = min(config.num_samples, len(members), len(nonmembers))
        if n < 1:
            raise ValueError(
                f"membership_inference: the {name} pair needs members and non-members, got "
                f"{len(members)} and {len(nonmembers)}"
            )
        mi, ni = _matched_indices(members.labels.numpy(), nonmembers.labels.numpy(), n, rng)
        picked[name] = (members.subset(mi), nonmembers.subset(ni))
    calls_per_batch = (
        len(config.timesteps) * config.noises_per_timestep
        if config.attack == "loss"
        else config.secmi_t // config.secmi_interval + 2
    )
    total = sum(2 * math.ceil(len(m) / config.batch_size) for m, _ in picked.values()) * calls_per_batch
    bar = tqdm(total=total, disable=not progress, desc=f"membership ({config.attack})", dynamic_ncols=True)
    results = {}
    for name, (members, nonmembers) in picked.items():
        # generator=None: a fresh one seeded with config.seed each time, so every image sees the same ε_k
        scores = [
            membership_scores(
                unet, part.images, part.labels, config, scheduler_config=scheduler_config, progress=bar.update
            )
            for part in (members, nonmembers)
        ]
        results[name] = attack_figures(
            scores[0],
            scores[1],
            fpr=config.fpr,
            resamples=config.bootstrap,
            confidence=config.confidence,
            rng=rng,
        )
    bar.close()
    return MembershipResult(results["forget"], results["retain"], config, time.perf_counter() - t0)
