"""The engines: each owns N runs' models, optimizer states, data streams and probes.

:mod:`~unlearn_gym.engines.run_axis` holds what they share (the run axis, AdamW on stacked runs, the
executors, one host copy per update); :mod:`~unlearn_gym.engines.siss` the SISS engine,
:mod:`~unlearn_gym.engines.hybrid` the SISS + SFD-alignment hybrid, :mod:`~unlearn_gym.engines.sfd`
Score Forgetting Distillation. Envs import from here and never reach past an engine's public methods.
"""

from .hybrid import HYBRID_STAT_NAMES, HybridEngine, HybridStepStats
from .run_axis import (
    EXECUTORS,
    Executor,
    HostStats,
    RunEngine,
    RunStats,
    StatsLayout,
    adamw_,
    math_attention,
    resolve_executor,
)
from .sfd import SFD_PROBE_STATS, SFD_STAT_NAMES, SFDEngine, SFDIterationResult, SFDStepStats
from .siss import PROBE_STATS, STAT_NAMES, StepStats, UnlearningEngine

__all__ = [
    "EXECUTORS",
    "Executor",
    "HYBRID_STAT_NAMES",
    "HostStats",
    "HybridEngine",
    "HybridStepStats",
    "PROBE_STATS",
    "RunEngine",
    "RunStats",
    "SFDEngine",
    "SFDIterationResult",
    "SFDStepStats",
    "SFD_PROBE_STATS",
    "SFD_STAT_NAMES",
    "STAT_NAMES",
    "StatsLayout",
    "StepStats",
    "UnlearningEngine",
    "adamw_",
    "math_attention",
    "resolve_executor",
]
