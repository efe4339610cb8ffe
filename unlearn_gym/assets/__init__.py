"""Files shipped inside the package: the embedded default's pretrained DDPM, the DDPM retrained
without its forget set, the classifier and the PPO agent."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["bundled_model_dir", "bundled_retrained_dir", "bundled_classifier_dir", "bundled_agent_dir"]


def _asset(*parts: str) -> Path:
    return Path(str(files("unlearn_gym").joinpath("assets", *parts)))


def bundled_model_dir() -> Path:
    """The pretrained DDPM of the ``default`` scenario (``config.json`` + ``model.safetensors``)."""
    return _asset("default", "model")


def bundled_retrained_dir() -> Path:
    """The ``default`` scenario's DDPM retrained without the forget set (``pretrain --retain-only``,
    the bundled model's settings): the exact-unlearning reference that unlearned models are compared to."""
    return _asset("default", "retrained")


def bundled_classifier_dir() -> Path:
    """The evaluation classifier of the ``default`` scenario."""
    return _asset("default", "classifier")


def bundled_agent_dir() -> Path:
    """The PPO agent trained on SISS-v0 over the default model at the benchmark's settings (an exported agent)."""
    return _asset("default", "ppo")
