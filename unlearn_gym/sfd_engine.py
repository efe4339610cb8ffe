"""The SFD engine: teacher, fake-score network and one-step generator, their optimizers and the probe.

``update(λ, target_weights)`` performs one SFD iteration (one ψ step, then one θ step, DESIGN §8)
and returns its statistics after exactly one device→host copy. ``restore()`` puts the pretrained
weights back into ψ and θ and zeroes both Adam states, in place on the device. The probe is a
fixed set of generator inputs z (drawn at ``seed``) per class, classified after each update: the
env's reward reads how often the forget class is still drawn and how well the others are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .engine import HostStats, zero_optimizer_state
from .models.unet import noise_schedule
from .objectives.sfd import SFDConfig, draw_sfd_batch, fake_score_loss, generator_sample, sfd_generator_step

__all__ = ["SFDEngine", "SFDStepStats", "SFD_STAT_NAMES"]

SFD_STAT_NAMES = (
    "loss_psi_remain",  # ψ's denoising loss on generated remaining-class samples (before its step)
    "loss_psi_forget",  # ψ's denoising loss on generated forget-class samples
    "loss_remain",  # mean ℓ_remain of the θ step (SiD loss; may be negative)
    "loss_forget",  # mean ℓ_forget of the θ step
    "grad_remain_norm",  # ‖∇_θ mean ℓ_remain‖
    "grad_forget_norm",  # ‖∇_θ mean ℓ_forget‖
    "dloss_dlam",  # ∂L_θ/∂λ
    "update_norm",  # ‖∇_θ L_θ‖ before element-wise clipping
    "probe_forget_p",  # mean classifier probability p(c_f | G(z, c_f)) over the forget probe, after the step
    "probe_remain_p",  # mean p(c | G(z, c)) over the remaining-class probe, after the step
)


@dataclass(frozen=True)
class SFDStepStats(HostStats):
    """Statistics of one SFD iteration, as host floats (see ``SFD_STAT_NAMES``)."""

    loss_psi_remain: float
    loss_psi_forget: float
    loss_remain: float
    loss_forget: float
    grad_remain_norm: float
    grad_forget_norm: float
    dloss_dlam: float
    update_norm: float
    probe_forget_p: float
    probe_remain_p: float


class SFDEngine:
    """Teacher ε_φ (frozen), fake score ε_ψ and generator ε_θ, all from one pretrained (EMA) UNet.

    Args:
        unet: the pretrained ε-network; it becomes the generator θ (trained in place).
        forget_class: c_f, the label whose samples are to be forgotten.
        remain_classes: the other labels (the ψ/θ remain terms draw c uniformly from them).
        config: SFD's constants.
        device: where the three networks live.
        classifier: the scenario's classifier for the probe (None: no probe, probe stats NaN).
        probe_size: probe inputs z per class.
        scheduler_config: the DDPM scheduler's config (γ_t, σ_t).
    """

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
    ):
        if forget_class in remain_classes:
            raise ValueError(f"forget_class {forget_class} must not be one of remain_classes {list(remain_classes)}")
        if not remain_classes:
            raise ValueError("remain_classes must not be empty")
        self.device = torch.device(device)
        self.config = config
        self.forget_class = int(forget_class)
        self.remain_classes = torch.tensor(list(remain_classes), dtype=torch.long, device=self.device)
        self._uniform_weights = torch.full((len(remain_classes),), 1.0 / len(remain_classes), device=self.device)
        self.unet = unet.to(self.device).train()  # the generator ε_θ
        self.teacher = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.fake = copy.deepcopy(self.unet).train()
        self.theta = dict(self.unet.named_parameters())
        self.teacher_params = {k: v.detach() for k, v in self.teacher.named_parameters()}
        self.psi = dict(self.fake.named_parameters())
        self._theta_list, self._psi_list = list(self.theta.values()), list(self.psi.values())
        self._pretrained = [p.detach().clone() for p in self._theta_list]
        self.ema = [p.detach().clone() for p in self._theta_list]
        self.opt_theta = torch.optim.Adam(self._theta_list, lr=config.lr, betas=config.betas)
        self.opt_psi = torch.optim.Adam(self._psi_list, lr=config.lr, betas=config.betas)
        sched = noise_schedule(scheduler_config)
        if not config.t_star < sched.num_timesteps or not config.t_max < sched.num_timesteps:
            raise ValueError(f"t_star and t_max must be < the scheduler's {sched.num_timesteps} steps")
        self.gamma = sched.gamma.to(self.device, torch.float32)
        self.sigma = sched.sigma.to(self.device, torch.float32)
        self.sample_shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.probe_size = probe_size
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(0)
        self.step_count = 0
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- data ----------------------------------------------------------------------------------

    def seed(self, seed: int) -> None:
        """Seed the stream of z, t, ε and redraw the probe inputs from it."""
        self.generator.manual_seed(int(seed))
        self._probe = self._draw_probe() if self.probe_size and self.classifier is not None else None

    def _draw_probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        classes = torch.cat([torch.tensor([self.forget_class], device=self.device), self.remain_classes])
        labels = classes.repeat_interleave(self.probe_size)
        z = torch.randn((len(labels), *self.sample_shape), generator=self.generator, device=self.device)
        return z, labels

    @torch.no_grad()
    def _probe_probabilities(self) -> torch.Tensor:
        """(2,) mean classifier probability of the conditioning class on G_θ(z_probe, c): forget, remaining."""
        if self._probe is None:
            return torch.full((2,), float("nan"), device=self.device)
        z, labels = self._probe
        x = generator_sample(self.unet, self.theta, z, labels, self.gamma, self.sigma, self.config.t_star)
        p = torch.softmax(self.classifier(x.clamp(-1, 1)), dim=1).gather(1, labels[:, None])[:, 0]
        is_f = labels == self.forget_class
        return torch.stack([p[is_f].mean(), p[~is_f].mean()])

    # -- the update ------------------------------------------------------------------------------

    def forget_target(self, target_weights: torch.Tensor | np.ndarray | None, override_class: int | None):
        """c_p of the forget term: the override class c_o, or the π-mixture of the remaining classes."""
        if target_weights is None:
            if override_class is not None:
                return torch.full((self.config.batch_size,), int(override_class), device=self.device, dtype=torch.long)
            return self.remain_classes, self._uniform_weights
        w = torch.as_tensor(np.asarray(target_weights, dtype=np.float32), device=self.device)
        if w.shape != (len(self.remain_classes),):
            raise ValueError(f"target_weights: expected shape ({len(self.remain_classes)},), got {tuple(w.shape)}")
        return self.remain_classes, w

    def update(self, lam: float, target_weights=None, override_class: int | None = None) -> SFDStepStats:
        """One SFD iteration at balance λ (L_θ = 2(1 − λ)·w_r·ℓ_remain + 2λ·w_f·ℓ_forget).

        1. draw z, c, t, ε; 2. ψ step on the detached generator samples; 3. θ step against the
        teacher and the updated ψ; element-wise clipping, Adam, EMA of θ; 4. the probe; 5. one
        host copy.
        """
        return self._iterate(lam, target_weights, override_class, step=True)

    def evaluate(self, lam: float = 0.5, target_weights=None, override_class: int | None = None) -> SFDStepStats:
        """The statistics an iteration at λ would see, without changing the networks or optimizers."""
        return self._iterate(lam, target_weights, override_class, step=False)

    def _iterate(self, lam, target_weights, override_class, step: bool) -> SFDStepStats:
        cfg = self.config
        batch = draw_sfd_batch(
            self.sample_shape, self.remain_classes, self.forget_class, cfg, self.generator, self.device
        )
        # ψ step on sg(x_g)
        with torch.no_grad():
            x_r = generator_sample(
                self.unet, self.theta, batch.z_remain, batch.c_remain, self.gamma, self.sigma, cfg.t_star
            )
            x_f = generator_sample(
                self.unet, self.theta, batch.z_forget, batch.c_forget, self.gamma, self.sigma, cfg.t_star
            )
        loss_psi, psi_r, psi_f = fake_score_loss(
            self.fake, self.psi, x_r, batch.c_remain, x_f, batch.c_forget, batch, self.gamma, self.sigma, cfg
        )
        if step:
            grads = torch.autograd.grad(loss_psi, self._psi_list, allow_unused=True)
            for p, g in zip(self._psi_list, grads):
                p.grad = torch.zeros_like(p) if g is None else g
            torch.nn.utils.clip_grad_value_(self._psi_list, cfg.clip_value)
            self.opt_psi.step()
            self.opt_psi.zero_grad(set_to_none=True)
        # θ step with ψ frozen
        target = self.forget_target(target_weights, override_class)
        res = sfd_generator_step(
            self.unet, self.theta, self.teacher_params, {k: v.detach() for k, v in self.psi.items()}, batch, lam,
            self.gamma, self.sigma, cfg, target,
        )  # fmt: skip
        update_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(res.grads))))
        if step:
            for p, g in zip(self._theta_list, res.grads):
                p.grad = g
            torch.nn.utils.clip_grad_value_(self._theta_list, cfg.clip_value)
            self.opt_theta.step()
            self.opt_theta.zero_grad(set_to_none=True)
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self._theta_list], 1.0 - cfg.ema_decay)
            self.step_count += 1
        probe = self._probe_probabilities()
        stats = torch.stack(
            [
                psi_r.detach(),
                psi_f.detach(),
                res.loss_remain,
                res.loss_forget,
                res.grad_remain_norm,
                res.grad_forget_norm,
                res.dloss_dlam,
                update_norm,
                probe[0],
                probe[1],
            ]
        ).to("cpu", torch.float64)  # the one host copy of the step
        return SFDStepStats(*stats.tolist())

    # -- restore ----------------------------------------------------------------------------------

    def model(self, run: int = 0) -> torch.nn.Module:
        """The generator ε_θ (SFD has one run: ``run`` must be 0), for sampling and saving."""
        if run != 0:
            raise ValueError(f"SFDEngine holds one run, got run={run}")
        return self.unet

    @torch.no_grad()
    def restore(self) -> None:
        """Pretrained weights in θ, ψ and the EMA; fresh Adam states; all in place on the device."""
        torch._foreach_copy_(self._theta_list, self._pretrained)
        torch._foreach_copy_(self._psi_list, self._pretrained)
        torch._foreach_copy_(self.ema, self._pretrained)
        zero_optimizer_state(self.opt_theta, self.opt_psi)
        self.step_count = 0

    @torch.no_grad()
    def use_ema(self) -> None:
        """Copy the EMA weights into the generator (e.g. before a final evaluation)."""
        torch._foreach_copy_(self._theta_list, self.ema)
