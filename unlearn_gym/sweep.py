"""Agent sweeps with Ray Tune: algorithms × seeds × hyperparameter values, one table of all trials.

Each trial calls :func:`~unlearn_gym.agents.train_agent`, the function behind ``unlearn-gym
train``, with the trial's algorithm, seed and hyperparameter overrides, then runs the exported
agent deterministically for ``eval_episodes`` episodes (the first N seeds of the validation split,
:mod:`unlearn_gym.splits`) through the bench's :class:`~unlearn_gym.bench.episodes.EpisodeRunner` and reports their mean return to Tune. Trials
run as Tune trials with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs each; the table
(``sweep.csv``, ``sweep.md``) has one row per trial in grid order.

This module sits above ``agents/`` and ``bench``: it imports both.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .splits import SPLITS

__all__ = ["SweepConfig", "parse_grid", "run_sweep", "run_trial", "sweep_trials", "write_sweep_table"]


@dataclass(frozen=True)
class SweepConfig:
    """What :func:`run_sweep` trains and how each trial is placed."""

    algos: tuple[str, ...] = ("ppo",)
    """Algorithms (each a name of ``unlearn-gym train --algo``)."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds of every (algorithm, hyperparameters) cell."""
    grid: Mapping[str, tuple] = field(default_factory=dict)
    """Hyperparameter → values: their Cartesian product overrides the YAML hyperparameters of every
    algorithm (so every key must be one that each algorithm takes)."""
    env_id: str = "unlearn_gym/SISS-v0"
    env_kwargs: dict = field(default_factory=dict)
    """Keywords of ``gymnasium.make`` for training and evaluation (over the YAML's ``env_kwargs``)."""
    timesteps: int = 2048
    """Env steps of each trial's training."""
    eval_episodes: int = 3
    """Deterministic episodes of each trained agent (the validation split's first N seeds) whose mean return is the trial's score."""
    device: str = "cpu"
    """The agents' networks' device (the diffusion model's is the env's ``device`` keyword)."""
    cpus_per_trial: float = 1.0
    """CPUs each trial declares (and its torch threads, at least 1)."""
    gpus_per_trial: float = 0.0
    """GPUs each trial declares (fractions share a GPU)."""
    ray_address: str | None = None
    """The Ray cluster to join; None: this process's Ray session, else a new local cluster."""

    def __post_init__(self) -> None:
        from .agents.hyperparams import ALGO_NAMES

        unknown = [a for a in self.algos if a not in ALGO_NAMES]
        if not self.algos or unknown:
            raise ValueError(f"algos must be a non-empty subset of {ALGO_NAMES}, got {list(self.algos)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        empty = [k for k, v in self.grid.items() if not v]
        if empty:
            raise ValueError(f"grid: hyperparameter(s) {empty} have no values")
        if self.timesteps < 1 or self.eval_episodes < 1:
            raise ValueError(f"timesteps and eval_episodes must be >= 1, got {self.timesteps} and {self.eval_episodes}")
        if not self.cpus_per_trial > 0 or not self.gpus_per_trial >= 0:
            raise ValueError(
                f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {self.cpus_per_trial} and {self.gpus_per_trial}"
            )


def parse_grid(items: Sequence[str]) -> dict[str, tuple]:
    """``["learning_rate=3e-4,1e-3", "n_steps=64"]`` → {"learning_rate": (0.0003, 0.001), "n_steps": (64,)}.

    Each value is read as JSON where it is JSON (numbers, true/false, null, quoted strings), else
    kept as a string.

    Raises:
        ValueError: an item without ``=``, a key given twice, or no values.
    """
    grid: dict[str, tuple] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set: expected NAME=V1,V2,... (e.g. learning_rate=3e-4,1e-3), got {item!r}")
        if key in grid:
            raise ValueError(f"--set: {key} is given twice; list its values once, comma-separated")
        parsed = []
        for text in (v.strip() for v in values.split(",")):
            if not text:
                continue
            try:
                parsed.append(json.loads(text))
            except json.JSONDecodeError:
                parsed.append(text)
        if not parsed:
            raise ValueError(f"--set {key}: expected at least one value, got {item!r}")
        grid[key] = tuple(parsed)
    return grid


def sweep_trials(config: SweepConfig) -> list[dict]:
    """The grid in order (algorithm, seed, then the hyperparameters' product): one dict per trial with
    ``name``, ``algo``, ``seed`` and ``hyperparams``."""
    keys = list(config.grid)
    trials = []
    for algo, seed, values in itertools.product(
        config.algos, config.seeds, itertools.product(*(config.grid[k] for k in keys))
    ):
        hp = dict(zip(keys, values))
        name = f"{algo}-seed{seed}" + "".join(f"-{k}={v}" for k, v in hp.items())
        trials.append({"name": name, "algo": algo, "seed": seed, "hyperparams": hp})
    return trials


def run_trial(trial: Mapping[str, Any], config: SweepConfig, out: str | Path) -> dict:
    """Train one trial's agent into ``out/trials/<name>`` and score it; the trial's metrics.

    Returns:
        {"return": mean return of the ``eval_episodes`` episodes, "return_std" (ddof 0),
        "returns", "timesteps", "seconds_train", "seconds_eval", "agent" (the exported agent's
        directory)}.
    """
    import torch

    from .agents import load_agent, train_agent
    from .bench import BenchConfig, EpisodeRunner

    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    trial_out = Path(out) / "trials" / trial["name"]
    result = train_agent(
        trial["algo"],
        config.env_id,
        config.timesteps,
        seed=int(trial["seed"]),
        out=trial_out,
        env_kwargs=dict(config.env_kwargs),
        overrides=dict(trial["hyperparams"]),
        device=config.device,
        tensorboard=False,
        progress_bar=False,
        checkpoint_freq=0,
        sample_every=0,
    )
    t0 = time.perf_counter()
    agent = load_agent(result.agent_dir)
    bench = BenchConfig(
        env_id=config.env_id,
        env_kwargs=dict(agent.env_kwargs),  # what it was trained on: the YAML's env_kwargs and the config's
        seeds=SPLITS["validation"].first_seeds(config.eval_episodes),  # tuned on validation, not train or test
        samples_per_label=0,
    )
    runner = EpisodeRunner({"agent": agent}, bench)
    returns = [runner.episode("agent", seed, None)[0]["return"] for seed in bench.seeds]
    runner.env.close()
    return {
        "return": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "returns": returns,
        "timesteps": result.timesteps,
        "seconds_train": round(result.seconds, 1),
        "seconds_eval": round(time.perf_counter() - t0, 1),
        "agent": str(result.agent_dir),
    }


def _tune_trial(params: dict, config: SweepConfig, out: str) -> None:
    """Tune's function trainable: one trial, its metrics reported once."""
    from ray import tune

    tune.report(run_trial(params["trial"], config, out))


def run_sweep(config: SweepConfig, out: str | Path) -> list[dict]:
    """Train every trial of :func:`sweep_trials` with Ray Tune; one row per trial, in grid order.

    Each row: ``trial``, ``algo``, ``seed``, the grid's hyperparameters, then :func:`run_trial`'s
    metrics and ``status`` ("ok", or "error: ..." for a trial that raised; its metrics are None).
    Tune's own files go to ``out/tune``; each agent to ``out/trials/<name>``.
    """
    from .bench.ray_backend import ray_session

    out = Path(out).resolve()  # Tune runs each trial in a folder of its own: absolute paths only
    out.mkdir(parents=True, exist_ok=True)
    trials = sweep_trials(config)
    with ray_session(config.ray_address) as ray:
        from ray import tune

        from .bench.ray_backend import actor_slots

        actor_slots(ray.cluster_resources(), config.cpus_per_trial, config.gpus_per_trial)  # fits at least one
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, config=config, out=str(out)),
            {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(metric="return", mode="max"),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(out),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with contextlib.redirect_stdout(sys.stderr):  # Tune's tables: stdout is the caller's (``--json``)
            results = tuner.fit()
        by_name = {}
        for r in results:
            name = r.config["trial"]["name"]
            if r.error is not None:
                by_name[name] = {"status": f"error: {type(r.error).__name__}: {str(r.error).strip().splitlines()[-1]}"}
            else:
                keys = ("return", "return_std", "returns", "timesteps", "seconds_train", "seconds_eval", "agent")
                by_name[name] = {k: r.metrics.get(k) for k in keys} | {"status": "ok"}
    rows = []
    for t in trials:
        got = by_name.get(t["name"], {"status": "error: no result"})
        rows.append({"trial": t["name"], "algo": t["algo"], "seed": t["seed"], **t["hyperparams"], **got})
    return rows


def write_sweep_table(rows: list[dict], config: SweepConfig, out: str | Path, command: str | None = None) -> dict:
    """sweep.csv (every column) and sweep.md (the table, and the best trial per algorithm) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hp_keys = list(config.grid)
    cols = ["trial", "algo", "seed", *hp_keys, "return", "return_std", "timesteps", "seconds_train", "seconds_eval"]
    cols += ["status", "agent"]
    paths = {"csv": out / "sweep.csv", "markdown": out / "sweep.md"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def cell(x) -> str:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "–"
        return f"{x:.4f}" if isinstance(x, float) else str(x)

    lines = ["# unlearn-gym sweep", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"{config.env_id} {config.env_kwargs}; {config.timesteps} env steps per trial; return: mean (± std) of "
        f"{config.eval_episodes} deterministic episodes of the trained agent (the first seeds of the validation split).",
        "",
        "| algo | seed | " + "".join(f"{k} | " for k in hp_keys) + "return | timesteps | seconds | status |",
        "|---|---|" + "---|" * len(hp_keys) + "---|---|---|---|",
    ]
    for r in rows:
        ret = "–" if r.get("return") is None else f"{r['return']:.4f} ± {r['return_std']:.4f}"
        hp = "".join(f"{cell(r.get(k))} | " for k in hp_keys)
        lines.append(
            f"| {r['algo']} | {r['seed']} | {hp}{ret} | {cell(r.get('timesteps'))} | "
            f"{cell(r.get('seconds_train'))} | {r['status']} |"
        )
    best = {}
    for r in rows:
        if r.get("return") is not None and (r["algo"] not in best or r["return"] > best[r["algo"]]["return"]):
            best[r["algo"]] = r
    if best:
        lines += ["", "Best trial per algorithm (one seed's return; compare cells over seeds before choosing):", ""]
        lines += [f"- {a}: {r['trial']} (return {r['return']:.4f}), agent {r['agent']}" for a, r in best.items()]
    paths["markdown"].write_text("\n".join(lines) + "\n")
    return paths
