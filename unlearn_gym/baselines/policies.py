"""Non-RL λ-policies: static λ, random λ, linear and cosine schedules.

Every policy maps an observation of a mixture-mode env to λ ∈ [0, 1] and acts with a = 2λ − 1
(the env's map is λ = (a + 1)/2). They share SB3's ``predict(obs, state, episode_start,
deterministic) -> (action, state)``, so SB3's ``evaluate_policy`` and ``unlearn-gym bench`` drive
them like trained agents. Schedules read the progress feature t/T (the observation's last entry).
"""

from __future__ import annotations

import math

import numpy as np

from ..envs.conventions import PROGRESS_INDEX, action_from_lam  # PROGRESS_INDEX re-exported

__all__ = ["LambdaPolicy", "StaticLambda", "RandomLambda", "LinearSchedule", "CosineSchedule", "PROGRESS_INDEX"]
"""Index of t/T in SISS-v0's observation [log ℓ_r, log ℓ_f, log ‖g_r‖, log ‖g_f‖, λ_{t−1}, t/T]."""


def _check_lambda(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


class LambdaPolicy:
    """Base class: subclasses implement :meth:`lam`; ``predict`` turns λ into the action 2λ − 1.

    ``reset(seed)`` is called by the runner at the start of every episode with the episode's seed;
    ``observe(...)`` after every step (online-learning policies learn there; the others ignore it).
    """

    name = "lambda-policy"

    def lam(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """(n,) λ for a batch of n observations."""
        raise NotImplementedError

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        lam = np.clip(np.asarray(self.lam(obs.reshape(1, -1) if single else obs, deterministic), np.float64), 0, 1)
        action = action_from_lam(lam).reshape(-1, 1)
        return (action[0] if single else action), state

    def reset(self, seed: int | None = None) -> None:
        """Start of an episode (seeded by the runner with the episode's seed)."""

    def observe(self, obs, action, reward, next_obs, terminated, truncated, info) -> None:
        """After each env step: what the policy saw, did and got."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class StaticLambda(LambdaPolicy):
    """λ_t = λ for every t (SISS's reference is λ = 0.5)."""

    def __init__(self, lam: float = 0.5):
        self.value = _check_lambda("lam", lam)
        self.name = f"static:{self.value:g}"

    def lam(self, obs, deterministic=True):
        return np.full(len(obs), self.value)


class RandomLambda(LambdaPolicy):
    """λ_t ~ U(low, high), independently per step, from a generator seeded by ``reset(seed)``."""

    def __init__(self, low: float = 0.0, high: float = 1.0, seed: int | None = 0):
        self.low, self.high = _check_lambda("low", low), _check_lambda("high", high)
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got {low} > {high}")
        self.name = "random" if (self.low, self.high) == (0.0, 1.0) else f"random:{self.low:g}:{self.high:g}"
        self._rng = np.random.default_rng(seed)

    def reset(self, seed=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def lam(self, obs, deterministic=True):
        return self._rng.uniform(self.low, self.high, size=len(obs))


class LinearSchedule(LambdaPolicy):
    """λ_t = λ_start + (λ_end − λ_start)·t/T."""

    def __init__(self, start: float = 0.8, end: float = 0.2):
        self.start, self.end = _check_lambda("start", start), _check_lambda("end", end)
        self.name = f"linear:{self.start:g}:{self.end:g}"

    def lam(self, obs, deterministic=True):
        p = np.clip(obs[:, PROGRESS_INDEX], 0.0, 1.0)
        return self.start + (self.end - self.start) * p


class CosineSchedule(LambdaPolicy):
    """λ_t = λ_end + (λ_start − λ_end)·(1 + cos(π·t/T))/2."""

    def __init__(self, start: float = 0.8, end: float = 0.2):
        self.start, self.end = _check_lambda("start", start), _check_lambda("end", end)
        self.name = f"cosine:{self.start:g}:{self.end:g}"

    def lam(self, obs, deterministic=True):
        p = np.clip(obs[:, PROGRESS_INDEX], 0.0, 1.0)
        return self.end + (self.start - self.end) * (1.0 + np.cos(math.pi * p)) / 2.0
