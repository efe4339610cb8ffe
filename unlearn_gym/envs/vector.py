"""N unlearning runs as one native Gymnasium vector env over one N-run engine.

``gymnasium.make_vec("unlearn_gym/SISS-v0", num_envs=N, vectorization_mode="vector_entry_point")``
(and ``SFD-v0``, ``Hybrid-v0``) returns an :class:`UnlearningVectorEnv`: every ``step`` advances
all N runs in one batched engine update (:class:`~unlearn_gym.engines.UnlearningEngine`,
:class:`~unlearn_gym.engines.SFDEngine`), and run i behaves as the single env seeded like run
i. The action decoding, observation and reward are the single env's own
(:meth:`UnlearningEnv.decode_action`, :meth:`UnlearningEnv.advance_episode`); this module only
batches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .base import DecodedAction, RunEpisode, UnlearningEnv

__all__ = ["UnlearningVectorEnv", "make_siss_vector_env", "make_sfd_vector_env", "make_hybrid_vector_env"]

RESET_MASK = "reset_mask"


class UnlearningVectorEnv(VectorEnv):
    """N independent runs of an unlearning env (SISS-v0, SFD-v0, Hybrid-v0) stepped as one batched update.

    ## Description

    One N-run engine holds every run's weights, optimizer state, data stream and probe; ``step``
    performs one unlearning update of all N runs together (a loop or ``vmap`` over the runs, the
    engine's ``executor``). Run i seeded s_i produces the observations, rewards and weights of the
    single env seeded s_i.

    ## Spaces

    ``single_action_space`` and ``single_observation_space`` are the single env's;
    ``action_space`` and ``observation_space`` are their batches, (N, k) and (N, 6).

    ## Autoreset

    ``metadata["autoreset_mode"] = AutoresetMode.SAME_STEP``: a run that ends (truncated at the
    horizon, or terminated because it diverged) is reset inside the same ``step``; the returned
    observation is its first observation of the new episode, the last one is in
    ``info["final_obs"]`` and the last step's info in ``info["final_info"]`` (with ``_final_obs``/
    ``_final_info`` masks). A diverged run terminates and restarts alone; the others go on. The reset
    restores the run's pretrained weights: to read its last model θ_T first (to evaluate it), set
    :attr:`on_episode_end`.

    ## Reset

    ``reset(seed=s)`` seeds run i with s + i; ``reset(seed=[s_0, …, s_{N−1}])`` seeds each run (None
    entries keep the run's stream). ``options``: ``"reset_mask"`` (N,) bool resets only those runs
    (the others keep their episodes and observations); ``"instance"``: an int or one int per run
    (None: the whole forget set), as the single env's option (SISS-v0, Hybrid-v0; SFD-v0 takes none).

    ## Infos

    Gymnasium's vector form: a dict of arrays with a boolean ``_key`` mask per key.

    ## Arguments

    num_envs: N >= 1. executor: the engine's executor, "auto", "vmap", "loop" or "graph" (CUDA only).
    max_episode_steps: truncation (as ``gymnasium.make``'s; the earlier of it and ``horizon``
    ends an episode). Everything else: the single env's keywords.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_class: type[UnlearningEnv],
        num_envs: int = 1,
        *,
        executor: str = "auto",
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ):
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError(f"the vector env does not render: render_mode must be None, got {render_mode!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps}")
        self.num_envs = int(num_envs)
        self.env = env_class.with_runs(self.num_envs, executor, **kwargs)
        """The single env's construction over the N-run engine: config, scenario, engine, per-run logic."""
        self.engine = self.env.engine
        self.config = self.env.config
        self.render_mode = None
        horizon = self.config.horizon
        self.max_episode_steps = horizon if max_episode_steps is None else min(horizon, int(max_episode_steps))
        self.single_action_space = self.env.action_space
        self.single_observation_space = self.env.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        k = self.single_action_space.shape[0]
        self._episodes = [RunEpisode(lam_prev=np.zeros(k)) for _ in range(self.num_envs)]
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self.on_episode_end: Callable[[int], None] | None = None
        """Called as ``on_episode_end(i)`` for each run i whose episode ends in a ``step``, in the order of
        the runs, after the update and before the autoreset restores the run's pretrained weights:
        :meth:`unlearned_model` ``(i)`` is then the run's last model θ_T (read it, do not change it).
        None: no call."""

    def unlearned_model(self, run: int):
        """Run ``run``'s current model θ_t (views of the engine's weights; read-only, as the single env's)."""
        return self.env.unlearned_model(run)

    # -- helpers -------------------------------------------------------------------------------

    def _seeds(self, seed) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"reset: expected one seed per run, a list of {self.num_envs}, got {len(seeds)}; "
                "or pass one int (run i gets seed + i)"
            )
        for i, s in enumerate(seeds):
            if s is not None and (not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0):
                raise ValueError(f"reset: seed of run {i} must be an int >= 0 or None, got {s!r}")
        return [None if s is None else int(s) for s in seeds]

    def _reset_runs(self, runs: list[int], instances: list[int | None], infos: dict) -> dict:
        """Restore, reseed and evaluate ``runs`` (one engine call each); ``instances`` has one entry per run."""
        for i in runs:
            self.env.select_instance(self._episodes[i], instances[i], run=i)
        engine_seeds, outcome_seeds = [], []
        for i in runs:  # each run's stream in the single env's order: the engine's seed, then the sampled probe's
            if self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(None)
            engine_seeds.append(int(self._rngs[i].integers(2**63 - 1)))
            outcome_seeds.append(self.env.draw_outcome_seed(self._rngs[i]))
        self.engine.restore(runs)
        self.engine.seed(engine_seeds, runs)
        refs = self.engine.evaluate(**self.env.reference_kwargs, runs=runs)
        for j, i in enumerate(runs):
            obs, info = self.env.begin_episode(self._episodes[i], refs[j], outcome_seeds[j], run=i)
            self._obs[i] = obs
            infos = self._add_info(infos, info, i)
        return infos

    # -- Gymnasium API -----------------------------------------------------------------------------

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every run (or the runs of ``options["reset_mask"]``); see the class docstring."""
        seeds = self._seeds(seed)
        options = dict(options or {})
        mask = options.pop(RESET_MASK, None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.num_envs,):
            raise ValueError(
                f"reset: options['{RESET_MASK}'] must be a bool array of shape ({self.num_envs},), "
                f"got {mask.dtype} {mask.shape}"
            )
        never = [i for i, ep in enumerate(self._episodes) if ep.needs_reset and not mask[i]]
        if never:
            raise ValueError(
                f"reset: options['{RESET_MASK}'] leaves runs {never} without a first reset; "
                "call reset() without a mask first"
            )
        instance = options.pop("instance", None)
        instances = list(instance) if isinstance(instance, (list, tuple, np.ndarray)) else [instance] * self.num_envs
        if len(instances) != self.num_envs:
            raise ValueError(
                f"reset: options['instance'] needs one entry per run ({self.num_envs}), got {len(instances)}"
            )
        checked = []
        for i, inst in enumerate(instances):
            try:
                checked.append(self.env.check_reset_options(options if inst is None else {**options, "instance": inst}))
            except ValueError as e:
                raise ValueError(f"run {i}: {e}") from None
        runs = [int(i) for i in np.flatnonzero(mask)]
        for i in runs:
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        infos = self._reset_runs(runs, checked, {})
        return self._obs.copy(), infos

    def _decode(self, actions) -> list:
        a = np.asarray(actions)
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"actions: expected a float array of shape {self.action_space.shape}, got dtype {a.dtype}")
        k = self.single_action_space.shape[0]
        if a.shape == (self.num_envs,) and k == 1:
            a = a.reshape(self.num_envs, 1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"actions: expected shape {self.action_space.shape} (one row per run), got {a.shape}")
        decoded = []
        for i in range(self.num_envs):
            try:
                decoded.append(self.env.decode_action(a[i]))
            except ValueError as e:
                raise ValueError(f"run {i}: {e}; nothing was stepped") from None
        return decoded

    @staticmethod
    def _update_kwargs(decoded: list[DecodedAction]) -> dict[str, Any]:
        """The runs' ``engine.update`` keywords, batched: one row per run (None where no run gives one)."""
        out = {}
        for key in decoded[0].update:
            values = [d.update[key] for d in decoded]
            out[key] = None if all(v is None for v in values) else np.stack([np.asarray(v, np.float64) for v in values])
        return out

    def step(self, actions):
        """One update of every run; runs that end are reset in the same call (SAME_STEP autoreset)."""
        not_ready = [i for i, ep in enumerate(self._episodes) if ep.needs_reset]
        if not_ready:
            raise RuntimeError(f"step called before reset() (runs {not_ready}); call reset() first")
        decoded = self._decode(actions)  # every check before any run moves
        # the probe where any run reads it; a run that does not read it at this step ignores it, as the single env
        needs = [self.env.needs_probe(ep, self.max_episode_steps) for ep in self._episodes]
        probe = self.env.probe_keywords(needs)
        stats = self.engine.update(**self._update_kwargs(decoded), **self.env.update_constants, **probe)
        rewards = np.zeros(self.num_envs)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        infos: dict = {}
        ended = []
        for i, (ep, d) in enumerate(zip(self._episodes, decoded)):
            obs, rewards[i], terminations[i], truncations[i], info = self.env.advance_episode(
                ep, d, stats[i], limit=self.max_episode_steps, run=i, probe_measured=needs[i]
            )
            self._obs[i] = obs
            if terminations[i] or truncations[i]:
                ep.needs_reset = True
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                ended.append(i)
            else:
                infos = self._add_info(infos, info, i)
        if ended:
            if self.on_episode_end is not None:
                for i in ended:
                    self.on_episode_end(i)
            infos = self._reset_runs(ended, [ep.instance for ep in self._episodes], infos)
        return self._obs.copy(), rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.engine = None


def make_siss_vector_env(num_envs: int = 1, **kwargs: Any) -> UnlearningVectorEnv:
    """``vector_entry_point`` of SISS-v0."""
    from .siss_env import SISSEnv

    return UnlearningVectorEnv(SISSEnv, num_envs, **kwargs)


def make_sfd_vector_env(num_envs: int = 1, **kwargs: Any) -> UnlearningVectorEnv:
    """``vector_entry_point`` of SFD-v0."""
    from .sfd_env import SFDEnv

    return UnlearningVectorEnv(SFDEnv, num_envs, **kwargs)


def make_hybrid_vector_env(num_envs: int = 1, **kwargs: Any) -> UnlearningVectorEnv:
    """``vector_entry_point`` of Hybrid-v0."""
    from .hybrid_env import HybridEnv

    return UnlearningVectorEnv(HybridEnv, num_envs, **kwargs)
