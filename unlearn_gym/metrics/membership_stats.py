"""Membership inference, the statistics: how well scores separate members from non-members (DESIGN §13).

Given scores s of members (training images) and non-members (held-out images), higher meaning
more member-like (see :mod:`~unlearn_gym.metrics.membership` for the attacks that compute them):
the ROC AUC (Mann–Whitney U / (n₁ n₀), ties counted half) and the TPR at 1% FPR (the threshold is
the largest one whose FPR on the non-member scores is ≤ 1%), each with a percentile bootstrap
interval (members and non-members resampled separately). After perfect unlearning the forget AUC
is 0.5; below 0.5 the forget images stand out by being *worse* denoised than unseen ones (another
trace of the unlearning).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AttackResult", "attack_figures", "bootstrap_interval", "roc_auc", "tpr_at_fpr"]


def _scores_pair(members, nonmembers) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(members, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmembers, dtype=np.float64).reshape(-1)
    if len(m) == 0 or len(n) == 0:
        raise ValueError(f"expected at least one member and one non-member score, got {len(m)} and {len(n)}")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise ValueError("expected finite scores, got NaN or infinite ones")
    return m, n


def roc_auc(member_scores, nonmember_scores) -> float:
    """ROC AUC of "member if score > τ": the Mann–Whitney U statistic over n₁ n₀, ties counted half.

    AUC = (1/(n₁ n₀)) Σ_i Σ_j [1(m_i > n_j) + ½·1(m_i = n_j)], the probability that a random
    member scores above a random non-member.

    Args:
        member_scores: (n₁,) scores of members (higher = more member-like).
        nonmember_scores: (n₀,) scores of non-members.
    """
    m, n = _scores_pair(member_scores, nonmember_scores)
    n_sorted = np.sort(n)
    below = np.searchsorted(n_sorted, m, side="left")  # non-members strictly below each member
    equal = np.searchsorted(n_sorted, m, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(m) * len(n)))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01) -> float:
    """True-positive rate of "member if score > τ" at the lowest τ whose FPR is ≤ ``fpr``, exactly.

    With non-member scores sorted descending s₍₁₎ ≥ s₍₂₎ ≥ … and k = ⌊fpr·n₀⌋ false positives
    allowed, τ = s₍ₖ₊₁₎ (so #{n_j > τ} ≤ k, and every lower τ lets k + 1 through); TPR =
    #{m_i > τ}/n₁. With fewer than 1/fpr non-members, k = 0: the TPR at 0% FPR (members strictly
    above every non-member). No interpolation between ROC points.

    Args:
        member_scores: (n₁,) scores of members.
        nonmember_scores: (n₀,) scores of non-members.
        fpr: the false-positive-rate bound, in [0, 1).
    """
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    m, n = _scores_pair(member_scores, nonmember_scores)
    k = min(int(math.floor(fpr * len(n) + 1e-9)), len(n) - 1)
    tau = np.sort(n)[::-1][k]
    return float((m > tau).mean())


def bootstrap_interval(
    member_scores,
    nonmember_scores,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(members, nonmembers)``.

    Members and non-members are resampled separately, with replacement, at their own sizes
    (a stratified bootstrap); the interval is the (1 ∓ confidence)/2 quantiles of the
    ``resamples`` statistics.

    Args:
        member_scores: (n₁,) scores.
        nonmember_scores: (n₀,) scores.
        statistic: e.g. :func:`roc_auc` or ``lambda m, n: tpr_at_fpr(m, n, 0.01)``.
        resamples: number of bootstrap resamples (≥ 1).
        confidence: coverage in (0, 1).
        rng: the only source of randomness.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    m, n = _scores_pair(member_scores, nonmember_scores)
    stats = np.empty(resamples)
    for b in range(resamples):
        stats[b] = statistic(m[rng.integers(0, len(m), len(m))], n[rng.integers(0, len(n), len(n))])
    lo, hi = np.quantile(stats, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


@dataclass(frozen=True)
class AttackResult:
    """How well one attack separates one pair of member and non-member sets."""

    auc: float
    """ROC AUC (0.5: no better than chance; NaN when some score is not finite)."""
    auc_ci: tuple[float, float]
    """Bootstrap interval of ``auc`` at the configured confidence (95%)."""
    tpr: float
    """TPR at ``fpr`` (see :func:`tpr_at_fpr`)."""
    tpr_ci: tuple[float, float]
    """Bootstrap interval of ``tpr``."""
    fpr: float
    """The FPR bound of ``tpr`` (0.01)."""
    n_members: int
    """Number of member scores."""
    n_nonmembers: int
    """Number of non-member scores."""
    member_scores: np.ndarray = field(repr=False)
    """(n_members,) float64 scores (higher = more member-like)."""
    nonmember_scores: np.ndarray = field(repr=False)
    """(n_nonmembers,) float64 scores."""

    def to_dict(self) -> dict:
        """JSON-able figures (NaN as None), with the mean score of each side; without the scores."""

        def f(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "auc": f(self.auc),
            "auc_ci95": [f(v) for v in self.auc_ci],
            "tpr": f(self.tpr),
            "tpr_ci95": [f(v) for v in self.tpr_ci],
            "fpr": self.fpr,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "member_score_mean": f(float(np.mean(self.member_scores))),
            "nonmember_score_mean": f(float(np.mean(self.nonmember_scores))),
        }


def attack_figures(
    member_scores,
    nonmember_scores,
    *,
    fpr: float = 0.01,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> AttackResult:
    """AUC and TPR at ``fpr`` with their bootstrap intervals (NaN figures when a score is not finite).

    Args:
        member_scores: (n₁,) scores of members (higher = more member-like).
        nonmember_scores: (n₀,) scores of non-members.
        fpr: FPR bound of the TPR.
        resamples: bootstrap resamples.
        confidence: coverage of the intervals.
        rng: source of the bootstrap resamples.
    """
    m = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    nan = float("nan")
    if len(m) and len(n) and not (np.isfinite(m).all() and np.isfinite(n).all()):  # e.g. a diverged model
        return AttackResult(nan, (nan, nan), nan, (nan, nan), fpr, len(m), len(n), m, n)

    def tpr_stat(a: np.ndarray, b: np.ndarray) -> float:
        return tpr_at_fpr(a, b, fpr)

    return AttackResult(
        auc=roc_auc(m, n),
        auc_ci=bootstrap_interval(m, n, roc_auc, resamples=resamples, confidence=confidence, rng=rng),
        tpr=tpr_at_fpr(m, n, fpr),
        tpr_ci=bootstrap_interval(m, n, tpr_stat, resamples=resamples, confidence=confidence, rng=rng),
        fpr=fpr,
        n_members=len(m),
        n_nonmembers=len(n),
        member_scores=m,
        nonmember_scores=n,
    )
