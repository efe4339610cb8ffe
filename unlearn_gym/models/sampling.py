"""DDIM sampling from a class-conditional DDPM (Song et al. 2021, η = 0 by default)."""

from __future__ import annotations

import torch

from .unet import make_scheduler

__all__ = ["sample_ddim", "sample_per_label"]


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


def sample_per_label(
    unet: torch.nn.Module,
    num_labels: int,
    per_label: int,
    *,
    seed: int = 0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_label`` DDIM samples for each label 0..num_labels−1 from a generator seeded with ``seed``.

    Returns:
        (images (num_labels·per_label, C, H, W), labels (num_labels·per_label,)), label-major order.
    """
    device = next(unet.parameters()).device
    labels = torch.arange(num_labels, device=device).repeat_interleave(per_label)
    generator = torch.Generator(device).manual_seed(seed)
    return sample_ddim(unet, labels, generator=generator, **kwargs), labels
