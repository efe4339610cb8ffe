"""rliable's aggregate statistics of the benchmark (Agarwal et al., NeurIPS 2021).

Pure numpy/scipy functions over *strata*: a sequence of 1-D arrays, one per stratum (in the runner
a stratum is one forget-set instance, its entries the episodes of the different seeds; with one
instance there is one stratum). Definitions:

- **IQM** (interquartile mean): the mean of the middle 50% of the pooled values,
  ``scipy.stats.trim_mean(x, 0.25)`` (⌊n/4⌋ values cut at each end; fewer than 4 values: the mean).
- **Stratified bootstrap**: one resample draws, within every stratum k separately, n_k of its n_k
  values with replacement, so every resample keeps the strata sizes (and the strata weights) of the
  data; with one stratum this is the plain bootstrap. The interval is the percentile interval of
  the statistic over ``reps`` resamples (rliable's default method).
- **Probability of improvement** P(X > Y): per stratum the Mann–Whitney U statistic of X against Y
  over n·m, i.e. the share of pairs (x_i, y_j) with x_i > y_j, ties counting 1/2; then the mean over
  the strata that both X and Y have. For a metric where lower is better, improvement is X < Y.
  Its interval resamples X and Y independently within each stratum (rliable's
  ``StratifiedIndependentBootstrap``).
- **Performance profile**: the fraction of episodes whose score exceeds τ (lower is better: falls
  below τ), per stratum, averaged over the strata, as a function of τ.

Randomness enters only through the ``rng`` argument (a ``numpy.random.Generator`` or a seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .stats import VERDICT_METRICS

if TYPE_CHECKING:
    from .config import BenchConfig
    from .record import EpisodeRecord

__all__ = [
    "Interval",
    "iqm",
    "mean",
    "stratified_bootstrap",
    "interval_estimate",
    "probability_of_improvement",
    "probability_of_improvement_interval",
    "performance_profile",
    "aggregate_statistics",
]


Strata = Sequence[Sequence[float] | np.ndarray]
"""One 1-D array of values per stratum."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided bootstrap interval (NaN where there was no data)."""

    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


NAN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"))


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean along ``axis``: ``scipy.stats.trim_mean(x, 0.25)``.

    Example: the IQM of 1, …, 8 is the mean of 3, 4, 5, 6 = 4.5.
    """
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)


def mean(x: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """The arithmetic mean along ``axis`` (a statistic for :func:`interval_estimate`)."""
    return np.mean(np.asarray(x, dtype=np.float64), axis=axis)


def _strata(strata: Strata) -> list[np.ndarray]:
    """The non-empty strata as float64 arrays."""
    out = [np.asarray(s, dtype=np.float64).reshape(-1) for s in strata]
    return [s for s in out if s.size > 0]


def stratified_bootstrap(strata: Strata, reps: int, rng: np.random.Generator | int = 0) -> np.ndarray:
    """(reps, N) resamples of the pooled values: each stratum's n_k values redrawn with replacement
    from that stratum only, the strata concatenated in order (N = Σ n_k)."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    rng = np.random.default_rng(rng)
    parts = [s[rng.integers(0, s.size, size=(reps, s.size))] for s in _strata(strata)]
    return np.concatenate(parts, axis=1) if parts else np.empty((reps, 0))


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(draws, [alpha, 100.0 - alpha])
    return float(lo), float(hi)


def interval_estimate(
    strata: Strata,
    statistic: Callable[..., np.ndarray] = iqm,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int = 0,
) -> Interval:
    """``statistic`` of the pooled values with its stratified-bootstrap percentile interval.

    Args:
        strata: one 1-D array per stratum.
        statistic: f(x, axis=-1) reducing the last axis (:func:`iqm`, :func:`mean`).
        reps: bootstrap resamples.
        confidence: coverage of the two-sided percentile interval.
        rng: the resampling generator (or its seed).
    """
    parts = _strata(strata)
    if not parts:
        return NAN_INTERVAL
    value = float(statistic(np.concatenate(parts), axis=-1))
    draws = statistic(stratified_bootstrap(parts, reps, rng), axis=-1)
    return Interval(value, *_percentiles(draws, confidence))


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R,) share of pairs with x > y (ties 1/2) for x (R, n) and y (R, m): U_x/(n·m), where
    U_x = (sum of x's average ranks in the pooled sample) − n(n+1)/2."""
    from scipy.stats import rankdata

    n, m = x.shape[-1], y.shape[-1]
    ranks = rankdata(np.concatenate([x, y], axis=-1), method="average", axis=-1)
    u = ranks[..., :n].sum(axis=-1) - n * (n + 1) / 2.0
    return u / (n * m)


def _paired_strata(x_strata: Strata, y_strata: Strata, higher_is_better: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(x_strata) != len(y_strata):
        raise ValueError(f"expected the same number of strata for X and Y, got {len(x_strata)} and {len(y_strata)}")
    sign = 1.0 if higher_is_better else -1.0
    pairs = []
    for xs, ys in zip(x_strata, y_strata):
        xs, ys = np.asarray(xs, np.float64).reshape(-1), np.asarray(ys, np.float64).reshape(-1)
        if xs.size and ys.size:
            pairs.append((sign * xs, sign * ys))
    return pairs


def probability_of_improvement(x_strata: Strata, y_strata: Strata, higher_is_better: bool = True) -> float:
    """P(X > Y) (lower is better: P(X < Y)), the Mann–Whitney U over n·m averaged over the strata.

    Example: X = (1, 2, 3), Y = (2, 2): of the 6 pairs, 3 > 2 twice (1 each) and 2 = 2 twice (1/2
    each), so P = (2 + 1)/6 = 0.5.
    """
    pairs = _paired_strata(x_strata, y_strata, higher_is_better)
    if not pairs:
        return float("nan")
    return float(np.mean([_improvement(x[None], y[None])[0] for x, y in pairs]))


def probability_of_improvement_interval(
    x_strata: Strata,
    y_strata: Strata,
    *,
    higher_is_better: bool = True,
    reps: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int = 0,
) -> Interval:
    """:func:`probability_of_improvement` with the percentile interval of a bootstrap that resamples
    X and Y independently within each stratum."""
    pairs = _paired_strata(x_strata, y_strata, higher_is_better)
    if not pairs:
        return NAN_INTERVAL
    value = float(np.mean([_improvement(x[None], y[None])[0] for x, y in pairs]))
    rng = np.random.default_rng(rng)
    draws = np.zeros(reps)
    for x, y in pairs:
        xb = stratified_bootstrap([x], reps, rng)
        yb = stratified_bootstrap([y], reps, rng)
        draws += _improvement(xb, yb)
    return Interval(value, *_percentiles(draws / len(pairs), confidence))


def performance_profile(
    strata: Strata,
    taus: np.ndarray,
    *,
    higher_is_better: bool = True,
    reps: int = 0,
    confidence: float = 0.95,
    rng: np.random.Generator | int = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The performance profile at thresholds ``taus`` (T,), with pointwise bootstrap bands.

    Returns:
        (profile, low, high), each (T,): the fraction of values > τ (lower is better: < τ) per
        stratum, averaged over the strata; low/high the stratified-bootstrap percentile band
        (None for ``reps`` = 0).
    """
    taus = np.asarray(taus, dtype=np.float64)
    parts = _strata(strata)
    if not parts:
        nan = np.full(taus.shape, np.nan)
        return nan, (nan if reps else None), (nan if reps else None)

    def fraction(x: np.ndarray) -> np.ndarray:  # x (R, n) → (R, T)
        hit = x[..., None] > taus if higher_is_better else x[..., None] < taus
        return hit.mean(axis=-2)

    profile = np.mean([fraction(s[None])[0] for s in parts], axis=0)
    if not reps:
        return profile, None, None
    rng = np.random.default_rng(rng)
    draws = np.mean([fraction(stratified_bootstrap([s], reps, rng)) for s in parts], axis=0)  # (R, T)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [alpha, 100.0 - alpha], axis=0)
    return profile, low, high


def aggregate_statistics(episodes: list[EpisodeRecord], names: list[str], config: BenchConfig) -> dict[str, dict]:
    """rliable's aggregates per policy, for each metric of :data:`VERDICT_METRICS` the episodes have.

    Returns:
        policy → {"iqm": {metric: interval}, "mean_bootstrap": {metric: interval},
        "prob_improvement": {metric: interval}}, each interval ``{value, ci_low, ci_high}`` at 95%
        from ``config.bootstrap_reps`` stratified-bootstrap resamples (strata: the instances);
        ``prob_improvement`` = P(policy better than ``config.reference``) (forget rate: lower is
        better), only for the other policies and only when the reference was benchmarked.
    """

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
            "iqm": {m: interval_estimate(strata(name, m), iqm, rng=rng(), **kw).as_dict() for m in metrics},
            "mean_bootstrap": {m: interval_estimate(strata(name, m), mean, rng=rng(), **kw).as_dict() for m in metrics},
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
