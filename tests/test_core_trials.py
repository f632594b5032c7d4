"""Many trials as one compiled vmapped call: batched equals looped, and no recompilation."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import colora_jax as cj
from colora_jax._src.experiments import trials as trials_module
from colora_jax._src.experiments.trials import default_batch, trial_bytes

pytestmark = pytest.mark.usefixtures("strict_numerics")

PC = cj.ProblemConfig(model="sensing", users=8, d_out=6, d_in=5, rank=2, samples=12, test_samples=5, noise=0.01)
FC = cj.FitConfig(iters=25)


def test_batched_trials_equal_looped_trials(x64):
    """Float64, so that vmapped and single-trial rounding cannot hide a real difference."""
    pc = dataclasses.replace(PC, x64=True)
    fc = cj.FitConfig(iters=20, tol=0.0)  # a fixed budget: a tolerance stop could flip on rounding
    key = jax.random.key(11)
    batched = cj.run_trials(key, pc, fc, 4, batch=3)  # two calls, the second one padded
    one = jax.jit(lambda k: cj.trial(k, pc, fc))
    for t, k in enumerate(cj.trial_keys(key, 0, 4)):
        looped = one(k)
        np.testing.assert_allclose(batched.evaluation.rel_error[t], looped.evaluation.rel_error, rtol=1e-9)
        np.testing.assert_allclose(batched.trace.objective[t], looped.trace.objective, rtol=1e-9)
        assert batched.trace.iterations[t] == looped.trace.iterations


def test_a_sample_grid_fits_each_generated_batch_at_every_count(x64):
    """Each batch is generated once and fitted at every count of the grid: trial t at count n
    must be the single trial ``t`` fitted on its first n samples, whichever batch and count
    it shares a generated batch with (three batches of two, the last one padded)."""
    pc = dataclasses.replace(PC, x64=True, test_samples=0)
    fc = cj.FitConfig(iters=20, tol=0.0)
    key, grid = jax.random.key(5), [6, 9, 12]
    out = cj.run_trials(key, pc, fc, 5, samples=grid, batch=2)
    one = jax.jit(lambda k, n: cj.trial(k, pc, fc, samples=n))
    for t, k in enumerate(cj.trial_keys(key, 0, 5)):
        for j, n in enumerate(grid):
            looped = one(k, n)
            np.testing.assert_allclose(out.evaluation.rel_error[t, j], looped.evaluation.rel_error, rtol=1e-9)
            np.testing.assert_allclose(out.trace.objective[t, j], looped.trace.objective, rtol=1e-9)


def test_second_call_does_not_recompile():
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: (
            compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
        )
    )
    cj.run_trials(jax.random.key(0), PC, FC, 3, batch=3)
    before = len(compiles)
    again = cj.run_trials(jax.random.key(1), PC, FC, 3, batch=3)
    assert len(compiles) == before, "a second run with the same shapes must reuse the executable"
    assert again.evaluation.rel_error.shape == (3,)


def test_evaluation_of_the_truth_is_exact():
    p = cj.generate(jax.random.key(0), PC)
    ev = cj.evaluate(p.truth.W, p, p.truth.U, p.truth.V)
    assert float(ev.rel_error) == 0.0 and float(jnp.max(ev.per_user_rel_error)) == 0.0
    assert float(ev.subspace_distance_U) < 1e-6
    # held-out error of the truth is the noise variance (statistically, few samples)
    assert 0.2 * PC.noise**2 < float(ev.test_mse) < 3 * PC.noise**2
    noshared = cj.evaluate(p.truth.W, p)
    assert np.isnan(noshared.subspace_distance_U)


@pytest.mark.parametrize("method", ["colora", "fedsa-lora", "oracle"])
def test_trial_distances_are_the_evaluation_of_the_estimate(method):
    """A trial takes the final subspace distances from the fit's trace; they equal evaluating the estimate."""
    pc = cj.ProblemConfig(model="regression", users=6, d_out=5, d_in=6, rank=2, samples=10, noise=0.05)
    fc = cj.FitConfig(iters=15)
    key = jax.random.key(3)
    kp, kf = jax.random.split(key)
    problem = cj.generate(kp, pc)
    f = cj.fit_method(method, problem.train, fc, key=kf, truth=problem.truth)
    direct = cj.evaluate(f.W, problem, f.U, f.V)
    via_trial = cj.trial(key, pc, fc, method).evaluation
    for name in ("subspace_distance_U", "subspace_distance_V", "rel_error"):
        np.testing.assert_allclose(getattr(via_trial, name), getattr(direct, name), rtol=1e-4, atol=1e-6)


@settings(max_examples=50)
@given(trials=st.integers(1, 500), fit=st.integers(1, 600))
def test_default_batch_uses_the_fewest_calls_and_pads_less_than_one_trial_per_call(trials, fit):
    """``fit`` trials fit the memory budget: no batch exceeds it, no more calls than the budget
    forces, and the padded last batch wastes fewer trials than there are calls."""
    budget = fit * trial_bytes(PC)
    batch = default_batch(PC, trials, budget_bytes=budget)
    calls = -(-trials // batch)
    assert 1 <= batch <= min(trials, fit)
    assert calls == -(-trials // min(trials, fit))
    assert calls * batch - trials < calls


def test_results_do_not_depend_on_the_batch_size():
    """Each trial is computed alone inside the vmapped call: 2, 3 or 6 trials a call, the same bits
    (so choosing the batch for speed changes no result)."""
    key = jax.random.key(4)
    runs = [cj.run_trials(key, PC, FC, 6, batch=b) for b in (2, 3, 6)]
    for other in runs[1:]:
        jax.tree.map(np.testing.assert_array_equal, runs[0], other)


@pytest.mark.slow
def test_trials_split_between_worker_processes_equal_one_process():
    """``workers=2``: two one-core processes, each a contiguous block of the trials (5 = 3 + 2),
    give this process's trials bit for bit, at every count of a sample grid; progress is reported
    once per block (in this process it would be once per count: 1, 3, 5 trials' worth)."""
    key, samples = jax.random.key(5), [6, 9, 12]
    seen = []
    split = cj.run_trials(key, PC, FC, 5, samples=samples, workers=2, on_batch=seen.append)
    jax.tree.map(np.testing.assert_array_equal, split, cj.run_trials(key, PC, FC, 5, samples=samples))
    assert split.evaluation.rel_error.shape == (5, 3) and seen in ([3, 5], [2, 5])


def test_a_worker_run_refuses_bad_input_before_starting_a_process():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        cj.run_trials(jax.random.key(0), PC, FC, 2, workers=0)
    with pytest.raises(ValueError, match="cannot be sent to worker processes"):
        cj.run_trials(jax.random.key(0), PC, FC, 2, workers=2, fn=lambda p, k, c: None)
    with pytest.raises(ValueError, match="samples \\[1\\] per user"):
        cj.run_trials(jax.random.key(0), PC, FC, 2, workers=2, samples=[1, 12])


class _Trace(NamedTuple):
    objective: np.ndarray  # (B, 1): each fit's final objective
    iterations: np.ndarray  # (B,): zeros


class _Fit(NamedTuple):
    trace: _Trace
    round: np.ndarray  # (B,): which fit this is (0 the first stage, j the j-th round)


def test_split_fit_reruns_only_the_inexact_trials_and_keeps_the_sequential_choice():
    """``SplitFit`` over stand-in programs whose final objectives are set per (trial, restart):
    each round runs only trials no fit so far has made exact (the first in a batch of the next
    power of two of their count, later ones in it or in a quarter of it), each trial's next
    restart and, in lanes to spare, its later ones; and every trial ends with the fit that
    running its restarts one after another would keep (the lowest objective until one is exact,
    the earlier on a tie, never a NaN): restarts until exact, re-batched after each round."""
    exact, B, R = 0.0, 8, 4
    table = np.array(
        [  # first stage, restarts 1-4
            [exact, 1.0, 1.0, 1.0, 1.0],  # exact at once: no restart
            [5.0, 3.0, exact, 2.0, exact],  # exact at restart 2: restarts 3, 4 not taken
            [5.0, 4.0, 4.0, 6.0, 4.5],  # never exact: restart 1's fit (a tie with restart 2, run in the same lanes)
            [5.0, np.nan, 5.0, exact, 4.0],  # a NaN never wins, a tie keeps the earlier; exact at restart 3
            [2.0, exact, 9.0, 0.5, 9.0],  # restart 3 is lower but comes after an exact one
            [7.0, 8.0, 9.0, 6.0, exact],
            [1.0, 1.0, 1.0, 1.0, 1.0],  # ties throughout: the first stage's fit stays
            [exact, exact, exact, exact, exact],
        ]
    )
    pc = cj.ProblemConfig(model="sensing", users=2, d_out=3, d_in=3, rank=1, samples=4, test_samples=0)
    problems = jax.jit(jax.vmap(lambda k: cj.generate(k, pc)))(jax.random.split(jax.random.key(0), B))
    calls = []

    def fake(trials, restarts):
        return _Fit(_Trace(table[trials, restarts][:, None], np.zeros(len(trials), int)), restarts)

    def then(size):
        def run(problems_, trials, fitted_samples, restarts):
            assert len(trials) == len(restarts) == size == jax.tree.leaves(problems_)[0].shape[0]
            calls.append((size, sorted(set(zip(trials.tolist(), restarts.tolist())))))
            return fake(trials, restarts)

        return run

    split = trials_module.SplitFit(lambda p, t, n: fake(t, np.zeros(B, int)), then, batch=B, rounds=R)
    got = split(problems, np.arange(B), 4)

    want, run = [], {t: [] for t in range(B)}  # the restart kept; the restarts run one after another
    for t in range(B):
        best, kept = table[t, 0], 0
        for j in range(1, R + 1):
            if best <= exact:
                break
            run[t].append(j)
            if table[t, j] < best:
                best, kept = table[t, j], j
        want.append(kept)
    np.testing.assert_array_equal(got.round, want)
    np.testing.assert_array_equal(got.trace.objective[:, 0], table[np.arange(B), want])
    done = {t: 0 for t in range(B)}  # restarts run so far
    for size, lanes in calls:
        trials_ = sorted({t for t, _ in lanes})
        assert all(set(run[t]) - set(range(1, done[t] + 1)) for t in trials_), "only trials still inexact"
        full = calls[0][0]  # the first round's batch: the next power of two of its trials, at most B
        assert size == (full if len(trials_) > full // 4 else max(2, full // 4)), "two batch sizes"
        assert len(lanes) == min(size, sum(R - done[t] for t in trials_)), "spare lanes run later restarts"
        for t in trials_:
            ran = sorted(j for u, j in lanes if u == t)
            assert ran == list(range(done[t] + 1, done[t] + 1 + len(ran))), "each trial's next restarts, in order"
            done[t] += len(ran)
    assert all(set(run[t]) <= set(range(1, done[t] + 1)) <= set(range(1, R + 1)) for t in range(B))
    assert calls[0][0] == 8 and {size for size, _ in calls} == {8, 2}, "both batch sizes occur"
