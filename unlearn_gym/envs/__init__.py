"""Gymnasium environments (registered at ``import unlearn_gym``) and opt-in wrappers."""

__all__ = ["SISSEnv", "SFDEnv", "HybridEnv", "EpisodeEndSamples"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name == "SISSEnv":
        from .siss_env import SISSEnv

        return SISSEnv
    if name == "SFDEnv":
        from .sfd_env import SFDEnv

        return SFDEnv
    if name == "HybridEnv":
        from .hybrid_env import HybridEnv

        return HybridEnv
    if name == "EpisodeEndSamples":
        from .wrappers import EpisodeEndSamples

        return EpisodeEndSamples
    raise AttributeError(name)
