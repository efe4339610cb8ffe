"""Is the concept really gone? The relearning attack (DESIGN §13).

Erasure by fine-tuning can be shallow: a few steps of benign fine-tuning bring the concept back
("Unstable Unlearning", arXiv 2410.08074), and a handful of forget images reverses it (DiMRA,
arXiv 2512.03564). From a copy of the model, K steps of plain DDPM fine-tuning (ε-MSE, AdamW,
fixed learning rate) on (``"retain"``) retain data only, and on (``"mixed"``) retain data with
``forget_per_batch`` of each batch drawn from m forget images. Every ``eval_every`` steps the
forget rate is measured by sampling the contaminated label and classifying (as
:func:`~.forget.evaluate_model` does). Reported: the curve, the forget rate after K steps, and the
first evaluated step at which the forget rate reaches half of the pretrained model's (None: not
within K).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..data.scenarios import Scenario
from ..models.unet import noise_schedule
from ..objectives.common import forward_noise
from .forget import evaluate_model

__all__ = [
    "RelearnConfig",
    "RelearnCurve",
    "RelearnResult",
    "ddpm_finetune_step",
    "relearning",
    "sampled_forget_rate",
]


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
    p = next(unet.parameters())
    retain = scenario.retain.images.to(p.device), scenario.retain.labels.to(p.device)
    forget = source.images[forget_idx].to(p.device), source.labels[forget_idx].to(p.device)
    sched = noise_schedule(scheduler_config).to(p.device, p.dtype)
    # nothing to regain where the pretrained model drew no contaminant: no level, no steps to half
    half = 0.5 * float(pretrained_forget_rate) if pretrained_forget_rate and pretrained_forget_rate > 0 else None
    eval_kw = dict(scheduler_config=scheduler_config, sampler=sampler)

    first = sampled_forget_rate(unet, classifier, scenario, config, **eval_kw)  # step 0: the model as given
    curves: dict[str, RelearnCurve] = {}
    bar = tqdm(total=config.steps * len(config.modes), disable=not progress, desc="relearn", dynamic_ncols=True)
    for mode in config.modes:
        bar.set_postfix_str(mode)
        curves[mode] = _relearn_mode(
            unet,
            mode,
            retain,
            forget,
            first=first,
            half=half,
            classifier=classifier,
            scenario=scenario,
            config=config,
            gamma=sched.gamma,
            sigma=sched.sigma,
            eval_kw=eval_kw,
            bar=bar,
        )
    bar.close()
    return RelearnResult(
        curves,
        None if pretrained_forget_rate is None else float(pretrained_forget_rate),
        tuple(int(i) for i in forget_idx),
        config,
        time.perf_counter() - t_start,
    )


def _relearn_mode(
    unet: torch.nn.Module,
    mode: RelearnMode,
    retain: tuple[torch.Tensor, torch.Tensor],
    forget: tuple[torch.Tensor, torch.Tensor],
    *,
    first: dict,
    half: float | None,
    classifier: torch.nn.Module,
    scenario: Scenario,
    config: RelearnConfig,
    gamma: torch.Tensor,
    sigma: torch.Tensor,
    eval_kw: dict,
    bar,
) -> RelearnCurve:
    """One mode of :func:`relearning`: fine-tune a fresh deep copy of ``unet``, evaluating it along the way.

    Args:
        unet: the model as given (copied, never modified).
        mode: ``"retain"`` or ``"mixed"``.
        retain: (retain images (N, C, H, W), labels (N,)) on ``unet``'s device.
        forget: (the m forget images (m, C, H, W), labels (m,)) on that device.
        first: :func:`sampled_forget_rate` of ``unet`` (step 0).
        half: the curve's ``half_level`` (None: no level).
        classifier, scenario, config, eval_kw: as in :func:`relearning`.
        gamma, sigma: (T,) γ_t and σ_t on that device.
        bar: the progress bar, advanced once per fine-tuning step.
    """
    (retain_x, retain_y), (forget_x, forget_y) = retain, forget
    device = retain_x.device
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
    return RelearnCurve(mode, tuple(steps), tuple(rates), tuple(accs), tuple(losses), half, reached)
