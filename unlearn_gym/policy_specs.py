"""The policy-spec registry: ``static:0.5``, ``vi-adaptive``, ``ppo``, ``agent:DIR`` … → a policy.

It sits above ``baselines/`` and ``agents/`` (it imports both, lazily: an agent spec loads torch),
so that the runner (:mod:`unlearn_gym.bench`) and the CLI name policies without ``bench`` importing
``agents``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["policy_from_spec", "policy_name"]


def policy_from_spec(spec: str, *, seed: int = 0):
    """A policy from a short spec.

    ``static:L`` · ``random`` (or ``random:LO:HI``) · ``linear:START:END`` · ``cosine:START:END`` ·
    ``vi-adaptive`` · ``vi-variance`` (or ``vi-variance:fixed``) · ``ppo`` (the bundled PPO agent) ·
    ``agent:DIR`` (an agent exported by ``unlearn-gym train``).
    """
    from .baselines import CosineSchedule, LinearSchedule, RandomLambda, StaticLambda

    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []

    def floats(n_min: int, n_max: int) -> list[float]:
        if not n_min <= len(args) <= n_max:
            raise ValueError(f"policy {spec!r}: expected {kind}" + ":X" * n_min + f" ({n_min}–{n_max} numbers)")
        try:
            return [float(a) for a in args]
        except ValueError:
            raise ValueError(f"policy {spec!r}: {args} are not numbers") from None

    if kind == "static":
        return StaticLambda(*floats(1, 1))
    if kind == "random":
        return RandomLambda(*floats(0, 2), seed=seed)
    if kind == "linear":
        return LinearSchedule(*floats(0, 2))
    if kind == "cosine":
        return CosineSchedule(*floats(0, 2))
    if kind == "vi-adaptive":
        from .baselines.vi_adaptive import VIAdaptive

        return VIAdaptive(seed=seed)
    if kind == "vi-variance":
        from .baselines.vi_variance import VIVariance

        if rest not in ("", "resampled", "fixed"):
            raise ValueError(f"policy {spec!r}: expected vi-variance, vi-variance:resampled or vi-variance:fixed")
        return VIVariance(seed=seed, derivative=rest or "resampled")
    if kind in ("ppo", "agent"):
        from .agents.policy import load_agent
        from .assets import bundled_agent_dir

        path = rest if kind == "agent" else bundled_agent_dir()
        if kind == "agent" and not rest:
            raise ValueError("policy 'agent:DIR' needs the directory of an exported agent")
        return load_agent(path)
    raise ValueError(
        f"unknown policy {spec!r}: use static:L, random, linear:A:B, cosine:A:B, vi-adaptive, vi-variance, ppo or agent:DIR"
    )


def policy_name(spec: str, policy) -> str:
    """The name a policy from ``spec`` has in the bench's tables (``ppo (bundled)``, ``ppo:DIRNAME``, or its own ``name``)."""
    if spec == "ppo":
        return "ppo (bundled)"
    if spec.startswith("agent:"):
        return f"{getattr(policy, 'algo', 'agent')}:{Path(spec[6:]).name or spec[6:]}"
    return getattr(policy, "name", spec)
