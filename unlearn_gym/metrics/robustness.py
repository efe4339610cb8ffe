"""Is the concept really gone? Membership inference and relearning attacks (DESIGN §13).

**Membership inference.** A model remembers its training images: it denoises them better than
images of the same kind that it never saw. For each image x₀ with label y we compute a score s(x₀)
and ask how well it separates *members* (training images) from *non-members* (held-out images):

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
Figures: the ROC AUC (Mann–Whitney U / (n₁ n₀), ties counted half) and the TPR at 1% FPR (the
threshold is the largest one whose FPR on the non-member scores is ≤ 1%), each with a percentile
bootstrap interval (members and non-members resampled separately). After perfect unlearning the
forget AUC is 0.5; below 0.5 the forget images stand out by being *worse* denoised than unseen
ones (another trace of the unlearning).

**Relearning.** Erasure by fine-tuning can be shallow: a few steps of benign fine-tuning bring the
concept back ("Unstable Unlearning", arXiv 2410.08074), and a handful of forget images reverses it
(DiMRA, arXiv 2512.03564). From a copy of the model, K steps of plain DDPM fine-tuning (ε-MSE,
AdamW, fixed learning rate) on (``"retain"``) retain data only, and on (``"mixed"``) retain data
with ``forget_per_batch`` of each batch drawn from m forget images. Every ``eval_every`` steps the
forget rate is measured by sampling the contaminated label and classifying (as
:func:`~.forget.evaluate_model` does). Reported: the curve, the forget rate after K steps, and the
first evaluated step at which the forget rate reaches half of the pretrained model's (None: not
within K).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..data.scenarios import ImageSet, Scenario
from ..models.unet import noise_schedule
from ..objectives.common import forward_noise
from .forget import evaluate_model

__all__ = [
    "ROBUSTNESS_METRICS",
    "AttackResult",
    "MembershipConfig",
    "MembershipResult",
    "RelearnConfig",
    "RelearnCurve",
    "RelearnResult",
    "RobustnessConfig",
    "attack_figures",
    "bootstrap_interval",
    "ddpm_finetune_step",
    "denoising_losses",
    "membership_inference",
    "membership_scores",
    "relearning",
    "robustness_figures",
    "roc_auc",
    "sampled_forget_rate",
    "secmi_errors",
    "summary_figures",
    "tpr_at_fpr",
]

ROBUSTNESS_METRICS: dict[str, str] = {
    "mia_forget_auc": "MIA forget AUC (→ 0.5)",
    "mia_forget_tpr": "MIA forget TPR@FPR ↓",
    "mia_retain_auc": "MIA retain AUC",
    "mia_retain_tpr": "MIA retain TPR@FPR",
    "relearn_retain_forget_rate": "relearn retain: forget rate after K ↓",
    "relearn_retain_steps_to_half": "relearn retain: steps to half ↑",
    "relearn_mixed_forget_rate": "relearn mixed: forget rate after K ↓",
    "relearn_mixed_steps_to_half": "relearn mixed: steps to half ↑",
}
"""The flat per-model figures of :func:`summary_figures` (bench columns) and their headers."""


# -- membership inference: the statistics --------------------------------------------------------


def _scores_pair(members, nonmembers) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(members, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmembers, dtype=np.float64).reshape(-1)
    if len(m) == 0 or len(n) == 0:
        raise ValueError(f"expected at least one member and one non-member score, got {len(m)} and {len(n)}")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise ValueError("expected finite scores, got NaN or infinite ones")
    return m, n


def roc_auc(member_scores, nonmember_scores) -> float:
    """ROC AUC of "member if score > τ": the Mann–Whitney U statistic over n₁ n₀, ties counted half.

    AUC = (1/(n₁ n₀)) Σ_i Σ_j [1(m_i > n_j) + ½·1(m_i = n_j)], the probability that a random
    member scores above a random non-member.

    Args:
        member_scores: (n₁,) scores of members (higher = more member-like).
        nonmember_scores: (n₀,) scores of non-members.
    """
    m, n = _scores_pair(member_scores, nonmember_scores)
    n_sorted = np.sort(n)
    below = np.searchsorted(n_sorted, m, side="left")  # non-members strictly below each member
    equal = np.searchsorted(n_sorted, m, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(m) * len(n)))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01) -> float:
    """True-positive rate of "member if score > τ" at the lowest τ whose FPR is ≤ ``fpr``, exactly.

    With non-member scores sorted descending s₍₁₎ ≥ s₍₂₎ ≥ … and k = ⌊fpr·n₀⌋ false positives
    allowed, τ = s₍ₖ₊₁₎ (so #{n_j > τ} ≤ k, and every lower τ lets k + 1 through); TPR =
    #{m_i > τ}/n₁. With fewer than 1/fpr non-members, k = 0: the TPR at 0% FPR (members strictly
    above every non-member). No interpolation between ROC points.

    Args:
        member_scores: (n₁,) scores of members.
        nonmember_scores: (n₀,) scores of non-members.
        fpr: the false-positive-rate bound, in [0, 1).
    """
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    m, n = _scores_pair(member_scores, nonmember_scores)
    k = min(int(math.floor(fpr * len(n) + 1e-9)), len(n) - 1)
    tau = np.sort(n)[::-1][k]
    return float((m > tau).mean())


def bootstrap_interval(
    member_scores,
    nonmember_scores,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(members, nonmembers)``.

    Members and non-members are resampled separately, with replacement, at their own sizes
    (a stratified bootstrap); the interval is the (1 ∓ confidence)/2 quantiles of the
    ``resamples`` statistics.

    Args:
        member_scores: (n₁,) scores.
        nonmember_scores: (n₀,) scores.
        statistic: e.g. :func:`roc_auc` or ``lambda m, n: tpr_at_fpr(m, n, 0.01)``.
        resamples: number of bootstrap resamples (≥ 1).
        confidence: coverage in (0, 1).
        rng: the only source of randomness.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    m, n = _scores_pair(member_scores, nonmember_scores)
    stats = np.empty(resamples)
    for b in range(resamples):
        stats[b] = statistic(m[rng.integers(0, len(m), len(m))], n[rng.integers(0, len(n), len(n))])
    lo, hi = np.quantile(stats, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


@dataclass(frozen=True)
class AttackResult:
    """How well one attack separates one pair of member and non-member sets."""

    auc: float
    """ROC AUC (0.5: no better than chance; NaN when some score is not finite)."""
    auc_ci: tuple[float, float]
    """Bootstrap interval of ``auc`` at the configured confidence (95%)."""
    tpr: float
    """TPR at ``fpr`` (see :func:`tpr_at_fpr`)."""
    tpr_ci: tuple[float, float]
    """Bootstrap interval of ``tpr``."""
    fpr: float
    """The FPR bound of ``tpr`` (0.01)."""
    n_members: int
    """Number of member scores."""
    n_nonmembers: int
    """Number of non-member scores."""
    member_scores: np.ndarray = field(repr=False)
    """(n_members,) float64 scores (higher = more member-like)."""
    nonmember_scores: np.ndarray = field(repr=False)
    """(n_nonmembers,) float64 scores."""

    def to_dict(self) -> dict:
        """JSON-able figures (NaN as None), with the mean score of each side; without the scores."""

        def f(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "auc": f(self.auc),
            "auc_ci95": [f(v) for v in self.auc_ci],
            "tpr": f(self.tpr),
            "tpr_ci95": [f(v) for v in self.tpr_ci],
            "fpr": self.fpr,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "member_score_mean": f(float(np.mean(self.member_scores))),
            "nonmember_score_mean": f(float(np.mean(self.nonmember_scores))),
        }


def attack_figures(
    member_scores,
    nonmember_scores,
    *,
    fpr: float = 0.01,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> AttackResult:
    """AUC and TPR at ``fpr`` with their bootstrap intervals (NaN figures when a score is not finite).

    Args:
        member_scores: (n₁,) scores of members (higher = more member-like).
        nonmember_scores: (n₀,) scores of non-members.
        fpr: FPR bound of the TPR.
        resamples: bootstrap resamples.
        confidence: coverage of the intervals.
        rng: source of the bootstrap resamples.
    """
    m = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    nan = float("nan")
    if len(m) and len(n) and not (np.isfinite(m).all() and np.isfinite(n).all()):  # e.g. a diverged model
        return AttackResult(nan, (nan, nan), nan, (nan, nan), fpr, len(m), len(n), m, n)

    def tpr_stat(a: np.ndarray, b: np.ndarray) -> float:
        return tpr_at_fpr(a, b, fpr)

    return AttackResult(
        auc=roc_auc(m, n),
        auc_ci=bootstrap_interval(m, n, roc_auc, resamples=resamples, confidence=confidence, rng=rng),
        tpr=tpr_at_fpr(m, n, fpr),
        tpr_ci=bootstrap_interval(m, n, tpr_stat, resamples=resamples, confidence=confidence, rng=rng),
        fpr=fpr,
        n_members=len(m),
        n_nonmembers=len(n),
        member_scores=m,
        nonmember_scores=n,
    )


# -- membership inference: the scores ------------------------------------------------------------


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


# -- relearning ----------------------------------------------------------------------------------


RelearnMode = Literal["retain", "mixed"]


@dataclass(frozen=True)
class RelearnConfig:
    """Settings of :func:`relearning`."""

    steps: int = 200
    """K: fine-tuning steps per mode."""
    eval_every: int = 50
    """Steps between forget-rate evaluations (also at step 0 and at step K)."""
    batch_size: int = 16
    """Images per fine-tuning step."""
    lr: float = 1e-4
    """AdamW learning rate, fixed (no warm-up, no decay)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip of the global gradient norm, as in pretraining (None: no clipping)."""
    forget_images: int = 8
    """m: forget images the ``"mixed"`` mode may use (drawn once, at random, from ``forget_source``)."""
    forget_per_batch: int = 4
    """``"mixed"``: images of each batch drawn (with replacement) from the m forget images."""
    forget_source: Literal["forget", "forget_heldout"] = "forget"
    """Where the m images come from: the very images unlearned, or unseen ones of the same kind."""
    modes: tuple[RelearnMode, ...] = ("retain", "mixed")
    """``"retain"``: retain data only (benign fine-tuning); ``"mixed"``: retain data plus forget images."""
    samples: int = 50
    """Samples of the contaminated label per forget-rate evaluation."""
    ddim_steps: int = 20
    """DDIM steps of those samples."""
    eval_seed: int = 0
    """Seed of the evaluation's initial noise (the same at every evaluation)."""
    seed: int = 0
    """Seed of the m forget images, the batches, t and ε."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))
        for name in ("steps", "eval_every", "batch_size", "forget_images", "forget_per_batch", "samples", "ddim_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"RelearnConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.forget_per_batch > self.batch_size:
            raise ValueError(
                f"RelearnConfig.forget_per_batch must be <= batch_size={self.batch_size}, got {self.forget_per_batch}"
            )
        if not self.lr > 0:
            raise ValueError(f"RelearnConfig.lr must be > 0, got {self.lr}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"RelearnConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.forget_source not in ("forget", "forget_heldout"):
            raise ValueError(
                f"RelearnConfig.forget_source must be 'forget' or 'forget_heldout', got {self.forget_source!r}"
            )
        if (
            not self.modes
            or any(m not in ("retain", "mixed") for m in self.modes)
            or len(set(self.modes)) != len(self.modes)
        ):
            raise ValueError(f"RelearnConfig.modes must be distinct entries of ('retain', 'mixed'), got {self.modes}")


def ddpm_finetune_step(
    unet: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x0: torch.Tensor,
    y: torch.Tensor,
    *,
    gamma: torch.Tensor,
    sigma: torch.Tensor,
    generator: torch.Generator,
    max_grad_norm: float | None = 1.0,
) -> float:
    """One plain DDPM step (Ho et al. 2020, eq. 14) on (x₀, y); returns the loss.

    1. t ~ U{0..T−1} and ε ~ N(0, I) per image, from ``generator``;
    2. x_t = γ_t x₀ + σ_t ε;
    3. loss = mean (ε_θ(x_t, t, y) − ε)²; backward, clip, ``optimizer.step()``.

    Args:
        unet: ε_θ, trained in place.
        optimizer: over ``unet``'s parameters.
        x0: (B, C, H, W) images on ``unet``'s device.
        y: (B,) labels.
        gamma, sigma: (T,) γ_t and σ_t on that device.
        generator: on that device.
        max_grad_norm: clip of the global gradient norm (None: none).
    """
    t = torch.randint(gamma.shape[0], (len(x0),), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = forward_noise(x0, t, eps, gamma, sigma)
    loss = F.mse_loss(unet(x_t, t, class_labels=y).sample, eps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(unet.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.item())


def sampled_forget_rate(
    unet: torch.nn.Module,
    classifier: torch.nn.Module,
    scenario: Scenario,
    config: RelearnConfig = RelearnConfig(),
    *,
    scheduler_config: dict | None = None,
    sampler: dict | None = None,
) -> dict:
    """Forget rate from ``config.samples`` samples of the contaminated label only (seed ``config.eval_seed``).

    Returns:
        ``{"forget_rate", "contaminated_label_accuracy"}`` of :func:`~.forget.evaluate_model`.
    """
    ev = evaluate_model(
        unet,
        classifier,
        num_labels=scenario.num_labels,
        contaminated_label=scenario.contaminated_label,
        contaminant_class=scenario.contaminant_class,
        samples_per_label=config.samples,
        num_inference_steps=config.ddim_steps,
        seed=config.eval_seed,
        batch_size=max(config.samples, 1),
        scheduler_config=scheduler_config,
        progress=False,
        sampler=sampler,
        only_labels=(scenario.contaminated_label,),
    )
    return {k: float(ev.figures[k]) for k in ("forget_rate", "contaminated_label_accuracy")}


@dataclass(frozen=True)
class RelearnCurve:
    """The forget rate along one relearning run."""

    mode: RelearnMode
    """``"retain"`` or ``"mixed"``."""
    steps: tuple[int, ...]
    """Fine-tuning steps at the evaluations: 0, eval_every, 2·eval_every, …, K."""
    forget_rates: tuple[float, ...]
    """Forget rate of the fine-tuned copy at each of ``steps``."""
    contaminated_label_accuracy: tuple[float, ...]
    """Share of the contaminated label's samples classified as that label, at each of ``steps``."""
    losses: tuple[float, ...]
    """Mean DDPM loss of the steps since the previous evaluation (NaN at step 0)."""
    half_level: float | None
    """Half of the pretrained forget rate (None: no pretrained level given, or a level of 0)."""
    steps_to_half: int | None
    """First of ``steps`` whose forget rate is ≥ ``half_level`` (None: not within K, or no ``half_level``)."""

    @property
    def final_forget_rate(self) -> float:
        """The forget rate after K steps."""
        return self.forget_rates[-1]

    def to_dict(self) -> dict:
        """JSON-able fields (tuples as lists, NaN as None) plus ``final_forget_rate``."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["losses"] = [x if math.isfinite(x) else None for x in self.losses]
        d["final_forget_rate"] = self.final_forget_rate
        return d


@dataclass(frozen=True)
class RelearnResult:
    """Relearning attacks on one model."""

    curves: dict[str, RelearnCurve]
    """Mode → its curve, in ``config.modes`` order."""
    pretrained_forget_rate: float | None
    """The pretrained level that ``steps_to_half`` refers to (None: not given)."""
    forget_indices: tuple[int, ...]
    """Indices in ``config.forget_source`` of the m forget images of ``"mixed"``."""
    config: RelearnConfig
    """The settings used."""
    seconds: float
    """Wall time."""

    def to_dict(self) -> dict:
        """JSON-able: ``curves`` (mode → :meth:`RelearnCurve.to_dict`), ``pretrained_forget_rate``,
        ``forget_indices``, ``settings``, ``seconds``."""
        return {
            "curves": {k: c.to_dict() for k, c in self.curves.items()},
            "pretrained_forget_rate": self.pretrained_forget_rate,
            "forget_indices": list(self.forget_indices),
            "settings": asdict(self.config),
            "seconds": round(self.seconds, 3),
        }


def relearning(
    unet: torch.nn.Module,
    scenario: Scenario,
    classifier: torch.nn.Module,
    config: RelearnConfig = RelearnConfig(),
    *,
    pretrained_forget_rate: float | None = None,
    scheduler_config: dict | None = None,
    sampler: dict | None = None,
    progress: bool = True,
) -> RelearnResult:
    """Fine-tune copies of ``unet`` and watch the forget rate come back.

    For each mode, a fresh deep copy of ``unet`` (the caller's model is never modified), AdamW at
    ``config.lr``, and generators seeded with ``config.seed`` (so both modes see the same retain
    draws, t and ε where their batches agree). The forget rate of the copy is measured by
    :func:`sampled_forget_rate` at step 0 and every ``eval_every`` steps.

    Args:
        unet: the (unlearned) model.
        scenario: the retain set, the forget images, the contaminated label and class.
        classifier: the scenario's evaluation classifier.
        config: the attack's settings.
        pretrained_forget_rate: the pretrained model's forget rate, measured the same way
            (e.g. with :func:`sampled_forget_rate`); ``steps_to_half`` refers to half of it
            (None or 0: no level, ``steps_to_half`` is None).
        scheduler_config: the DDPM schedule the model was trained with.
        sampler: how to sample the model (a checkpoint's ``"sampler"``; None: DDIM).
        progress: a tqdm bar over the fine-tuning steps, on stderr.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    source = scenario.forget if config.forget_source == "forget" else scenario.forget_heldout
    if len(scenario.retain) == 0 or len(source) == 0:
        raise ValueError(
            f"relearning needs retain and {config.forget_source} images, got {len(scenario.retain)} and {len(source)}"
        )
    rng = np.random.default_rng(config.seed)
    forget_idx = np.sort(rng.choice(len(source), min(config.forget_images, len(source)), replace=False))
    device = next(unet.parameters()).device
    retain_x, retain_y = scenario.retain.images.to(device), scenario.retain.labels.to(device)
    forget_x, forget_y = source.images[forget_idx].to(device), source.labels[forget_idx].to(device)
    gamma, sigma = _schedule(unet, scheduler_config)
    # nothing to regain where the pretrained model drew no contaminant: no level, no steps to half
    half = 0.5 * float(pretrained_forget_rate) if pretrained_forget_rate and pretrained_forget_rate > 0 else None
    eval_kw = dict(scheduler_config=scheduler_config, sampler=sampler)

    first = sampled_forget_rate(unet, classifier, scenario, config, **eval_kw)  # step 0: the model as given
    curves: dict[str, RelearnCurve] = {}
    bar = tqdm(total=config.steps * len(config.modes), disable=not progress, desc="relearn", dynamic_ncols=True)
    for mode in config.modes:
        bar.set_postfix_str(mode)
        model = copy.deepcopy(unet)
        model.requires_grad_(True)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        index_gen = torch.Generator().manual_seed(config.seed)
        noise_gen = torch.Generator(device).manual_seed(config.seed + 1)
        n_forget = config.forget_per_batch if mode == "mixed" else 0
        steps, rates, accs = [0], [first["forget_rate"]], [first["contaminated_label_accuracy"]]
        losses, window = [float("nan")], []
        for step in range(1, config.steps + 1):
            # 1. a batch: B − f retain images and f of the m forget images (f = 0 in "retain")
            r = torch.randint(len(retain_x), (config.batch_size - n_forget,), generator=index_gen).to(device)
            x0, y = retain_x[r], retain_y[r]
            if n_forget:
                f = torch.randint(len(forget_x), (n_forget,), generator=index_gen).to(device)
                x0, y = torch.cat([x0, forget_x[f]]), torch.cat([y, forget_y[f]])
            # 2. one plain DDPM step
            window.append(
                ddpm_finetune_step(
                    model,
                    opt,
                    x0,
                    y,
                    gamma=gamma,
                    sigma=sigma,
                    generator=noise_gen,
                    max_grad_norm=config.max_grad_norm,
                )
            )
            bar.update(1)
            # 3. the forget rate of the fine-tuned copy, recomputed by sampling
            if step % config.eval_every == 0 or step == config.steps:
                fig = sampled_forget_rate(model, classifier, scenario, config, **eval_kw)
                steps.append(step)
                rates.append(fig["forget_rate"])
                accs.append(fig["contaminated_label_accuracy"])
                losses.append(float(np.mean(window)))
                window = []
        reached = None if half is None else next((s for s, r in zip(steps, rates) if r >= half), None)
        curves[mode] = RelearnCurve(mode, tuple(steps), tuple(rates), tuple(accs), tuple(losses), half, reached)
        del model, opt
    bar.close()
    return RelearnResult(
        curves,
        None if pretrained_forget_rate is None else float(pretrained_forget_rate),
        tuple(int(i) for i in forget_idx),
        config,
        time.perf_counter() - t_start,
    )


# -- both, for evaluate and bench ----------------------------------------------------------------


@dataclass(frozen=True)
class RobustnessConfig:
    """Settings of :func:`robustness_figures`: both attacks."""

    membership: MembershipConfig = field(default_factory=MembershipConfig)
    """Membership inference."""
    relearn: RelearnConfig = field(default_factory=RelearnConfig)
    """Relearning."""


def robustness_figures(
    unet: torch.nn.Module,
    scenario: Scenario,
    classifier: torch.nn.Module,
    config: RobustnessConfig = RobustnessConfig(),
    *,
    pretrained_forget_rate: float | None = None,
    scheduler_config: dict | None = None,
    sampler: dict | None = None,
    progress: bool = True,
) -> dict:
    """Membership inference and relearning of one model, as one JSON-able dict.

    Returns:
        ``{"membership": MembershipResult.to_dict(), "relearn": RelearnResult.to_dict(),
        "summary": summary_figures(...), "seconds": s}``.
    """
    t0 = time.perf_counter()
    mia = membership_inference(unet, scenario, config.membership, scheduler_config=scheduler_config, progress=progress)
    rel = relearning(
        unet,
        scenario,
        classifier,
        config.relearn,
        pretrained_forget_rate=pretrained_forget_rate,
        scheduler_config=scheduler_config,
        sampler=sampler,
        progress=progress,
    )
    out = {"membership": mia.to_dict(), "relearn": rel.to_dict()}
    out["summary"] = summary_figures(out)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def summary_figures(figures: dict) -> dict[str, float | None]:
    """The flat figures of :data:`ROBUSTNESS_METRICS` from a :func:`robustness_figures` dict.

    Keys whose part is absent (e.g. no ``"relearn"``, or a mode not run) are left out; a
    ``steps_to_half`` of None (not within K, or no pretrained level) stays None.
    """
    out: dict[str, float | None] = {}
    mia = figures.get("membership")
    if mia:
        for part in ("forget", "retain"):
            out[f"mia_{part}_auc"] = mia[part]["auc"]
            out[f"mia_{part}_tpr"] = mia[part]["tpr"]
    for mode, curve in (figures.get("relearn") or {}).get("curves", {}).items():
        out[f"relearn_{mode}_forget_rate"] = curve["final_forget_rate"]
        out[f"relearn_{mode}_steps_to_half"] = curve["steps_to_half"]
    return {k: out[k] for k in ROBUSTNESS_METRICS if k in out}
