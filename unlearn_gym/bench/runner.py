"""The benchmark runner: λ-policies and agents × seeds × instances on one env, on equal terms.

For every policy, seed s and instance i, one episode: ``policy.reset(s)``, ``env.reset(seed=s,
options={"instance": i})``, then ``predict`` → ``step`` → ``observe`` until the episode ends. Every
policy sees the same seeds, so the same batches, probes and initial model. The true (undiscounted,
unnormalised) episode return is recorded, and the unlearned model is evaluated by sampling (forget
rate, retain accuracy; the Table-1 metrics on request) with one fixed evaluation seed, the same
noise for every model. Summaries are the mean and the 95% confidence half-width of Student's t
over the episodes of each policy, paired verdicts against a reference policy, and rliable's
aggregates (:mod:`unlearn_gym.bench.aggregates`): IQM and mean with stratified-bootstrap intervals
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
(:meth:`~unlearn_gym.bench.episodes.EpisodeRunner.episodes`), with the same records. With ``record``, every
episode's steps also become Minari datasets (:mod:`unlearn_gym.bench.recording`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .aggregates import aggregate_statistics
from .config import BenchConfig, Unit
from .curve import add_curve_scores
from .episodes import EpisodeRunner
from .factors import training_seed_factor, training_seed_groups
from .ray_backend import check_address, require_ray, run_on_ray
from .record import EpisodeLog, EpisodeOutcome, EpisodeRecord, log_settings
from .recording import check_new_datasets, require_minari, write_datasets
from .robustness import robustness_runner
from .stats import (
    FIDELITY_METRICS,
    add_outcome_scores,
    compare_with_reference,
    confidence_interval,
    return_agreement,
    sample_intervals,
    spread_vs_reference,
    summarize,
)
from .workers import run_in_workers

__all__ = ["fidelity_by_episode", "run_benchmark"]


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
        log_path: the episode log (:data:`~unlearn_gym.bench.record.EPISODE_LOG` in the output folder): a header line with
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
        ``vs_reference``, ``worst_class`` and :func:`~unlearn_gym.bench.aggregates.aggregate_statistics`' ``iqm``,
        ``mean_bootstrap`` and ``prob_improvement``), ``warnings``, with ``log_path``
        ``episode_log`` ({path, resumed_episodes}), with ``record`` ``datasets`` ({path, ids:
        policy → Minari dataset id}); plus the non-JSON ``_grids`` (before/after
        sample tensors) that :func:`~unlearn_gym.bench.report.write_report` draws and drops.
    """
    log = log or (lambda _msg: None)
    names = list(policies)
    runs = [(n, s, i) for n in policies for s in config.seeds for i in config.instances]
    _check_backends(config, names, record)
    episode_log = None
    if log_path is not None:  # first: a resume with other settings fails before any work
        episode_log = EpisodeLog(Path(log_path), log_settings(config, names), runs, resume, log)
    runner = EpisodeRunner(policies, config, record=record is not None)
    warnings = runner.warnings()
    for w in warnings:
        log(f"warning: {w}")

    # the pretrained model, once: every reset restores exactly these weights
    first = config.instances[0]
    runner.env.reset(seed=config.seeds[0], options=None if first is None else {"instance": first})
    refs = _evaluate_references(runner, log)
    robust, pretrained_robustness, retrained_robustness = None, None, None
    if config.robustness:
        retrained_dir = runner.retrained_dir()
        robust, pretrained_robustness, retrained_robustness = robustness_runner(runner.base, config, log, retrained_dir)

    book = _run_episodes(runner, runs, refs, episode_log, robust, record is not None, progress)
    episodes: list[EpisodeRecord] = book.records  # type: ignore[assignment]  (every run is filled in)
    for index in sorted(book.pooled):
        _pool_samples(refs.samples, runs[index][0], *book.pooled[index])
    _score_outcomes(episodes, refs, runner)

    summary = _summary(episodes, names, config, refs.pretrained, runner.contaminated_label, robust is not None)
    result = _result(runner, names, refs, summary, episodes, warnings)
    groups = training_seed_groups(policies)
    if groups:
        result["training_seeds"] = training_seed_factor(episodes, groups, config.reference)
    if pretrained_robustness is not None:
        result["pretrained_robustness"] = pretrained_robustness
    if retrained_robustness is not None:
        result["retrained_robustness"] = retrained_robustness
    if episode_log is not None:
        result["episode_log"] = {"path": str(episode_log.path), "resumed_episodes": len(episode_log.done)}
    if record is not None:
        result["datasets"] = _write_datasets(record, runner, runs, book.recorded, log)
    if config.metrics == "full" and runner.evaluate is not None:
        _add_fidelity(result, runner, runs, book.pooled, refs.samples, log)
    runner.close()
    return result


def _check_backends(config: BenchConfig, names: list[str], record: str | Path | None) -> None:
    """Fail before any work without Ray or its cluster (``backend="ray"``), or where the Minari
    datasets of ``record`` cannot be written."""
    if config.backend == "ray":
        require_ray()
        if config.ray_address is not None:
            check_address(config.ray_address)
    if record is not None:
        require_minari()
        check_new_datasets(record, config.env_id, names)


@dataclass
class _References:
    """The reference rows of the report and what the plots and the Table-1 pools take from them."""

    pretrained: dict | None = None
    """The evaluation of the model at reset (figures and ``intervals``), None without evaluation."""
    retrained: dict | None = None
    """The evaluation of the model retrained without the forget set, None without one."""
    grids: dict[str, Any] = field(default_factory=dict)
    """name → (L, k, C, H, W) sample grid: the pretrained model's, then each policy's first run's."""
    samples: dict[str, tuple] = field(default_factory=dict)
    """name → (images, labels) of the Table-1 pools: the reference models', then each policy's pooled."""


def _evaluate_references(runner: EpisodeRunner, log: Callable[[str], None]) -> _References:
    """Evaluate the pretrained model (call it right after a reset) and, where there is one, the model
    retrained without the forget set; the latter becomes the reference of ``retain_fid_retrained``
    and ``retain_kid_retrained``, which the pretrained row gets too."""
    refs = _References()
    if runner.evaluate is None:
        return refs
    t0 = time.perf_counter()
    ev = runner.evaluate_pretrained(log)
    refs.pretrained = pretrained = dict(ev.figures)
    refs.grids["pretrained"] = _grid_images(ev, runner.num_labels, runner.config)
    refs.samples["pretrained"] = (ev.images, ev.labels)
    pretrained["intervals"] = sample_intervals(ev, runner.contaminated_label, runner.contaminant_class)
    if runner.curve_steps:  # F⁰ of the forget curves: the same samples as every curve point
        pretrained["curve_forget_rate"] = runner.curve_forget_rate()
    log(
        f"pretrained: forget_rate {ev.figures['forget_rate']:.3f}, retain_accuracy "
        f"{ev.figures['retain_accuracy']:.3f} ({time.perf_counter() - t0:.1f} s)"
    )
    retrained_dir = runner.retrained_dir()
    if retrained_dir is None:
        return refs
    t0 = time.perf_counter()
    ev = runner.evaluate_reference(retrained_dir, log)
    refs.retrained = retrained = {**ev.figures, "checkpoint": str(retrained_dir)}
    retrained["intervals"] = sample_intervals(ev, runner.contaminated_label, runner.contaminant_class)
    runner.set_distance_reference(ev)
    retrained |= runner.distance_to_retrained(ev)
    pretrained |= runner.distance_to_retrained(
        SimpleNamespace(images=refs.samples["pretrained"][0], labels=refs.samples["pretrained"][1])
    )
    refs.samples["retrained (no forget set)"] = (ev.images, ev.labels)
    log(
        f"retrained without the forget set: forget_rate {ev.figures['forget_rate']:.3f}, retain_accuracy "
        f"{ev.figures['retain_accuracy']:.3f} ({time.perf_counter() - t0:.1f} s)"
    )
    return refs


class _Bookkeeping:
    """The episodes' outcomes kept in the order of the runs, whatever order they finish in.

    Each policy's grid comes from its first run, and the Table-1 pools are concatenated in the order
    of the runs: the same report for any number of workers and after a resume. Every finished
    episode is logged (its record, and the tensors it contributes) as it arrives.
    """

    def __init__(self, runner: EpisodeRunner, runs: list[Unit], refs: _References, episode_log, bar) -> None:
        self.runner, self.config, self.runs, self.refs = runner, runner.config, runs, refs
        self.episode_log: EpisodeLog | None = episode_log
        self.bar = bar
        self.first_run = {name: runs.index(next(r for r in runs if r[0] == name)) for name in runner.policies}
        """policy → the index of its first run (whose samples are its grid)."""
        self.records: list[EpisodeRecord | None] = [None] * len(runs)
        self.pooled: dict[int, tuple] = {}
        """run index → (images, labels) of its evaluation, with ``metrics="full"`` (the Table-1 pools)."""
        self.recorded: dict[int, Any] = {}
        """run index → its recorded steps, with ``record``."""

    def take_logged(self, record: bool) -> list[int]:
        """Take the episodes the log already holds (a resume) as they are; returns the indices of the
        runs still to run."""
        pending = []
        for index, run in enumerate(self.runs):
            done = self.episode_log.done.get(run) if self.episode_log is not None else None
            if done is None:
                pending.append(index)
                continue
            if record:
                self.recorded[index] = self.episode_log.load_steps(index, run)
            first = index == self.first_run[run[0]]
            if self.runner.evaluate is not None and (first or self.config.metrics == "full"):
                arrays = self.episode_log.load_arrays(index)  # what the interrupted run's episode contributed
                if first:
                    self.refs.grids[run[0]] = arrays["grid"]
                if self.config.metrics == "full":
                    device = self.runner.base.device
                    self.pooled[index] = (arrays["images"].to(device), arrays["labels"].to(device))
            self.records[index] = done
            self.bar.update(1)
        return pending

    def finish(self, index: int, outcome: EpisodeOutcome) -> None:
        """Keep one episode's outcome (record, evaluation, steps; in this process, as it arrives) and log it."""
        episode, ev, steps = outcome
        name, arrays = episode["policy"], {}
        if ev is not None and self.refs.retrained is not None:
            episode |= self.runner.distance_to_retrained(ev)
        if ev is not None:
            if index == self.first_run[name]:
                self.refs.grids[name] = arrays["grid"] = _grid_images(ev, self.runner.num_labels, self.config)
            if self.config.metrics == "full":
                device = self.runner.base.device
                self.pooled[index] = (ev.images.to(device), ev.labels.to(device))
                arrays |= {"images": ev.images, "labels": ev.labels}
        if steps is not None:
            self.recorded[index] = steps
            arrays |= _tensors(steps.to_arrays())
        if self.episode_log is not None:
            if arrays:
                self.episode_log.save_arrays(index, arrays)
            self.episode_log.append(episode)
        self.records[index] = episode
        self.bar.set_postfix_str(f"{name} seed {episode['seed']}")
        self.bar.update(1)


def _run_episodes(
    runner: EpisodeRunner,
    runs: list[Unit],
    refs: _References,
    episode_log: EpisodeLog | None,
    robust: Callable[[], dict] | None,
    record: bool,
    progress: bool,
) -> _Bookkeeping:
    """Every run's outcome: the logged ones taken from the log (a resume), the others run in batches of at
    most ``runner.num_envs`` runs of one policy (:func:`_run_batches`), under a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(runs), desc="bench", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    book = _Bookkeeping(runner, runs, refs, episode_log, bar)
    pending = book.take_logged(record)
    _run_batches(runner, runs, _batches(runs, pending, runner.num_envs), book, robust, record)
    bar.close()
    return book


def _run_batches(
    runner: EpisodeRunner,
    runs: list[Unit],
    batches: list[list[int]],
    book: _Bookkeeping,
    robust: Callable[[], dict] | None,
    record: bool,
) -> None:
    """Run the batches of ``runs`` on Ray actors, in worker processes, or here (with the robustness
    attacks ``robust`` after each episode), handing each outcome to ``book``."""
    config, policies = runner.config, runner.policies
    if batches and config.backend == "ray":
        for index, outcome in run_on_ray(policies, config, runs, batches, record=record):
            book.finish(index, outcome)
    elif config.workers > 1 and robust is None and len(batches) > 1:
        with closing(run_in_workers(policies, config, runs, batches, record=record)) as outcomes:
            for index, outcome in outcomes:  # closing: an exception here ends the workers at once
                book.finish(index, outcome)
    else:
        for batch in batches:
            name, seed, _ = runs[batch[0]]
            book.bar.set_postfix_str(f"{name} seed {seed}" + (f" (+{len(batch) - 1})" if len(batch) > 1 else ""))
            for index, (episode, ev, steps) in zip(batch, runner.run_units([runs[k] for k in batch])):
                if robust is not None:  # one episode per batch: the env's model is this episode's
                    t2 = time.perf_counter()
                    figures = robust()
                    episode |= figures["summary"]
                    episode["robustness"] = figures
                    episode["seconds_robustness"] = round(time.perf_counter() - t2, 3)
                book.finish(index, EpisodeOutcome(episode, ev, steps))


def _score_outcomes(episodes: list[EpisodeRecord], refs: _References, runner: EpisodeRunner) -> None:
    """Add the forget curve's scores (:func:`~unlearn_gym.bench.curve.add_curve_scores`), the sampled
    damage D⁺ and the damage-adjusted forget rate F + β·D⁺ to the evaluated episodes and the reference
    rows (:func:`~unlearn_gym.bench.stats.add_outcome_scores`; the pretrained row: D⁺ = 0); the last two
    not where the env erases a class (SFD-v0: no contaminant to score)."""
    base, pretrained = runner.base, refs.pretrained
    if pretrained is not None and runner.curve_steps:
        add_curve_scores(episodes, pretrained["curve_forget_rate"], runner.horizon)
    if pretrained is None or runner.contaminated_label is None or base.forget_class is not None:
        return
    add_outcome_scores(episodes, pretrained, runner.contaminated_label, base.config.beta)
    for row in (pretrained, refs.retrained):  # the reference rows, scored alike
        if row is not None:
            scored = {"forget_rate": row["forget_rate"]}
            scored["per_label_accuracy"] = {y: r["accuracy"] for y, r in row["per_label"].items()}
            add_outcome_scores([scored], pretrained, runner.contaminated_label, base.config.beta)
            row |= {k: scored[k] for k in ("damage", "adjusted_forget_rate") if k in scored}


def _summary(
    episodes: list[EpisodeRecord],
    names: list[str],
    config: BenchConfig,
    pretrained: dict | None,
    contaminated_label: int | None,
    robustness: bool,
) -> dict[str, dict]:
    """policy → its summary (:func:`~unlearn_gym.bench.stats.summarize`) with ``vs_reference``,
    ``spread_vs_reference`` and rliable's aggregates (:func:`~unlearn_gym.bench.aggregates.aggregate_statistics`)."""
    summary = summarize(episodes, names, pretrained, contaminated_label, robustness)
    for name, verdict in compare_with_reference(episodes, names, config.reference).items():
        summary[name]["vs_reference"] = verdict
    for name, spread in spread_vs_reference(episodes, names, config.reference).items():
        summary[name]["spread_vs_reference"] = spread
    for name, stats in aggregate_statistics(episodes, names, config).items():
        summary[name] |= stats
    return summary


def _result(
    runner: EpisodeRunner,
    names: list[str],
    refs: _References,
    summary: dict,
    episodes: list[EpisodeRecord],
    warnings: list[str],
) -> dict:
    """The result's settings (the config, the policies, the device, β and the evaluation sampler),
    reference rows, summary, the return's agreement with the outcome, episodes, warnings and grids."""
    base = runner.base
    return {
        "settings": {
            **asdict(runner.config),
            "policies": names,
            "device": str(base.device),
            "beta": float(base.config.beta),
            "sampler": base.sampler or {"kind": "ddim"},
        },
        "pretrained": refs.pretrained,
        "retrained": refs.retrained,
        "summary": summary,
        "return_agreement": return_agreement(episodes, names) if runner.evaluate is not None else [],
        "episodes": episodes,
        "warnings": warnings,
        "_grids": refs.grids,
    }


def _write_datasets(
    record: str | Path, runner: EpisodeRunner, runs: list[Unit], recorded: dict[int, Any], log: Callable[[str], None]
) -> dict:
    """Write every policy's recorded episodes, in the order of the runs, as one Minari dataset each
    into ``record``; {path, ids: policy → dataset id}."""
    by_policy = {name: [recorded[k] for k, run in enumerate(runs) if run[0] == name] for name in runner.policies}
    ids = write_datasets(record, runner.env, by_policy)
    log(f"Minari datasets in {record}: {', '.join(ids.values())}")
    return {"path": str(record), "ids": ids}


def _add_fidelity(
    result: dict, runner: EpisodeRunner, runs: list[Unit], pooled: dict[int, tuple], samples: dict, log
) -> None:
    """Table 1 (``metrics="full"``): ``fidelity`` of each policy's pooled samples and of the reference
    models', ``fidelity_episodes`` of each episode's own samples, and per policy their mean ± 95% CI
    (``fidelity``) and verdicts against the reference (``fidelity_vs_reference``) in the summary."""
    from ..metrics.table import SampleSet, fidelity_table

    config, scenario, summary = runner.config, runner.base.scenario, result["summary"]
    names = list(summary)
    log("Table 1 metrics (FID/KID/IS/SSIM with the classifier's features) ...")
    sets = {n: SampleSet(x, y) for n, (x, y) in samples.items()}
    result["fidelity"] = fidelity_table(sets, scenario, runner.classifier, seed=config.eval_seed)
    rows = fidelity_by_episode(pooled, runs, scenario, runner.classifier, seed=config.eval_seed)
    result["fidelity_episodes"] = rows
    verdicts = compare_with_reference(rows, names, config.reference, FIDELITY_METRICS)
    for name in names:
        mine = [r for r in rows if r["policy"] == name]
        cells = {m: dict(zip(("mean", "ci95"), confidence_interval([r[m] for r in mine]))) for m in FIDELITY_METRICS}
        summary[name]["fidelity"] = {m: c | {"n": len(mine)} for m, c in cells.items()}
        if name in verdicts:
            summary[name]["fidelity_vs_reference"] = verdicts[name]


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


def _batches(runs: Sequence[tuple], indices: Sequence[int], size: int) -> list[list[int]]:
    """``indices`` in order, cut into batches of at most ``size`` runs of one policy each."""
    out: list[list[int]] = []
    for k in indices:
        if out and len(out[-1]) < size and runs[out[-1][0]][0] == runs[k][0]:
            out[-1].append(k)
        else:
            out.append([k])
    return out


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
