"""VI-Variance: Algorithm 2's λ-posterior, trained to make SISS's estimates less noisy.

SISS's importance-sampled estimates ℓ_x and ℓ_a are unbiased for every λ ∈ (0, 1) (DESIGN §6):
λ does not change what the step estimates, only how noisy the estimates are. A high λ leaves few
retain-drawn pairs, each with a large weight w_x ≈ 1/(1 − λ), so ℓ_x (and the retain gradient)
is noisy; a low λ does the same to ℓ_a. VI-Variance keeps VIAdaptive's inference network f_φ, its
reparameterisation λ = sigmoid(μ_φ(c) + σ_φ(c)·u) and its KL term, and swaps the λ-objective:

    J(λ) = Var_λ(ℓ_x)/ℓ_x² + Var_λ(ℓ_a)/ℓ_a²,   L(φ) = J(λ) + β·KL(N(μ, σ²) ‖ N(0, 1)),

the sum of the relative variances (squared coefficients of variation) of the retain and forget
estimates. Relative variances, because ℓ_x and ℓ_a have different scales (a plain sum of
variances would let the larger loss decide λ alone); both are scale-free (a batch's estimate of
each lies in [0, 1]) and fall like 1/B. In the limit of well-separated samples J = (κ_x/(1 − λ) + κ_a/λ − 2)/B
(κ = E[e²]/E[e]²), which is smallest at λ* = √κ_a/(√κ_x + √κ_a): the mixture that balances the
two estimates' noise. The φ step is VIAdaptive's, with ∂J/∂λ read from the env's ``info``:

- ``derivative="resampled"`` (default): ``drel_var_loss_r_dlam_resampled`` +
  ``drel_var_loss_f_dlam_resampled``, the estimate of dJ/dλ when the batch is redrawn from q_λ
  (what choosing a λ does).
- ``derivative="fixed"``: ``drel_var_loss_r_dlam`` + ``drel_var_loss_f_dlam``, the derivative of
  this batch's estimated J with the samples held fixed (as VIAdaptive's ∂L_SISS/∂λ is); it misses
  how λ moves the draw, and vanishes for well-separated samples.

``docs/variance.md`` derives both. The context and the costs are VIAdaptive's (no extra passes).
"""

from __future__ import annotations

from typing import Literal

from .vi_adaptive import VIAdaptive

__all__ = ["VIVariance"]

VARIANCE_GRADIENT_KEYS = {
    "resampled": ("drel_var_loss_r_dlam_resampled", "drel_var_loss_f_dlam_resampled"),
    "fixed": ("drel_var_loss_r_dlam", "drel_var_loss_f_dlam"),
}
"""The two ``info`` entries whose sum is ∂J/∂λ, per ``derivative``."""


class VIVariance(VIAdaptive):
    """VIAdaptive's f_φ and KL with J(λ) = Var_λ(ℓ_x)/ℓ_x² + Var_λ(ℓ_a)/ℓ_a² as φ's λ-objective.

    Args:
        derivative: "resampled" (dJ/dλ with the batch redrawn from q_λ) or "fixed" (samples held fixed).
        Other arguments as :class:`~unlearn_gym.baselines.vi_adaptive.VIAdaptive`.
    """

    gradient_name = "drel_var_dlam"

    def __init__(
        self,
        lr: float = 1e-3,
        kl_coef: float = 0.01,
        hidden: tuple[int, ...] = (64, 32),
        sample: bool = True,
        learn: bool = True,
        seed: int = 0,
        derivative: Literal["resampled", "fixed"] = "resampled",
    ):
        if derivative not in VARIANCE_GRADIENT_KEYS:
            raise ValueError(f"VIVariance.derivative must be 'resampled' or 'fixed', got {derivative!r}")
        self.derivative = derivative
        self.name = "vi-variance" if derivative == "resampled" else "vi-variance:fixed"
        super().__init__(lr, kl_coef, hidden, sample, learn, seed)

    def lam_gradient(self, info: dict) -> float:
        """∂J/∂λ = ∂(Var(ℓ_x)/ℓ_x²)/∂λ + ∂(Var(ℓ_a)/ℓ_a²)/∂λ, from the step's ``info``."""
        keys = VARIANCE_GRADIENT_KEYS[self.derivative]
        if not isinstance(info, dict) or any(k not in info for k in keys):
            raise KeyError(f"VIVariance.observe needs info[{keys[0]!r}] and info[{keys[1]!r}], which SISS-v0 reports")
        return float(info[keys[0]]) + float(info[keys[1]])
