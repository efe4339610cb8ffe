import numpy as np
import pytest

from unlearn_gym.bench.aggregates import (
    interval_estimate,
    iqm,
    mean,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_interval,
    stratified_bootstrap,
)
from unlearn_gym.bench.stats import paired_spread


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1, 9)) == 4.5  # mean of 3, 4, 5, 6
    assert iqm(np.array([8, 1, 7, 2, 6, 3, 5, 4])) == 4.5  # order does not matter
    assert iqm(np.array([1.0, 2.0, 9.0])) == 4.0  # fewer than 4 values: nothing cut, the mean
    assert iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0])) == 2.0  # ⌊5/4⌋ = 1 cut at each end: (1 + 2 + 3)/3


def test_probability_of_improvement_counts_ties_as_half():
    from scipy.stats import mannwhitneyu

    # X = (1, 2, 3), Y = (2, 2): 3 > 2 twice (1 each), 2 = 2 twice (1/2 each), 1 < 2 twice (0): 3/6
    assert probability_of_improvement([[1, 2, 3]], [[2, 2]]) == 0.5
    # X = (3, 3), Y = (1, 3): 3 > 1 twice, 3 = 3 twice: (2 + 1)/4
    assert probability_of_improvement([[3, 3]], [[1, 3]]) == 0.75
    # lower is better: P(X < Y) = (0 + 2·1/2)/4
    assert probability_of_improvement([[3, 3]], [[1, 3]], higher_is_better=False) == 0.25
    assert probability_of_improvement([[1, 2]], [[1, 2]]) == 0.5  # the same values: a coin toss
    x, y = np.random.default_rng(0).integers(0, 4, 9), np.random.default_rng(1).integers(0, 4, 6)
    u = mannwhitneyu(x, y, alternative="greater").statistic
    assert probability_of_improvement([x], [y]) == pytest.approx(u / (9 * 6))
    # averaged over the strata: 1 in the first, 0 in the second; an empty stratum is skipped
    assert probability_of_improvement([[2], [0], []], [[1], [1], [5]]) == 0.5
    with pytest.raises(ValueError, match="expected the same number of strata"):
        probability_of_improvement([[1]], [[1], [2]])


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=10), rng.normal(size=1000)
    widths = []
    for x in (small, large):
        for statistic in (iqm, mean):
            ci = interval_estimate([x], statistic, reps=2000, rng=1)
            assert ci.ci_low <= ci.value <= ci.ci_high and ci.value == pytest.approx(float(statistic(x)))
        widths.append(ci.ci_high - ci.ci_low)
    assert widths[1] < widths[0] / 4  # ~1/√100 = 1/10 of the width
    # seeded: the same interval again; another seed, another one
    assert interval_estimate([small], reps=500, rng=3) == interval_estimate([small], reps=500, rng=3)
    assert interval_estimate([small], reps=500, rng=3) != interval_estimate([small], reps=500, rng=4)
    assert np.isnan(interval_estimate([[], []]).value)
    with pytest.raises(ValueError, match="reps must be >= 1"):
        stratified_bootstrap([small], reps=0)
    poi = probability_of_improvement_interval([small + 0.5], [small], reps=500, rng=0)
    assert 0.0 <= poi.ci_low <= poi.value <= poi.ci_high <= 1.0 and poi.value > 0.5


def test_stratified_bootstrap_keeps_the_strata_sizes():
    low, high = np.arange(5.0), 100.0 + np.arange(5.0)  # two strata with very different means
    draws = stratified_bootstrap([low, high], reps=1000, rng=0)
    assert draws.shape == (1000, 10)
    assert np.all((draws < 50).sum(axis=1) == 5)  # every resample: 5 from each stratum
    # so the mean stays within (mean of 5 of 0..4 + mean of 5 of 100..104)/2 ∈ [50, 54] ...
    ci = interval_estimate([low, high], mean, reps=1000, rng=0)
    assert ci.value == 52.0 and 50.0 <= ci.ci_low < ci.ci_high <= 54.0
    # ... where the unstratified bootstrap of the pooled values mixes the strata and spreads far wider
    pooled = interval_estimate([np.concatenate([low, high])], mean, reps=1000, rng=0)
    assert pooled.ci_high - pooled.ci_low > 5 * (ci.ci_high - ci.ci_low)


def test_performance_profile_hand_computed():
    x, taus = [1.0, 2.0, 3.0, 4.0], np.array([0.0, 2.0, 5.0])
    profile, low, high = performance_profile([x], taus)
    assert profile.tolist() == [1.0, 0.5, 0.0] and low is None and high is None  # share of x > τ
    profile, _, _ = performance_profile([x], taus, higher_is_better=False)
    assert profile.tolist() == [0.0, 0.25, 1.0]  # share of x < τ
    # two strata count equally however many episodes each has: (1/2 + 1)/2 at τ = 1.5
    profile, low, high = performance_profile([[1.0, 2.0], [3.0, 4.0, 5.0, 6.0]], np.array([1.5]), reps=200, rng=0)
    assert profile.tolist() == [0.75] and low[0] <= 0.75 <= high[0]


def test_paired_spread_is_the_pitman_morgan_test():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = 0.5 * x + rng.normal(scale=0.2, size=12)  # correlated with x, smaller spread
    out = paired_spread(3.0 * x, y)
    # the same t from the variance ratio F = s_x²/s_y² and the correlation r_xy of the pairs:
    # t = (F − 1)·√(n − 2) / (2·√(F·(1 − r_xy²)))
    a, b = 3.0 * x, y
    f = a.var(ddof=1) / b.var(ddof=1)
    r = np.corrcoef(a, b)[0, 1]
    t = (f - 1.0) * np.sqrt(10) / (2.0 * np.sqrt(f * (1.0 - r * r)))
    from scipy.stats import t as student_t

    assert out.p_value == pytest.approx(2 * student_t.sf(abs(t), 10), rel=1e-9)
    assert out.ratio == pytest.approx(a.std(ddof=1) / b.std(ddof=1)) and out.n == 12 and out.p_value < 0.001
    # equal spread by construction (y a shifted copy of x): r(S, D) = 0, p = 1
    same = paired_spread([1.0, 2.0, 4.0, 7.0], [11.0, 12.0, 14.0, 17.0])
    assert same.ratio == 1.0 and same.p_value == pytest.approx(1.0)
    # no spread in either: no test; NaN pairs are dropped
    assert np.isnan(paired_spread([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]).p_value)
    assert paired_spread([1.0, 2.0, float("nan"), 4.0], [1.0, 2.0, 3.0, 5.0]).n == 3
    with pytest.raises(ValueError, match="expected equal lengths, got 2 and 3"):
        paired_spread([1.0, 2.0], [1.0, 2.0, 3.0])
