"""The benchmark: λ-policies and agents × seeds × instances on one env, on equal terms.

:func:`run_benchmark` runs every policy's episodes and evaluates each unlearned model;
:func:`write_report` writes ``bench.md``, ``bench.csv``, ``bench.json`` and the plots. The
package's modules, each with one job (every import points down this list):

- :mod:`~unlearn_gym.bench.runner`: :func:`run_benchmark`, the bookkeeping of the episodes' outcomes;
- :mod:`~unlearn_gym.bench.report` and :mod:`~unlearn_gym.bench.plots`: ``bench.md`` and
  ``--json`` (:func:`to_markdown`, :func:`json_summary`, :func:`write_report`), the PNG plots;
- :mod:`~unlearn_gym.bench.ray_backend` and :mod:`~unlearn_gym.bench.workers`: the episodes on Ray
  actors, in worker processes;
- :mod:`~unlearn_gym.bench.robustness`: the attacks of ``--robustness`` on each unlearned model;
- :mod:`~unlearn_gym.bench.episodes`: :class:`EpisodeRunner`, one policy's episodes on the env (or N
  at a time on the vector env), each evaluated;
- :mod:`~unlearn_gym.bench.record`: the episode record between the runner and the report, the
  episode log (:data:`EPISODE_LOG`, :func:`read_episode_log`);
- :mod:`~unlearn_gym.bench.recording`: every episode's steps as Minari datasets;
- :mod:`~unlearn_gym.bench.stats`: the statistics (Student-t intervals, paired verdicts, Holm's correction);
- :mod:`~unlearn_gym.bench.aggregates`: rliable's aggregates (IQM, stratified bootstrap, probability of improvement);
- :mod:`~unlearn_gym.bench.config`: :class:`BenchConfig` and the main job's settings.

This module re-exports the names its callers use.
"""

from ..policy_specs import policy_from_spec, policy_name  # the registry sits above baselines/ and agents/
from .aggregates import aggregate_statistics
from .config import BENCH_ENV_KWARGS, BENCH_SEEDS, DEFAULT_POLICIES, BenchConfig
from .episodes import EpisodeRunner
from .record import EPISODE_LOG, EpisodeOutcome, EpisodeRecord, read_episode_log
from .report import json_summary, task_set_markdown, to_markdown, write_report, write_task_set_report
from .runner import fidelity_by_episode, run_benchmark
from .stats import (
    FIDELITY_METRICS,
    SPREAD_METRIC,
    SUMMARY_METRICS,
    VERDICT_METRICS,
    add_outcome_scores,
    compare_with_reference,
    confidence_interval,
    holm_adjust,
    paired_difference,
    paired_p_value,
    return_agreement,
    sample_intervals,
    spread_vs_reference,
    verdict,
    worst_class_drop,
)

__all__ = [
    "BENCH_ENV_KWARGS",
    "BENCH_SEEDS",
    "DEFAULT_POLICIES",
    "EPISODE_LOG",
    "FIDELITY_METRICS",
    "SPREAD_METRIC",
    "SUMMARY_METRICS",
    "VERDICT_METRICS",
    "BenchConfig",
    "EpisodeOutcome",
    "EpisodeRecord",
    "EpisodeRunner",
    "add_outcome_scores",
    "aggregate_statistics",
    "compare_with_reference",
    "holm_adjust",
    "paired_p_value",
    "confidence_interval",
    "fidelity_by_episode",
    "json_summary",
    "paired_difference",
    "policy_from_spec",
    "policy_name",
    "read_episode_log",
    "return_agreement",
    "run_benchmark",
    "sample_intervals",
    "spread_vs_reference",
    "task_set_markdown",
    "to_markdown",
    "verdict",
    "worst_class_drop",
    "write_report",
    "write_task_set_report",
]
