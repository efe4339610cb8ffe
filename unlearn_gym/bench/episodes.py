"""The episode runner: one policy's episodes on the env (or N at a time on the batched vector env), each evaluated.

For a (policy, seed, instance): ``policy.reset(seed)``, ``env.reset(seed=s, options={"instance": i})``,
then ``predict`` → ``step`` → ``observe`` until the episode ends; the true (undiscounted,
unnormalised) return is recorded and the unlearned model is evaluated by sampling with one fixed
evaluation seed, the same noise for every model. :func:`~unlearn_gym.bench.runner.run_benchmark`
holds one :class:`EpisodeRunner`, and so does each of its worker processes and Ray actors.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..splits import split_of_seed
from .config import BenchConfig, Unit
from .curve import check_curve_steps
from .record import EpisodeOutcome, add_evaluation, episode_record

__all__ = ["EpisodeRunner"]


class EpisodeRunner:
    """One env and one evaluator: runs one policy's episode on a (seed, instance) and evaluates it,
    or (:meth:`episodes`) up to ``config.num_envs`` episodes of one policy as the runs of one
    batched vector env.

    The runner of :func:`~unlearn_gym.bench.runner.run_benchmark` (and of each of its worker processes and Ray actors).

    Args:
        policies: name → policy (as :func:`~unlearn_gym.bench.runner.run_benchmark` takes them).
        config: the env and evaluation settings.
        record: also keep every step of each episode (:class:`~unlearn_gym.bench.recording.EpisodeSteps`).
    """

    def __init__(self, policies: Mapping[str, Any], config: BenchConfig, *, record: bool = False):
        import gymnasium as gym

        import unlearn_gym  # noqa: F401  (registers the envs)

        from ..metrics.classifier import classifier_dir_for, load_classifier
        from ..models.checkpoint import load_model_config

        self.policies, self.config, self.record = policies, config, record
        self.env = gym.make(config.env_id, **config.env_kwargs)
        self.vec = None
        """The batched vector env of :meth:`episodes` (made at its first call)."""
        batched = gym.spec(config.env_id).vector_entry_point is not None
        per_policy = len(config.seeds) * len(config.instances)
        self.num_envs = min(config.num_envs, per_policy) if batched and not (record or config.robustness) else 1
        """Episodes per batch of :meth:`run_units`: ``config.num_envs`` (at most a policy's episodes), or 1
        where the episodes run one at a time (recording, robustness attacks, an env without a vector
        entry point)."""
        self.base = base = self.env.unwrapped
        self.evaluate: Callable[[], Any] | None = None
        self.classifier = None
        self._retrained_features = None
        """The classifier's features of the retrained model's retain samples (:meth:`set_distance_reference`)."""
        scenario = base.scenario  # SFD-v0 is data-free: no scenario
        self.num_labels = getattr(scenario, "num_labels", None)
        self.contaminated_label = getattr(scenario, "contaminated_label", None)
        self.contaminant_class = getattr(scenario, "contaminant_class", None)
        if config.samples_per_label > 0:
            from ..assets import bundled_model_dir

            self.checkpoint = checkpoint = (
                Path(base.config.checkpoint) if base.config.checkpoint else bundled_model_dir()
            )
            model_config = load_model_config(checkpoint)
            self.classifier = load_classifier(
                classifier_dir_for(checkpoint, model_config, config.classifier), base.device
            )
            scen = model_config["scenario"]
            self.num_labels, self.contaminated_label = scen["num_labels"], scen["contaminated_label"]
            self.contaminant_class = scen["contaminant_class"]
            self._eval_kw = dict(
                num_labels=scen["num_labels"],
                contaminated_label=scen["contaminated_label"],
                contaminant_class=scen["contaminant_class"],
                samples_per_label=config.samples_per_label,
                contaminated_label_samples=config.contaminated_label_samples,
                num_inference_steps=config.ddim_steps,
                seed=config.eval_seed,
                scheduler_config=model_config.get("scheduler"),
                progress=False,
                sampler=base.sampler,  # SFD-v0: its one-step generator
            )
            self.evaluate = self._evaluate
        self.horizon = int(base.config.horizon)
        """T: the env's episode length."""
        self.curve_steps: tuple[int, ...] = ()
        """The steps t < T after which an episode's forget rate is sampled too (``config.curve_steps``)."""
        if config.curve_steps:
            if self.evaluate is None or self.contaminated_label is None or base.forget_class is not None:
                raise ValueError(
                    "curve_steps needs the sample evaluation (samples_per_label > 0) of a contamination "
                    "scenario (the forget rate of the contaminated label); SFD-v0's class erasure has none"
                )
            self.curve_steps = check_curve_steps(config.curve_steps, self.horizon)

    def retrained_dir(self) -> Path | None:
        """The retrained-without-the-forget-set model of ``config.retrained`` (None: no reference)."""
        from ..assets import bundled_model_dir, bundled_retrained_dir

        choice = self.config.retrained
        if choice is None:
            return None
        if choice == "bundled":
            if self._eval_kw["sampler"] is not None or self.base.forget_class is not None:
                return None  # SFD-v0's class erasure: the retrained model is the contamination scenarios'
            checkpoint = self.base.config.checkpoint
            same = checkpoint is None or Path(checkpoint).resolve() == bundled_model_dir().resolve()
            return bundled_retrained_dir() if same and bundled_retrained_dir().is_dir() else None
        if not Path(choice).is_dir():
            raise FileNotFoundError(f"retrained: {choice} is not a model directory (config.json + model.safetensors)")
        return Path(choice)

    def _retain_features(self, ev):
        """The classifier's (n, 128) features of ``ev``'s samples of the retain labels (every label but y_c)."""
        from ..metrics.features import extract_features

        keep = ev.labels.cpu() != self.contaminated_label
        return extract_features(ev.images.cpu()[keep], self.classifier)

    def set_distance_reference(self, ev) -> None:
        """Keep the retrained model's evaluation ``ev`` as the reference of :meth:`distance_to_retrained`."""
        self._retrained_features = self._retain_features(ev)

    def distance_to_retrained(self, ev) -> dict[str, float]:
        """``retain_fid_retrained`` and ``retain_kid_retrained``: FID and KID (mean over 100 subsets) between
        ``ev``'s retain-label samples and the retrained model's (same initial noises), on the classifier's features."""
        from ..metrics.fidelity import fid_from_features, kid_from_features

        ref, mine = self._retrained_features, self._retain_features(ev)
        size = min(100, len(ref), len(mine))
        return {
            "retain_fid_retrained": max(0.0, fid_from_features(ref, mine)),  # no rounding below 0
            "retain_kid_retrained": kid_from_features(ref, mine, subset_size=size, seed=self.config.eval_seed)[0],
        }

    def evaluate_pretrained(self, log: Callable[[str], None] | None = None):
        """The env's pretrained model's evaluation (call it after a reset): when the env samples its
        checkpoint with DDIM, :func:`~unlearn_gym.metrics.reference.evaluate_reference_model`'s (cached
        on disk, sampled once per checkpoint, classifier and settings); else sampled now."""
        if self._eval_kw["sampler"] is not None or self.base.forget_class is not None:
            return self._evaluate()
        return self.evaluate_reference(self.checkpoint, log)

    def evaluate_reference(self, checkpoint: Path, log: Callable[[str], None] | None = None):
        """A reference model directory's evaluation with this bench's settings (DDIM), through
        :func:`~unlearn_gym.metrics.reference.evaluate_reference_model`'s cache."""
        from ..metrics.forget import SampleEvaluation
        from ..metrics.reference import ReferenceEvalSettings, evaluate_reference_model

        kw = self._eval_kw
        settings = ReferenceEvalSettings(
            samples_per_label=kw["samples_per_label"],
            contaminated_label_samples=kw["contaminated_label_samples"],
            ddim_steps=kw["num_inference_steps"],
            seed=kw["seed"],
        )
        ref = evaluate_reference_model(checkpoint, self.config.classifier, settings, device=self.base.device, log=log)
        ev = ref.evaluation
        return SampleEvaluation(ev.figures, *(t.to(self.base.device) for t in (ev.images, ev.labels, ev.predictions)))

    def _evaluate(self, model=None):
        """Evaluate ``model`` (default: the single env's unlearned model) by sampling."""
        from ..metrics.forget import erasure_figures, evaluate_model

        model = self.base.unlearned_model() if model is None else model
        ev = evaluate_model(model, self.classifier, **self._eval_kw)
        forget_class = self.base.forget_class  # SFD-v0: class erasure figures too
        if forget_class is not None:
            ev.figures.update(erasure_figures(ev.figures["per_label"], forget_class))
        return ev

    def curve_forget_rate(self, model=None) -> float:
        """The forget rate of ``model`` (default: the single env's current model) on the forget curve's
        samples: the contaminated label's evaluation samples only (``contaminated_label_samples``, seed
        ``eval_seed``: the same initial noises at every point of every curve)."""
        from ..metrics.forget import evaluate_model

        model = self.base.unlearned_model() if model is None else model
        kw = self._eval_kw | {"only_labels": (self.contaminated_label,)}
        return float(evaluate_model(model, self.classifier, **kw).figures["forget_rate"])

    def warnings(self) -> list[str]:
        """Policies trained on another env or with other settings than this bench's."""
        out, base = [], self.base
        for name, policy in self.policies.items():
            trained_on = getattr(policy, "env_kwargs", None)
            if trained_on is not None:
                differ = {
                    k: (trained_on.get(k), base.config.__dict__.get(k))
                    for k in ("batch_size", "horizon", "lr", "action_mode", "objective", "reward")
                    if k in trained_on and trained_on.get(k) != base.config.__dict__.get(k)
                }
                if differ:
                    out.append(f"{name} was trained with other env settings (trained, benched): {differ}")
            if getattr(policy, "env_id", self.config.env_id) != self.config.env_id:
                out.append(f"{name} was trained on {policy.env_id}, benched on {self.config.env_id}")
            seen = [s for s in self.config.seeds if trained_on is not None and split_of_seed(s) == "train"]
            if seen:
                out.append(
                    f"{name} is benched on train-split seeds ({len(seen)} of {len(self.config.seeds)}), the episodes "
                    "agents train on (an agent trained with seed s began on reset seed s); --split test holds them out"
                )
        return out

    def episode(
        self,
        name: str,
        seed: int,
        instance: int | None,
        *,
        on_step: Callable[[int, dict], None] | None = None,
    ) -> EpisodeOutcome:
        """One episode of policy ``name`` from ``reset(seed, instance)``.

        The policy is reset with the episode's seed first, so an episode depends on nothing that ran
        before. With ``curve_steps``, the forget rate is sampled after each of those steps and at the
        end (the record's ``forget_curve``; ``seconds_curve``, not counted in ``seconds_unlearn``).

        Args:
            on_step: called after every step as ``on_step(t, info)`` (t = 1, 2, …), e.g. a progress bar.

        Returns:
            (record, evaluation or None, :class:`~unlearn_gym.bench.recording.EpisodeSteps` when
            recording, else None). The single env keeps the unlearned weights until its next reset.
        """
        config, env, policy = self.config, self.env, self.policies[name]
        steps = None
        if self.record:
            from .recording import StepRecorder

            steps = StepRecorder(env.action_space.shape)
        if hasattr(policy, "reset"):
            policy.reset(seed)
        t0 = time.perf_counter()
        obs, _ = env.reset(seed=seed, options=None if instance is None else {"instance": instance})
        if steps is not None:
            steps.reset(obs)
        lams, rewards, done, info, episode_start = [], [], False, {}, True
        curve, curve_seconds = [], 0.0
        while not done:
            action, _ = policy.predict(obs, episode_start=np.array([episode_start]), deterministic=config.deterministic)
            next_obs, reward, terminated, truncated, info = env.step(action)
            if steps is not None:
                steps.step(action, next_obs, reward, terminated, truncated, info)
            if hasattr(policy, "observe"):
                policy.observe(obs, action, reward, next_obs, terminated, truncated, info)
            lams.append(float(info["lam"]))
            rewards.append(float(reward))
            obs, done, episode_start = next_obs, terminated or truncated, False
            if not done and len(lams) in self.curve_steps:
                tc = time.perf_counter()
                curve.append([len(lams), self.curve_forget_rate()])
                curve_seconds += time.perf_counter() - tc
            if on_step is not None:
                on_step(len(lams), info)
        t1 = time.perf_counter()
        record = episode_record(name, seed, instance, lams, rewards, info, t1 - t0 - curve_seconds)
        if self.curve_steps:
            curve.append([len(lams), self.curve_forget_rate()])
            record["forget_curve"] = curve
            record["seconds_curve"] = round(curve_seconds + time.perf_counter() - t1, 3)
        ev = None
        if self.evaluate is not None:
            t2 = time.perf_counter()
            ev = self.evaluate()
            add_evaluation(record, ev, round(time.perf_counter() - t2, 3))
        return EpisodeOutcome(record, ev, None if steps is None else steps.finish(seed, instance))

    def episodes(self, units: Sequence[Unit]) -> list[EpisodeOutcome]:
        """The episodes of ``units`` = [(name, seed, instance), ...] (one policy, at most ``num_envs``) as
        the runs of one batched vector env: run i's record and evaluation are :meth:`episode`'s.

        Run i gets its own deep copy of the policy, reset with its seed (a stateful policy keeps one
        state per run), and ``reset(seed=[s_0, ...], options={"instance": [i_0, ...]})`` seeds each
        run as the single env. Every run steps until its episode ends (at the horizon, or earlier
        where it diverges); a run that has ended is stepped on with a zero action until the batch
        is done, its outputs dropped (unused runs of a short batch likewise). The vector env resets
        a run inside the ``step`` that ends its episode (``SAME_STEP`` autoreset), which restores its
        weights: the runner evaluates the run's model (``unlearned_model(i)``) in the vector env's
        :attr:`~unlearn_gym.envs.vector.UnlearningVectorEnv.on_episode_end` call, just before the
        restore, so the evaluation sees the unlearned weights, as the single env's.
        ``seconds_unlearn`` is the batch's time until the run ended (evaluations excluded), shared
        by the runs.

        Returns:
            One (record, evaluation or None, None) per unit, in order (no recording here).
        """
        if not units or len(units) > self.num_envs:
            raise ValueError(f"episodes: expected 1 to {self.num_envs} units, got {len(units)}")
        names = {u[0] for u in units}
        if len(names) != 1:
            raise ValueError(f"episodes: expected the units of one policy, got {sorted(names)}")
        vec = self._vector_env()
        copies = [copy.deepcopy(self.policies[units[0][0]]) for _ in units]
        for policy, (_, seed, _) in zip(copies, units):
            if hasattr(policy, "reset"):
                policy.reset(seed)
        state = _BatchState.start(len(units))

        def evaluate(run: int) -> None:  # called with run's unlearned weights, before they are restored
            if run < state.k and run not in state.evaluations and self.evaluate is not None:
                t = time.perf_counter()
                model = vec.unwrapped.unlearned_model(run)
                if self.curve_steps:
                    state.curve_end[run] = self.curve_forget_rate(model)
                    state.curve_seconds[run] += time.perf_counter() - t
                t_eval = time.perf_counter()
                ev = self._evaluate(model)
                state.evaluations[run] = (ev, round(time.perf_counter() - t_eval, 3))
                state.evaluating += time.perf_counter() - t

        t0 = time.perf_counter()
        obs = self._reset_batch(vec, units)
        vec.unwrapped.on_episode_end = evaluate
        try:
            episode_start = True
            while any(state.active):
                obs = self._step_batch(vec, copies, obs, episode_start, state, evaluate)
                episode_start = False
        finally:
            vec.unwrapped.on_episode_end = None
        out = []
        for i, (name, seed, instance) in enumerate(units):
            seconds = state.ended_at[i] - t0
            record = episode_record(name, seed, instance, state.lams[i], state.rewards[i], state.last_info[i], seconds)
            if self.curve_steps:
                record["forget_curve"] = [*state.curves[i], [len(state.lams[i]), state.curve_end[i]]]
                record["seconds_curve"] = round(state.curve_seconds[i], 3)
            ev = None
            if i in state.evaluations:
                ev, seconds = state.evaluations[i]
                add_evaluation(record, ev, seconds)
            out.append(EpisodeOutcome(record, ev, None))
        return out

    @staticmethod
    def _reset_batch(vec, units: Sequence[Unit]) -> np.ndarray:
        """Reset every run of ``vec`` to its unit's (seed, instance), as :meth:`episode` resets the single
        env; the unused runs of a short batch repeat the last unit. Returns the first observations."""
        pad = [units[-1]] * (vec.num_envs - len(units))  # their outputs are dropped
        seeds = [u[1] for u in (*units, *pad)]
        instances = [u[2] for u in (*units, *pad)]
        options = None if all(i is None for i in instances) else {"instance": instances}  # as :meth:`episode`
        obs, _ = vec.reset(seed=seeds, options=options)
        return obs

    def _step_batch(
        self,
        vec,
        copies: list,
        obs: np.ndarray,
        episode_start: bool,
        state: _BatchState,
        evaluate: Callable[[int], None],
    ) -> np.ndarray:
        """One step of every run of ``vec``: each active run's policy copy acts (``predict``, then
        ``observe`` of the step), the others get a zero action; the λ_t and r_t of each active run go
        into ``state``, and a run whose episode ends there is marked done and evaluated. Returns the next
        observations."""
        from ..envs.sb3 import unbatch_infos

        n, k = vec.num_envs, state.k
        actions = [None] * n
        for i in range(k):
            if state.active[i]:
                actions[i], _ = copies[i].predict(
                    obs[i], episode_start=np.array([episode_start]), deterministic=self.config.deterministic
                )
        template = np.asarray(next(a for a in actions if a is not None))
        batch = np.stack([np.asarray(a) if a is not None else np.zeros_like(template) for a in actions])
        next_obs, reward, terminated, truncated, infos = vec.step(batch)
        run_infos = unbatch_infos(infos, n)
        for i in range(k):
            if not state.active[i]:
                continue
            done = bool(terminated[i] or truncated[i])
            info = run_infos[i]["final_info"] if done else run_infos[i]
            obs_i = infos["final_obs"][i] if done else next_obs[i]
            if hasattr(copies[i], "observe"):
                copies[i].observe(obs[i], actions[i], reward[i], obs_i, bool(terminated[i]), bool(truncated[i]), info)
            state.lams[i].append(float(info["lam"]))
            state.rewards[i].append(float(reward[i]))
            if done:
                state.active[i], state.last_info[i] = False, info
                state.ended_at[i] = time.perf_counter() - state.evaluating
                evaluate(i)  # where the vector env ended the episode without restoring the weights
            elif len(state.lams[i]) in self.curve_steps:  # a point of the forget curve, on run i's current weights
                t = time.perf_counter()
                state.curves[i].append([len(state.lams[i]), self.curve_forget_rate(vec.unwrapped.unlearned_model(i))])
                state.curve_seconds[i] += time.perf_counter() - t
                state.evaluating += time.perf_counter() - t
        return next_obs

    def _vector_env(self):
        """The batched vector env of ``num_envs`` runs (made once)."""
        if self.vec is None:
            import gymnasium as gym

            self.vec = gym.make_vec(
                self.config.env_id,
                num_envs=self.num_envs,
                vectorization_mode="vector_entry_point",
                executor=self.config.executor,
                **self.config.env_kwargs,
            )
        return self.vec

    def run_units(self, units: Sequence[Unit]) -> list[EpisodeOutcome]:
        """The outcomes of ``units`` (one policy, at most ``num_envs``): :meth:`episodes` where the
        runner batches, else :meth:`episode` of each."""
        if self.num_envs > 1:
            return self.episodes(units)
        return [self.episode(*unit) for unit in units]

    def remote_units(self, units: Sequence[Unit]) -> list[EpisodeOutcome]:
        """:meth:`run_units` with only what the parent draws and pools of each evaluation (its images
        and labels, on the CPU): what a worker process or Ray actor sends back."""
        out = []
        for record, ev, steps in self.run_units(units):
            if ev is not None:
                ev = SimpleNamespace(images=ev.images.cpu(), labels=ev.labels.cpu())
            out.append(EpisodeOutcome(record, ev, steps))
        return out

    def close(self) -> None:
        """Close the env (and the vector env, where one was made)."""
        self.env.close()
        if self.vec is not None:
            self.vec.close()


@dataclass
class _BatchState:
    """The per-run bookkeeping of :meth:`EpisodeRunner.episodes` over its k units."""

    k: int
    """The batch's units (the vector env's runs 0..k−1; the others are padding)."""
    lams: list[list[float]]
    """Each run's λ_t so far."""
    rewards: list[list[float]]
    """Each run's r_t so far."""
    last_info: list[dict]
    """Each run's last step's ``info`` (its ``final_info``), once it ended."""
    active: list[bool]
    """Whether each run's episode is still going."""
    ended_at: dict[int, float] = field(default_factory=dict)
    """run → ``time.perf_counter()`` when it ended, less the evaluations' time until then."""
    evaluations: dict[int, tuple[Any, float]] = field(default_factory=dict)
    """run → (its evaluation, seconds it took)."""
    evaluating: float = 0.0
    """Seconds spent evaluating so far (not unlearning time)."""
    curves: list[list[list[float]]] = field(default_factory=list)
    """Each run's forget-curve points [t, F(t)] before its end (with ``curve_steps``)."""
    curve_end: dict[int, float] = field(default_factory=dict)
    """run → the forget rate on the curve's samples of the model it ended with."""
    curve_seconds: list[float] = field(default_factory=list)
    """Each run's seconds of curve sampling."""

    @classmethod
    def start(cls, k: int) -> _BatchState:
        empty = lambda: [[] for _ in range(k)]  # noqa: E731
        return cls(k, empty(), empty(), [{} for _ in range(k)], [True] * k, curves=empty(), curve_seconds=[0.0] * k)
