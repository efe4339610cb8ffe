"""The unlearning engine: owns the model, its optimizer, the data streams and the probe.

``update(λ)`` performs one unlearning step (draw a batch, evaluate the objective, clip, AdamW,
measure the fixed probe) and returns its statistics after exactly one device→host copy.
``restore()`` puts the pretrained weights and a fresh optimizer state back in place on the device.
Envs translate actions into λ and statistics into observations; they never touch the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import numpy as np
import torch

from .data.scenarios import ImageSet
from .models.checkpoint import load_tensors, save_tensors_atomic
from .models.unet import noise_schedule
from .objectives.siss import OBJECTIVES, SISSConfig, draw_batch, global_norm

__all__ = [
    "HostStats",
    "StepStats",
    "UnlearningEngine",
    "STAT_NAMES",
    "HybridEngine",
    "HybridStepStats",
    "HYBRID_STAT_NAMES",
    "zero_optimizer_state",
]

STAT_NAMES = (
    "loss_r",  # ℓ_x: retain loss estimate of the step's batch
    "loss_f",  # ℓ_a: forget loss estimate
    "grad_r_norm",  # ‖g_x‖
    "grad_f_norm",  # ‖g_a‖
    "forget_share",  # share of the batch drawn from the forget set
    "dloss_r_dlam",  # ∂ℓ_x/∂λ, samples held fixed
    "dloss_f_dlam",  # ∂ℓ_a/∂λ
    "dloss_dlam",  # ∂L/∂λ of the combined loss c_x·ℓ_x − c_a·ℓ_a (surgery coefficients held fixed)
    "update_norm",  # ‖g‖ of the combined direction before clipping
    "probe_r",  # retain denoising loss on the fixed probe, after the step
    "probe_f",  # forget denoising loss on the fixed probe, after the step
    # how noisy the step's estimates are (docs/variance.md; 0 for objectives without importance weights)
    "var_loss_r",  # Var̂(ℓ_x): sample variance of w_x,i·e_x,i over the batch, divided by B
    "var_loss_f",  # Var̂(ℓ_a)
    "var_loss",  # Var̂(L) of the combined loss c_x·ℓ_x − c_a·ℓ_a (surgery coefficients held fixed)
    "dvar_loss_r_dlam",  # ∂Var̂(ℓ_x)/∂λ, samples held fixed
    "dvar_loss_f_dlam",  # ∂Var̂(ℓ_a)/∂λ, samples held fixed
    "dvar_loss_dlam",  # ∂Var̂(L)/∂λ, samples held fixed
    "rel_var_loss_r",  # Var̂(ℓ_x)/ℓ_x², in [0, 1]
    "rel_var_loss_f",  # Var̂(ℓ_a)/ℓ_a², in [0, 1]
    "drel_var_loss_r_dlam",  # ∂(Var̂(ℓ_x)/ℓ_x²)/∂λ, samples held fixed
    "drel_var_loss_f_dlam",  # ∂(Var̂(ℓ_a)/ℓ_a²)/∂λ, samples held fixed
    "dvar_loss_r_dlam_resampled",  # unbiased estimate of dVar_λ(ℓ_x)/dλ, the batch redrawn from q_λ
    "dvar_loss_f_dlam_resampled",  # unbiased estimate of dVar_λ(ℓ_a)/dλ
    "dvar_loss_dlam_resampled",  # unbiased estimate of dVar_λ(L)/dλ
    "drel_var_loss_r_dlam_resampled",  # plug-in estimate of d(Var_λ(ℓ_x)/ℓ_x²)/dλ, the batch redrawn
    "drel_var_loss_f_dlam_resampled",  # plug-in estimate of d(Var_λ(ℓ_a)/ℓ_a²)/dλ
)


class HostStats:
    """Base of the frozen dataclasses that hold one update's statistics as host floats (field order =
    the order of the engine's stats tensor)."""

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.as_array())))

    def as_array(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def zero_optimizer_state(*optimizers: torch.optim.Optimizer) -> None:
    """Zero every state tensor (moments, step) in place: a fresh optimizer without allocation."""
    for opt in optimizers:
        for state in opt.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()


@dataclass(frozen=True)
class StepStats(HostStats):
    """Statistics of one update, as host floats (see ``STAT_NAMES`` for each field's meaning)."""

    loss_r: float
    loss_f: float
    grad_r_norm: float
    grad_f_norm: float
    forget_share: float
    dloss_r_dlam: float
    dloss_f_dlam: float
    dloss_dlam: float
    update_norm: float
    probe_r: float
    probe_f: float
    var_loss_r: float
    var_loss_f: float
    var_loss: float
    dvar_loss_r_dlam: float
    dvar_loss_f_dlam: float
    dvar_loss_dlam: float
    rel_var_loss_r: float
    rel_var_loss_f: float
    drel_var_loss_r_dlam: float
    drel_var_loss_f_dlam: float
    dvar_loss_r_dlam_resampled: float
    dvar_loss_f_dlam_resampled: float
    dvar_loss_dlam_resampled: float
    drel_var_loss_r_dlam_resampled: float
    drel_var_loss_f_dlam_resampled: float


class UnlearningEngine:
    """Model + AdamW + seeded retain/forget streams + a frozen on-device copy of the pretrained weights.

    Args:
        unet: the pretrained ε-prediction UNet (moved to ``device``; trained in place).
        retain: retain images and labels (the data SISS keeps).
        forget: forget images and labels (the data SISS removes).
        config: objective and optimiser settings.
        device: where everything lives.
        probe_size: images per probe half (retain, forget); 0 disables the probe.
        dataset_size: n of "superfactor" surgery (default |retain| + |forget|).
    """

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
    ):
        if len(retain) == 0 or len(forget) == 0:
            raise ValueError(
                f"UnlearningEngine needs non-empty retain and forget sets, got {len(retain)} and {len(forget)}"
            )
        if probe_size < 0:
            raise ValueError(f"probe_size must be >= 0, got {probe_size}")
        self.device = torch.device(device)
        self.config = config
        self.unet = unet.to(self.device).train()
        self.params = dict(self.unet.named_parameters())
        self._param_list = list(self.params.values())
        self._pretrained = [p.detach().clone() for p in self._param_list]
        self.optimizer = torch.optim.AdamW(
            self._param_list, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        sched = noise_schedule(scheduler_config)
        self.gamma = sched.gamma.to(self.device, torch.float32)
        self.sigma = sched.sigma.to(self.device, torch.float32)
        self.num_timesteps = sched.num_timesteps
        self.retain_images = retain.images.to(self.device)
        self.retain_labels = retain.labels.to(self.device)
        self.set_forget(forget)
        self.dataset_size = dataset_size if dataset_size is not None else len(retain) + len(forget)
        self.probe_size = probe_size
        self.objective = OBJECTIVES[config.objective]
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(0)
        self.step_count = 0
        self._probe: tuple[torch.Tensor, ...] | None = None

    # -- data ---------------------------------------------------------------------------------

    def set_forget(self, forget: ImageSet) -> None:
        """Replace the forget set (e.g. another instance's subset)."""
        if len(forget) == 0:
            raise ValueError("the forget set must not be empty")
        self.forget_images = forget.images.to(self.device)
        self.forget_labels = forget.labels.to(self.device)

    def seed(self, seed: int) -> None:
        """Seed the data stream (batches) and redraw the fixed probe (images, t, ε) from it."""
        self.generator.manual_seed(int(seed))
        self._probe = self._draw_probe() if self.probe_size else None

    def _draw_probe(self) -> tuple[torch.Tensor, ...]:
        p, g = self.probe_size, self.generator
        ir = torch.randint(len(self.retain_images), (p,), generator=g, device=self.device)
        if_ = torch.randint(len(self.forget_images), (p,), generator=g, device=self.device)
        x0 = torch.cat([self.retain_images[ir], self.forget_images[if_]])
        y = torch.cat([self.retain_labels[ir], self.forget_labels[if_]])
        t = torch.randint(self.num_timesteps, (2 * p,), generator=g, device=self.device)
        eps = torch.randn(x0.shape, generator=g, device=self.device)
        x_t = self.gamma[t].view(-1, 1, 1, 1) * x0 + self.sigma[t].view(-1, 1, 1, 1) * eps
        return x_t, t, y, eps

    @torch.no_grad()
    def _probe_losses(self) -> torch.Tensor:
        """(2,) retain and forget denoising losses mean Σ(ε_θ(x_t) − ε)² on the fixed probe."""
        if self._probe is None:
            return torch.full((2,), float("nan"), device=self.device)
        x_t, t, y, eps = self._probe
        err = (self.unet(x_t, t, class_labels=y).sample - eps).pow(2).flatten(1).sum(1)
        return err.view(2, -1).mean(1)

    # -- the update ---------------------------------------------------------------------------

    def evaluate(self, lam: float = 0.5, forget_scale: float = 1.0) -> StepStats:
        """The statistics an update at λ would see, without changing the model or optimizer."""
        res = self._objective(lam, forget_scale)
        return self._to_host(res, global_norm(res.grads), self._probe_losses())

    def _objective(self, lam: float, forget_scale: float):
        """Draw this step's batch and evaluate the objective on it (gradients, no step)."""
        batch = draw_batch(
            self.retain_images,
            self.retain_labels,
            self.forget_images,
            self.forget_labels,
            self.config.batch_size,
            self.num_timesteps,
            self.generator,
            with_noise_target=self.config.objective == "erasediff",
        )
        return self.objective(
            self.unet,
            self.params,
            batch,
            lam,
            self.gamma,
            self.sigma,
            self.config,
            forget_scale,
            self.dataset_size,
            len(self.forget_images),
        )

    def update(self, lam: float, forget_scale: float = 1.0) -> StepStats:
        """One unlearning step at mixture weight λ and forget-strength multiplier ``forget_scale``.

        1. draw x, a, t, ε, u from the engine's generator;
        2. evaluate the objective (losses, g_x, g_a, surgery) at λ;
        3. clip the combined gradient to ``config.clip_norm`` and take an AdamW step;
        4. measure the fixed probe with the new weights;
        5. copy one stats tensor to the host.
        """
        res = self._objective(lam, forget_scale)
        for p, g in zip(self._param_list, res.grads):
            p.grad = g
        update_norm = torch.nn.utils.clip_grad_norm_(self._param_list, self.config.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        return self._to_host(res, update_norm, self._probe_losses())

    @staticmethod
    def _to_host(res, update_norm: torch.Tensor, probe: torch.Tensor) -> StepStats:
        stats = torch.stack(
            [
                res.loss_x,
                res.loss_a,
                res.grad_x_norm,
                res.grad_a_norm,
                res.forget_share,
                res.dloss_x_dlam,
                res.dloss_a_dlam,
                res.dloss_dlam,
                update_norm.to(res.loss_x.dtype),
                probe[0],
                probe[1],
                *res.variances.tensors(),  # EstimatorVariances' fields, in StepStats' order
            ]
        ).to("cpu", torch.float64)  # the one host copy of the step
        return StepStats(*stats.tolist())

    # -- restore / save -----------------------------------------------------------------------

    @torch.no_grad()
    def restore(self) -> None:
        """Pretrained weights and a fresh AdamW state, in place on the device (no allocation, no disk)."""
        torch._foreach_copy_(self._param_list, self._pretrained)
        zero_optimizer_state(self.optimizer)
        self.step_count = 0

    def state_dict(self) -> dict[str, torch.Tensor | int | dict]:
        """A whole run: parameters, AdamW moments, generator state, probe, step."""
        tensors: dict[str, torch.Tensor] = {f"param.{n}": p.detach() for n, p in self.params.items()}
        for i, p in enumerate(self._param_list):
            for k, v in self.optimizer.state.get(p, {}).items():
                tensors[f"opt.{i}.{k}"] = v
        tensors["rng"] = self.generator.get_state()
        if self._probe is not None:
            for k, v in zip(("x_t", "t", "y", "eps"), self._probe):
                tensors[f"probe.{k}"] = v
        return {"tensors": tensors, "step": self.step_count, "config": asdict(self.config)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        tensors = state["tensors"]
        for n, p in self.params.items():
            p.copy_(tensors[f"param.{n}"])
        opt_state = {}
        for i in range(len(self._param_list)):
            keys = [k for k in tensors if k.startswith(f"opt.{i}.")]
            if keys:
                opt_state[i] = {k.split(".", 2)[2]: tensors[k].clone() for k in keys}
        self.optimizer.load_state_dict(
            {"state": opt_state, "param_groups": self.optimizer.state_dict()["param_groups"]}
        )
        self.generator.set_state(tensors["rng"].to(torch.uint8).cpu())
        if "probe.x_t" in tensors:
            self._probe = tuple(tensors[f"probe.{k}"].to(self.device) for k in ("x_t", "t", "y", "eps"))
        self.step_count = int(state["step"])

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to one safetensors file, atomically."""
        state = self.state_dict()
        save_tensors_atomic(
            state["tensors"], path, metadata={"step": str(state["step"]), "config": json.dumps(state["config"])}
        )

    def load(self, path: str | Path) -> None:
        tensors, meta = load_tensors(path, device=self.device)
        self.load_state_dict({"tensors": tensors, "step": int(meta["step"])})


HYBRID_STAT_NAMES = (
    "loss_r",  # SISS's ℓ_x
    "loss_f",  # SISS's ℓ_a
    "loss_align",  # ℓ_align: the forget label's score against the teacher's retain-class mixture
    "grad_siss_norm",  # ‖g_S‖ after SISS's surgery
    "grad_align_norm",  # ‖∇ℓ_align‖
    "forget_share",
    "dloss_dlam",  # ∂L/∂λ = 2(w·ℓ_align − L_S)
    "update_norm",
    "probe_r",
    "probe_f",
)


@dataclass(frozen=True)
class HybridStepStats(HostStats):
    """Statistics of one hybrid update, as host floats (see ``HYBRID_STAT_NAMES``)."""

    loss_r: float
    loss_f: float
    loss_align: float
    grad_siss_norm: float
    grad_align_norm: float
    forget_share: float
    dloss_dlam: float
    update_norm: float
    probe_r: float
    probe_f: float


class HybridEngine(UnlearningEngine):
    """:class:`UnlearningEngine` whose update is the SISS + SFD-alignment hybrid.

    The frozen teacher is the engine's on-device copy of the pretrained weights (no extra copy).

    Args:
        target_classes: the labels whose teacher scores the forget label is aligned to.
        hybrid: the hybrid's settings (its ``siss`` part replaces ``config``).
        Other arguments as :class:`UnlearningEngine`.
    """

    def __init__(self, unet, retain, forget, hybrid=None, target_classes=(), **kwargs):
        from .objectives.hybrid import HybridConfig

        self.hybrid = hybrid if hybrid is not None else HybridConfig()
        super().__init__(unet, retain, forget, self.hybrid.siss, **kwargs)
        if not target_classes:
            raise ValueError("HybridEngine needs at least one target class")
        self.target_classes = torch.tensor(list(target_classes), dtype=torch.long, device=self.device)
        self.teacher_params = dict(zip(self.params, self._pretrained))
        K = len(self.target_classes)
        self._uniform_weights = torch.full((K,), 1.0 / K, device=self.device)
        self._target_weights: torch.Tensor | None = None

    def set_target_weights(self, weights) -> None:
        """π over ``target_classes`` (None: uniform)."""
        if weights is None:
            self._target_weights = None
            return
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=self.device)
        if w.shape != self.target_classes.shape:
            raise ValueError(f"target weights: expected shape {tuple(self.target_classes.shape)}, got {tuple(w.shape)}")
        self._target_weights = w

    def _objective(self, lam: float, forget_scale: float):
        from .objectives.hybrid import hybrid_objective

        batch = draw_batch(
            self.retain_images,
            self.retain_labels,
            self.forget_images,
            self.forget_labels,
            self.config.batch_size,
            self.num_timesteps,
            self.generator,
        )
        weights = self._target_weights if self._target_weights is not None else self._uniform_weights
        return hybrid_objective(
            self.unet, self.params, self.teacher_params, batch, lam, self.gamma, self.sigma, self.hybrid,
            (self.target_classes, weights), forget_scale, self.dataset_size, len(self.forget_images),
        )  # fmt: skip

    @staticmethod
    def _to_host(res, update_norm: torch.Tensor, probe: torch.Tensor) -> HybridStepStats:
        stats = torch.stack(
            [
                res.loss_x,
                res.loss_a,
                res.loss_align,
                res.grad_siss_norm,
                res.grad_align_norm,
                res.forget_share,
                res.dloss_dlam,
                update_norm.to(res.loss_x.dtype),
                probe[0],
                probe[1],
            ]
        ).to("cpu", torch.float64)  # the one host copy of the step
        return HybridStepStats(*stats.tolist())
