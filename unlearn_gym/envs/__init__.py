"""Gymnasium environments (registered at ``import unlearn_gym``)."""

__all__ = ["SISSEnv"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name == "SISSEnv":
        from .siss_env import SISSEnv

        return SISSEnv
    raise AttributeError(name)
