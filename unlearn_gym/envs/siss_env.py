"""``unlearn_gym/SISS-v0``: one real SISS update of a pretrained class-conditional DDPM per step."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["SISSEnv", "SISSEnvConfig", "RunEpisode", "DecodedAction"]

OBS_NAMES = ("log_loss_r", "log_loss_f", "log_grad_r", "log_grad_f", "lam_prev", "progress")
RESET_OPTIONS = ("instance",)


def log_ratio(value: np.ndarray, ref: np.ndarray, clip: float) -> np.ndarray:
    """log(value/ref), both floored at 1e-30, NaN ↦ 0, clipped to ±clip: the observation features."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(np.maximum(value, 1e-30) / np.maximum(ref, 1e-30))
    return np.clip(np.nan_to_num(r, nan=0.0), -clip, clip)


def parse_env_config(env: gym.Env, config_class: type, kwargs: dict, render_mode: str | None):
    """``config_class(**kwargs)`` with a clear error for unknown keywords and render modes."""
    known = {f.name for f in fields(config_class)}
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"{type(env).__name__}: unknown keyword(s) {sorted(unknown)}; expected some of {sorted(known)}")
    if render_mode is not None and render_mode not in env.metadata["render_modes"]:
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    return config_class(**kwargs)


def resolve_device(name: str) -> str:
    """ "auto" ↦ "cuda" when CUDA is present, else "cpu"; anything else as given."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class RunEpisode:
    """One run's episode bookkeeping: the single env holds one, the vector env one per run."""

    ref: np.ndarray | None = None
    """The ``FEATURE_STATS`` at reset, then the probe losses p_r⁰, p_f⁰."""
    t: int = 0
    """Updates since reset."""
    lam_prev: np.ndarray = field(default_factory=lambda: np.zeros(1))
    """λ_{t−1} (the applied action values)."""
    efficacy_prev: float = 0.0
    """e_{t−1}."""
    damage_prev: float = 0.0
    """d⁺_{t−1}."""
    needs_reset: bool = True
    """True before the first reset and after the episode ended."""
    last_obs: np.ndarray | None = None
    """The last observation (returned again on a divergent step)."""
    instance: int | None = None
    """The instance of the run's forget set (None: the whole forget set)."""


@dataclass(frozen=True)
class DecodedAction:
    """An action mapped to the update's arguments."""

    lam_vec: np.ndarray
    """(k,) the applied values in [0, 1] (λ, λ_s or both)."""
    raw: np.ndarray
    """(k,) the action as received (float64)."""
    lam: float
    """The mixture weight λ of the update."""
    forget_scale: float
    """The forget-strength multiplier of S."""


@dataclass(frozen=True)
class SISSEnvConfig:
    """Every setting of :class:`SISSEnv` (each is also a keyword of ``gymnasium.make``)."""

    checkpoint: str | None = None
    """Pretrained model directory (``config.json`` + ``model.safetensors``); None = the bundled default."""
    scenario_kwargs: dict | None = None
    """Overrides of the scenario that the checkpoint's config names (e.g. ``{"data_dir": ...}``)."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu", "cuda", "cuda:N"."""
    action_mode: Literal["mixture", "forget-strength", "both"] = "mixture"
    """What the action sets: the mixture weight λ, the forget strength (λ·``max_scale`` replaces S), or both."""
    horizon: int = 100
    """T: updates per episode (truncation); also the denominator of the progress feature t/T."""
    objective: Literal["siss", "siss-no-is", "neggrad", "erasediff", "naive-deletion"] = "siss"
    """The unlearning objective of each update."""
    surgery: Literal["norm", "superfactor"] = "norm"
    """Gradient surgery of SISS."""
    scale: float = 5.0
    """S of "norm" surgery (used as is in "mixture" mode)."""
    max_scale: float = 10.0
    """Forget strength at action +1 in "forget-strength"/"both" modes: S = λ_s·max_scale (0.5 ↦ 5 = the reference S)."""
    mixture_lambda: float = 0.5
    """λ used in "forget-strength" mode, and λ_{−1} at reset."""
    batch_size: int = 64
    """B: retain/forget pairs per update."""
    lr: float = 5e-5
    """AdamW learning rate."""
    probe_size: int = 4
    """Images per half (retain, forget) of the fixed reward probe."""
    alpha: float = 0.01
    """Weight of the smoothness penalty α·|λ_t − λ_{t−1}|."""
    beta: float = 1.0
    """Weight of the degradation penalty."""
    degradation_penalty: Literal["increment", "level"] = "increment"
    """"increment": −β·(d⁺_t − d⁺_{t−1}), so the episode's terms sum to −β·d⁺_T (the final damage);
    "level": −β·d⁺_t at every step (DESIGN §7's literal form; sums to −β·Σ_t d⁺_t)."""
    divergence_penalty: float = 10.0
    """Reward −divergence_penalty on the step that diverges (then ``terminated``)."""
    obs_clip: float = 10.0
    """Bound of every log-ratio feature and of the reward terms."""
    forget_subset: int | None = None
    """With ``reset(options={"instance": i})``: size of the forget subset that instance i draws (None = all)."""
    render_samples: int = 4
    """Samples per label in the ``rgb_array`` render."""
    render_ddim_steps: int = 10
    """DDIM steps of the render."""

    def __post_init__(self) -> None:
        if self.degradation_penalty not in ("increment", "level"):
            raise ValueError(f"degradation_penalty must be 'increment' or 'level', got {self.degradation_penalty!r}")
        if self.action_mode not in ("mixture", "forget-strength", "both"):
            raise ValueError(f"action_mode must be 'mixture', 'forget-strength' or 'both', got {self.action_mode!r}")
        for name in ("horizon", "batch_size", "render_samples", "render_ddim_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha", "beta", "divergence_penalty", "max_scale", "scale", "probe_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mixture_lambda <= 1.0:
            raise ValueError(f"mixture_lambda must be in [0, 1], got {self.mixture_lambda}")
        if not self.obs_clip > 0:
            raise ValueError(f"obs_clip must be > 0, got {self.obs_clip}")
        if self.forget_subset is not None and self.forget_subset < 1:
            raise ValueError(f"forget_subset must be None or >= 1, got {self.forget_subset}")


class SISSEnv(gym.Env):
    """Unlearning a contaminating concept from a class-conditional DDPM, one SISS update per step.

    ## Description

    The env holds a pretrained DDPM that learned a contaminant under one label (the bundled
    default: real Fashion-MNIST trousers under MNIST label 1). Each step applies one real unlearning update (SISS by
    default, DESIGN §5) whose weight λ is the action, and reports how the unlearning goes.

    ## Action Space

    ``Box(-1, 1, (k,), float32)``, mapped by λ = (a + 1)/2 and clipped to [0, 1] (the applied
    values are in ``info``). "mixture" (k = 1): λ is SISS's mixture weight. "forget-strength"
    (k = 1): λ_s sets S = λ_s·``max_scale`` at mixture λ = ``mixture_lambda``. "both" (k = 2):
    (λ, λ_s).

    ## Observation Space

    ``Box(-obs_clip, obs_clip, (6,), float32)``: [log ℓ_r/ℓ_r⁰, log ℓ_f/ℓ_f⁰, log ‖∇ℓ_r‖/‖∇ℓ_r⁰‖,
    log ‖∇ℓ_f‖/‖∇ℓ_f⁰‖, λ_{t−1}, t/T], where ℓ_r, ℓ_f are the step's retain and forget loss
    estimates, the gradient norms are global L2 norms, and ⁰ marks the values the pretrained model
    gives at reset. (In "both" mode λ_{t−1} is the mixture λ.)

    ## Rewards

    r_t = (e_t − e_{t−1}) − α·‖λ_t − λ_{t−1}‖₁ − β·(d⁺_t − d⁺_{t−1}), with e_t = log(p_f,t / p_f,0)
    the efficacy (rise of the forget denoising loss on a fixed probe over its reset value),
    d_t = log(p_r,t / p_r,0) the degradation (rise of the retain probe loss), d⁺ = max(0, d) and
    e_0 = d⁺_0 = 0. The probe (images, t, ε) is drawn once per reset and evaluated without
    gradients after each update. The return of an episode is therefore
    e_T − β·d⁺_T − α·Σ_t ‖λ_t − λ_{t−1}‖₁: the final forgetting minus the final damage minus
    the λ variation. (``degradation_penalty="level"`` charges −β·d⁺_t at every step instead.)
    e_t and d_t are clipped to ±``obs_clip``. A divergent step (non-finite loss or weights) gets
    −``divergence_penalty``.

    ## Starting State

    The pretrained weights, a fresh AdamW state, λ_{−1} = ``mixture_lambda``.

    ## Episode End

    Truncation after ``horizon`` updates; termination when the update diverges
    (``info["diverged"] = True``). ``reset`` then restores the pretrained weights in place.

    ## Arguments

    The fields of :class:`SISSEnvConfig`, as keywords of ``gymnasium.make("unlearn_gym/SISS-v0", ...)``.
    ``reset(options={"instance": i})`` selects instance i: the forget subset (with
    ``forget_subset``) drawn from seed i; a reset without it uses the whole forget set.

    ## Version History

    - v0: initial version (before the first release the degradation term became an increment,
      so that returns measure the final outcome; ``degradation_penalty="level"`` keeps the old form).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    config_class = SISSEnvConfig
    FEATURE_STATS = ("loss_r", "loss_f", "grad_r_norm", "grad_f_norm")
    """The engine statistics behind the four log-ratio features of the observation."""

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        self._setup(render_mode, kwargs, num_runs=1, executor="auto")

    @classmethod
    def with_runs(cls, num_runs: int, executor: str = "auto", **kwargs: Any):
        """This env's construction with an engine of ``num_runs`` runs, for the vector env.

        The object holds the config, scenario and N-run engine and provides the per-run action
        decoding, observation and reward (:meth:`decode_action`, :meth:`begin_episode`,
        :meth:`advance_episode`); its own ``reset``/``step`` are for N = 1 only.
        """
        env = cls.__new__(cls)
        env._setup(None, kwargs, num_runs=num_runs, executor=executor)
        return env

    def _setup(self, render_mode: str | None, kwargs: dict, num_runs: int, executor: str) -> None:
        self.config = cfg = parse_env_config(self, self.config_class, kwargs, render_mode)
        self.render_mode = render_mode

        from ..assets import bundled_model_dir
        from ..data.scenarios import scenario_of_checkpoint
        from ..models.checkpoint import load_model

        device = resolve_device(cfg.device)
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else bundled_model_dir()
        unet, model_config = load_model(checkpoint, device)
        self.scenario = scenario_of_checkpoint(model_config, **(cfg.scenario_kwargs or {}))
        self._full_forget = self.scenario.forget
        self.engine = self._make_engine(unet, model_config, device, num_runs=num_runs, executor=executor)
        self.device = device
        self._scheduler_config = model_config.get("scheduler")

        k = 2 if cfg.action_mode == "both" else 1
        self.action_space = spaces.Box(-1.0, 1.0, (k,), np.float32)
        self.observation_space = spaces.Box(-cfg.obs_clip, cfg.obs_clip, (len(OBS_NAMES),), np.float32)
        self._episode = RunEpisode(lam_prev=np.zeros(k))

    @property
    def _ref(self) -> np.ndarray | None:
        return self._episode.ref

    # -- helpers -----------------------------------------------------------------------------

    def _siss_config(self):
        from ..objectives.siss import SISSConfig

        cfg = self.config
        return SISSConfig(
            objective=cfg.objective, surgery=cfg.surgery, scale=cfg.scale, batch_size=cfg.batch_size, lr=cfg.lr
        )

    def _make_engine(self, unet, model_config: dict, device: str, num_runs: int = 1, executor: str = "auto"):
        from ..engine import UnlearningEngine

        return UnlearningEngine(
            unet,
            self.scenario.retain,
            self.scenario.forget,
            self._siss_config(),
            device=device,
            probe_size=self.config.probe_size,
            dataset_size=len(self.scenario.retain) + len(self.scenario.forget),
            scheduler_config=model_config.get("scheduler"),
            num_runs=num_runs,
            executor=executor,
        )

    def _features(self, stats) -> np.ndarray:
        return np.array([getattr(stats, name) for name in self.FEATURE_STATS], dtype=np.float64)

    def _log_ratio(self, value: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return log_ratio(value, ref, self.config.obs_clip)

    def _obs(self, ep: RunEpisode, feats: np.ndarray, lam_mix: float) -> np.ndarray:
        feats = self._log_ratio(feats, ep.ref[:4])
        return np.concatenate([feats, [lam_mix, ep.t / self.config.horizon]]).astype(np.float32)

    def decode_action(self, action) -> DecodedAction:
        """Validate one run's action and map it: λ = (a + 1)/2 clipped to [0, 1], per ``action_mode``.

        Raises:
            ValueError: the shape is not ``action_space.shape`` or a value is NaN or ±inf.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            a = a.reshape(-1) if a.size == self.action_space.shape[0] else a
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {np.asarray(action).shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {np.asarray(action).tolist()}")
        lam_vec = np.clip((a + 1.0) / 2.0, 0.0, 1.0)
        cfg = self.config
        if cfg.action_mode == "mixture":
            lam, forget_scale = float(lam_vec[0]), 1.0
        elif cfg.action_mode == "forget-strength":
            lam, forget_scale = cfg.mixture_lambda, float(lam_vec[0]) * cfg.max_scale / max(cfg.scale, 1e-12)
        else:
            lam, forget_scale = float(lam_vec[0]), float(lam_vec[1]) * cfg.max_scale / max(cfg.scale, 1e-12)
        return DecodedAction(lam_vec, a, lam, forget_scale)

    def check_reset_options(self, options: dict | None) -> int | None:
        """The ``instance`` of ``reset(options=...)`` (None: the whole forget set), validated."""
        options = dict(options or {})
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"reset: unknown option(s) {sorted(unknown)}; expected some of {list(RESET_OPTIONS)}")
        instance = options.get("instance")
        if instance is not None:
            if not isinstance(instance, (int, np.integer)) or isinstance(instance, bool) or instance < 0:
                raise ValueError(f"reset: options['instance'] must be an int >= 0, got {instance!r}")
        return instance

    def select_instance(self, ep: RunEpisode, instance: int | None, run: int = 0) -> None:
        """Give run ``run`` instance ``instance``'s forget set (a new set only when the instance changes)."""
        if instance != ep.instance:
            forget = self._full_forget
            if instance is not None and self.config.forget_subset is not None:
                n = min(self.config.forget_subset, len(forget))
                forget = forget.subset(np.random.default_rng(int(instance)).permutation(len(forget))[:n])
            self.engine.set_forget(forget, runs=[run])
            ep.instance = instance

    def begin_episode(self, ep: RunEpisode, ref) -> tuple[np.ndarray, dict]:
        """Start ``ep`` from the reset statistics ``ref`` (the engine's evaluation at λ_{−1}): (obs, info)."""
        cfg = self.config
        lam0 = cfg.mixture_lambda
        ep.ref = np.concatenate([self._features(ref), [ref.probe_r, ref.probe_f]])
        ep.t = 0
        ep.lam_prev = np.array(
            [lam0] if cfg.action_mode == "mixture" else [0.5] if cfg.action_mode == "forget-strength" else [lam0, 0.5]
        )
        ep.efficacy_prev = 0.0
        ep.damage_prev = 0.0
        ep.needs_reset = False
        obs = self._obs(ep, ep.ref[:4], lam0)
        ep.last_obs = obs
        return obs, {"instance": ep.instance, "reference": ref.as_dict()}

    def advance_episode(
        self, ep: RunEpisode, decoded: DecodedAction, stats, limit: int | None = None
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Advance ``ep`` by the update that gave ``stats``: (obs, reward, terminated, truncated, info).

        ``limit``: the step that truncates (default ``horizon``).
        """
        cfg = self.config
        lam_vec, lam, forget_scale = decoded.lam_vec, decoded.lam, decoded.forget_scale
        ep.t += 1
        info: dict[str, Any] = {
            "lam": lam,
            "forget_scale_S": forget_scale * cfg.scale,
            "action_clipped": bool(np.any(np.abs(decoded.raw) > 1.0)),
            "step": ep.t,
            **stats.as_dict(),
        }
        smooth = cfg.alpha * float(np.abs(lam_vec - ep.lam_prev).sum())
        if not stats.finite:
            info |= {"diverged": True, "efficacy": float("nan"), "degradation": float("nan")}
            info |= {"reward_efficacy_gain": 0.0, "reward_smoothness": -smooth, "reward_degradation": 0.0}
            ep.needs_reset = True
            return ep.last_obs.copy(), -float(cfg.divergence_penalty), True, False, info
        efficacy = float(self._log_ratio(np.array([stats.probe_f]), ep.ref[5:6])[0])
        degradation = float(self._log_ratio(np.array([stats.probe_r]), ep.ref[4:5])[0])
        gain = efficacy - ep.efficacy_prev
        damage = max(0.0, degradation)
        if cfg.degradation_penalty == "increment":
            penalty = cfg.beta * (damage - ep.damage_prev)
        else:
            penalty = cfg.beta * damage
        reward = gain - smooth - penalty
        ep.efficacy_prev = efficacy
        ep.damage_prev = damage
        ep.lam_prev = lam_vec
        obs = self._obs(ep, self._features(stats), lam)
        ep.last_obs = obs
        truncated = ep.t >= (cfg.horizon if limit is None else limit)
        if truncated:
            ep.needs_reset = True
        info |= {
            "diverged": False,
            "efficacy": efficacy,
            "degradation": degradation,
            "reward_efficacy_gain": gain,
            "reward_smoothness": -smooth,
            "reward_degradation": -penalty,
        }
        return obs, float(reward), False, truncated, info

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        instance = self.check_reset_options(options)
        self.select_instance(self._episode, instance)
        self.engine.restore()
        self.engine.seed(int(self.np_random.integers(2**63 - 1)))
        ref = self.engine.evaluate(self.config.mixture_lambda, 1.0)[0]
        return self.begin_episode(self._episode, ref)

    def step(self, action):
        if self._episode.needs_reset:
            raise RuntimeError("SISSEnv.step called before reset() or after the episode ended; call reset() first")
        decoded = self.decode_action(action)
        stats = self.engine.update(decoded.lam, decoded.forget_scale)[0]
        return self.advance_episode(self._episode, decoded, stats)

    def render(self):
        """An H×W×3 uint8 grid: one row per label, ``render_samples`` DDIM samples each."""
        if self.render_mode != "rgb_array":
            return None
        import torch

        from ..models.sampling import sample_per_label

        # A fixed seed: every render shows the same initial noise, so successive frames show how
        # the model changed; and rendering leaves the env's RNG untouched.
        images, _ = sample_per_label(
            self.engine.model(),
            self.scenario.num_labels,
            self.config.render_samples,
            seed=0,
            num_inference_steps=self.config.render_ddim_steps,
            scheduler_config=self._scheduler_config,
        )
        L, n = self.scenario.num_labels, self.config.render_samples
        img = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        _, c, h, w = img.shape
        grid = img.view(L, n, c, h, w).permute(0, 3, 1, 4, 2).reshape(L * h, n * w, c)
        return np.repeat(grid.numpy(), 3, axis=2) if c == 1 else grid.numpy()
