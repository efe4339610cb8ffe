"""Unlearning objectives as pure functions of (model, parameters, batch, λ, config)."""

from .siss import OBJECTIVES, ObjectiveResult, SISSBatch, SISSConfig, draw_batch, importance_log_weights

__all__ = ["OBJECTIVES", "ObjectiveResult", "SISSBatch", "SISSConfig", "draw_batch", "importance_log_weights"]
