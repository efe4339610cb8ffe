"""The benchmark's statistics: of the episodes per policy and of pairs against the reference.

Over the episodes of each policy (:func:`summarize`, :func:`confidence_interval`): the mean and the
95% half-width of Student's t. Against the reference policy, paired over the (seed, instance)
episodes both ran (:func:`compare_with_reference`, :func:`spread_vs_reference`,
:func:`return_agreement`): the paired difference's interval, its verdict and Holm's correction over
the comparisons printed together; **paired spread** (:func:`paired_spread`): whether a policy's
values vary more over the seeds than the reference's on the same seeds (Pitman–Morgan test of two
paired variances). Of one evaluated model (:func:`sample_intervals`): exact binomial intervals over
its own samples. rliable's aggregates (IQM, stratified bootstrap, probability of improvement,
performance profiles) are in :mod:`unlearn_gym.bench.aggregates`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .curve import CURVE_METRICS

if TYPE_CHECKING:
    from .record import EpisodeRecord

__all__ = [
    "PairedSpread",
    "paired_spread",
    "SUMMARY_METRICS",
    "VERDICT_METRICS",
    "FIDELITY_METRICS",
    "SPREAD_METRIC",
    "confidence_interval",
    "paired_difference",
    "verdict",
    "compare_with_reference",
    "holm_adjust",
    "paired_p_value",
    "sample_intervals",
    "spread_vs_reference",
    "add_outcome_scores",
    "return_agreement",
    "worst_class_drop",
    "summarize",
]


@dataclass(frozen=True)
class PairedSpread:
    """How the spread of one policy's values over the seeds compares with a reference policy's on
    the same seeds: the Pitman–Morgan test for the equality of two paired variances."""

    sd: float
    """s_x: the sample standard deviation (ddof 1) of the policy's values."""
    reference_sd: float
    """s_y: the reference's, over the same (seed, instance) pairs."""
    ratio: float
    """s_x/s_y (inf where s_y = 0 < s_x, NaN where both are 0)."""
    p_value: float
    """Two-sided p of H₀: Var(X) = Var(Y) (NaN for fewer than 3 pairs or no spread in either)."""
    n: int
    """Pairs."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_spread(x: Sequence[float], y: Sequence[float]) -> PairedSpread:
    """Pitman–Morgan test (Pitman 1939, Morgan 1939) of Var(X) = Var(Y) for paired samples.

    For pairs (x_i, y_i), Var(X) = Var(Y) exactly when the sums S = X + Y and differences
    D = X − Y are uncorrelated (Cov(S, D) = Var(X) − Var(Y)); so with r the sample correlation of
    S and D, t = r·√(n − 2)/√(1 − r²) follows Student's t with n − 2 degrees of freedom under H₀
    (bivariate normal pairs). Non-finite pairs are dropped first.
    """
    from scipy.stats import t as student_t

    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_spread: expected equal lengths, got {len(a)} and {len(b)}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    nan = float("nan")
    if n < 2:
        return PairedSpread(nan, nan, nan, nan, n)
    sx, sy = float(a.std(ddof=1)), float(b.std(ddof=1))
    ratio = sx / sy if sy > 0 else (float("inf") if sx > 0 else nan)
    s, d = a + b, a - b
    if n < 3 or (sx == 0 and sy == 0):
        return PairedSpread(sx, sy, ratio, nan, n)
    if s.std() == 0 or d.std() == 0:  # Y = c ± X: the variances are equal exactly
        return PairedSpread(sx, sy, ratio, 1.0, n)
    r = float(np.clip(np.corrcoef(s, d)[0, 1], -1.0, 1.0))
    if abs(r) == 1.0:
        return PairedSpread(sx, sy, ratio, 0.0, n)
    t = r * np.sqrt(n - 2) / np.sqrt(1.0 - r * r)
    return PairedSpread(sx, sy, ratio, float(2.0 * student_t.sf(abs(t), n - 2)), n)


# -- the episodes' statistics ------------------------------------------------------------------

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
    *CURVE_METRICS,
)
"""The record entries each policy's summary holds as {mean, ci95, n} (:func:`summarize`), where its episodes have them."""

VERDICT_METRICS = {"return": +1, "adjusted_forget_rate": -1, "forget_rate": -1, "retain_accuracy": +1, **CURVE_METRICS}
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


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of mean(a_i − b_i) = 0 (the test behind
    :func:`paired_difference`'s interval: the interval excludes 0 exactly when p < 1 − confidence).

    Differences with no spread: 1 when they are all 0, 0 otherwise; NaN for fewer than 2 pairs.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return float("nan")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(d, 0.0).pvalue)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of m p-values (family-wise error rate ≤ α when each adjusted p is
    compared with α): with p_(1) ≤ … ≤ p_(m), p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)), returned
    in the input's order. NaN p-values stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for j, idx in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[idx]))
        out[idx] = running
    return out


def compare_with_reference(
    episodes: list[dict], names: list[str], reference: str | None, metrics: Mapping[str, int] = VERDICT_METRICS
) -> dict[str, dict]:
    """policy → metric → {diff, ci95, verdict, p, p_holm, verdict_holm}: each policy against
    ``reference`` at 95%, paired over the (seed, instance) episodes both ran; {} when the reference
    was not benchmarked. ``metrics``: metric → sign of "better" (+1 higher, −1 lower, 0 none).

    ``verdict`` is per comparison (uncorrected); ``p_holm`` is the paired t-test's p-value after
    Holm's adjustment over every (policy, metric) comparison of this call (the family the report
    prints together), and ``verdict_holm`` the verdict that survives it ("indistinguishable" where
    p_holm ≥ 0.05)."""
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
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            diff, half = paired_difference(a, b)
            out[name][metric] = {
                "diff": diff,
                "ci95": half,
                "verdict": verdict(diff, half, sign > 0 if sign else None),
                "p": paired_p_value(a, b),
            }
    cells = [c for v in out.values() for c in v.values()]
    for cell, p_holm in zip(cells, holm_adjust([c["p"] for c in cells])):
        cell["p_holm"] = float(p_holm)
        cell["verdict_holm"] = cell["verdict"] if p_holm < 0.05 else "indistinguishable"
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
    episodes: list[EpisodeRecord], names: list[str], reference: str | None, metric: str = SPREAD_METRIC
) -> dict[str, dict]:
    """policy → :class:`PairedSpread` (as a dict) of ``metric`` against
    ``reference``, paired over the (seed, instance) episodes both ran; {} without the reference.

    A policy whose values vary over the seeds more than the reference's at 95% has a spread of its
    own (a random λ, an agent whose outcome depends on the seed): its interval narrows with more
    seeds, not with a finer evaluation.
    """
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


def add_outcome_scores(episodes: list[EpisodeRecord], pretrained: dict, contaminated_label: int, beta: float) -> None:
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


def return_agreement(episodes: list[EpisodeRecord], names: list[str]) -> list[dict]:
    """Whether the return ranks the policies as their sampled outcomes do, pair by pair.

    The outcome is the damage-adjusted forget rate F + β·D⁺ of the bench's evaluation
    (:func:`add_outcome_scores`): the forget rate at equal retain damage, with damage charged at the
    env's own exchange rate β. For each pair (a, b) of policies, paired over the (seed, instance)
    episodes both ran: a's outcome is better than b's at 95% when the paired interval of its
    adjusted forget rate minus b's lies below 0. For each such pair: ``agrees`` = a's mean return is
    higher than b's. (The return comes from the env's own probe, fixed at reset and smaller; the
    outcome from the bench's independent evaluation samples.)

    Every pair tested is one comparison of a family: ``p`` is the paired t-test's p-value of the
    adjusted forget rate and ``p_holm`` its Holm adjustment over all the pairs tested
    (``pairs_tested``), so ``differs_holm`` says whether the pair still differs after the correction.

    Returns:
        One ``{"better", "worse", "adjusted_forget_rate", "forget_rate", "retain_accuracy", "damage",
        "return", "agrees", "p", "p_holm", "differs_holm", "pairs_tested"}`` per pair whose outcomes
        differ at 95% uncorrected (each paired difference better − worse as {diff, ci95}).
    """
    key = lambda e: (e["seed"], e["instance"])  # noqa: E731
    by_name = {n: {key(e): e for e in episodes if e["policy"] == n} for n in names}
    metrics = ("adjusted_forget_rate", "forget_rate", "retain_accuracy", "damage", "return")
    tested = []  # (a, b, cells, p of the adjusted forget rate)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = [k for k in by_name[a] if k in by_name[b]]
            cells, p_outcome = {}, float("nan")
            for metric in metrics:
                pairs = [(by_name[a][k].get(metric), by_name[b][k].get(metric)) for k in common]
                pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
                if len(pairs) < 2:
                    break
                diff, half = paired_difference([p[0] for p in pairs], [p[1] for p in pairs])
                cells[metric] = {"diff": diff, "ci95": half}
                if metric == "adjusted_forget_rate":
                    p_outcome = paired_p_value([p[0] for p in pairs], [p[1] for p in pairs])
            if len(cells) == len(metrics):
                tested.append((a, b, cells, p_outcome))
    p_holm = holm_adjust([t[3] for t in tested])
    out = []
    for (a, b, cells, p), p_adj in zip(tested, p_holm):
        outcome = verdict(cells["adjusted_forget_rate"]["diff"], cells["adjusted_forget_rate"]["ci95"], False)
        if outcome == "indistinguishable":
            continue
        better, worse, sign = (a, b, 1.0) if outcome == "better" else (b, a, -1.0)
        flipped = {m: {"diff": sign * c["diff"], "ci95": c["ci95"]} for m, c in cells.items()}
        out.append(
            {"better": better, "worse": worse, **flipped, "agrees": flipped["return"]["diff"] > 0, "p": p}
            | {"p_holm": float(p_adj), "differs_holm": bool(p_adj < 0.05), "pairs_tested": len(tested)}
        )
    return out


def worst_class_drop(pretrained: dict, rows: list[EpisodeRecord], contaminated_label: int) -> dict:
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


def summarize(
    episodes: list[EpisodeRecord],
    names: list[str],
    pretrained: dict | None,
    contaminated_label: int | None,
    robustness: bool = False,
) -> dict[str, dict]:
    """policy → its summary over its episodes: metric → {mean, ci95, n} for :data:`SUMMARY_METRICS`
    (:func:`confidence_interval`), ``diverged`` (the number of episodes that diverged), ``worst_class``
    (:func:`worst_class_drop`, with the pretrained evaluation and per-label accuracies) and, with
    ``robustness``, ``robustness`` (figure → {mean, ci95, n}; n: the episodes with a finite figure, for
    the steps to half those that regained)."""
    summary = {}
    for name in names:
        rows = [e for e in episodes if e["policy"] == name]
        summary[name] = {}
        for metric in SUMMARY_METRICS:
            if metric in rows[0]:
                centre, half = confidence_interval([r[metric] for r in rows])
                summary[name][metric] = {"mean": centre, "ci95": half, "n": len(rows)}
        summary[name]["diverged"] = sum(r["diverged"] for r in rows)
        for reached in ("reached_half", "reached_tenth"):
            if reached in rows[0]:
                summary[name][reached] = sum(bool(r[reached]) for r in rows)
        if pretrained is not None and "per_label_accuracy" in rows[0]:
            summary[name]["worst_class"] = worst_class_drop(pretrained, rows, contaminated_label)
        if robustness:
            summary[name]["robustness"] = {}
            for metric in rows[0]["robustness"]["summary"]:
                values = [r[metric] for r in rows]
                centre, half = confidence_interval(values)
                n = sum(v is not None and bool(np.isfinite(v)) for v in values)
                summary[name]["robustness"][metric] = {"mean": centre, "ci95": half, "n": n}
    return summary
