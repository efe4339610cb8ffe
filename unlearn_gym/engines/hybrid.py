"""The hybrid engine: SISS plus SFD's score alignment to the retain classes' teacher (DESIGN §9)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..objectives.hybrid import HybridConfig, HybridResult, hybrid_objective
from ..objectives.siss import SISSBatch
from .run_axis import HostStats
from .siss import UnlearningEngine

__all__ = ["HYBRID_STAT_NAMES", "HybridEngine", "HybridStepStats"]


@dataclass(frozen=True)
class HybridStepStats(HostStats):
    """Statistics of one hybrid update, as host floats (one documented field per statistic)."""

    loss_r: float
    """SISS's ℓ_x, the retain loss estimate."""
    loss_f: float
    """SISS's ℓ_a, the forget loss estimate."""
    loss_align: float
    """ℓ_align: the forget label's score against the teacher's retain-class mixture."""
    grad_siss_norm: float
    """‖g_S‖ after SISS's surgery."""
    grad_align_norm: float
    """‖∇ℓ_align‖."""
    forget_share: float
    """Share of SISS's batch drawn from the forget set."""
    dloss_dlam: float
    """∂L/∂λ = 2(w·ℓ_align − L_S)."""
    update_norm: float
    """‖g‖ of the combined direction before clipping."""
    probe_r: float
    """Retain denoising loss on the fixed probe, after the step."""
    probe_f: float
    """Forget denoising loss on the fixed probe, after the step."""


HYBRID_STAT_NAMES = HybridStepStats.names()
"""The field names of :class:`HybridStepStats`, in the order of the engine's stats tensor."""


class HybridEngine(UnlearningEngine):
    """:class:`UnlearningEngine` whose update is the SISS + SFD-alignment hybrid.

    The frozen teacher is the engine's on-device copy of the pretrained weights (no extra copy).

    Args:
        target_classes: the labels whose teacher scores the forget label is aligned to.
        hybrid: the hybrid's settings (its ``siss`` part replaces ``config``).
        Other arguments as :class:`UnlearningEngine`.
    """

    stats_class = HybridStepStats
    result_class = HybridResult

    def __init__(self, unet, retain, forget, hybrid=None, target_classes=(), **kwargs):
        self.hybrid = hybrid if hybrid is not None else HybridConfig()
        super().__init__(unet, retain, forget, self.hybrid.siss, **kwargs)
        if not target_classes:
            raise ValueError("HybridEngine needs at least one target class")
        self.target_classes = torch.tensor(list(target_classes), dtype=torch.long, device=self.device)
        self.teacher_params = self._pretrained
        K = len(self.target_classes)
        self.target_weights = torch.full((K,), 1.0 / K, device=self.device)
        """π over ``target_classes``: uniform (a fixed buffer, which a captured update reads by address)."""

    def _objective(self, params: dict, batch: SISSBatch, lam, forget_scale, forget_size):
        return hybrid_objective(
            self._module, params, self.teacher_params, batch, lam, self.gamma, self.sigma, self.hybrid,
            (self.target_classes, self.target_weights), forget_scale, self.dataset_size, forget_size,
        )  # fmt: skip
