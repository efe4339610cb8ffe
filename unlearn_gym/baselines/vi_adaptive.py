"""VI-Adaptive: the paper's Algorithm 2 (Adaptive-λ SISS) as an online-learning λ-policy.

λ is a latent variable with a learned posterior. An inference network f_φ reads the context
c = [log ℓ_x, log ℓ_a, log ‖g_x‖, log ‖g_a‖] (SISS-v0's first four observation entries: the
log-ratios to the reset values) and outputs μ and log σ²; the policy samples

    z = μ_φ(c) + σ_φ(c)·u,  u ~ N(0, 1),   λ = sigmoid(z),

and after the env applied λ it takes one Adam step on

    L(φ) = L_SISS(θ; λ) + β·KL(N(μ, σ²) ‖ N(0, 1)),

whose gradient reaches φ through λ (DESIGN §6):

    ∂L/∂φ = (∂L_SISS/∂λ)·λ(1 − λ)·∂z/∂φ + β·∂KL/∂φ.

∂L_SISS/∂λ at the applied λ is what the env reports in ``info["dloss_dlam"]`` (the combined
SISS loss c_x·ℓ_x − c_a·ℓ_a of the step, samples and surgery coefficients held fixed). As the
authors' code does, the context is the previous step's statistics (at reset: zeros, i.e. the
pretrained model), so this costs no extra passes. Unlike the authors' public code, which detaches
the SISS loss before adding the KL term (so φ then learns from the KL alone), the SISS term's
gradient reaches φ here: ``tests/test_baselines.py`` checks it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .policies import LambdaPolicy

__all__ = ["VIAdaptive", "InferenceNetwork"]

CONTEXT_SLICE = slice(0, 4)


class InferenceNetwork(nn.Module):
    """f_φ: c (4) → 64 → 32 → (μ, log σ²), the authors' architecture (tanh activations)."""

    def __init__(self, context_dim: int = 4, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        layers, d = [], context_dim
        for width in hidden:
            layers += [nn.Linear(d, width), nn.Tanh()]
            d = width
        layers.append(nn.Linear(d, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(context)
        return out[..., 0], out[..., 1].clamp(-10.0, 4.0)  # μ, log σ²


class VIAdaptive(LambdaPolicy):
    """Adaptive-λ SISS (Algorithm 2), learned online while it unlearns.

    φ's λ-objective J is L_SISS (∂J/∂λ from ``info["dloss_dlam"]``); a subclass changes J by
    overriding :meth:`lam_gradient` (see :class:`~unlearn_gym.baselines.vi_variance.VIVariance`).

    Args:
        lr: Adam's step size for φ (the authors used 1e-5 over long runs; 1e-3 suits T ≈ 20–100 steps).
        kl_coef: β, the weight of KL(N(μ, σ²) ‖ N(0, 1)) (the authors' 0.01).
        hidden: hidden widths of f_φ.
        sample: draw λ = sigmoid(μ + σu) at every step, as Algorithm 2 does (also when ``predict``
            is called with ``deterministic=True``); False: λ = sigmoid(μ) when deterministic.
        learn: take the φ step in :meth:`observe` (False: a frozen f_φ).
        seed: seeds φ's initialisation and u; ``reset(seed)`` re-initialises both for each episode.
    """

    name = "vi-adaptive"
    gradient_name = "dloss_dlam"
    """The key of ∂J/∂λ in :attr:`last`."""

    def __init__(
        self,
        lr: float = 1e-3,
        kl_coef: float = 0.01,
        hidden: tuple[int, ...] = (64, 32),
        sample: bool = True,
        learn: bool = True,
        seed: int = 0,
    ):
        self.lr, self.kl_coef, self.hidden = float(lr), float(kl_coef), tuple(hidden)
        self.sample, self.learn = bool(sample), bool(learn)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """A fresh f_φ and Adam state (Algorithm 2 learns φ within one unlearning run)."""
        seed = 0 if seed is None else int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = InferenceNetwork(4, self.hidden)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.lr)
        self._rng = np.random.default_rng(seed)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last: dict[str, float] = {}

    @staticmethod
    def context(obs: np.ndarray) -> torch.Tensor:
        """c = the observation's log-scaled losses and gradient norms, (n, 4) float32."""
        return torch.as_tensor(np.asarray(obs, np.float32)[:, CONTEXT_SLICE])

    def lam(self, obs, deterministic=True):
        c = self.context(obs)
        use_noise = self.sample or not deterministic
        u = torch.as_tensor(self._rng.standard_normal(len(c)) if use_noise else np.zeros(len(c)), dtype=torch.float32)
        with torch.no_grad():
            mu, log_var = self.network(c)
            lam = torch.sigmoid(mu + (0.5 * log_var).exp() * u)
        self._pending = (c, u)
        return lam.double().numpy()

    def loss(self, context: torch.Tensor, u: torch.Tensor, dloss_dlam: torch.Tensor | float) -> torch.Tensor:
        """The surrogate whose φ-gradient is Algorithm 2's: (∂J/∂λ)·λ_φ + β·KL, summed over the batch.

        ``dloss_dlam`` = ∂J/∂λ is a constant (the env measured it at the applied λ; J = L_SISS here);
        λ_φ = sigmoid(μ_φ(c) + σ_φ(c)·u) carries the graph, so ∂/∂φ gives
        (∂J/∂λ)·λ(1 − λ)·∂z/∂φ + β·∂KL/∂φ.
        """
        mu, log_var = self.network(context)
        lam = torch.sigmoid(mu + (0.5 * log_var).exp() * u)
        kl = 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var)
        g = torch.as_tensor(dloss_dlam, dtype=lam.dtype)
        return (g * lam).sum() + self.kl_coef * kl.sum()

    def lam_gradient(self, info: dict) -> float:
        """∂J/∂λ of φ's λ-objective at the applied λ, from the step's ``info``: ∂L_SISS/∂λ."""
        dloss = info.get("dloss_dlam") if isinstance(info, dict) else None
        if dloss is None:
            raise KeyError(
                f"{type(self).__name__}.observe needs info['dloss_dlam'] (∂L_SISS/∂λ), which SISS-v0 reports"
            )
        return float(dloss)

    def observe(self, obs, action, reward, next_obs, terminated, truncated, info) -> None:
        """One Adam step on φ with the env's ∂J/∂λ of the step just taken (:meth:`lam_gradient`)."""
        if self._pending is None:
            return
        context, u = self._pending
        self._pending = None
        dloss = self.lam_gradient(info)
        if not np.isfinite(dloss):  # a diverged step: nothing to learn from
            return
        loss = self.loss(context[:1], u[:1], float(dloss))
        if self.learn:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            mu, log_var = self.network(context[:1])
        self.last = {"mu": float(mu[0]), "sigma": float((0.5 * log_var[0]).exp()), self.gradient_name: dloss}
