"""TensorBoard logging of what an unlearning run does, for SB3 agents (and MCPG's loop).

Each step's statistics are logged by name: the fields of the env's statistics dataclass (SISS-v0's
``StepStats``, Hybrid-v0's ``HybridStepStats``, SFD-v0's ``SFDStepStats``), which every unlearn-gym
env reports at reset as ``info["reference"]`` and at every step in ``info``; so a new statistic, or
a new env's, reaches the logs without a list of names here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Real

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, Logger

__all__ = [
    "UnlearningLogCallback",
    "log_step_info",
    "log_episode_end",
    "step_keys",
    "ACTION_KEYS",
    "REWARD_KEYS",
    "EPISODE_KEYS",
]

ACTION_KEYS = ("lam", "forget_scale_S")
"""The action's ``info`` entries logged every step (those an env reports)."""

REWARD_KEYS = (
    "reward_efficacy_gain",
    "reward_smoothness",
    "reward_degradation",
    "reward_forget",
    "reward_retain_damage",
)
"""The reward terms' ``info`` entries logged every step (those an env reports: the last two are
the sampled reward's)."""

EPISODE_KEYS = ("efficacy", "degradation", "sampled_forget_rate", "sampled_retain_accuracy", "sampled_damage")
"""``info`` entries of an episode's last step, averaged under ``episode/`` (the ``sampled_*``
ones: the sampled probe's outcome on the unlearned model, under ``reward="sampled"``)."""

_NOT_STATISTICS = ("step",)
"""Numeric ``info`` entries that :func:`log_step_info` leaves out when it has no keys (a counter)."""

_NOT_TEXT = ("stdout", "log", "json", "csv")


def step_keys(reset_info: Mapping | None) -> tuple[str, ...] | None:
    """The ``info`` entries to log every step: :data:`ACTION_KEYS`, the env's statistics (the field
    names of its statistics dataclass, read from the reset info's ``"reference"``, in field order)
    and :data:`REWARD_KEYS`; None where ``reset_info`` has no ``"reference"`` dict.

    A vector env's reset infos work too (the ``"reference"`` dict of arrays; its ``_key`` masks are skipped).
    """
    ref = reset_info.get("reference") if isinstance(reset_info, Mapping) else None
    if not isinstance(ref, Mapping):
        return None
    return (*ACTION_KEYS, *(k for k in ref if not k.startswith("_")), *REWARD_KEYS)


def log_step_info(logger: Logger, info: dict, keys: Iterable[str] | None = None) -> None:
    """record_mean, under ``unlearn/``, each finite number of one step's info named in ``keys``
    (:func:`step_keys`); None: every real-number entry of ``info`` (booleans and the step counter aside)."""
    if keys is None:
        keys = [k for k, v in info.items() if _is_number(v) and k not in _NOT_STATISTICS]
    for key in keys:
        value = info.get(key)
        if _is_number(value) and np.isfinite(value):
            logger.record_mean(f"unlearn/{key}", float(value))


def _is_number(value) -> bool:
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def log_episode_end(logger: Logger, info: dict, episode_return: float | None, episode_length: int | None) -> None:
    """record_mean the episode's final efficacy, degradation, return, length and divergence; log its samples."""
    for key in EPISODE_KEYS:
        value = info.get(key)
        if value is not None and np.isfinite(value):
            logger.record_mean(f"episode/{key}", float(value))
    logger.record_mean("episode/diverged", float(bool(info.get("diverged", False))))
    if episode_return is not None:
        logger.record_mean("episode/return", float(episode_return))
    if episode_length is not None:
        logger.record_mean("episode/length", float(episode_length))
    if info.get("episode_samples") is not None:
        logger.record("episode/samples", Image(info["episode_samples"], "HWC"), exclude=_NOT_TEXT)


class UnlearningLogCallback(BaseCallback):
    """Logs λ, the env's statistics by name (:func:`step_keys`) and the reward terms of every step
    (``record_mean``), and at every episode end its efficacy, degradation, true return (Monitor's,
    before VecNormalize) and, when the env is wrapped in :class:`~unlearn_gym.envs.EpisodeEndSamples`,
    the sample grid.

    The statistics' names come from the training env's first reset info (SB3's ``reset_infos``);
    without one, every numeric ``info`` entry is logged.
    """

    def __init__(self, verbose: int = 0):
        super().__init__(verbose)
        self.keys: tuple[str, ...] | None = None
        """What :func:`log_step_info` logs (found at the first step)."""
        self._looked = False

    def _on_step(self) -> bool:
        if not self._looked:
            reset_infos = getattr(self.training_env, "reset_infos", None) or [None]
            self.keys, self._looked = step_keys(reset_infos[0]), True
        infos = self.locals.get("infos", [])
        dones = self.locals.get("dones", np.zeros(len(infos), bool))
        for info, done in zip(infos, dones):
            log_step_info(self.logger, info, self.keys)
            if done:
                episode = info.get("episode") or {}
                log_episode_end(self.logger, info, episode.get("r"), episode.get("l"))
        return True
