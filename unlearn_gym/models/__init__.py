"""Class-conditional DDPMs on diffusers: factory and presets, checkpoints, pretraining, sampling."""

from .checkpoint import CheckpointError, load_model, save_model
from .unet import PRESETS, UNetConfig, make_scheduler, make_unet, noise_schedule

__all__ = [
    "PRESETS",
    "CheckpointError",
    "UNetConfig",
    "load_model",
    "make_scheduler",
    "make_unet",
    "noise_schedule",
    "save_model",
]
