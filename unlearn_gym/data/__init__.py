"""Scenarios: retain and forget sets with labels and deterministic splits."""

from .scenarios import (
    SCENARIOS,
    ImageSet,
    Scenario,
    ScenarioDataError,
    load_scenario,
    scenario_of_checkpoint,
    shared_data_dir,
)

__all__ = [
    "SCENARIOS",
    "ImageSet",
    "Scenario",
    "ScenarioDataError",
    "load_scenario",
    "scenario_of_checkpoint",
    "shared_data_dir",
]
