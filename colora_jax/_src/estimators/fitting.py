"""What every estimator shares: the ``Estimator`` protocol, the one loop, checks, start and trace.

``fit(observations, config)`` (``algorithms.py``, the floor above the estimators) resolves
``config.algorithm`` to an ``Estimator`` object, checks everything once (``check_fit``) and runs
``Estimator.fit`` over the users (``users.Users``: in memory, sharded, or in chunks). The
pieces here are what every estimator shares:

* ``Estimator``: a frozen object with its options and two methods, ``start`` and ``step``;
  its ``fit`` drives them with ``run_loop``;
* ``check_fit`` (``check_observations``, ``check_counts``, ``check_finite``): trace-time
  ``ValueError`` that says what to change, run once at the public boundary;
* ``data_exponent`` / ``times_power_of_two``: with them ``fit`` brings concrete data far from
  order one to a power-of-two scale near one and returns the estimate and trace in the caller's units;
* ``setup`` / ``initialize``: one pass over the users for the sample count, the floor and the
  spectral (second moments across users) or random orthonormal start;
* ``run_loop``: the ``lax.while_loop`` with budget, relative-decrease and floor stopping;
* ``record``: the per-iteration metrics (one recorder for every estimator and the baselines),
  and ``Trace``, their history;
* ``normalize_U`` / ``normalize_V``: the gauge step ``U S V^T = Q (R S) V^T`` that keeps the
  shared factors orthonormal without changing any user's matrix.

The trace records, at index 0 the initialization and at index t the end of iteration t:
the objective ``f / N`` (mean squared residual per used sample, in the caller's units), and when
``truth`` is given the subspace distances of U, V to the truth and the relative error of all
users' W stacked. Entries past ``iterations`` are NaN.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from colora_jax._src.estimators.users import Users
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig, min_samples
from colora_jax._src.model.data import GroundTruth, Observations
from colora_jax._src.model.linalg import qr_positive, top_eigenvectors
from colora_jax._src.model.metrics import subspace_distance


class Estimate(NamedTuple):
    """Fitted factors: user i's matrix is ``U @ S[i] @ V.T``."""

    U: Float[Array, "d_out r"]  # shared output-side factor
    V: Float[Array, "d_in r"]  # shared input-side factor
    S: Float[Array, "k r r"]  # personal matrices (diagonal when fitted as "diag")

    @property
    def W(self) -> Float[Array, "k d_out d_in"]:
        """Every user's ``W_i = U S_i V^T``."""
        return jnp.einsum("or,krs,is->koi", self.U, self.S, self.V)


class Metrics(NamedTuple):
    """What is recorded after every iteration (one scalar each; the trace holds their history).

    A new per-iteration metric is one field here and one line in ``record``.
    """

    objective: Float[Array, "..."]  # mean squared residual per used sample
    subspace_distance_U: Float[Array, "..."]  # sin of the largest angle to truth.U (NaN w/o truth)
    subspace_distance_V: Float[Array, "..."]
    rel_error: Float[Array, "..."]  # ||W_hat - W*||_F / ||W*||_F over all users (NaN w/o truth)


class Trace(NamedTuple):
    """Per-iteration record of a fit (index 0 = initialization)."""

    objective: Float[Array, " T"]  # mean squared residual per used sample
    subspace_distance_U: Float[Array, " T"]  # sin of the largest angle to truth.U (NaN w/o truth)
    subspace_distance_V: Float[Array, " T"]
    rel_error: Float[Array, " T"]  # ||W_hat - W*||_F / ||W*||_F over all users (NaN w/o truth)
    iterations: Int[Array, ""]  # iterations run
    converged: Bool[Array, ""]  # stopped by tolerance or floor (not by the budget), on a resolvable floor
    finite_input: Bool[Array, ""]  # False if the used observations held NaN or inf


def make_trace(history: Metrics, iterations, converged, finite_input) -> Trace:
    """The ``Trace`` of a loop's metric history and its stopping state."""
    return Trace(**history._asdict(), iterations=iterations, converged=converged, finite_input=finite_input)


def record(
    objective,
    *,
    U=None,
    V=None,
    W=None,
    truth: GroundTruth | None = None,
    truth_U=None,
    truth_V=None,
    axis_name: str | None = None,
) -> Metrics:
    """The metrics of one iterate (every estimator records through this one function).

    Args:
      objective: the mean squared residual per used sample (already pooled).
      U, V: the iterate's shared factors, or None if the method has none (then NaN).
      W: the users' matrices (this device's users when sharded), or None (``rel_error`` NaN).
      truth: the ground truth (its ``U``, ``V``, ``W``), or None (distances NaN).
      truth_U, truth_V: planted factors when no full truth is at hand (streamed fits).
      axis_name: mesh axis of the users (the W error is pooled over it).
    """
    nan = jnp.full((), jnp.nan, objective.dtype)
    if truth is not None:
        truth_U, truth_V = truth.U, truth.V
    dU = nan if U is None or truth_U is None or U.shape[1] > U.shape[0] else subspace_distance(U, truth_U)
    dV = nan if V is None or truth_V is None or V.shape[1] > V.shape[0] else subspace_distance(V, truth_V)
    if W is None or truth is None:
        rel = nan
    else:
        err2 = blocks.pool(jnp.sum(jnp.square(W - truth.W)), axis_name)
        rel = jnp.sqrt(err2 / blocks.pool(jnp.sum(jnp.square(truth.W)), axis_name))
    return Metrics(objective, dU, dV, rel)


def single_shot_trace(metrics: Metrics, iters: int, finite_input) -> Trace:
    """Trace of a method without iterations: index 0 holds its result, the rest NaN."""
    history = Metrics(*(jnp.full((iters + 1,), jnp.nan, m.dtype).at[0].set(m) for m in metrics))
    return make_trace(history, jnp.asarray(0), jnp.asarray(True), finite_input)


# ----------------------------------------------------------------------------- validation


FIT_DTYPES: tuple[str, ...] = ("float32", "float64")  # what the least squares are computed in


def check_observations(obs: Observations, rank: int, personal: str) -> None:
    """Static checks (array types, dtypes, shapes, users, rank, samples, counts).

    Raises ValueError saying what to change.

    ``X`` and ``Y`` must be arrays of one real type, float32 or float64: half precision cannot
    resolve the normal equations, complex or integer data would turn into NaN or wrap around.
    ``counts`` must be integers (a float count is cut one way by the checks and another by the mask).
    """
    if obs.model not in ("regression", "sensing"):
        raise ValueError(f"unknown model {obs.model!r}: choose 'regression' or 'sensing'")
    X, Y = obs.X, obs.Y
    want_x = 4 if obs.model == "sensing" else 3
    want_y = 2 if obs.model == "sensing" else 3
    layout = "X (k, n, d_out, d_in), Y (k, n)" if obs.model == "sensing" else "X (k, n, d_in), Y (k, n, d_out)"
    for name, a in (("X", X), ("Y", Y)):
        ragged = not (hasattr(a, "shape") and hasattr(a, "dtype")) or np.dtype(a.dtype) == object
        if ragged:
            raise ValueError(
                f"observations {name} must be one array ({layout}), got {type(a).__name__}"
                f"{' of objects' if hasattr(a, 'dtype') else ''}: stack the users' samples into one array;"
                " pad users with fewer samples and give each user's number in counts="
            )
        dtype = np.dtype(a.dtype)
        if dtype.name not in FIT_DTYPES:
            why = (
                "complex data do not fit its real model"
                if jnp.issubdtype(dtype, jnp.complexfloating)
                else "half precision cannot resolve its least squares"
                if jnp.issubdtype(dtype, jnp.floating)
                else "its sums of squares need floating point"
            )
            raise ValueError(
                f"observations {name} are {dtype.name}, but fit computes in float32 or float64 ({why}):"
                f" pass real {name}.astype(jnp.float32) (or float64, with jax_enable_x64 on)"
            )
    x_type, y_type = (jax.dtypes.canonicalize_dtype(a.dtype) for a in (X, Y))
    if x_type != y_type:
        raise ValueError(f"observations X are {x_type} but Y are {y_type}: cast both to one precision")
    if len(X.shape) != want_x or len(Y.shape) != want_y:
        raise ValueError(f"{obs.model} observations must be {layout}; got X {X.shape}, Y {Y.shape}")
    if X.shape[:2] != Y.shape[:2]:
        raise ValueError(f"X and Y disagree on (users, samples): {X.shape[:2]} vs {Y.shape[:2]}")
    if obs.users < 1:
        raise ValueError(f"observations hold no users (X {X.shape}): fit needs at least one user")
    if obs.counts is not None:
        counts = obs.counts
        if not hasattr(counts, "dtype") or not jnp.issubdtype(counts.dtype, jnp.integer):
            raise ValueError(
                f"counts must be integer sample counts, got {getattr(counts, 'dtype', type(counts).__name__)}:"
                " pass jnp.asarray(counts, jnp.int32) (or use observations.with_counts)"
            )
        if counts.shape != (obs.users,):
            raise ValueError(f"counts must hold one sample count per user, shape ({obs.users},); got {counts.shape}")
    d_out, d_in = obs.dims
    if rank > min(d_out, d_in):
        raise ValueError(f"rank {rank} exceeds min(d_out, d_in) = {min(d_out, d_in)}: lower the rank")
    need = min_samples(obs.model, rank, personal)
    if obs.samples < need:
        raise ValueError(
            f"{obs.samples} samples per user cannot determine a {personal} rank-{rank} personal"
            f" part in the {obs.model} model: use at least {need} samples per user"
        )


def check_finite(obs: Observations) -> None:
    """Eager check for NaN/inf in the used samples of concrete observations (skipped when traced)."""
    arrays = (obs.X, obs.Y) + (() if obs.counts is None else (obs.counts,))
    if any(isinstance(a, (jax.core.Tracer, jax.ShapeDtypeStruct)) for a in arrays):
        return  # traced, or only shapes (users in chunks): the trace's finite_input says
    used = obs.masked()
    for name, a in (("X", used.X), ("Y", used.Y)):
        if not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"observations {name} contain NaN or inf: clean or drop those samples")


def check_counts(obs: Observations, rank: int, personal: str) -> None:
    """Eager check that concrete per-user ``counts`` lie in ``[min_samples, stored samples]``."""
    if obs.counts is None or isinstance(obs.counts, (jax.core.Tracer, jax.ShapeDtypeStruct)):
        return
    need = min_samples(obs.model, rank, personal)
    low, high = int(jnp.min(obs.counts)), int(jnp.max(obs.counts))
    if low < need or high > obs.samples:
        raise ValueError(
            f"counts must lie in [{need}, {obs.samples}] (the personal solve's minimum and the stored"
            f" samples); got [{low}, {high}]"
        )


# ----------------------------------------------------------------------------- the gauge


def normalize_U(U: Float[Array, "d_out r"], S: Float[Array, "k r r"], diag: bool):
    """Orthonormalize ``U`` and absorb the change into every ``S_i``: ``U S_i = Q (R S_i)``.

    With a diagonal personal part the gauge must stay diagonal, so the columns are scaled to
    unit norm instead (``S_i`` stays diagonal). No user's ``U S_i V^T`` changes.
    """
    if diag:
        n = jnp.linalg.norm(U, axis=0)
        return U / n[None, :], S * n[None, :, None]
    Q, R = qr_positive(U)
    return Q, jnp.einsum("ab,kbc->kac", R, S)


def normalize_V(V: Float[Array, "d_in r"], S: Float[Array, "k r r"], diag: bool):
    """Orthonormalize ``V`` and absorb the change into every ``S_i``: ``S_i V^T = (S_i R^T) Q^T``."""
    if diag:
        n = jnp.linalg.norm(V, axis=0)
        return V / n[None, :], S * n[None, None, :]
    Q, R = qr_positive(V)
    return Q, jnp.einsum("kab,cb->kac", S, R)


# ----------------------------------------------------------------------------- the loop


def stopping_floor(mean_square_measurement):
    """Objective below which iterating is pointless: ``(10 eps)^2`` times the mean ``||y||^2``."""
    return (10 * jnp.finfo(mean_square_measurement.dtype).eps) ** 2 * mean_square_measurement


def resolvable(floor):
    """Whether a stop at ``floor`` can mean convergence: the floor is a normal number.

    When the data are so small that the floor underflows (subnormal or zero), objectives round
    to zero and both stopping rules fire on rounding, not on the fit: the loop still stops (it
    cannot make progress it can see), but the trace must not say converged. ``setup`` puts the
    data on a scale near one, so in-memory fits only meet this with all-zero measurements.
    """
    return floor >= jnp.finfo(floor.dtype).tiny


def _zeros_like_shape(shape: jax.ShapeDtypeStruct):
    """Zeros of a shape, varying over the same manual mesh axes (inside ``shard_map``) as the value it stands for."""
    zeros = jnp.zeros(shape.shape, shape.dtype)
    vma = tuple(getattr(shape, "vma", None) or ())
    return jax.lax.pcast(zeros, vma, to="varying") if vma else zeros


def run_loop(body, params, iters: int, tol: float, floor, monotone: bool = True, stopped=None):
    """The iteration loop of every estimator, inside ``lax.while_loop``: one copy of each step.

    Args:
      body: ``params -> (current, metrics, next_params)``. At its t-th call (t = 0, 1, ...)
        ``current`` is the iterate after t iterations (at t = 0 the initialization) and
        ``metrics`` its ``Metrics``; ``next_params`` starts iteration t + 1. So the personal
        solve, the objective and the metrics each appear once in the compiled program, not
        once for the start and once in the loop; the price is one step computed and dropped
        at the end.
      params: what the first call starts from (e.g. the initial ``U``, ``V``).
      iters: iteration budget (at most ``iters + 1`` calls).
      tol: stop once the objective's relative decrease ``(f_prev - f) / f_prev <= tol``
        (only when ``monotone``; an optimizer that may increase f stops by budget or floor).
      floor: stop once the objective is ``<= floor``.
      monotone: whether each iteration cannot increase the objective (exact block steps); only
        then does ``tol`` stop the loop.
      stopped: an estimator's own stopping rule instead of ``tol``'s: ``params -> bool``, read on
        what the t-th call started from; True stops the loop after it (as ``tol`` would).

    Returns:
      ``(current, history, iterations, converged)``: the last ``current``; ``history`` a
      ``Metrics`` of ``(iters + 1,)`` arrays (index t = after iteration t, NaN past
      ``iterations``); ``converged`` True when tolerance or floor stopped the loop and the
      floor is ``resolvable``.
    """
    current0, metrics0, _ = jax.eval_shape(body, params)
    dtype = metrics0.objective.dtype
    history = Metrics(*(jnp.full((iters + 1,), jnp.nan, dtype) for _ in metrics0))
    zeros = jax.tree.map(_zeros_like_shape, current0)
    honest = resolvable(jnp.asarray(floor, dtype))

    def loop(carry):
        it, p, hist, f_prev, _, _, _ = carry
        current, m, nxt = body(p)
        m = Metrics(*m)
        hist = Metrics(*(h.at[it].set(v) for h, v in zip(hist, m)))
        f = m.objective
        stop = f <= floor
        if stopped is not None:
            stop = stop | stopped(p)
        elif monotone:
            stop = stop | ((it > 0) & (f_prev - f <= tol * f_prev))
        return it + 1, nxt, hist, f, stop | (it >= iters), stop & honest, current

    start = (
        jnp.asarray(0),
        params,
        history,
        jnp.full((), jnp.inf, dtype),
        jnp.asarray(False),
        jnp.asarray(False),
        zeros,
    )
    calls, _, history, _, _, converged, current = jax.lax.while_loop(lambda c: ~c[4], loop, start)
    return current, history, calls - 1, converged


def initialize(users: Users, config: FitConfig, key: PRNGKeyArray | None, moments=None):
    """Initial shared factors: spectral (top eigenvectors of the pooled second ``moments``) or random orthonormal."""
    if config.init == "spectral":
        MU, MV = moments
        return top_eigenvectors(MU, config.rank), top_eigenvectors(MV, config.rank)
    if key is None:
        raise ValueError("init='random' needs a PRNG key: pass key=jax.random.key(seed) to fit")
    layout = users.layout
    (d_out, d_in), dtype = layout.dims, layout.X.dtype
    ku, kv = jax.random.split(key)
    U = jnp.linalg.qr(jax.random.normal(ku, (d_out, config.rank), dtype))[0]
    V = jnp.linalg.qr(jax.random.normal(kv, (d_in, config.rank), dtype))[0]
    return U, V


UNSCALED_EXPONENTS = 16  # data whose largest |entry| lies in [2^-17, 2^16) are fitted as given


def data_exponent(a) -> int:
    """The power of two that brings the largest ``|a|`` of concrete ``a`` into ``[1/2, 1)``, or 0 near one.

    ``e`` with ``max |a|`` in ``[2^(e-1), 2^e)``, set to 0 when ``|e| <= UNSCALED_EXPONENTS``
    (data of order one are fitted exactly as given, so their results do not move by a bit) or
    when ``a`` holds no finite nonzero entry.
    """
    m = jnp.max(jnp.abs(a))
    e = int(jnp.frexp(m)[1])
    return e if bool(jnp.isfinite(m)) and abs(e) > UNSCALED_EXPONENTS else 0


def _power_of_two(e, dtype):
    """``2^e`` exactly, from its bit pattern (``|e|`` below the dtype's largest exponent)."""
    finfo = jnp.finfo(dtype)
    bits = jnp.int32 if finfo.bits == 32 else jnp.int64
    return jax.lax.bitcast_convert_type((e.astype(bits) + (finfo.maxexp - 1)) << finfo.nmant, dtype)


def times_power_of_two(x, e):
    """``x * 2^e`` for an integer ``e``, exact in floating point (only the exponents move).

    Exact unless the result leaves the dtype's range; three factors, so that no factor does. ``x``
    itself where ``e == 0`` (selected, not multiplied by one: XLA may reassociate a product with the
    computation of ``x``, which would move results of data of order one by a rounding).
    """
    e = jnp.asarray(e, jnp.int32)
    first = e // 3
    second = (e - first) // 2
    scaled = x
    for part in (first, second, e - first - second):
        scaled = scaled * _power_of_two(part, x.dtype)
    return jnp.where(e == 0, x, scaled)


class Setup(NamedTuple):
    """What every algorithm starts from: the sample count, the floor, the start."""

    count: Float[Array, ""]  # samples used, all users (pooled)
    floor: Float[Array, ""]  # the stopping floor of the mean squared residual
    U: Float[Array, "d_out r"]  # initial shared factors
    V: Float[Array, "d_in r"]
    finite: Bool[Array, ""]  # every used sample finite (every shard, every chunk)


def setup(users: Users, config: FitConfig, key, start=None) -> Setup:
    """The pooled sample count, the stopping floor, the finiteness flag, and ``U``, ``V`` to start from.

    One pass over the users (``Users.sum``): counts, ``sum ||y||^2``, non-finite entries and, for
    the spectral start, the second moments. ``start = (U0, V0)`` replaces the configured
    initialization. The inputs are trusted: ``check_fit`` ran at the public boundary.
    """
    spectral = config.init == "spectral" and start is None

    def part(d, _):
        bad = (~(jnp.all(jnp.isfinite(d.X)) & jnp.all(jnp.isfinite(d.Y)))).astype(jnp.int32)
        moments = blocks.spectral_moments(d) if spectral else None
        return (jnp.sum(d.counts), jnp.sum(jnp.square(d.Y)), bad, moments), None

    (count, yy, bad, moments), _ = users.sum(part)
    floor = stopping_floor(yy / count)
    U, V = initialize(users, config, key, moments) if start is None else start
    return Setup(count, floor, U, V, bad == 0)


def check_fit(layout: Observations, config: FitConfig, estimator: "Estimator", key=None) -> None:
    """Every static check of a fit, once, at the public boundary (ValueError saying what to change).

    ``layout``: the observations (or their shapes, for users visited in chunks). Concrete values
    are checked too: counts in range, no NaN or inf in a used sample (skipped when traced).
    """
    config.validate()
    estimator.check(config)
    if key is None and (estimator.needs_key or config.init == "random"):
        why = "init='random'" if config.init == "random" else f"{type(estimator).__name__} with restarts"
        raise ValueError(f"{why} needs a PRNG key (it draws random starts): pass key=jax.random.key(seed) to fit")
    check_observations(layout, config.rank, config.personal)
    check_counts(layout, config.rank, config.personal)
    check_finite(layout)


def metrics_of(users: Users, objective, estimate: Estimate, truth) -> Metrics:
    """``record`` of an iterate: with every user in memory, the W error too; in chunks, the subspaces only."""
    if users.in_memory:
        W = None if truth is None else estimate.W
        return record(objective, U=estimate.U, V=estimate.V, W=W, truth=truth, axis_name=users.axis_name)
    truth_U, truth_V = (None, None) if truth is None else truth
    return record(objective, U=estimate.U, V=estimate.V, truth_U=truth_U, truth_V=truth_V)


def personal_start(s: Setup, config: FitConfig, users: Users):
    """``(U, V, S)`` at the start, for the estimators that move all three (GNMR, ScaledGD).

    Every ``S_i`` is the exact personal solve at ``(s.U, s.V)``; then the gauge is normalized
    (``normalize_U``, ``normalize_V``), which changes no user's matrix.
    """
    diag = config.personal == "diag"
    _, S = users.sum(lambda d, _: (None, blocks.personal_step(d, s.U, s.V, diag)))
    U, S = normalize_U(s.U, S, diag)
    V, S = normalize_V(s.V, S, diag)
    return U, V, S


class Stages(NamedTuple):
    """How the trial driver splits a fit (``Estimator.stages``, run by ``trials.SplitFit``).

    ``first`` is fitted on every trial. Then, round after round, ``then`` is fitted only on the
    trials that no fit so far has made exact (its final objective at the stopping floor), and
    each keeps the lowest final objective of its fits (the earlier on a tie).
    """

    first: Estimator
    then: Estimator
    restarts: int = 0  # 0: one round of ``then`` from the configured start; else this many rounds,
    #   round j from the j-th keyed random start (``restart_keys``: the estimator's in-program restarts)


def restart_keys(key: PRNGKeyArray, restarts: int) -> PRNGKeyArray:
    """The keys of an estimator's ``restarts`` random starts drawn from its fit key ``key``.

    Restart ``j`` (1-based) starts from ``initialize`` with ``init="random"`` and key ``[j - 1]``,
    inside one program and in the trial driver's rounds (``Stages.restarts``) alike.
    """
    return jax.random.split(jax.random.fold_in(key, 1), restarts)


@dataclasses.dataclass(frozen=True)
class Estimator:
    """An estimator of the CoLoRA model ``W_i = U S_i V^T``: a frozen object carrying its own options.

    The protocol is two methods, ``start`` and ``step``; ``fit`` drives them with the one loop
    (``run_loop``: budget, relative decrease, floor, trace) over any ``Users`` (in memory,
    sharded, in chunks). Every sum over users inside ``step`` goes through ``users.sum`` (or
    ``users.pool`` for one already formed on this device's users), so the estimator is written
    once for every execution mode. Objects are hashable: they are static arguments of ``jit``
    (``FitConfig(algorithm=AltGD(step_size=0.3))``).

    A new estimator is a subclass in its own module plus one entry in ``algorithms.ALGORITHMS``;
    the conformance test (tests/test_estimators.py) runs every registered one.
    """

    monotone: ClassVar[bool] = True  # each iteration cannot increase the objective (then tol may stop it)
    needs_key: ClassVar[bool] = False  # draws random numbers whatever the init (then fit needs key=)

    def check(self, config: FitConfig) -> None:
        """ValueError unless the options (and ``config``, where they interact) are valid."""

    def configured(self, config: FitConfig) -> "Estimator":
        """This estimator with ``FitConfig``'s shorthand fields applied (a registry default named by a string)."""
        return self

    def in_units(self, x_exponent: int) -> "Estimator":
        """This estimator for data whose ``X`` is divided by ``2^x_exponent`` (options with units)."""
        return self

    @property
    def stages(self) -> Stages | None:
        """How this fit splits into a first fit and rounds on the trials it leaves inexact (``Stages``).

        None when it does not split so. The trial driver then runs ``first`` on every trial and
        each round only on the trials still inexact, in smaller batches (``trials.SplitFit``): a
        trial that needs more work does not hold the batch.
        """
        return None

    def start(self, s: Setup, config: FitConfig, users: Users):
        """The loop's first parameters (default: the initial ``(U, V)``)."""
        return s.U, s.V

    def step(self, params, s: Setup, config: FitConfig, users: Users):
        """One iteration: ``(current Estimate, its sum of squared residuals, next params)``.

        ``current`` is the iterate ``params`` stand for (``run_loop``'s protocol, before the
        metrics are recorded).
        """
        raise NotImplementedError

    def fit(self, users: Users, config: FitConfig, *, key=None, truth=None, start=None):
        """``(Estimate, Trace)`` from the configured start (or ``start = (U0, V0)``); inputs trusted.

        ``truth``: a ``GroundTruth`` with every user in memory, ``(U*, V*)`` for users in chunks.
        """
        s = setup(users, config, key, start)
        params = self.start(s, config, users)

        def body(p):
            current, sse, nxt = self.step(p, s, config, users)
            return current, metrics_of(users, sse / s.count, current, truth), nxt

        estimate, history, iterations, done = run_loop(body, params, config.iters, config.tol, s.floor, self.monotone)
        return estimate, make_trace(history, iterations, done, s.finite)
