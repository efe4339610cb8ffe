"""The base of the unlearning envs: what SISS-v0, SFD-v0 and Hybrid-v0 share.

:class:`UnlearningEnv` holds the construction skeleton (config, model, engine, spaces), the
``reset``/``step`` skeleton, the reward bookkeeping (efficacy gain, smoothness, degradation
increment), the divergence handling and the render grid, all per run (:class:`RunEpisode`), so
that the single env (one run) and the vector env (N runs over one engine) share them. An env
supplies its engine, its action decoding, its observation features and its efficacy/degradation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from ..data.scenarios import Scenario

__all__ = ["UnlearningEnv", "RunEpisode", "DecodedAction", "log_ratio", "parse_env_config", "resolve_device"]


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

    ref: Any = None
    """The engine's statistics at reset (a row of its ``stats_class``): the reference of the
    features, the efficacy and the degradation."""
    t: int = 0
    """Updates since reset."""
    lam_prev: np.ndarray = field(default_factory=lambda: np.zeros(1))
    """λ_{t−1} (the applied action values of the smoothness penalty)."""
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
    outcome_seed: int | None = None
    """The seed of the run's sampled probe (its fixed initial noises; None under ``reward="probe"``)."""
    outcome_ref: Any = None
    """The sampled outcome of the model at reset (a :class:`~unlearn_gym.metrics.forget.SampledOutcome`)."""
    forget_prev: float = 0.0
    """F at the last evaluation of the sampled probe (F_0 at reset)."""
    sampled_damage_prev: float = 0.0
    """D⁺ at the last evaluation of the sampled probe (0 at reset)."""


@dataclass(frozen=True)
class DecodedAction:
    """One run's action mapped to the update's arguments."""

    lam_vec: np.ndarray
    """The applied values in [0, 1] whose change the smoothness penalty α·‖λ_t − λ_{t−1}‖₁ charges."""
    raw: np.ndarray
    """(k,) the action as received (float64)."""
    lam: float
    """The λ of the observation's λ_{t−1} feature."""
    update: dict[str, Any]
    """The run's keywords of ``engine.update`` (e.g. ``lam``, ``forget_scale``; ``lam``, ``target_weights``)."""
    info: dict[str, Any] = field(default_factory=dict)
    """The action's entries of the step's ``info``."""


class UnlearningEnv(gym.Env):
    """One real unlearning update of a pretrained class-conditional DDPM per step (the envs' base).

    The observation is [4 features, λ_{t−1}, t/T] (:meth:`features`). The reward has two forms.
    With a sampled probe (:meth:`_make_outcome_probe`; SISS-v0's ``reward="sampled"``) it is
    r_t = −(F_t − F_{t'}) − β·(D⁺_t − D⁺_{t'}) at the steps that evaluate the probe (every
    ``eval_every`` steps and the last), with F the forget rate and D the damage of the
    probe's samples against the model at reset (:class:`~unlearn_gym.metrics.forget.SampledOutcome`)
    and t' the previous evaluation (F_0 at reset, D⁺_0 = 0), plus at every step
    −α·‖λ_t − λ_{t−1}‖₁ and ``probe_shaping``·w of the denoising-loss terms below. Without one
    (``reward="probe"``) it is r_t = (e_t − e_{t−1}) − α·‖λ_t − λ_{t−1}‖₁ − β·(d⁺_t − d⁺_{t−1}) with
    the env's efficacy e_t and degradation d_t (:meth:`efficacy_degradation`), d⁺ = max(0, d),
    e_0 = d⁺_0 = 0 (``degradation_penalty="level"``: −β·d⁺_t instead of the increment). A step
    whose statistics are not finite gets −``divergence_penalty`` and terminates. Subclasses
    implement :meth:`_make_engine`, :meth:`_action_dim`, :meth:`decode_action`, :meth:`features`,
    :meth:`efficacy_degradation` and :meth:`check_reset_options`, and may override the other hooks.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    config_class: type
    """The env's frozen config dataclass (its fields are the keywords of ``gymnasium.make``)."""
    obs_names: tuple[str, ...]
    """The names of the observation's entries."""
    scenario: Scenario | None = None
    """The contamination scenario the env unlearns (retain and forget sets, labels, the contaminated
    label y_c and its contaminant class); None where the env has none (SFD-v0 is data-free)."""
    sampler: dict | None = None
    """How evaluations sample the env's model (the ``sampler`` of
    :func:`~unlearn_gym.metrics.forget.evaluate_model`): None for the diffusion model's DDIM sampler;
    SFD-v0: its one-step generator."""
    forget_class: int | None = None
    """The class the env erases (SFD-v0's class erasure), or None where it unlearns a contamination."""

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        self._setup(render_mode, kwargs, num_runs=1, executor="auto")

    @classmethod
    def with_runs(cls, num_runs: int, executor: str = "auto", **kwargs: Any):
        """This env's construction with an engine of ``num_runs`` runs, for the vector env.

        The object holds the config, the model's setting and the N-run engine and provides the
        per-run action decoding, observation and reward (:meth:`decode_action`,
        :meth:`begin_episode`, :meth:`advance_episode`); its own ``reset``/``step`` are for N = 1 only.
        """
        env = cls.__new__(cls)
        env._setup(None, kwargs, num_runs=num_runs, executor=executor)
        return env

    def _setup(self, render_mode: str | None, kwargs: dict, num_runs: int, executor: str) -> None:
        self.config = cfg = parse_env_config(self, self.config_class, kwargs, render_mode)
        self.render_mode = render_mode

        from ..assets import bundled_model_dir
        from ..models.checkpoint import load_model

        self.device = resolve_device(cfg.device)
        self.checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else bundled_model_dir()
        unet, self.model_config = load_model(self.checkpoint, self.device)
        self.engine = self._make_engine(unet, self.model_config, self.device, num_runs=num_runs, executor=executor)
        self.outcome_probe = self._make_outcome_probe()
        """The sampled reward's probe (:class:`~unlearn_gym.metrics.forget.OutcomeProbe`), or None:
        the reward is the denoising-loss probe's alone."""
        k = self._action_dim()
        self.action_space = spaces.Box(-1.0, 1.0, (k,), np.float32)
        self.observation_space = spaces.Box(-cfg.obs_clip, cfg.obs_clip, (len(self.obs_names),), np.float32)
        self._episode = RunEpisode(lam_prev=np.zeros(k))

    def unlearned_model(self, run: int = 0):
        """Run ``run``'s current model θ_t as a ``UNet2DModel`` whose parameters are views of the engine's
        weights: for evaluation (sampling, classification), read-only; it changes with every step."""
        return self.engine.model(run)

    @property
    def _ref(self):
        """The reference statistics of the current episode (the engine's evaluation at reset)."""
        return self._episode.ref

    # -- what each env supplies ------------------------------------------------------------------

    def _make_engine(self, unet, model_config: dict, device: str, num_runs: int = 1, executor: str = "auto"):
        """The env's engine of ``num_runs`` runs over the pretrained ``unet``; sets ``num_labels`` (the render's rows)."""
        raise NotImplementedError

    def _action_dim(self) -> int:
        """k of the action space ``Box(-1, 1, (k,))``."""
        raise NotImplementedError

    def decode_action(self, action) -> DecodedAction:
        """Validate one run's action and map it to the update's arguments.

        Raises:
            ValueError: the shape is not ``action_space.shape`` or a value is NaN or ±inf.
        """
        raise NotImplementedError

    def features(self, ep: RunEpisode, stats) -> np.ndarray:
        """(4,) the observation's features of ``stats`` relative to the reset statistics ``ep.ref``."""
        raise NotImplementedError

    def efficacy_degradation(self, ep: RunEpisode, stats) -> tuple[float, float]:
        """(e_t, d_t) of ``stats`` relative to the reset statistics ``ep.ref``."""
        raise NotImplementedError

    def _make_outcome_probe(self):
        """The sampled probe of the reward (None: the reward is the denoising-loss probe's)."""
        return None

    @property
    def outcome_eval_every(self) -> int | None:
        """Steps between evaluations of the sampled probe (None: at the episode's last step only)."""
        return None

    def _outcome_due(self, t: int, last: bool) -> bool:
        """Whether step ``t`` evaluates the sampled probe: the episode's last step, and every
        :attr:`outcome_eval_every` steps."""
        every = self.outcome_eval_every
        return last or (every is not None and t % every == 0)

    def initial_lam(self) -> np.ndarray:
        """λ_{−1}: the smoothness penalty's previous action values at reset."""
        return np.array([self.config.mixture_lambda])

    @property
    def reference_kwargs(self) -> dict[str, Any]:
        """The keywords of ``engine.evaluate`` at reset (the update at λ_{−1} that gives ``ep.ref``)."""
        return {"lam": self.config.mixture_lambda}

    @property
    def update_constants(self) -> dict[str, Any]:
        """Keywords of ``engine.update`` that are the same for every run (beside the decoded ones)."""
        return {}

    PROBE_STATS: tuple[str, ...] = ()
    """The engine statistics of the denoising-loss probe: left out of a step that does not read it
    (:meth:`needs_probe`), divergence check and ``info`` alike."""

    def needs_probe(self, ep: RunEpisode, limit: int | None = None) -> bool:
        """Whether run ``ep``'s next step reads the denoising-loss probe (``limit``: the step that
        truncates, default ``horizon``): always, here."""
        return True

    def probe_keywords(self, needs: Sequence[bool]) -> dict[str, Any]:
        """``engine.update``'s keywords for runs whose next steps read the probe as ``needs`` (one per
        run): {} here (the engine measures it at every update)."""
        return {}

    def check_reset_options(self, options: dict | None) -> int | None:
        """The ``instance`` of ``reset(options=...)``, validated (None: the whole forget set).

        Raises:
            ValueError: an option the env does not take, or a bad value (the message says which).
        """
        raise NotImplementedError

    def select_instance(self, ep: RunEpisode, instance: int | None, run: int = 0) -> None:
        """Give run ``run`` instance ``instance`` (envs without instances ignore it)."""
        ep.instance = instance

    def reset_info(self, ep: RunEpisode) -> dict[str, Any]:
        """The env's own entries of the reset ``info`` (beside ``reference``)."""
        return {}

    def render_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~unlearn_gym.models.sampling.sample_per_label` for the render."""
        return {}

    # -- the per-run episode -------------------------------------------------------------------

    def _obs(self, ep: RunEpisode, stats, lam: float) -> np.ndarray:
        return np.concatenate([self.features(ep, stats), [lam, ep.t / self.config.horizon]]).astype(np.float32)

    def begin_episode(
        self, ep: RunEpisode, ref, outcome_seed: int | None = None, run: int = 0
    ) -> tuple[np.ndarray, dict]:
        """Start ``ep`` from the reset statistics ``ref`` (the engine's evaluation at λ_{−1}): (obs, info).

        ``outcome_seed``: the seed of the run's sampled probe (with a sampled reward), whose
        outcome on run ``run``'s model (the pretrained one, just restored) is the episode's reference.
        """
        ep.ref = ref
        ep.t = 0
        ep.lam_prev = self.initial_lam()
        ep.efficacy_prev = 0.0
        ep.damage_prev = 0.0
        ep.needs_reset = False
        info = {**self.reset_info(ep), "reference": ref.as_dict()}
        if self.outcome_probe is not None:
            if outcome_seed is None:
                raise ValueError("begin_episode: a sampled reward needs the run's outcome_seed")
            ep.outcome_seed = int(outcome_seed)
            ep.outcome_ref = self.outcome_probe.measure_reference(self.engine.model(run), ep.outcome_seed)
            ep.forget_prev = ep.outcome_ref.forget_rate
            ep.sampled_damage_prev = 0.0
            info["sampled_reference"] = {
                "forget_rate": ep.outcome_ref.forget_rate,
                "retain_accuracy": ep.outcome_ref.retain_accuracy,
            }
        obs = self._obs(ep, ref, self.config.mixture_lambda)
        ep.last_obs = obs
        return obs, info

    def draw_outcome_seed(self, rng: np.random.Generator) -> int | None:
        """The seed of a new episode's sampled probe, drawn from the run's ``rng`` (None without one)."""
        return None if self.outcome_probe is None else int(rng.integers(2**63 - 1))

    def _sampled_terms(self, ep: RunEpisode, run: int) -> tuple[float, float, dict]:
        """Evaluate the sampled probe on run ``run``'s model: (F_{t'} − F_t, β·(D⁺_t − D⁺_{t'}), info)."""
        outcome = self.outcome_probe.measure(self.engine.model(run), ep.outcome_seed)
        damage = max(0.0, outcome.damage(ep.outcome_ref))
        forget_gain = ep.forget_prev - outcome.forget_rate
        penalty = self.config.beta * (damage - ep.sampled_damage_prev)
        ep.forget_prev, ep.sampled_damage_prev = outcome.forget_rate, damage
        info = {
            "sampled_forget_rate": outcome.forget_rate,
            "sampled_retain_accuracy": outcome.retain_accuracy,
            "sampled_damage": damage,
        }
        return forget_gain, penalty, info

    def advance_episode(
        self,
        ep: RunEpisode,
        decoded: DecodedAction,
        stats,
        limit: int | None = None,
        run: int = 0,
        probe_measured: bool = True,
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Advance ``ep`` by the update that gave ``stats``: (obs, reward, terminated, truncated, info).

        ``limit``: the step that truncates (default ``horizon``). ``run``: the engine's run of ``ep``
        (whose model the sampled probe evaluates). ``probe_measured``: whether this step reads the
        denoising-loss probe (:meth:`needs_probe`); where not, ``info`` has no probe statistics,
        efficacy or degradation (no NaN placeholders: equal steps give equal infos) and their reward
        terms are 0.
        """
        cfg = self.config
        ep.t += 1
        step_stats = stats.as_dict()
        if not probe_measured:
            for name in self.PROBE_STATS:
                del step_stats[name]
        info: dict[str, Any] = {"lam": decoded.lam, **decoded.info, "step": ep.t, **step_stats}
        smooth = cfg.smoothness_weight * float(np.abs(decoded.lam_vec - ep.lam_prev).sum())
        if not (stats.finite if probe_measured else stats.finite_except(self.PROBE_STATS)):
            info |= {"diverged": True, "efficacy": float("nan"), "degradation": float("nan")}
            info |= {"reward_efficacy_gain": 0.0, "reward_smoothness": -smooth, "reward_degradation": 0.0}
            ep.needs_reset = True
            return ep.last_obs.copy(), -float(cfg.divergence_penalty), True, False, info
        info |= {"diverged": False, "reward_smoothness": -smooth}
        gain = penalty = 0.0
        if probe_measured:
            efficacy, degradation = self.efficacy_degradation(ep, stats)
            gain = efficacy - ep.efficacy_prev
            damage = max(0.0, degradation)
            if cfg.degradation_penalty == "increment":
                penalty = cfg.beta * (damage - ep.damage_prev)
            else:
                penalty = cfg.beta * damage
            ep.efficacy_prev = efficacy
            ep.damage_prev = damage
            info |= {"efficacy": efficacy, "degradation": degradation}
        ep.lam_prev = decoded.lam_vec
        obs = self._obs(ep, stats, decoded.lam)
        ep.last_obs = obs
        truncated = ep.t >= (cfg.horizon if limit is None else limit)
        if truncated:
            ep.needs_reset = True
        if self.outcome_probe is None:
            reward = gain - smooth - penalty
            info |= {"reward_efficacy_gain": gain, "reward_degradation": -penalty}
            return obs, float(reward), False, truncated, info
        # the sampled reward: the denoising-loss terms only as shaping, the outcome at evaluations
        w = cfg.probe_shaping
        forget_gain, sampled_penalty = 0.0, 0.0
        if self._outcome_due(ep.t, truncated):
            forget_gain, sampled_penalty, sampled = self._sampled_terms(ep, run)
            info |= sampled
        reward = w * (gain - penalty) - smooth + forget_gain - sampled_penalty
        info |= {
            "reward_efficacy_gain": w * gain,
            "reward_degradation": -w * penalty,
            "reward_forget": forget_gain,
            "reward_retain_damage": -sampled_penalty,
        }
        return obs, float(reward), False, truncated, info

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        instance = self.check_reset_options(options)
        self.select_instance(self._episode, instance)
        self.engine.restore()
        self.engine.seed(int(self.np_random.integers(2**63 - 1)))
        ref = self.engine.evaluate(**self.reference_kwargs)[0]
        return self.begin_episode(self._episode, ref, self.draw_outcome_seed(self.np_random))

    def step(self, action):
        if self._episode.needs_reset:
            raise RuntimeError(
                f"{type(self).__name__}.step called before reset() or after the episode ended; call reset() first"
            )
        decoded = self.decode_action(action)
        needs = self.needs_probe(self._episode)
        stats = self.engine.update(**decoded.update, **self.update_constants, **self.probe_keywords([needs]))[0]
        return self.advance_episode(self._episode, decoded, stats, probe_measured=needs)

    def render(self):
        """An H×W×3 uint8 grid: one row per label, ``render_samples`` samples each, from fixed noise."""
        if self.render_mode != "rgb_array":
            return None
        import torch

        from ..models.sampling import sample_per_label

        # A fixed seed: every render shows the same initial noise, so successive frames show how
        # the model changed; and rendering leaves the env's RNG untouched.
        L, n = self.num_labels, self.config.render_samples
        images, _ = sample_per_label(
            self.engine.model(),
            L,
            n,
            seed=0,
            scheduler_config=self.model_config.get("scheduler"),
            **self.render_kwargs(),
        )
        img = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        _, c, h, w = img.shape
        grid = img.view(L, n, c, h, w).permute(0, 3, 1, 4, 2).reshape(L * h, n * w, c)
        return np.repeat(grid.numpy(), 3, axis=2) if c == 1 else grid.numpy()
