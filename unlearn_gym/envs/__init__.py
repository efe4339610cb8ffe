"""Gymnasium environments (registered at ``import unlearn_gym``), the batched vector env, its SB3 adapter and opt-in wrappers."""

__all__ = ["UnlearningEnv", "SISSEnv", "SFDEnv", "HybridEnv", "EpisodeEndSamples", "UnlearningVectorEnv", "SB3VecEnv"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name == "UnlearningEnv":
        from .base import UnlearningEnv

        return UnlearningEnv
    if name == "SISSEnv":
        from .siss_env import SISSEnv

        return SISSEnv
    if name == "SFDEnv":
        from .sfd_env import SFDEnv

        return SFDEnv
    if name == "HybridEnv":
        from .hybrid_env import HybridEnv

        return HybridEnv
    if name == "UnlearningVectorEnv":
        from .vector import UnlearningVectorEnv

        return UnlearningVectorEnv
    if name == "SB3VecEnv":  # needs stable-baselines3
        from .sb3 import SB3VecEnv

        return SB3VecEnv
    if name == "EpisodeEndSamples":
        from .wrappers import EpisodeEndSamples

        return EpisodeEndSamples
    raise AttributeError(name)
