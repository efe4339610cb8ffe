"""Class-conditional DDPMs on diffusers: the UNet factory, its presets and the noise schedule.

The model is a diffusers :class:`~diffusers.UNet2DModel` made class-conditional through
``num_class_embeds`` (one learned embedding per label, added to the time embedding), trained with
ε-prediction under a :class:`~diffusers.DDPMScheduler` with a linear β schedule from 1e-4 to 0.02
over T = 1000 steps (DESIGN §4). γ_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) are read from that schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

__all__ = [
    "PRESETS",
    "PresetName",
    "UNetConfig",
    "make_unet",
    "make_scheduler",
    "scheduler_config",
    "noise_schedule",
]

PresetName = Literal["tiny", "small", "siss"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a class-conditional :class:`~diffusers.UNet2DModel` (JSON round-trips)."""

    sample_size: int = 28
    """Height and width of the images, in pixels."""
    in_channels: int = 1
    """Image channels (1 for MNIST-like data)."""
    num_class_embeds: int = 10
    """Number of conditioning labels y (the UNet learns one embedding per label)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of each resolution level."""
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "DownBlock2D")
    """diffusers down-block class names, one per level."""
    up_block_types: tuple[str, ...] = ("UpBlock2D", "UpBlock2D", "UpBlock2D")
    """diffusers up-block class names, one per level (mirror of the down blocks)."""
    layers_per_block: int = 1
    """ResNet layers per block."""
    norm_num_groups: int = 32
    """Groups of every GroupNorm; must divide every entry of ``block_out_channels``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        object.__setattr__(self, "down_block_types", tuple(self.down_block_types))
        object.__setattr__(self, "up_block_types", tuple(self.up_block_types))
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                "UNetConfig: down_block_types, up_block_types and block_out_channels must have "
                f"equal lengths, got {len(self.down_block_types)}, {len(self.up_block_types)} and {n}"
            )
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"UNetConfig.norm_num_groups must divide every block_out_channels entry, "
                    f"got norm_num_groups={self.norm_num_groups} and block_out_channels="
                    f"{self.block_out_channels}"
                )
        if self.num_class_embeds < 1:
            raise ValueError(f"UNetConfig.num_class_embeds must be >= 1, got {self.num_class_embeds}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"UNetConfig: unknown keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, UNetConfig] = {
    # Test scale: (16, 32, 32), 0.27M parameters; attention only in the 7×7 mid block.
    "tiny": UNetConfig(block_out_channels=(16, 32, 32), norm_num_groups=8),
    # CPU scale: (32, 64, 64), 1.06M parameters; attention only in the 7×7 mid block.
    "small": UNetConfig(),
    # The SISS reference MNIST model: (64, 128, 256), Down/AttnDown/Down, 2 layers per block.
    "siss": UNetConfig(
        block_out_channels=(64, 128, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
    ),
}


def make_unet(config: UNetConfig | PresetName = "small", **overrides) -> torch.nn.Module:
    """Build a class-conditional :class:`diffusers.UNet2DModel`.

    Args:
        config: a :class:`UNetConfig` or a preset name (``"tiny"``, ``"small"``, ``"siss"``).
        **overrides: fields of :class:`UNetConfig` to replace (e.g. ``num_class_embeds=11``).

    Returns:
        The UNet; called as ``unet(x_t, t, class_labels=y).sample`` it returns ε̂ with the shape
        of ``x_t`` (B, C, H, W).
    """
    from dataclasses import replace

    from diffusers import UNet2DModel

    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown UNet preset: expected one of {sorted(PRESETS)}, got {config!r}")
        config = PRESETS[config]
    if overrides:
        config = replace(config, **overrides)
    return UNet2DModel(
        sample_size=config.sample_size,
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        block_out_channels=config.block_out_channels,
        down_block_types=config.down_block_types,
        up_block_types=config.up_block_types,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        num_class_embeds=config.num_class_embeds,
    )


def scheduler_config(num_train_timesteps: int = 1000) -> dict:
    """The DDPM schedule of DESIGN §4: linear β from 1e-4 to 0.02, ε-prediction."""
    return {
        "num_train_timesteps": num_train_timesteps,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": True,
    }


def make_scheduler(kind: Literal["ddpm", "ddim"] = "ddpm", config: dict | None = None):
    """A diffusers DDPM (training) or DDIM (fast sampling) scheduler over the same ᾱ_t."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = scheduler_config() if config is None else dict(config)
    if kind == "ddpm":
        return DDPMScheduler(**cfg)
    if kind == "ddim":
        return DDIMScheduler(**cfg)
    raise ValueError(f"scheduler kind: expected 'ddpm' or 'ddim', got {kind!r}")


@dataclass(frozen=True)
class NoiseSchedule:
    """γ_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) for t = 0..T−1, as (T,) tensors."""

    gamma: torch.Tensor
    sigma: torch.Tensor
    alphas_cumprod: torch.Tensor = field(repr=False)

    @property
    def num_timesteps(self) -> int:
        return int(self.gamma.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> NoiseSchedule:
        return NoiseSchedule(
            self.gamma.to(device, dtype), self.sigma.to(device, dtype), self.alphas_cumprod.to(device, dtype)
        )


def noise_schedule(config: dict | None = None) -> NoiseSchedule:
    """γ_t and σ_t (float64) read from the diffusers DDPM scheduler's ᾱ_t."""
    sched = make_scheduler("ddpm", config)
    a = sched.alphas_cumprod.to(torch.float64)
    return NoiseSchedule(gamma=a.sqrt(), sigma=(1.0 - a).sqrt(), alphas_cumprod=a)
