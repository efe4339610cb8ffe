"""What every env, λ-policy and command agrees on: the action ↔ λ map and the observation's tail.

Agents act in ``Box(-1, 1)`` (SB3's convention); an env maps each action entry a to a weight in
[0, 1] by λ = (a + 1)/2, clipped. Every env's observation ends with (λ_{t−1}, t/T) after its own
features. Numpy only: importing this module imports neither torch nor gymnasium.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OBS_TAIL", "LAMBDA_PREV_INDEX", "PROGRESS_INDEX", "lam_from_action", "action_from_lam"]

OBS_TAIL = ("lam_prev", "progress")
"""The last two observation entries of every env: the previous step's λ and the progress t/T."""
LAMBDA_PREV_INDEX = -2
"""Index of λ_{t−1} in an observation (the last axis)."""
PROGRESS_INDEX = -1
"""Index of t/T in an observation (the last axis)."""


def lam_from_action(action) -> np.ndarray:
    """λ = (a + 1)/2 clipped to [0, 1], elementwise (float64)."""
    return np.clip((np.asarray(action, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)


def action_from_lam(lam) -> np.ndarray:
    """a = 2λ − 1, elementwise (float32): the action that :func:`lam_from_action` maps to λ ∈ [0, 1]."""
    return (2.0 * np.asarray(lam, dtype=np.float64) - 1.0).astype(np.float32)
