"""The SFD engine: N runs of Score Forgetting Distillation over one frozen teacher.

``update(λ, target_weights)`` performs one SFD iteration of every run (one ψ step, then one θ step,
DESIGN §8) and returns the runs' statistics after exactly one device→host copy. ``restore(runs)``
puts the pretrained weights back into ψ, θ and the EMA of θ and zeroes both Adam states, in place
on the device, for some runs or all. The probe of a run is a fixed set of generator inputs z
(drawn at ``seed``) per class, classified after each update: the env's reward reads how often the
forget class is still drawn and how well the others are. N = 1 is the single env's engine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.func import vmap

from ..models.unet import noise_schedule
from ..objectives.common import global_norm
from ..objectives.sfd import (
    FakeScoreResult,
    SFDBatch,
    SFDConfig,
    SFDResult,
    draw_sfd_batch,
    fake_score_loss,
    fake_score_step,
    generator_sample,
    sfd_generator_step,
)
from .run_axis import Executor, HostStats, RunEngine, RunStats, StatsLayout, adamw_, math_attention

__all__ = ["SFDEngine", "SFDIterationResult", "SFDStepStats", "SFD_PROBE_STATS", "SFD_STAT_NAMES"]


@dataclass(frozen=True)
class SFDStepStats(HostStats):
    """Statistics of one SFD iteration, as host floats (one documented field per statistic)."""

    loss_psi_remain: float
    """ψ's denoising loss on generated remaining-class samples (before its step)."""
    loss_psi_forget: float
    """ψ's denoising loss on generated forget-class samples."""
    loss_remain: float
    """Mean ℓ_remain of the θ step (SiD loss; may be negative)."""
    loss_forget: float
    """Mean ℓ_forget of the θ step."""
    grad_remain_norm: float
    """‖∇_θ mean ℓ_remain‖."""
    grad_forget_norm: float
    """‖∇_θ mean ℓ_forget‖."""
    dloss_dlam: float
    """∂L_θ/∂λ."""
    update_norm: float
    """‖∇_θ L_θ‖ before element-wise clipping."""
    probe_forget_p: float
    """Mean classifier probability p(c_f | G(z, c_f)) over the forget probe, after the step."""
    probe_remain_p: float
    """Mean p(c | G(z, c)) over the remaining-class probe, after the step."""


SFD_STAT_NAMES = SFDStepStats.names()
"""The field names of :class:`SFDStepStats`, in the order of the engine's stats tensor."""

SFD_PROBE_STATS = ("probe_forget_p", "probe_remain_p")
"""The names of the probe's two probabilities (forget class, remaining classes), in the order it computes them."""


@dataclass(frozen=True)
class SFDIterationResult:
    """The objective's results of one SFD iteration, whose statistics the engine's row reads by name.

    The two steps are computed apart (ψ's Adam step lies between them), so the engine reads each
    step's statistics from its own result (:meth:`~.run_axis.StatsLayout.from_result` with ``part``).
    """

    psi: FakeScoreResult
    """The ψ step's (``loss_psi_remain``, ``loss_psi_forget``)."""
    theta: SFDResult
    """The θ step's (``loss_remain``, ``loss_forget``, ``grad_remain_norm``, ``grad_forget_norm``, ``dloss_dlam``)."""


def _stack(tensors: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.unsqueeze(0).repeat(n, *([1] * v.ndim)) for k, v in tensors.items()}


class SFDEngine(RunEngine):
    """N SFD runs: teacher ε_φ (frozen, once), and per run a fake score ε_ψ and a generator ε_θ.

    Each run i has its own generator weights θ_i, fake-score weights ψ_i, EMA of θ_i and two Adam
    states (moments and step count), stacked along a leading run dimension, its own
    ``torch.Generator`` (z, c, t, ε and the probe) and its own fixed probe; the pretrained (EMA)
    weights are kept once, as the frozen teacher and as :meth:`restore`'s source. One
    :meth:`update` advances every run by one SFD iteration:

    1. draw each run's batch (z, c, t, ε of both steps) from its own generator;
    2. ψ step: ∇_ψ L_ψ on the detached generator samples, each entry clipped to ±``clip_value``,
       then Adam (betas (0, 0.999), the run's own step count);
    3. θ step against the teacher and the updated ψ: ∇_θ L_θ at the run's λ_i and mixture π_i,
       clipped element-wise, Adam, then the EMA of θ;
    4. classify each run's fixed probe G_θ(z, c) with its new weights;
    5. copy one (N, k) statistics tensor to the host.

    Every statistic of the row is read by its name (:class:`~.run_axis.StatsLayout`): from the
    objective's results (``result_class``: the ψ step's and the θ step's), or the engine's own
    ``update_norm`` and probe probabilities (:data:`SFD_PROBE_STATS`); a ``stats_class`` field that
    none of them provides fails at construction.

    The per-run gradients of steps 2–3 and the probe of step 4 are mapped over the runs by the
    executor: "loop" (the CPU default; run i is computed exactly as a one-run engine seeded like it
    computes it) or "vmap" (``torch.func.vmap`` over the stacks, math attention; the CUDA default).
    The Adam steps are elementwise over the stacks. The step has no host synchronisation other than
    the copy of step 5 and no Python branch on tensor values.

    Args:
        unet: the pretrained ε-network; its weights become the frozen teacher and every run's start.
        forget_class: c_f, the label whose samples are to be forgotten.
        remain_classes: the other labels (the ψ/θ remain terms draw c uniformly from them).
        config: SFD's constants.
        device: where the networks live.
        classifier: the scenario's classifier for the probe (None: no probe, probe stats NaN).
        probe_size: probe inputs z per class (0: no probe).
        scheduler_config: the DDPM scheduler's config (γ_t, σ_t).
        num_runs: N, the number of independent runs (>= 1).
        executor: "auto", "vmap" or "loop" (no "graph" yet).
    """

    stats_class: type[HostStats] = SFDStepStats
    """The statistics of one run's iteration, in the order of the engine's stats tensor."""
    result_class: type = SFDIterationResult
    """The objective's results of one iteration, whose statistics the row reads by name."""

    def __init__(
        self,
        unet: torch.nn.Module,
        forget_class: int,
        remain_classes: list[int] | tuple[int, ...],
        config: SFDConfig = SFDConfig(),
        device: str | torch.device = "cpu",
        classifier: torch.nn.Module | None = None,
        probe_size: int = 4,
        scheduler_config: dict | None = None,
        num_runs: int = 1,
        executor: Executor = "auto",
    ):
        if forget_class in remain_classes:
            raise ValueError(f"forget_class {forget_class} must not be one of remain_classes {list(remain_classes)}")
        if not remain_classes:
            raise ValueError("remain_classes must not be empty")
        if probe_size < 0:
            raise ValueError(f"probe_size must be >= 0, got {probe_size}")
        self._layout = StatsLayout.build(self.stats_class, self.result_class, ("update_norm", *SFD_PROBE_STATS))
        """Where each statistic of the row comes from, by name."""
        N = self._init_runs(num_runs, executor, device)
        if self.executor == "graph":
            raise ValueError(
                "SFDEngine: executor must be 'auto', 'vmap' or 'loop' (the graph executor is the SISS and "
                "hybrid engines'), got 'graph'; use executor='vmap' on CUDA"
            )
        self.config = config
        self.forget_class = int(forget_class)
        self.remain_classes = torch.tensor(list(remain_classes), dtype=torch.long, device=self.device)
        K = len(remain_classes)
        self._uniform_weights = torch.full((N, K), 1.0 / K, device=self.device)
        sched = noise_schedule(scheduler_config)
        if not config.t_star < sched.num_timesteps or not config.t_max < sched.num_timesteps:
            raise ValueError(f"t_star and t_max must be < the scheduler's {sched.num_timesteps} steps")
        self.gamma = sched.gamma.to(self.device, torch.float32)
        self.sigma = sched.sigma.to(self.device, torch.float32)
        self._module = unet.to(self.device).train().requires_grad_(False)
        self.teacher_params = {n: p.detach() for n, p in self._module.named_parameters()}
        """name → ε_φ's weights: the frozen teacher, once (the module's own storage); restore's source."""
        self.params = _stack(self.teacher_params, N)
        """name → (N, ...) the generators θ_i (updated in place, never reallocated)."""
        self.psi = _stack(self.teacher_params, N)
        """name → (N, ...) the fake scores ψ_i."""
        self.ema = _stack(self.teacher_params, N)
        """name → (N, ...) the EMAs of θ_i."""
        self._adam = {
            net: (
                {n: torch.zeros_like(p) for n, p in self.params.items()},
                {n: torch.zeros_like(p) for n, p in self.params.items()},
                torch.zeros(N, dtype=torch.float64, device=self.device),
            )
            for net in ("theta", "psi")
        }  # (exp_avg, exp_avg_sq, steps) of θ's and ψ's Adam
        # run i's θ and ψ as autograd leaves that alias the stacks (the loop executor differentiates them)
        self._theta_leaves = [{n: p[i].detach().requires_grad_() for n, p in self.params.items()} for i in range(N)]
        self._psi_leaves = [{n: p[i].detach().requires_grad_() for n, p in self.psi.items()} for i in range(N)]
        cfg = self._module.config
        self.sample_shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.probe_size = probe_size if classifier is not None else 0
        self.generators = [torch.Generator(self.device).manual_seed(0) for _ in range(N)]
        self.step_count = np.zeros(N, dtype=np.int64)
        """(N,) iterations since each run's last restore."""
        classes = torch.cat([torch.tensor([self.forget_class], device=self.device), self.remain_classes])
        self._probe_labels = classes.repeat_interleave(self.probe_size)
        """(P·(1 + K),) the probe's classes: P times c_f, then P times each remaining class."""
        self._probe_z = torch.zeros((N, len(self._probe_labels), *self.sample_shape), device=self.device)
        self._probe_valid = torch.zeros(N, dtype=torch.bool, device=self.device)

    # -- data ----------------------------------------------------------------------------------

    def _redraw_probe(self, i: int) -> None:
        """Draw run i's probe inputs z from its generator, in place."""
        shape = self._probe_z.shape[1:]
        self._probe_z[i] = torch.randn(shape, generator=self.generators[i], device=self.device)

    def _draw(self, i: int) -> tuple:
        """Run i's batch for one iteration, as the fields of :class:`SFDBatch`."""
        batch = draw_sfd_batch(
            self.sample_shape, self.remain_classes, self.forget_class, self.config, self.generators[i], self.device
        )
        return tuple(getattr(batch, f.name) for f in fields(SFDBatch))

    def _target_weights(self, target_weights, n: int) -> torch.Tensor:
        """π per run as (n, K) float32: None ↦ uniform; a (K,) array ↦ every run; an (n, K) array as is."""
        K = len(self.remain_classes)
        if target_weights is None:
            return self._uniform_weights[:n]
        w = np.asarray(target_weights, dtype=np.float64)
        if w.shape == (K,):
            w = np.broadcast_to(w, (n, K))
        if w.shape != (n, K):
            raise ValueError(f"target_weights: expected shape ({K},) or ({n}, {K}), one row per run, got {w.shape}")
        bad = [i for i in range(n) if not (np.all(np.isfinite(w[i])) and np.all(w[i] >= 0))]
        if bad:
            raise ValueError(f"target_weights of run {bad[0]} must be finite and >= 0, got {w[bad[0]].tolist()}")
        return self._to_device(w.astype(np.float32))

    # -- the per-run functions -------------------------------------------------------------------

    def _psi_grads(self, theta, psi, batch_fields):
        """Step 2 of one run: (∇_ψ L_ψ, name → 0-d tensor of the ψ step's statistics)."""
        res = fake_score_step(self._module, theta, psi, SFDBatch(*batch_fields), self.gamma, self.sigma, self.config)
        return res.grads, self._layout.from_result(res, part="psi")

    def _psi_losses(self, theta, psi, batch_fields) -> dict[str, torch.Tensor]:
        """name → 0-d tensor of the ψ step's statistics (the parts of L_ψ), without a gradient (evaluation)."""
        batch, cfg = SFDBatch(*batch_fields), self.config
        with torch.no_grad():
            x_r = generator_sample(
                self._module, theta, batch.z_remain, batch.c_remain, self.gamma, self.sigma, cfg.t_star
            )
            x_f = generator_sample(
                self._module, theta, batch.z_forget, batch.c_forget, self.gamma, self.sigma, cfg.t_star
            )
            _, remain, forget = fake_score_loss(
                self._module, psi, x_r, batch.c_remain, x_f, batch.c_forget, batch, self.gamma, self.sigma, cfg
            )
        res = FakeScoreResult((), loss_psi_remain=remain, loss_psi_forget=forget)
        return self._layout.from_result(res, part="psi")

    def _theta_grads(self, theta, psi, batch_fields, lam, weights, override):
        """Step 3 of one run: (∇_θ L_θ, name → 0-d tensor of the θ step's statistics and ``update_norm``,
        ‖∇_θ L_θ‖)."""
        target = override if override is not None else (self.remain_classes, weights)
        res = sfd_generator_step(
            self._module, theta, self.teacher_params, psi, SFDBatch(*batch_fields), lam, self.gamma, self.sigma,
            self.config, target,
        )  # fmt: skip
        return res.grads, {**self._layout.from_result(res, part="theta"), "update_norm": global_norm(res.grads)}

    def _probe_probabilities(self, theta, z, valid) -> torch.Tensor:
        """(2,) mean classifier probability of the conditioning class on G_θ(z_probe, c): forget, remaining."""
        if not self.probe_size:
            return torch.full((2,), float("nan"), device=self.device)
        labels, P = self._probe_labels, self.probe_size
        with torch.no_grad():
            x = generator_sample(self._module, theta, z, labels, self.gamma, self.sigma, self.config.t_star)
            p = torch.softmax(self.classifier(x.clamp(-1, 1)), dim=1).gather(1, labels[:, None])[:, 0]
        return torch.where(valid, torch.stack([p[:P].mean(), p[P:].mean()]), float("nan"))

    def _row(self, psi_stats: dict, theta_stats: dict, probe: torch.Tensor) -> torch.Tensor:
        """The (..., k) statistics tensor in ``stats_class`` order, every column by name: the ψ and θ
        steps' statistics (each (...)) and the (..., 2) probe probabilities as :data:`SFD_PROBE_STATS`."""
        probe_stats = dict(zip(SFD_PROBE_STATS, probe.unbind(-1), strict=True))
        return self._layout.row({**psi_stats, **theta_stats, **probe_stats})

    @torch.no_grad()
    def _step_(self, net: str, run: int | None, grads) -> None:
        """Element-wise clipping to ±clip_value (``clip_grad_value_``), then Adam, of θ or ψ (all runs: None)."""
        cfg = self.config
        params = self.params if net == "theta" else self.psi
        clipped = [g.clamp(-cfg.clip_value, cfg.clip_value) for g in grads]
        adamw_(params, *self._adam[net], clipped, run, lr=cfg.lr, betas=cfg.betas)
        if net == "theta":
            sl = slice(None) if run is None else run
            for name, p in self.params.items():
                self.ema[name][sl].lerp_(p[sl], 1.0 - cfg.ema_decay)

    # -- update / evaluate ----------------------------------------------------------------------

    def _override(self, override_class: int | None, target_weights) -> torch.Tensor | None:
        """c_o per sample of the forget term, or None when the π-mixture is used (weights given win)."""
        if override_class is None or target_weights is not None:
            return None
        return torch.full((self.config.batch_size,), int(override_class), device=self.device, dtype=torch.long)

    def update(self, lam, target_weights=None, override_class: int | None = None) -> RunStats:
        """One SFD iteration of every run (steps 1–5 of the class docstring).

        Args:
            lam: λ_i per run (L_θ = 2(1 − λ)·w_r·ℓ_remain + 2λ·w_f·ℓ_forget), a scalar or (N,), in [0, 1].
            target_weights: π over ``remain_classes`` for the forget term's teacher mixture: None
                (uniform, or ``override_class``), (K,) for every run, or (N, K).
            override_class: c_o of the official SFD, for every run (ignored when weights are given).

        Returns:
            The N runs' statistics (one host copy).
        """
        N = self.num_runs
        lam = self._to_device(self._per_run(lam, "lam", N))
        weights = self._target_weights(target_weights, N)
        override = self._override(override_class, target_weights)
        batches = [self._draw(i) for i in range(N)]
        if self.executor == "loop":
            rows = []
            for i in range(N):
                theta, psi = self._theta_leaves[i], self._psi_leaves[i]
                g_psi, psi_stats = self._psi_grads(theta, psi, batches[i])
                self._step_("psi", i, g_psi)
                psi_fixed = {k: v.detach() for k, v in psi.items()}
                g_theta, theta_stats = self._theta_grads(theta, psi_fixed, batches[i], lam[i], weights[i], override)
                self._step_("theta", i, g_theta)
                probe = self._probe_probabilities(theta, self._probe_z[i], self._probe_valid[i])
                rows.append(self._row(psi_stats, theta_stats, probe))
            stats = torch.stack(rows)
        else:
            stacked = tuple(torch.stack(parts) for parts in zip(*batches))
            with math_attention():
                g_psi, psi_stats = vmap(self._psi_grads)(self.params, self.psi, stacked)
                self._step_("psi", None, g_psi)
                g_theta, theta_stats = vmap(lambda th, ps, b, lm, w: self._theta_grads(th, ps, b, lm, w, override))(
                    self.params, self.psi, stacked, lam, weights
                )
                self._step_("theta", None, g_theta)
                probe = vmap(self._probe_probabilities)(self.params, self._probe_z, self._probe_valid)
            stats = self._row(psi_stats, theta_stats, probe)
        self.step_count += 1
        return self._to_host(stats)

    def evaluate(self, lam=0.5, target_weights=None, override_class: int | None = None, runs=None) -> RunStats:
        """The statistics an iteration at λ would see for ``runs`` (None: all), without changing any network.

        Draws each selected run's batch from its generator (as an update would); other runs are
        untouched. ``lam`` and ``target_weights`` have one entry (row) per selected run, or one for
        all. Returns one row per selected run, in run order.
        """
        idx = self._runs(runs)
        n = len(idx)
        lam = self._to_device(self._per_run(lam, "lam", n))
        weights = self._target_weights(target_weights, n)
        override = self._override(override_class, target_weights)
        batches = [self._draw(i) for i in idx]
        if self.executor == "loop":
            rows = []
            for j, i in enumerate(idx):
                theta, psi = self._theta_leaves[i], {k: v.detach() for k, v in self._psi_leaves[i].items()}
                psi_stats = self._psi_losses(theta, psi, batches[j])
                _, theta_stats = self._theta_grads(theta, psi, batches[j], lam[j], weights[j], override)
                probe = self._probe_probabilities(theta, self._probe_z[i], self._probe_valid[i])
                rows.append(self._row(psi_stats, theta_stats, probe))
            stats = torch.stack(rows)
        else:
            sel = torch.as_tensor(idx, device=self.device)
            theta = {name: p[sel] for name, p in self.params.items()}
            psi = {name: p[sel] for name, p in self.psi.items()}
            stacked = tuple(torch.stack(parts) for parts in zip(*batches))
            with math_attention():
                psi_stats = vmap(self._psi_losses)(theta, psi, stacked)
                _, theta_stats = vmap(lambda th, ps, b, lm, w: self._theta_grads(th, ps, b, lm, w, override))(
                    theta, psi, stacked, lam, weights
                )
                probe = vmap(self._probe_probabilities)(theta, self._probe_z[sel], self._probe_valid[sel])
            stats = self._row(psi_stats, theta_stats, probe)
        return self._to_host(stats)

    # -- restore, EMA ------------------------------------------------------------------------------

    @torch.no_grad()
    def restore(self, runs=None) -> None:
        """Pretrained weights in θ, ψ and the EMA and fresh Adam states for ``runs`` (None: all).

        In place on the device; the other runs are untouched.
        """
        for i in self._runs(runs):
            for name, w in self.teacher_params.items():
                for stack in (self.params, self.psi, self.ema):
                    stack[name][i].copy_(w)
            for exp_avg, exp_avg_sq, steps in self._adam.values():
                for name in self.params:
                    exp_avg[name][i].zero_()
                    exp_avg_sq[name][i].zero_()
                steps[i] = 0
            self.step_count[i] = 0

    @torch.no_grad()
    def use_ema(self, runs=None) -> None:
        """Copy the EMA weights into the generators of ``runs`` (None: all), e.g. before a final evaluation."""
        for i in self._runs(runs):
            for name, p in self.params.items():
                p[i].copy_(self.ema[name][i])
