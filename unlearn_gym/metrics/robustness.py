"""Is the concept really gone? Both attacks of DESIGN §13 on one model, for ``evaluate`` and ``bench``.

:mod:`~unlearn_gym.metrics.membership` (membership inference: the ``"loss"`` and ``"secmi"``
attacks, with the statistics of :mod:`~unlearn_gym.metrics.membership_stats`) and
:mod:`~unlearn_gym.metrics.relearn` (the relearning attack) each answer one question;
:func:`robustness_figures` runs both on one model and :func:`summary_figures` flattens the answers
into the per-model figures of :data:`ROBUSTNESS_METRICS` (bench columns).

``MembershipConfig``, ``RelearnConfig``, ``membership_inference`` and ``relearning`` are re-exported
here, where the README imports them from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..data.scenarios import Scenario
from .membership import MembershipConfig, membership_inference
from .relearn import RelearnConfig, relearning

__all__ = [
    "ROBUSTNESS_METRICS",
    "MembershipConfig",
    "RelearnConfig",
    "RobustnessConfig",
    "membership_inference",
    "relearning",
    "robustness_figures",
    "summary_figures",
]

ROBUSTNESS_METRICS: dict[str, str] = {
    "mia_forget_auc": "MIA forget AUC (→ 0.5)",
    "mia_forget_tpr": "MIA forget TPR@FPR ↓",
    "mia_retain_auc": "MIA retain AUC",
    "mia_retain_tpr": "MIA retain TPR@FPR",
    "relearn_retain_forget_rate": "relearn retain: forget rate after K ↓",
    "relearn_retain_steps_to_half": "relearn retain: steps to half ↑",
    "relearn_mixed_forget_rate": "relearn mixed: forget rate after K ↓",
    "relearn_mixed_steps_to_half": "relearn mixed: steps to half ↑",
}
"""The flat per-model figures of :func:`summary_figures` (bench columns) and their headers."""


@dataclass(frozen=True)
class RobustnessConfig:
    """Settings of :func:`robustness_figures`: both attacks."""

    membership: MembershipConfig = field(default_factory=MembershipConfig)
    """Membership inference."""
    relearn: RelearnConfig = field(default_factory=RelearnConfig)
    """Relearning."""


def robustness_figures(
    unet: torch.nn.Module,
    scenario: Scenario,
    classifier: torch.nn.Module,
    config: RobustnessConfig = RobustnessConfig(),
    *,
    pretrained_forget_rate: float | None = None,
    scheduler_config: dict | None = None,
    sampler: dict | None = None,
    progress: bool = True,
) -> dict:
    """Membership inference and relearning of one model, as one JSON-able dict.

    Returns:
        ``{"membership": MembershipResult.to_dict(), "relearn": RelearnResult.to_dict(),
        "summary": summary_figures(...), "seconds": s}``.
    """
    t0 = time.perf_counter()
    mia = membership_inference(unet, scenario, config.membership, scheduler_config=scheduler_config, progress=progress)
    rel = relearning(
        unet,
        scenario,
        classifier,
        config.relearn,
        pretrained_forget_rate=pretrained_forget_rate,
        scheduler_config=scheduler_config,
        sampler=sampler,
        progress=progress,
    )
    out = {"membership": mia.to_dict(), "relearn": rel.to_dict()}
    out["summary"] = summary_figures(out)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def summary_figures(figures: dict) -> dict[str, float | None]:
    """The flat figures of :data:`ROBUSTNESS_METRICS` from a :func:`robustness_figures` dict.

    Keys whose part is absent (e.g. no ``"relearn"``, or a mode not run) are left out; a
    ``steps_to_half`` of None (not within K, or no pretrained level) stays None.
    """
    out: dict[str, float | None] = {}
    mia = figures.get("membership")
    if mia:
        for part in ("forget", "retain"):
            out[f"mia_{part}_auc"] = mia[part]["auc"]
            out[f"mia_{part}_tpr"] = mia[part]["tpr"]
    for mode, curve in (figures.get("relearn") or {}).get("curves", {}).items():
        out[f"relearn_{mode}_forget_rate"] = curve["final_forget_rate"]
        out[f"relearn_{mode}_steps_to_half"] = curve["steps_to_half"]
    return {k: out[k] for k in ROBUSTNESS_METRICS if k in out}
