"""The benchmark: λ-policies and agents × seeds × instances on one env, on equal terms.

:func:`run_benchmark` runs every policy's episodes and evaluates each unlearned model;
:func:`write_report` writes ``bench.md``, ``bench.csv``, ``bench.json`` and the plots. The
package's modules, each with one job:

- :mod:`~unlearn_gym.bench.runner`: :class:`BenchConfig`, :class:`EpisodeRunner`, :func:`run_benchmark`;
- :mod:`~unlearn_gym.bench.stats`: the statistics (Student-t intervals, paired verdicts, rliable's aggregates) and the report;
- :mod:`~unlearn_gym.bench.ray_backend`: episodes on Ray actors;
- :mod:`~unlearn_gym.bench.workers`: the worker-process pool of ``--workers``;
- :mod:`~unlearn_gym.bench.recording`: every episode's steps as Minari datasets.

This module re-exports the names its callers use.
"""

from ..policy_specs import policy_from_spec, policy_name  # the registry sits above baselines/ and agents/
from .runner import (
    BENCH_ENV_KWARGS,
    BENCH_SEEDS,
    DEFAULT_POLICIES,
    EPISODE_LOG,
    FIDELITY_METRICS,
    SPREAD_METRIC,
    SUMMARY_METRICS,
    VERDICT_METRICS,
    BenchConfig,
    EpisodeRunner,
    add_outcome_scores,
    aggregate_statistics,
    compare_with_reference,
    confidence_interval,
    fidelity_by_episode,
    json_summary,
    paired_difference,
    read_episode_log,
    return_agreement,
    run_benchmark,
    sample_intervals,
    spread_vs_reference,
    to_markdown,
    verdict,
    worst_class_drop,
    write_report,
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
    "EpisodeRunner",
    "add_outcome_scores",
    "aggregate_statistics",
    "compare_with_reference",
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
    "to_markdown",
    "verdict",
    "worst_class_drop",
    "write_report",
]
