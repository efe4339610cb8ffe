"""The run axis every engine shares: N runs' stacked weights, AdamW on stacked runs, one host copy
of the statistics per update, executors (loop, vmap, CUDA graph) and seeding.

An engine owns N runs' models, their optimizer states, data streams and probes. ``update(λ)``
performs one unlearning step of every run and returns the runs' statistics after exactly one
device→host copy; ``restore(runs)`` puts the pretrained weights and a fresh optimizer state back in
place on the device, for some runs or all. N = 1 is the single env's engine. Envs translate actions
into λ and statistics into observations; they never touch the model.
"""

from __future__ import annotations

import copy
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "CapturedUpdate",
    "EXECUTORS",
    "GRAPH_WARMUP_STEPS",
    "MAX_GRAPHS",
    "Executor",
    "HostStats",
    "RunEngine",
    "RunStats",
    "StatsLayout",
    "adamw_",
    "math_attention",
    "resolve_executor",
]


class HostStats:
    """Base of the frozen dataclasses that hold one update's statistics as host floats (field order =
    the order of the engine's stats tensor)."""

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self._values())

    def finite_except(self, names: tuple[str, ...]) -> bool:
        """Every statistic but ``names`` is finite (those may be NaN by request, e.g. an unmeasured probe)."""
        return all(math.isfinite(getattr(self, name)) for name in self.names() if name not in names)

    def as_array(self) -> np.ndarray:
        return np.array(self._values(), dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names(), self._values()))

    def _values(self) -> list[float]:
        # the fields' values (floats: no ``dataclasses.astuple``/``asdict``, which deep-copy each one)
        return [getattr(self, name) for name in self.names()]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The statistics' names: the dataclass's fields, in the order of the engine's stats tensor."""
        names = cls.__dict__.get("_field_names")
        if names is None:
            names = tuple(f.name for f in fields(cls))
            cls._field_names = names  # a class attribute (not a field), computed once per class
        return names


def result_statistics(result_class: type) -> dict[str, tuple[str, ...]]:
    """name → attribute path of every statistic an objective's result class declares.

    The statistics are the dataclass's fields annotated ``torch.Tensor`` (path ``(name,)``) and those of
    its dataclass-typed fields, under their own names (``ObjectiveResult.variances.var_loss_r`` is
    ``var_loss_r`` at ``("variances", "var_loss_r")``); other fields (the update direction ``grads``)
    are not statistics.

    Raises:
        TypeError: ``result_class`` is not a dataclass, or declares one name twice.
    """
    if not (isinstance(result_class, type) and is_dataclass(result_class)):
        raise TypeError(f"an objective's result class must be a dataclass, got {result_class!r}")
    paths: dict[str, tuple[str, ...]] = {}

    def collect(cls: type, prefix: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            hint, path = hints[f.name], (*prefix, f.name)
            if isinstance(hint, type) and is_dataclass(hint):
                collect(hint, path)
            elif hint is torch.Tensor:
                if f.name in paths:
                    raise TypeError(
                        f"{result_class.__name__} declares the statistic {f.name!r} twice, at "
                        f"{'.'.join(paths[f.name])} and {'.'.join(path)}; expected each name once"
                    )
                paths[f.name] = path

    collect(result_class, ())
    return paths


@dataclass(frozen=True)
class StatsLayout:
    """Where each statistic of an engine's row comes from, resolved by name when the engine is made.

    Every field of the engine's ``stats_class`` is read by its name either from the objective's
    result (:func:`result_statistics`) or from the engine itself (``engine_names``: e.g. the update's
    norm and the probe's losses). :meth:`build` checks the names once, so a statistic nobody provides
    (or two sources do) fails at construction instead of shifting columns; :meth:`from_result` and
    :meth:`row` are attribute reads and one ``torch.stack``, which ``torch.func.vmap`` and CUDA graph
    capture trace like any tensor op.
    """

    names: tuple[str, ...]
    """The statistics in ``stats_class`` order: the columns of the engine's stats tensor."""
    result_paths: dict[str, tuple[str, ...]]
    """name → attribute path in the objective's result of the statistics read from it (the others the
    engine supplies itself)."""

    @classmethod
    def build(cls, stats_class: type[HostStats], result_class: type, engine_names: tuple[str, ...]) -> StatsLayout:
        """The layout of ``stats_class``'s row from ``result_class``'s statistics and ``engine_names``.

        Raises:
            TypeError: a field of ``stats_class`` that neither source provides, or a name both provide.
        """
        provided = result_statistics(result_class)
        both = sorted(set(provided) & set(engine_names))
        if both:
            raise TypeError(
                f"the statistics {both} come both from the objective's result ({result_class.__name__}) and "
                f"from the engine; expected one source for each, got two"
            )
        names = stats_class.names()
        missing = [n for n in names if n not in provided and n not in engine_names]
        if missing:
            raise TypeError(
                f"{stats_class.__name__} has statistics that nobody provides: {missing}; expected each of its "
                f"fields among the statistics of the objective's result ({result_class.__name__}: "
                f"{', '.join(provided)}) or of the engine ({', '.join(engine_names)}), got {missing}"
            )
        result_paths = {n: provided[n] for n in names if n in provided}
        return cls(names, result_paths)

    def from_result(self, result, part: str | None = None) -> dict[str, torch.Tensor]:
        """name → the result's tensor (no copy) for every statistic read from the objective's result.

        With ``part``, ``result`` is only the value of the result's field ``part`` (one of the steps an
        engine computes separately, e.g. SFD's ψ and θ steps), and only the statistics under it are read.
        """
        out = {}
        for name, path in self.result_paths.items():
            if part is not None:
                if path[0] != part:
                    continue
                path = path[1:]
            value = result
            for attr in path:
                value = getattr(value, attr)
            out[name] = value
        return out

    def row(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The (..., k) statistics tensor: ``values[name]`` (each (...)) stacked along a last axis in
        ``names`` order, in the tensors' promoted dtype. ``values`` must hold every name."""
        return torch.stack([values[name] for name in self.names], dim=-1)


Executor = Literal["auto", "vmap", "loop", "graph"]
EXECUTORS = ("auto", "vmap", "loop", "graph")


def resolve_executor(executor: str, device: torch.device) -> str:
    """ "auto" ↦ "vmap" on CUDA and "loop" elsewhere (on the CPU a loop is faster, DESIGN §11).

    "graph" (the vmapped update captured once as a CUDA graph and replayed) needs a CUDA device.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if executor == "auto":
        return "vmap" if device.type == "cuda" else "loop"
    if executor == "graph" and device.type != "cuda":
        raise ValueError(
            f"executor='graph' needs a CUDA device (it captures the update as a torch.cuda.CUDAGraph), "
            f"got device {str(device)!r}; use executor='loop' (the CPU default) or 'vmap'"
        )
    return executor


@dataclass(frozen=True)
class RunStats:
    """The statistics of one update (or evaluation) of several runs, copied to the host at once.

    ``values[i]`` is the i-th run's row: the fields of ``stats_class`` in their order.
    """

    values: np.ndarray
    """(n, k) float64: one row per run."""
    stats_class: type
    """The frozen dataclass of one row (:class:`StepStats`, :class:`HybridStepStats`)."""

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> HostStats:
        """Run i's row as a ``stats_class`` instance."""
        return self.stats_class(*self.values[i].tolist())

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def finite(self) -> np.ndarray:
        """(n,) bool: every statistic of the run is finite (False marks a diverged run)."""
        return np.all(np.isfinite(self.values), axis=1)

    def column(self, name: str) -> np.ndarray:
        """(n,) the statistic ``name`` of every run."""
        return self.values[:, self.stats_class.names().index(name)]


GRAPH_WARMUP_STEPS = 2
"""Eager steps on a side stream before a capture (their changes to the runs are undone)."""
MAX_GRAPHS = 4
"""Captured updates kept per engine (one per combination of forget sets and probe measurement;
least recently used dropped)."""


@dataclass
class CapturedUpdate:
    """One update of the N runs captured as a CUDA graph, with its static input and output buffers."""

    graph: torch.cuda.CUDAGraph
    lam: torch.Tensor
    """(N,) float64 λ_i, copied in before each replay."""
    scale: torch.Tensor
    """(N,) float64 forget strengths, copied in before each replay."""
    stats: torch.Tensor
    """(N, k) the statistics the replay writes."""
    inputs: tuple[torch.Tensor, ...]
    """The tensors the capture read by address (held so that they stay alive)."""


def math_attention():
    """Under ``vmap`` the UNet's attention must use the math SDPA backend (DESIGN §11)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


@torch.no_grad()
def adamw_(
    params: dict[str, torch.Tensor],
    exp_avg: dict[str, torch.Tensor],
    exp_avg_sq: dict[str, torch.Tensor],
    steps: torch.Tensor,
    grads,
    run: int | None,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float = 0.0,
    eps: float = 1e-8,
) -> None:
    """One AdamW step (``torch.optim.AdamW``'s arithmetic; Adam when ``weight_decay`` = 0) on stacked runs.

    θ ← θ·(1 − lr·wd); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
    θ ← θ − lr/(1 − β₁^k) · m/(√v/√(1 − β₂^k) + eps), with k the run's own step count.

    Args:
        params, exp_avg, exp_avg_sq: name → (N, ...) stacks, updated in place.
        steps: (N,) float64 step counts k, incremented in place.
        grads: one (N, ...) gradient per parameter (``run`` None) or one run's (...) gradients.
        run: the run to step, or None for every run at once.
    """
    beta1, beta2 = betas
    sl = slice(None) if run is None else run
    steps[sl] += 1
    step = steps[sl]
    bias_correction1 = 1 - torch.pow(beta1, step)
    bias_correction2 = 1 - torch.pow(beta2, step)
    step_size_neg = -torch.div(torch.full_like(step, lr), bias_correction1)
    bias_correction2_sqrt = bias_correction2.sqrt()
    for (name, p), g in zip(params.items(), grads):
        p, m, v = p[sl], exp_avg[name][sl], exp_avg_sq[name][sl]
        shape = (-1,) + (1,) * (p.ndim - 1) if run is None else ()
        if weight_decay:
            p.mul_(1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / bias_correction2_sqrt.to(p.dtype).view(shape)).add_(eps)
        p.add_(m.mul(step_size_neg.to(p.dtype).view(shape)).div_(denom))


class RunEngine:
    """What every N-run engine shares: the run axis, run selection, per-run arguments, the one host
    copy of the statistics, seeding (:meth:`seed`), and :meth:`model`.

    A subclass calls :meth:`_init_runs` and sets ``params`` (name → (N, ...) the runs' model
    weights θ_i), ``_module`` (the architecture whose parameters ``params`` replaces),
    ``generators`` (one per run), ``probe_size``, ``_probe_valid`` ((N,) bool) and
    :meth:`_redraw_probe` (draw run i's fixed probe from its generator).
    """

    stats_class: type[HostStats]
    """The statistics of one run's step, in the order of the engine's stats tensor."""
    params: dict[str, torch.Tensor]
    _module: torch.nn.Module

    def _init_runs(self, num_runs: int, executor: str, device: str | torch.device) -> int:
        if not isinstance(num_runs, (int, np.integer)) or isinstance(num_runs, bool) or num_runs < 1:
            raise ValueError(f"num_runs must be an int >= 1, got {num_runs!r}")
        self.device = torch.device(device)
        self.executor = resolve_executor(executor, self.device)
        self.num_runs = int(num_runs)
        self._models: dict[int, torch.nn.Module] = {}
        return self.num_runs

    def _runs(self, runs) -> list[int]:
        """``runs`` (None: all; a bool mask (N,); or indices) as a sorted list of run indices."""
        if runs is None:
            return list(range(self.num_runs))
        arr = np.asarray(runs)
        if arr.dtype == bool:
            if arr.shape != (self.num_runs,):
                raise ValueError(f"run mask: expected shape ({self.num_runs},), got {arr.shape}")
            return [int(i) for i in np.flatnonzero(arr)]
        idx = [int(i) for i in np.atleast_1d(arr)]
        bad = [i for i in idx if not 0 <= i < self.num_runs]
        if bad:
            raise ValueError(f"runs must be indices in [0, {self.num_runs}), got {bad}")
        return sorted(set(idx))

    def seed(self, seeds, runs=None) -> None:
        """Seed each run's data stream and redraw its fixed probe from it (:meth:`_redraw_probe`).

        Args:
            seeds: one int per selected run (an int is allowed when one run is selected).
            runs: None (all runs), a bool mask (N,) or indices.
        """
        idx = self._runs(runs)
        seeds = [int(s) for s in np.atleast_1d(np.asarray(seeds, dtype=object))]
        if len(seeds) != len(idx):
            raise ValueError(f"seed: expected {len(idx)} seed(s), one per run, got {len(seeds)}")
        for i, s in zip(idx, seeds):
            self.generators[i].manual_seed(s)
            if self.probe_size:
                self._redraw_probe(i)
                self._probe_valid[i] = True

    def _per_run(self, value, name: str, n: int) -> np.ndarray:
        """A scalar or (n,) array of ``name`` as (n,) float64."""
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            return np.full(n, float(arr))
        if arr.shape != (n,):
            raise ValueError(f"{name}: expected a scalar or one value per run, shape ({n},), got {arr.shape}")
        return arr

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        """A host array (a per-run λ, strength or weights) on the engine's device, without a host sync.

        On a GPU the array goes through pinned memory and an asynchronous copy, ordered on the stream
        before the kernels that read it (a copy from pageable memory would synchronise the host); on
        the CPU it is the array itself (no copy).
        """
        t = torch.as_tensor(arr)
        if self.device.type == "cpu":
            return t
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _to_host(self, stats: torch.Tensor) -> RunStats:
        return RunStats(stats.to("cpu", torch.float64).numpy(), self.stats_class)  # the one host copy

    def model(self, run: int = 0) -> torch.nn.Module:
        """A UNet whose parameters are run ``run``'s weights (aliases, not copies: it follows the run).

        For sampling, evaluation and saving; do not train it (the engine owns the weights).
        """
        if not 0 <= run < self.num_runs:
            raise ValueError(f"run must be in [0, {self.num_runs}), got {run}")
        if run not in self._models:
            module = copy.deepcopy(self._module)
            for name, p in self.params.items():
                owner, _, leaf = name.rpartition(".")
                module.get_submodule(owner).register_parameter(leaf, torch.nn.Parameter(p[run], requires_grad=False))
            self._models[run] = module
        return self._models[run]
