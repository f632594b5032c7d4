"""The algorithms (estimators of the CoLoRA model) by name, and ``fit``, which resolves and runs one.

``ALGORITHMS`` maps every registered name to an ``Algorithm``: a default ``Estimator`` object
(imported for real, so any import tool sees the estimators) and a one-line description.
``FitConfig.algorithm`` is a name here or an estimator object with its own options
(``FitConfig(algorithm=AltGD(step_size=0.3))``); ``resolve`` turns either into the object, once,
at the public boundary (``fit``, ``fit_chunks``), where ``check_fit`` also checks everything;
the estimators trust what they are given. This floor sits on the estimators and under the
baselines, which call ``fit``. Adding an estimator is one module in ``estimators/`` plus one
entry below; the conformance test runs it in every execution mode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src.estimators.altgd import AltGD
from colora_jax._src.estimators.altmin import AltMin
from colora_jax._src.estimators.centered import Centered
from colora_jax._src.estimators.fitting import Estimate, Estimator, Trace, check_fit, data_exponent, times_power_of_two
from colora_jax._src.estimators.gnmr import GNMR
from colora_jax._src.estimators.joint import Adam
from colora_jax._src.estimators.scaledgd import ScaledGD
from colora_jax._src.estimators.users import AllUsers, UserChunks, stored_chunks
from colora_jax._src.estimators.varpro import ROBUST, VarPro
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig
from colora_jax._src.model.data import GroundTruth, Observations


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A registered estimator: its name (``FitConfig.algorithm``), default object and description."""

    name: str
    estimator: Estimator  # the default options; FitConfig's shorthand fields apply to it (Estimator.configured)
    description: str  # one line, for --help and the docs table


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "altmin",
            AltMin(),
            "exact alternating minimization: per-user r^2 least squares, pooled U and V least squares",
        ),
        Algorithm(
            "altgd",
            AltGD(),
            "exact personal step, one gradient step on U and on V (FedRep's scheme); no (d r)^2 system",
        ),
        Algorithm(
            "adam",
            Adam(),
            "joint first-order training of U, V and every S_i with optax (adam by default), as LoRA is trained",
        ),
        Algorithm(
            "varpro",
            VarPro(),
            "variable projection: Levenberg-Marquardt on U, V with every S_i eliminated exactly",
        ),
        Algorithm(
            "varpro-plain",
            VarPro(continuation="never"),
            "varpro without the ridge continuation (Levenberg-Marquardt from the spectral start)",
        ),
        Algorithm(
            "varpro-restarts",
            ROBUST,
            "varpro with a shorter continuation and an earlier stall, then up to 16 keyed random restarts only"
            " while no fit is exact (on noiseless data a fit above the stopping floor is a spurious stationary"
            " point); the lowest objective wins",
        ),
        Algorithm(
            "centered",
            Centered(),
            "exact alternating minimization with S_i pulled to a shared centre:"
            " + ridge sum_i n_i ||U (S_i - S_bar) V^T||^2",
        ),
        Algorithm(
            "gnmr",
            GNMR(),
            "GNMR (Zilber-Nadler): one undamped Gauss-Newton least squares in (U, V, S_i) per iteration,"
            " its minimum-norm step (updating variant); S_i eliminated by a Schur complement",
        ),
        Algorithm(
            "scaledgd",
            ScaledGD(),
            "ScaledGD (Tong-Ma-Chi): simultaneous gradient steps on U, V, S_i, each preconditioned by the"
            " inverse Gram of the other factors; eta = step_size",
        ),
    )
}


def algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; ValueError listing the known ones otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def resolve(config: FitConfig, optimizer=None) -> Estimator:
    """The estimator ``config.algorithm`` names (with ``FitConfig``'s shorthand fields) or is.

    ``optimizer`` (``fit``'s argument) goes into an estimator that takes one (``Adam``); any other
    refuses it with a ValueError.
    """
    chosen = config.algorithm
    if isinstance(chosen, Estimator):
        estimator = chosen
    elif isinstance(chosen, str):
        estimator = algorithm(chosen).estimator.configured(config)
    else:
        raise ValueError(
            f"FitConfig.algorithm must be a registered name ({', '.join(ALGORITHMS)}) or an Estimator"
            f" object such as AltGD(step_size=0.3), got {chosen!r}"
        )
    if optimizer is not None:
        if "optimizer" not in {f.name for f in dataclasses.fields(estimator)}:
            raise ValueError(
                f"{type(estimator).__name__} takes no optimizer (only adam's steps come from optax): drop optimizer="
            )
        estimator = dataclasses.replace(estimator, optimizer=optimizer)
    return estimator


def fit(
    observations: Observations,
    config: FitConfig = FitConfig(),
    *,
    key: PRNGKeyArray | None = None,
    truth: GroundTruth | None = None,
    optimizer=None,
    axis_name: str | None = None,
) -> tuple[Estimate, Trace]:
    """Fit the shared factors and personal matrices of all users.

    Args:
      observations: the users' training data (``Observations``; ``counts`` selects a prefix
        of each user's samples).
      config: static settings: ``algorithm`` (a name in ``ALGORITHMS``: altmin, altgd, adam,
        varpro, centered, gnmr, scaledgd, ...; or an ``Estimator`` object with its options),
        rank, personal part, iterations, tolerance, initialization.
      key: PRNG key, needed for ``init="random"`` and for estimators that draw (restarts).
      truth: optional ground truth; when given, the trace records distances to it.
      optimizer: for ``algorithm="adam"``: any optax transformation (default
        ``optax.adam(config.learning_rate)``); it minimizes the mean squared residual. Any
        other estimator refuses it (ValueError).
      axis_name: mesh axis over which users are sharded (inside ``shard_map``); the pooled
        sums become ``psum``s over it. ``None`` for a single device.

    Returns:
      ``(Estimate, Trace)``. Iteration stops after ``config.iters`` iterations, or (all but
      adam) once the objective's relative decrease is below ``config.tol``, or when the
      objective reaches ``(10 eps)^2`` times the mean squared measurement.

    Called on concrete arrays whose largest entries lie outside ``2^(+-16)``, ``fit`` divides X
    and Y by powers of two (exact) that bring them near one, fits, and returns the estimate and
    the trace in the caller's units (the objective, a squared residual, may then under- or
    overflow the dtype; ``FitConfig.ridge`` is converted too): the result does not depend on the
    units of X and Y. Inside ``jit``/``vmap`` the data are fitted as given; where their squares
    underflow, the trace's ``converged`` is False (``resolvable``).

    Called on concrete arrays, ``fit`` checks them (NaN or inf in a used sample is a ValueError)
    and runs as one compiled program (cached per configuration and shapes); inside ``jit``,
    ``vmap`` or ``shard_map`` it is traced into the caller's program.

    Example:
      >>> import jax, colora_jax as cj
      >>> pc = cj.ProblemConfig(model="sensing", users=20, d_out=8, d_in=8, rank=2, samples=24)
      >>> problem = cj.generate(jax.random.key(0), pc)
      >>> estimate, trace = cj.fit(problem.train, cj.FitConfig(rank=2), truth=problem.truth)
      >>> bool(trace.rel_error[trace.iterations] < 1e-3), estimate.S.shape
      (True, (20, 2, 2))
    """
    estimator = resolve(config, optimizer)
    check_fit(observations, config, estimator, key)
    if not _traced(observations):
        used = observations.masked()
        x_exponent, y_exponent = data_exponent(used.X), data_exponent(used.Y)
        if x_exponent or y_exponent:
            return _fit_rescaled(observations, config, estimator, key, truth, axis_name, x_exponent, y_exponent)
    return _fit(observations, config, estimator, key, truth, axis_name)


def _traced(observations: Observations) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in (observations.X, observations.Y))


def _fit_rescaled(observations, config, estimator, key, truth, axis_name, x_exponent: int, y_exponent: int):
    """``_fit`` on ``X 2^-x_exponent``, ``Y 2^-y_exponent``, answered in the caller's units.

    In the fit's units ``W`` is ``W 2^(x_exponent - y_exponent)``: the truth is converted for the
    trace's errors, the estimate's ``S`` (which carries the scale) and the objective back; options
    with units follow (``Estimator.in_units``: the centred penalty ``lambda n_i ||U Delta_i V^T||^2``
    is on the caller's ``W``, so its lambda becomes ``lambda 2^(-2 x_exponent)``). Powers of two
    make every conversion exact.
    """
    scaled = dataclasses.replace(
        observations,
        X=times_power_of_two(observations.X, -x_exponent),
        Y=times_power_of_two(observations.Y, -y_exponent),
    )
    if truth is not None:
        truth = dataclasses.replace(truth, W=times_power_of_two(truth.W, x_exponent - y_exponent))
    estimate, trace = _fit(scaled, config, estimator.in_units(x_exponent), key, truth, axis_name)
    estimate = estimate._replace(S=times_power_of_two(estimate.S, y_exponent - x_exponent))
    return estimate, trace._replace(objective=times_power_of_two(trace.objective, 2 * y_exponent))


@functools.partial(jax.jit, static_argnums=(1, 2, 5))
def _fit(observations, config, estimator, key, truth, axis_name):
    return estimator.fit(AllUsers(blocks.design(observations), axis_name), config, key=key, truth=truth)


def fit_chunks(
    chunk: Callable[[Array], Observations],
    nchunks: int,
    config: FitConfig = FitConfig(),
    *,
    key: PRNGKeyArray | None = None,
    truth_U: Float[Array, "d_out r"] | None = None,
    truth_V: Float[Array, "d_in r"] | None = None,
    axis_name: str | None = None,
) -> tuple[Estimate, Trace]:
    """``fit`` with the users visited chunk by chunk: memory linear in the users, nothing quadratic in k.

    ``fit`` holds every user's design at once (for the regression model the per-user statistics
    ``C_i = X_i^T X_i``, ``B_i = X_i^T Y_i`` are ``2 k d^2`` numbers, more than the data itself
    when ``n < d``). Here every sum over users is a ``lax.scan`` over chunks that builds each
    chunk's design and adds its part (``users.UserChunks``): the same estimator, the sum over
    users split into a sum over chunks (and, given ``axis_name``, over devices). Held at once:
    the per-user parameters (``k r^2`` for ``S``), one chunk's intermediates, and whatever
    ``chunk(c)`` reads: the stored observations (``fit_streaming``) or nothing when ``chunk``
    regenerates chunk ``c`` from its key on every pass.

    Args:
      chunk: ``chunk(c)`` returns the observations of users ``c m .. (c+1) m - 1`` (``c`` is a
        traced integer: slice stored arrays with ``lax.dynamic_slice_in_dim``, or generate them
        with ``generate(key, config, first_user=c m)``). Every chunk has the same shapes.
      nchunks: number of chunks; the users are ``nchunks * m``.
      config: as for ``fit`` (any registered algorithm, or an estimator object).
      key: as for ``fit``.
      truth_U, truth_V: optional planted shared factors; the trace then records the subspace
        distances (``rel_error`` stays NaN: the users' ``W`` are never formed).
      axis_name: as for ``fit``: chunks of users on each device of a ``'users'`` mesh axis.

    Returns:
      ``(Estimate, Trace)`` as ``fit`` returns them (``S`` of all users, ``k r^2`` numbers); data
      far from order one are fitted as given (no rescaling).
    """
    estimator = resolve(config)
    users = UserChunks(chunk, nchunks, axis_name)
    check_fit(users.layout, config, estimator, key)
    truth = None if truth_U is None and truth_V is None else (truth_U, truth_V)
    return estimator.fit(users, config, key=key, truth=truth)


def fit_streaming(observations: Observations, config: FitConfig = FitConfig(), *, nchunks: int, **kwargs):
    """``fit_chunks`` over stored observations cut into ``nchunks`` chunks of users (see there)."""
    return fit_chunks(stored_chunks(observations, nchunks), nchunks, config, **kwargs)


def fit_varpro_chunks(
    chunk,
    nchunks: int,
    config: FitConfig = FitConfig(),
    *,
    key=None,
    truth_U=None,
    truth_V=None,
    axis_name=None,
    **options,
):
    """``fit_chunks`` with ``algorithm=VarPro(**options)`` (the form before 0.2)."""
    config = dataclasses.replace(config, algorithm=VarPro.from_options(**options))
    return fit_chunks(chunk, nchunks, config, key=key, truth_U=truth_U, truth_V=truth_V, axis_name=axis_name)
