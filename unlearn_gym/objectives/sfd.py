"""SFD (Score Forgetting Distillation, Chen, Zhang & Zhou, ICLR 2025) as pure functions.

SFD is data-free. Three copies of the pretrained (EMA) class-conditional ε-network take part: the
frozen teacher ε_φ, the fake-score network ε_ψ and the one-step generator ε_θ (DESIGN §8):

- Generator at t* (official 440): z ~ N(0, I), x_in = σ_{t*}·z,
  G_θ(z, c) = x_in/γ_{t*} − √(1/ᾱ_{t*} − 1)·ε_θ(x_in, t*, c) = (x_in − σ_{t*}·ε_θ(x_in, t*, c))/γ_{t*}.
- ψ step on sg(x_g), t ~ U{t_min..t_max}:
  L_ψ = E‖ε − ε_ψ(γ_t x_g + σ_t ε, t, c)‖² + w_ψf·E‖ε − ε_ψ(γ_t x_g^f + σ_t ε, t, c_f)‖²,
  x_g = G(z, c) for remaining classes c, x_g^f = G(z', c_f).
- θ step (ψ frozen), x_t = γ_t x_g + σ_t ε with the gradient through x_t:
  x̂_φ = (x_t − σ_t ε_φ(x_t, t, c_p))/γ_t, x̂_ψ = (x_t − σ_t ε_ψ(x_t, t, c_s))/γ_t,
  ω = sg(mean|x̂_φ − x_g|) ≥ 1e-5, ℓ = Σ_pixels (x̂_φ − x̂_ψ) ⊙ [(x̂_φ − x_g) − α(x̂_φ − x̂_ψ)]/ω, α = 1.2.
  Remain term: c_p = c_s = c. Forget term: x_g = G(z', c_f), c_s = c_f and the teacher's score is
  that of the override target: one class c_o (official), or — the paper's multi-class extension —
  a mixture of all retain classes, ε_φ(x_t, t, π) = Σ_k π_k·ε_φ(x_t, t, k) with weights π.
  L_θ = 2(1 − λ)·w_r·mean ℓ_remain + 2λ·w_f·mean ℓ_forget: at λ = 0.5 the official weights
  (w_r = 1, w_f = 0.01); λ is the env's action.
- Adam lr 1e-5, betas (0, 0.999), element-wise gradient clipping at 1.0 (the engine's).

Every function reads networks through ``torch.func.functional_call`` with the parameters it is
given, draws nothing at random, copies nothing to the host, and works both eagerly (parameters
that are autograd leaves) and under ``torch.func.vmap`` over a leading run axis (the gradients
come from :mod:`~unlearn_gym.objectives.common`'s ``gradient`` and ``two_gradients``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import as_scalar, call, forward_noise, global_norm, gradient, two_gradients

__all__ = [
    "SFDConfig",
    "SFDBatch",
    "SFDResult",
    "FakeScoreResult",
    "draw_sfd_batch",
    "generator_sample",
    "fake_score_loss",
    "fake_score_step",
    "sid_loss",
    "teacher_eps",
    "sfd_generator_step",
]


@dataclass(frozen=True)
class SFDConfig:
    """SFD's constants (the official CIFAR-10 DDPM settings, DESIGN §8)."""

    t_star: int = 440
    """t* of the one-step generator."""
    t_min: int = 38
    t_max: int = 711
    """t ~ U{t_min..t_max} for both steps."""
    alpha: float = 1.2
    """α of the SiD loss."""
    remain_weight: float = 1.0
    """w_r of the remain term of L_θ."""
    forget_weight: float = 0.01
    """w_f of the forget term of L_θ."""
    fake_forget_weight: float = 0.01
    """w_ψf of the forget term of L_ψ."""
    lr: float = 1e-5
    betas: tuple[float, float] = (0.0, 0.999)
    clip_value: float = 1.0
    """Element-wise gradient clipping of both networks."""
    ema_decay: float = 0.9999
    """EMA of θ (the generator that ``evaluate`` samples from when ``use_ema``)."""
    omega_min: float = 1e-5
    batch_size: int = 16
    """B: samples of remaining classes and of the forget class per step (each)."""

    def __post_init__(self) -> None:
        if not 0 <= self.t_min <= self.t_max:
            raise ValueError(f"SFDConfig needs 0 <= t_min <= t_max, got {self.t_min}, {self.t_max}")
        if self.t_star < 0:
            raise ValueError(f"SFDConfig.t_star must be >= 0, got {self.t_star}")
        if self.batch_size < 1:
            raise ValueError(f"SFDConfig.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class SFDBatch:
    """The randomness of one SFD step (drawn before it, so the step itself is deterministic)."""

    z_remain: torch.Tensor
    """(B, C, H, W) generator noise for the remaining classes."""
    c_remain: torch.Tensor
    """(B,) remaining classes c."""
    z_forget: torch.Tensor
    """(B, C, H, W) generator noise for the forget class."""
    c_forget: torch.Tensor
    """(B,) the forget class c_f."""
    t_psi: torch.Tensor
    eps_psi: torch.Tensor
    """(2B,) t and (2B, C, H, W) ε of the ψ step (remain half, then forget half)."""
    t_theta: torch.Tensor
    eps_theta: torch.Tensor
    """(2B,) t and (2B, C, H, W) ε of the θ step (remain half, then forget half)."""


@dataclass(frozen=True)
class FakeScoreResult:
    """One fake-score (ψ) step's gradients and statistics (tensors on the device, no graph).

    The statistics carry the SFD engine's and env's public names (``SFDStepStats``, ``info``).
    """

    grads: tuple[torch.Tensor, ...]
    """∇_ψ L_ψ, one tensor per fake-score parameter (empty when only the losses are asked for)."""
    loss_psi_remain: torch.Tensor
    """The remain part of L_ψ: mean‖ε − ε_ψ(γ_t x_g + σ_t ε, t, c)‖² on the remaining-class samples."""
    loss_psi_forget: torch.Tensor
    """The forget part of L_ψ (before its weight w_ψf), on the forget-class samples."""


@dataclass(frozen=True)
class SFDResult:
    """One generator step's gradients and statistics (tensors on the device, no graph).

    The statistics carry the SFD engine's and env's public names (``SFDStepStats``, ``info``).
    """

    grads: tuple[torch.Tensor, ...]
    """∇_θ L_θ, one tensor per generator parameter."""
    loss_remain: torch.Tensor
    """mean ℓ_remain."""
    loss_forget: torch.Tensor
    """mean ℓ_forget."""
    grad_remain_norm: torch.Tensor
    """‖∇_θ mean ℓ_remain‖."""
    grad_forget_norm: torch.Tensor
    """‖∇_θ mean ℓ_forget‖."""
    dloss_dlam: torch.Tensor
    """∂L_θ/∂λ = 2(w_f·mean ℓ_forget − w_r·mean ℓ_remain)."""


def draw_sfd_batch(
    shape: tuple[int, int, int],
    remain_classes: torch.Tensor,
    forget_class: int,
    config: SFDConfig,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> SFDBatch:
    """Draw z, c, t and ε of one step from ``generator``: c uniform over ``remain_classes``."""
    B = config.batch_size
    remain_classes = remain_classes.to(device)
    idx = torch.randint(len(remain_classes), (B,), generator=generator, device=device)
    z_r = torch.randn((B, *shape), generator=generator, device=device, dtype=dtype)
    z_f = torch.randn((B, *shape), generator=generator, device=device, dtype=dtype)
    t_psi = torch.randint(config.t_min, config.t_max + 1, (2 * B,), generator=generator, device=device)
    eps_psi = torch.randn((2 * B, *shape), generator=generator, device=device, dtype=dtype)
    t_theta = torch.randint(config.t_min, config.t_max + 1, (2 * B,), generator=generator, device=device)
    eps_theta = torch.randn((2 * B, *shape), generator=generator, device=device, dtype=dtype)
    c_f = torch.full((B,), int(forget_class), device=device, dtype=torch.long)
    return SFDBatch(z_r, remain_classes[idx], z_f, c_f, t_psi, eps_psi, t_theta, eps_theta)


def _eps(unet, params, x, t, c) -> torch.Tensor:
    return call(unet, params, (x, t), {"class_labels": c}).sample


def generator_sample(unet, params, z, c, gamma, sigma, t_star: int) -> torch.Tensor:
    """G_θ(z, c) = (x_in − σ_{t*}·ε_θ(x_in, t*, c))/γ_{t*} with x_in = σ_{t*}·z (differentiable in θ)."""
    t = torch.full((z.shape[0],), int(t_star), device=z.device, dtype=torch.long)
    x_in = sigma[t_star] * z
    return (x_in - sigma[t_star] * _eps(unet, params, x_in, t, c)) / gamma[t_star]


def teacher_eps(unet, params, x_t, t, target) -> torch.Tensor:
    """ε_φ(x_t, t, c_p) of the teacher.

    ``target`` as a (B,) int64 tensor: the class of each sample. As a pair ``(classes (K,), π (K,))``:
    the mixture Σ_k π_k·ε_φ(x_t, t, classes_k), computed in one call on K·B inputs.
    """
    if isinstance(target, torch.Tensor):
        return _eps(unet, params, x_t, t, target)
    classes, weights = target
    K, B = len(classes), x_t.shape[0]
    x_rep = x_t.repeat(K, *([1] * (x_t.ndim - 1)))
    t_rep = t.repeat(K)
    c_rep = classes.to(x_t.device).repeat_interleave(B)
    out = _eps(unet, params, x_rep, t_rep, c_rep).view(K, B, *x_t.shape[1:])
    w = weights.to(out.dtype).view(K, *([1] * x_t.ndim))
    return (w * out).sum(0)


def sid_loss(x_g, x_t, eps_teacher, eps_fake, gamma_t, sigma_t, alpha: float, omega_min: float) -> torch.Tensor:
    """(B,) ℓ = Σ_pixels (x̂_φ − x̂_ψ) ⊙ [(x̂_φ − x_g) − α(x̂_φ − x̂_ψ)]/ω with ω = sg(mean|x̂_φ − x_g|) ≥ ω_min.

    ``gamma_t``, ``sigma_t`` broadcast against ``x_t`` (shape (B, 1, 1, 1)).
    """
    x_phi = (x_t - sigma_t * eps_teacher) / gamma_t
    x_psi = (x_t - sigma_t * eps_fake) / gamma_t
    omega = (x_phi - x_g).abs().flatten(1).mean(1).detach().clamp_min(omega_min)
    diff = x_phi - x_psi
    return (diff * ((x_phi - x_g) - alpha * diff)).flatten(1).sum(1) / omega


def fake_score_loss(
    unet, psi_params, x_g_remain, c_remain, x_g_forget, c_forget, batch: SFDBatch, gamma, sigma, config: SFDConfig
):
    """L_ψ = mean‖ε − ε_ψ(γ_t x_g + σ_t ε, t, c)‖² + w_ψf·mean‖ε − ε_ψ(γ_t x_g^f + σ_t ε, t, c_f)‖².

    Returns (L_ψ, remain part, forget part); ``x_g_*`` must already be detached. Per-sample squared
    errors are summed over pixels, as in SISS.
    """
    x = torch.cat([x_g_remain, x_g_forget])
    c = torch.cat([c_remain, c_forget])
    t, eps = batch.t_psi, batch.eps_psi
    err = (_eps(unet, psi_params, forward_noise(x, t, eps, gamma, sigma), t, c) - eps).pow(2).flatten(1).sum(1)
    remain, forget = err.chunk(2)
    remain, forget = remain.mean(), forget.mean()
    return remain + config.fake_forget_weight * forget, remain, forget


def fake_score_step(
    unet, theta_params, psi_params, batch: SFDBatch, gamma, sigma, config: SFDConfig
) -> FakeScoreResult:
    """The ψ step's gradient ∇_ψ L_ψ on sg(x_g) (see :func:`fake_score_loss`).

    1. x_g = sg(G_θ(z, c)), x_g^f = sg(G_θ(z', c_f)): the generator's samples, no gradient to θ.
    2. L_ψ on them and ∇_ψ L_ψ (autograd for leaves that require grad, ``torch.func`` under ``vmap``).

    Returns:
        ∇_ψ L_ψ (one tensor per parameter of ``psi_params``) and the remain and forget parts of L_ψ.
    """
    with torch.no_grad():  # 1.
        x_r = generator_sample(unet, theta_params, batch.z_remain, batch.c_remain, gamma, sigma, config.t_star)
        x_f = generator_sample(unet, theta_params, batch.z_forget, batch.c_forget, gamma, sigma, config.t_star)

    def loss(psi):  # 2.
        total, remain, forget = fake_score_loss(
            unet, psi, x_r, batch.c_remain, x_f, batch.c_forget, batch, gamma, sigma, config
        )
        return total, (remain.detach(), forget.detach())

    _, grads, (remain, forget) = gradient(loss, psi_params, has_aux=True)
    return FakeScoreResult(grads, loss_psi_remain=remain, loss_psi_forget=forget)


def sfd_generator_step(
    unet,
    theta_params: dict[str, torch.Tensor],
    teacher_params: dict[str, torch.Tensor],
    psi_params: dict[str, torch.Tensor],
    batch: SFDBatch,
    lam: torch.Tensor | float,
    gamma: torch.Tensor,
    sigma: torch.Tensor,
    config: SFDConfig,
    forget_target,
) -> SFDResult:
    """The θ step's gradient of L_θ = 2(1 − λ)·w_r·mean ℓ_remain + 2λ·w_f·mean ℓ_forget (ψ, φ frozen).

    1. x_g = G_θ(z, c) for the remaining classes, x_g^f = G_θ(z', c_f) (differentiable in θ).
    2. x_t = γ_t·x_g + σ_t·ε with the gradient through x_t (remain half, then forget half).
    3. The fake score ε_ψ(x_t, t, c_s) with c_s = c (remain) and c_s = c_f (forget).
    4. The teacher ε_φ(x_t, t, c_p): c_p = c (remain); for the forget half the override class c_o
       or the π-mixture Σ_k π_k·ε_φ(x_t, t, k) of the retain classes (``forget_target``).
    5. ℓ = Σ_pixels (x̂_φ − x̂_ψ) ⊙ [(x̂_φ − x_g) − α(x̂_φ − x̂_ψ)]/ω per sample (:func:`sid_loss`);
       ℓ_remain, ℓ_forget = the means of the two halves.
    6. g_r = ∇_θ ℓ_remain, g_f = ∇_θ ℓ_forget: two backward passes through one forward of steps 1–5
       (``two_gradients``: autograd for leaves that require grad, ``torch.func`` under ``vmap``).
    7. ∇_θ L_θ = c_r·g_r + c_f·g_f with c_r = 2(1 − λ)·w_r, c_f = 2λ·w_f; ∂L_θ/∂λ = 2(w_f·ℓ_forget − w_r·ℓ_remain).

    Args:
        unet: the architecture (its own parameters are never used).
        theta_params, teacher_params, psi_params: name → tensor of the generator (autograd leaves,
            or plain tensors under ``vmap``), the teacher and the fake-score network (no gradient).
        lam: λ ∈ [0, 1], a float or a 0-d tensor (one run's λ under ``vmap``).
        forget_target: c_p of the forget term: a (B,) int64 override class per sample, or
            ``(classes (K,), π (K,))`` for the mixture of retain classes.
    """
    t, eps = batch.t_theta, batch.eps_theta
    g, s = gamma[t].view(-1, 1, 1, 1), sigma[t].view(-1, 1, 1, 1)
    B = batch.z_remain.shape[0]
    c_fake = torch.cat([batch.c_remain, batch.c_forget])

    def forward(theta):  # 1.
        x_r = generator_sample(unet, theta, batch.z_remain, batch.c_remain, gamma, sigma, config.t_star)
        x_f = generator_sample(unet, theta, batch.z_forget, batch.c_forget, gamma, sigma, config.t_star)
        return x_r, x_f

    def losses(x):
        x_g = torch.cat(x)
        x_t = forward_noise(x_g, t, eps, gamma, sigma)  # 2.
        eps_fake = _eps(unet, psi_params, x_t, t, c_fake)  # 3.
        eps_t_remain = teacher_eps(unet, teacher_params, x_t[:B], t[:B], batch.c_remain)  # 4.
        eps_t_forget = teacher_eps(unet, teacher_params, x_t[B:], t[B:], forget_target)
        eps_teacher = torch.cat([eps_t_remain, eps_t_forget])
        ell = sid_loss(x_g, x_t, eps_teacher, eps_fake, g, s, config.alpha, config.omega_min)  # 5.
        return ell[:B].mean(), ell[B:].mean(), ()

    loss_r, loss_f, g_r, g_f, _ = two_gradients(forward, theta_params, losses)  # 6.
    c_r = as_scalar(2.0 * (1.0 - lam) * config.remain_weight, loss_r)  # 7.
    c_f = as_scalar(2.0 * lam * config.forget_weight, loss_r)
    grads = tuple(gr * c_r + gf * c_f for gr, gf in zip(g_r, g_f))
    dloss = 2.0 * (config.forget_weight * loss_f - config.remain_weight * loss_r)
    return SFDResult(
        grads, loss_remain=loss_r, loss_forget=loss_f, grad_remain_norm=global_norm(g_r),
        grad_forget_norm=global_norm(g_f), dloss_dlam=dloss,
    )  # fmt: skip
