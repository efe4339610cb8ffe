"""Episodes as Farama Minari datasets: what ``unlearn-gym bench --record DIR`` writes.

The runner keeps every step of an episode as an :class:`EpisodeSteps` (observations, actions,
rewards, terminations, truncations and the scalar step statistics of ``info``), and
:func:`write_datasets` hands them to Minari's own ``create_dataset_from_buffers``: one dataset per
(env, policy), with the env's spec, so that::

    import os, minari

    os.environ["MINARI_DATASETS_PATH"] = "DIR"
    dataset = minari.load_dataset("unlearn_gym/SISS-v0/static-0_5-v0")
    env = dataset.recover_environment()  # gymnasium.make of the benched env, with its keywords

Minari stores T + 1 observations and T + 1 infos per episode (the first of each from ``reset``),
as its ``DataCollector`` does. The step statistics are not defined at reset: that row holds NaN
for float statistics, 0 for integer ones (``step`` is 0 at reset, as it should be) and False for
flags. Minari is an optional extra (``pip install "unlearn-gym[minari]"``), imported only here,
when datasets are written.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EpisodeSteps", "StepRecorder", "dataset_id", "require_minari", "write_datasets"]

_INSTALL = 'pip install "unlearn-gym[minari]"'


def require_minari():
    """The ``minari`` module, or :class:`gymnasium.error.DependencyNotInstalled` saying how to install it."""
    try:
        import minari
    except ImportError as e:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled(f"recording episodes needs Minari ({e}); {_INSTALL}") from None
    return minari


@dataclass(frozen=True)
class EpisodeSteps:
    """One episode's transitions, T steps, as Minari stores them."""

    seed: int
    """The seed of ``env.reset``."""
    instance: int | None
    """The ``reset(options={"instance": i})`` value (None: the whole forget set)."""
    observations: np.ndarray
    """(T + 1, *obs_shape): the reset observation, then each step's."""
    actions: np.ndarray
    """(T, *action_shape) float32: the actions passed to ``env.step``."""
    rewards: np.ndarray
    """(T,) float64."""
    terminations: np.ndarray
    """(T,) bool."""
    truncations: np.ndarray
    """(T,) bool."""
    infos: dict[str, np.ndarray]
    """statistic → (T + 1,): the scalar entries of each step's ``info``, row 0 for the reset
    (NaN, 0 or False: see the module docstring)."""

    _PREFIX = "steps."

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat name → array (``steps.observations``, …, ``steps.infos.<key>``), e.g. for safetensors."""
        out = {f"{self._PREFIX}{k}": getattr(self, k) for k in ("observations", "actions", "rewards")}
        out |= {f"{self._PREFIX}{k}": getattr(self, k) for k in ("terminations", "truncations")}
        out |= {f"{self._PREFIX}infos.{k}": v for k, v in self.infos.items()}
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], seed: int, instance: int | None) -> EpisodeSteps:
        """The inverse of :meth:`to_arrays` (numpy arrays or CPU tensors).

        Raises:
            KeyError: ``arrays`` hold no recorded steps.
        """
        p = cls._PREFIX
        if f"{p}rewards" not in arrays:
            raise KeyError("no recorded steps")
        a = {k: np.asarray(v) for k, v in arrays.items() if k.startswith(p)}
        infos = {k[len(p) + len("infos.") :]: v for k, v in a.items() if k.startswith(f"{p}infos.")}
        return cls(
            seed=seed,
            instance=instance,
            observations=a[f"{p}observations"],
            actions=a[f"{p}actions"],
            rewards=a[f"{p}rewards"],
            terminations=a[f"{p}terminations"],
            truncations=a[f"{p}truncations"],
            infos=infos,
        )


def _scalar_items(info: Mapping[str, Any]) -> dict[str, bool | int | float]:
    """The entries of ``info`` that are one number or flag (the step statistics)."""
    out: dict[str, bool | int | float] = {}
    for key, value in info.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value)
    return out


class StepRecorder:
    """Collects one episode step by step: ``reset(obs)``, then ``step(action, obs, reward, …, info)``."""

    def __init__(self, action_shape: tuple[int, ...]) -> None:
        self.action_shape = action_shape
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminations: list[bool] = []
        self.truncations: list[bool] = []
        self.infos: list[dict[str, bool | int | float]] = []

    def reset(self, obs) -> None:
        self.observations.append(np.array(obs, copy=True))

    def step(self, action, obs, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        self.actions.append(np.asarray(action, dtype=np.float32).reshape(self.action_shape))
        self.observations.append(np.array(obs, copy=True))
        self.rewards.append(float(reward))
        self.terminations.append(bool(terminated))
        self.truncations.append(bool(truncated))
        self.infos.append(_scalar_items(info))

    def finish(self, seed: int, instance: int | None) -> EpisodeSteps:
        keys = list(dict.fromkeys(k for info in self.infos for k in info))
        infos = {}
        for key in keys:
            values = [info.get(key) for info in self.infos]
            if all(isinstance(v, bool) for v in values):
                infos[key] = np.array([False, *values], dtype=bool)
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                infos[key] = np.array([0, *values], dtype=np.int64)
            else:  # floats, or a statistic missing from some steps: NaN there
                infos[key] = np.array([np.nan, *[np.nan if v is None else float(v) for v in values]])
        return EpisodeSteps(
            seed=seed,
            instance=instance,
            observations=np.stack(self.observations),
            actions=np.stack(self.actions) if self.actions else np.zeros((0, *self.action_shape), np.float32),
            rewards=np.array(self.rewards, dtype=np.float64),
            terminations=np.array(self.terminations, dtype=bool),
            truncations=np.array(self.truncations, dtype=bool),
            infos=infos,
        )


def dataset_id(env_id: str, policy: str) -> str:
    """The Minari id of ``policy``'s dataset on ``env_id``: ``<env id>/<policy>-v0``, with every
    character Minari does not allow in a name (``[-_A-Za-z0-9]``) replaced: ``:`` by ``-``, the rest
    by ``_`` (``static:0.5`` → ``static-0_5``, ``ppo (bundled)`` → ``ppo_bundled``)."""
    namespace = re.sub(r"[^\w/-]+", "_", env_id.replace(":", "/")).strip("_/")
    name = re.sub(r"[^\w-]+", "_", policy.replace(":", "-")).strip("_") or "policy"
    return f"{namespace}/{name}-v0"


@contextmanager
def _datasets_path(root: Path) -> Iterator[None]:
    """``MINARI_DATASETS_PATH`` = ``root`` while Minari writes (Minari reads it at each call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def check_new_datasets(root: str | Path, env_id: str, policies: Sequence[str]) -> dict[str, str]:
    """policy → dataset id, after checking that the ids differ and that none exists under ``root``.

    Raises:
        ValueError: two policies map to one id, or a dataset is already there (Minari never
            overwrites one).
    """
    ids = {name: dataset_id(env_id, name) for name in policies}
    seen: dict[str, str] = {}
    for name, did in ids.items():
        if did in seen:
            raise ValueError(f"record: policies {seen[did]!r} and {name!r} would both be dataset {did!r}; rename one")
        seen[did] = name
        path = Path(root) / did
        if path.exists():
            raise ValueError(
                f"record: the Minari dataset {did!r} already exists in {path}; record into another folder or remove it"
            )
    return ids


def write_datasets(
    root: str | Path,
    env,
    episodes: Mapping[str, Sequence[EpisodeSteps]],
    *,
    description: str | None = None,
) -> dict[str, str]:
    """Write one Minari dataset per policy under ``root``; policy → dataset id.

    Args:
        root: the datasets folder (what ``MINARI_DATASETS_PATH`` must name to load them).
        env: the env the episodes ran on (``gymnasium.make``'s): its spec (id and keywords) goes into
            every dataset, so ``recover_environment()`` rebuilds it; also its spaces.
        episodes: policy name → its episodes, in the order they are to be stored.
        description: the datasets' description (default: names the policy and the env).
    """
    minari = require_minari()
    from minari.data_collector import EpisodeBuffer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ids = check_new_datasets(root, env.spec.id, list(episodes))
    with _datasets_path(root):
        for name, steps in episodes.items():
            buffers = [
                EpisodeBuffer(
                    id=k,
                    seed=s.seed,
                    options=None if s.instance is None else {"instance": s.instance},
                    observations=s.observations,
                    actions=s.actions,
                    rewards=list(s.rewards),
                    terminations=list(s.terminations),
                    truncations=list(s.truncations),
                    infos=dict(s.infos),
                )
                for k, s in enumerate(steps)
            ]
            with warnings.catch_warnings():  # Minari's reminders of metadata a bench run does not know
                warnings.filterwarnings("ignore", message=r"`(code_permalink|author|author_email)` is set to None")
                minari.create_dataset_from_buffers(
                    ids[name],
                    buffers,
                    env=env,
                    eval_env=env.spec,
                    algorithm_name=name,
                    description=description or f"unlearn-gym bench: policy {name} on {env.spec.id}",
                    data_format="hdf5",
                )
    return ids
