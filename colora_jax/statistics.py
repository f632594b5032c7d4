"""The statistics that turn trials into verdicts: thresholds with intervals, binomial bands, fits.

Every PASS/FAIL in ``proofs_numerics/`` is decided by a function of this module, each tested on
synthetic inputs with known answers (``tests/test_statistics.py``). Plain NumPy/SciPy on host
arrays (SciPy comes with JAX); nothing here is traced.

Recovery thresholds. ``n50`` is where the success-rate curve crosses one half
(``rate_threshold``): the smallest grid n whose observed success rate is at least 1/2, with an
interval from the Clopper-Pearson bands (the smallest n whose upper band reaches 1/2, and the
smallest whose lower band does). It needs no monotonicity: a trial may recover at n and fail
again at n + 1 (a spurious stationary point, a stopping rule), and then the median of the
trials' first successes (``trial_thresholds``, ``median_interval``) sits below the crossing.
That first-success median is kept as a secondary statistic, and the share of trials that fail
again above their first success is reported (``Thresholds.nonmonotone``). On an integer grid
``n50`` is never below the integer floor ``ceil(m*)`` when fewer samples cannot determine the
model (``integer_floor``). Across users, ``threshold_line`` fits ``n50(k) = a m*(k) + b``.

Verdicts (``decide``): a claim "the quantity lies in [lower, upper]" *holds* when the whole
confidence interval lies inside, *fails* when the interval lies outside, and is *undecided*
when the interval straddles a bound; a script's PASS needs every claim to hold.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = (
    "LineFit",
    "LogLogFit",
    "MedianInterval",
    "RateThreshold",
    "Thresholds",
    "binomial_interval",
    "bootstrap_interval",
    "contraction",
    "crossing",
    "decide",
    "geometric_integers",
    "integer_floor",
    "loglog_fit",
    "mean_interval",
    "median_interval",
    "median_ratio_interval",
    "order_statistic_ranks",
    "rate_threshold",
    "rate_threshold_ratio",
    "sample_grid",
    "student_t_quantile",
    "threshold_line",
    "trial_thresholds",
)

LEVEL = 0.95  # default confidence level of every interval


# ----------------------------------------------------------------------------- grids


def sample_grid(minimum: int, reference: float, lo: float, hi: float, count: int) -> list[int]:
    """``count`` distinct increasing integers near ``reference * geomspace(lo, hi, count)``, all ``>= minimum``.

    Example:
      >>> sample_grid(4, 10.0, 0.5, 2.0, 3)
      [5, 10, 20]
    """
    grid: list[int] = []
    for x in reference * np.geomspace(lo, hi, count):
        grid.append(max(int(round(x)), minimum, grid[-1] + 1 if grid else minimum))
    return grid


def geometric_integers(low: float, high: float, ratio: float = 1.05, minimum: int = 1) -> list[int]:
    """Every integer from ``ceil(low)`` to ``floor(high)`` while they are closer than ``ratio``, then steps.

    Consecutive integers where they are closer than ``ratio``, and steps of about ``ratio`` above:
    ``x_{j+1} = max(x_j + 1, round(x_j * ratio))``.

    A grid for thresholds: unit steps where the sample size is small (so the grid's n50 is the
    exact integer one), relative steps of ``ratio - 1`` where it is large.

    Example:
      >>> geometric_integers(4.2, 9.9)
      [5, 6, 7, 8, 9]
      >>> geometric_integers(100, 130, ratio=1.1)
      [100, 110, 121]
    """
    if not ratio > 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    x = max(int(math.ceil(low - 1e-9)), minimum)
    grid = []
    while x <= high + 1e-9:
        grid.append(x)
        x = max(x + 1, int(round(x * ratio)))
    return grid


def integer_floor(m_star: float) -> float:
    """``ceil(m*) / m*``: the smallest ``n / m*`` an integer sample size can reach at or above ``m*``.

    Example:
      >>> round(integer_floor(2.18), 3)
      1.376
    """
    return math.ceil(m_star - 1e-9) / m_star


# ----------------------------------------------------------------------------- binomial


def binomial_interval(successes, trials, level: float = LEVEL):
    """Clopper-Pearson (exact) interval of a success probability: ``(low, high)``, elementwise.

    ``low = B^-1(a/2; s, t - s + 1)``, ``high = B^-1(1 - a/2; s + 1, t - s)`` with ``B^-1`` the
    beta quantile and ``a = 1 - level`` (``low = 0`` at ``s = 0``, ``high = 1`` at ``s = t``): its
    coverage is at least ``level`` for every true probability.

    Example:
      >>> lo, hi = binomial_interval(0, 10)
      >>> float(lo), round(float(hi), 4)
      (0.0, 0.3085)
    """
    from scipy import stats

    s = np.asarray(successes, float)
    t = np.broadcast_to(np.asarray(trials, float), s.shape)
    a = 1 - level
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(s > 0, stats.beta.ppf(a / 2, s, t - s + 1), 0.0)
        high = np.where(s < t, stats.beta.ppf(1 - a / 2, s + 1, t - s), 1.0)
    return low, high


# ----------------------------------------------------------------------------- thresholds


class Thresholds(NamedTuple):
    """Each trial's recovery threshold on a sample grid."""

    values: np.ndarray  # (trials,) smallest grid n at which the trial recovers; inf if it never does
    nonmonotone: np.ndarray  # indices of trials that recover at some n and fail at a larger one


def trial_thresholds(grid: Sequence[float], success) -> Thresholds:
    """Per-trial thresholds from a ``(trials, len(grid))`` boolean success table (grid increasing).

    The threshold of trial t is ``min{n in grid: success[t, n]}`` (``inf`` when it never
    recovers). Recovery is monotone in n for almost every trial (more samples of the same
    problem); the exceptions -- trials that fail at a grid point above their threshold -- are
    listed in ``nonmonotone`` for the caller to report.

    Example:
      >>> th = trial_thresholds([4, 5, 6], [[0, 1, 1], [0, 0, 0], [1, 0, 1]])
      >>> th.values.tolist(), th.nonmonotone.tolist()
      ([5.0, inf, 4.0], [2])
    """
    grid = np.asarray(grid, float)
    ok = np.asarray(success, bool)
    if ok.ndim != 2 or ok.shape[1] != grid.size:
        raise ValueError(f"success must have shape (trials, {grid.size}), got {ok.shape}")
    if np.any(np.diff(grid) <= 0):
        raise ValueError("the grid must be strictly increasing")
    any_ok = ok.any(axis=1)
    first = np.argmax(ok, axis=1)
    values = np.where(any_ok, grid[first], np.inf)
    after = np.arange(grid.size)[None, :] > first[:, None]
    nonmonotone = np.nonzero(any_ok & np.any(after & ~ok, axis=1))[0]
    return Thresholds(values=values, nonmonotone=nonmonotone)


class RateThreshold(NamedTuple):
    """The 50% threshold of a success-rate curve on a sample grid, with its interval."""

    n50: float  # smallest grid n whose observed success rate is >= 1/2 (inf if none)
    low: float  # smallest grid n whose upper Clopper-Pearson band reaches 1/2 (inf if none)
    high: float  # smallest grid n whose lower band reaches 1/2 (inf if none)
    rate: np.ndarray  # (len(grid),) observed success rate at every n
    first_success_median: float  # secondary: median of the trials' first successes (biased low)
    nonmonotone: float  # fraction of trials that fail again at a larger n than their first success
    level: float


def rate_threshold(grid: Sequence[float], success, level: float = LEVEL) -> RateThreshold:
    """``n50`` where the success rate crosses 1/2, from a ``(trials, len(grid))`` success table.

    Let ``n50*`` be the smallest grid n whose true success probability is at least 1/2. With
    ``[lo_n, hi_n]`` the Clopper-Pearson interval at n (each tail at most ``(1 - level) / 2``),
    ``low`` is the smallest n with ``hi_n >= 1/2`` and ``high`` the smallest with ``lo_n >= 1/2``.
    ``low > n50*`` needs ``hi < 1/2`` at ``n50*`` and ``high < n50*`` needs ``lo >= 1/2`` at an n
    whose probability is below 1/2: each has probability at most ``(1 - level) / 2``, so
    ``[low, high]`` covers ``n50*`` with probability at least ``level``, whatever the shape of
    the curve (no monotonicity assumed). ``low <= n50 <= high`` always.

    Example:
      >>> ok = np.array([[0, 1, 0, 1], [0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]])
      >>> t = rate_threshold([4, 5, 6, 7], ok)
      >>> t.n50, t.first_success_median, t.nonmonotone
      (5.0, 5.0, 0.5)
    """
    grid = np.asarray(grid, float)
    ok = np.asarray(success, bool)
    th = trial_thresholds(grid, ok)  # validates the shapes and the grid
    trials = ok.shape[0]
    successes = ok.sum(axis=0)
    band_low, band_high = binomial_interval(successes, trials, level)

    def first(mask) -> float:
        hits = np.nonzero(mask)[0]
        return float(grid[hits[0]]) if hits.size else math.inf

    return RateThreshold(
        n50=first(2 * successes >= trials),
        low=first(band_high >= 0.5),
        high=first(band_low >= 0.5),
        rate=successes / trials,
        first_success_median=median_interval(th.values, level).median,
        nonmonotone=th.nonmonotone.size / trials,
        level=level,
    )


def rate_threshold_ratio(grid_a, success_a, grid_b, success_b, level: float = LEVEL) -> MedianInterval:
    """``n50_a / n50_b`` of two independent success tables, with a conservative interval.

    Each threshold's interval is taken at level ``1 - (1 - level) / 2``; both cover together
    with probability at least ``level`` (Bonferroni), so ``[low_a / high_b, high_a / low_b]``
    covers the ratio of the true thresholds at least as often.

    Example:
      >>> a = np.ones((40, 2), bool); a[:, 0] = False
      >>> r = rate_threshold_ratio([5, 6], a, [2, 3], np.ones((40, 2), bool))
      >>> r.median, r.low, r.high
      (3.0, 3.0, 3.0)
    """
    half = 1 - (1 - level) / 2
    a, b = rate_threshold(grid_a, success_a, half), rate_threshold(grid_b, success_b, half)
    with np.errstate(divide="ignore", invalid="ignore"):
        return MedianInterval(
            float(np.divide(a.n50, b.n50)), float(np.divide(a.low, b.high)), float(np.divide(a.high, b.low)), level
        )


class LineFit(NamedTuple):
    """``y = a x + b``: least squares, and the ranges of ``a`` and ``b`` over lines inside every interval."""

    a: float  # least-squares slope through the point estimates
    b: float  # least-squares intercept
    a_low: float  # smallest slope of a line passing through every [low_j, high_j] (NaN: no such line)
    a_high: float
    b_low: float  # likewise for the intercept
    b_high: float


def threshold_line(x, y, low, high) -> LineFit:
    """Fit ``n50(k) = a m*(k) + b`` (``x = m*``, ``y = n50``) across users, with ranges for a and b.

    Thresholds are grid-valued, so a t interval from the scatter of a handful of points means
    little. Instead, given each point's interval ``[low_j, high_j]`` (taken at a simultaneous
    level, for example ``1 - (1 - level) / len(x)`` each, Bonferroni), the ranges are the
    smallest and largest ``a`` (and ``b``) of the lines ``a x + b`` that pass through every
    interval: a linear program in ``(a, b)``. If the true thresholds lie on a line and every
    interval covers, the true ``a`` and ``b`` lie in the ranges; when no line passes through all
    intervals the ranges are NaN, which is itself evidence against the linear form. An infinite
    end of an interval is no constraint on that side.

    Example:
      >>> f = threshold_line([2.0, 4.0, 8.0], [5.0, 9.0, 17.0], [4.0, 8.0, 16.0], [6.0, 10.0, 18.0])
      >>> round(f.a, 6), round(f.b, 6), round(f.a_low, 6), round(f.a_high, 6)
      (2.0, 1.0, 1.666667, 2.333333)
    """
    from scipy import optimize

    x, y = np.asarray(x, float), np.asarray(y, float)
    lo, hi = np.asarray(low, float), np.asarray(high, float)
    if not (x.shape == y.shape == lo.shape == hi.shape) or x.ndim != 1 or x.size < 2:
        raise ValueError("threshold_line needs x, y, low and high of one shape, with at least two points")
    finite = np.isfinite(y)
    a, b = np.polyfit(x[finite], y[finite], 1) if finite.sum() >= 2 else (math.nan, math.nan)
    rows, bounds = [], []
    for xj, lj, hj in zip(x, lo, hi):
        if np.isfinite(hj):  # a xj + b <= h
            rows.append([xj, 1.0])
            bounds.append(hj)
        if np.isfinite(lj):  # a xj + b >= l
            rows.append([-xj, -1.0])
            bounds.append(-lj)

    def extreme(index: int, sign: float) -> float:
        """Min (sign = 1) or max (sign = -1) of coefficient ``index`` over the feasible lines."""
        if not rows:
            return -sign * math.inf
        objective = np.zeros(2)
        objective[index] = sign
        res = optimize.linprog(objective, A_ub=np.array(rows), b_ub=np.array(bounds), bounds=[(None, None)] * 2)
        if res.status == 3:  # unbounded in that direction
            return -sign * math.inf
        return float(res.x[index]) if res.status == 0 else math.nan  # 2: no line passes through every interval

    return LineFit(float(a), float(b), extreme(0, 1), extreme(0, -1), extreme(1, 1), extreme(1, -1))


def student_t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (any df > 0).

    Example:
      >>> round(student_t_quantile(0.975, 8), 3)
      2.306
    """
    from scipy import stats

    if not df > 0:
        raise ValueError(f"Student's t needs df > 0, got {df}: use at least two independent runs")
    return float(stats.t.ppf(probability, df))


def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of i.i.d. ``values`` and its Student-t interval.

    ``mean -/+ t_{(1 + level) / 2, T - 1} s / sqrt(T)`` for ``T`` values with sample standard
    deviation ``s`` (``student_t_quantile``: any ``T >= 2``). Used on paired differences, one per
    independent run (seed), so that a claim is judged on the interval, not on the point mean.
    Fewer than two values: ``(mean, nan, nan)`` (``decide`` calls that undecided); NaN values
    are an error (say what a run's value is instead).

    Example:
      >>> m, lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
      >>> m, round(lo, 3), round(hi, 3)
      (3.0, 1.037, 4.963)
    """
    x = np.asarray(values, float).ravel()
    if x.size == 0 or np.any(np.isnan(x)):
        raise ValueError("mean_interval needs at least one value and no NaN")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = student_t_quantile((1 + level) / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


@functools.lru_cache(maxsize=256)
def order_statistic_ranks(count: int, level: float = LEVEL) -> tuple[int, int] | None:
    """1-based ranks ``(l, u)`` with ``P(X_(l) <= median <= X_(u)) >= level`` for ``count`` i.i.d. values.

    The number of values below the median is Binomial(count, 1/2), so
    ``P(X_(l) > median) = P(B <= l - 1)``; ``l`` is the largest rank with
    ``P(B <= l - 1) <= (1 - level) / 2`` and ``u = count + 1 - l``. Distribution-free, exact for
    continuous values and conservative for discrete ones (thresholds on a grid). None when no
    such ranks exist (fewer than 6 values at 95%).

    Example:
      >>> order_statistic_ranks(50)
      (18, 33)
    """
    from scipy import stats

    below = stats.binom.cdf(np.arange(count // 2), count, 0.5)  # P(B <= l - 1) for l = 1 .. count // 2
    ok = np.nonzero(below <= (1 - level) / 2)[0]
    return None if ok.size == 0 else (int(ok[-1]) + 1, count - int(ok[-1]))


class MedianInterval(NamedTuple):
    """A median with its distribution-free confidence interval."""

    median: float  # X_(ceil(T/2)): the smallest value with at least half of the sample at or below it
    low: float  # X_(l) (-inf when the sample is too small for the level)
    high: float  # X_(u) (inf likewise; inf also when more than T - u values are inf)
    level: float


def median_interval(values, level: float = LEVEL) -> MedianInterval:
    """The lower median of ``values`` (``inf`` allowed) and its order-statistic interval.

    For thresholds ``median`` is ``n50``: the smallest grid n at which at least half of the
    trials have recovered. NaN values are an error (say what a trial's value is instead).

    Example:
      >>> m = median_interval(np.arange(1.0, 51.0))
      >>> m.median, m.low, m.high
      (25.0, 18.0, 33.0)
    """
    x = np.sort(np.asarray(values, float).ravel())
    if x.size == 0 or np.any(np.isnan(x)):
        raise ValueError("median_interval needs at least one value and no NaN")
    median = float(x[math.ceil(x.size / 2) - 1])
    ranks = order_statistic_ranks(x.size, level)
    if ranks is None:
        return MedianInterval(median, -math.inf, math.inf, level)
    return MedianInterval(median, float(x[ranks[0] - 1]), float(x[ranks[1] - 1]), level)


def median_ratio_interval(a, b, level: float = LEVEL) -> MedianInterval:
    """``median(a) / median(b)`` of two independent positive samples, with a conservative interval.

    Each median gets its order-statistic interval at level ``1 - (1 - level) / 2``; both cover
    together with probability at least ``level`` (Bonferroni), so
    ``[low_a / high_b, high_a / low_b]`` covers the ratio of the true medians at least as often.

    Example:
      >>> r = median_ratio_interval(np.full(40, 6.0), np.full(40, 2.0))
      >>> r.median, r.low, r.high
      (3.0, 3.0, 3.0)
    """
    half = 1 - (1 - level) / 2
    ma, mb = median_interval(a, half), median_interval(b, half)
    with np.errstate(divide="ignore", invalid="ignore"):
        return MedianInterval(
            float(np.divide(ma.median, mb.median)),
            float(np.divide(ma.low, mb.high)),
            float(np.divide(ma.high, mb.low)),
            level,
        )


def bootstrap_interval(
    statistic: Callable[..., float], *samples, level: float = LEVEL, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``(statistic(*samples), low, high)``: percentile bootstrap over independent samples.

    Each sample (axis 0) is resampled with replacement on its own, ``resamples`` times, from a
    NumPy generator seeded with ``seed`` (the interval is reproducible); ``low``/``high`` are the
    ``(1 -/+ level) / 2`` quantiles of the resampled statistic (NaN resamples are dropped).

    Example:
      >>> s, lo, hi = bootstrap_interval(np.mean, np.full(30, 2.0))
      >>> s, lo, hi
      (2.0, 2.0, 2.0)
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(s) for s in samples]
    value = float(statistic(*arrays))
    draws = np.empty(resamples)
    for j in range(resamples):
        draws[j] = statistic(*(a[rng.integers(0, len(a), len(a))] for a in arrays))
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return value, math.nan, math.nan
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return value, float(low), float(high)


def decide(low: float, high: float, lower: float = -math.inf, upper: float = math.inf) -> str:
    """Verdict on "the quantity lies in ``[lower, upper]``" from its interval ``[low, high]``.

    ``"holds"`` if the interval lies inside the bounds, ``"fails"`` if it lies entirely outside
    (below ``lower`` or above ``upper``), ``"undecided"`` if it straddles a bound.

    Example:
      >>> decide(1.1, 1.3, upper=1.5), decide(1.6, 1.9, upper=1.5), decide(1.4, 1.6, upper=1.5)
      ('holds', 'fails', 'undecided')
    """
    if np.isnan(low) or np.isnan(high):
        return "undecided"
    if lower <= low and high <= upper:
        return "holds"
    if high < lower or low > upper:
        return "fails"
    return "undecided"


# ----------------------------------------------------------------------------- rates and crossings


class LogLogFit(NamedTuple):
    """Least squares ``log10 y = slope log10 x + intercept`` with a t interval on the slope."""

    slope: float
    intercept: float
    low: float  # slope's lower confidence bound (NaN with fewer than 3 points)
    high: float  # slope's upper confidence bound


def loglog_fit(x, y, level: float = LEVEL) -> LogLogFit:
    """Fit a power law ``y = 10^intercept x^slope`` by least squares on the logs.

    The interval is ``slope +- t_{m-2} se`` with ``se^2 = s^2 / sum (u - mean u)^2`` (``u = log10
    x``, ``s^2`` the residual variance, ``m`` points): exact for log-normal scatter around the line.

    Example:
      >>> f = loglog_fit([1, 10, 100], [3, 0.3, 0.03])
      >>> round(f.slope, 6), round(f.intercept, 6)
      (-1.0, 0.477121)
    """
    from scipy import stats

    u, v = np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float))
    slope, intercept = np.polyfit(u, v, 1)
    m = u.size
    if m < 3:
        return LogLogFit(float(slope), float(intercept), math.nan, math.nan)
    resid = v - (slope * u + intercept)
    se = math.sqrt(float(resid @ resid) / (m - 2) / float(np.sum((u - u.mean()) ** 2)))
    half = float(stats.t.ppf((1 + level) / 2, m - 2)) * se
    return LogLogFit(float(slope), float(intercept), float(slope - half), float(slope + half))


def contraction(curve, window: tuple[float, float]) -> float:
    """Per-iteration contraction factor of a linearly converging error ``curve`` (one trial).

    ``10^b`` with ``b`` the least-squares slope of ``log10 curve[t]`` against ``t`` over the
    iterations whose value lies strictly inside ``window`` (the linear phase: below the start-up
    transient, above the floor of the arithmetic); NaN with fewer than 3 such points.

    Example:
      >>> round(contraction(0.5 ** np.arange(30.0), (1e-8, 1e-1)), 6)
      0.5
    """
    curve = np.asarray(curve, float)
    t = np.nonzero((curve > window[0]) & (curve < window[1]))[0]
    if t.size < 3:
        return math.nan
    return float(10 ** np.polyfit(t, np.log10(curve[t]), 1)[0])


def crossing(x, a, b) -> float:
    """The first ``x`` where ``a - b`` goes from negative to non-negative (linear interpolation).

    NaN if it never does. (``a`` the curve that starts below ``b`` and overtakes it.)

    Example:
      >>> crossing([0, 1, 2], [0, 2, 4], [1, 1, 1])
      0.5
    """
    diff = np.asarray(a, float) - np.asarray(b, float)
    x = np.asarray(x, float)
    for i in range(1, len(x)):
        if diff[i - 1] < 0 <= diff[i]:
            return float(x[i - 1] + (x[i] - x[i - 1]) * -diff[i - 1] / (diff[i] - diff[i - 1]))
    return math.nan
