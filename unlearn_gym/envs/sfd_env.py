"""``unlearn_gym/SFD-v0``: one SFD iteration (a ψ step and a θ step) per env step, data-free class erasure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .base import DecodedAction, RunEpisode, UnlearningEnv, log_ratio
from .conventions import OBS_TAIL, lam_from_action

__all__ = ["SFDEnv", "SFDEnvConfig"]

OBS_NAMES = ("log_loss_psi_remain", "log_loss_psi_forget", "log_grad_remain", "log_grad_forget", *OBS_TAIL)


@dataclass(frozen=True)
class SFDEnvConfig:
    """Every setting of :class:`SFDEnv` (each is also a keyword of ``gymnasium.make``)."""

    checkpoint: str | None = None
    """Pretrained model directory; None = the bundled default."""
    classifier: str | None = None
    """The probe's and the evaluation's classifier (default: CHECKPOINT/classifier, or the bundled one)."""
    device: str = "auto"
    forget_class: int = 0
    """c_f: the label to erase."""
    override_class: int | None = None
    """c_o of the official SFD: the forget term's teacher class. None: the uniform mixture of all
    remaining classes (or the action's weights in "targets"/"both" mode)."""
    action_mode: Literal["balance", "targets", "both"] = "balance"
    """"balance" (k = 1): λ of L_θ; "targets" (k = K, the remaining classes): softmax weights π of
    the forget term's teacher mixture, λ = ``mixture_lambda``; "both" (k = 1 + K)."""
    horizon: int = 100
    batch_size: int = 16
    lr: float = 1e-5
    t_star: int = 440
    mixture_lambda: float = 0.5
    """λ in "targets" mode and λ_{−1} at reset (0.5 = the official weights 1.0 and 0.01)."""
    target_temperature: float = 1.0
    """π = softmax(a/τ) over the remaining classes in "targets"/"both" modes."""
    probe_size: int = 4
    """Probe inputs z per class."""
    alpha: float = 0.01
    """Weight of the smoothness penalty α·|λ_t − λ_{t−1}|."""
    beta: float = 1.0
    """Weight of the degradation penalty."""
    degradation_penalty: Literal["increment", "level"] = "increment"
    """"increment": −β·(d⁺_t − d⁺_{t−1}); "level": −β·d⁺_t at every step (as SISS-v0's)."""
    divergence_penalty: float = 10.0
    obs_clip: float = 10.0
    render_samples: int = 4

    def __post_init__(self) -> None:
        if self.action_mode not in ("balance", "targets", "both"):
            raise ValueError(f"action_mode must be 'balance', 'targets' or 'both', got {self.action_mode!r}")
        if self.degradation_penalty not in ("increment", "level"):
            raise ValueError(f"degradation_penalty must be 'increment' or 'level', got {self.degradation_penalty!r}")
        for name in ("horizon", "batch_size", "render_samples", "probe_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mixture_lambda <= 1.0:
            raise ValueError(f"mixture_lambda must be in [0, 1], got {self.mixture_lambda}")
        if not self.target_temperature > 0 or not self.obs_clip > 0:
            raise ValueError("target_temperature and obs_clip must be > 0")

    @property
    def smoothness_weight(self) -> float:
        """The α applied (``alpha``; SFD-v0 has no sampled reward, so no default depends on it)."""
        return float(self.alpha)


class SFDEnv(UnlearningEnv):
    """Erasing one class from a class-conditional DDPM with SFD, one iteration per step.

    ## Description

    Three copies of the pretrained model take part (DESIGN §8): the frozen teacher, the
    fake-score network ψ and the one-step generator θ (G(z, c) at t* = 440). Each step applies one
    ψ step and one θ step of Score Forgetting Distillation; the forget class's scores are sent to
    those of an override class or of a mixture of the remaining classes. The action sets λ, the
    balance of the remain and forget terms (L_θ = 2(1 − λ)·ℓ_remain + 2λ·0.01·ℓ_forget), and/or the
    mixture weights. No training data are needed.

    ## Action Space

    ``Box(-1, 1, (k,), float32)``. "balance" (k = 1): λ = (a + 1)/2. "targets" (k = K remaining
    classes): π = softmax(a/τ). "both" (k = 1 + K): λ from a[0], π from a[1:].

    ## Observation Space

    ``Box(-obs_clip, obs_clip, (6,), float32)``: [log L_ψ,r/L⁰_ψ,r, log L_ψ,f/L⁰_ψ,f,
    log (‖∇ℓ_remain‖ + δ)/(‖∇ℓ⁰_remain‖ + δ), log (‖∇ℓ_forget‖ + δ)/(‖∇ℓ⁰_forget‖ + δ), λ_{t−1},
    t/T]: ψ's denoising losses on generated remaining-class and forget-class samples and the
    generator-step gradient norms of the two SiD terms, relative to their values at reset
    (δ = 1% of the two reset norms: at reset ψ equals the teacher and the remain gradient is ~0).

    ## Rewards

    r_t = (e_t − e_{t−1}) − α·|λ_t − λ_{t−1}| − β·(d⁺_t − d⁺_{t−1}) as in SISS-v0, on a fixed probe
    (generator inputs z per class, drawn at reset) classified after every step: efficacy
    e_t = p_f,0 − p_f,t, the fall of the mean classifier probability of c_f on G(z, c_f);
    degradation d_t = p_r,0 − p_r,t, the fall of p(c | G(z, c)) over the remaining classes.
    (``degradation_penalty="level"`` charges −β·d⁺_t at every step instead.) A divergent step
    (non-finite statistics) gets −``divergence_penalty``.

    ## Episode End

    Truncation after ``horizon`` iterations; termination when one diverges
    (``info["diverged"] = True``).

    ## Arguments

    The fields of :class:`SFDEnvConfig`. ``render()`` ("rgb_array") draws the generator's
    one-step samples, one row per label. ``reset`` takes no options.
    ``gymnasium.make_vec("unlearn_gym/SFD-v0", num_envs=N, vectorization_mode="vector_entry_point")``
    runs N seeds in one N-run engine (:class:`~unlearn_gym.envs.vector.UnlearningVectorEnv`).

    ## Version History

    - v0: initial version.
    """

    config_class = SFDEnvConfig
    obs_names = OBS_NAMES

    # -- construction --------------------------------------------------------------------------

    def _make_engine(self, unet, model_config: dict, device: str, num_runs: int = 1, executor: str = "auto"):
        from ..engines import SFDEngine
        from ..metrics.classifier import classifier_dir_for, load_classifier
        from ..objectives.sfd import SFDConfig

        cfg = self.config
        self.num_labels = int(model_config["scenario"]["num_labels"])
        if not 0 <= cfg.forget_class < self.num_labels:
            raise ValueError(f"forget_class must be a label in [0, {self.num_labels}), got {cfg.forget_class}")
        self.remain_classes = [c for c in range(self.num_labels) if c != cfg.forget_class]
        if cfg.override_class is not None and cfg.override_class not in self.remain_classes:
            raise ValueError(f"override_class must be one of the remaining labels {self.remain_classes}")
        classifier = load_classifier(classifier_dir_for(self.checkpoint, model_config, cfg.classifier), device)
        return SFDEngine(
            unet,
            cfg.forget_class,
            self.remain_classes,
            SFDConfig(batch_size=cfg.batch_size, lr=cfg.lr, t_star=cfg.t_star),
            device=device,
            classifier=classifier,
            probe_size=cfg.probe_size,
            scheduler_config=model_config.get("scheduler"),
            num_runs=num_runs,
            executor=executor,
        )

    def _action_dim(self) -> int:
        K = len(self.remain_classes)
        return {"balance": 1, "targets": K, "both": 1 + K}[self.config.action_mode]

    @property
    def sampler(self) -> dict:
        """How to sample the unlearned model: SFD's one-step generator (what evaluations use)."""
        return {"kind": "one-step", "t_star": self.config.t_star}

    @property
    def forget_class(self) -> int:
        """The class SFD-v0 erases (``config.forget_class``)."""
        return self.config.forget_class

    # -- actions, observations, rewards ----------------------------------------------------------

    def decode_action(self, action) -> DecodedAction:
        """Validate one run's action and map it: λ = (a₀ + 1)/2 and/or π = softmax(a/τ), per ``action_mode``.

        Raises:
            ValueError: the shape is not ``action_space.shape`` or a value is NaN or ±inf.
        """
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {np.asarray(action).shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a.tolist()}")
        raw, a = a, np.clip(a, -1.0, 1.0)
        cfg = self.config
        lam, weights = cfg.mixture_lambda, None
        if cfg.action_mode in ("balance", "both"):
            lam = float(lam_from_action(a[0]))
        if cfg.action_mode in ("targets", "both"):
            logits = a[-len(self.remain_classes) :] / cfg.target_temperature
            w = np.exp(logits - logits.max())
            weights = w / w.sum()
        info = {} if weights is None else {"target_weights": weights.tolist()}
        return DecodedAction(np.array([lam]), raw, lam, {"lam": lam, "target_weights": weights}, info)

    @property
    def reference_kwargs(self) -> dict[str, Any]:
        return {"lam": self.config.mixture_lambda, "target_weights": None, "override_class": self.config.override_class}

    @property
    def update_constants(self) -> dict[str, Any]:
        return {"override_class": self.config.override_class}

    def features(self, ep: RunEpisode, stats) -> np.ndarray:
        """[log L_ψ,r/L⁰_ψ,r, log L_ψ,f/L⁰_ψ,f, log (‖g_r‖ + δ)/(‖g⁰_r‖ + δ), log (‖g_f‖ + δ)/(‖g⁰_f‖ + δ)]."""
        # At reset ψ = θ = the teacher, so the remain term's gradient is ~0: the norms are compared
        # as log((‖g‖ + δ)/(‖g⁰‖ + δ)) with δ = 1% of ‖g⁰_remain‖ + ‖g⁰_forget‖.
        ref, clip = ep.ref, self.config.obs_clip
        delta = 0.01 * (ref.grad_remain_norm + ref.grad_forget_norm)
        losses = log_ratio(
            np.array([stats.loss_psi_remain, stats.loss_psi_forget]),
            np.array([ref.loss_psi_remain, ref.loss_psi_forget]),
            clip,
        )
        grads = log_ratio(
            np.array([stats.grad_remain_norm, stats.grad_forget_norm]) + delta,
            np.array([ref.grad_remain_norm, ref.grad_forget_norm]) + delta,
            clip,
        )
        return np.concatenate([losses, grads])

    def efficacy_degradation(self, ep: RunEpisode, stats) -> tuple[float, float]:
        """e_t = p_f,0 − p_f,t and d_t = p_r,0 − p_r,t of the probe's classifier probabilities."""
        return (
            float(ep.ref.probe_forget_p - stats.probe_forget_p),
            float(ep.ref.probe_remain_p - stats.probe_remain_p),
        )

    def check_reset_options(self, options: dict | None) -> None:
        """SFD-v0 takes no reset options (no instances)."""
        if options:
            raise ValueError(f"reset: SFD-v0 takes no options, got {sorted(options)}")
        return None

    def reset_info(self, ep: RunEpisode) -> dict[str, Any]:
        return {"forget_class": self.config.forget_class, "remain_classes": self.remain_classes}

    def render_kwargs(self) -> dict[str, Any]:
        """The one-step generator's samples."""
        return {"sampler": self.sampler}

    def save_generator(self, directory: str | Path) -> Path:
        """Save the generator θ as a model directory whose config says ``sampler: one-step`` (for ``evaluate``)."""
        from ..models.checkpoint import save_model

        config = {
            **self.model_config,
            "sampler": self.sampler,
            "sfd": {"forget_class": self.config.forget_class, "steps": int(self.engine.step_count[0])},
        }
        return save_model(self.engine.model(), directory, config)
