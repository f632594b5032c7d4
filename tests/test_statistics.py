"""The statistics that decide every PASS/FAIL of proofs_numerics/, on synthetic inputs with known answers.

Coverage claims are checked exactly where they can be (the Clopper-Pearson interval by summing the
binomial law over every outcome) and by simulation otherwise (a fixed NumPy seed, enough repetitions
that the binomial error of the coverage estimate is ~0.5%).
"""

import math

import numpy as np
import pytest
from scipy import stats

from colora_jax import statistics as st

# ----------------------------------------------------------------------------- grids


def test_geometric_integers_unit_steps_where_small_relative_steps_where_large():
    assert st.geometric_integers(4.72, 10.4) == [5, 6, 7, 8, 9, 10]
    big = st.geometric_integers(76, 170, ratio=1.05)
    assert big[0] == 76 and big[-1] <= 170
    steps = np.diff(big) / np.asarray(big[:-1])
    assert np.all(steps <= 0.05 + 1 / 76) and np.all(steps > 0)
    assert st.geometric_integers(0.2, 3, minimum=2) == [2, 3]
    with pytest.raises(ValueError):
        st.geometric_integers(1, 2, ratio=1.0)


def test_sample_grid_is_increasing_and_respects_minimum():
    g = st.sample_grid(4, 2.0, 0.5, 4.0, 6)
    assert g[0] == 4 and all(b > a for a, b in zip(g, g[1:]))


def test_integer_floor():
    assert st.integer_floor(20.0) == 1.0
    assert st.integer_floor(2.18) == pytest.approx(3 / 2.18)
    assert st.integer_floor(4.72) == pytest.approx(5 / 4.72)


# ----------------------------------------------------------------------------- thresholds


def test_trial_thresholds_first_success_never_and_nonmonotone():
    grid = [5, 6, 7, 8]
    success = [
        [0, 0, 1, 1],  # threshold 7
        [0, 0, 0, 0],  # never: inf
        [1, 1, 1, 1],  # at once: 5
        [0, 1, 0, 1],
    ]  # 6, and fails at 7: nonmonotone
    th = st.trial_thresholds(grid, success)
    assert th.values.tolist() == [7, math.inf, 5, 6]
    assert th.nonmonotone.tolist() == [3]
    with pytest.raises(ValueError):
        st.trial_thresholds([5, 5], [[0, 1]])
    with pytest.raises(ValueError):
        st.trial_thresholds([5, 6], [[0, 1, 1]])


def test_thresholds_recover_the_success_curve():
    """P(threshold <= n) is the success rate at n for monotone trials (the reason n50 is their median)."""
    rng = np.random.default_rng(0)
    grid = np.arange(5, 25)
    true = rng.integers(8, 20, size=200)
    success = grid[None, :] >= true[:, None]
    th = st.trial_thresholds(grid, success)
    assert th.nonmonotone.size == 0
    np.testing.assert_array_equal(th.values, true)
    rate = success.mean(axis=0)
    n50 = st.median_interval(th.values).median
    assert n50 == grid[np.argmax(rate >= 0.5)]  # the smallest n with at least half recovered


def test_order_statistic_ranks_known_values():
    assert st.order_statistic_ranks(50) == (18, 33)
    assert st.order_statistic_ranks(6) == (1, 6)
    assert st.order_statistic_ranks(5) is None
    for count in (10, 30, 40, 100):
        lo, hi = st.order_statistic_ranks(count)
        cover = stats.binom.cdf(hi - 1, count, 0.5) - stats.binom.cdf(lo - 1, count, 0.5)
        assert cover >= 0.95  # P(l <= B < u): the interval's exact coverage for continuous data
        # and the ranks are the tightest symmetric ones with that coverage
        cover_tighter = stats.binom.cdf(hi - 2, count, 0.5) - stats.binom.cdf(lo, count, 0.5)
        assert cover_tighter < 0.95


def test_median_interval_small_samples_and_infinities():
    m = st.median_interval([3.0, 1.0, 2.0])
    assert (m.median, m.low, m.high) == (2.0, -math.inf, math.inf)
    vals = np.r_[np.full(30, 7.0), np.full(20, np.inf)]  # 60% recover at 7, the rest never
    m = st.median_interval(vals)
    assert m.median == 7.0 and m.low == 7.0 and m.high == math.inf  # u = 33 > 30 finite values
    assert st.median_interval(np.full(50, np.inf)).median == math.inf
    with pytest.raises(ValueError):
        st.median_interval([1.0, np.nan])


@pytest.mark.parametrize("discrete", [False, True])
def test_median_interval_covers_the_true_median(discrete):
    """Coverage >= 95% (up to simulation error) for continuous and for grid-valued (discrete) thresholds."""
    rng = np.random.default_rng(1)
    reps, count, hits = 4000, 40, 0
    for _ in range(reps):
        x = rng.lognormal(2.0, 0.3, size=count)
        true = math.exp(2.0)
        if discrete:  # thresholds on an integer grid: the population median of ceil(X) is ceil(e^2) = 8
            x, true = np.ceil(x), math.ceil(math.exp(2.0))
        m = st.median_interval(x)
        hits += m.low <= true <= m.high
    assert hits / reps >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / reps)


def test_median_ratio_interval_covers_and_is_conservative():
    rng = np.random.default_rng(2)
    reps, hits = 2000, 0
    for _ in range(reps):
        a, b = rng.lognormal(math.log(12.0), 0.2, 40), rng.lognormal(math.log(4.0), 0.2, 40)
        r = st.median_ratio_interval(a, b)
        hits += r.low <= 3.0 <= r.high
    assert hits / reps >= 0.95


# ----------------------------------------------------------------------------- binomial


def test_clopper_pearson_exact_coverage_for_every_p():
    """Coverage summed exactly over all outcomes of Binomial(t, p) is >= 95% for every p on a fine grid."""
    for t in (10, 30, 50):
        s = np.arange(t + 1)
        lo, hi = st.binomial_interval(s, t)
        for p in np.linspace(0.001, 0.999, 199):
            cover = np.sum(stats.binom.pmf(s, t, p) * ((lo <= p) & (p <= hi)))
            assert cover >= 0.95 - 1e-12, (t, p, cover)


def test_clopper_pearson_known_values_and_edges():
    lo, hi = st.binomial_interval([0, 10], 10)
    assert lo[0] == 0.0 and hi[1] == 1.0
    assert hi[0] == pytest.approx(1 - 0.025 ** (1 / 10))  # (1 - a/2)-quantile of Beta(1, 10)
    assert lo[1] == pytest.approx(0.025 ** (1 / 10))
    lo, hi = st.binomial_interval(25, 50)
    assert lo == pytest.approx(1 - hi)  # symmetric at s = t / 2
    assert 2 * 1.96 * math.sqrt(0.25 / 50) < hi - lo < 1.1 * 2 * 1.96 * math.sqrt(0.25 / 50)  # a bit wider than Wald


# ----------------------------------------------------------------------------- fits, rates, crossings


def test_loglog_fit_exact_power_law_and_interval_coverage():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    f = st.loglog_fit(x, 3.0 * x**-0.5)
    assert f.slope == pytest.approx(-0.5) and f.intercept == pytest.approx(math.log10(3.0))
    assert f.low == pytest.approx(-0.5) and f.high == pytest.approx(-0.5)
    rng = np.random.default_rng(3)
    reps, hits = 2000, 0
    for _ in range(reps):
        y = 3.0 * x**-0.5 * 10 ** rng.normal(0, 0.05, x.size)
        g = st.loglog_fit(x, y)
        hits += g.low <= -0.5 <= g.high
    assert abs(hits / reps - 0.95) < 3 * math.sqrt(0.05 * 0.95 / reps)
    two = st.loglog_fit([1, 10], [1, 10])
    assert two.slope == pytest.approx(1.0) and math.isnan(two.low)


def test_contraction_ignores_the_plateau_and_the_floor():
    rate = 0.6
    linear = 1e-1 * rate ** np.arange(60.0)
    curve = np.r_[np.full(25, 0.3), linear, np.full(20, 1e-16)]  # plateau, linear phase, float floor
    assert st.contraction(curve, (1e-13, 1e-1)) == pytest.approx(rate, rel=1e-9)
    assert math.isnan(st.contraction(np.full(10, 0.5), (1e-12, 1e-1)))


def test_crossing_linear_interpolation():
    x = [0.0, 0.1, 0.2, 0.4]
    a = [0.1, 0.2, 0.3, 0.5]  # rises
    b = [0.25, 0.25, 0.25, 0.25]
    assert st.crossing(x, a, b) == pytest.approx(0.15)
    assert math.isnan(st.crossing(x, b, np.full(4, 1.0)))
    assert math.isnan(st.crossing([0, 1], [0, 1], [0, 0]))  # starting equal is not starting below


def test_decide():
    assert st.decide(1.0, 1.2, upper=1.2) == "holds"
    assert st.decide(1.0, 1.3, upper=1.2) == "undecided"
    assert st.decide(1.25, 1.3, upper=1.2) == "fails"
    assert st.decide(0.5, 0.9, lower=1.0) == "fails"
    assert st.decide(0.9, 1.1, lower=0.8, upper=1.2) == "holds"
    assert st.decide(math.nan, 1.0, upper=2.0) == "undecided"


def test_bootstrap_interval_is_reproducible_and_covers():
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 1.0, 200)
    one = st.bootstrap_interval(np.mean, x, resamples=500, seed=7)
    assert one == st.bootstrap_interval(np.mean, x, resamples=500, seed=7)
    value, lo, hi = one
    assert lo < value < hi and lo < 1.0 < hi
    se = 1 / math.sqrt(200)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(st, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 15


# ----------------------------------------------------------------------------- thresholds from rates


def test_rate_threshold_on_non_monotone_trials_is_where_the_rate_crosses_one_half():
    # Two trials recover at 10, fail again at 11 and recover at 12; one recovers at 11. The median of
    # the first successes is 11, where only 1 of 5 trials recovers: n50 by the rate is 12.
    ok = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], bool)
    t = st.rate_threshold([10, 11, 12], ok)
    assert t.first_success_median == 11.0
    assert t.n50 == 12.0
    np.testing.assert_allclose(t.rate, [0.4, 0.2, 1.0])
    assert t.nonmonotone == pytest.approx(2 / 5)
    assert t.low <= t.n50 <= t.high


def test_rate_threshold_bands_and_ends():
    grid = [4, 5, 6, 7]
    none = st.rate_threshold(grid, np.zeros((30, 4), bool))
    assert none.n50 == none.low == none.high == math.inf and none.nonmonotone == 0
    every = st.rate_threshold(grid, np.ones((30, 4), bool))
    assert every.n50 == every.low == every.high == 4.0
    # 15 of 30 at every n: the observed rate is 1/2 from the start, but the lower band never reaches it
    half = np.zeros((30, 4), bool)
    half[:15] = True
    t = st.rate_threshold(grid, half)
    assert (t.n50, t.low, t.high) == (4.0, 4.0, math.inf)
    # the ends follow the Clopper-Pearson bands exactly
    counts = np.array([3, 9, 20, 28])
    table = np.arange(30)[:, None] < counts[None, :]
    lo, hi = st.binomial_interval(counts, 30)
    t = st.rate_threshold(grid, table)
    assert t.low == grid[int(np.argmax(hi >= 0.5))] and t.high == grid[int(np.argmax(lo >= 0.5))]
    with pytest.raises(ValueError):
        st.rate_threshold([4, 4, 5, 6], table)


def test_rate_threshold_interval_covers_the_true_crossing_of_a_non_monotone_curve():
    # A true success curve that rises, dips below 1/2 and rises again: n50* = the first n with p >= 1/2.
    rng = np.random.default_rng(7)
    grid = np.arange(10, 20)
    p = np.array([0.05, 0.2, 0.45, 0.55, 0.4, 0.48, 0.7, 0.8, 0.95, 1.0])
    true = grid[np.argmax(p >= 0.5)]
    reps, trials, covered = 2000, 30, 0
    for _ in range(reps):
        t = st.rate_threshold(grid, rng.random((trials, grid.size)) < p)
        covered += t.low <= true <= t.high
    assert covered / reps >= 0.94  # nominal 0.95; the binomial error of the estimate is ~0.005


def test_rate_threshold_ratio_uses_both_intervals():
    a = np.zeros((40, 3), bool)
    a[:, 2] = True
    a[:30, 1] = True
    b = np.ones((40, 2), bool)
    r = st.rate_threshold_ratio([6, 7, 8], a, [2, 3], b)
    ta = st.rate_threshold([6, 7, 8], a, 0.975)
    assert r.median == 7 / 2 and r.low == ta.low / 2 and r.high == ta.high / 2


def test_threshold_line_recovers_a_line_and_brackets_every_line_through_the_intervals():
    m = np.array([18.4, 7.6, 5.9, 5.2])
    a, b = 1.2, 2.0
    y = a * m + b
    f = st.threshold_line(m, y, y - 1, y + 1)
    assert f.a == pytest.approx(a) and f.b == pytest.approx(b)
    assert f.a_low < a < f.a_high and f.b_low < b < f.b_high
    # brute force over a fine grid of lines: every feasible (a, b) lies inside the ranges, and the ends are attained
    aa, bb = np.meshgrid(np.linspace(0.5, 2, 601), np.linspace(-5, 8, 601))
    inside = np.all(np.abs(aa[..., None] * m + bb[..., None] - y) <= 1, axis=-1)
    assert inside.any()
    assert f.a_low - 1e-6 <= aa[inside].min() and aa[inside].max() <= f.a_high + 1e-6
    assert aa[inside].min() - f.a_low < 0.01 and f.a_high - aa[inside].max() < 0.01
    # no line through every interval: NaN ranges; an open end constrains nothing
    bent = st.threshold_line([1.0, 2.0, 3.0], [1.0, 5.0, 3.0], [0.9, 4.9, 2.9], [1.1, 5.1, 3.1])
    assert math.isnan(bent.a_low) and math.isnan(bent.b_high)
    open_top = st.threshold_line([1.0, 2.0], [2.0, 3.0], [1.0, 2.0], [math.inf, math.inf])
    assert open_top.a_high == math.inf and open_top.b_high == math.inf
    with pytest.raises(ValueError):
        st.threshold_line([1.0], [1.0], [0.0], [2.0])


def test_student_t_quantile_for_any_degrees_of_freedom():
    assert st.student_t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert st.student_t_quantile(0.975, 8) == pytest.approx(2.306, abs=1e-3)  # absent from the old table
    assert st.student_t_quantile(0.975, 10**6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="df > 0"):
        st.student_t_quantile(0.975, 0)


def test_mean_interval_is_the_t_interval_and_covers():
    m, lo, hi = st.mean_interval([2.0, 4.0])
    half = st.student_t_quantile(0.975, 1) * np.std([2.0, 4.0], ddof=1) / np.sqrt(2)
    assert (m, lo, hi) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert np.isnan(st.mean_interval([1.0])[1]) and st.decide(*st.mean_interval([1.0])[1:], upper=2.0) == "undecided"
    with pytest.raises(ValueError, match="NaN"):
        st.mean_interval([1.0, float("nan")])
    rng = np.random.default_rng(0)
    draws = rng.normal(1.0, 2.0, size=(4000, 5))  # df = 4: the t quantile, not the normal one, covers
    covered = np.mean([lo <= 1.0 <= hi for _, lo, hi in map(st.mean_interval, draws)])
    assert abs(covered - 0.95) < 0.015
