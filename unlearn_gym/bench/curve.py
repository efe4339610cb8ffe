"""Scores along the episode: the forget curve F(t) and what it says beyond the end point.

With ``BenchConfig.curve_steps`` = (t_1, …, t_m), the runner samples the forget rate of each
episode's model after t_1, …, t_m updates and at its end t_end (T, or earlier where it diverged),
each time on the same initial noises (the contaminated label's evaluation samples only, seed
``eval_seed``), and the pretrained model's once (F⁰ = F(0)). The episode's record holds the points
(``forget_curve``: [[t, F(t)], …]); :func:`curve_scores` turns them into

- ``forget_auc`` = (1/T)·∫₀ᵀ F(t) dt, the trapezoid rule over (0, F⁰), (t_k, F(t_k)), …,
  (t_end, F(t_end)), held at F(t_end) from t_end to T (a diverged run's model is its last one): the
  mean forget rate over the episode, lower is better; it rewards forgetting early, which the end
  point at T cannot see once every policy has reached the floor;
- ``steps_to_half`` and ``steps_to_tenth``: the first sampled step t with F(t) ≤ F⁰/2 (F⁰/10), on
  the grid {t_1, …, t_m, t_end}; an episode that never gets there counts T (a restricted mean: the
  mean over episodes of min(τ, T), finite and comparable; ``reached_half``/``reached_tenth`` say
  which episodes got there, so a tie at T is not read as reaching at T).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .record import EpisodeRecord

__all__ = ["CURVE_METRICS", "add_curve_scores", "check_curve_steps", "curve_scores", "forget_rates_at"]

CURVE_METRICS = {"forget_auc": -1, "steps_to_half": -1, "steps_to_tenth": -1}
"""The scores of the forget curve, and the sign of "better" (all: lower is better)."""


def check_curve_steps(curve_steps: Sequence[int], horizon: int) -> tuple[int, ...]:
    """The sorted, distinct curve steps; each must lie in 1..T−1 (the end point is always sampled)."""
    steps = tuple(sorted({int(t) for t in curve_steps}))
    bad = [t for t in steps if not 1 <= t < horizon]
    if bad:
        raise ValueError(
            f"curve_steps: every step must lie in 1..{horizon - 1} (the horizon T = {horizon} is always sampled), "
            f"got {bad}; e.g. --curve-steps {','.join(str(t) for t in (horizon // 10, horizon // 4, horizon // 2) if t >= 1)}"
        )
    return steps


def curve_scores(curve: Sequence[Sequence[float]], start: float, horizon: int) -> dict:
    """The scores of one forget curve (module docstring).

    Args:
        curve: [(t, F(t)), …] with increasing 1 ≤ t ≤ T, the last the episode's end.
        start: F⁰, the pretrained model's forget rate on the same noises.
        horizon: T.

    Returns:
        ``{"forget_auc", "steps_to_half", "reached_half", "steps_to_tenth", "reached_tenth"}``.
    """
    if not curve:
        raise ValueError("curve_scores: the curve needs at least its end point")
    t = np.array([0.0, *(float(p[0]) for p in curve)])
    f = np.array([float(start), *(float(p[1]) for p in curve)])
    if np.any(np.diff(t) <= 0) or t[-1] > horizon:
        raise ValueError(f"curve_scores: expected increasing steps in 1..{horizon}, got {t[1:].tolist()}")
    if t[-1] < horizon:  # ended early (diverged): its last model stands until T
        t, f = np.append(t, float(horizon)), np.append(f, f[-1])
    area = float(np.sum(np.diff(t) * (f[1:] + f[:-1]) / 2.0))
    out = {"forget_auc": area / horizon}
    for name, fraction in (("half", 0.5), ("tenth", 0.1)):
        hit = [float(p[0]) for p in curve if float(p[1]) <= fraction * start]
        out[f"steps_to_{name}"] = 0.0 if start == 0 else (hit[0] if hit else float(horizon))
        out[f"reached_{name}"] = start == 0 or bool(hit)
    return out


def add_curve_scores(episodes: list[EpisodeRecord], start: float, horizon: int) -> None:
    """Add :func:`curve_scores` to every episode that has a ``forget_curve``, in place."""
    for e in episodes:
        if e.get("forget_curve"):
            e |= curve_scores(e["forget_curve"], start, horizon)  # type: ignore[arg-type]


def forget_rates_at(result: dict, name: str) -> tuple[list[int], list[list[float]]]:
    """The report's grid of a bench result's forget curves: (steps t = 0, the curve steps, T; per step the
    F(t) of each of policy ``name``'s episodes), an episode that ended before t (diverged) holding its
    last model's F. ``([], [])`` where the policy has no curves."""
    episodes = [e for e in result["episodes"] if e.get("forget_curve")]
    mine = [e for e in episodes if e["policy"] == name]
    if not mine:
        return [], []
    start = result["pretrained"]["curve_forget_rate"]
    horizon = max(int(e["forget_curve"][-1][0]) for e in episodes)  # T, unless every episode diverged
    steps = sorted({0, *(int(t) for t in result["settings"].get("curve_steps", ())), horizon})
    values = [[next((f for s, f in reversed(e["forget_curve"]) if s <= t), start) for e in mine] for t in steps]
    return steps, values
