"""TensorBoard logging of what an unlearning run does, for SB3 agents (and MCPG's loop)."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, Logger

__all__ = ["UnlearningLogCallback", "log_step_info", "log_episode_end", "STEP_KEYS", "EPISODE_KEYS"]

STEP_KEYS = (
    "lam",
    "forget_scale_S",
    "loss_r",
    "loss_f",
    "grad_r_norm",
    "grad_f_norm",
    "forget_share",
    "dloss_dlam",
    "update_norm",
    "reward_efficacy_gain",
    "reward_smoothness",
    "reward_degradation",
    "var_loss",
    "rel_var_loss_r",
    "rel_var_loss_f",
)
"""``info`` entries averaged over each logging interval (``record_mean``) under ``unlearn/``."""

EPISODE_KEYS = ("efficacy", "degradation")
"""``info`` entries of an episode's last step, averaged under ``episode/``."""

_NOT_TEXT = ("stdout", "log", "json", "csv")


def log_step_info(logger: Logger, info: dict) -> None:
    """record_mean every ``STEP_KEYS`` entry of one step's info."""
    for key in STEP_KEYS:
        value = info.get(key)
        if value is not None and np.isfinite(value):
            logger.record_mean(f"unlearn/{key}", float(value))


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
    """Logs λ, the losses, the gradient norms and the reward terms of every step (``record_mean``),
    and at every episode end its efficacy, degradation, true return (Monitor's, before
    VecNormalize) and, when the env is wrapped in :class:`~unlearn_gym.envs.EpisodeEndSamples`,
    the sample grid."""

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        dones = self.locals.get("dones", np.zeros(len(infos), bool))
        for info, done in zip(infos, dones):
            log_step_info(self.logger, info)
            if done:
                episode = info.get("episode") or {}
                log_episode_end(self.logger, info, episode.get("r"), episode.get("l"))
        return True
