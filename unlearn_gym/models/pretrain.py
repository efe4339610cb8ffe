"""Pretraining of the class-conditional DDPM on a scenario's retain ∪ forget set (or, for the
exact-unlearning reference of the paper's §3, on the retain set alone: ``retain_only``).

The standard ε-prediction objective (Ho et al. 2020, eq. 14): x_t = γ_t x₀ + σ_t ε,
loss = mean ‖ε − ε_θ(x_t, t, y)‖², t ~ U{0..T−1}; AdamW with linear warm-up and cosine decay;
an EMA of the weights (diffusers ``EMAModel``, warm-up decay 1 − (1 + n/inv_gamma)^−power, capped
at ``ema_max_decay``). The EMA weights are what ``model.safetensors`` holds and what unlearning
starts from (DESIGN §4).

The run is resumable: every ``checkpoint_every`` steps, ``train_state.safetensors`` holds the raw
and EMA weights, AdamW moments, both RNG states and the step, in one atomically written file.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from ..data.scenarios import Scenario
from ..objectives.common import forward_noise
from .checkpoint import load_tensors, save_model, save_tensors_atomic
from .unet import PRESETS, UNetConfig, make_unet, noise_schedule, scheduler_config

__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]


@dataclass(frozen=True)
class PretrainConfig:
    """Hyperparameters of DDPM pretraining."""

    steps: int = 8000
    """Total optimizer steps."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 200
    """Linear warm-up steps."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: hold ``lr`` (any checkpoint of a run then equals a shorter run) or decay it
    along a cosine to 0 at ``steps``."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    ema_max_decay: float = 0.9999
    """Cap of the EMA decay."""
    ema_inv_gamma: float = 1.0
    """EMA warm-up inv_gamma."""
    ema_power: float = 0.75
    """EMA warm-up power."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints."""
    seed: int = 0
    """Seed of the batch order, t and ε."""
    retain_only: bool = False
    """Train on the retain set alone, never seeing the forget set: the model retrained without
    the forget set, the gold standard ("exact unlearning") that unlearned models are compared to."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"PretrainConfig.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"PretrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"PretrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.ema_max_decay < 1.0:
            raise ValueError(f"PretrainConfig.ema_max_decay must be in [0, 1), got {self.ema_max_decay}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass(frozen=True)
class PretrainResult:
    out: Path
    step: int
    final_loss: float
    """Mean loss of the last 50 steps."""
    first_loss: float
    """Mean loss of the first 20 steps of this run (of the resumed part, when resumed)."""
    seconds: float


def _scenario_meta(scenario: Scenario, scenario_args: dict | None) -> dict:
    return {
        "name": scenario.name,
        "args": scenario_args or {},
        "num_labels": scenario.num_labels,
        "class_names": list(scenario.class_names),
        "contaminated_label": scenario.contaminated_label,
        "contaminant_class": scenario.contaminant_class,
        "sizes": scenario.sizes(),
    }


def pretrain(
    scenario: Scenario,
    out: str | Path,
    *,
    preset: str | UNetConfig = "small",
    config: PretrainConfig = PretrainConfig(),
    device: str | torch.device = "cpu",
    resume: bool = True,
    scenario_args: dict | None = None,
    progress: bool = True,
    tensorboard: bool = True,
) -> PretrainResult:
    """Train a class-conditional DDPM on ``scenario.training_set()`` (``scenario.retain`` with
    ``config.retain_only``) and save it under ``out``.

    Args:
        scenario: the data; the model is conditioned on ``labels`` (contaminants carry label 1).
        out: checkpoint directory (``config.json``, ``model.safetensors``, ``train_state.safetensors``).
        preset: UNet preset name or config.
        config: optimisation hyperparameters.
        device: where to train.
        resume: continue from ``out/train_state.safetensors`` when it exists.
        scenario_args: how the scenario was built (recorded in ``config.json``).
        progress: show a tqdm progress bar (on stderr).
        tensorboard: log ``losses/ddpm`` and ``charts/lr`` to ``out/tb``.
    """
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    out = Path(out)
    device = torch.device(device)
    unet_cfg = PRESETS[preset] if isinstance(preset, str) else preset
    unet_cfg = UNetConfig.from_dict({**unet_cfg.to_dict(), "num_class_embeds": scenario.num_labels})
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG state untouched
        torch.manual_seed(config.seed)
        unet = make_unet(unet_cfg).to(device)
    params = list(unet.parameters())
    names = [n for n, _ in unet.named_parameters()]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMAModel(
        params,
        decay=config.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=config.ema_inv_gamma,
        power=config.ema_power,
    )
    data = scenario.retain if config.retain_only else scenario.training_set()
    images, labels = data.images.to(device), data.labels.to(device)
    sched = noise_schedule()
    gamma, sigma = sched.gamma.to(device, torch.float32), sched.sigma.to(device, torch.float32)
    index_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device).manual_seed(config.seed + 1)
    step = 0

    state_path = out / "train_state.safetensors"
    if resume and state_path.is_file():
        tensors, meta = load_tensors(state_path)
        saved_cfg = {"retain_only": False} | json.loads(meta["pretrain"])  # written before retain_only existed
        # Settings that do not change the trajectory may differ: where to checkpoint, and, under a
        # constant learning rate, how far to go.
        free = {"checkpoint_every"} | ({"steps"} if config.lr_schedule == "constant" else set())
        if {k: v for k, v in saved_cfg.items() if k not in free} != {
            k: v for k, v in asdict(config).items() if k not in free
        }:
            raise ValueError(
                f"{state_path} was written with another PretrainConfig; expected {asdict(config)}, got "
                f"{saved_cfg}. Use the same settings to resume, or another --out to start afresh."
            )
        with torch.no_grad():
            for n, p in zip(names, params):
                p.copy_(tensors[f"model.{n}"])
            ema.shadow_params = [tensors[f"ema.{n}"].to(device) for n in names]
        ema.optimization_step = int(meta["ema_step"])
        opt_state = {
            i: {k: tensors[f"opt.{i}.{k}"].to(device) for k in ("exp_avg", "exp_avg_sq")}
            | {"step": tensors[f"opt.{i}.step"]}
            for i in range(len(params))
            if f"opt.{i}.step" in tensors
        }
        opt.load_state_dict({"state": opt_state, "param_groups": opt.state_dict()["param_groups"]})
        index_gen.set_state(tensors["rng.index"])
        noise_gen.set_state(tensors["rng.noise"].to(torch.uint8))
        step = int(meta["step"])

    meta_config = {
        "unet": unet_cfg.to_dict(),
        "scheduler": scheduler_config(),
        "scenario": _scenario_meta(scenario, scenario_args),
        "pretrain": asdict(config),
    }

    def save(at_step: int) -> None:
        tensors = {f"model.{n}": p for n, p in zip(names, params)}
        tensors |= {f"ema.{n}": s for n, s in zip(names, ema.shadow_params)}
        for i, p in enumerate(params):
            st = opt.state.get(p)
            if st:
                for k in ("exp_avg", "exp_avg_sq", "step"):
                    tensors[f"opt.{i}.{k}"] = st[k]
        tensors["rng.index"] = index_gen.get_state()
        tensors["rng.noise"] = noise_gen.get_state()
        save_tensors_atomic(
            tensors,
            state_path,
            metadata={
                "step": str(at_step),
                "ema_step": str(ema.optimization_step),
                "pretrain": json.dumps(asdict(config)),
            },
        )
        ema_weights = {n: s for n, s in zip(names, ema.shadow_params)}
        save_model(unet, out, {**meta_config, "step": at_step}, state_dict=ema_weights)

    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    losses: list[float] = []
    t0 = time.perf_counter()
    unet.train()
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="pretrain", dynamic_ncols=True)
    while step < config.steps:
        # 1. a batch of (x₀, y) and, per image, t ~ U{0..T−1} and ε ~ N(0, I)
        idx = torch.randint(len(images), (config.batch_size,), generator=index_gen).to(device)
        x0, y = images[idx], labels[idx]
        t = torch.randint(sched.num_timesteps, (config.batch_size,), generator=noise_gen, device=device)
        eps = torch.randn(x0.shape, generator=noise_gen, device=device)
        # 2. forward diffusion x_t = γ_t x₀ + σ_t ε
        x_t = forward_noise(x0, t, eps, gamma, sigma)
        # 3. ε-prediction loss and an AdamW step at the scheduled learning rate
        loss = F.mse_loss(unet(x_t, t, class_labels=y).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = config.lr_at(step)
        opt.step()
        ema.step(params)
        step += 1
        losses.append(loss.item())
        if writer is not None and step % 10 == 0:
            writer.add_scalar("losses/ddpm", sum(losses[-10:]) / len(losses[-10:]), step)
            writer.add_scalar("charts/lr", config.lr_at(step - 1), step)
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save(step)
    bar.close()
    if writer is not None:
        writer.close()
    if not losses:  # already complete
        save(step)
    head, tail = losses[:20], losses[-50:]
    return PretrainResult(
        out=out,
        step=step,
        final_loss=sum(tail) / len(tail) if tail else float("nan"),
        first_loss=sum(head) / len(head) if head else float("nan"),
        seconds=time.perf_counter() - t0,
    )
