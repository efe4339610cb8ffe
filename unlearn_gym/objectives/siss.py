"""SISS and the reference's other data-driven unlearning objectives, as pure functions.

SISS (Alberti et al. 2025, "Data Unlearning in Diffusion Models") estimates, with one UNet forward
on samples of the λ-mixture q_λ(m_t) = (1 − λ) q(m_t | x) + λ q(m_t | a), both the retain loss
ℓ_x = E‖ε_θ(x_t) − ε‖² and the forget loss ℓ_a = E‖ε_θ(a_t) − ε‖² by importance sampling, and
combines their gradients so that the model keeps the retain set and leaves the forget set. The
exact recipe (DESIGN §5), per step with batch B:

1. x ~ retain, a ~ forget, one shared ε ~ N(0, I) and t ~ U{0..T−1} per pair;
   x_t = γ_t x + σ_t ε, a_t = γ_t a + σ_t ε.
2. Per pair, m_t = a_t with probability λ, else x_t; the UNet gets the label of the drawn source.
3. One forward ε̂ = ε_θ(m_t, t, y).
4. Targets ε_x = (m_t − γ_t x)/σ_t, ε_a = (m_t − γ_t a)/σ_t.
5. Importance weights, in log space (exact at λ ∈ {0, 1}):
   d_x = ‖m_t − γ_t x‖²/(2σ_t²), d_a = ‖m_t − γ_t a‖²/(2σ_t²),
   log w_x = −d_x − logaddexp(log(1 − λ) − d_x, log λ − d_a), log w_a likewise with −d_a;
   so (1 − λ)·w_x + λ·w_a = 1 for every sample.
6. ℓ_x = mean_i w_x,i Σ_pixels (ε̂ − ε_x)², ℓ_a = mean_i w_a,i Σ_pixels (ε̂ − ε_a)².
7. g_x = ∇_θ ℓ_x, g_a = ∇_θ ℓ_a (two backward passes through the one forward).
8. Surgery: "norm": g = g_x − (S/‖g_a‖)·g_a; "superfactor": g = n/(n−k)·g_x − (1+s)·k/(n−k)·g_a.
   (Clipping at 1.0 and the AdamW step are the engine's.)
9. How noisy the estimates are: the estimated variances of ℓ_x, ℓ_a and of the combined loss, their
   relative variances and their derivatives in λ (:class:`EstimatorVariances`, derived in
   ``docs/variance.md``), from the per-sample weights and errors of steps 5–6 (no extra pass).

Every function here is pure: it reads a model through ``torch.func.functional_call`` with the
parameters it is given (so the engine can map it over a stack of runs with ``vmap`` or a loop),
draws nothing at random, and returns tensors without copying them to the host. λ and the forget
strength may be Python floats or float64 0-d tensors (one run's entry of a batch); both compute
the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch

from .common import as_float64, as_scalar, call, forward_noise, global_norm, two_gradients

__all__ = [
    "SISSConfig",
    "SISSBatch",
    "ObjectiveResult",
    "EstimatorVariances",
    "estimator_variances",
    "OBJECTIVES",
    "draw_batch",
    "importance_log_weights",
    "log_lambda_pair",
    "siss_objective",
    "siss_no_is_objective",
    "neggrad_objective",
    "erasediff_objective",
    "naive_deletion_objective",
    "norm_surgery",
    "surgery",
    "surgery_coefficients",
    "global_norm",
]

ObjectiveName = Literal["siss", "siss-no-is", "neggrad", "erasediff", "naive-deletion"]


@dataclass(frozen=True)
class SISSConfig:
    """Settings of the SISS update and of the baseline objectives (reference defaults, DESIGN §5)."""

    objective: ObjectiveName = "siss"
    """Which objective: SISS, SISS without importance sampling, NegGrad, EraseDiff, naive deletion."""
    surgery: Literal["norm", "superfactor"] = "norm"
    """Gradient combination of SISS: "norm" (the official default) or "superfactor" (the paper's)."""
    scale: float = 5.0
    """S of "norm" surgery: the norm of the subtracted forget gradient."""
    superfactor: float = 0.0
    """s of "superfactor" surgery: loss = n/(n−k)·ℓ_x − (1+s)·k/(n−k)·ℓ_a."""
    neggrad_scale: float = 1.0
    """s of NegGrad: loss = −s·ℓ_a."""
    erasediff_eta: float = 1e-3
    """η of EraseDiff: g = g_x + max(η − ⟨g_x, g_a⟩/‖g_a‖², 0)·g_a."""
    batch_size: int = 64
    """B: retain/forget pairs per step."""
    lr: float = 5e-5
    """AdamW learning rate."""
    betas: tuple[float, float] = (0.95, 0.999)
    """AdamW betas."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    clip_norm: float = 1.0
    """Global L2 norm the combined gradient is clipped to before the AdamW step."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.objective not in OBJECTIVES:
            raise ValueError(f"SISSConfig.objective must be one of {sorted(OBJECTIVES)}, got {self.objective!r}")
        if self.surgery not in ("norm", "superfactor"):
            raise ValueError(f"SISSConfig.surgery must be 'norm' or 'superfactor', got {self.surgery!r}")
        for name in ("scale", "superfactor", "neggrad_scale", "erasediff_eta", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"SISSConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"SISSConfig.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"SISSConfig.lr must be > 0, got {self.lr}")
        if not self.clip_norm > 0:
            raise ValueError(f"SISSConfig.clip_norm must be > 0, got {self.clip_norm}")


@dataclass(frozen=True)
class SISSBatch:
    """The randomness of one step, drawn before the update so the update itself is deterministic."""

    x: torch.Tensor
    """(B, C, H, W) retain images."""
    y_x: torch.Tensor
    """(B,) their labels."""
    a: torch.Tensor
    """(B, C, H, W) forget images."""
    y_a: torch.Tensor
    """(B,) their labels."""
    t: torch.Tensor
    """(B,) int64 timesteps, shared by each pair."""
    eps: torch.Tensor
    """(B, C, H, W) noise ε, shared by each pair."""
    u: torch.Tensor
    """(B,) U(0, 1) draws: pair i uses the forget sample iff u_i < λ."""
    noise_target: torch.Tensor | None = None
    """(B, C, H, W) EraseDiff's uniform-noise forget target (None for the other objectives)."""


@dataclass(frozen=True)
class ObjectiveResult:
    """What one objective evaluation returns (all tensors, on the model's device, no graph).

    The statistics carry the names of the engine's :class:`~unlearn_gym.engines.StepStats` and of the
    env's ``info`` (r = retain, f = forget; the paper's x and a): the engine reads each one by name.
    """

    grads: tuple[torch.Tensor, ...]
    """The combined update direction g, one tensor per parameter (before clipping)."""
    loss_r: torch.Tensor
    """ℓ_x, the retain loss estimate, scalar."""
    loss_f: torch.Tensor
    """ℓ_a, the forget loss estimate, scalar."""
    grad_r_norm: torch.Tensor
    """‖g_x‖, the global L2 norm of the retain gradient."""
    grad_f_norm: torch.Tensor
    """‖g_a‖, the global L2 norm of the forget gradient."""
    forget_share: torch.Tensor
    """Share of the batch drawn from the forget set (the realised λ)."""
    dloss_r_dlam: torch.Tensor
    """∂ℓ_x/∂λ with the samples held fixed (0 where λ does not enter)."""
    dloss_f_dlam: torch.Tensor
    """∂ℓ_a/∂λ with the samples held fixed."""
    dloss_dlam: torch.Tensor
    """∂L/∂λ of the combined loss L = c_x·ℓ_x − c_a·ℓ_a whose gradient is ``grads`` (the surgery's
    coefficients c_x, c_a held fixed, samples held fixed): what Algorithm 2 back-propagates into φ."""
    variances: EstimatorVariances
    """The estimated variances of ℓ_x, ℓ_a and L and their λ-derivatives (all 0 where λ does not enter)."""


@dataclass(frozen=True)
class EstimatorVariances:
    """How noisy SISS's importance-sampled estimates are, and how that moves with λ (docs/variance.md).

    Per pair i of the batch (B pairs) the estimates are means of per-sample terms,
    ℓ_x = mean_i v_x,i, ℓ_a = mean_i v_a,i and L = c_x·ℓ_x − c_a·ℓ_a = mean_i v_i, with

        v_x,i = w_x,i·e_x,i,  v_a,i = w_a,i·e_a,i,  v_i = c_x·v_x,i − c_a·v_a,i,
        e_x,i = Σ_pixels (ε̂_i − ε_x,i)²,  e_a,i = Σ_pixels (ε̂_i − ε_a,i)²,

    c_x, c_a the surgery's coefficients (held fixed). λ enters only through the weights, and every
    term has the same logarithmic derivative ∂v_i/∂λ = ρ_i·v_i with ρ_i = w_x,i − w_a,i (from
    ∂w_x/∂λ = −w_x(w_a − w_x), ∂w_a/∂λ = −w_a(w_a − w_x)). "Samples held fixed" derivatives keep
    m_t, t, ε and the draw of each pair as they are; "resampled" ones estimate the derivative of the
    estimator's variance under q_λ, where the draw moves with λ too. All fields are 0-d tensors, named
    as the engine's ``StepStats`` and the env's ``info`` name them (r = retain for the paper's x,
    f = forget for its a).
    """

    var_loss_r: torch.Tensor
    """Var̂(ℓ_x) = Σ_i (v_x,i − ℓ_x)²/(B(B − 1)): the batch's sample variance of v_x,i over B (0 if B = 1)."""
    var_loss_f: torch.Tensor
    """Var̂(ℓ_a) = Σ_i (v_a,i − ℓ_a)²/(B(B − 1))."""
    var_loss: torch.Tensor
    """Var̂(L) = Σ_i (v_i − L)²/(B(B − 1)), c_x and c_a held fixed."""
    dvar_loss_r_dlam: torch.Tensor
    """∂Var̂(ℓ_x)/∂λ, samples held fixed: 2·Σ_i (v_x,i − ℓ_x)·ρ_i·v_x,i/(B(B − 1))."""
    dvar_loss_f_dlam: torch.Tensor
    """∂Var̂(ℓ_a)/∂λ, samples held fixed: 2·Σ_i (v_a,i − ℓ_a)·ρ_i·v_a,i/(B(B − 1))."""
    dvar_loss_dlam: torch.Tensor
    """∂Var̂(L)/∂λ, samples and c_x, c_a held fixed: 2·Σ_i (v_i − L)·ρ_i·v_i/(B(B − 1))."""
    rel_var_loss_r: torch.Tensor
    """Var̂(ℓ_x)/ℓ_x² = (B·Σ_i p_x,i² − 1)/(B − 1) with p_x,i = v_x,i/Σ_j v_x,j (from log w_x + log e_x, so
    exact where the weights underflow); in [0, 1]: 0 for equal terms, 1 when one term carries all (0 if
    B = 1 or every term is 0)."""
    rel_var_loss_f: torch.Tensor
    """Var̂(ℓ_a)/ℓ_a², likewise with p_a,i = v_a,i/Σ_j v_a,j."""
    drel_var_loss_r_dlam: torch.Tensor
    """∂(Var̂(ℓ_x)/ℓ_x²)/∂λ, samples held fixed: 2B/(B − 1)·(Σ_i p_x,i²·ρ_i − Σ_i p_x,i²·Σ_j p_x,j·ρ_j)."""
    drel_var_loss_f_dlam: torch.Tensor
    """∂(Var̂(ℓ_a)/ℓ_a²)/∂λ, samples held fixed, likewise with p_a."""
    dvar_loss_r_dlam_resampled: torch.Tensor
    """mean_i ρ_i·v_x,i²/B: an unbiased estimate of dVar_λ(ℓ_x)/dλ, the derivative of the estimator's
    variance when the batch is redrawn from q_λ (half the samples-held-fixed derivative of mean_i v_x,i²/B)."""
    dvar_loss_f_dlam_resampled: torch.Tensor
    """mean_i ρ_i·v_a,i²/B: an unbiased estimate of dVar_λ(ℓ_a)/dλ."""
    dvar_loss_dlam_resampled: torch.Tensor
    """mean_i ρ_i·v_i²/B: an unbiased estimate of dVar_λ(L)/dλ (c_x, c_a held fixed)."""
    drel_var_loss_r_dlam_resampled: torch.Tensor
    """Σ_i p_x,i²·ρ_i = (mean_i ρ_i·v_x,i²/B)/ℓ_x²: the plug-in estimate of d(Var_λ(ℓ_x)/ℓ_x²)/dλ (ℓ_x's
    expectation does not depend on λ)."""
    drel_var_loss_f_dlam_resampled: torch.Tensor
    """Σ_i p_a,i²·ρ_i: the plug-in estimate of d(Var_λ(ℓ_a)/ℓ_a²)/dλ."""

    @classmethod
    def zeros(cls, like: torch.Tensor) -> EstimatorVariances:
        """Every field 0 (objectives without importance weights), as 0-d tensors like ``like``."""
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        return cls(*(zero for _ in fields(cls)))


def estimator_variances(
    log_w_x: torch.Tensor,
    log_w_a: torch.Tensor,
    err_x: torch.Tensor,
    err_a: torch.Tensor,
    c_x: torch.Tensor | float = 1.0,
    c_a: torch.Tensor | float = 1.0,
) -> EstimatorVariances:
    """The variance statistics of :class:`EstimatorVariances` from one batch's weights and errors.

    Args:
        log_w_x, log_w_a: (B,) log w_x,i and log w_a,i of SISS step 5.
        err_x, err_a: (B,) e_x,i = Σ_pixels (ε̂_i − ε_x,i)² and e_a,i (no graph needed).
        c_x, c_a: the surgery's coefficients of L = c_x·ℓ_x − c_a·ℓ_a (held fixed).

    Returns:
        The 15 statistics, 0-d tensors in ``err_x``'s dtype; finite at λ ∈ {0, 1}.
    """
    B = err_x.shape[0]
    norm = B * max(B - 1, 1)  # B(B − 1); with B = 1 every deviation is 0, so the variances are 0
    w_x, w_a = log_w_x.exp(), log_w_a.exp()
    rho = w_x - w_a  # ∂ log v/∂λ of every term
    v_x, v_a = w_x * err_x, w_a * err_a
    v = c_x * v_x - c_a * v_a

    def var_and_derivatives(terms):
        dev = terms - terms.mean()
        return (
            dev.pow(2).sum() / norm,
            2 * (dev * rho * terms).sum() / norm,
            (rho * terms.pow(2)).mean() / B,
        )

    def relative(log_w, err):
        logits = log_w + torch.log(err)
        ok = torch.isfinite(logits).any()  # some term > 0
        p = torch.softmax(torch.where(ok, logits, 0.0), 0)
        sum_p2 = p.pow(2).sum()
        sum_p2_rho = (p.pow(2) * rho).sum()
        rel = (B * sum_p2 - 1) / max(B - 1, 1)
        drel = 2 * B / max(B - 1, 1) * (sum_p2_rho - sum_p2 * (p * rho).sum())
        zero = torch.zeros_like(rel)
        return torch.where(ok, rel, zero), torch.where(ok, drel, zero), torch.where(ok, sum_p2_rho, zero)

    var_x, dvar_x, dvar_x_q = var_and_derivatives(v_x)
    var_a, dvar_a, dvar_a_q = var_and_derivatives(v_a)
    var_l, dvar_l, dvar_l_q = var_and_derivatives(v)
    rel_x, drel_x, drel_x_q = relative(log_w_x, err_x)
    rel_a, drel_a, drel_a_q = relative(log_w_a, err_a)
    return EstimatorVariances(
        var_loss_r=var_x,
        var_loss_f=var_a,
        var_loss=var_l,
        dvar_loss_r_dlam=dvar_x,
        dvar_loss_f_dlam=dvar_a,
        dvar_loss_dlam=dvar_l,
        rel_var_loss_r=rel_x,
        rel_var_loss_f=rel_a,
        drel_var_loss_r_dlam=drel_x,
        drel_var_loss_f_dlam=drel_a,
        dvar_loss_r_dlam_resampled=dvar_x_q,
        dvar_loss_f_dlam_resampled=dvar_a_q,
        dvar_loss_dlam_resampled=dvar_l_q,
        drel_var_loss_r_dlam_resampled=drel_x_q,
        drel_var_loss_f_dlam_resampled=drel_a_q,
    )


def draw_batch(
    retain_images: torch.Tensor,
    retain_labels: torch.Tensor,
    forget_images: torch.Tensor,
    forget_labels: torch.Tensor,
    batch_size: int,
    num_timesteps: int,
    generator: torch.Generator,
    with_noise_target: bool = False,
) -> SISSBatch:
    """Draw (x, a, t, ε, u) for one step from ``generator`` (on the images' device)."""
    device = retain_images.device
    ix = torch.randint(len(retain_images), (batch_size,), generator=generator, device=device)
    ia = torch.randint(len(forget_images), (batch_size,), generator=generator, device=device)
    t = torch.randint(num_timesteps, (batch_size,), generator=generator, device=device)
    x = retain_images[ix]
    eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    u = torch.rand((batch_size,), generator=generator, device=device)
    target = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype) if with_noise_target else None
    return SISSBatch(x, retain_labels[ix], forget_images[ia], forget_labels[ia], t, eps, u, target)


def importance_log_weights(
    d_x: torch.Tensor, d_a: torch.Tensor, log_lam: torch.Tensor, log_one_minus_lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_x and log w_a of SISS step 5, stable for λ ∈ [0, 1].

    Args:
        d_x: (B,) ‖m_t − γ_t x‖²/(2σ_t²).
        d_a: (B,) ‖m_t − γ_t a‖²/(2σ_t²).
        log_lam, log_one_minus_lam: log λ and log(1 − λ) (−inf allowed).

    Returns:
        (log w_x, log w_a), each (B,), with w_x = q(m|x)/q_λ(m) and w_a = q(m|a)/q_λ(m).
    """
    log_q_lam = torch.logaddexp(log_one_minus_lam - d_x, log_lam - d_a)
    return -d_x - log_q_lam, -d_a - log_q_lam


def log_lambda_pair(lam: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log λ, log(1 − λ)) computed in float64 (exact near λ = 1), cast to ``like``'s dtype and device."""
    lam64 = as_float64(lam, like.device)
    return torch.log(lam64).to(like.dtype), torch.log1p(-lam64).to(like.dtype)


def _sq_err(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) Σ_pixels (pred − target)²."""
    return (pred - target).pow(2).flatten(1).sum(1)


def norm_surgery(
    g_x: tuple[torch.Tensor, ...], g_a: tuple[torch.Tensor, ...], scale: torch.Tensor | float, grad_a_norm: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """g = g_x − (S/‖g_a‖)·g_a, with S/‖g_a‖ := 0 when ‖g_a‖ = 0."""
    inv = grad_a_norm.clamp_min(torch.finfo(grad_a_norm.dtype).tiny).reciprocal()
    coef = torch.where(grad_a_norm > 0, inv * as_scalar(scale, grad_a_norm), 0.0)
    return tuple(gx + ga * -coef for gx, ga in zip(g_x, g_a))


def surgery_coefficients(
    grad_a_norm: torch.Tensor,
    config: SISSConfig,
    forget_scale: torch.Tensor | float = 1.0,
    dataset_size: int | None = None,
    forget_size: int | None = None,
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(c_x, c_a) of step 8, so that the combined direction is g = c_x·g_x − c_a·g_a.

    "norm": c_x = 1, c_a = forget_scale·S/‖g_a‖ (0 when ‖g_a‖ = 0).
    "superfactor": c_x = n/(n−k), c_a = forget_scale·(1+s)·k/(n−k) (n = ``dataset_size``, k = ``forget_size``).
    """
    if config.surgery == "norm":
        inv = grad_a_norm.clamp_min(torch.finfo(grad_a_norm.dtype).tiny).reciprocal()
        c_a = torch.where(grad_a_norm > 0, inv * as_scalar(config.scale * forget_scale, grad_a_norm), 0.0)
        return 1.0, c_a
    if dataset_size is None or forget_size is None or dataset_size <= forget_size:
        raise ValueError(
            f"superfactor surgery needs dataset_size n > forget_size k, got n={dataset_size}, k={forget_size}"
        )
    c_x = dataset_size / (dataset_size - forget_size)
    c_a = as_scalar((1 + config.superfactor) * forget_size / (dataset_size - forget_size) * forget_scale, grad_a_norm)
    return c_x, c_a


def surgery(
    g_x: tuple[torch.Tensor, ...],
    g_a: tuple[torch.Tensor, ...],
    grad_a_norm: torch.Tensor,
    config: SISSConfig,
    forget_scale: torch.Tensor | float = 1.0,
    dataset_size: int | None = None,
    forget_size: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Step 8: combine g_x and g_a by ``config.surgery`` into g = c_x·g_x − c_a·g_a.

    "norm": g = g_x − (forget_scale·S/‖g_a‖)·g_a.
    "superfactor": g = n/(n−k)·g_x − forget_scale·(1+s)·k/(n−k)·g_a (n = ``dataset_size``, k = ``forget_size``).
    """
    if config.surgery == "norm":
        return norm_surgery(g_x, g_a, config.scale * forget_scale, grad_a_norm)
    c_x, c_a = surgery_coefficients(grad_a_norm, config, forget_scale, dataset_size, forget_size)
    return tuple(gx * c_x + ga * -c_a for gx, ga in zip(g_x, g_a))


def siss_objective(
    unet: torch.nn.Module,
    params: dict[str, torch.Tensor],
    batch: SISSBatch,
    lam: torch.Tensor | float,
    gamma: torch.Tensor,
    sigma: torch.Tensor,
    config: SISSConfig,
    forget_scale: torch.Tensor | float = 1.0,
    dataset_size: int | None = None,
    forget_size: int | None = None,
) -> ObjectiveResult:
    """One SISS evaluation (steps 2–9 of the module docstring) at mixture weight λ.

    Args:
        unet: the ε-prediction UNet (its parameters are replaced by ``params``).
        params: name → parameter tensor (requires grad) to differentiate against.
        batch: x, a, t, ε, u of this step.
        lam: λ ∈ [0, 1], scalar (float or 0-d tensor).
        gamma, sigma: (T,) γ_t and σ_t of the noise schedule.
        config: surgery mode and constants.
        forget_scale: multiplies S ("norm") or (1 + s) ("superfactor"): the forget-strength action.
        dataset_size, forget_size: n and k of "superfactor" surgery.
    """
    # 1. noisy pairs x_t, a_t with shared t and ε
    x_t = forward_noise(batch.x, batch.t, batch.eps, gamma, sigma)
    a_t = forward_noise(batch.a, batch.t, batch.eps, gamma, sigma)
    # 2. the λ-mixture: pair i takes a_t when u_i < λ
    lam_t = as_scalar(lam, x_t)
    take_a = batch.u < lam_t
    m_t = torch.where(take_a.view(-1, 1, 1, 1), a_t, x_t)
    y = torch.where(take_a, batch.y_a, batch.y_x)
    # 4. targets
    g = gamma[batch.t].view(-1, 1, 1, 1)
    s = sigma[batch.t].view(-1, 1, 1, 1)
    eps_x = (m_t - g * batch.x) / s
    eps_a = (m_t - g * batch.a) / s
    # 5. importance weights (independent of θ)
    d_x = _sq_err(m_t, g * batch.x) / (2 * s.view(-1) ** 2)
    d_a = _sq_err(m_t, g * batch.a) / (2 * s.view(-1) ** 2)
    log_w_x, log_w_a = importance_log_weights(d_x, d_a, *log_lambda_pair(lam, d_x))
    w_x, w_a = log_w_x.exp(), log_w_a.exp()

    # 3. one forward; 6. weighted losses
    def forward(p):
        return call(unet, p, (m_t, batch.t), {"class_labels": y}).sample

    def losses(eps_hat):
        err_x, err_a = _sq_err(eps_hat, eps_x), _sq_err(eps_hat, eps_a)
        return (w_x * err_x).mean(), (w_a * err_a).mean(), (err_x.detach(), err_a.detach())

    # 7. two gradients through the one forward
    loss_x, loss_a, g_x, g_a, (err_x, err_a) = two_gradients(forward, params, losses)
    # the samples held fixed, ∂w_x/∂λ = −w_x(w_a − w_x), ∂w_a/∂λ = −w_a(w_a − w_x)
    dlx = (-w_x * (w_a - w_x) * err_x).mean()
    dla = (-w_a * (w_a - w_x) * err_a).mean()
    n_x, n_a = global_norm(g_x), global_norm(g_a)
    # 8. surgery
    grads = surgery(g_x, g_a, n_a, config, forget_scale, dataset_size, forget_size)
    c_x, c_a = surgery_coefficients(n_a, config, forget_scale, dataset_size, forget_size)
    # 9. the estimates' variances and their λ-derivatives, from the same weights and errors
    variances = estimator_variances(log_w_x, log_w_a, err_x, err_a, c_x, c_a)
    return ObjectiveResult(
        grads=grads,
        loss_r=loss_x,
        loss_f=loss_a,
        grad_r_norm=n_x,
        grad_f_norm=n_a,
        forget_share=take_a.to(x_t.dtype).mean(),
        dloss_r_dlam=dlx,
        dloss_f_dlam=dla,
        dloss_dlam=c_x * dlx - c_a * dla,
        variances=variances,
    )


def _paired_gradients(unet, params, batch: SISSBatch, gamma, sigma, forget_target: torch.Tensor):
    """ℓ_x = mean Σ(ε_θ(x_t, y_x) − ε)², ℓ_a = mean Σ(ε_θ(a_t, y_a) − target)², with g_x, g_a.

    The two forwards (x_t and a_t) run as one UNet call on the 2B stacked inputs.
    """
    x_t = forward_noise(batch.x, batch.t, batch.eps, gamma, sigma)
    a_t = forward_noise(batch.a, batch.t, batch.eps, gamma, sigma)
    inputs = (torch.cat([x_t, a_t]), torch.cat([batch.t, batch.t]))
    labels = torch.cat([batch.y_x, batch.y_a])

    def forward(p):
        return call(unet, p, inputs, {"class_labels": labels}).sample

    def losses(out):
        eps_hat_x, eps_hat_a = out.chunk(2)
        return _sq_err(eps_hat_x, batch.eps).mean(), _sq_err(eps_hat_a, forget_target).mean(), ()

    loss_x, loss_a, g_x, g_a, _ = two_gradients(forward, params, losses)
    return loss_x, loss_a, g_x, g_a


def _result(grads, loss_x, loss_a, n_x, n_a, forget_share) -> ObjectiveResult:
    """The result of an objective without importance weights: λ does not enter (its derivatives and
    the variances are 0) and the forget share is the objective's fixed one."""
    zero = torch.zeros((), dtype=loss_x.dtype, device=loss_x.device)
    return ObjectiveResult(
        grads=tuple(grads),
        loss_r=loss_x,
        loss_f=loss_a,
        grad_r_norm=n_x,
        grad_f_norm=n_a,
        forget_share=torch.full((), forget_share, dtype=loss_x.dtype, device=loss_x.device),
        dloss_r_dlam=zero,
        dloss_f_dlam=zero,
        dloss_dlam=zero,
        variances=EstimatorVariances.zeros(loss_x),
    )


def siss_no_is_objective(
    unet, params, batch, lam, gamma, sigma, config, forget_scale=1.0, dataset_size=None, forget_size=None
):
    """SISS without importance sampling: ℓ_x and ℓ_a from two forwards (x_t and a_t), same surgery.

    λ does not enter (every pair contributes both terms); ``forget_scale`` scales S.
    """
    loss_x, loss_a, g_x, g_a = _paired_gradients(unet, params, batch, gamma, sigma, batch.eps)
    n_x, n_a = global_norm(g_x), global_norm(g_a)
    grads = surgery(g_x, g_a, n_a, config, forget_scale, dataset_size, forget_size)
    return _result(grads, loss_x, loss_a, n_x, n_a, 0.5)


def neggrad_objective(
    unet, params, batch, lam, gamma, sigma, config, forget_scale=1.0, dataset_size=None, forget_size=None
):
    """NegGrad: loss = −s·ℓ_a, i.e. g = −s·g_a (ℓ_x and ‖g_x‖ are computed for the statistics only)."""
    loss_x, loss_a, g_x, g_a = _paired_gradients(unet, params, batch, gamma, sigma, batch.eps)
    coef = as_scalar(-config.neggrad_scale * forget_scale, loss_a)
    grads = [ga * coef for ga in g_a]
    return _result(grads, loss_x, loss_a, global_norm(g_x), global_norm(g_a), 1.0)


def erasediff_objective(
    unet, params, batch, lam, gamma, sigma, config, forget_scale=1.0, dataset_size=None, forget_size=None
):
    """EraseDiff: the forget target is uniform noise; g = g_x + max(η − ⟨g_x, g_a⟩/‖g_a‖², 0)·g_a.

    ``batch.noise_target`` holds the uniform noise (draw the batch with ``with_noise_target=True``).
    """
    if batch.noise_target is None:
        raise ValueError("erasediff_objective needs batch.noise_target: draw_batch(..., with_noise_target=True)")
    loss_x, loss_a, g_x, g_a = _paired_gradients(unet, params, batch, gamma, sigma, batch.noise_target)
    n_x, n_a = global_norm(g_x), global_norm(g_a)
    dot = torch.stack([(gx * ga).sum() for gx, ga in zip(g_x, g_a)]).sum()
    coef = torch.clamp(config.erasediff_eta - dot / n_a.pow(2).clamp_min(torch.finfo(n_a.dtype).tiny), min=0.0)
    coef = torch.where(n_a > 0, coef * as_scalar(forget_scale, coef), 0.0)
    grads = [gx + ga * coef for gx, ga in zip(g_x, g_a)]
    return _result(grads, loss_x, loss_a, n_x, n_a, 0.5)


def naive_deletion_objective(
    unet, params, batch, lam, gamma, sigma, config, forget_scale=1.0, dataset_size=None, forget_size=None
):
    """Naive deletion: fine-tune on the retain set only, g = g_x."""
    loss_x, loss_a, g_x, g_a = _paired_gradients(unet, params, batch, gamma, sigma, batch.eps)
    return _result(g_x, loss_x, loss_a, global_norm(g_x), global_norm(g_a), 0.0)


OBJECTIVES = {
    "siss": siss_objective,
    "siss-no-is": siss_no_is_objective,
    "neggrad": neggrad_objective,
    "erasediff": erasediff_objective,
    "naive-deletion": naive_deletion_objective,
}
