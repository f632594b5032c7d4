"""Evaluation of an estimate, and many independent trials as one jit-compiled vmapped call.

Trial ``t`` of ``run_trials(key, ...)`` uses ``jax.random.fold_in(key, t)``, so a trial's
result does not depend on how trials are batched (batched equals looped), and a larger run
extends a smaller one with the same key.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from colora_jax._src.altmin import Estimate, Trace, fit
from colora_jax._src.config import FitConfig, ProblemConfig
from colora_jax._src.data import Observations, Problem, generate, predict
from colora_jax._src.metrics import per_user_relative_error, relative_error, subspace_distance


class Evaluation(NamedTuple):
    """How well an estimate matches a planted problem."""

    rel_error: Float[Array, ""]  # ||W_hat - W*||_F / ||W*||_F, all users stacked
    per_user_rel_error: Float[Array, "k"]  # the same for each user
    subspace_distance_U: Float[Array, ""]  # sin of the largest angle, span(U_hat) vs span(U*)
    subspace_distance_V: Float[Array, ""]
    test_mse: Float[Array, ""]  # held-out mean squared prediction error per sample
    test_rel_mse: Float[Array, ""]  # test_mse / mean squared held-out measurement


def prediction_error(W: Float[Array, "k d_out d_in"], obs: Observations) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean squared prediction error per sample, absolute and relative to the mean ``||y||^2``.

    For the regression model the squared error of a sample is summed over its ``d_out`` outputs.
    """
    pred = jax.vmap(predict, in_axes=(0, 0, None))(W, obs.X, obs.model)
    per_sample = obs.Y.shape[0] * obs.Y.shape[1]
    mse = jnp.sum(jnp.square(obs.Y - pred)) / per_sample
    return mse, mse / (jnp.sum(jnp.square(obs.Y)) / per_sample)


def evaluate(W: Float[Array, "k d_out d_in"], problem: Problem, U=None, V=None) -> Evaluation:
    """Score users' matrices ``W`` (and shared factors, if the method has them) on a problem."""
    truth = problem.truth
    nan = jnp.full((), jnp.nan, W.dtype)
    dU = nan if U is None else subspace_distance(U, truth.U)
    dV = nan if V is None else subspace_distance(V, truth.V)
    if problem.test.samples:
        mse, rel = prediction_error(W, problem.test)
    else:
        mse, rel = nan, nan
    return Evaluation(
        rel_error=relative_error(W, truth.W),
        per_user_rel_error=per_user_relative_error(W, truth.W),
        subspace_distance_U=dU,
        subspace_distance_V=dV,
        test_mse=mse,
        test_rel_mse=rel,
    )


class TrialResult(NamedTuple):
    """One trial (or, batched, many): its evaluation and the fit's trace."""

    evaluation: Evaluation
    trace: Trace


def trial(key, problem_config: ProblemConfig, fit_config: FitConfig) -> TrialResult:
    """Generate one problem from ``key``, fit it and evaluate the fit (pure; jit/vmap it)."""
    kp, kf = jax.random.split(key)
    problem = generate(kp, problem_config)
    estimate, trace = fit(problem.train, fit_config, key=kf, truth=problem.truth)
    return TrialResult(evaluate(estimate.W, problem, estimate.U, estimate.V), trace)


def compiled_trials(problem_config: ProblemConfig, fit_config: FitConfig, batch: int, fn: Callable = trial):
    """The ahead-of-time compiled ``keys (batch,) -> batched fn result`` for these configs.

    ``jit(vmap(fn))`` lowered and compiled once per (configs, batch, fn) and cached, so repeated
    runs with the same shapes never recompile. ``fn(key, problem_config, fit_config)``
    defaults to ``trial``.
    """
    return _compiled_trials(problem_config, fit_config, batch, fn)


@functools.lru_cache(maxsize=64)
def _compiled_trials(problem_config, fit_config, batch, fn):
    problem_config.validate()
    fit_config.validate()
    one = functools.partial(fn, problem_config=problem_config, fit_config=fit_config)
    keys = trial_keys(jax.random.key(0), 0, batch)
    return jax.jit(jax.vmap(one)).lower(keys).compile()


@jax.jit
def _fold_in_all(key, indices):
    return jax.vmap(jax.random.fold_in, (None, 0))(key, indices)


def trial_keys(key, start: int, stop: int):
    """Keys of trials ``start..stop-1``: ``fold_in(key, t)``."""
    return _fold_in_all(key, jnp.arange(start, stop))


def default_batch(problem_config: ProblemConfig, trials: int, budget_bytes: float = 2**28) -> int:
    """Trials per compiled call so that a batch's measurements take about ``budget_bytes``."""
    pc = problem_config
    x_width = pc.d_out * pc.d_in if pc.model == "sensing" else pc.d_in + pc.d_out
    per_trial = 8 * pc.users * (pc.samples + pc.test_samples) * x_width * (2 if pc.x64 else 1)
    return int(max(1, min(trials, budget_bytes // max(per_trial, 1))))


def run_trials(
    key,
    problem_config: ProblemConfig,
    fit_config: FitConfig,
    trials: int,
    *,
    batch: int | None = None,
    fn: Callable = trial,
    on_batch: Callable[[int], None] | None = None,
):
    """Run ``trials`` independent trials, ``batch`` at a time, as compiled vmapped calls.

    Args:
      key: the experiment's PRNG key (trial t uses ``fold_in(key, t)``).
      problem_config, fit_config: static configurations (validated here).
      trials: number of trials.
      batch: trials per compiled call (default ``default_batch``). The last batch is padded
        to the same size, so one executable serves the whole run.
      fn: the per-trial function (default ``trial``), e.g. a baseline's trial.
      on_batch: called with the number of trials finished after each batch (progress bars).

    Returns:
      The batched result of ``fn`` as NumPy arrays with a leading ``trials`` axis.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    batch = default_batch(problem_config, trials) if batch is None else max(1, min(batch, trials))
    run = compiled_trials(problem_config, fit_config, batch, fn)
    parts = []
    for start in range(0, trials, batch):
        out = jax.device_get(run(trial_keys(key, start, start + batch)))
        parts.append(jax.tree.map(lambda a: a[: min(batch, trials - start)], out))
        if on_batch is not None:
            on_batch(min(start + batch, trials))
    return jax.tree.map(lambda *a: np.concatenate(a, axis=0), *parts)
