"""The algorithms (estimators of the CoLoRA model) by name, and ``fit``, which dispatches on the name.

``ALGORITHMS`` maps every ``FitConfig.algorithm`` to its fit function by a real import, so the
estimators are found by any import tool; ``fit`` looks ``config.algorithm`` up here (an unknown
name is a ValueError listing the known ones). This floor sits on the estimators and under the
baselines, which call ``fit``. Adding an estimator is one module in ``estimators/`` plus one
entry below.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
from jaxtyping import PRNGKeyArray

from colora_jax._src.estimators.altgd import fit_altgd
from colora_jax._src.estimators.altmin import fit_altmin
from colora_jax._src.estimators.centered import fit_centered
from colora_jax._src.estimators.fitting import (
    Estimate,
    Trace,
    check_counts,
    check_finite,
    check_observations,
    data_exponent,
    times_power_of_two,
)
from colora_jax._src.estimators.gnmr import fit_gnmr
from colora_jax._src.estimators.joint import fit_joint
from colora_jax._src.estimators.scaledgd import fit_scaledgd
from colora_jax._src.estimators.varpro import fit_varpro, fit_varpro_plain, fit_varpro_restarts
from colora_jax._src.model.config import FitConfig
from colora_jax._src.model.data import GroundTruth, Observations


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """An estimator of the CoLoRA model ``U S_i V^T`` (``FitConfig.algorithm``)."""

    name: str
    fit: Callable  # called as fit(observations, config, *, key, truth, optimizer, axis_name)
    description: str  # one line, for --help and the docs table
    first_stage: str | None = None  # an algorithm whose fit this one returns unchanged wherever that fit is
    #   exact (reaches the stopping floor): the trial driver runs it on every trial, then this one only on
    #   the others, in a smaller batch (trials.SplitFit), so a hard trial does not hold the whole batch


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "altmin",
            fit_altmin,
            "exact alternating minimization: per-user r^2 least squares, pooled U and V least squares",
        ),
        Algorithm(
            "altgd",
            fit_altgd,
            "exact personal step, one gradient step on U and on V (FedRep's scheme); no (d r)^2 system",
        ),
        Algorithm(
            "adam",
            fit_joint,
            "joint first-order training of U, V and every S_i with optax (adam by default), as LoRA is trained",
        ),
        Algorithm(
            "varpro",
            fit_varpro,
            "variable projection: Levenberg-Marquardt on U, V with every S_i eliminated exactly",
        ),
        Algorithm(
            "varpro-plain",
            fit_varpro_plain,
            "varpro without the ridge continuation (the first fit of varpro's fallback)",
        ),
        Algorithm(
            "varpro-restarts",
            fit_varpro_restarts,
            "varpro, then keyed random restarts only while no fit is exact (on noiseless data a fit above"
            " the stopping floor is a spurious stationary point); the lowest objective wins",
            first_stage="varpro-plain",
        ),
        Algorithm(
            "centered",
            fit_centered,
            "exact alternating minimization with S_i pulled to a shared centre:"
            " + ridge sum_i n_i ||U (S_i - S_bar) V^T||^2",
        ),
        Algorithm(
            "gnmr",
            fit_gnmr,
            "GNMR (Zilber-Nadler): one undamped Gauss-Newton least squares in (U, V, S_i) per iteration,"
            " its min-norm solution (setting variant); S_i eliminated by a Schur complement",
        ),
        Algorithm(
            "scaledgd",
            fit_scaledgd,
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
      config: static settings: ``algorithm`` (a name in ``ALGORITHMS``: altmin, altgd,
        adam, varpro, centered, gnmr, scaledgd), rank, personal part, iterations, tolerance, initialization.
      key: PRNG key, needed only for ``init="random"``.
      truth: optional ground truth; when given, the trace records distances to it.
      optimizer: for ``algorithm="adam"``: any optax transformation (default
        ``optax.adam(config.learning_rate)``); it minimizes the mean squared residual.
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
    config.validate()
    algorithm(config.algorithm)  # an unknown name fails here, with the list of known ones
    check_observations(observations, config.rank, config.personal)
    check_counts(observations, config.rank, config.personal)
    check_finite(observations)
    if not _traced(observations):
        used = observations.masked()
        x_exponent, y_exponent = data_exponent(used.X), data_exponent(used.Y)
        if x_exponent or y_exponent:
            return _fit_rescaled(observations, config, key, truth, optimizer, axis_name, x_exponent, y_exponent)
    return _fit(observations, config, key, truth, optimizer, axis_name)


def _traced(observations: Observations) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in (observations.X, observations.Y))


def _fit_rescaled(observations, config, key, truth, optimizer, axis_name, x_exponent: int, y_exponent: int):
    """``_fit`` on ``X 2^-x_exponent``, ``Y 2^-y_exponent``, answered in the caller's units.

    In the fit's units ``W`` is ``W 2^(x_exponent - y_exponent)``: the truth is converted for the
    trace's errors, the estimate's ``S`` (which carries the scale) and the objective back; the
    ridge penalty ``lambda n_i ||U Delta_i V^T||^2`` is on the caller's ``W``, so its lambda
    becomes ``lambda 2^(-2 x_exponent)``. Powers of two make every conversion exact.
    """
    scaled = dataclasses.replace(
        observations,
        X=times_power_of_two(observations.X, -x_exponent),
        Y=times_power_of_two(observations.Y, -y_exponent),
    )
    if truth is not None:
        truth = dataclasses.replace(truth, W=times_power_of_two(truth.W, x_exponent - y_exponent))
    if config.ridge:
        config = dataclasses.replace(config, ridge=float(config.ridge) * 2.0 ** (-2 * x_exponent))
    estimate, trace = _fit(scaled, config, key, truth, optimizer, axis_name)
    estimate = estimate._replace(S=times_power_of_two(estimate.S, y_exponent - x_exponent))
    return estimate, trace._replace(objective=times_power_of_two(trace.objective, 2 * y_exponent))


@functools.partial(jax.jit, static_argnums=(1, 4, 5))
def _fit(observations, config, key, truth, optimizer, axis_name):
    extra = {} if optimizer is None else {"optimizer": optimizer}  # only the first-order algorithms take one
    return ALGORITHMS[config.algorithm].fit(observations, config, key=key, truth=truth, axis_name=axis_name, **extra)
