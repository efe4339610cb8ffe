"""Gymnasium environments (registered at ``import unlearn_gym``) and opt-in wrappers."""

__all__ = ["SISSEnv", "EpisodeEndSamples"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name == "SISSEnv":
        from .siss_env import SISSEnv

        return SISSEnv
    if name == "EpisodeEndSamples":
        from .wrappers import EpisodeEndSamples

        return EpisodeEndSamples
    raise AttributeError(name)
