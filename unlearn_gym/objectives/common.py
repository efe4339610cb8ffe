"""Shared kernels of the objectives: the global norm, per-run scalars, and two gradients through one forward.

Everything here works both eagerly and under ``torch.func.vmap`` over a leading run axis (no
``torch._foreach_*`` calls, which have no batching rule; no host synchronisation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["as_float64", "as_scalar", "call", "forward_noise", "global_norm", "gradient", "two_gradients"]


def call(module: torch.nn.Module, params: dict[str, torch.Tensor], args: tuple, kwargs: dict | None = None):
    """``module(*args, **kwargs)`` with its parameters replaced by ``params`` (``functional_call``).

    ``tie_weights=False``: the UNets here tie no weights, and finding tied weights walks every
    submodule on every call (about 3 ms per call of the ``tiny`` UNet on the CPU, as much as a
    small convolution stack); the result is the same tensor either way.
    """
    return torch.func.functional_call(module, params, args, kwargs, tie_weights=False)


def global_norm(tensors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """‖(g_1, …, g_P)‖₂ over all entries of all tensors (the norm of ``clip_grad_norm_``, in its order)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def forward_noise(
    x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, gamma: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """x_t = γ_t·x_0 + σ_t·ε, the forward (noising) process q(x_t | x_0) of the DDPM.

    Args:
        x0: (B, C, H, W) clean images.
        t: (B,) int64 timesteps.
        eps: (B, C, H, W) standard normal noise ε.
        gamma, sigma: (T,) γ_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) of the schedule.
    """
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return gamma[t].view(shape) * x0 + sigma[t].view(shape) * eps


def as_float64(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """``value`` as a float64 tensor on ``device`` without a host→device copy.

    A Python number becomes a fill kernel (``torch.full``), never a tensor built from host data
    (which on a GPU is a synchronous copy, and is not allowed inside a CUDA graph capture); a tensor
    already on ``device`` is converted there.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float64)
    return torch.full((), value, dtype=torch.float64, device=device)


def as_scalar(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-d tensor of ``like``'s dtype and device, rounded once from float64.

    A Python float and a float64 tensor holding the same number give the same tensor, so a per-run
    λ or forget strength passed as a tensor computes exactly what the Python float would. No
    host→device copy and no host synchronisation (:func:`as_float64`).
    """
    return as_float64(value, like.device).to(like.dtype)


def two_gradients(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    losses: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, object]],
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], object]:
    """ℓ_1, ℓ_2 and their gradients g_1 = ∇_θ ℓ_1, g_2 = ∇_θ ℓ_2 through one forward (two backward passes).

    Args:
        forward: θ ↦ the model output ε̂ (e.g. a ``functional_call`` of the UNet).
        params: θ, name → tensor. Leaves that require grad are differentiated with
            ``torch.autograd`` (the eager path); otherwise (inside ``vmap``) with ``torch.func.vjp``.
        losses: ε̂ ↦ (ℓ_1, ℓ_2, aux), scalars ℓ and a pytree of tensors ``aux`` that needs no gradient.

    Returns:
        (ℓ_1, ℓ_2, g_1, g_2, aux): the losses detached, the gradients one tensor per parameter in
        ``params``' order (zeros for unused parameters).
    """
    p = tuple(params.values())
    if all(q.requires_grad for q in p):
        out = forward(params)
        l1, l2, aux = losses(out)
        g1 = torch.autograd.grad(l1, p, retain_graph=True, allow_unused=True)
        g2 = torch.autograd.grad(l2, p, allow_unused=True)
        g1 = tuple(torch.zeros_like(q) if g is None else g for g, q in zip(g1, p))
        g2 = tuple(torch.zeros_like(q) if g is None else g for g, q in zip(g2, p))
        return l1.detach(), l2.detach(), g1, g2, aux
    out, vjp_fn = torch.func.vjp(forward, params)

    def one(i: int):
        def f(o):
            res = losses(o)
            return res[i], res

        return f

    d1, (l1, l2, aux) = torch.func.grad(one(0), has_aux=True)(out)
    d2, _ = torch.func.grad(one(1), has_aux=True)(out)
    (g1,) = vjp_fn(d1)
    (g2,) = vjp_fn(d2)
    return l1, l2, tuple(g1[n] for n in params), tuple(g2[n] for n in params), aux


def gradient(
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor | tuple[torch.Tensor, object]],
    params: dict[str, torch.Tensor],
    has_aux: bool = False,
) -> tuple:
    """(ℓ, ∇_θ ℓ) of a scalar ``loss(θ)``: ``torch.autograd`` for leaves that require grad, else ``torch.func``.

    The gradient comes one tensor per parameter in ``params``' order (zeros for unused ones); ℓ detached.
    With ``has_aux``, ``loss`` returns (ℓ, aux), aux a pytree of tensors that need no gradient
    (detached by ``loss``), and the result is (ℓ, ∇_θ ℓ, aux).
    """
    p = tuple(params.values())
    if all(q.requires_grad for q in p):
        value, aux = loss(params) if has_aux else (loss(params), None)
        grads = torch.autograd.grad(value, p, allow_unused=True)
        grads = tuple(torch.zeros_like(q) if g is None else g for g, q in zip(grads, p))
        return (value.detach(), grads, aux) if has_aux else (value.detach(), grads)
    grads, out = torch.func.grad_and_value(loss, has_aux=has_aux)(params)
    grads = tuple(grads[n] for n in params)
    return (out[0], grads, out[1]) if has_aux else (out, grads)
