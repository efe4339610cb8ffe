"""``unlearn_gym/SISS-v0``: one real SISS update of a pretrained class-conditional DDPM per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .base import DecodedAction, RunEpisode, UnlearningEnv, log_ratio
from .conventions import OBS_TAIL, lam_from_action

__all__ = ["SISSEnv", "SISSEnvConfig", "RunEpisode", "DecodedAction"]

OBS_NAMES = ("log_loss_r", "log_loss_f", "log_grad_r", "log_grad_f", *OBS_TAIL)
RESET_OPTIONS = ("instance",)


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
    reward: Literal["sampled", "probe"] = "sampled"
    """What the reward measures. "sampled": the evaluation classifier's verdict on samples of a
    fixed probe of initial noises (forget rate F and damage D, see Rewards), what unlearning
    is for; "probe": the rise of the denoising losses of the fixed image probe (the earlier reward,
    which an agent can raise by damaging the model)."""
    sample_forget: int = 32
    """k_f: samples of the contaminated label in the sampled probe (F resolves to 1/k_f)."""
    sample_retain: int = 8
    """k_r: samples of every other label in the sampled probe (each A_c resolves to 1/k_r)."""
    sample_ddim_steps: int = 10
    """DDIM steps (η = 0) of the sampled probe."""
    eval_every: int | None = None
    """Steps between evaluations of the sampled probe; None: at the episode's last step only (a
    terminal reward). The last step is always evaluated."""
    probe_shaping: float = 0.0
    """w: weight of the denoising-loss probe's terms (efficacy gain, degradation increment) added
    as dense shaping to the sampled reward (0: none)."""
    classifier: str | None = None
    """The evaluation classifier directory of the sampled reward (None: the checkpoint's own
    ``classifier/``, else the bundled one for the default scenario)."""
    probe_size: int = 4
    """Images per half (retain, forget) of the fixed denoising-loss probe (the observation's probe
    statistics, the "probe" reward and the shaping)."""
    alpha: float | None = None
    """α: weight of the smoothness penalty α·‖λ_t − λ_{t−1}‖₁; None: 0 with the sampled reward (its
    return is the outcome alone: a λ that jitters leaves the model no worse) and 0.01 with the probe
    reward (its earlier default). See :attr:`smoothness_weight`."""
    beta: float = 1.0
    """β: weight of the damage (sampled reward) or degradation (probe reward) penalty: the exchange
    rate between a unit of damage and a unit of forget rate."""
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
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mixture_lambda <= 1.0:
            raise ValueError(f"mixture_lambda must be in [0, 1], got {self.mixture_lambda}")
        if not self.obs_clip > 0:
            raise ValueError(f"obs_clip must be > 0, got {self.obs_clip}")
        if self.forget_subset is not None and self.forget_subset < 1:
            raise ValueError(f"forget_subset must be None or >= 1, got {self.forget_subset}")
        if self.reward not in ("sampled", "probe"):
            raise ValueError(f"reward must be 'sampled' or 'probe', got {self.reward!r}")
        for name in ("sample_forget", "sample_retain", "sample_ddim_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be None or >= 1, got {self.eval_every}")
        if self.probe_shaping < 0:
            raise ValueError(f"probe_shaping must be >= 0, got {self.probe_shaping}")

    @property
    def smoothness_weight(self) -> float:
        """The α applied: ``alpha``, or where it is None 0 under ``reward="sampled"`` and 0.01 under ``reward="probe"``."""
        if self.alpha is not None:
            return float(self.alpha)
        return 0.0 if self.reward == "sampled" else 0.01


class SISSEnv(UnlearningEnv):
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

    ``reward="sampled"`` (default): what the unlearned model draws. At reset the env fixes a probe
    of initial noises (seeded from the env's RNG): k_f = ``sample_forget`` samples of the
    contaminated label and k_r = ``sample_retain`` of every other label, DDIM with
    ``sample_ddim_steps`` steps and η = 0, so a measurement is a function of the weights alone.
    The evaluation classifier gives the forget rate F (share of contaminated-label samples it
    calls the contaminant) and each label's accuracy A_c; the damage is
    D = ½·(max_c δ_c + mean_c δ_c) over every label, δ_c = K_c⁰ − K_c (⁰: at reset) with K_c = A_c
    and, for the contaminated label, K = A + F (its samples still recognised as its digit or the
    contaminant). At the steps that evaluate the probe (the last step of the episode, and every
    ``eval_every`` steps where set)

    r_t = −(F_t − F_{t'}) − β·(D⁺_t − D⁺_{t'}),  D⁺ = max(0, D), t' the previous evaluation (F⁰, D⁺ = 0 at reset),

    (+ ``probe_shaping``·w of the denoising-loss terms below as dense shaping, and −α·‖λ_t − λ_{t−1}‖₁
    at every step where ``alpha`` > 0; α = 0 by default). The return is (F⁰ − F_T) − β·D⁺_T: the
    share of the contaminant removed minus the damage left, in [−1 − β, 1]; β is the exchange rate
    of damage into forget rate, so the return is minus the rise of the damage-adjusted forget rate
    F + β·D⁺ that ``unlearn-gym bench`` scores on its own, larger samples. Damaging the model does
    not pay: it lowers the K_c, and a contaminated label broken into samples that nobody recognises
    lowers F and K alike (δ_{y_c} = the fall of F).

    ``reward="probe"``: r_t = (e_t − e_{t−1}) − α·‖λ_t − λ_{t−1}‖₁ − β·(d⁺_t − d⁺_{t−1}), with
    e_t = log(p_f,t / p_f,0) the efficacy (rise of the forget denoising loss on a fixed image
    probe over its reset value), d_t = log(p_r,t / p_r,0) the degradation (rise of the retain probe
    loss), d⁺ = max(0, d) and e_0 = d⁺_0 = 0. The probe (images, t, ε) is drawn once per reset and
    evaluated without gradients after each update; the return is e_T − β·d⁺_T −
    α·Σ_t ‖λ_t − λ_{t−1}‖₁ (α = 0.01 by default here). (``degradation_penalty="level"`` charges −β·d⁺_t at every step
    instead.) e_t and d_t are clipped to ±``obs_clip``. A λ near 1 raises e_T by damaging the
    model: an agent trained on this reward learns that (docs/results.md §4).

    A divergent step (non-finite loss or weights) gets −``divergence_penalty``.

    ## Starting State

    The pretrained weights, a fresh AdamW state, λ_{−1} = ``mixture_lambda``.

    ## Episode End

    Truncation after ``horizon`` updates (the env's own budget; the ids are registered without a
    ``TimeLimit``); termination when the update diverges (non-finite statistics,
    ``info["diverged"] = True``). ``reset`` then restores the pretrained weights in place. Under the
    sampled reward without ``probe_shaping`` the denoising-loss probe is read, so measured, only at
    the last step (:meth:`needs_probe`): ``info`` has ``probe_r``, ``probe_f``, ``efficacy`` and
    ``degradation`` there alone, and weights that an update broke show at the next update's losses.

    ## Arguments

    The fields of :class:`SISSEnvConfig`, as keywords of ``gymnasium.make("unlearn_gym/SISS-v0", ...)``.
    ``reset(options={"instance": i})`` selects instance i: the forget subset (with
    ``forget_subset``) drawn from seed i; a reset without it uses the whole forget set.

    Reset seeds and instances are split for training, tuning and reporting (:mod:`unlearn_gym.splits`):
    train seeds 0 … 2³² − 1 and instances 0–999, validation seeds 2³² … 2³² + 999,999 and instances
    1,000–1,999, test seeds 2³² + 1,000,000 … 2³² + 1,999,999 and instances 2,000–2,999. The declared
    task set (:mod:`unlearn_gym.tasks`: the budget track, forget subsets of k = 16 and 64, 50%
    contamination, mislabelled 7s) is this env with the keywords and models each task names.

    ## Version History

    - v0: initial version (before the first release the degradation term became an increment,
      so that returns measure the final outcome, ``degradation_penalty="level"`` keeps the old form;
      and the default reward became the sampled one, ``reward="probe"`` keeps the old one; then the
      sampled reward's smoothness term became opt-in, α = 0 unless ``alpha`` is given).
    """

    config_class = SISSEnvConfig
    obs_names = OBS_NAMES
    FEATURE_STATS = ("loss_r", "loss_f", "grad_r_norm", "grad_f_norm")
    """The engine statistics behind the four log-ratio features of the observation."""
    PROBE_STATS = ("probe_r", "probe_f")

    # -- construction --------------------------------------------------------------------------

    def _siss_config(self):
        from ..objectives.siss import SISSConfig

        cfg = self.config
        return SISSConfig(
            objective=cfg.objective, surgery=cfg.surgery, scale=cfg.scale, batch_size=cfg.batch_size, lr=cfg.lr
        )

    def _load_scenario(self, model_config: dict) -> None:
        from ..data.scenarios import scenario_of_checkpoint

        self.scenario = scenario_of_checkpoint(model_config, **(self.config.scenario_kwargs or {}))
        self.num_labels = self.scenario.num_labels
        self._full_forget = self.scenario.forget

    def _make_engine(self, unet, model_config: dict, device: str, num_runs: int = 1, executor: str = "auto"):
        from ..engines import UnlearningEngine

        self._load_scenario(model_config)
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

    def _make_outcome_probe(self):
        """The sampled reward's :class:`~unlearn_gym.metrics.forget.OutcomeProbe` (None under ``reward="probe"``).

        Raises:
            FileNotFoundError: no evaluation classifier for the checkpoint (the message says what to pass).
        """
        cfg = self.config
        if cfg.reward != "sampled":
            return None
        from ..metrics.classifier import classifier_dir_for, load_classifier
        from ..metrics.forget import OutcomeProbe

        try:
            directory = classifier_dir_for(self.checkpoint, self.model_config, cfg.classifier)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'{e}; reward="sampled" needs it (pass classifier=DIR, or reward="probe")'
            ) from None
        scenario = self.scenario
        return OutcomeProbe(
            load_classifier(directory, self.device),
            num_labels=scenario.num_labels,
            contaminated_label=scenario.contaminated_label,
            contaminant_class=scenario.contaminant_class,
            forget_samples=cfg.sample_forget,
            retain_samples=cfg.sample_retain,
            ddim_steps=cfg.sample_ddim_steps,
            scheduler_config=self.model_config.get("scheduler"),
        )

    @property
    def outcome_eval_every(self) -> int | None:
        return self.config.eval_every

    def needs_probe(self, ep: RunEpisode, limit: int | None = None) -> bool:
        """The denoising-loss probe is read at every step under the probe reward or with
        ``probe_shaping``; under the sampled reward alone only at the episode's last step (its
        ``info`` gives the final efficacy and degradation)."""
        cfg = self.config
        if self.outcome_probe is None or cfg.probe_shaping > 0:
            return True
        return ep.t + 1 >= (cfg.horizon if limit is None else limit)

    def probe_keywords(self, needs) -> dict[str, Any]:
        """The update measures the probe where some run reads it, and skips its forward pass elsewhere."""
        return {"measure_probe": any(needs)}

    def _action_dim(self) -> int:
        return 2 if self.config.action_mode == "both" else 1

    # -- actions, observations, rewards ----------------------------------------------------------

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
        lam_vec = lam_from_action(a)
        cfg = self.config
        if cfg.action_mode == "mixture":
            lam, forget_scale = float(lam_vec[0]), 1.0
        elif cfg.action_mode == "forget-strength":
            lam, forget_scale = cfg.mixture_lambda, float(lam_vec[0]) * cfg.max_scale / max(cfg.scale, 1e-12)
        else:
            lam, forget_scale = float(lam_vec[0]), float(lam_vec[1]) * cfg.max_scale / max(cfg.scale, 1e-12)
        info = {"forget_scale_S": forget_scale * cfg.scale, "action_clipped": bool(np.any(np.abs(a) > 1.0))}
        return DecodedAction(lam_vec, a, lam, {"lam": lam, "forget_scale": forget_scale}, info)

    def initial_lam(self) -> np.ndarray:
        lam0, mode = self.config.mixture_lambda, self.config.action_mode
        return np.array([lam0] if mode == "mixture" else [0.5] if mode == "forget-strength" else [lam0, 0.5])

    def features(self, ep: RunEpisode, stats) -> np.ndarray:
        """[log ℓ_r/ℓ_r⁰, log ℓ_f/ℓ_f⁰, log ‖∇ℓ_r‖/‖∇ℓ_r⁰‖, log ‖∇ℓ_f‖/‖∇ℓ_f⁰‖] of ``FEATURE_STATS``."""
        value = np.array([getattr(stats, name) for name in self.FEATURE_STATS], dtype=np.float64)
        ref = np.array([getattr(ep.ref, name) for name in self.FEATURE_STATS], dtype=np.float64)
        return log_ratio(value, ref, self.config.obs_clip)

    def efficacy_degradation(self, ep: RunEpisode, stats) -> tuple[float, float]:
        """e_t = log(p_f,t/p_f,0), d_t = log(p_r,t/p_r,0) of the probe's forget and retain losses."""
        clip = self.config.obs_clip
        efficacy = float(log_ratio(np.array([stats.probe_f]), np.array([ep.ref.probe_f]), clip)[0])
        degradation = float(log_ratio(np.array([stats.probe_r]), np.array([ep.ref.probe_r]), clip)[0])
        return efficacy, degradation

    # -- instances, reset info, render -------------------------------------------------------------

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

    def reset_info(self, ep: RunEpisode) -> dict[str, Any]:
        return {"instance": ep.instance}

    def render_kwargs(self) -> dict[str, Any]:
        """DDIM samples with ``render_ddim_steps`` steps."""
        return {"num_inference_steps": self.config.render_ddim_steps}
