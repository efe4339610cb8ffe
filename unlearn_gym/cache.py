"""Where unlearn-gym keeps what it computes once and reuses: ``$UNLEARN_GYM_CACHE``, else
``$XDG_CACHE_HOME/unlearn-gym`` (default ``~/.cache/unlearn-gym``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(kind: str) -> Path:
    """The cache's folder for ``kind`` (e.g. ``"reference"``: reference evaluations; ``"models"``: the task set's models)."""
    root = os.environ.get("UNLEARN_GYM_CACHE")
    if root:
        return Path(root) / kind
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "unlearn-gym" / kind
