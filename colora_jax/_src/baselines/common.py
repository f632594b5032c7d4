"""What every method returns, and the helpers the baselines share (sample checks, the objective)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from colora_jax._src.estimators import fitting
from colora_jax._src.estimators.fitting import Metrics, Trace
from colora_jax._src.model.data import GroundTruth, Observations, predict


class MethodFit(NamedTuple):
    """What a method estimated: every user's matrix, its shared factors (if any), a trace."""

    W: Float[Array, "k d_out d_in"]  # the users' estimated matrices
    U: Float[Array, "d_out r"] | None  # shared output-side factor (None if the method has none)
    V: Float[Array, "d_in r"] | None  # shared input-side factor (None if the method has none)
    trace: Trace  # per iteration (or round); NaN where not applicable or past the end


def objective(obs: Observations, W) -> Float[Array, ""]:
    """Mean squared residual per used sample (summed over outputs for regression), as in ``fit``."""
    used = obs.masked()
    pred = jax.vmap(predict, in_axes=(0, 0, None))(W, used.X, obs.model)
    return jnp.sum(jnp.square(used.Y - pred)) / jnp.sum(obs.sample_counts()).astype(W.dtype)


def floor(obs: Observations):
    """``fit``'s stopping floor, from the mean squared used measurement."""
    used = obs.masked()
    return fitting.stopping_floor(jnp.sum(jnp.square(used.Y)) / jnp.sum(obs.sample_counts()).astype(used.Y.dtype))


def finite(obs: Observations):
    """Whether every used sample is finite."""
    used = obs.masked()
    return jnp.all(jnp.isfinite(used.X)) & jnp.all(jnp.isfinite(used.Y))


def record_fit(obs: Observations, W, U, V, truth: GroundTruth | None) -> Metrics:
    """``fitting.record`` of a method's iterate, its objective computed from ``W``."""
    return fitting.record(objective(obs, W), U=U, V=V, W=W, truth=truth)


def iterate_fit(step, params, metrics_of, iters: int, tol: float, floor_value, monotone: bool):
    """``fitting.run_loop`` for ``params <- step(params)``, recording ``metrics_of(params)``."""
    return fitting.run_loop(lambda p: (p, metrics_of(p), step(p)), params, iters, tol, floor_value, monotone)


def need_samples(obs: Observations, rows: int, cols: int, method: str) -> None:
    """Refuse an undetermined personal least squares for a ``rows x cols`` personal factor S_i.

    User i's data determine ``S_i`` in ``W_i = U S_i V^T`` (U: d_out x rows, V: d_in x cols)
    when sensing has ``n >= rows cols`` equations, and when regression's ``X_i V`` (n x cols)
    has full column rank, ``n >= cols``. Checked on the stored samples (and on concrete counts).
    """
    need = cols if obs.model == "regression" else rows * cols
    low = obs.samples
    if obs.counts is not None and not isinstance(obs.counts, jax.core.Tracer):
        low = int(jnp.min(obs.counts))
    if low < need:
        raise ValueError(
            f"{method}: {low} samples per user cannot determine a {rows}x{cols} personal"
            f" factor in the {obs.model} model: use at least {need} samples per user"
        )
