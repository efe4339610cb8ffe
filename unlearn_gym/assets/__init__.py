"""Files shipped inside the package: the embedded default's pretrained DDPM and classifier."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["bundled_model_dir", "bundled_classifier_dir"]


def _asset(*parts: str) -> Path:
    return Path(str(files("unlearn_gym").joinpath("assets", *parts)))


def bundled_model_dir() -> Path:
    """The pretrained DDPM of the ``default`` scenario (``config.json`` + ``model.safetensors``)."""
    return _asset("default", "model")


def bundled_classifier_dir() -> Path:
    """The evaluation classifier of the ``default`` scenario."""
    return _asset("default", "classifier")
