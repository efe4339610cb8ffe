"""The benchmark runner: λ-policies and agents × seeds × instances on one env, on equal terms.

For every policy, seed s and instance i, one episode: ``policy.reset(s)``, ``env.reset(seed=s,
options={"instance": i})``, then ``predict`` → ``step`` → ``observe`` until the episode ends. Every
policy sees the same seeds, so the same batches, probes and initial model. The true (undiscounted,
unnormalised) episode return is recorded, and the unlearned model is evaluated by sampling (forget
rate, retain accuracy; the Table-1 metrics on request) with one fixed evaluation seed, the same
noise for every model. Summaries are the mean and the 95% confidence half-width of Student's t
over the episodes of each policy, paired verdicts against a reference policy, and rliable's
aggregates (:mod:`unlearn_gym.bench.stats`): IQM and mean with stratified-bootstrap intervals
(strata: the instances) and the probability of improvement over the reference.

With ``log_path``, every finished episode is appended to a JSON-lines log (``episodes.jsonl``:
a header line with the settings, then one record per episode, each flushed and fsync'ed), and
``resume=True`` skips the episodes already logged. That is sound because an episode depends only on
(policy, seed, instance): the env is reset with the seed, and a policy carries no state from one
episode into the next beyond what ``reset(seed)`` sets (true of every bundled policy; agents'
``predict`` is stateless when deterministic).

The episodes run in this process, in ``workers`` spawned processes, or on Ray actors
(``backend="ray"``, :mod:`unlearn_gym.bench.ray_backend`); each way yields (index, outcome) to the same
bookkeeping, so the log, a resume and the report do not depend on it. With ``num_envs`` N > 1 each
of them runs a policy's episodes N at a time as the runs of one batched vector env
(:meth:`EpisodeRunner.episodes`), with the same records. With ``record``, every
episode's steps also become Minari datasets (:mod:`unlearn_gym.bench.recording`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from ..metrics.robustness import RobustnessConfig

__all__ = [
    "BENCH_ENV_KWARGS",
    "BENCH_SEEDS",
    "DEFAULT_POLICIES",
    "BenchConfig",
    "EPISODE_LOG",
    "confidence_interval",
    "aggregate_statistics",
    "read_episode_log",
    "add_outcome_scores",
    "return_agreement",
    "sample_intervals",
    "spread_vs_reference",
    "run_benchmark",
    "write_report",
    "SUMMARY_METRICS",
]

EPISODE_LOG = "episodes.jsonl"
"""The episode log's file name in a bench output folder (``unlearn-gym bench --resume DIR`` reads it)."""

_LOG_KIND = "unlearn-gym bench episodes"
_REPORT_ONLY_SETTINGS = (
    "reference",
    "bootstrap_reps",
    "bootstrap_seed",
    "workers",
    "backend",
    "ray_address",
    "cpus_per_trial",
    "gpus_per_trial",
    "num_envs",
    "executor",
)
"""BenchConfig fields that shape only the report or how the episodes are run, not an episode: they
may change on resume."""

BENCH_ENV_KWARGS = {"batch_size": 16, "horizon": 100, "lr": 1.5e-4}
"""The main job's SISS-v0 settings: episodes of T = 100 SISS updates at batch 16 and AdamW lr 1.5e-4
(λ = 0.5, S = 5), which take the bundled model's label-1 trouser rate from ~0.37 to ~0 with retain
accuracy unchanged (the measured curve: ``docs/results.md`` §2), and fit 4 policies × 10 seeds into
10 minutes on a 2-core CPU with 2 workers. The bundled PPO agent was trained at these settings."""

BENCH_SEEDS = 8
"""The main job's seeds, 0..7: the fewest at which every policy whose spread over the seeds is not
its own (static λ = 0.5, VI-adaptive, the bundled PPO agent) has a 95% forget-rate half-width of at
most 0.05 (their standard deviations over 10 seeds: 0.039, 0.046, 0.055; ``docs/results.md`` §14).
Random λ's spread is its own (its half-width is 0.13 at 8 seeds and would need about 40)."""

DEFAULT_POLICIES = ("static:0.5", "vi-adaptive", "random", "ppo")
"""The main job's policies: SISS's fixed λ, Algorithm 2, uniform random λ, the bundled PPO agent."""

SUMMARY_METRICS = (
    "return",
    "forget_rate",
    "retain_accuracy",
    "contaminated_label_accuracy",
    "damage",
    "adjusted_forget_rate",
    "unlearning_accuracy",
    "remaining_accuracy",
    "retain_fid_retrained",
    "retain_kid_retrained",
    "efficacy",
    "degradation",
)


def confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student-t confidence interval of the mean.

    half-width = t_{(1+confidence)/2, n−1} · s/√n with s the sample standard deviation (ddof 1);
    NaN for n < 2. Non-finite values are dropped first.
    """
    from scipy.stats import t as student_t

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    q = float(student_t.ppf((1.0 + confidence) / 2.0, len(x) - 1))
    return float(x.mean()), q * float(x.std(ddof=1)) / math.sqrt(len(x))


@dataclass(frozen=True)
class BenchConfig:
    """What the runner does; every policy gets exactly the same."""

    env_id: str = "unlearn_gym/SISS-v0"
    env_kwargs: dict = field(default_factory=lambda: dict(BENCH_ENV_KWARGS))
    """Keywords of ``gymnasium.make`` (checkpoint, device, batch_size, horizon, ...)."""
    seeds: tuple[int, ...] = tuple(range(BENCH_SEEDS))
    instances: tuple[int | None, ...] = (None,)
    """``reset(options={"instance": i})`` values (None: the whole forget set)."""
    samples_per_label: int = 20
    """Evaluation samples per retain label (retain accuracy, per class), 0 = no sample evaluation."""
    contaminated_label_samples: int | None = 100
    """Evaluation samples of the contaminated label (the forget rate resolves to 1/this per
    episode); None = ``samples_per_label``."""
    ddim_steps: int = 10
    eval_seed: int = 0
    """Seed of the evaluation's initial noise: the same for every model, before and after."""
    metrics: str = "basic"
    """"basic": forget rate and retain accuracy; "full": also Table 1 (FID/KID/IS/SSIM) per policy."""
    deterministic: bool = True
    """Passed to every ``predict`` (SB3's ``evaluate_policy`` default)."""
    classifier: str | None = None
    """The evaluation classifier's directory (default: the checkpoint's, or the bundled one)."""
    retrained: str | None = "bundled"
    """The model retrained without the forget set (the exact-unlearning reference): a model
    directory, or "bundled" (the bundled one, where the env runs the bundled default model; no
    reference otherwise); None: none. It is evaluated like every unlearned model (a reference row),
    and each unlearned model's retain samples are compared with its samples of the same initial
    noise (``retain_fid_retrained``, ``retain_kid_retrained``: FID and KID on the classifier's features)."""
    grid_columns: int = 8
    """Samples per label in the before/after grids."""
    workers: int = 1
    """Processes that run the episodes side by side (each with its own env and one torch thread);
    1 = every episode in this process. An episode depends only on its (seed, instance), so the
    records are the same for any number of workers, up to the floating-point summation order of
    a different torch thread count. With ``robustness`` the episodes run in this process."""
    reference: str | None = "static:0.5"
    """The policy every other is compared with (paired over equal seeds and instances); None or a
    name not benchmarked: no verdicts."""
    robustness: bool = False
    """Also attack every unlearned model (membership inference, relearning; slow: off by default)."""
    robustness_config: RobustnessConfig | None = None
    """Settings of those attacks (None: :class:`~unlearn_gym.metrics.robustness.RobustnessConfig` defaults)."""
    bootstrap_reps: int = 2000
    """Resamples of the stratified bootstraps (IQM, mean and probability-of-improvement intervals,
    performance-profile bands)."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap's generator (each statistic starts from it afresh)."""
    backend: Literal["local", "ray"] = "local"
    """Where the episodes run: "local" (this process, or ``workers`` spawned processes) or "ray"
    (Ray actors, each an episode runner with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs,
    as many as the cluster fits; needs the ``ray`` extra). The records are the same either way."""
    ray_address: str | None = None
    """The Ray cluster to join (``ray.init(address=...)``: "HOST:PORT", "ray://HOST:PORT" or "auto");
    None: the Ray session this process already has, else a new local cluster on this machine."""
    cpus_per_trial: float = 1.0
    """CPUs each Ray actor declares (and its torch threads, at least 1)."""
    gpus_per_trial: float = 0.0
    """GPUs each Ray actor declares (fractions share a GPU); the env's ``device`` keyword says where
    the model runs (``"cuda"`` inside an actor is the GPU Ray assigned to it)."""
    num_envs: int = 1
    """N: the episodes (seeds × instances) of one policy run N at a time as the runs of one batched
    vector env (``gymnasium.make_vec(env_id, num_envs=N, vectorization_mode="vector_entry_point")``),
    each run with its own copy of the policy; every worker process or Ray actor runs such batches.
    Run i's episode is the single env's episode of the same (policy, seed, instance), so the records
    do not depend on N (up to the floating-point order of a different ``executor``). 1 = one episode
    at a time on the single env. With ``robustness`` or a ``record`` folder, or an env without a
    vector entry point, the episodes run one at a time on the single env whatever N is."""
    executor: Literal["auto", "vmap", "loop", "graph"] = "auto"
    """How the batched engine maps its update over the N runs: "loop", "vmap", "graph" (the vmapped
    update captured as one CUDA graph; CUDA only, SISS and hybrid envs) or "auto" (vmap on CUDA, loop
    on the CPU)."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not self.instances:
            raise ValueError("instances must not be empty (use (None,) for the whole forget set)")
        if self.samples_per_label < 0 or self.ddim_steps < 1:
            raise ValueError(
                f"samples_per_label must be >= 0 and ddim_steps >= 1, got {self.samples_per_label} and {self.ddim_steps}"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if isinstance(self.num_envs, bool) or not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {self.num_envs!r}")
        if self.executor not in ("auto", "vmap", "loop", "graph"):
            raise ValueError(f"executor must be 'auto', 'vmap', 'loop' or 'graph', got {self.executor!r}")
        if self.contaminated_label_samples is not None and self.contaminated_label_samples < 1:
            raise ValueError(f"contaminated_label_samples must be None or >= 1, got {self.contaminated_label_samples}")
        if self.metrics not in ("basic", "full"):
            raise ValueError(f"metrics must be 'basic' or 'full', got {self.metrics!r}")
        if self.bootstrap_reps < 1:
            raise ValueError(f"bootstrap_reps must be >= 1, got {self.bootstrap_reps}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}")
        if not self.cpus_per_trial > 0 or not self.gpus_per_trial >= 0:
            raise ValueError(
                f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {self.cpus_per_trial} and {self.gpus_per_trial}"
            )
        if self.backend == "ray" and self.robustness:
            raise ValueError("backend 'ray' does not run the robustness attacks; use backend 'local' with robustness")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmark(
    policies: Mapping[str, Any],
    config: BenchConfig = BenchConfig(),
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = _log,
    log_path: str | Path | None = None,
    resume: bool = False,
    record: str | Path | None = None,
) -> dict:
    """Run every policy on every (seed, instance) and evaluate each unlearned model.

    Args:
        policies: name → policy with ``predict(obs, state, episode_start, deterministic)``; the
            runner also calls ``reset(seed)`` and ``observe(...)`` where a policy has them.
        config: env, seeds, instances and evaluation settings.
        log_path: the episode log (:data:`EPISODE_LOG` in the output folder): a header line with
            the settings, then each finished episode as one JSON line, flushed and fsync'ed. The
            sample grids (and, with ``metrics="full"``, the evaluation samples) an episode
            contributes go to ``episode_samples/`` beside it. None: no log.
        resume: continue the log at ``log_path``: its episodes are taken as they are and only the
            missing ones run, so the result equals an uninterrupted run's. A half-written last line
            is dropped; the log must have been written with the same settings and policies
            (``reference``, the bootstrap settings and how the episodes run may differ).
        record: a folder for Minari datasets: every episode's steps (observations, actions,
            rewards, terminations, truncations, the step statistics of ``info``), one dataset per
            policy, id :func:`~unlearn_gym.bench.recording.dataset_id` (load them with
            ``MINARI_DATASETS_PATH`` = this folder). With ``resume``, the logged episodes' steps
            come from ``episode_samples/``: the interrupted run must have recorded too.

    Returns:
        JSON-able dict: ``settings``, ``pretrained`` (evaluation of the model at reset),
        ``episodes`` (one record per run), ``summary`` (policy → metric → mean, ci95, n; with
        ``vs_reference``, ``worst_class`` and :func:`aggregate_statistics`' ``iqm``,
        ``mean_bootstrap`` and ``prob_improvement``), ``warnings``, with ``log_path``
        ``episode_log`` ({path, resumed_episodes}), with ``record`` ``datasets`` ({path, ids:
        policy → Minari dataset id}); plus the non-JSON ``_grids`` (before/after
        sample tensors) that :func:`write_report` draws and drops.
    """
    from tqdm.auto import tqdm

    log = log or (lambda _msg: None)
    runs = [(n, s, i) for n in policies for s in config.seeds for i in config.instances]
    recorded: dict[int, Any] = {}
    if config.backend == "ray":  # first: fail before any work without Ray or its cluster
        from .ray_backend import check_address, require_ray

        require_ray()
        if config.ray_address is not None:
            check_address(config.ray_address)
    if record is not None:  # first: fail before any work where the datasets cannot be written
        from .recording import check_new_datasets, require_minari

        require_minari()
        check_new_datasets(record, config.env_id, list(policies))
    episode_log = None
    if log_path is not None:  # first: a resume with other settings fails before any work
        episode_log = _EpisodeLog(Path(log_path), _log_settings(config, list(policies)), runs, resume, log)
    runner = EpisodeRunner(policies, config, record=record is not None)
    base, evaluate = runner.base, runner.evaluate
    warnings = runner.warnings()
    for w in warnings:
        log(f"warning: {w}")

    # the pretrained model, once: every reset restores exactly these weights
    first = config.instances[0]
    runner.env.reset(seed=config.seeds[0], options=None if first is None else {"instance": first})
    pretrained, grids, samples = None, {}, {}
    if evaluate is not None:
        t0 = time.perf_counter()
        ev = runner.evaluate_pretrained(log)
        pretrained = dict(ev.figures)
        grids["pretrained"] = _grid_images(ev, runner.num_labels, config)
        samples["pretrained"] = (ev.images, ev.labels)
        pretrained["intervals"] = sample_intervals(ev, runner.contaminated_label, runner.contaminant_class)
        log(
            f"pretrained: forget_rate {ev.figures['forget_rate']:.3f}, retain_accuracy "
            f"{ev.figures['retain_accuracy']:.3f} ({time.perf_counter() - t0:.1f} s)"
        )

    retrained = None
    if evaluate is not None and (retrained_dir := runner.retrained_dir()) is not None:
        t0 = time.perf_counter()
        ev = runner.evaluate_reference(retrained_dir, log)
        retrained = {**ev.figures, "checkpoint": str(retrained_dir)}
        retrained["intervals"] = sample_intervals(ev, runner.contaminated_label, runner.contaminant_class)
        runner.set_distance_reference(ev)
        retrained |= runner.distance_to_retrained(ev)
        pretrained |= runner.distance_to_retrained(
            SimpleNamespace(images=samples["pretrained"][0], labels=samples["pretrained"][1])
        )
        samples["retrained (no forget set)"] = (ev.images, ev.labels)
        log(
            f"retrained without the forget set: forget_rate {ev.figures['forget_rate']:.3f}, retain_accuracy "
            f"{ev.figures['retain_accuracy']:.3f} ({time.perf_counter() - t0:.1f} s)"
        )

    robust, pretrained_robustness = None, None
    if config.robustness:
        robust, pretrained_robustness = _robustness_runner(base, config, log)

    # each policy's grid comes from its first run, and the Table-1 pools are concatenated in the
    # order of the runs: the same report for any number of workers and after a resume
    first_run = {name: runs.index(next(r for r in runs if r[0] == name)) for name in policies}
    records: list[dict | None] = [None] * len(runs)
    pooled: dict[int, tuple] = {}
    bar = tqdm(total=len(runs), desc="bench", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    pending = []
    for index, run in enumerate(runs):
        done = episode_log.done.get(run) if episode_log is not None else None
        if done is None:
            pending.append(index)
            continue
        if record is not None:
            recorded[index] = episode_log.load_steps(index, run)
        if evaluate is not None and (index == first_run[run[0]] or config.metrics == "full"):
            arrays = episode_log.load_arrays(index)  # what the interrupted run's episode contributed
            if index == first_run[run[0]]:
                grids[run[0]] = arrays["grid"]
            if config.metrics == "full":
                pooled[index] = (arrays["images"].to(base.device), arrays["labels"].to(base.device))
        records[index] = done
        bar.update(1)

    def finish(index: int, outcome: tuple) -> None:
        """Keep one episode's outcome (record, evaluation, steps; in this process, as it arrives) and log it."""
        episode, ev, steps = outcome
        name, arrays = episode["policy"], {}
        if ev is not None and retrained is not None:
            episode |= runner.distance_to_retrained(ev)
        if ev is not None:
            if index == first_run[name]:
                grids[name] = arrays["grid"] = _grid_images(ev, runner.num_labels, config)
            if config.metrics == "full":
                pooled[index] = (ev.images.to(base.device), ev.labels.to(base.device))
                arrays |= {"images": ev.images, "labels": ev.labels}
        if steps is not None:
            recorded[index] = steps
            arrays |= _tensors(steps.to_arrays())
        if episode_log is not None:
            if arrays:
                episode_log.save_arrays(index, arrays)
            episode_log.append(episode)
        records[index] = episode
        bar.set_postfix_str(f"{name} seed {episode['seed']}")
        bar.update(1)

    batches = _batches(runs, pending, runner.num_envs)
    if batches and config.backend == "ray":
        from .ray_backend import run_on_ray

        for index, outcome in run_on_ray(policies, config, runs, batches, record=record is not None):
            finish(index, outcome)
    elif config.workers > 1 and robust is None and len(batches) > 1:
        with closing(_run_in_workers(policies, config, runs, batches, record=record is not None)) as outcomes:
            for index, outcome in outcomes:  # closing: an exception here ends the workers at once
                finish(index, outcome)
    else:
        for batch in batches:
            name, seed, _ = runs[batch[0]]
            bar.set_postfix_str(f"{name} seed {seed}" + (f" (+{len(batch) - 1})" if len(batch) > 1 else ""))
            for index, (episode, ev, steps) in zip(batch, runner.run_units([runs[k] for k in batch])):
                if robust is not None:  # one episode per batch: the env's model is this episode's
                    t2 = time.perf_counter()
                    figures = robust()
                    episode |= figures["summary"]
                    episode["robustness"] = figures
                    episode["seconds_robustness"] = round(time.perf_counter() - t2, 3)
                finish(index, (episode, ev, steps))
    bar.close()
    episodes: list[dict] = records  # type: ignore[assignment]  (every run is filled in)
    for index in sorted(pooled):
        _pool_samples(samples, runs[index][0], *pooled[index])
    scen = {"contaminated_label": runner.contaminated_label}
    erases_a_class = getattr(base, "forget_class", None) is not None  # SFD-v0: no contaminant to score
    if pretrained is not None and runner.contaminated_label is not None and not erases_a_class:
        add_outcome_scores(episodes, pretrained, runner.contaminated_label, base.config.beta)
        for row in (pretrained, retrained):  # the reference rows, scored alike (the pretrained: D⁺ = 0)
            if row is not None:
                scored = {"forget_rate": row["forget_rate"]}
                scored["per_label_accuracy"] = {y: r["accuracy"] for y, r in row["per_label"].items()}
                add_outcome_scores([scored], pretrained, runner.contaminated_label, base.config.beta)
                row |= {k: scored[k] for k in ("damage", "adjusted_forget_rate") if k in scored}

    summary = {}
    for name in policies:
        rows = [e for e in episodes if e["policy"] == name]
        summary[name] = {}
        for metric in SUMMARY_METRICS:
            if metric in rows[0]:
                mean, half = confidence_interval([r[metric] for r in rows])
                summary[name][metric] = {"mean": mean, "ci95": half, "n": len(rows)}
        summary[name]["diverged"] = sum(r["diverged"] for r in rows)
        if pretrained is not None and "per_label_accuracy" in rows[0]:
            summary[name]["worst_class"] = worst_class_drop(pretrained, rows, scen["contaminated_label"])
        if robust is not None:  # n: the episodes with a finite figure (steps to half: those that regained)
            summary[name]["robustness"] = {}
            for metric in rows[0]["robustness"]["summary"]:
                values = [r[metric] for r in rows]
                mean, half = confidence_interval(values)
                n = sum(v is not None and bool(np.isfinite(v)) for v in values)
                summary[name]["robustness"][metric] = {"mean": mean, "ci95": half, "n": n}
    verdicts = compare_with_reference(episodes, list(policies), config.reference)
    for name, verdict in verdicts.items():
        summary[name]["vs_reference"] = verdict
    for name, spread in spread_vs_reference(episodes, list(policies), config.reference).items():
        summary[name]["spread_vs_reference"] = spread
    agreement = return_agreement(episodes, list(policies)) if evaluate is not None else []
    for name, stats in aggregate_statistics(episodes, list(policies), config).items():
        summary[name] |= stats

    result = {
        "settings": {
            **asdict(config),
            "policies": list(policies),
            "device": str(base.device),
            "beta": float(base.config.beta),
            "sampler": getattr(base, "sampler", None) or {"kind": "ddim"},
        },
        "pretrained": pretrained,
        "retrained": retrained,
        "summary": summary,
        "return_agreement": agreement,
        "episodes": episodes,
        "warnings": warnings,
        "_grids": grids,
    }
    if pretrained_robustness is not None:
        result["pretrained_robustness"] = pretrained_robustness
    if episode_log is not None:
        result["episode_log"] = {"path": str(episode_log.path), "resumed_episodes": len(episode_log.done)}
    if record is not None:
        from .recording import write_datasets

        by_policy = {name: [recorded[k] for k, run in enumerate(runs) if run[0] == name] for name in policies}
        ids = write_datasets(record, runner.env, by_policy)
        result["datasets"] = {"path": str(record), "ids": ids}
        log(f"Minari datasets in {record}: {', '.join(ids.values())}")
    if config.metrics == "full" and evaluate is not None:
        from ..metrics.table import SampleSet, fidelity_table

        log("Table 1 metrics (FID/KID/IS/SSIM with the classifier's features) ...")
        sets = {n: SampleSet(x, y) for n, (x, y) in samples.items()}
        result["fidelity"] = fidelity_table(sets, base.scenario, runner.classifier, seed=config.eval_seed)
        rows = fidelity_by_episode(pooled, runs, base.scenario, runner.classifier, seed=config.eval_seed)
        result["fidelity_episodes"] = rows
        verdicts = compare_with_reference(rows, list(policies), config.reference, FIDELITY_METRICS)
        for name in policies:
            mine = [r for r in rows if r["policy"] == name]
            cells = {
                m: dict(zip(("mean", "ci95"), confidence_interval([r[m] for r in mine]))) for m in FIDELITY_METRICS
            }
            summary[name]["fidelity"] = {m: c | {"n": len(mine)} for m, c in cells.items()}
            if name in verdicts:
                summary[name]["fidelity_vs_reference"] = verdicts[name]
    runner.close()
    return result


def fidelity_by_episode(
    pooled: Mapping[int, tuple], runs: Sequence[tuple], scenario, classifier, *, seed: int = 0
) -> list[dict]:
    """Table 1 of every episode's own evaluation samples, for intervals over the seeds.

    Each episode's samples (``pooled``: run index → (images, labels)) are one model of
    :func:`~unlearn_gym.metrics.table.fidelity_table` (real features computed once); the row holds
    the episode's (policy, seed, instance) and its :data:`FIDELITY_METRICS`: forget-set FID, KID
    (mean over subsets), IS and SSIM of the contaminated label's samples, and the same of the retain
    labels'. With a few hundred samples per episode, FID and KID are biased upward (FID's covariance
    is singular below 128 samples): compare episodes at equal sample counts, as the bench does.
    """
    from ..metrics.table import SampleSet, fidelity_table

    order = sorted(pooled)
    table = fidelity_table(
        {str(i): SampleSet(*pooled[i]) for i in order}, scenario, classifier, per_class=False, seed=seed
    )
    keys = {"fid": "fid", "kid": "kid_mean", "is": "is_mean", "ssim": "ssim"}
    rows = []
    for i in order:
        name, run_seed, instance = runs[i]
        parts = table["models"][str(i)]
        row = {"policy": name, "seed": run_seed, "instance": instance}
        for metric in FIDELITY_METRICS:
            part, figure = metric.split("_")
            row[metric] = parts[part][keys[figure]]
        rows.append(row)
    return rows


class EpisodeRunner:
    """One env and one evaluator: runs one policy's episode on a (seed, instance) and evaluates it,
    or (:meth:`episodes`) up to ``config.num_envs`` episodes of one policy as the runs of one
    batched vector env.

    The runner of :func:`run_benchmark` (and of each of its worker processes and Ray actors).

    Args:
        policies: name → policy (as :func:`run_benchmark` takes them).
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
        scenario = getattr(base, "scenario", None)  # SFD-v0 is data-free: no scenario
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
                sampler=getattr(base, "sampler", None),  # SFD-v0: its one-step generator
            )
            self.evaluate = self._evaluate

    def retrained_dir(self) -> Path | None:
        """The retrained-without-the-forget-set model of ``config.retrained`` (None: no reference)."""
        from ..assets import bundled_model_dir, bundled_retrained_dir

        choice = self.config.retrained
        if choice is None:
            return None
        if choice == "bundled":
            if self._eval_kw["sampler"] is not None or getattr(self.base, "forget_class", None) is not None:
                return None  # SFD-v0's class erasure: the retrained model is the contamination scenarios'
            checkpoint = self.base.config.checkpoint
            same = checkpoint is None or Path(checkpoint).resolve() == bundled_model_dir().resolve()
            return bundled_retrained_dir() if same and bundled_retrained_dir().is_dir() else None
        if not Path(choice).is_dir():
            raise FileNotFoundError(f"retrained: {choice} is not a model directory (config.json + model.safetensors)")
        return Path(choice)

    def _retain_features(self, ev):
        """The classifier's (n, 128) features of ``ev``'s samples of the retain labels (every label but y_c)."""
        from ..metrics.fidelity import extract_features

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
        if self._eval_kw["sampler"] is not None or getattr(self.base, "forget_class", None) is not None:
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

        model = self.base.engine.model() if model is None else model
        ev = evaluate_model(model, self.classifier, **self._eval_kw)
        forget_class = getattr(self.base, "forget_class", None)  # SFD-v0: class erasure figures too
        if forget_class is not None:
            ev.figures.update(erasure_figures(ev.figures["per_label"], forget_class))
        return ev

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
        return out

    def episode(self, name: str, seed: int, instance: int | None) -> tuple[dict, Any, Any]:
        """One episode of policy ``name`` from ``reset(seed, instance)``.

        The policy is reset with the episode's seed first, so an episode depends on nothing that ran before.

        Returns:
            (record, evaluation or None, :class:`~unlearn_gym.bench.recording.EpisodeSteps` when
            recording, else None).
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
        t1 = time.perf_counter()
        record = _episode_record(name, seed, instance, lams, rewards, info, t1 - t0)
        ev = None
        if self.evaluate is not None:
            ev = self.evaluate()
            _add_evaluation(record, ev, round(time.perf_counter() - t1, 3))
        return record, ev, None if steps is None else steps.finish(seed, instance)

    def episodes(self, units: Sequence[tuple[str, int, int | None]]) -> list[tuple[dict, Any, None]]:
        """The episodes of ``units`` = [(name, seed, instance), ...] (one policy, at most ``num_envs``) as
        the runs of one batched vector env: run i's record and evaluation are :meth:`episode`'s.

        Run i gets its own deep copy of the policy, reset with its seed (a stateful policy keeps one
        state per run), and ``reset(seed=[s_0, ...], options={"instance": [i_0, ...]})`` seeds each
        run as the single env. Every run steps until its episode ends (at the horizon, or earlier
        where it diverges); a run that has ended is stepped on with a zero action until the batch
        is done, its outputs dropped (unused runs of a short batch likewise). The vector env resets
        a run inside the ``step`` that ends its episode (``SAME_STEP`` autoreset), which restores its
        weights: the runner evaluates the run's model (``engine.model(i)``) just before the engine
        restores it (:func:`_evaluate_before_restore`), so the evaluation sees the unlearned
        weights, as the single env's. ``seconds_unlearn`` is the batch's time until the run ended
        (evaluations excluded), shared by the runs.

        Returns:
            One (record, evaluation or None, None) per unit, in order (no recording here).
        """
        import copy

        from ..envs.sb3 import unbatch_infos

        if not units or len(units) > self.num_envs:
            raise ValueError(f"episodes: expected 1 to {self.num_envs} units, got {len(units)}")
        names = {u[0] for u in units}
        if len(names) != 1:
            raise ValueError(f"episodes: expected the units of one policy, got {sorted(names)}")
        vec = self._vector_env()
        n, k = vec.num_envs, len(units)
        name = units[0][0]
        copies = [copy.deepcopy(self.policies[name]) for _ in units]
        for policy, (_, seed, _) in zip(copies, units):
            if hasattr(policy, "reset"):
                policy.reset(seed)
        pad = [units[-1]] * (n - k)  # unused runs repeat the last unit; their outputs are dropped
        seeds = [u[1] for u in (*units, *pad)]
        instances = [u[2] for u in (*units, *pad)]
        evaluations: dict[int, tuple[Any, float]] = {}
        ended_at: dict[int, float] = {}
        evaluating = [0.0]  # seconds spent evaluating so far (not unlearning time)

        def evaluate(run: int) -> None:  # called with run's unlearned weights, before they are restored
            if run < k and run not in evaluations and self.evaluate is not None:
                t = time.perf_counter()
                evaluations[run] = (self._evaluate(vec.unwrapped.engine.model(run)), round(time.perf_counter() - t, 3))
                evaluating[0] += time.perf_counter() - t

        t0 = time.perf_counter()
        options = None if all(i is None for i in instances) else {"instance": instances}  # as :meth:`episode`
        obs, _ = vec.reset(seed=seeds, options=options)
        lams: list[list[float]] = [[] for _ in units]
        rewards: list[list[float]] = [[] for _ in units]
        last_info: list[dict] = [{} for _ in units]
        active = [True] * k
        episode_start = True
        while any(active):
            actions = [None] * n
            for i in range(k):
                if active[i]:
                    actions[i], _ = copies[i].predict(
                        obs[i], episode_start=np.array([episode_start]), deterministic=self.config.deterministic
                    )
            template = np.asarray(next(a for a in actions if a is not None))
            batch = np.stack([np.asarray(a) if a is not None else np.zeros_like(template) for a in actions])
            with _evaluate_before_restore(vec.unwrapped.engine, evaluate):
                next_obs, reward, terminated, truncated, infos = vec.step(batch)
            run_infos = unbatch_infos(infos, n)
            for i in range(k):
                if not active[i]:
                    continue
                done = bool(terminated[i] or truncated[i])
                info = run_infos[i]["final_info"] if done else run_infos[i]
                obs_i = infos["final_obs"][i] if done else next_obs[i]
                if hasattr(copies[i], "observe"):
                    copies[i].observe(
                        obs[i], actions[i], reward[i], obs_i, bool(terminated[i]), bool(truncated[i]), info
                    )
                lams[i].append(float(info["lam"]))
                rewards[i].append(float(reward[i]))
                if done:
                    active[i], last_info[i] = False, info
                    ended_at[i] = time.perf_counter() - evaluating[0]
                    evaluate(i)  # where the vector env ended the episode without restoring the weights
            obs, episode_start = next_obs, False
        out = []
        for i, (_, seed, instance) in enumerate(units):
            record = _episode_record(name, seed, instance, lams[i], rewards[i], last_info[i], ended_at[i] - t0)
            ev = None
            if i in evaluations:
                ev, seconds = evaluations[i]
                _add_evaluation(record, ev, seconds)
            out.append((record, ev, None))
        return out

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

    def run_units(self, units: Sequence[tuple[str, int, int | None]]) -> list[tuple[dict, Any, Any]]:
        """The outcomes of ``units`` (one policy, at most ``num_envs``): :meth:`episodes` where the
        runner batches, else :meth:`episode` of each."""
        if self.num_envs > 1:
            return self.episodes(units)
        return [self.episode(*unit) for unit in units]

    def remote_units(self, units: Sequence[tuple[str, int, int | None]]) -> list[tuple[dict, Any, Any]]:
        """:meth:`run_units` with only what the parent draws and pools of each evaluation (its images
        and labels, on the CPU): what a worker process or Ray actor sends back."""
        out = []
        for record, ev, steps in self.run_units(units):
            if ev is not None:
                ev = SimpleNamespace(images=ev.images.cpu(), labels=ev.labels.cpu())
            out.append((record, ev, steps))
        return out

    def close(self) -> None:
        """Close the env (and the vector env, where one was made)."""
        self.env.close()
        if self.vec is not None:
            self.vec.close()


def _episode_record(
    name: str, seed: int, instance: int | None, lams: list[float], rewards: list[float], info: dict, seconds: float
) -> dict:
    """One episode's record from its λs, rewards and last step's ``info``."""
    return {
        "policy": name,
        "seed": seed,
        "instance": instance,
        "return": float(np.sum(rewards)),
        "length": len(rewards),
        "diverged": bool(info.get("diverged", False)),
        "efficacy": float(info.get("efficacy", float("nan"))),
        "degradation": float(info.get("degradation", float("nan"))),
        "mean_lambda": float(np.mean(lams)),
        "lambdas": lams,
        "rewards": rewards,
        "seconds_unlearn": round(seconds, 3),
    }


def _add_evaluation(record: dict, ev, seconds: float) -> None:
    """Add the evaluation's figures (forget rate, retain accuracy, per-label accuracy, ...) to ``record``."""
    keys = ("forget_rate", "retain_accuracy", "contaminated_label_accuracy", "unlearning_accuracy")
    record |= {k: float(ev.figures[k]) for k in (*keys, "remaining_accuracy") if k in ev.figures}
    record["per_label_accuracy"] = {y: row["accuracy"] for y, row in ev.figures["per_label"].items()}
    record["seconds_evaluate"] = seconds


@contextmanager
def _evaluate_before_restore(engine, evaluate: Callable[[int], None]):
    """Within the block, call ``evaluate(i)`` for each run i just before ``engine.restore`` restores it.

    The batched vector env resets a run inside the ``step`` that ends its episode (``SAME_STEP``
    autoreset), restoring the pretrained weights through ``engine.restore(runs)``; this lets the runner
    evaluate the unlearned weights first. (A vector env with a no-autoreset option would make it
    unnecessary.)
    """
    restore = engine.restore

    def hooked(runs=None):
        if runs is None:
            chosen = range(engine.num_runs)
        else:
            r = np.asarray(runs)
            chosen = np.flatnonzero(r) if r.dtype == bool else r.reshape(-1)
        for i in chosen:
            evaluate(int(i))
        return restore(runs)

    engine.restore = hooked
    try:
        yield
    finally:
        del engine.restore  # the class's method again


def _batches(runs: Sequence[tuple], indices: Sequence[int], size: int) -> list[list[int]]:
    """``indices`` in order, cut into batches of at most ``size`` runs of one policy each."""
    out: list[list[int]] = []
    for k in indices:
        if out and len(out[-1]) < size and runs[out[-1][0]][0] == runs[k][0]:
            out[-1].append(k)
        else:
            out.append([k])
    return out


_WORKER: EpisodeRunner | None = None


def _worker_init(policies: Mapping[str, Any], config: BenchConfig, record: bool) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(1)
    _WORKER = EpisodeRunner(policies, config, record=record)


def _worker_units(units: list[tuple[str, int, int | None]]) -> list[tuple[dict, Any, Any]]:
    return _WORKER.remote_units(units)


def _run_in_workers(policies, config: BenchConfig, runs: list, batches: list[list[int]], record: bool = False):
    """Run the batches of ``runs`` (each a list of indices k: :meth:`EpisodeRunner.run_units` of
    ``runs[k]``) in ``config.workers`` spawned processes; yields (k, (record, evaluation, steps)) as
    each batch finishes. The workers end with this generator: an exception (Ctrl-C, SIGTERM) or
    closing it terminates them, and a killed parent is noticed by each (:func:`~unlearn_gym.bench.workers.worker_pool`)."""
    from concurrent.futures import as_completed

    from .workers import worker_pool

    with worker_pool(
        min(config.workers, len(batches)), initializer=_worker_init, initargs=(dict(policies), config, record)
    ) as pool:
        futures = {pool.submit(_worker_units, [runs[k] for k in batch]): batch for batch in batches}
        for future in as_completed(futures):
            yield from zip(futures[future], future.result())


def _robustness_runner(base, config: BenchConfig, log: Callable[[str], None]) -> tuple[Callable[[], dict], dict]:
    """(attack the env's current model → :func:`~unlearn_gym.metrics.robustness.robustness_figures`,
    the pretrained model's membership figures and forget-rate level). Call right after a reset."""
    from ..assets import bundled_model_dir
    from ..data.scenarios import scenario_of_checkpoint
    from ..metrics.classifier import classifier_dir_for, load_classifier
    from ..metrics.robustness import (
        RobustnessConfig,
        membership_inference,
        robustness_figures,
        sampled_forget_rate,
        summary_figures,
    )
    from ..models.checkpoint import load_model_config

    checkpoint = Path(base.config.checkpoint) if base.config.checkpoint else bundled_model_dir()
    model_config = load_model_config(checkpoint)
    classifier = load_classifier(classifier_dir_for(checkpoint, model_config, config.classifier), base.device)
    scenario = getattr(base, "scenario", None) or scenario_of_checkpoint(model_config)
    rcfg = config.robustness_config or RobustnessConfig()
    kw = dict(scheduler_config=model_config.get("scheduler"), sampler=getattr(base, "sampler", None))
    t0 = time.perf_counter()
    level = sampled_forget_rate(base.engine.model(), classifier, scenario, rcfg.relearn, **kw)["forget_rate"]
    mia = membership_inference(
        base.engine.model(), scenario, rcfg.membership, scheduler_config=kw["scheduler_config"], progress=False
    )
    pretrained = summary_figures({"membership": mia.to_dict()}) | {"relearn_level": level}
    log(
        f"pretrained: MIA forget AUC {mia.forget.auc:.3f}, retain AUC {mia.retain.auc:.3f}; forget rate "
        f"{level:.3f} from {rcfg.relearn.samples} label-{scenario.contaminated_label} samples "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    def run() -> dict:
        return robustness_figures(
            base.engine.model(), scenario, classifier, rcfg, pretrained_forget_rate=level, progress=False, **kw
        )

    return run, pretrained


def _grid_images(evaluation, num_labels: int, config: BenchConfig):
    """(L, k, C, H, W): the first k evaluation samples of every label, on the CPU."""
    import torch

    imgs, labels = evaluation.images.detach().cpu(), evaluation.labels.cpu()
    k = min(int((labels == y).sum()) for y in range(num_labels))
    k = min(k, config.grid_columns)
    return torch.stack([imgs[labels == y][:k] for y in range(num_labels)])


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict:
    """numpy arrays as torch tensors (what safetensors stores)."""
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}  # a copy: Ray's arrays are read-only


def _pool_samples(samples: dict, name: str, images, labels) -> None:
    """Append one episode's evaluation samples to the policy's pool (the Table-1 metrics)."""
    import torch

    imgs, labs = samples.get(name, (None, None))
    samples[name] = (
        images if imgs is None else torch.cat([imgs, images]),
        labels if labs is None else torch.cat([labs, labels]),
    )


# -- the episode log (resumable runs) -------------------------------------------------------------


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _log_settings(config: BenchConfig, names: list[str]) -> dict:
    """What determines the episodes, as JSON values: the config less the report-only fields, and
    the policies' names in order."""
    settings = {k: v for k, v in asdict(config).items() if k not in _REPORT_ONLY_SETTINGS}
    settings["policies"] = list(names)
    return json.loads(json.dumps(settings, default=str))


def _setting_differences(logged: dict, now: dict, prefix: str = "") -> list[str]:
    """'key: A in the log, B now' for every setting that differs (one level into dicts)."""
    out = []
    for key in sorted(set(logged) | set(now), key=str):
        a, b = logged.get(key, "<unset>"), now.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += _setting_differences(a, b, f"{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} in the log, {json.dumps(b)} now")
    return out


def read_episode_log(
    path: str | Path, log: Callable[[str], None] | None = None
) -> tuple[dict, list[tuple[int, dict]], int]:
    """Read an episode log: (header, [(line number, record)], bytes of its valid part).

    A last line that lacks its newline or is not valid JSON was being written when the run died:
    it is dropped (reported through ``log``) and the valid part ends before it. Any other line that
    is not a JSON object is an error naming its line number.

    Raises:
        ValueError: a corrupt line before the last, or no header line.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last complete line
    header, records, valid = None, [], 0
    for lineno, raw in enumerate(lines, start=1):
        last = lineno == len(lines)
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        except ValueError as e:
            if last:
                (log or (lambda _m: None))(f"resume: dropping the half-written last line {lineno} of {path}")
                break
            raise ValueError(
                f"{path}, line {lineno}: corrupt episode log ({e}); remove that line or start afresh"
            ) from None
        if last and not data.endswith(b"\n"):
            (log or (lambda _m: None))(f"resume: dropping the half-written last line {lineno} of {path} (no newline)")
            break
        if lineno == 1:
            if obj.get("kind") != _LOG_KIND:
                raise ValueError(f"{path}, line 1: not an unlearn-gym bench episode log (expected a header line)")
            header = obj
        else:
            records.append((lineno, obj))
        valid += len(raw) + 1
    if header is None:
        raise ValueError(f"{path}: no header line; start afresh without --resume")
    return header, records, valid


class _EpisodeLog:
    """The runner's side of the episode log: the episodes already done, appending, the samples."""

    def __init__(self, path: Path, settings: dict, runs: list[tuple], resume: bool, log: Callable[[str], None]) -> None:
        self.path = path
        self.samples_dir = path.parent / "episode_samples"
        self.done: dict[tuple, dict] = {}
        if resume:
            if not path.is_file():
                raise FileNotFoundError(f"resume: no episode log {path}; run without --resume first")
            header, records, valid = read_episode_log(path, log)
            differ = _setting_differences(header["settings"], settings)
            if differ:
                raise ValueError(
                    f"resume: {path} was written with other settings ({'; '.join(differ)}); "
                    "resume with the options of that run, or write into another folder"
                )
            planned = set(runs)
            for lineno, record in records:
                key = (record.get("policy"), record.get("seed"), record.get("instance"))
                if key not in planned or key in self.done:
                    why = "logged twice" if key in self.done else "not one of this run's episodes"
                    raise ValueError(f"{path}, line {lineno}: episode {key} is {why}")
                self.done[key] = record
            os.truncate(path, valid)
            log(f"resume: {len(self.done)} of {len(runs)} episodes already in {path}")
        else:
            if path.is_file():
                log(f"replacing the episode log {path} (to continue it instead: --resume {path.parent})")
            if self.samples_dir.is_dir():
                import shutil

                shutil.rmtree(self.samples_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            header = {"kind": _LOG_KIND, "version": 1, "settings": settings, "episodes": len(runs)}
            with open(path, "wb") as f:
                self._write(f, header)

    @staticmethod
    def _write(f, obj: dict) -> None:
        f.write((json.dumps(obj, default=_json_default) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        """One finished episode, as one JSON line, flushed and fsync'ed."""
        with open(self.path, "ab") as f:
            self._write(f, record)

    def _arrays_path(self, index: int) -> Path:
        return self.samples_dir / f"{index:06d}.safetensors"

    def save_arrays(self, index: int, arrays: dict) -> None:
        """The tensors the ``index``-th episode contributes to the report (before its line is logged)."""
        from ..models.checkpoint import save_tensors_atomic

        self.samples_dir.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(arrays, self._arrays_path(index))

    def load_steps(self, index: int, run: tuple):
        """The recorded steps of the ``index``-th episode ``run`` = (policy, seed, instance)."""
        from .recording import EpisodeSteps

        try:
            return EpisodeSteps.from_arrays(self.load_arrays(index), run[1], run[2])
        except (FileNotFoundError, KeyError):
            raise ValueError(
                f"resume with record: the logged episode {run} has no recorded steps in {self.samples_dir} (the "
                "interrupted run did not record); resume without recording, or start afresh"
            ) from None

    def load_arrays(self, index: int) -> dict:
        """The tensors :meth:`save_arrays` wrote for the ``index``-th episode, on the CPU."""
        from ..models.checkpoint import load_tensors

        path = self._arrays_path(index)
        if not path.is_file():
            raise FileNotFoundError(f"resume: {path} is missing (the samples of a logged episode); start afresh")
        return load_tensors(path)[0]


# -- comparisons ----------------------------------------------------------------------------------

VERDICT_METRICS = {"return": +1, "adjusted_forget_rate": -1, "forget_rate": -1, "retain_accuracy": +1}
"""Metrics with a verdict against the reference, and the sign of "better" (+1: higher is better)."""

FIDELITY_METRICS = {
    "forget_fid": +1,
    "forget_kid": +1,
    "forget_is": 0,
    "forget_ssim": -1,
    "retain_fid": -1,
    "retain_kid": -1,
    "retain_is": 0,
    "retain_ssim": +1,
}
"""Table 1's figures of one episode's own evaluation samples (``metrics="full"``), and the sign of
"better" as in :mod:`unlearn_gym.metrics.table` (forget: the model must no longer draw the forget
set; 0: IS has no better direction here, its verdict says "higher" or "lower")."""


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval of the mean paired difference a_i − b_i.

    The runner pairs episodes by (seed, instance): the same batches, probe, initial model and
    evaluation noise, so the pair's difference is the policy's effect.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: expected equal lengths, got {len(a)} and {len(b)}")
    return confidence_interval(list(a - b), confidence)


def verdict(mean_diff: float, half_width: float, higher_is_better: bool | None) -> str:
    """ "better", "worse" or "indistinguishable": whether the interval mean ± half excludes 0, and on
    which side; for a metric with no better direction (``higher_is_better=None``) "higher" or "lower"."""
    if not (np.isfinite(mean_diff) and np.isfinite(half_width)):
        return "indistinguishable"
    if mean_diff - half_width > 0:
        return "higher" if higher_is_better is None else "better" if higher_is_better else "worse"
    if mean_diff + half_width < 0:
        return "lower" if higher_is_better is None else "worse" if higher_is_better else "better"
    return "indistinguishable"


def compare_with_reference(
    episodes: list[dict], names: list[str], reference: str | None, metrics: Mapping[str, int] = VERDICT_METRICS
) -> dict[str, dict]:
    """policy → metric → {diff, ci95, verdict}: each policy against ``reference`` at 95%, paired
    over the (seed, instance) episodes both ran; {} when the reference was not benchmarked.
    ``metrics``: metric → sign of "better" (+1 higher, −1 lower, 0 none)."""
    if reference is None or reference not in names:
        return {}
    key = lambda e: (e["seed"], e["instance"])  # noqa: E731
    ref = {key(e): e for e in episodes if e["policy"] == reference}
    out = {}
    for name in names:
        if name == reference:
            continue
        rows = [e for e in episodes if e["policy"] == name and key(e) in ref]
        out[name] = {}
        for metric, sign in metrics.items():
            pairs = [(e[metric], ref[key(e)][metric]) for e in rows if metric in e and metric in ref[key(e)]]
            pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
            if not pairs:
                continue
            diff, half = paired_difference([p[0] for p in pairs], [p[1] for p in pairs])
            out[name][metric] = {"diff": diff, "ci95": half, "verdict": verdict(diff, half, sign > 0 if sign else None)}
    return out


def sample_intervals(ev, contaminated_label: int, contaminant_class: int, confidence: float = 0.95) -> dict[str, dict]:
    """Exact 95% intervals of one evaluated model's forget rate and retain accuracy, over its samples.

    A reference row (the pretrained or the retrained model) is one evaluation, not a mean over
    episodes: its uncertainty is the sampling of its own evaluation. Each figure is a share of
    samples (the contaminated label's samples called the contaminant; every other label's called
    their label, pooled: with equal counts per label the pooled share is the mean over labels), so
    its interval is the Clopper–Pearson interval of that binomial share (``scipy.stats.binomtest``):
    unlike a bootstrap over the samples, it does not collapse to a point at 0 or 1 (0 of 100: [0, 0.036]).

    Returns:
        {"forget_rate": {value, ci_low, ci_high}, "retain_accuracy": {...}}.
    """
    from scipy.stats import binomtest

    labels = np.asarray(ev.labels.cpu() if hasattr(ev.labels, "cpu") else ev.labels)
    predictions = np.asarray(ev.predictions.cpu() if hasattr(ev.predictions, "cpu") else ev.predictions)
    is_c = labels == contaminated_label
    hits = {
        "forget_rate": predictions[is_c] == contaminant_class,
        "retain_accuracy": predictions[~is_c] == labels[~is_c],
    }
    out = {}
    for metric, hit in hits.items():
        if hit.size == 0:
            out[metric] = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
            continue
        ci = binomtest(int(hit.sum()), int(hit.size)).proportion_ci(confidence_level=confidence, method="exact")
        out[metric] = {"value": float(hit.mean()), "ci_low": float(ci.low), "ci_high": float(ci.high)}
    return out


SPREAD_METRIC = "forget_rate"
"""The metric whose spread over the seeds :func:`spread_vs_reference` compares with the reference's."""


def spread_vs_reference(
    episodes: list[dict], names: list[str], reference: str | None, metric: str = SPREAD_METRIC
) -> dict[str, dict]:
    """policy → :class:`~unlearn_gym.bench.stats.PairedSpread` (as a dict) of ``metric`` against
    ``reference``, paired over the (seed, instance) episodes both ran; {} without the reference.

    A policy whose values vary over the seeds more than the reference's at 95% has a spread of its
    own (a random λ, an agent whose outcome depends on the seed): its interval narrows with more
    seeds, not with a finer evaluation.
    """
    from .stats import paired_spread

    if reference is None or reference not in names:
        return {}
    key = lambda e: (e["seed"], e["instance"])  # noqa: E731
    ref = {key(e): e.get(metric) for e in episodes if e["policy"] == reference}
    out = {}
    for name in names:
        if name == reference:
            continue
        pairs = [(e.get(metric), ref.get(key(e))) for e in episodes if e["policy"] == name and key(e) in ref]
        pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
        if pairs:
            out[name] = paired_spread([p[0] for p in pairs], [p[1] for p in pairs]).as_dict()
    return out


def add_outcome_scores(episodes: list[dict], pretrained: dict, contaminated_label: int, beta: float) -> None:
    """Add each evaluated episode's sampled damage and damage-adjusted forget rate, in place.

    From the bench's evaluation of the unlearned model (its forget rate F and per-label accuracies
    A_c) against the pretrained model's evaluation under the same noises (⁰), as the env's sampled
    reward measures them on its smaller probe (:meth:`~unlearn_gym.metrics.forget.SampledOutcome.damage`):

    - ``damage`` = D⁺ = max(0, ½·(max_c δ_c + mean_c δ_c)), δ_c = K_c⁰ − K_c, K_c = A_c (for the
      contaminated label A + F);
    - ``adjusted_forget_rate`` = F + β·D⁺: the forget rate with the damage charged at the env's
      exchange rate β, lower is better. The sampled return estimates F⁰ − (F + β·D⁺) (at α = 0),
      so this is the outcome the return should rank by.

    Episodes without an evaluation (or without a forget rate) are left as they are.
    """
    from ..metrics.forget import SampledOutcome

    labels = sorted(pretrained["per_label"], key=int)
    reference = SampledOutcome(
        float(pretrained["forget_rate"]),
        np.array([pretrained["per_label"][y]["accuracy"] for y in labels], dtype=np.float64),
        int(contaminated_label),
    )
    for e in episodes:
        if "per_label_accuracy" not in e or e.get("forget_rate") is None or not np.isfinite(e["forget_rate"]):
            continue
        outcome = SampledOutcome(
            float(e["forget_rate"]),
            np.array([e["per_label_accuracy"][y] for y in labels], dtype=np.float64),
            int(contaminated_label),
        )
        e["damage"] = max(0.0, outcome.damage(reference))
        e["adjusted_forget_rate"] = e["forget_rate"] + float(beta) * e["damage"]


def return_agreement(episodes: list[dict], names: list[str]) -> list[dict]:
    """Whether the return ranks the policies as their sampled outcomes do, pair by pair.

    The outcome is the damage-adjusted forget rate F + β·D⁺ of the bench's evaluation
    (:func:`add_outcome_scores`): the forget rate at equal retain damage, with damage charged at the
    env's own exchange rate β. For each pair (a, b) of policies, paired over the (seed, instance)
    episodes both ran: a's outcome is better than b's at 95% when the paired interval of its
    adjusted forget rate minus b's lies below 0. For each such pair: ``agrees`` = a's mean return is
    higher than b's. (The return comes from the env's own probe, fixed at reset and smaller; the
    outcome from the bench's independent evaluation samples.)

    Returns:
        One ``{"better", "worse", "adjusted_forget_rate", "forget_rate", "retain_accuracy", "damage",
        "return", "agrees"}`` per pair whose outcomes differ (each paired difference better − worse as
        {diff, ci95}).
    """
    key = lambda e: (e["seed"], e["instance"])  # noqa: E731
    by_name = {n: {key(e): e for e in episodes if e["policy"] == n} for n in names}
    metrics = ("adjusted_forget_rate", "forget_rate", "retain_accuracy", "damage", "return")
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = [k for k in by_name[a] if k in by_name[b]]
            cells = {}
            for metric in metrics:
                pairs = [(by_name[a][k].get(metric), by_name[b][k].get(metric)) for k in common]
                pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
                if len(pairs) < 2:
                    break
                diff, half = paired_difference([p[0] for p in pairs], [p[1] for p in pairs])
                cells[metric] = {"diff": diff, "ci95": half}
            if len(cells) < len(metrics):
                continue
            outcome = verdict(cells["adjusted_forget_rate"]["diff"], cells["adjusted_forget_rate"]["ci95"], False)
            if outcome == "indistinguishable":
                continue
            better, worse, sign = (a, b, 1.0) if outcome == "better" else (b, a, -1.0)
            flipped = {m: {"diff": sign * c["diff"], "ci95": c["ci95"]} for m, c in cells.items()}
            out.append({"better": better, "worse": worse, **flipped, "agrees": flipped["return"]["diff"] > 0})
    return out


def aggregate_statistics(episodes: list[dict], names: list[str], config: BenchConfig) -> dict[str, dict]:
    """rliable's aggregates per policy, for each metric of :data:`VERDICT_METRICS` the episodes have.

    Returns:
        policy → {"iqm": {metric: interval}, "mean_bootstrap": {metric: interval},
        "prob_improvement": {metric: interval}}, each interval ``{value, ci_low, ci_high}`` at 95%
        from ``config.bootstrap_reps`` stratified-bootstrap resamples (strata: the instances);
        ``prob_improvement`` = P(policy better than ``config.reference``) (forget rate: lower is
        better), only for the other policies and only when the reference was benchmarked.
    """
    from .stats import interval_estimate as estimate
    from .stats import iqm, mean, probability_of_improvement_interval

    def strata(name: str, metric: str) -> list[list[float]]:
        rows = [e for e in episodes if e["policy"] == name]
        return [
            [e[metric] for e in rows if e["instance"] == i and e.get(metric) is not None and np.isfinite(e[metric])]
            for i in config.instances
        ]

    def rng() -> np.random.Generator:  # afresh for every statistic: independent of the order of policies
        return np.random.default_rng(config.bootstrap_seed)

    kw = dict(reps=config.bootstrap_reps, confidence=0.95)
    has_reference = config.reference is not None and config.reference in names
    out = {}
    for name in names:
        metrics = [m for m in VERDICT_METRICS if any(m in e for e in episodes if e["policy"] == name)]
        out[name] = {
            "iqm": {m: estimate(strata(name, m), iqm, rng=rng(), **kw).as_dict() for m in metrics},
            "mean_bootstrap": {m: estimate(strata(name, m), mean, rng=rng(), **kw).as_dict() for m in metrics},
        }
        if has_reference and name != config.reference:
            out[name]["prob_improvement"] = {
                m: probability_of_improvement_interval(
                    strata(name, m),
                    strata(config.reference, m),
                    higher_is_better=VERDICT_METRICS[m] > 0,
                    rng=rng(),
                    **kw,
                ).as_dict()
                for m in metrics
            }
    return out


def worst_class_drop(pretrained: dict, rows: list[dict], contaminated_label: int) -> dict:
    """The retain label whose mean sample accuracy over ``rows`` fell most below the pretrained model's.

    Returns ``{"label", "pretrained", "after", "drop"}`` (drop = pretrained − after; the label y_c is
    excluded: its accuracy is what unlearning should raise).
    """
    worst = None
    for y, row in pretrained["per_label"].items():
        if int(y) == contaminated_label:
            continue
        after = float(np.mean([r["per_label_accuracy"][y] for r in rows]))
        drop = row["accuracy"] - after
        if worst is None or drop > worst["drop"]:
            worst = {"label": int(y), "pretrained": row["accuracy"], "after": after, "drop": drop}
    return worst


# -- report --------------------------------------------------------------------------------------


def _fmt(cell: dict | None, digits: int = 3) -> str:
    if not cell or not np.isfinite(cell.get("mean", float("nan"))):
        return "–"
    half = cell.get("ci95", float("nan"))
    return f"{cell['mean']:.{digits}f} ± {half:.{digits}f}" if np.isfinite(half) else f"{cell['mean']:.{digits}f}"


def to_markdown(result: dict, command: str | None = None) -> str:
    """The summary table (mean ± 95% CI half-width per policy) with the settings."""
    s = result["settings"]
    lines = ["# unlearn-gym bench", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines.append(
        f"{s['env_id']} {s['env_kwargs']}, seeds {list(s['seeds'])}, instances {list(s['instances'])}, "
        f"device {s['device']}; evaluation: {s.get('contaminated_label_samples') or s['samples_per_label']} samples "
        f"of the contaminated label and {s['samples_per_label']} of every other label, "
        + (
            f"{s['ddim_steps']} DDIM steps"
            if s.get("sampler", {}).get("kind", "ddim") == "ddim"
            else "one-step generator"
        )
        + f", seed {s['eval_seed']}. Cells: mean ± 95% CI half-width (Student t) over the episodes; reference "
        "rows: the one evaluation's figure [exact 95% binomial interval over its own samples]."
    )
    lines.append("")
    columns = [("forget_rate ↓", "forget_rate"), ("retain_accuracy ↑", "retain_accuracy")]
    if any("adjusted_forget_rate" in row for row in result["summary"].values()):
        columns += [("damage D⁺ ↓", "damage"), (f"F + {s.get('beta', 1.0):g}·D⁺ ↓", "adjusted_forget_rate")]
    if any("unlearning_accuracy" in row for row in result["summary"].values()):
        columns += [("unlearning_accuracy ↑", "unlearning_accuracy"), ("remaining_accuracy ↑", "remaining_accuracy")]
    if result.get("retrained"):
        columns += [("retain FID to retrained ↓", "retain_fid_retrained")]
    names = " | ".join(c for c, _ in columns)
    lines += [f"| policy | n | return | {names} | efficacy | degradation | diverged |"]
    lines += ["|---|---|---|" + "---|" * len(columns) + "---|---|---|"]
    for label, key in (("pretrained (no unlearning)", "pretrained"), ("retrained without the forget set", "retrained")):
        ref = result.get(key)
        if ref:
            cells = " | ".join(_reference_cell(ref, k) for _, k in columns)
            lines.append(f"| {label} | – | – | {cells} | – | – | – |")
    for name, row in result["summary"].items():
        cells = " | ".join(_fmt(row.get(k)) for _, k in columns)
        lines.append(
            f"| {name} | {row['return']['n']} | {_fmt(row['return'], 4)} | {cells} | {_fmt(row['efficacy'], 4)} | "
            f"{_fmt(row['degradation'], 4)} | {row['diverged']} |"
        )
    worst = {n: row["worst_class"] for n, row in result["summary"].items() if row.get("worst_class")}
    if worst:
        lines += ["", "Worst retain class (largest drop of mean per-label sample accuracy from the pretrained model):"]
        lines += [""] + [
            f"- {n}: label {w['label']}, {w['pretrained']:.3f} → {w['after']:.3f} (drop {w['drop']:+.3f})"
            for n, w in worst.items()
        ]
    verdicts = {n: row["vs_reference"] for n, row in result["summary"].items() if row.get("vs_reference")}
    if verdicts:
        ref = s.get("reference")
        lines += ["", f"Against {ref} (paired over equal seeds; mean difference ± 95% CI):", ""]
        for n, v in verdicts.items():
            parts = [f"{m} {c['verdict']} ({c['diff']:+.3f} ± {c['ci95']:.3f})" for m, c in v.items()]
            lines.append(f"- {n}: " + "; ".join(parts))
    spreads = {n: row["spread_vs_reference"] for n, row in result["summary"].items() if row.get("spread_vs_reference")}
    if spreads:
        lines += [
            "",
            f"Spread over the seeds ({SPREAD_METRIC}: standard deviation; Pitman–Morgan test of paired variances "
            f"against {s.get('reference')}'s on the same seeds):",
            "",
        ]
        for n, sp in spreads.items():
            line = f"- {n}: {sp['sd']:.3f} ({s.get('reference')}: {sp['reference_sd']:.3f}), ratio {sp['ratio']:.2f}"
            line += f", p {sp['p_value']:.3f}" if np.isfinite(sp["p_value"]) else ""
            if np.isfinite(sp["p_value"]) and sp["p_value"] < 0.05 and sp["ratio"] > 1:
                line += " — larger at 95%: the policy's own spread (its interval narrows with more seeds, not samples)"
            lines.append(line)
    agreement = result.get("return_agreement")
    if agreement is not None and len(result["summary"]) > 1:
        agree = sum(p["agrees"] for p in agreement)
        beta = s.get("beta", 1.0)
        lines += [
            "",
            f"Return against outcome: {len(agreement)} pair(s) of policies differ at 95% in the damage-adjusted "
            f"forget rate F + β·D⁺ (β = {beta:g}; paired over equal seeds); the return ranks {agree} of them "
            "the same way.",
        ]
        lines += [""] * bool(agreement) + [
            f"- {p['better']} over {p['worse']}: F + β·D⁺ {_pair_cell(p, 'adjusted_forget_rate')} "
            f"(forget_rate {_pair_cell(p, 'forget_rate')}, damage {_pair_cell(p, 'damage')}, retain_accuracy "
            f"{_pair_cell(p, 'retain_accuracy')}), return {_pair_cell(p, 'return')}"
            + ("" if p["agrees"] else " — the return ranks them the other way")
            for p in agreement
        ]
    if any(row.get("iqm") for row in result["summary"].values()):
        lines += ["", _aggregates_markdown(result)]
    for w in result.get("warnings", []):
        lines += ["", f"Warning: {w}"]
    if "pretrained_robustness" in result:
        lines += ["", _robustness_markdown(result)]
    if "fidelity" in result:
        from ..metrics.table import to_markdown as fidelity_markdown

        lines += [
            "",
            "## Table 1 metrics (samples of all episodes pooled per policy)",
            "",
            fidelity_markdown(result["fidelity"]),
        ]
        if any("fidelity" in row for row in result["summary"].values()):
            lines += ["", _fidelity_episodes_markdown(result)]
    return "\n".join(lines) + "\n"


def _reference_cell(ref: dict, metric: str) -> str:
    """A reference row's figure, with its interval over the row's own samples where there is one."""
    if metric not in ref:
        return "–"
    cell = ref.get("intervals", {}).get(metric)
    if cell is None or not np.isfinite(cell["ci_low"]):
        return f"{ref[metric]:.3f}"
    return f"{ref[metric]:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"


def _pair_cell(pair: dict, metric: str) -> str:
    return f"{pair[metric]['diff']:+.3f} ± {pair[metric]['ci95']:.3f}"


def _fidelity_episodes_markdown(result: dict) -> str:
    """Table 1 per episode: mean ± 95% CI over the episodes, and the verdicts against the reference."""
    models = result["fidelity"]["models"]
    arrows = {+1: " ↑", -1: " ↓", 0: ""}
    header = ["policy", "n"] + [
        f"{m.split('_')[0]} {m.split('_')[1].upper()}{arrows[sign]}" for m, sign in FIDELITY_METRICS.items()
    ]
    lines = [
        "### Table 1 per episode (each episode's own samples; mean ± 95% CI over the episodes)",
        "",
        "Every episode's evaluation samples scored alone against the real sets (the pooled table above "
        "scores all of a policy's samples at once). FID and KID at this sample count are biased upward "
        "and comparable only between rows.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    if "pretrained" in models:
        pre = models["pretrained"]
        keys = {"fid": "fid", "kid": "kid_mean", "is": "is_mean", "ssim": "ssim"}
        cells = []
        for m in FIDELITY_METRICS:
            part, figure = m.split("_")
            value = pre[part][keys[figure]]
            cells.append("–" if value is None else _fidelity_value(m, value))
        lines.append("| pretrained (no unlearning) | – | " + " | ".join(cells) + " |")
    for name, row in result["summary"].items():
        if "fidelity" not in row:
            continue
        cells = row["fidelity"]
        n = next(iter(cells.values()))["n"]
        body = [
            f"{_fidelity_value(m, cells[m]['mean'])} ± {_fidelity_value(m, cells[m]['ci95'])}" for m in FIDELITY_METRICS
        ]
        lines.append(f"| {name} | {n} | " + " | ".join(body) + " |")
    verdicts = {
        n: row["fidelity_vs_reference"] for n, row in result["summary"].items() if "fidelity_vs_reference" in row
    }
    if verdicts:
        ref = result["settings"].get("reference")
        lines += ["", f"Against {ref} (paired over equal seeds; mean difference ± 95% CI):", ""]
        for n, v in verdicts.items():
            parts = [
                f"{m} {c['verdict']} ({_fidelity_value(m, c['diff'], signed=True)} ± {_fidelity_value(m, c['ci95'])})"
                for m, c in v.items()
            ]
            lines.append(f"- {n}: " + "; ".join(parts))
    return "\n".join(lines)


def _fidelity_value(metric: str, value: float | None, signed: bool = False) -> str:
    """One Table-1 figure: FID and KID with 4 significant digits, IS and SSIM with 3 decimals."""
    if value is None or not np.isfinite(value):
        return "–"
    sign = "+" if signed else ""
    if metric.endswith(("_fid", "_kid")):
        return f"{value:{sign}.4g}"
    return f"{value:{sign}.3f}"


def _interval(cell: dict | None, digits: int = 3) -> str:
    if not cell or cell.get("value") is None or not np.isfinite(cell["value"]):
        return "–"
    return f"{cell['value']:.{digits}f} [{cell['ci_low']:.{digits}f}, {cell['ci_high']:.{digits}f}]"


def _aggregates_markdown(result: dict) -> str:
    """The rliable table: IQM and P(improvement over the reference), each with its 95% interval."""
    s, summary = result["settings"], result["summary"]
    metrics = [m for m in VERDICT_METRICS if any(m in row.get("iqm", {}) for row in summary.values())]
    better = {m: "higher" if VERDICT_METRICS[m] > 0 else "lower" for m in metrics}
    strata = "the instances" if len(s["instances"]) > 1 else "one stratum: the plain bootstrap"
    lines = [
        f"IQM (mean of the middle 50% of the episodes) and P(improvement) = P(policy's episode better than "
        f"{s.get('reference')}'s) (Mann–Whitney U/(n·m), ties 1/2, averaged over the instances; better = "
        + ", ".join(f"{m} {b}" for m, b in better.items())
        + f"); [95% interval] from {s.get('bootstrap_reps', 2000)} stratified-bootstrap resamples (strata: {strata}).",
        "",
        "| policy | " + " | ".join(f"{m} IQM" for m in metrics) + " | "
        + " | ".join(f"P({m} {better[m]})" for m in metrics) + " |",
        "|---|" + "---|" * (2 * len(metrics)),
    ]  # fmt: skip
    for name, row in summary.items():
        iqm_cells = [_interval(row.get("iqm", {}).get(m), 4 if m == "return" else 3) for m in metrics]
        poi = row.get("prob_improvement", {})
        poi_cells = [_interval(poi.get(m), 2) if poi else "(reference)" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(iqm_cells + poi_cells) + " |")
    return "\n".join(lines)


def _robustness_markdown(result: dict) -> str:
    """The robustness section: membership inference and relearning per policy (mean ± 95% CI)."""
    from ..metrics.robustness import ROBUSTNESS_METRICS

    rcfg = result["episodes"][0]["robustness"]
    mia, rel = rcfg["membership"]["settings"], rcfg["relearn"]["settings"]
    pre = result["pretrained_robustness"]
    metrics = [
        m for m in ROBUSTNESS_METRICS if any(m in row.get("robustness", {}) for row in result["summary"].values())
    ]
    lines = [
        "## Robustness: membership inference and relearning",
        "",
        f"Membership inference ({mia['attack']} attack): members (training images) against held-out images of the "
        f"same kind, up to {mia['num_samples']} each; AUC (0.5 = chance) and TPR at {mia['fpr']:.0%} FPR. "
        f"Relearning: {rel['steps']} steps of DDPM fine-tuning (AdamW, lr {rel['lr']}, batch {rel['batch_size']}) on "
        f"retain data (retain) and on retain data with {rel['forget_per_batch']} of each batch from "
        f"{rel['forget_images']} forget images (mixed); forget rate after K steps from {rel['samples']} samples of "
        f"the contaminated label; steps to half: the first evaluation (every {rel['eval_every']} steps) at which "
        f"the forget rate reaches half the pretrained level {pre['relearn_level']:.3f}, mean over the episodes "
        "that got there (k/n).",
        "",
        "| policy | " + " | ".join(ROBUSTNESS_METRICS[m] for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    cells = [f"{pre[m]:.3f}" if pre.get(m) is not None else "–" for m in metrics]
    lines.append("| pretrained (no unlearning) | " + " | ".join(cells) + " |")
    for name, row in result["summary"].items():
        rob, n = row.get("robustness", {}), row["return"]["n"]
        cells = []
        for m in metrics:
            cell = _fmt(rob.get(m), 1 if m.endswith("steps_to_half") else 3)
            cells.append(f"{cell} ({rob[m]['n']}/{n})" if m.endswith("steps_to_half") and m in rob else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def json_summary(result: dict) -> dict:
    """What ``unlearn-gym bench --json`` prints: policy → {return, forget_rate, retain_accuracy, damage,
    adjusted_forget_rate} → {mean, ci95, n}, with ``vs_reference`` (metric → verdict),
    ``spread_vs_reference`` (:func:`spread_vs_reference`), ``worst_class``, ``iqm`` and
    ``prob_improvement`` (metric → {value, ci_low, ci_high}) where computed, ``fidelity`` (Table 1
    per episode: :data:`FIDELITY_METRICS` → {mean, ci95, n}) and ``fidelity_vs_reference`` with
    ``metrics="full"``, the robustness figures with ``robustness``; ``pretrained`` →
    {forget_rate, retain_accuracy, per_label_accuracy, intervals (:func:`sample_intervals`)} for the
    model at reset, and ``retrained``
    likewise for the model retrained without the forget set (with ``retain_fid_retrained``,
    ``retain_kid_retrained``, as every policy has them, when it is the reference)."""
    out = {}
    for key in ("pretrained", "retrained"):
        ref = result.get(key)
        if ref:
            out[key] = {
                "forget_rate": _finite(ref["forget_rate"]),
                "retain_accuracy": _finite(ref["retain_accuracy"]),
                "per_label_accuracy": {y: row["accuracy"] for y, row in ref["per_label"].items()},
            } | {
                k: _finite(ref[k])
                for k in ("damage", "adjusted_forget_rate", "retain_fid_retrained", "retain_kid_retrained")
                if k in ref
            }
            if "intervals" in ref:
                out[key]["intervals"] = {m: {k: _finite(v) for k, v in c.items()} for m, c in ref["intervals"].items()}
    for name, row in result["summary"].items():
        out[name] = {
            k: {"mean": _finite(row[k]["mean"]), "ci95": _finite(row[k]["ci95"]), "n": row[k]["n"]}
            for k in (
                "return",
                "forget_rate",
                "retain_accuracy",
                "damage",
                "adjusted_forget_rate",
                "retain_fid_retrained",
                "retain_kid_retrained",
            )
            if k in row
        }
        if row.get("vs_reference"):
            out[name]["vs_reference"] = {m: c["verdict"] for m, c in row["vs_reference"].items()}
        if row.get("spread_vs_reference"):
            spread = row["spread_vs_reference"]
            out[name]["spread_vs_reference"] = {k: v if k == "n" else _finite(v) for k, v in spread.items()}
        if row.get("worst_class"):
            out[name]["worst_class"] = row["worst_class"]
        for key in ("iqm", "prob_improvement"):
            if row.get(key):
                out[name][key] = {m: {k: _finite(v) for k, v in c.items()} for m, c in row[key].items()}
        out[name] |= {
            k: {"mean": _finite(v["mean"]), "ci95": _finite(v["ci95"]), "n": v["n"]}
            for k, v in row.get("robustness", {}).items()
        }
        if row.get("fidelity"):
            out[name]["fidelity"] = {
                k: {"mean": _finite(v["mean"]), "ci95": _finite(v["ci95"]), "n": v["n"]}
                for k, v in row["fidelity"].items()
            }
        if row.get("fidelity_vs_reference"):
            out[name]["fidelity_vs_reference"] = {m: c["verdict"] for m, c in row["fidelity_vs_reference"].items()}
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def write_report(result: dict, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """bench.md, bench.csv (one row per episode), bench.json and the PNG plots (curves.png,
    profile.png, samples.png), into ``out``."""
    from ..models.checkpoint import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grids = result.pop("_grids", {})
    paths = {"markdown": out / "bench.md", "csv": out / "bench.csv", "json": out / "bench.json"}
    paths["markdown"].write_text(to_markdown(result, command))
    cols = ["policy", "seed", "instance", "return", "length", "diverged", "efficacy", "degradation", "mean_lambda"]
    metrics = (
        "forget_rate",
        "retain_accuracy",
        "contaminated_label_accuracy",
        "unlearning_accuracy",
        "remaining_accuracy",
    )
    cols += [c for c in metrics if c in result["episodes"][0]]
    cols += list(result["episodes"][0].get("robustness", {}).get("summary", {}))
    cols += [c for c in ("seconds_unlearn", "seconds_evaluate", "seconds_robustness") if c in result["episodes"][0]]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["episodes"])
    write_json_atomic(_jsonable(result | {"command": command}), paths["json"])
    paths |= _plots(result, grids, out)
    result["_grids"] = grids
    return paths


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def _profile_plot(result: dict, out: Path, plt) -> dict[str, Path]:
    """profile.png: the performance profile of every policy per metric, with 95% bootstrap bands."""
    from .stats import performance_profile

    s, episodes, names = result["settings"], result["episodes"], list(result["summary"])
    metrics = [m for m in VERDICT_METRICS if any(m in e and e[m] is not None for e in episodes)]
    instances = s["instances"]
    reps = min(int(s.get("bootstrap_reps", 2000)), 1000)  # bands only: 1000 resamples are plenty
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        higher = VERDICT_METRICS[metric] > 0
        values = np.array([e[metric] for e in episodes if e.get(metric) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if metric != "return":  # rates: the whole of [0, 1]
            lo, hi = min(lo, 0.0), max(hi, 1.0)
        pad = 0.03 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
        taus = np.linspace(lo - pad, hi + pad, 401)
        for k, name in enumerate(names):
            rows = [e for e in episodes if e["policy"] == name]
            strata = [
                [e[metric] for e in rows if e["instance"] == i and e.get(metric) is not None and np.isfinite(e[metric])]
                for i in instances
            ]
            profile, low, high = performance_profile(
                strata, taus, higher_is_better=higher, reps=reps, rng=s.get("bootstrap_seed", 0)
            )
            ax.plot(taus, profile, color=f"C{k}", lw=1.8, label=name, drawstyle="steps-post")
            ax.fill_between(taus, low, high, color=f"C{k}", alpha=0.15, step="post")
        ax.set(
            xlabel="τ",
            ylabel="fraction of episodes",
            title=f"{metric} {'>' if higher else '<'} τ ({'higher' if higher else 'lower'} is better)",
            ylim=(-0.02, 1.02),
        )
        ax.legend(fontsize=7)
    fig.suptitle("performance profiles (95% stratified-bootstrap bands)", fontsize=9)
    fig.tight_layout()
    path = out / "profile.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"profile": path}


def _plots(result: dict, grids: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    names = list(result["summary"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(names):
        color = f"C{k}"
        rows = [e for e in result["episodes"] if e["policy"] == name]
        lam = np.array([r["lambdas"] for r in rows if len(r["lambdas"]) == len(rows[0]["lambdas"])])
        ret = np.array([np.cumsum(r["rewards"]) for r in rows if len(r["rewards"]) == len(rows[0]["rewards"])])
        steps = np.arange(1, lam.shape[1] + 1)
        for trace in lam:
            axes[0].plot(steps, trace, color=color, alpha=0.25, lw=0.8)
        axes[0].plot(steps, lam.mean(0), color=color, lw=2, label=name)
        mean = ret.mean(0)
        half = np.array([confidence_interval(ret[:, j])[1] for j in range(ret.shape[1])]) if len(ret) > 1 else 0 * mean
        axes[1].plot(steps, mean, color=color, lw=2, label=name)
        axes[1].fill_between(steps, mean - np.nan_to_num(half), mean + np.nan_to_num(half), color=color, alpha=0.2)
    axes[0].set(xlabel="step t", ylabel="λ_t", title="λ trajectories (thin: episodes; thick: mean)", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="step t", ylabel="Σ_{k≤t} r_k", title="cumulative reward (mean ± 95% CI)")
    axes[1].axhline(0, color="k", lw=0.5)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["curves"] = out / "curves.png"
    fig.savefig(paths["curves"], dpi=120)
    plt.close(fig)
    paths |= _profile_plot(result, out, plt)
    if grids:
        panels = list(grids)
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 1, 4.2), squeeze=False)
        for ax, name in zip(axes[0], panels):
            g = grids[name]  # (L, k, C, H, W) in [−1, 1]
            L, k, c, h, w = g.shape
            img = (g.clamp(-1, 1) * 0.5 + 0.5).permute(0, 3, 1, 4, 2).reshape(L * h, k * w, c).numpy()
            ax.imshow(img[..., 0] if c == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(
                name if name == "pretrained" else f"{name}\n(after, seed {result['settings']['seeds'][0]})", fontsize=8
            )
            ax.set_yticks([(y + 0.5) * h for y in range(L)], [str(y) for y in range(L)], fontsize=6)
            ax.set_xticks([])
        axes[0][0].set_ylabel("label")
        fig.suptitle("samples before (pretrained) and after unlearning; same initial noise", fontsize=9)
        fig.tight_layout()
        paths["samples"] = out / "samples.png"
        fig.savefig(paths["samples"], dpi=120)
        plt.close(fig)
    return paths
