"""Sampling a class-conditional DDPM: DDIM (Song et al. 2021, η = 0 by default), or SFD's one-step generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .unet import make_scheduler

__all__ = ["sample_ddim", "sample_one_step", "sample_per_label"]


@torch.no_grad()
def sample_ddim(
    unet: torch.nn.Module,
    labels: torch.Tensor,
    *,
    num_inference_steps: int = 20,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    scheduler_config: dict | None = None,
    batch_size: int = 125,
    progress: bool = False,
    desc: str = "sampling",
) -> torch.Tensor:
    """Draw one image per entry of ``labels`` with the DDIM sampler.

    Args:
        unet: ε_θ(x_t, t, y); its device and dtype are used.
        labels: (N,) int64 conditioning labels y.
        num_inference_steps: DDIM steps (evenly spaced over the T training steps).
        eta: DDIM η (0 = deterministic given the initial noise).
        generator: source of the initial noise x_T (and of the η-noise); on the UNet's device.
        scheduler_config: the DDPM schedule the model was trained with (default: DESIGN §4's).
        batch_size: images per UNet call.
        progress: show a tqdm bar over batches × steps (on stderr).

    Returns:
        (N, C, H, W) float32 images in [−1, 1], on the UNet's device.
    """
    from tqdm.auto import tqdm

    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    cfg = unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    sched = make_scheduler("ddim", scheduler_config)
    sched.set_timesteps(num_inference_steps, device=device)
    labels = labels.to(device)
    was_training = unet.training
    unet.eval()
    chunks = []
    n_batches = (len(labels) + batch_size - 1) // batch_size
    bar = tqdm(total=n_batches * num_inference_steps, disable=not progress, desc=desc, dynamic_ncols=True)
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        x = torch.randn((len(y), *shape), generator=generator, device=device, dtype=dtype)
        for t in sched.timesteps:
            eps = unet(x, t, class_labels=y).sample
            x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
            bar.update(1)
        chunks.append(x.clamp(-1.0, 1.0))
    bar.close()
    unet.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty((0, *shape), device=device, dtype=dtype)


@torch.no_grad()
def sample_one_step(
    unet: torch.nn.Module,
    labels: torch.Tensor,
    *,
    t_star: int = 440,
    generator: torch.Generator | None = None,
    scheduler_config: dict | None = None,
    batch_size: int = 125,
) -> torch.Tensor:
    """SFD's one-step generator: G(z, c) = (x_in − σ_{t*}·ε(x_in, t*, c))/γ_{t*}, x_in = σ_{t*}·z, z ~ N(0, I)."""
    from .unet import noise_schedule

    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    cfg = unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    sched = noise_schedule(scheduler_config)
    gamma, sigma = float(sched.gamma[t_star]), float(sched.sigma[t_star])
    labels = labels.to(device)
    was_training = unet.training
    unet.eval()
    chunks = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        x_in = sigma * torch.randn((len(y), *shape), generator=generator, device=device, dtype=dtype)
        t = torch.full((len(y),), int(t_star), device=device, dtype=torch.long)
        chunks.append(((x_in - sigma * unet(x_in, t, class_labels=y).sample) / gamma).clamp(-1.0, 1.0))
    unet.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty((0, *shape), device=device, dtype=dtype)


def sample_per_label(
    unet: torch.nn.Module,
    num_labels: int,
    per_label: int | Sequence[int],
    *,
    seed: int = 0,
    sampler: dict | None = None,
    only_labels: tuple[int, ...] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_label`` samples for each label 0..num_labels−1 from a generator seeded with ``seed``.

    ``per_label``: one count for every label, or a count per label (e.g. more samples of the
    contaminated label, whose forget rate needs the resolution).

    ``sampler``: None or ``{"kind": "ddim"}`` for DDIM (``kwargs`` go to :func:`sample_ddim`);
    ``{"kind": "one-step", "t_star": 440}`` for an SFD generator (what its checkpoint's config says).
    ``only_labels``: sample these labels only (their counts; every other label gets 0).

    Returns:
        (images (Σ counts, C, H, W), labels (Σ counts,)), label-major order (labels ascending).
    """
    device = next(unet.parameters()).device
    counts = [int(per_label)] * num_labels if isinstance(per_label, int) else [int(n) for n in per_label]
    if len(counts) != num_labels or min(counts) < 0:
        raise ValueError(f"per_label: expected an int or {num_labels} counts >= 0, got {per_label!r}")
    if only_labels is not None:
        bad = [y for y in only_labels if not 0 <= int(y) < num_labels]
        if not only_labels or bad:
            raise ValueError(f"only_labels: expected labels in [0, {num_labels}), got {list(only_labels)}")
        counts = [n if y in {int(v) for v in only_labels} else 0 for y, n in enumerate(counts)]
    labels = torch.arange(num_labels, device=device).repeat_interleave(torch.tensor(counts, device=device))
    generator = torch.Generator(device).manual_seed(seed)
    kind = (sampler or {}).get("kind", "ddim")
    if kind == "one-step":
        keep = {k: v for k, v in kwargs.items() if k in ("scheduler_config", "batch_size")}
        return sample_one_step(
            unet, labels, t_star=int(sampler.get("t_star", 440)), generator=generator, **keep
        ), labels
    if kind != "ddim":
        raise ValueError(f"sampler kind must be 'ddim' or 'one-step', got {kind!r}")
    return sample_ddim(unet, labels, generator=generator, **kwargs), labels
