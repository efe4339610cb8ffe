"""Zoo-style hyperparameters: ``hyperparams/<algo>.yml``, one block per env id plus ``default``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ALGO_NAMES", "load_hyperparams", "activation_class"]

ALGO_NAMES = ("ppo", "sac", "td3", "ddpg", "mcpg")

_ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "leaky_relu": "LeakyReLU", "gelu": "GELU"}


def activation_class(name: str):
    """The torch.nn activation class that a YAML ``activation_fn: <name>`` names."""
    import torch.nn as nn

    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"activation_fn must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return getattr(nn, _ACTIVATIONS[key])


def load_hyperparams(
    algo: str, env_id: str, path: str | Path | None = None, overrides: dict | None = None
) -> dict[str, Any]:
    """The hyperparameters of ``algo`` for ``env_id``: its block in the YAML file, else ``default``.

    Args:
        algo: one of ``ALGO_NAMES``.
        env_id: the Gymnasium id (e.g. ``"unlearn_gym/SISS-v0"``).
        path: a YAML file of your own (same layout); None = the one shipped with the package.
        overrides: keys that replace the file's (e.g. ``{"n_steps": 64}`` from ``--hyperparams``).
    """
    if algo not in ALGO_NAMES:
        raise ValueError(f"algo must be one of {ALGO_NAMES}, got {algo!r}")
    if path is None:
        text = resources.files("unlearn_gym.agents").joinpath("hyperparams", f"{algo}.yml").read_text()
        source = f"unlearn_gym/agents/hyperparams/{algo}.yml"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"hyperparameter file {path} does not exist")
        text, source = path.read_text(), str(path)
    blocks = yaml.safe_load(text) or {}
    key = env_id if env_id in blocks else env_id.split(":")[-1] if env_id.split(":")[-1] in blocks else "default"
    if key not in blocks:
        raise KeyError(f"{source} has no block for {env_id!r} and no 'default' block")
    params = dict(blocks[key])
    params.update(overrides or {})
    return params
