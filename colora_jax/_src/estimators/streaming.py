"""AltMin over users streamed in chunks: memory linear in the users, nothing quadratic in k.

``fit`` holds every user's design at once (for the regression model the per-user statistics
``C_i = X_i^T X_i``, ``B_i = X_i^T Y_i`` are ``2 k d^2`` numbers, more than the data itself when
``n < d``). ``fit_chunks`` instead visits the users ``m`` at a time (a *chunk* of users) with
``lax.scan``: for each chunk it builds that chunk's ``Design`` and adds the chunk's *unpooled*
part of the normal equations (``blocks.output_normal``, ``blocks.input_normal``,
``blocks.spectral_moments``)

    G = sum_chunks sum_{i in chunk} G_i,

the same math as ``fit`` with the sum over users split into a sum over chunks (and, given
``axis_name``, over devices). Held at once: the personal ``S`` (``k r^2``), one chunk's
intermediates, and whatever ``chunk(c)`` reads — the stored observations (``fit_streaming``)
or nothing at all when ``chunk`` regenerates chunk ``c`` from its key on every pass.

One iteration makes two passes over the users: the personal step, the U-step normal equations
and the objective ``f = sum ||y - A(U S_i V^T)||^2`` (from raw residuals); then the V-step
normal equations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src.estimators.fitting import (
    Estimate,
    Trace,
    check_observations,
    make_trace,
    normalize_U,
    normalize_V,
    record,
    run_loop,
    stopping_floor,
)
from colora_jax._src.model import blocks as bk
from colora_jax._src.model.config import FitConfig, ProblemConfig
from colora_jax._src.model.data import TRUTH_STREAM, Observations, generate, shared_factors
from colora_jax._src.model.linalg import top_eigenvectors


def sum_over_chunks(part, S, nchunks):
    """``sum_c part(c, S_c)[0]`` over chunks with ``lax.scan``, and the stacked ``part(c, S_c)[1]``."""
    xs = (jnp.arange(nchunks), S.reshape((nchunks, -1) + S.shape[1:]))
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(lambda x: part(*x)[0], jax.tree.map(lambda a: a[0], xs))
    )

    def step(total, x):
        value, out = part(*x)
        return jax.tree.map(jnp.add, total, value), out

    total, out = jax.lax.scan(step, zeros, xs)
    return total, out


def fit_chunks(
    chunk: Callable[[Array], Observations],
    nchunks: int,
    config: FitConfig = FitConfig(),
    *,
    truth_U: Float[Array, "d_out r"] | None = None,
    truth_V: Float[Array, "d_in r"] | None = None,
    axis_name: str | None = None,
) -> tuple[Estimate, Trace]:
    """AltMin (``config.algorithm="altmin"``, spectral init) with users visited chunk by chunk.

    Args:
      chunk: ``chunk(c)`` returns the observations of users ``c m .. (c+1) m - 1`` (``c`` is a
        traced integer: slice stored arrays with ``lax.dynamic_slice_in_dim``, or generate them
        with ``generate(key, config, first_user=c m)``). Every chunk has the same shapes.
      nchunks: number of chunks; the users are ``nchunks * m``.
      config: as for ``fit`` (only ``altmin`` with ``spectral`` init is streamed).
      truth_U, truth_V: optional planted shared factors; the trace then records the subspace
        distances (``rel_error`` stays NaN: the users' ``W`` are never formed).
      axis_name: as for ``fit``: chunks of users on each device of a ``'users'`` mesh axis.

    Returns:
      ``(Estimate, Trace)`` as ``fit`` returns them (``S`` of all users, ``k r^2`` numbers).
    """
    config.validate()
    if config.algorithm != "altmin" or config.init != "spectral":
        raise ValueError("fit_chunks streams exact AltMin with spectral init: use algorithm='altmin', init='spectral'")
    first = jax.eval_shape(chunk, jnp.asarray(0))
    check_observations(first, config.rank, config.personal)
    diag, r = config.personal == "diag", config.rank
    dtype = first.X.dtype
    k = nchunks * first.users
    S = jnp.zeros((k, r, r), dtype)
    pool = lambda x: bk.pool(x, axis_name)

    def init_part(c, _):
        d = bk.design(chunk(c))
        bad = jnp.sum(~jnp.isfinite(d.X)) + jnp.sum(~jnp.isfinite(d.Y))
        return (bk.spectral_moments(d), jnp.sum(jnp.square(d.Y)), jnp.sum(d.counts), bad), None

    ((MU, MV), yy, n_used, bad), _ = sum_over_chunks(init_part, S, nchunks)
    U, V = top_eigenvectors(pool(MU), r), top_eigenvectors(pool(MV), r)
    count = pool(n_used)
    floor = stopping_floor(pool(yy) / count)

    def body(params):
        U, V = params

        def first_pass(c, _):  # personal step, output-step normal equations and objective at (U, V)
            Sc, normal, sse = bk.personal_output_and_objective(bk.design(chunk(c)), U, V, diag)
            return (normal, sse), Sc

        ((G, H), sse), S_now = sum_over_chunks(first_pass, S, nchunks)
        S_now = S_now.reshape(k, r, r)
        U2, S2 = normalize_U(bk.solve_factor(pool(G), pool(H), r), S_now, diag)
        v_part = lambda c, Sc: (bk.input_normal(bk.design(chunk(c)), U2, Sc), None)
        (K, h), _ = sum_over_chunks(v_part, S2, nchunks)
        V2, _ = normalize_V(bk.solve_factor(pool(K), pool(h), r), S2, diag)
        metrics = record(pool(sse) / count, U=U, V=V, truth_U=truth_U, truth_V=truth_V)
        return Estimate(U, V, S_now), metrics, (U2, V2)

    params, history, iterations, done = run_loop(body, (U, V), config.iters, config.tol, floor)
    return params, make_trace(history, iterations, done, pool(bad) == 0)


def stored_chunks(observations: Observations, nchunks: int) -> Callable[[Array], Observations]:
    """``chunk(c)`` reading users ``c m .. (c+1) m - 1`` of stored observations (``m = k / nchunks``)."""
    k = observations.users
    if k % nchunks:
        raise ValueError(f"{k} users cannot be split into {nchunks} equal chunks: choose a chunk count dividing {k}")
    m = k // nchunks
    return lambda c: jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, c * m, m), observations)


def fit_streaming(observations: Observations, config: FitConfig = FitConfig(), *, nchunks: int, **kwargs):
    """``fit_chunks`` over stored observations cut into ``nchunks`` chunks of users (see there)."""
    return fit_chunks(stored_chunks(observations, nchunks), nchunks, config, **kwargs)


class PlantedChunks(NamedTuple):
    """A planted problem generated chunk by chunk (its users' ``W_i*`` are never formed)."""

    U: Float[Array, "d_out r"]  # shared U*
    V: Float[Array, "d_in r"]  # shared V*
    S: Float[Array, "k r r"]  # personal S_i*
    train: Observations  # all users' training data


def generate_chunks(key: PRNGKeyArray, config: ProblemConfig, nchunks: int) -> PlantedChunks:
    """Generate the problem of ``generate(key, config)``, ``k / nchunks`` users at a time.

    Chunk ``c`` is ``generate(key, config, first_user=c m)`` for its ``m`` users (``fori_loop``),
    so peak memory is the output plus one chunk, and the result equals ``generate``'s
    training data and planted factors bit for bit (every user's draws depend on its index
    alone). ``personal_mean="zero"`` re-centres over all users at once and is not supported.
    """
    config.validate()
    if config.personal_mean != "random":
        raise ValueError("generate_chunks draws users independently: personal_mean='zero' needs all users at once")
    if config.users % nchunks:
        raise ValueError(f"{config.users} users cannot be split into {nchunks} equal chunks: choose a divisor")
    per_chunk = dataclasses.replace(config, users=config.users // nchunks, test_samples=0)

    def one(c):
        problem = generate(key, per_chunk, first_user=c * per_chunk.users)
        return problem.train.X, problem.train.Y, problem.truth.S

    # written chunk by chunk into preallocated outputs (in place inside the loop): stacking
    # lax.map's chunks and reshaping them copied the whole data once more (peak 2x the data)
    m = per_chunk.users
    shapes = jax.eval_shape(one, 0)
    out = tuple(jnp.zeros((config.users,) + a.shape[1:], a.dtype) for a in shapes)

    def write(c, acc):
        return tuple(jax.lax.dynamic_update_slice_in_dim(a, part, c * m, axis=0) for a, part in zip(acc, one(c)))

    X, Y, S = jax.lax.fori_loop(0, nchunks, write, out)
    U, V = shared_factors(jax.random.fold_in(key, TRUTH_STREAM), config)
    return PlantedChunks(U, V, S, Observations(X, Y, config.model))
