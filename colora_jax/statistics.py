"""The statistics that turn trials into verdicts: thresholds with intervals, binomial bands, fits.

Every PASS/FAIL in ``proofs_numerics/`` is decided by a function of this module, each tested on
synthetic inputs with known answers (``tests/test_statistics.py``). Plain NumPy/SciPy on host
arrays (SciPy comes with JAX); nothing here is traced.

Recovery thresholds with common random numbers. With the nested sample stream a trial fitted
at every n of a grid is one planted problem seen through more and more of its samples, so each
trial has its own threshold: the smallest grid n at which it recovers (``trial_thresholds``).
``P(threshold <= n)`` is then the success probability at n, and the 50% threshold ``n50`` is
the median of the trials' thresholds, with an exact distribution-free interval from the order
statistics (``median_interval``). On an integer grid this ``n50`` is the smallest sample size
at which at least half of the trials recover: no interpolation, and never below the integer
floor ``ceil(m*)`` when fewer samples cannot determine the model (``integer_floor``).

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
    "LogLogFit",
    "MedianInterval",
    "Thresholds",
    "binomial_interval",
    "bootstrap_interval",
    "contraction",
    "crossing",
    "decide",
    "geometric_integers",
    "integer_floor",
    "loglog_fit",
    "median_interval",
    "median_ratio_interval",
    "order_statistic_ranks",
    "sample_grid",
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
    """Every integer from ``ceil(low)`` to ``floor(high)`` where consecutive integers are closer than
    ``ratio``, and steps of about ``ratio`` above: ``x_{j+1} = max(x_j + 1, round(x_j * ratio))``.

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
    """The first ``x`` where ``a - b`` goes from negative to non-negative (linear interpolation);
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
