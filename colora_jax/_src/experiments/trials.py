"""Evaluation of an estimate, and many independent trials as one compiled, batched program.

Trial ``t`` of ``run_trials(key, ...)`` uses ``jax.random.fold_in(key, t)``, so a trial's
result does not depend on how trials are batched (batched equals looped), and a larger run
extends a smaller one with the same key.

One executable per sweep: samples per user are a prefix mask over the nested sample stream
(``data.generate``), and the noise level is a traced input. ``run_trials(..., samples=[8, 12,
16])`` generates each batch of trials once, with the largest sample size, and fits every
prefix of it (the first 8, 12, 16 samples of each user: common random numbers across sample
sizes). The trial program is compiled in two parts (``CompiledTrials``): the generator and the
fit, whose sample count is a traced input, so other sample grids and other noise levels reuse
both. The sweep driver (``sweep.run_cells``) runs its cells through this same runner.

Two sample counts meet here, and the names keep them apart: the *generated* samples per user
(what a program draws: ``generated_samples``, ``generate_samples``) and the *fitted* samples per
user (the prefix of them a fit uses: ``fitted_samples``; the public keyword ``samples``).

A call is checked once, where it enters (``trial_request``: ``run_trials``, ``plan_trials``, the
CLI, the sweeps), into a ``TrialRequest``: configurations validated, sample counts normalized,
sorted and grouped into programs. What runs below it (``TrialPlan``, the compiled programs, the
worker processes) trusts the request and checks nothing again.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from colora_jax._src import registry
from colora_jax._src.algorithms import resolve
from colora_jax._src.estimators.fitting import Trace, restart_keys, stopping_floor
from colora_jax._src.methods import fit_method, fit_method_unchecked
from colora_jax._src.model.config import FitConfig, ProblemConfig, min_samples
from colora_jax._src.model.data import GroundTruth, Observations, Problem, predict
from colora_jax._src.model.metrics import per_user_relative_error, relative_error, subspace_distance
from colora_jax._src.model.shared_input import SharedInputConfig, generate_problem
from colora_jax._src.runtime import caches
from colora_jax._src.runtime.workers import parallel_map, picklable


class Evaluation(NamedTuple):
    """How well an estimate matches a planted problem."""

    rel_error: Float[Array, ""]  # ||W_hat - W*||_F / ||W*||_F, all users stacked
    per_user_rel_error: Float[Array, " k"]  # the same for each user
    subspace_distance_U: Float[Array, ""]  # sin of the largest angle, span(U_hat) vs span(U*)
    subspace_distance_V: Float[Array, ""]
    test_mse: Float[Array, ""]  # held-out mean squared prediction error per sample
    test_rel_mse: Float[Array, ""]  # test_mse / mean squared held-out measurement


def prediction_error(W: Float[Array, "k d_out d_in"], obs: Observations) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Empirical mean squared prediction error per sample, absolute and relative to the mean ``||y||^2``.

    For the regression model the squared error of a sample is summed over its ``d_out`` outputs.
    """
    pred = jax.vmap(predict, in_axes=(0, 0, None))(W, obs.X, obs.model)
    per_sample = obs.Y.shape[0] * obs.Y.shape[1]
    mse = jnp.sum(jnp.square(obs.Y - pred)) / per_sample
    return mse, mse / (jnp.sum(jnp.square(obs.Y)) / per_sample)


def population_risk(
    W: Float[Array, "k d_out d_in"], truth: GroundTruth, model: str
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """The exact held-out error of a Gaussian design: what ``prediction_error`` estimates.

    With ``x`` (or ``X``) standard Gaussian and noise of std ``sigma``, a new sample of user i
    has expected squared error ``||W_i - W_i*||_F^2 + sigma^2`` (sensing) or
    ``||W_i - W_i*||_F^2 + d_out sigma^2`` (regression, summed over the outputs). Returns the
    mean over users and its ratio to the mean ``E||y||^2 = ||W_i*||_F^2 + (d_out) sigma^2``.
    """
    noise_var = jnp.square(truth.noise) * (W.shape[1] if model == "regression" else 1)
    mse = jnp.mean(jnp.sum(jnp.square(W - truth.W), axis=(1, 2))) + noise_var
    return mse, mse / (jnp.mean(jnp.sum(jnp.square(truth.W), axis=(1, 2))) + noise_var)


@jax.jit
def evaluate(W: Float[Array, "k d_out d_in"], problem: Problem, U=None, V=None) -> Evaluation:
    """Score users' matrices ``W`` (and shared factors, if the method has them) on a problem.

    The held-out error is the empirical error on ``problem.test`` when it holds samples
    (``test_samples > 0``), else the exact population risk (``population_risk``).
    """
    truth = problem.truth
    nan = jnp.full((), jnp.nan, W.dtype)
    dU = nan if U is None else subspace_distance(U, truth.U)
    dV = nan if V is None else subspace_distance(V, truth.V)
    if problem.test.samples:
        mse, rel = prediction_error(W, problem.test)
    else:
        mse, rel = population_risk(W, truth, problem.train.model)
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


def fit_and_evaluate(problem: Problem, key, fit_config: FitConfig, method: str = "colora") -> TrialResult:
    """Fit ``method`` to ``problem.train`` and evaluate it against the truth (pure).

    The subspace distances of the estimate are the trace's last entries: every method records
    them with the truth through the same ``fitting.record`` (NaN where it has no shared factor),
    so they are not computed a second time (``evaluate(W, problem, U, V)`` gives the same numbers).
    ``fit_config`` and ``method`` are checked here (``fit_method``); a trial program's function
    (``method_evaluator``) is the same fit without the checks, which its request has made.
    """
    return _scored(fit_method(method, problem.train, fit_config, key=key, truth=problem.truth), problem)


def _fit_and_evaluate(problem: Problem, key, fit_config: FitConfig, method: str) -> TrialResult:
    """``fit_and_evaluate`` for a validated ``fit_config`` and a registered ``method``."""
    return _scored(fit_method_unchecked(method, problem.train, fit_config, key=key, truth=problem.truth), problem)


def _scored(f, problem: Problem) -> TrialResult:
    """A method's fit and its evaluation on ``problem``, distances read from its trace."""
    last = lambda history: history[f.trace.iterations]
    evaluation = evaluate(f.W, problem)._replace(
        subspace_distance_U=last(f.trace.subspace_distance_U), subspace_distance_V=last(f.trace.subspace_distance_V)
    )
    return TrialResult(evaluation, f.trace)


@functools.cache
def method_evaluator(method: str) -> Callable[..., TrialResult]:
    """``fit_and_evaluate`` with the method bound: a stable, hashable ``fn`` for ``run_trials``.

    Its ``fit_config`` is not validated again at each trace: a run validates it once
    (``trial_request``) before anything is traced.
    """
    registry.method(method)  # unknown names fail here, with the list of known ones
    return functools.partial(_fit_and_evaluate, method=method)


def _is_method_evaluator(fn) -> bool:
    """Whether ``fn`` is ``method_evaluator(name)`` (or a copy of one, unpickled in a worker)."""
    return (
        isinstance(fn, functools.partial)
        and fn.func is _fit_and_evaluate
        and not fn.args
        and set(fn.keywords) == {"method"}
    )


def trial(
    key,
    problem_config: ProblemConfig | SharedInputConfig,
    fit_config: FitConfig,
    method: str = "colora",
    *,
    samples=None,
    noise=None,
) -> TrialResult:
    """Generate one problem from ``key``, fit ``method`` and evaluate the fit (pure; jit/vmap it).

    ``samples`` (may be traced) is the number fitted: the first ``samples`` of each user's
    ``problem_config.samples`` generated ones; ``noise`` (may be traced) overrides the noise level.
    The configurations are validated here (the generator validates ``problem_config``).
    """
    fit_config.validate()
    return _fit_one(_generate_one(key, problem_config, noise), key, fit_config, method_evaluator(method), samples)


def _generate_one(key, problem_config, noise):
    """Trial ``key``'s problem (from the first half of its split; the fit uses the second)."""
    return generate_problem(jax.random.split(key)[0], problem_config, noise=noise)


def _fit_one(problem, key, fit_config, fn, fitted_samples, restart=None, restarts: int = 0):
    """``fn`` on the first ``fitted_samples`` of each user's generated samples (None: all of them).

    With ``restarts``, the fit key is that of the fit's restart ``restart`` (``restart_keys``).
    """
    if fitted_samples is not None:
        problem = dataclasses.replace(problem, train=problem.train.with_counts(fitted_samples))
    fit_key = jax.random.split(key)[1]
    if restarts:
        fit_key = restart_keys(fit_key, restarts)[restart - 1]
    return fn(problem, fit_key, fit_config)


def _generate_at(keys, noise, *, problem_config):
    """``(B,) keys -> (B,) problems``, each generated with ``problem_config.samples`` per user."""
    return jax.vmap(lambda k: _generate_one(k, problem_config, noise))(keys)


def _fit_at(problems, keys, fitted_samples, restart=None, *, fit_config, fn, restarts: int = 0):
    """``(B,) problems -> results (B, ...)``, each fitted on the first ``fitted_samples`` of every user's.

    The count is traced: one program for every n. With ``restarts``, trial b is fitted from its
    restart ``restart[b]`` (traced too).
    """
    if not restarts:
        return jax.vmap(lambda p, k: _fit_one(p, k, fit_config, fn, fitted_samples))(problems, keys)
    one = lambda p, k, j: _fit_one(p, k, fit_config, fn, fitted_samples, j, restarts)
    return jax.vmap(one)(problems, keys, restart)


def sample_buckets(distinct_samples: Sequence[int], pad_ratio: float) -> list[tuple[int, ...]]:
    """Group fitted sample counts so that within a group the largest is at most ``pad_ratio`` x the smallest.

    ``distinct_samples`` are ascending and each given once (``TrialRequest.distinct_samples``).
    Each group is one compiled program (generated with its largest count), its counts ascending.

    A fit on ``n`` of ``N`` stored samples costs what a fit on ``N`` costs (the unused rows are
    zero, not absent), so ``pad_ratio`` bounds that waste; ``inf`` gives one program for all.
    """
    groups: list[list[int]] = []
    for n in reversed(distinct_samples):
        if groups and groups[-1][0] <= pad_ratio * n:
            groups[-1].append(n)
        else:
            groups.append([n])
    return [tuple(reversed(g)) for g in reversed(groups)]


def generated_config(problem_config, generated_samples: int | None = None):
    """The configuration a program compiles and generates from.

    ``generated_samples`` per user (default ``problem_config.samples``), noise 0 (the level is traced).
    """
    largest = problem_config.samples if generated_samples is None else generated_samples
    return dataclasses.replace(problem_config, samples=int(largest), noise=0.0)


class CompiledTrials(NamedTuple):
    """A trial program in two parts, a generator and a fit.

    ``generate(keys, noise) -> problems`` and ``fit(problems, keys, fitted_samples) -> results``, so
    that a batch's problems are generated once and fitted at every sample count of a grid (each fit
    is on the first ``fitted_samples`` of them).
    """

    generate: Callable
    fit: Callable

    def __call__(self, keys, fitted_samples, noise):
        """The results of trials ``keys`` at one fitted sample count (generated, then fitted)."""
        return self.fit(self.generate(keys, noise), keys, fitted_samples)


@jax.jit
def _floors(train: Observations, fitted_samples) -> Array:
    """Each trial's stopping floor on its first ``fitted_samples`` samples, as the estimators stop.

    ``fitting.stopping_floor`` of the mean squared measurement: a fit whose final objective is at
    it is exact (a test of the data only).
    """

    def one(obs):
        used = obs.with_counts(fitted_samples).masked()
        return stopping_floor(jnp.sum(jnp.square(used.Y)) / jnp.sum(used.sample_counts()).astype(used.Y.dtype))

    return jax.vmap(one)(train)


@dataclasses.dataclass(frozen=True)
class SplitFit:
    """A trial program's fit in stages, for an estimator with ``stages`` (``fitting.Stages``).

    The first stage's fit runs on every trial of the batch; the trials where it is exact (its
    final objective at the stopping floor: a data-only test, never the truth) keep it, since the
    estimator returns that fit unchanged there. Then rounds of the second stage run only on the
    trials still inexact: the first round in a batch of the next power of two of their count (at
    least 2, at most ``batch``), each later one in that batch or, once at most a quarter of it is
    still inexact, in a quarter of it (at least 2): two compiled programs, not one per size.
    Each lane of a round is one (trial, restart) pair: every inexact trial's next restart, and in
    the lanes to spare the restarts after it, trial by trial in turn (run ahead, since on these
    trials most restarts fail too), else a repeat. Each trial then takes its restarts in order as
    the estimator would run them one after another: the lowest final objective (the earlier on a
    tie) until one is exact, the ones after that discarded. So a trial that needs a long
    continuation or many restarts holds neither the batch nor the other hard trials, and the result
    is the estimator's on every trial, up to the rounding of a different program (tested).
    """

    first: Callable  # compiled (problems, keys, fitted_samples) -> results of the first stage, at ``batch``
    then: Callable[[int], Callable]  # size -> compiled (problems, keys, fitted_samples, restart per lane) -> results
    batch: int
    rounds: int  # restarts of the second stage (1 without restarts: its one fit)

    def __call__(self, problems, keys, fitted_samples):
        """The algorithm's results on every trial of the batch (host arrays)."""
        merged = jax.device_get(self.first(problems, keys, fitted_samples))
        final = _final_objective(merged.trace)
        floors = np.asarray(_floors(problems.train, fitted_samples))
        following = np.ones(final.shape, int)  # each trial's next restart
        full = None  # the first round's batch; later rounds use it or a quarter of it (two programs)
        while (hard := np.flatnonzero(~(final <= floors) & (following <= self.rounds))).size:  # NaN is not exact
            full = full or min(self.batch, max(2, 1 << int(hard.size - 1).bit_length()))
            size = full if hard.size > full // 4 else max(2, full // 4)
            for start in range(0, hard.size, size):
                rows, restarts = self._lanes(hard[start : start + size], following, size)
                picked = jax.tree.map(lambda a, rows=rows: a[rows], (problems, keys))
                again = jax.device_get(self.then(size)(*picked, fitted_samples, restarts.astype(np.int32)))
                objective = _final_objective(again.trace)
                taken = {}
                for lane in np.lexsort((restarts, rows)):  # each trial's restarts in order
                    t = rows[lane]
                    if not final[t] <= floors[t] and objective[lane] < final[t]:  # False for NaN
                        final[t], taken[t] = objective[lane], lane
                    following[t] = max(following[t], restarts[lane] + 1)
                if taken:
                    to, lanes = np.array(list(taken)), np.array(list(taken.values()))
                    merged = jax.tree.map(lambda a, b, to=to, lanes=lanes: _put(a, to, b[lanes]), merged, again)
        return merged

    def _lanes(self, trials, following, size):
        """``size`` lanes of (trial, restart): each trial's next, then later restarts in turn, then repeats."""
        lanes = [(t, following[t]) for t in trials]
        ahead = 1
        while len(lanes) < size and ahead < self.rounds:
            lanes += [(t, following[t] + ahead) for t in trials if following[t] + ahead <= self.rounds]
            ahead += 1
        lanes = (lanes[:size] + lanes * size)[:size]  # repeats (a repeated lane changes nothing)
        return np.array([t for t, _ in lanes]), np.array([j for _, j in lanes])


def _final_objective(trace) -> np.ndarray:
    """Each trial's objective at its last iteration (host arrays)."""
    return np.take_along_axis(np.asarray(trace.objective), np.asarray(trace.iterations)[:, None], axis=1)[:, 0]


def _put(a, rows, values):
    a = np.array(a)
    a[rows] = values
    return a


def _stages(fit_config: FitConfig, fn):
    """The stages of a CoLoRA trial program's estimator (``fitting.Stages``), or None (one program)."""
    if not (_is_method_evaluator(fn) and fn.keywords["method"] == "colora"):
        return None  # another method, or a sharded or caller's function: one program
    return resolve(fit_config).stages


def compiled_trials(problem_config, fit_config: FitConfig, batch: int, *, fn: Callable | None = None) -> CompiledTrials:
    """The ahead-of-time compiled trial program for ``batch`` trials (``CompiledTrials``).

    ``problem_config`` is the generated configuration (``generated_config``: its ``samples``
    are drawn, the first ``fitted_samples`` of them fitted). Both configurations are validated
    here. Compiled once per (configs, batch, fn) and cached in memory (and on disk when the
    persistent compilation cache is on: ``colora_jax.enable_compile_cache``), so repeated runs
    with the same shapes never recompile. ``fn(problem, key, fit_config)`` defaults to CoLoRA's fit.
    """
    problem_config.validate()
    fit_config.validate()
    return _compiled(problem_config, fit_config, batch, fn or method_evaluator("colora"))


def _compiled(problem_config, fit_config: FitConfig, batch: int, fn: Callable) -> CompiledTrials:
    """``compiled_trials`` of validated configurations (a ``TrialRequest``'s)."""
    stages = _stages(fit_config, fn)
    if stages is None or batch < 2:
        return _compiled_trials(problem_config, fit_config, batch, fn)
    staged = _compiled_trials(problem_config, dataclasses.replace(fit_config, algorithm=stages.first), batch, fn)
    then = dataclasses.replace(fit_config, algorithm=stages.then)
    if stages.restarts:
        then = dataclasses.replace(then, init="random")  # round j: from restart j's random start
    rounds = functools.partial(_compiled_round, problem_config, then, restarts=stages.restarts, fn=fn)
    return CompiledTrials(staged.generate, SplitFit(staged.fit, rounds, batch, max(1, stages.restarts)))


@functools.lru_cache(maxsize=64)
def _compiled_trials(problem_config, fit_config, batch, fn):
    """The compiled program of validated configurations, one per (configs, batch, fn)."""
    return CompiledTrials(
        _compiled_generator(problem_config, batch), _compiled_fit(problem_config, fit_config, batch, fn)
    )


@functools.lru_cache(maxsize=64)
def _compiled_round(problem_config, fit_config, size: int, *, restarts: int, fn):
    """The compiled fit of a split's second stage for ``size`` trials: ``(problems, keys, fitted_samples, restart)``.

    With ``restarts``, trial b is fitted from its restart ``restart[b]``'s start (``restart_keys``
    of its fit key, ``init="random"`` in ``fit_config``); without, ``restart`` is not read.
    """
    return _compiled_fit(problem_config, fit_config, size, fn, in_round=True, restarts=restarts)


def _compiled_fit(problem_config, fit_config, batch: int, fn, *, in_round: bool = False, restarts: int = 0):
    """The compiled ``(problems, keys, fitted_samples) -> results`` for ``batch`` trials.

    ``in_round`` (a round of a split, ``_compiled_round``): it also takes each trial's restart,
    read when ``restarts`` (the fit from that restart's start), not read without (a fallback's fit).
    """
    keys, noise = _example_arguments(problem_config, batch)
    fitted_samples = jnp.asarray(problem_config.samples, jnp.int32)  # its shape and type; the value is traced
    fit = jax.jit(functools.partial(_fit_at, fit_config=fit_config, fn=fn, restarts=restarts))
    round_ = (jnp.ones(batch, jnp.int32),) if in_round else ()
    problems = lambda: jax.eval_shape(_generator(problem_config), keys, noise)  # traced on a miss only
    lower = lambda: fit.lower(problems(), keys, fitted_samples, *round_)
    method, placement = _program_key(fn)
    if method is None:  # a caller's function: no stable key, compiled here (JAX's cache still applies)
        return lower().compile()
    parts = (problem_config, fit_config, batch, method, keys.dtype, fitted_samples.dtype, noise.dtype)
    if in_round:
        parts += ("round", restarts)
    return caches.load_or_compile("trials", parts, lower, placement)


def _example_arguments(problem_config, batch: int):
    """Keys and noise level of the shapes and types a trial program is compiled for."""
    return trial_keys(jax.random.key(0), 0, batch), jnp.zeros((), problem_config.dtype)


def _generator(problem_config):
    """The jitted ``(keys, noise) -> problems`` of ``problem_config``."""
    return jax.jit(functools.partial(_generate_at, problem_config=problem_config))


@functools.lru_cache(maxsize=64)
def _compiled_generator(problem_config, batch: int):
    """The compiled ``(keys, noise) -> problems``, one per (problem configuration, batch).

    Every fit configuration and method on the same problems shares it.
    """
    keys, noise = _example_arguments(problem_config, batch)
    parts = (problem_config, batch, keys.dtype, noise.dtype)
    return caches.load_or_compile("generate", parts, lambda: _generator(problem_config).lower(keys, noise))


def _program_key(fn) -> tuple[str | None, tuple | None]:
    """The name and placement under which ``fn``'s trial program is stored (``caches.load_or_compile``).

    A ``method_evaluator`` function by its method on the default device, a function carrying a
    ``program_key`` (``sharding.sharded_evaluator``) by that, anything else not at all (None).
    """
    if _is_method_evaluator(fn):
        return fn.keywords["method"], None
    return getattr(fn, "program_key", (None, None))


@jax.jit
def _fold_in_all(key, indices):
    return jax.vmap(jax.random.fold_in, (None, 0))(key, indices)


def trial_keys(key, start: int, stop: int):
    """Keys of trials ``start..stop-1``: ``fold_in(key, t)``."""
    return _fold_in_all(key, jnp.arange(start, stop))


def trial_bytes(problem_config) -> int:
    """Estimated memory of one trial.

    Its data, their masked copy (with the sensing transpose or the regression statistics), the test
    data and the users' matrices.
    """
    pc = problem_config
    item = 8 if pc.x64 else 4
    x_width = pc.d_out * pc.d_in if pc.model == "sensing" else pc.d_in + pc.d_out
    per_copy = pc.users * pc.samples * x_width
    statistics = 0 if pc.model == "sensing" else pc.users * pc.d_in * (pc.d_in + pc.d_out)
    per_fit = 2 * per_copy + statistics + 3 * pc.users * pc.d_out * pc.d_in
    return item * (per_copy + per_fit + pc.users * pc.test_samples * x_width)


def available_memory_bytes() -> int | None:
    """Memory available to this process (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(problem_config) -> None:
    """Refuse, before anything is allocated, a trial that cannot fit in the available memory."""
    need, have = trial_bytes(problem_config), available_memory_bytes()
    if have is not None and need > have:
        pc = problem_config
        raise ValueError(
            f"one trial needs about {need / 2**30:.3g} GiB ({pc.users} users x {pc.samples} samples of"
            f" {pc.d_out}x{pc.d_in}{', float64' if pc.x64 else ''}), more than the {have / 2**30:.3g} GiB available:"
            " use fewer users or samples, float32 instead of --x64, or stream the users in chunks (fit_streaming)"
        )


def default_batch(problem_config, trials: int, budget_bytes: float = 2**28) -> int:
    """Trials per compiled call: at most ``budget_bytes`` a batch, as even as possible across calls.

    Each trial takes ``trial_bytes``; the last batch is padded to full size, so evenness saves
    padding (50 trials at up to 36 a call run as 2 x 25, not 36 + 36 of which 22 are padding).
    """
    largest = int(max(1, min(trials, budget_bytes // max(trial_bytes(problem_config), 1))))
    calls = -(-trials // largest)
    return -(-trials // calls)


def check_samples(problem_config, fit_config: FitConfig, samples: Sequence[int]) -> None:
    """Every fitted sample count of a grid must determine the personal solve (a ValueError says which)."""
    need = min_samples(problem_config.model, fit_config.rank, fit_config.personal)
    low = [n for n in samples if int(n) < need]
    if low:
        raise ValueError(
            f"samples {low} per user cannot determine a {fit_config.personal} rank-{fit_config.rank} personal part"
            f" in the {problem_config.model} model: use samples >= {need}"
        )


class SampleGroup(NamedTuple):
    """The sample counts of one compiled program."""

    fitted: tuple[int, ...]  # the counts fitted, ascending, each once
    generated: int  # samples per user drawn (the largest fitted count, or a caller's ``generate_samples``)


@dataclasses.dataclass(frozen=True)
class TrialRequest:
    """A trial run checked once and normalized (made by ``trial_request``): what the steps below it trust.

    Its configurations are validated and its algorithm registered; its sample counts are integers
    that determine the personal solve, sorted, de-duplicated and grouped into programs once. The
    plan, the compiled programs and the worker processes take it as it is and check nothing again.
    """

    problem_config: ProblemConfig | SharedInputConfig  # validated; ``samples``: what the configuration says
    fit_config: FitConfig  # validated, its algorithm registered
    trials: int  # >= 1; trial t uses fold_in(key, first_trial + t)
    fitted_samples: tuple[int, ...]  # counts fitted, in the order asked: the result's samples axis
    scalar: bool  # one count asked for, as None or an int: the result has no samples axis
    groups: tuple[SampleGroup, ...]  # one per compiled program, in ascending order of counts

    @property
    def distinct_samples(self) -> tuple[int, ...]:
        """The fitted counts ascending, each once (the groups' counts in order)."""
        return tuple(n for group in self.groups for n in group.fitted)

    def plan(self, fn: Callable, batch: int | None = None) -> TrialPlan:
        """Compile the request's programs for the per-problem function ``fn`` (``plan_trials``)."""
        return _plan(self, fn, batch)

    def run(
        self,
        key,
        fn: Callable,
        *,
        noise: float | None = None,
        batch: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
    ):
        """Every trial with ``fn`` (see ``run_trials`` for the arguments and the result)."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        return _run(self, key, fn, noise, batch, on_batch, workers)


def trial_request(
    problem_config: ProblemConfig | SharedInputConfig,
    fit_config: FitConfig,
    trials: int,
    *,
    samples: int | Sequence[int] | None = None,
    pad_ratio: float = float("inf"),
    generate_samples: int | None = None,
) -> TrialRequest:
    """Check a trial run once and normalize it into a ``TrialRequest``; a ValueError says what to change.

    Args:
      problem_config, fit_config: validated here, the only time in the run.
      trials: number of trials (>= 1).
      samples: the fitted samples per user (``run_trials``'s ``samples``): ``None`` fits
        ``problem_config.samples``, an int that many, a sequence every count of it.
      pad_ratio: fitted counts within this ratio share one program (``sample_buckets``).
      generate_samples: draw this many samples per user for every count (at least the largest;
        one program for all), e.g. a sweep cell's ``pad_samples``; default the largest count of
        each program's group.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not pad_ratio >= 1:
        raise ValueError(f"pad_ratio must be >= 1, got {pad_ratio}")
    problem_config.validate()
    fit_config.validate()
    resolve(fit_config)  # an unknown name fails here, with the list of known ones
    scalar = samples is None or np.ndim(samples) == 0
    asked = [problem_config.samples] if samples is None else [samples] if scalar else samples
    fitted_samples = tuple(_sample_count(n) for n in asked)
    if not fitted_samples:
        raise ValueError("samples is an empty list: give at least one sample count")
    check_samples(problem_config, fit_config, fitted_samples)
    if generate_samples is not None and generate_samples < max(fitted_samples):
        raise ValueError(f"generate_samples={generate_samples} is below the largest sample count {max(fitted_samples)}")
    distinct = tuple(sorted(set(fitted_samples)))  # the one sort of the counts
    if generate_samples is None:
        groups = tuple(SampleGroup(counts, counts[-1]) for counts in sample_buckets(distinct, pad_ratio))
    else:
        groups = (SampleGroup(distinct, int(generate_samples)),)
    fewest = min(group.generated for group in groups)
    if fewest < problem_config.samples:  # a smaller problem is generated: it must be valid too
        dataclasses.replace(problem_config, samples=fewest).validate()
    return TrialRequest(problem_config, fit_config, trials, fitted_samples, scalar, groups)


def run_trials(
    key,
    problem_config: ProblemConfig | SharedInputConfig,
    fit_config: FitConfig,
    trials: int,
    *,
    method: str = "colora",
    samples: int | Sequence[int] | None = None,
    noise: float | None = None,
    batch: int | None = None,
    pad_ratio: float = float("inf"),
    fn: Callable | None = None,
    on_batch: Callable[[int], None] | None = None,
    workers: int = 1,
):
    """Run ``trials`` independent trials, ``batch`` at a time, as compiled vmapped calls.

    Args:
      key: the experiment's PRNG key (trial t uses ``fold_in(key, t)``).
      problem_config, fit_config: static configurations (validated here, once: ``trial_request``).
      trials: number of trials.
      method: a name in ``registry.METHODS`` (default CoLoRA with ``fit_config.algorithm``).
      samples: the fitted samples per user. ``None`` fits ``problem_config.samples``; an int fits
        that many; a sequence fits every count of it, each on the first n samples of the same
        trials (common random numbers), adding a samples axis after the trials axis. Each program
        generates the largest count of its group (``pad_ratio``).
      noise: noise standard deviation (default ``problem_config.noise``); traced, so every
        noise level shares one executable.
      batch: trials per compiled call (default ``default_batch``). The last batch is padded
        to the same size, so one executable serves the whole run.
      pad_ratio: sample counts within this ratio of each other share one compiled program
        (``sample_buckets``; default one program for every count): a fit on ``n`` of ``N``
        stored samples costs what one on ``N`` does, so a finite ratio trades compiles for that.
      fn: a per-problem function ``fn(problem, key, fit_config)`` replacing ``method``
        (hashable and stable: a module-level function or a cached partial).
      on_batch: called with the number of trials finished after each batch (progress bars), or
        after each worker's block.
      workers: split the trials between this many processes, one core each, in contiguous blocks
        (``workers.parallel_map``; ``fn`` must then be picklable). On a CPU one process gains
        little from a second core (XLA splits each small operation over its threads) and one-core
        processes scale (``python -m colora_jax._src.bench.cores`` measures both), but each worker
        starts Python and JAX and loads or compiles its programs: worth it for runs of more than a
        few seconds. Blocks hold 2
        trials or more (a vmap over one trial can round differently), so fewer than 4 trials run
        here. The results equal those of one process on one core (``COLORA_JAX_THREADS=1``) bit
        for bit; a process on more cores can differ at rounding (``cpu_threads``).

    Returns:
      The batched result (``TrialResult`` by default) as NumPy arrays with a leading
      ``trials`` axis (then a samples axis, in the order given, when ``samples`` is a sequence).

    Example:
      >>> import jax, colora_jax as cj
      >>> pc = cj.ProblemConfig(model="sensing", users=20, d_out=8, d_in=8, rank=2, samples=24)
      >>> out = cj.run_trials(jax.random.key(0), pc, cj.FitConfig(rank=2), trials=4, samples=[6, 24])
      >>> out.evaluation.rel_error.shape
      (4, 2)
      >>> bool((out.evaluation.rel_error[:, 1] < 1e-3).all())
      True
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    request = trial_request(problem_config, fit_config, trials, samples=samples, pad_ratio=pad_ratio)
    return _run(request, key, fn or method_evaluator(method), noise, batch, on_batch, workers)


def _run(request: TrialRequest, key, fn, noise, batch, on_batch, workers):
    """A checked request's trials, in this process or (``workers > 1``) in worker processes."""
    if workers > 1 and request.trials > 1:
        if not picklable(fn):
            raise ValueError("fn cannot be sent to worker processes: use a module-level function, or workers=1")
        return _in_workers(request, key, fn, noise, batch, on_batch, workers)
    return _plan(request, fn, batch).run(key, noise=noise, on_batch=on_batch)


class _Program(NamedTuple):
    fitted_samples: tuple[int, ...]  # the sample counts fitted with this program
    generated_config: object  # the problem configuration it generates (``SampleGroup.generated`` samples)
    batch: int  # trials per call
    run: CompiledTrials  # the compiled generate and fit


@dataclasses.dataclass(frozen=True)
class TrialPlan:
    """The compiled programs of a checked request (``plan_trials``); ``run`` executes them."""

    request: TrialRequest
    programs: list[_Program]

    def run(
        self,
        key,
        *,
        noise=None,
        on_batch: Callable[[int], None] | None = None,
        first_trial: int = 0,
        on_data: Callable[[object], None] | None = None,
    ):
        """Every trial at every fitted sample count (see ``run_trials``).

        Trial ``t`` of the plan is trial ``first_trial + t`` of ``key`` (a worker's block of a
        larger run). ``on_data``, if given, sees each batch of generated problems (host arrays,
        trials in order), e.g. to hash the draws.
        """
        request = self.request
        level = request.problem_config.noise if noise is None else noise
        trials = request.trials
        by_count, done, total = {}, 0, len(request.fitted_samples) * trials
        for program in self.programs:
            size, parts = program.batch, {n: [] for n in program.fitted_samples}
            for start in range(0, trials, size):  # each batch generated once, fitted at every count
                keys = trial_keys(key, first_trial + start, first_trial + start + size)
                problems = program.run.generate(keys, jnp.asarray(level, program.generated_config.dtype))
                keep = min(size, trials - start)
                if on_data is not None:
                    on_data(jax.tree.map(lambda a, keep=keep: np.asarray(a)[:keep], jax.device_get(problems)))
                for n in program.fitted_samples:
                    out = jax.device_get(program.run.fit(problems, keys, jnp.asarray(n, jnp.int32)))
                    parts[n].append(jax.tree.map(lambda a, keep=keep: a[:keep], out))
                    done += keep
                    if on_batch is not None:
                        on_batch(done * trials // total)
                del problems
            for n in program.fitted_samples:
                by_count[n] = jax.tree.map(lambda *a: np.concatenate(a, axis=0), *parts[n])
        if request.scalar:
            return by_count[request.fitted_samples[0]]
        return jax.tree.map(lambda *a: np.stack(a, axis=1), *(by_count[n] for n in request.fitted_samples))


def plan_trials(
    problem_config,
    fit_config: FitConfig,
    trials: int,
    *,
    method: str = "colora",
    samples: int | Sequence[int] | None = None,
    batch: int | None = None,
    pad_ratio: float = float("inf"),
    fn: Callable | None = None,
    generate_samples: int | None = None,
) -> TrialPlan:
    """Check a ``run_trials`` call and compile its programs (one per ``sample_buckets`` group).

    ``samples`` are the fitted counts; ``generate_samples`` fixes how many samples per user are
    drawn (at least the largest fitted count; one program for all counts), e.g. a sweep cell's
    ``pad_samples``, so that a cell's result does not depend on which other cells share its call.
    """
    request = trial_request(
        problem_config, fit_config, trials, samples=samples, pad_ratio=pad_ratio, generate_samples=generate_samples
    )
    return _plan(request, fn or method_evaluator(method), batch)


def _plan(request: TrialRequest, fn: Callable, batch: int | None) -> TrialPlan:
    """The compiled programs of a checked request (nothing checked again, memory excepted)."""
    programs = []
    for group in request.groups:
        generated = generated_config(request.problem_config, group.generated)
        check_memory(generated)
        size = default_batch(generated, request.trials) if batch is None else max(1, min(batch, request.trials))
        programs.append(_Program(group.fitted, generated, size, _compiled(generated, request.fit_config, size, fn)))
    return TrialPlan(request, programs)


def _sample_count(n) -> int:
    """A sample count of a grid as an int; a float (10.5, or 10.0) is refused, not truncated."""
    try:
        return operator.index(n)
    except TypeError:
        raise ValueError(f"sample counts must be integers, got {n!r}: pass whole numbers of samples per user") from None


def _in_workers(request: TrialRequest, key, fn, noise, batch, on_batch, workers):
    """A checked request's trials over ``workers`` one-core processes, each a contiguous block."""
    trials = request.trials
    blocks = max(1, min(workers, trials // 2))  # blocks of 2 or more trials: a vmap of 1 can round differently
    sizes = [trials // blocks + (i < trials % blocks) for i in range(blocks)]
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    items = [
        (key, start, dataclasses.replace(request, trials=size), fn, batch, noise) for start, size in zip(starts, sizes)
    ]
    parts, done = {}, 0
    for i, part in parallel_map(_trial_block, items, workers):
        parts[i] = part
        done += sizes[i]
        if on_batch is not None:
            on_batch(done)
    return jax.tree.map(lambda *a: np.concatenate(a, axis=0), *(parts[i] for i in range(blocks)))


def _trial_block(block):
    """Trials ``start .. start + size - 1`` of a checked request (a worker's share)."""
    key, start, request, fn, batch, noise = block
    if _is_method_evaluator(fn):  # this process's own copy, so that its blocks share their programs
        fn = method_evaluator(fn.keywords["method"])
    return _plan(request, fn, batch).run(key, noise=noise, first_trial=start)
