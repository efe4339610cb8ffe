"""The records between the runner and the report, and the episode log of resumable runs.

An episode's record (:data:`EpisodeRecord`) is what one episode contributes to the report and one
line of the episode log (``episodes.jsonl``): a header line with the settings, then one record per
finished episode, each flushed and fsync'ed, so that ``resume=True`` can skip the episodes already
logged (an episode depends only on its (policy, seed, instance)).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import numpy as np

from .config import REPORT_ONLY_SETTINGS, BenchConfig, Unit

if TYPE_CHECKING:
    from .recording import EpisodeSteps

__all__ = [
    "EPISODE_LOG",
    "EpisodeLog",
    "EpisodeOutcome",
    "EpisodeRecord",
    "add_evaluation",
    "episode_record",
    "log_settings",
    "read_episode_log",
]

EPISODE_LOG = "episodes.jsonl"
"""The episode log's file name in a bench output folder (``unlearn-gym bench --resume DIR`` reads it)."""

_LOG_KIND = "unlearn-gym bench episodes"

EpisodeRecord = TypedDict(  # functional form: "return" is a keyword
    "EpisodeRecord",
    {
        "policy": str,
        "seed": int,
        "instance": "int | None",
        "return": float,
        "length": int,
        "diverged": bool,
        "efficacy": float,
        "degradation": float,
        "mean_lambda": float,
        "lambdas": "list[float]",
        "rewards": "list[float]",
        "seconds_unlearn": float,
        "forget_rate": float,
        "retain_accuracy": float,
        "contaminated_label_accuracy": float,
        "unlearning_accuracy": float,
        "remaining_accuracy": float,
        "per_label_accuracy": dict,
        "seconds_evaluate": float,
        "retain_fid_retrained": float,
        "retain_kid_retrained": float,
        "damage": float,
        "adjusted_forget_rate": float,
        "forget_curve": "list[list[float]]",
        "seconds_curve": float,
        "forget_auc": float,
        "steps_to_half": float,
        "reached_half": bool,
        "steps_to_tenth": float,
        "reached_tenth": bool,
        "robustness": dict,
        "seconds_robustness": float,
    },
    total=False,
)
"""One episode's record, in the order its keys are written (one line of ``episodes.jsonl``).

Always (:func:`episode_record`): ``policy``, ``seed``, ``instance`` (the episode's unit);
``return`` = Σ_t r_t (undiscounted, unnormalised); ``length`` (steps); ``diverged``; ``efficacy``
and ``degradation`` of the last step's ``info`` (NaN where the env reports none); ``mean_lambda``
and the per-step ``lambdas`` (λ_t) and ``rewards`` (r_t); ``seconds_unlearn``. With an evaluation
(:func:`add_evaluation`): ``forget_rate``, ``retain_accuracy``, ``contaminated_label_accuracy``
(SFD-v0: ``unlearning_accuracy``, ``remaining_accuracy``), ``per_label_accuracy`` (label → sample
accuracy), ``seconds_evaluate``; with a retrained reference ``retain_fid_retrained`` and
``retain_kid_retrained``; with the pretrained evaluation ``damage`` (D⁺) and ``adjusted_forget_rate``
(F + β·D⁺, :func:`~unlearn_gym.bench.stats.add_outcome_scores`). With ``curve_steps``: ``forget_curve``
([t, F(t)] after those steps and at the end), ``seconds_curve``, and its scores ``forget_auc``,
``steps_to_half``, ``reached_half``, ``steps_to_tenth``, ``reached_tenth``
(:func:`~unlearn_gym.bench.curve.curve_scores`). With the robustness attacks:
``robustness`` (the figures), ``seconds_robustness`` and the figures' summary entries (e.g.
``mia_forget_auc``). A plain ``dict`` at run time: the JSON written is the record as it is."""


class EpisodeOutcome(NamedTuple):
    """What running one episode gives back (in this process, a worker process or a Ray actor)."""

    record: EpisodeRecord
    """The episode's record."""
    evaluation: Any
    """The unlearned model's evaluation (a :class:`~unlearn_gym.metrics.forget.SampleEvaluation`; from a
    worker only its ``images`` and ``labels``, on the CPU), or None without evaluation."""
    steps: EpisodeSteps | None
    """The episode's recorded steps when recording, else None."""


def episode_record(
    name: str, seed: int, instance: int | None, lams: list[float], rewards: list[float], info: dict, seconds: float
) -> EpisodeRecord:
    """One episode's record from its λs, rewards and last step's ``info``."""
    return {
        "policy": name,
        "seed": seed,
        "instance": instance,
        "return": float(np.sum(rewards)),
        "length": len(rewards),
        "diverged": bool(info.get("diverged", False)),
        "efficacy": float(info.get("efficacy", float("nan"))),
        "degradation": float(info.get("degradation", float("nan"))),
        "mean_lambda": float(np.mean(lams)),
        "lambdas": lams,
        "rewards": rewards,
        "seconds_unlearn": round(seconds, 3),
    }


def add_evaluation(record: EpisodeRecord, ev, seconds: float) -> None:
    """Add the evaluation's figures (forget rate, retain accuracy, per-label accuracy, ...) to ``record``."""
    keys = ("forget_rate", "retain_accuracy", "contaminated_label_accuracy", "unlearning_accuracy")
    record |= {k: float(ev.figures[k]) for k in (*keys, "remaining_accuracy") if k in ev.figures}
    record["per_label_accuracy"] = {y: row["accuracy"] for y, row in ev.figures["per_label"].items()}
    record["seconds_evaluate"] = seconds


# -- the episode log (resumable runs) -------------------------------------------------------------


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def log_settings(config: BenchConfig, names: list[str]) -> dict:
    """What determines the episodes, as JSON values: the config less the report-only fields, and
    the policies' names in order."""
    settings = {k: v for k, v in asdict(config).items() if k not in REPORT_ONLY_SETTINGS}
    settings["policies"] = list(names)
    return json.loads(json.dumps(settings, default=str))


def _setting_differences(logged: dict, now: dict, prefix: str = "") -> list[str]:
    """'key: A in the log, B now' for every setting that differs (one level into dicts)."""
    out = []
    for key in sorted(set(logged) | set(now), key=str):
        a, b = logged.get(key, "<unset>"), now.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += _setting_differences(a, b, f"{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} in the log, {json.dumps(b)} now")
    return out


def read_episode_log(
    path: str | Path, log: Callable[[str], None] | None = None
) -> tuple[dict, list[tuple[int, dict]], int]:
    """Read an episode log: (header, [(line number, record)], bytes of its valid part).

    A last line that lacks its newline or is not valid JSON was being written when the run died:
    it is dropped (reported through ``log``) and the valid part ends before it. Any other line that
    is not a JSON object is an error naming its line number.

    Raises:
        ValueError: a corrupt line before the last, or no header line.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last complete line
    header, records, valid = None, [], 0
    for lineno, raw in enumerate(lines, start=1):
        last = lineno == len(lines)
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        except ValueError as e:
            if last:
                (log or (lambda _m: None))(f"resume: dropping the half-written last line {lineno} of {path}")
                break
            raise ValueError(
                f"{path}, line {lineno}: corrupt episode log ({e}); remove that line or start afresh"
            ) from None
        if last and not data.endswith(b"\n"):
            (log or (lambda _m: None))(f"resume: dropping the half-written last line {lineno} of {path} (no newline)")
            break
        if lineno == 1:
            if obj.get("kind") != _LOG_KIND:
                raise ValueError(f"{path}, line 1: not an unlearn-gym bench episode log (expected a header line)")
            header = obj
        else:
            records.append((lineno, obj))
        valid += len(raw) + 1
    if header is None:
        raise ValueError(f"{path}: no header line; start afresh without --resume")
    return header, records, valid


class EpisodeLog:
    """The runner's side of the episode log: the episodes already done, appending, the samples."""

    def __init__(self, path: Path, settings: dict, runs: list[Unit], resume: bool, log: Callable[[str], None]) -> None:
        self.path = path
        self.samples_dir = path.parent / "episode_samples"
        self.done: dict[Unit, EpisodeRecord] = {}
        """The logged episodes (a resume): unit → its record as logged."""
        if resume:
            if not path.is_file():
                raise FileNotFoundError(f"resume: no episode log {path}; run without --resume first")
            header, records, valid = read_episode_log(path, log)
            differ = _setting_differences(header["settings"], settings)
            if differ:
                raise ValueError(
                    f"resume: {path} was written with other settings ({'; '.join(differ)}); "
                    "resume with the options of that run, or write into another folder"
                )
            planned = set(runs)
            for lineno, record in records:
                key = (record.get("policy"), record.get("seed"), record.get("instance"))
                if key not in planned or key in self.done:
                    why = "logged twice" if key in self.done else "not one of this run's episodes"
                    raise ValueError(f"{path}, line {lineno}: episode {key} is {why}")
                self.done[key] = record
            os.truncate(path, valid)
            log(f"resume: {len(self.done)} of {len(runs)} episodes already in {path}")
        else:
            if path.is_file():
                log(f"replacing the episode log {path} (to continue it instead: --resume {path.parent})")
            if self.samples_dir.is_dir():
                import shutil

                shutil.rmtree(self.samples_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            header = {"kind": _LOG_KIND, "version": 1, "settings": settings, "episodes": len(runs)}
            with open(path, "wb") as f:
                self._write(f, header)

    @staticmethod
    def _write(f, obj: dict) -> None:
        f.write((json.dumps(obj, default=_json_default) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())

    def append(self, record: EpisodeRecord) -> None:
        """One finished episode, as one JSON line, flushed and fsync'ed."""
        with open(self.path, "ab") as f:
            self._write(f, record)

    def _arrays_path(self, index: int) -> Path:
        return self.samples_dir / f"{index:06d}.safetensors"

    def save_arrays(self, index: int, arrays: dict) -> None:
        """The tensors the ``index``-th episode contributes to the report (before its line is logged)."""
        from ..models.checkpoint import save_tensors_atomic

        self.samples_dir.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(arrays, self._arrays_path(index))

    def load_steps(self, index: int, run: Unit) -> EpisodeSteps:
        """The recorded steps of the ``index``-th episode ``run`` = (policy, seed, instance)."""
        from .recording import EpisodeSteps

        try:
            return EpisodeSteps.from_arrays(self.load_arrays(index), run[1], run[2])
        except (FileNotFoundError, KeyError):
            raise ValueError(
                f"resume with record: the logged episode {run} has no recorded steps in {self.samples_dir} (the "
                "interrupted run did not record); resume without recording, or start afresh"
            ) from None

    def load_arrays(self, index: int) -> dict:
        """The tensors :meth:`save_arrays` wrote for the ``index``-th episode, on the CPU."""
        from ..models.checkpoint import load_tensors

        path = self._arrays_path(index)
        if not path.is_file():
            raise FileNotFoundError(f"resume: {path} is missing (the samples of a logged episode); start afresh")
        return load_tensors(path)[0]
