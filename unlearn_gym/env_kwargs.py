"""Keywords of ``gymnasium.make`` for unlearn-gym's envs (imported by the runner and the agents alike).

Until the episode budget has one source (the env's horizon), the registered TimeLimit of 100 steps
is set to follow a ``horizon`` keyword here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["make_kwargs"]


def make_kwargs(env_kwargs: Mapping[str, Any]) -> dict:
    """Keywords of ``gymnasium.make``: with a ``horizon``, the TimeLimit follows it (the registered
    ``max_episode_steps`` of 100 would otherwise cut longer episodes short)."""
    kwargs = dict(env_kwargs)
    if "horizon" in kwargs and "max_episode_steps" not in kwargs:
        kwargs["max_episode_steps"] = int(kwargs["horizon"])
    return kwargs
