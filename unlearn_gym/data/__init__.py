"""Scenarios: retain and forget sets with labels and deterministic splits."""

from .scenarios import SCENARIOS, ImageSet, Scenario, ScenarioDataError, load_scenario, shared_data_dir

__all__ = ["SCENARIOS", "ImageSet", "Scenario", "ScenarioDataError", "load_scenario", "shared_data_dir"]
