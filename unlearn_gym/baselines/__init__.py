"""Non-RL λ-policies: static λ, random, linear and cosine schedules, VI-Adaptive (Algorithm 2) and VI-Variance.

All have SB3's ``predict(obs, state=None, episode_start=None, deterministic=True)``; the runner
also calls ``reset(seed)`` at each episode start and ``observe(...)`` after each step. Write your
own by subclassing :class:`LambdaPolicy` and implementing ``lam(obs, deterministic) -> (n,) λ``.
"""

from .policies import CosineSchedule, LambdaPolicy, LinearSchedule, RandomLambda, StaticLambda

__all__ = [
    "LambdaPolicy",
    "StaticLambda",
    "RandomLambda",
    "LinearSchedule",
    "CosineSchedule",
    "VIAdaptive",
    "VIVariance",
]


def __getattr__(name):  # VIAdaptive and VIVariance need torch; the schedules do not
    if name == "VIAdaptive":
        from .vi_adaptive import VIAdaptive

        return VIAdaptive
    if name == "VIVariance":
        from .vi_variance import VIVariance

        return VIVariance
    raise AttributeError(name)
