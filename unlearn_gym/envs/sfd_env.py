"""``unlearn_gym/SFD-v0``: one SFD iteration (a ψ step and a θ step) per env step, data-free class erasure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .siss_env import log_ratio, parse_env_config, resolve_device

__all__ = ["SFDEnv", "SFDEnvConfig"]

OBS_NAMES = ("log_loss_psi_remain", "log_loss_psi_forget", "log_grad_remain", "log_grad_forget", "lam_prev", "progress")


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
    beta: float = 1.0
    divergence_penalty: float = 10.0
    obs_clip: float = 10.0
    render_samples: int = 4

    def __post_init__(self) -> None:
        if self.action_mode not in ("balance", "targets", "both"):
            raise ValueError(f"action_mode must be 'balance', 'targets' or 'both', got {self.action_mode!r}")
        for name in ("horizon", "batch_size", "render_samples", "probe_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mixture_lambda <= 1.0:
            raise ValueError(f"mixture_lambda must be in [0, 1], got {self.mixture_lambda}")
        if not self.target_temperature > 0 or not self.obs_clip > 0:
            raise ValueError("target_temperature and obs_clip must be > 0")


class SFDEnv(gym.Env):
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

    ## Episode End

    Truncation after ``horizon`` iterations; termination when one diverges.

    ## Arguments

    The fields of :class:`SFDEnvConfig`. ``render()`` ("rgb_array") draws the generator's
    one-step samples, one row per label.

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        self.config = cfg = parse_env_config(self, SFDEnvConfig, kwargs, render_mode)
        self.render_mode = render_mode

        from ..assets import bundled_model_dir
        from ..metrics.classifier import classifier_dir_for, load_classifier
        from ..models.checkpoint import load_model
        from ..objectives.sfd import SFDConfig
        from ..sfd_engine import SFDEngine

        device = resolve_device(cfg.device)
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else bundled_model_dir()
        unet, model_config = load_model(checkpoint, device)
        self.num_labels = int(model_config["scenario"]["num_labels"])
        if not 0 <= cfg.forget_class < self.num_labels:
            raise ValueError(f"forget_class must be a label in [0, {self.num_labels}), got {cfg.forget_class}")
        self.remain_classes = [c for c in range(self.num_labels) if c != cfg.forget_class]
        if cfg.override_class is not None and cfg.override_class not in self.remain_classes:
            raise ValueError(f"override_class must be one of the remaining labels {self.remain_classes}")
        classifier = load_classifier(classifier_dir_for(checkpoint, model_config, cfg.classifier), device)
        self.engine = SFDEngine(
            unet,
            cfg.forget_class,
            self.remain_classes,
            SFDConfig(batch_size=cfg.batch_size, lr=cfg.lr, t_star=cfg.t_star),
            device=device,
            classifier=classifier,
            probe_size=cfg.probe_size,
            scheduler_config=model_config.get("scheduler"),
        )
        self.device = device
        self.model_config = model_config
        K = len(self.remain_classes)
        k = {"balance": 1, "targets": K, "both": 1 + K}[cfg.action_mode]
        self.action_space = spaces.Box(-1.0, 1.0, (k,), np.float32)
        self.observation_space = spaces.Box(-cfg.obs_clip, cfg.obs_clip, (len(OBS_NAMES),), np.float32)
        self._ref: np.ndarray | None = None
        self._t = 0
        self._lam_prev = cfg.mixture_lambda
        self._efficacy_prev = self._damage_prev = 0.0
        self._needs_reset = True
        self._last_obs: np.ndarray | None = None

    @property
    def sampler(self) -> dict:
        """How to sample the unlearned model: SFD's one-step generator (what evaluations use)."""
        return {"kind": "one-step", "t_star": self.config.t_star}

    @property
    def forget_class(self) -> int:
        return self.config.forget_class

    def _log_ratio(self, value: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return log_ratio(value, ref, self.config.obs_clip)

    def _obs(self, s: np.ndarray, lam: float) -> np.ndarray:
        # At reset ψ = θ = the teacher, so the remain term's gradient is ~0: the norms are compared
        # as log((‖g‖ + δ)/(‖g⁰‖ + δ)) with δ = 1% of ‖g⁰_remain‖ + ‖g⁰_forget‖.
        delta = 0.01 * (self._ref[4] + self._ref[5])
        losses = self._log_ratio(s[[0, 1]], self._ref[[0, 1]])
        grads = self._log_ratio(s[[4, 5]] + delta, self._ref[[4, 5]] + delta)
        feats = np.concatenate([losses, grads])
        return np.concatenate([feats, [lam, self._t / self.config.horizon]]).astype(np.float32)

    def _decode(self, action) -> tuple[float, np.ndarray | None, np.ndarray]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {np.asarray(action).shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a.tolist()}")
        a = np.clip(a, -1.0, 1.0)
        cfg = self.config
        lam, weights = cfg.mixture_lambda, None
        if cfg.action_mode in ("balance", "both"):
            lam = float((a[0] + 1.0) / 2.0)
        if cfg.action_mode in ("targets", "both"):
            logits = a[-len(self.remain_classes) :] / cfg.target_temperature
            w = np.exp(logits - logits.max())
            weights = w / w.sum()
        return lam, weights, a

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset: SFD-v0 takes no options, got {sorted(options)}")
        self.engine.restore()
        self.engine.seed(int(self.np_random.integers(2**63 - 1)))
        cfg = self.config
        ref = self.engine.evaluate(cfg.mixture_lambda, None, cfg.override_class)[0]
        self._ref = ref.as_array()
        self._t = 0
        self._lam_prev = cfg.mixture_lambda
        self._efficacy_prev = self._damage_prev = 0.0
        self._needs_reset = False
        self._last_obs = self._obs(self._ref, cfg.mixture_lambda)
        info = {"reference": ref.as_dict(), "forget_class": cfg.forget_class, "remain_classes": self.remain_classes}
        return self._last_obs.copy(), info

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("SFDEnv.step called before reset() or after the episode ended; call reset() first")
        cfg = self.config
        lam, weights, _ = self._decode(action)
        stats = self.engine.update(lam, weights, cfg.override_class)[0]
        self._t += 1
        smooth = cfg.alpha * abs(lam - self._lam_prev)
        info: dict[str, Any] = {"lam": lam, "step": self._t, **stats.as_dict()}
        if weights is not None:
            info["target_weights"] = weights.tolist()
        if not stats.finite:
            info |= {"diverged": True, "reward_efficacy_gain": 0.0, "reward_smoothness": -smooth}
            info["reward_degradation"] = 0.0
            self._needs_reset = True
            return self._last_obs.copy(), -float(cfg.divergence_penalty), True, False, info
        s = stats.as_array()
        efficacy = float(self._ref[8] - stats.probe_forget_p)
        degradation = float(self._ref[9] - stats.probe_remain_p)
        gain = efficacy - self._efficacy_prev
        damage = max(0.0, degradation)
        penalty = cfg.beta * (damage - self._damage_prev)
        reward = gain - smooth - penalty
        self._efficacy_prev, self._damage_prev, self._lam_prev = efficacy, damage, lam
        self._last_obs = self._obs(s, lam)
        truncated = self._t >= cfg.horizon
        self._needs_reset = truncated
        info |= {
            "diverged": False,
            "efficacy": efficacy,
            "degradation": degradation,
            "reward_efficacy_gain": gain,
            "reward_smoothness": -smooth,
            "reward_degradation": -penalty,
        }
        return self._last_obs.copy(), float(reward), False, truncated, info

    def render(self):
        """An H×W×3 uint8 grid of one-step generator samples: one row per label, fixed noise."""
        if self.render_mode != "rgb_array":
            return None
        import torch

        from ..models.sampling import sample_per_label

        n = self.config.render_samples
        images, _ = sample_per_label(
            self.engine.model(),
            self.num_labels,
            n,
            seed=0,
            sampler=self.sampler,
            scheduler_config=self.model_config.get("scheduler"),
        )
        img = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        _, c, h, w = img.shape
        grid = img.view(self.num_labels, n, c, h, w).permute(0, 3, 1, 4, 2).reshape(self.num_labels * h, n * w, c)
        return np.repeat(grid.numpy(), 3, axis=2) if c == 1 else grid.numpy()

    def save_generator(self, directory: str | Path) -> Path:
        """Save the generator θ as a model directory whose config says ``sampler: one-step`` (for ``evaluate``)."""
        from ..models.checkpoint import save_model

        config = {
            **self.model_config,
            "sampler": self.sampler,
            "sfd": {"forget_class": self.config.forget_class, "steps": int(self.engine.step_count[0])},
        }
        return save_model(self.engine.model(), directory, config)
