"""Guards of the proof scripts' conclusions: sample efficiency of the estimators, and no leakage of the truth.

Sample efficiency. The phase diagram (proofs_numerics/phase_transition) claims AltMin recovers at a
constant times the degrees-of-freedom count m*(k) and VarPro near m*(k); a regression that cost 50% of
the sample efficiency would move AltMin's threshold from ~1.7 m* past 2 m*. At one small configuration
(d_out = d_in = 8, r = 2, k = 24, where m* = 5 and 1.2 m* = 6 is an integer) these tests require:

* AltMin (40 trials): >= 90% exact recoveries at 2 m*, and <= 10% at 0.9 m* (below m* the users'
  matrices are not determined by the data, so a success there would mean the fit sees more than the
  data: a leak); measured when written: 100% and 0% (sensing), 100% and 0% (regression);
* VarPro (20 trials, about a second a fit here): >= 90% at its aim 1.2 m*; measured when written: 95%.

Leakage. Every method's estimate is a function of the observations alone: the ``truth`` argument only
feeds the per-iteration trace, so a fit with ``truth=None`` must give the identical estimate.
"""

import math

import jax
import numpy as np
import pytest

import colora_jax as cj

SUCCESS = 1e-3  # stacked relative error of an exact recovery (the scripts' and the CLI's)
USERS = 24


def dof(model: str, users: int, d: int, r: int) -> float:
    """m*(k) per user: sensing r^2 + r (2d - 2r)/k, regression r + (d - r)/k (proofs_numerics._common)."""
    return r * r + r * (2 * d - 2 * r) / users if model == "sensing" else r + (d - r) / users


def success_rates(model: str, method: str, samples: list[int], trials: int = 40, d: int = 8, r: int = 2):
    pc = cj.ProblemConfig(model=model, users=USERS, d_out=d, d_in=d, rank=r, samples=max(samples))
    out = cj.run_trials(
        jax.random.key(11),
        pc,
        cj.FitConfig(rank=r, iters=50),
        trials,
        samples=samples,
        method=method,
        pad_ratio=math.inf,
    )
    return (np.asarray(out.evaluation.rel_error) <= SUCCESS).mean(axis=0)


@pytest.mark.parametrize("model", ["sensing", "regression"])
def test_altmin_recovers_at_twice_the_dof_count_and_not_below_it(model):
    m = dof(model, USERS, 8, 2)
    low, high = max(math.floor(0.9 * m), cj.min_samples(model, 2, "full")), math.ceil(2 * m)
    assert low < m
    rates = success_rates(model, "colora", [low, high])
    assert rates[1] >= 0.9, f"AltMin recovered {rates[1]:.0%} at n={high} = {high / m:.2f} m* (needs >= 90%)"
    assert rates[0] <= 0.1, f"AltMin recovered {rates[0]:.0%} at n={low} < m* = {m:.2f}: more than the data determine"


def test_varpro_recovers_at_its_aim():
    m = dof("sensing", USERS, 8, 2)
    n = math.ceil(1.2 * m - 1e-9)
    (rate,) = success_rates("sensing", "colora-varpro", [n], trials=20)
    assert rate >= 0.9, f"VarPro recovered {rate:.0%} at n={n} = {n / m:.2f} m* (aim: >= 90% at 1.2 m*)"


LEAK_METHODS = [name for name, m in cj.METHODS.items() if not m.needs_truth]


@pytest.mark.parametrize("method", LEAK_METHODS)
def test_estimate_does_not_depend_on_the_truth(method):
    """The same estimate with and without the truth (which only the trace may read): the same
    number of iterations, and equal to float64 rounding (the two programs differ, so XLA may
    order a sum differently; a leak moves the estimate by far more than 1e-10)."""
    pc = cj.ProblemConfig(model="sensing", users=6, d_out=6, d_in=6, rank=2, samples=40, noise=1e-2, x64=True)
    with jax.enable_x64(True):
        problem = cj.generate(jax.random.key(3), pc)
        fc = cj.FitConfig(rank=2, iters=8)
        key = jax.random.key(5)
        fit = jax.jit(lambda obs, truth: cj.fit_method(method, obs, fc, key=key, truth=truth))
        with_truth = jax.device_get(fit(problem.train, problem.truth))
        without = jax.device_get(fit(problem.train, None))
    assert with_truth.W.dtype == np.float64
    assert int(with_truth.trace.iterations) == int(without.trace.iterations)
    np.testing.assert_allclose(with_truth.W, without.W, rtol=1e-10, atol=1e-12)
    for a, b in ((with_truth.U, without.U), (with_truth.V, without.V)):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
