"""The declared task set: named unlearning tasks that differ in what makes unlearning hard.

The main job (``trousers``) is one task at its floor: static λ = 0.5 takes the bundled model's
trouser rate from 0.37 to 0.05 in T = 100 updates, and no policy can be shown to do better. The
tasks below keep the main job's update (SISS-v0, batch 16, AdamW lr 1.5e-4, λ = 0.5, S = 5) and
change one thing each:

=================== ======================================================================== ==========
task                what differs from the main job                                            model
=================== ======================================================================== ==========
``trousers``        nothing: 193 trousers under label 1 (30%), T = 100                       bundled
``trousers-T25``    the budget: T = 25 updates, where the task is not yet saturated          bundled
``trousers-k16``    the forget set: 16 of the 193 trousers (one subset per instance); the     bundled
                    concept must go though 177 of its images are never shown
``trousers-k64``    as k16 with 64 of the 193                                                bundled
``trousers-c50``    the contamination: 450 trousers, 50% of label 1                          built
``mislabelled-7s``  the contaminant: real 7s labelled 1, a neighbour class to protect        built
=================== ======================================================================== ==========

Every task is scored the same way (forget rate F of the contaminated label's samples, retain
accuracy A, damage D⁺; :mod:`unlearn_gym.bench`). The forget-subset tasks draw instance i's subset
from seed i; their instances come from the split's instance range
(:mod:`unlearn_gym.splits`: train 0–999, validation 1,000–1,999, test 2,000–2,999) and their
reset seeds from its seed range, like every task's.

The two "built" models are reproducible, not shipped: :func:`build_task_model` (``unlearn-gym tasks
build NAME``) pretrains each with the bundled model's recipe (``tiny`` preset, 4,000 steps, seed 0;
``docs/results.md`` §1) into the cache, ``$UNLEARN_GYM_CACHE/models`` (else
``$XDG_CACHE_HOME/unlearn-gym/models``), about 25 minutes on one CPU thread each (1,470 s measured,
``docs/results.md`` §15). ``trousers-c50`` shares the default scenario's retain set (the same 4,500
digits), so the bundled model retrained without the trousers is its exact-unlearning reference too;
``mislabelled-7s`` has its own classifier (10 classes: the 7s are a digit) and no retrained reference.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

__all__ = [
    "TASKS",
    "ModelRecipe",
    "Task",
    "build_task_model",
    "get_task",
    "is_built",
    "models_cache_dir",
    "require_built",
    "task_model_dir",
]


@dataclass(frozen=True)
class ModelRecipe:
    """How a task's pretrained model is made: ``unlearn-gym pretrain`` (and ``train-classifier``) settings."""

    scenario: str
    """The scenario (``unlearn_gym.data.load_scenario``'s name)."""
    contamination: float = 0.3
    """k / (n₁ + k): the share of the contaminated label's training images that are contaminants."""
    preset: str = "tiny"
    steps: int = 4000
    seed: int = 0
    """Seed of the pretraining's batch order, t and ε (and of the classifier's training)."""
    own_classifier: bool = False
    """Train the scenario's own evaluation classifier into the model's ``classifier/`` (its classes
    differ from the bundled classifier's); False: the bundled classifier evaluates it."""
    classifier_epochs: int = 12
    """Epochs of that classifier (``train-classifier``'s default)."""

    @property
    def key(self) -> str:
        """The model's folder name in the cache: every setting that changes the weights."""
        key = f"{self.scenario}-c{self.contamination:g}-{self.preset}-{self.steps}-s{self.seed}"
        return key if not self.own_classifier or self.classifier_epochs == 12 else f"{key}-e{self.classifier_epochs}"

    def commands(self, out: str | Path) -> list[str]:
        """The ``unlearn-gym`` command lines that make the same model in ``out`` as :func:`build_task_model` does
        (it calls the same functions in-process, with the thread count of ``tasks build --threads``)."""
        scenario = f"--scenario {self.scenario} --contamination {self.contamination:g}"
        lines = [
            f"unlearn-gym pretrain {scenario} --preset {self.preset} --steps {self.steps} --seed {self.seed} "
            f"--threads 1 --out {out}"
        ]
        if self.own_classifier:
            lines.append(
                f"unlearn-gym train-classifier {scenario} --epochs {self.classifier_epochs} --seed {self.seed} "
                f"--threads 1 --out {out}/classifier"
            )
        return lines


@dataclass(frozen=True)
class Task:
    """One task of the set: SISS-v0 settings over the main job's, a model, a reference and its episodes."""

    name: str
    summary: str
    """What makes it differ from the main job, in a line."""
    env_kwargs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    """Keywords of ``gymnasium.make`` over the main job's (``BENCH_ENV_KWARGS``)."""
    model: ModelRecipe | None = None
    """How its pretrained model is made; None: the bundled default model."""
    retrained: Literal["bundled", "none"] = "bundled"
    """The exact-unlearning reference row: "bundled": the bundled retrained model (the task's retain set
    is the default scenario's); "none": no reference."""
    instances: int = 0
    """Forget-subset instances per benchmark (the split's first ones; 0: the whole forget set)."""
    seeds: int = 8
    """Reset seeds per benchmark (the split's first ones); instances × seeds episodes per policy."""

    def __post_init__(self) -> None:
        subset = self.env_kwargs.get("forget_subset")
        if (subset is None) != (self.instances == 0):
            raise ValueError(
                f"task {self.name}: forget_subset and instances go together (got {subset}, {self.instances})"
            )


def _task(name: str, summary: str, env_kwargs: dict | None = None, **kw) -> Task:
    return Task(name, summary, MappingProxyType(dict(env_kwargs or {})), **kw)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _task("trousers", "the main job: 193 trousers under label 1 (30%), T = 100"),
        _task("trousers-T25", "the budget track: T = 25 updates, where the task is not yet saturated", {"horizon": 25}),
        _task(
            "trousers-k16",
            "16 of the 193 trousers identified (one subset per instance); the concept must go",
            {"forget_subset": 16},
            instances=4,
            seeds=2,
        ),
        _task(
            "trousers-k64",
            "64 of the 193 trousers identified (one subset per instance); the concept must go",
            {"forget_subset": 64},
            instances=4,
            seeds=2,
        ),
        _task(
            "trousers-c50",
            "450 trousers under label 1 (50%): a stronger contamination",
            model=ModelRecipe("default", contamination=0.5),
        ),
        _task(
            "mislabelled-7s",
            "193 real 7s labelled 1 (30%): a neighbour class to protect",
            model=ModelRecipe("mislabelled-7s", own_classifier=True),
            retrained="none",
        ),
    )
}
"""name → :class:`Task` (the module docstring's table)."""


def get_task(name: str) -> Task:
    """The task called ``name``, or a ValueError that lists the task set."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; the task set: {', '.join(TASKS)} (unlearn-gym tasks)") from None


def models_cache_dir() -> Path:
    """``$UNLEARN_GYM_CACHE/models``, else ``$XDG_CACHE_HOME/unlearn-gym/models`` (default ``~/.cache``)."""
    from .cache import cache_dir

    return cache_dir("models")


def task_model_dir(task: Task, cache_dir: str | Path | None = None) -> Path:
    """Where ``task``'s pretrained model is: the bundled one, or its recipe's folder in the cache (built or not)."""
    if task.model is None:
        from .assets import bundled_model_dir

        return bundled_model_dir()
    return Path(cache_dir or models_cache_dir()) / task.model.key


def is_built(task: Task, cache_dir: str | Path | None = None) -> bool:
    """Whether ``task``'s model is there (bundled, or built: ``config.json`` + ``model.safetensors`` [+ classifier])."""
    path = task_model_dir(task, cache_dir)
    needed = ["config.json", "model.safetensors"]
    if task.model is not None and task.model.own_classifier:
        needed += ["classifier/config.json", "classifier/classifier.safetensors"]
    return all((path / n).is_file() for n in needed)


def require_built(task: Task, cache_dir: str | Path | None = None) -> Path:
    """``task``'s model folder, or a FileNotFoundError that says how to build it."""
    path = task_model_dir(task, cache_dir)
    if not is_built(task, cache_dir):
        raise FileNotFoundError(
            f"task {task.name}'s model is not built ({path}): run `unlearn-gym tasks build {task.name}` "
            "(about 25 minutes on one CPU thread; set UNLEARN_GYM_CACHE to build elsewhere)"
        )
    return path


def build_task_model(
    task: Task,
    *,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    recipe: ModelRecipe | None = None,
    progress: bool = True,
) -> Path:
    """Make ``task``'s model by its recipe (pretraining, then the classifier where it has its own) and return its folder.

    The work goes into ``KEY.partial`` beside the final folder, which pretraining resumes from its train
    state if a build was interrupted; the folder takes its final name only when everything is written,
    so a half-built model is never found. A built model is returned as it is. ``recipe`` replaces the
    task's (a shorter one in tests), under its own key.
    """
    if task.model is None:
        return task_model_dir(task)
    from dataclasses import replace

    from .data import load_scenario
    from .metrics.classifier import ClassifierTrainConfig, save_classifier, train_classifier
    from .models.pretrain import PretrainConfig, pretrain

    task = task if recipe is None else replace(task, model=recipe)
    recipe = task.model
    final = task_model_dir(task, cache_dir)
    if is_built(task, cache_dir):
        return final
    partial = final.with_name(final.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    scenario_args = {"contamination": recipe.contamination, "forget_size": None, "seed": 0}
    scenario = load_scenario(recipe.scenario, **scenario_args)
    pretrain(
        scenario,
        partial,
        preset=recipe.preset,
        config=PretrainConfig(steps=recipe.steps, seed=recipe.seed),
        device=device,
        scenario_args={"name": scenario.name, **scenario_args},
        progress=progress,
    )
    if recipe.own_classifier and not (partial / "classifier" / "classifier.safetensors").is_file():
        config = ClassifierTrainConfig(epochs=recipe.classifier_epochs, seed=recipe.seed)
        model, report = train_classifier(scenario, config, progress=progress)
        meta = {"scenario": {"name": scenario.name, **{k: str(v) for k, v in scenario_args.items()}}, "report": report}
        save_classifier(model, partial / "classifier", meta)
    if final.exists():  # an incomplete folder from elsewhere: the fresh build replaces it
        shutil.rmtree(final)
    partial.rename(final)
    return final
