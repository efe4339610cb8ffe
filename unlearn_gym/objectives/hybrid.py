"""Hybrid SISS + SFD: one update of the diffusion model that joins both (DESIGN §8, last paragraph).

SISS's data-driven direction g_S (DESIGN §5) moves the model off the forget set using data; SFD's
alignment pulls the forget label's score toward the frozen teacher's retain-class scores, so that
the contaminated label learns to denoise the contaminant toward the retain classes instead of
reproducing it. The balance λ (the env's action) weighs the two; λ = 0.5 adds them with the align
weight w. The exact recipe, per step with SISS's batch (x, a, t, ε, u) of size B:

1. SISS at its own mixture weight λ_S = ``siss_lambda`` (steps 1–8 of
   :mod:`~unlearn_gym.objectives.siss`): ℓ_x, ℓ_a and the direction after its surgery,
   g_S = c_x·g_x − c_a·g_a ("norm": c_x = 1, c_a = S/‖g_a‖; ``forget_scale`` multiplies S or (1 + s)).
2. L_S = c_x·ℓ_x − c_a·ℓ_a, the scalar whose gradient g_S is (c_x, c_a held fixed).
3. The forget images noised with SISS's own t and ε: a_t = γ_t a + σ_t ε.
4. The teacher's target, without gradient: ε̄ = sg(Σ_k π_k ε_φ(a_t, t, k)), k over the target
   classes (every label but the contaminated one and the contaminant's), weights π (uniform, or
   the env's action); one teacher call on the K·B inputs.
5. ℓ_align = mean_i Σ_pixels (ε_θ(a_t, t, y_a) − ε̄)² under the forget label y_a, and ∇_θ ℓ_align
   (a second forward of ε_θ, one backward pass).
6. g = 2(1 − λ)·g_S + 2λ·w·∇ℓ_align, the gradient of L = 2(1 − λ)·L_S + 2λ·w·ℓ_align.
   (Clipping at 1.0 and the AdamW step are the engine's.)
7. Statistics: ‖g_S‖, ‖∇ℓ_align‖ and ∂L/∂λ = 2(w·ℓ_align − L_S).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .common import as_scalar, call, forward_noise, global_norm, gradient
from .sfd import teacher_eps
from .siss import SISSBatch, SISSConfig, siss_objective, surgery_coefficients

__all__ = ["HybridConfig", "HybridResult", "hybrid_objective"]


@dataclass(frozen=True)
class HybridConfig:
    """The SISS part's settings and the alignment's weight."""

    siss: SISSConfig = field(default_factory=SISSConfig)
    siss_lambda: float = 0.5
    """λ_S: SISS's own mixture weight inside the hybrid (the action is the balance λ)."""
    align_weight: float = 1.0
    """w of the alignment term."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.siss_lambda <= 1.0:
            raise ValueError(f"HybridConfig.siss_lambda must be in [0, 1], got {self.siss_lambda}")
        if self.align_weight < 0:
            raise ValueError(f"HybridConfig.align_weight must be >= 0, got {self.align_weight}")


@dataclass(frozen=True)
class HybridResult:
    """One hybrid evaluation (tensors on the device, no graph); the statistics carry the names of the
    engine's ``HybridStepStats`` (r = retain for the paper's x, f = forget for its a)."""

    grads: tuple[torch.Tensor, ...]
    """g = 2(1 − λ)·g_S + 2λ·w·∇ℓ_align, before clipping."""
    loss_r: torch.Tensor
    """SISS's ℓ_x, the retain loss estimate."""
    loss_f: torch.Tensor
    """SISS's ℓ_a, the forget loss estimate."""
    loss_align: torch.Tensor
    """ℓ_align."""
    grad_siss_norm: torch.Tensor
    """‖g_S‖ (after SISS's surgery)."""
    grad_align_norm: torch.Tensor
    """‖∇ℓ_align‖."""
    forget_share: torch.Tensor
    """Share of SISS's batch drawn from the forget set."""
    dloss_dlam: torch.Tensor
    """∂L/∂λ = 2(w·ℓ_align − L_S), with L_S = c_x·ℓ_x − c_a·ℓ_a (surgery coefficients held fixed)."""


def hybrid_objective(
    unet: torch.nn.Module,
    params: dict[str, torch.Tensor],
    teacher_params: dict[str, torch.Tensor],
    batch: SISSBatch,
    lam: torch.Tensor | float,
    gamma: torch.Tensor,
    sigma: torch.Tensor,
    config: HybridConfig,
    target: tuple[torch.Tensor, torch.Tensor],
    forget_scale: float = 1.0,
    dataset_size: int | None = None,
    forget_size: int | None = None,
) -> HybridResult:
    """The hybrid update direction g at balance λ (steps 1–7 of the module docstring).

    Args:
        params: the diffusion model's parameters (require grad); ``teacher_params`` the frozen
            pretrained ones.
        batch: SISS's batch (x, a, t, ε, u); the alignment uses its a, t and ε.
        target: ``(classes (K,), π (K,))`` of the teacher-score mixture.
        forget_scale, dataset_size, forget_size: as in :func:`~unlearn_gym.objectives.siss.siss_objective`.
    """
    # 1. SISS at λ_S: ℓ_x, ℓ_a and g_S (after its surgery)
    cfg = config.siss
    siss = siss_objective(
        unet, params, batch, config.siss_lambda, gamma, sigma, cfg, forget_scale, dataset_size, forget_size
    )
    # 2. L_S = c_x·ℓ_x − c_a·ℓ_a
    c_x, c_a = surgery_coefficients(siss.grad_f_norm, cfg, forget_scale, dataset_size, forget_size)
    loss_siss = c_x * siss.loss_r - c_a * siss.loss_f
    # 3. a_t = γ_t a + σ_t ε with SISS's t and ε
    a_t = forward_noise(batch.a, batch.t, batch.eps, gamma, sigma)
    # 4. ε̄ = sg(Σ_k π_k ε_φ(a_t, t, k))
    with torch.no_grad():
        eps_target = teacher_eps(unet, teacher_params, a_t, batch.t, target)

    # 5. ℓ_align = mean_i Σ_pixels (ε_θ(a_t, t, y_a) − ε̄)² and ∇_θ ℓ_align
    def align(p):
        eps_hat = call(unet, p, (a_t, batch.t), {"class_labels": batch.y_a}).sample
        return (eps_hat - eps_target).pow(2).flatten(1).sum(1).mean()

    loss_align, g_al = gradient(align, params)
    # 6. g = 2(1 − λ)·g_S + 2λ·w·∇ℓ_align
    w = config.align_weight
    c_s, c_al = as_scalar(2.0 * (1.0 - lam), loss_align), as_scalar(2.0 * lam * w, loss_align)
    grads = tuple(gs * c_s + ga * c_al for gs, ga in zip(siss.grads, g_al))
    # 7. statistics: ‖g_S‖, ‖∇ℓ_align‖, ∂L/∂λ = 2(w·ℓ_align − L_S)
    return HybridResult(
        grads=grads,
        loss_r=siss.loss_r,
        loss_f=siss.loss_f,
        loss_align=loss_align,
        grad_siss_norm=global_norm(siss.grads),
        grad_align_norm=global_norm(g_al),
        forget_share=siss.forget_share,
        dloss_dlam=(2.0 * (w * loss_align - loss_siss)).detach(),
    )
