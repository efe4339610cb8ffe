"""The SISS engine: N independent runs of the SISS objective (DESIGN §2), and its statistics.

``update(λ)`` draws a batch per run, evaluates SISS, clips, steps AdamW and (on request) measures the
fixed denoising probe, then returns every run's :class:`StepStats` after one device→host copy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.func import vmap

from ..data.scenarios import ImageSet
from ..models.checkpoint import load_tensors, save_tensors_atomic
from ..models.unet import noise_schedule
from ..objectives.common import call, global_norm
from ..objectives.siss import OBJECTIVES, ObjectiveResult, SISSBatch, SISSConfig, draw_batch
from .run_axis import (
    GRAPH_WARMUP_STEPS,
    MAX_GRAPHS,
    CapturedUpdate,
    Executor,
    HostStats,
    RunEngine,
    RunStats,
    StatsLayout,
    adamw_,
    math_attention,
)

__all__ = ["PROBE_STATS", "STAT_NAMES", "StepStats", "UnlearningEngine"]


@dataclass(frozen=True)
class StepStats(HostStats):
    """Statistics of one update, as host floats (one documented field per statistic)."""

    loss_r: float
    """ℓ_x: retain loss estimate of the step's batch."""
    loss_f: float
    """ℓ_a: forget loss estimate."""
    grad_r_norm: float
    """‖g_x‖."""
    grad_f_norm: float
    """‖g_a‖."""
    forget_share: float
    """Share of the batch drawn from the forget set."""
    dloss_r_dlam: float
    """∂ℓ_x/∂λ, samples held fixed."""
    dloss_f_dlam: float
    """∂ℓ_a/∂λ."""
    dloss_dlam: float
    """∂L/∂λ of the combined loss c_x·ℓ_x − c_a·ℓ_a (surgery coefficients held fixed)."""
    update_norm: float
    """‖g‖ of the combined direction before clipping."""
    probe_r: float
    """Retain denoising loss on the fixed probe, after the step."""
    probe_f: float
    """Forget denoising loss on the fixed probe, after the step."""
    # how noisy the step's estimates are (docs/variance.md; 0 for objectives without importance weights)
    var_loss_r: float
    """Var̂(ℓ_x): sample variance of w_x,i·e_x,i over the batch, divided by B."""
    var_loss_f: float
    """Var̂(ℓ_a)."""
    var_loss: float
    """Var̂(L) of the combined loss c_x·ℓ_x − c_a·ℓ_a (surgery coefficients held fixed)."""
    dvar_loss_r_dlam: float
    """∂Var̂(ℓ_x)/∂λ, samples held fixed."""
    dvar_loss_f_dlam: float
    """∂Var̂(ℓ_a)/∂λ, samples held fixed."""
    dvar_loss_dlam: float
    """∂Var̂(L)/∂λ, samples held fixed."""
    rel_var_loss_r: float
    """Var̂(ℓ_x)/ℓ_x², in [0, 1]."""
    rel_var_loss_f: float
    """Var̂(ℓ_a)/ℓ_a², in [0, 1]."""
    drel_var_loss_r_dlam: float
    """∂(Var̂(ℓ_x)/ℓ_x²)/∂λ, samples held fixed."""
    drel_var_loss_f_dlam: float
    """∂(Var̂(ℓ_a)/ℓ_a²)/∂λ, samples held fixed."""
    dvar_loss_r_dlam_resampled: float
    """Unbiased estimate of dVar_λ(ℓ_x)/dλ, the batch redrawn from q_λ."""
    dvar_loss_f_dlam_resampled: float
    """Unbiased estimate of dVar_λ(ℓ_a)/dλ."""
    dvar_loss_dlam_resampled: float
    """Unbiased estimate of dVar_λ(L)/dλ."""
    drel_var_loss_r_dlam_resampled: float
    """Plug-in estimate of d(Var_λ(ℓ_x)/ℓ_x²)/dλ, the batch redrawn."""
    drel_var_loss_f_dlam_resampled: float
    """Plug-in estimate of d(Var_λ(ℓ_a)/ℓ_a²)/dλ."""


STAT_NAMES = StepStats.names()
"""The field names of :class:`StepStats`, in the order of the engine's stats tensor."""

PROBE_STATS = ("probe_r", "probe_f")
"""The names of the probe's two losses (retain, forget), in the order the probe computes them."""


class UnlearningEngine(RunEngine):
    """N independent unlearning runs of one objective: stacked weights, AdamW moments, data streams, probes.

    Each run i has its own parameters θ_i and AdamW moments (stacked along a leading run
    dimension, ``torch.func.stack_module_state`` style), its own AdamW step count (so one run can
    be restored while the others go on), its own ``torch.Generator`` (batches and probe) and its
    own fixed probe; the frozen pretrained weights are kept once. One :meth:`update` advances
    every run by one step:

    1. draw each run's batch (x, a, t, ε, u) from its own generator;
    2. evaluate the objective for each run (losses, g_x, g_a, surgery) at its λ_i;
    3. clip each run's direction to ``config.clip_norm`` by its own global norm;
    4. take each run's AdamW step (bias corrections from its own step count);
    5. measure each run's fixed probe with its new weights (unless ``update(measure_probe=False)``:
       the probe statistics are then NaN);
    6. copy one (N, k) statistics tensor to the host.

    Every statistic of the row is read by its name (:class:`~.run_axis.StatsLayout`): from the
    objective's result (``result_class``), or the engine's own ``update_norm`` and probe losses
    (:data:`PROBE_STATS`); a ``stats_class`` field that none of them provides fails at construction.

    Steps 2–3 and 5 are one per-run function, mapped over the runs by the executor: "loop" (a
    Python loop over the runs; the CPU default, faster there), "vmap" (``torch.func.vmap`` over
    the stacked runs, math attention; the CUDA default) or "graph" (CUDA only: steps 1–5 of the
    "vmap" executor captured once as a ``torch.cuda.CUDAGraph`` per set of forget sets and
    replayed, λ_i and the strengths copied into its static input buffers, each run's generator
    registered with the graph). Step 4 is elementwise over the stacks. All give the same numbers
    up to float rounding, and the loop with N runs gives run i exactly the numbers of a one-run
    engine seeded like run i. Steps 1–5 have no host synchronisation and no Python branch on
    tensor values (the inputs go to the device asynchronously through pinned memory); step 6 is
    the one device→host copy. ``num_runs=1`` is the single env's engine.

    Args:
        unet: the pretrained ε-prediction UNet (moved to ``device``; its weights become the frozen
            pretrained copy, restored by :meth:`restore` and used as the hybrid's teacher).
        retain: retain images and labels (the data SISS keeps).
        forget: forget images and labels (the data SISS removes); every run starts with it.
        config: objective and optimiser settings.
        device: where everything lives.
        probe_size: images per probe half (retain, forget); 0 disables the probe.
        dataset_size: n of "superfactor" surgery (default |retain| + |forget|).
        scheduler_config: the DDPM schedule (None: the default one).
        num_runs: N, the number of independent runs (>= 1).
        executor: "auto", "vmap", "loop" or "graph" (see above; "graph" needs ``device`` CUDA).
    """

    stats_class: type[HostStats] = StepStats
    """The statistics of one run's step, in the order of the engine's stats tensor."""
    result_class: type = ObjectiveResult
    """The type of :meth:`_objective`'s result, whose statistics the row reads by name."""

    def __init__(
        self,
        unet: torch.nn.Module,
        retain: ImageSet,
        forget: ImageSet,
        config: SISSConfig = SISSConfig(),
        device: str | torch.device = "cpu",
        probe_size: int = 8,
        dataset_size: int | None = None,
        scheduler_config: dict | None = None,
        num_runs: int = 1,
        executor: Executor = "auto",
    ):
        if len(retain) == 0 or len(forget) == 0:
            raise ValueError(
                f"UnlearningEngine needs non-empty retain and forget sets, got {len(retain)} and {len(forget)}"
            )
        if probe_size < 0:
            raise ValueError(f"probe_size must be >= 0, got {probe_size}")
        self._layout = StatsLayout.build(self.stats_class, self.result_class, ("update_norm", *PROBE_STATS))
        """Where each statistic of the row comes from, by name."""
        N = self._init_runs(num_runs, executor, device)
        self.config = config
        self._module = unet.to(self.device).train().requires_grad_(False)
        # the frozen pretrained weights, once (the module's own storage): restore's source, the hybrid's teacher
        self._pretrained = {n: p.detach() for n, p in self._module.named_parameters()}
        self.params = {n: p.unsqueeze(0).repeat(N, *([1] * p.ndim)) for n, p in self._pretrained.items()}
        """name → (N, ...) the runs' parameters θ_i (updated in place, never reallocated)."""
        self._exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self._exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self._adam_steps = torch.zeros(N, dtype=torch.float64, device=self.device)
        # run i's parameters as autograd leaves that alias the stack (the loop executor differentiates them)
        self._leaves = [{n: p[i].detach().requires_grad_() for n, p in self.params.items()} for i in range(N)]
        sched = noise_schedule(scheduler_config)
        self.gamma = sched.gamma.to(self.device, torch.float32)
        self.sigma = sched.sigma.to(self.device, torch.float32)
        self.num_timesteps = sched.num_timesteps
        self.retain_images = retain.images.to(self.device)
        self.retain_labels = retain.labels.to(self.device)
        self._forget: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.set_forget(forget)
        self.dataset_size = dataset_size if dataset_size is not None else len(retain) + len(forget)
        self.probe_size = probe_size
        self.objective = OBJECTIVES[config.objective]
        self.generators = [torch.Generator(self.device).manual_seed(0) for _ in range(N)]
        self.step_count = np.zeros(N, dtype=np.int64)
        """(N,) updates since each run's last restore."""
        p2 = 2 * probe_size
        shape = (N, p2, *self.retain_images.shape[1:])
        self._probe = (
            torch.zeros(shape, device=self.device, dtype=self.retain_images.dtype),
            torch.zeros((N, p2), device=self.device, dtype=torch.long),
            torch.zeros((N, p2), device=self.device, dtype=self.retain_labels.dtype),
            torch.zeros(shape, device=self.device, dtype=self.retain_images.dtype),
        )
        self._probe_valid = torch.zeros(N, dtype=torch.bool, device=self.device)
        self._graphs: dict[tuple, CapturedUpdate] = {}
        """The graph executor's captured updates, keyed by the tensors they read (:meth:`_graph_inputs`)."""

    # -- runs and data ------------------------------------------------------------------------

    def set_forget(self, forget: ImageSet, runs=None) -> None:
        """Replace the forget set of ``runs`` (None: all), e.g. with another instance's subset."""
        if len(forget) == 0:
            raise ValueError("the forget set must not be empty")
        pair = (forget.images.to(self.device), forget.labels.to(self.device))
        if not self._forget:
            self._forget = [pair] * self.num_runs
            return
        for i in self._runs(runs):
            self._forget[i] = pair

    def forget_set(self, run: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of run ``run``'s forget set, on the device."""
        return self._forget[run]

    def _redraw_probe(self, i: int) -> None:
        """Draw run i's fixed probe (images, t, ε) from its generator, in place."""
        for buf, value in zip(self._probe, self._draw_probe(i)):
            buf[i].copy_(value)

    def _draw_probe(self, i: int) -> tuple[torch.Tensor, ...]:
        p, g = self.probe_size, self.generators[i]
        forget_images, forget_labels = self._forget[i]
        ir = torch.randint(len(self.retain_images), (p,), generator=g, device=self.device)
        if_ = torch.randint(len(forget_images), (p,), generator=g, device=self.device)
        x0 = torch.cat([self.retain_images[ir], forget_images[if_]])
        y = torch.cat([self.retain_labels[ir], forget_labels[if_]])
        t = torch.randint(self.num_timesteps, (2 * p,), generator=g, device=self.device)
        eps = torch.randn(x0.shape, generator=g, device=self.device)
        x_t = self.gamma[t].view(-1, 1, 1, 1) * x0 + self.sigma[t].view(-1, 1, 1, 1) * eps
        return x_t, t, y, eps

    def _draw(self, i: int) -> tuple:
        """Run i's batch for one step, as the fields of :class:`SISSBatch`."""
        forget_images, forget_labels = self._forget[i]
        batch = draw_batch(
            self.retain_images,
            self.retain_labels,
            forget_images,
            forget_labels,
            self.config.batch_size,
            self.num_timesteps,
            self.generators[i],
            with_noise_target=self.config.objective == "erasediff",
        )
        return tuple(getattr(batch, f.name) for f in fields(SISSBatch))

    def _forget_size(self, idx: list[int]) -> int | None:
        """k of "superfactor" surgery, shared by the mapped runs."""
        sizes = {len(self._forget[i][0]) for i in idx}
        if len(sizes) == 1:
            return sizes.pop()
        if self.config.surgery == "superfactor":
            raise ValueError(
                "the vmap executor needs one forget-set size k for all runs under 'superfactor' surgery, "
                f"got {sorted(sizes)}; use executor='loop' or equal forget subsets"
            )
        return None  # not used by the other surgeries

    # -- the per-run step function -------------------------------------------------------------

    def _objective(self, params: dict, batch: SISSBatch, lam, forget_scale, forget_size):
        """The objective's result for one run (gradients, statistics; no step)."""
        return self.objective(
            self._module, params, batch, lam, self.gamma, self.sigma, self.config,
            forget_scale, self.dataset_size, forget_size,
        )  # fmt: skip

    def _run_step(self, params, batch_fields, lam, forget_scale, forget_size, clip: bool):
        """One run: objective (step 2) and per-run clipping (step 3).

        Returns:
            (clipped g, or () without ``clip``; name → 0-d tensor of every statistic but the probe's:
            the objective's result's, by name, and ``update_norm``).
        """
        res = self._objective(params, SISSBatch(*batch_fields), lam, forget_scale, forget_size)
        norm = global_norm(res.grads)
        stats = {**self._layout.from_result(res), "update_norm": norm}
        if not clip:
            return (), stats
        coef = torch.clamp(self.config.clip_norm / (norm + 1e-6), max=1.0)  # as clip_grad_norm_
        return tuple(g * coef for g in res.grads), stats

    def _probe_losses(self, params, x_t, t, y, eps, valid) -> torch.Tensor:
        """(2,) retain and forget denoising losses mean Σ(ε_θ(x_t) − ε)² on the run's fixed probe (NaN if none)."""
        if not self.probe_size:
            return torch.full((2,), float("nan"), device=self.device, dtype=eps.dtype)
        with torch.no_grad():
            out = call(self._module, params, (x_t, t), {"class_labels": y}).sample
            err = (out - eps).pow(2).flatten(1).sum(1).view(2, -1).mean(1)
        return torch.where(valid, err, float("nan"))

    def _row(self, stats: dict[str, torch.Tensor], probe: torch.Tensor) -> torch.Tensor:
        """The (..., k) statistics tensor in ``stats_class`` order, every column by name: ``stats``
        (:meth:`_run_step`'s, each (...)) and the (..., 2) probe losses as :data:`PROBE_STATS`."""
        return self._layout.row({**stats, **dict(zip(PROBE_STATS, probe.unbind(-1), strict=True))})

    def _adamw_(self, run: int | None, grads) -> None:
        """Step 4: AdamW on run ``run``'s views, or on all stacks (None)."""
        cfg = self.config
        adamw_(
            self.params, self._exp_avg, self._exp_avg_sq, self._adam_steps, grads, run,
            lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
        )  # fmt: skip

    # -- update / evaluate ----------------------------------------------------------------------

    def update(self, lam, forget_scale=1.0, measure_probe: bool = True) -> RunStats:
        """One unlearning step of every run (steps 1–6 of the class docstring).

        Args:
            lam: λ_i per run, a scalar (all runs) or (N,) array, in [0, 1].
            forget_scale: the forget-strength multiplier per run, scalar or (N,).
            measure_probe: step 5; False skips the probe's forward pass (``probe_r``, ``probe_f`` NaN)
                where nobody reads it at this step.

        Returns:
            The N runs' statistics (one host copy).
        """
        N = self.num_runs
        lam = self._per_run(lam, "lam", N)
        scale = self._per_run(forget_scale, "forget_scale", N)
        measure_probe = bool(measure_probe)
        if self.executor == "graph":
            stats = self._graph_update(lam, scale, measure_probe)
        else:
            stats = self._step(self._to_device(lam), self._to_device(scale), self.executor, measure_probe)
        self.step_count += 1
        return self._to_host(stats)

    def _step(self, lam: torch.Tensor, scale: torch.Tensor, executor: str, measure_probe: bool = True) -> torch.Tensor:
        """Steps 1–5 of every run on the device: the (N, k) statistics tensor (no host copy, no sync).

        Args:
            lam, scale: (N,) float64 device tensors λ_i and forget strengths.
            executor: "loop" or "vmap" (the graph executor captures the "vmap" body).
            measure_probe: whether step 5 runs (else the probe statistics are NaN).
        """
        idx = list(range(self.num_runs))
        batches = [self._draw(i) for i in idx]
        if executor == "loop":
            rows = []
            for i in idx:
                grads, stats = self._run_step(
                    self._leaves[i], batches[i], lam[i], scale[i], len(self._forget[i][0]), clip=True
                )
                self._adamw_(i, grads)
                if measure_probe:
                    probe = self._probe_losses(self._leaves[i], *(b[i] for b in self._probe), self._probe_valid[i])
                else:
                    probe = self._unmeasured_probe(stats["update_norm"])
                rows.append(self._row(stats, probe))
            return torch.stack(rows)
        with math_attention():
            grads, stats = self._vmap_step(self.params, batches, lam, scale, self._forget_size(idx), clip=True)
            self._adamw_(None, grads)
            if measure_probe:
                probe = vmap(self._probe_losses)(self.params, *self._probe, self._probe_valid)
            else:
                probe = self._unmeasured_probe(stats["update_norm"])
        return self._row(stats, probe)

    @staticmethod
    def _unmeasured_probe(like: torch.Tensor) -> torch.Tensor:
        """The probe statistics of an update that skips step 5: NaN, shaped (*like.shape, 2) like
        :meth:`_probe_losses`'s, in ``like``'s dtype (a statistic of the same runs)."""
        return torch.full((*like.shape, 2), float("nan"), device=like.device, dtype=like.dtype)

    # -- the graph executor ---------------------------------------------------------------------

    def _graph_inputs(self) -> tuple[torch.Tensor, ...]:
        """The tensors a captured update reads by address beside the engine's own fixed buffers
        (the runs' forget sets): a new one (``set_forget``) needs a new capture."""
        return tuple(t for pair in self._forget for t in pair)

    def _step_state(self) -> list[torch.Tensor]:
        """The device tensors an update changes: θ_i, the AdamW moments and step counts."""
        return [*self.params.values(), *self._exp_avg.values(), *self._exp_avg_sq.values(), self._adam_steps]

    @torch.no_grad()
    def _save_step_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A copy of what an update changes (:meth:`_step_state` and the generators' states)."""
        return [t.clone() for t in self._step_state()], [g.get_state() for g in self.generators]

    @torch.no_grad()
    def _load_step_state(self, saved: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
        """Put a :meth:`_save_step_state` back, in place (the captured graph keeps the addresses)."""
        tensors, rng = saved
        for t, value in zip(self._step_state(), tensors, strict=True):
            t.copy_(value)
        for g, state in zip(self.generators, rng, strict=True):
            g.set_state(state)

    def _capture(self, inputs: tuple[torch.Tensor, ...], measure_probe: bool = True) -> CapturedUpdate:
        """Capture :meth:`_step` ("vmap") once as a CUDA graph (the recipe of DESIGN §11).

        1. static inputs: (N,) float64 λ and forget-strength buffers, made before the capture;
        2. warm up on a side stream (lazy initialisation, workspaces), then put back the weights,
           moments, step counts and generator states the warm-up changed;
        3. register every run's generator with the graph, so that each replay draws from the
           generator's current seed and offset and advances it as an eager step would;
        4. capture one step; the statistics tensor it writes is the static output.
        """
        N = self.num_runs
        lam = torch.full((N,), 0.5, dtype=torch.float64, device=self.device)
        scale = torch.ones(N, dtype=torch.float64, device=self.device)
        saved = self._save_step_state()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):
                self._step(lam, scale, "vmap", measure_probe)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._load_step_state(saved)
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        with torch.cuda.graph(graph):
            stats = self._step(lam, scale, "vmap", measure_probe)
        self._load_step_state(saved)  # nothing ran during the capture; the generators start where they were
        return CapturedUpdate(graph, lam, scale, stats, inputs)

    def _graph_update(self, lam: np.ndarray, scale: np.ndarray, measure_probe: bool = True) -> torch.Tensor:
        """Steps 1–5 as one replay of the graph captured for the current forget sets and
        ``measure_probe`` (captured on first use)."""
        inputs = self._graph_inputs()
        key = (measure_probe, *(id(t) for t in inputs))  # the cached entry holds the tensors: no id is reused
        captured = self._graphs.pop(key, None)
        if captured is None:
            captured = self._capture(inputs, measure_probe)
        self._graphs[key] = captured  # most recently used last
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs)))
        captured.lam.copy_(self._to_device(lam))
        captured.scale.copy_(self._to_device(scale))
        captured.graph.replay()
        return captured.stats

    def _vmap_step(self, params, batches: list[tuple], lam, scale, forget_size, clip: bool):
        """:meth:`_run_step` mapped by ``vmap`` over the stacked runs (batches stacked here)."""
        stacked = tuple(None if parts[0] is None else torch.stack(parts) for parts in zip(*batches))
        batch_dims = tuple(None if part is None else 0 for part in stacked)
        return vmap(
            lambda p, b, lm, s: self._run_step(p, b, lm, s, forget_size, clip=clip), in_dims=(0, batch_dims, 0, 0)
        )(params, stacked, lam, scale)

    def evaluate(self, lam=0.5, forget_scale=1.0, runs=None) -> RunStats:
        """The statistics an update at λ would see for ``runs`` (None: all), without changing any model.

        Draws each selected run's batch from its generator (as an update would); other runs are
        untouched. Returns one row per selected run, in run order.
        """
        idx = self._runs(runs)
        n = len(idx)
        lam = self._to_device(self._per_run(lam, "lam", n))
        scale = self._to_device(self._per_run(forget_scale, "forget_scale", n))
        batches = [self._draw(i) for i in idx]
        if self.executor == "loop":
            rows = []
            for j, i in enumerate(idx):
                _, stats = self._run_step(self._leaves[i], batches[j], lam[j], scale[j], len(self._forget[i][0]), False)
                probe = self._probe_losses(self._leaves[i], *(b[i] for b in self._probe), self._probe_valid[i])
                rows.append(self._row(stats, probe))
            values = torch.stack(rows)
        else:
            sel = torch.as_tensor(idx, device=self.device)
            params = {name: p[sel] for name, p in self.params.items()}
            with math_attention():
                _, stats = self._vmap_step(params, batches, lam, scale, self._forget_size(idx), clip=False)
                probe = vmap(self._probe_losses)(params, *(b[sel] for b in self._probe), self._probe_valid[sel])
            values = self._row(stats, probe)
        return self._to_host(values)

    # -- restore, save -------------------------------------------------------------------------

    @torch.no_grad()
    def restore(self, runs=None) -> None:
        """Pretrained weights and a fresh AdamW state for ``runs`` (None: all; a bool mask or indices).

        In place on the device (no allocation, no disk); the other runs are untouched.
        """
        for i in self._runs(runs):
            for name, p in self.params.items():
                p[i].copy_(self._pretrained[name])
                self._exp_avg[name][i].zero_()
                self._exp_avg_sq[name][i].zero_()
            self._adam_steps[i] = 0
            self.step_count[i] = 0

    def state_dict(self) -> dict[str, torch.Tensor | list | dict]:
        """Every run: parameters, AdamW moments and steps, generator states, probes, step counts."""
        tensors: dict[str, torch.Tensor] = {}
        for name, p in self.params.items():
            tensors[f"param.{name}"] = p
            tensors[f"exp_avg.{name}"] = self._exp_avg[name]
            tensors[f"exp_avg_sq.{name}"] = self._exp_avg_sq[name]
        tensors["adam_steps"] = self._adam_steps
        for i, g in enumerate(self.generators):
            tensors[f"rng.{i}"] = g.get_state()
        for key, buf in zip(("x_t", "t", "y", "eps"), self._probe):
            tensors[f"probe.{key}"] = buf
        tensors["probe.valid"] = self._probe_valid
        return {"tensors": tensors, "step": self.step_count.tolist(), "config": asdict(self.config)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Put a :meth:`state_dict` of an engine with the same model and ``num_runs`` back, in place."""
        tensors = state["tensors"]
        if len(state["step"]) != self.num_runs:
            raise ValueError(f"state of {len(state['step'])} run(s), this engine has {self.num_runs}")
        for name, p in self.params.items():
            p.copy_(tensors[f"param.{name}"])
            self._exp_avg[name].copy_(tensors[f"exp_avg.{name}"])
            self._exp_avg_sq[name].copy_(tensors[f"exp_avg_sq.{name}"])
        self._adam_steps.copy_(tensors["adam_steps"])
        for i, g in enumerate(self.generators):
            g.set_state(tensors[f"rng.{i}"].to(torch.uint8).cpu())
        for key, buf in zip(("x_t", "t", "y", "eps"), self._probe):
            buf.copy_(tensors[f"probe.{key}"])
        self._probe_valid.copy_(tensors["probe.valid"])
        self.step_count[:] = state["step"]

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to one safetensors file, atomically."""
        state = self.state_dict()
        tensors = {k: v.contiguous() for k, v in state["tensors"].items()}
        save_tensors_atomic(
            tensors, path, metadata={"step": json.dumps(state["step"]), "config": json.dumps(state["config"])}
        )

    def load(self, path: str | Path) -> None:
        """Load what :meth:`save` wrote."""
        tensors, meta = load_tensors(path, device=self.device)
        self.load_state_dict({"tensors": tensors, "step": json.loads(meta["step"])})
