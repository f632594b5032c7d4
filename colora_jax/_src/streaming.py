"""AltMin over users streamed in blocks: memory linear in the users, nothing quadratic in k.

``fit`` holds every user's design at once (for the regression model the per-user statistics
``C_i = X_i^T X_i``, ``B_i = X_i^T Y_i`` are ``2 k d^2`` numbers, more than the data itself when
``n < d``). ``fit_blocks`` instead visits the users ``m`` at a time with ``lax.scan``: for each
block it builds that block's ``Design`` and adds the block's *unpooled* part of the normal
equations (``blocks.output_normal``, ``blocks.input_normal``, ``blocks.spectral_moments``)

    G = sum_blocks sum_{i in block} G_i,

the same math as ``fit`` with the sum over users split into a sum over blocks (and, given
``axis_name``, over devices). Held at once: the personal ``S`` (``k r^2``), one block's
intermediates, and whatever ``block(b)`` reads — the stored observations (``fit_streaming``)
or nothing at all when ``block`` regenerates block ``b`` from its key on every pass.

One iteration makes three passes over the users: personal step and U-step normal equations;
V-step normal equations; the objective ``f = sum ||y - A(U S_i V^T)||^2`` from raw residuals.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src import blocks as bk
from colora_jax._src.altmin import Estimate, Trace, _normalize_U, _normalize_V, check_observations, iterate, stopping_floor
from colora_jax._src.config import FitConfig, ProblemConfig
from colora_jax._src.data import Observations, generate_truth, measure, personal_matrices
from colora_jax._src.linalg import top_eigenvectors
from colora_jax._src.metrics import subspace_distance


def _sweep(part, S, nblocks):
    """``sum_b part(b, S_b)[0]`` over blocks with ``lax.scan``, and the stacked ``part(b, S_b)[1]``."""
    xs = (jnp.arange(nblocks), S.reshape((nblocks, -1) + S.shape[1:]))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(lambda x: part(*x)[0], jax.tree.map(lambda a: a[0], xs)))

    def step(total, x):
        value, out = part(*x)
        return jax.tree.map(jnp.add, total, value), out

    total, out = jax.lax.scan(step, zeros, xs)
    return total, out


def fit_blocks(
    block: Callable[[Array], Observations],
    nblocks: int,
    config: FitConfig = FitConfig(),
    *,
    truth_U: Float[Array, "d_out r"] | None = None,
    truth_V: Float[Array, "d_in r"] | None = None,
    axis_name: str | None = None,
) -> tuple[Estimate, Trace]:
    """AltMin (``config.algorithm="altmin"``, spectral init) with users visited block by block.

    Args:
      block: ``block(b)`` returns the observations of users ``b m .. (b+1) m - 1`` (``b`` is a
        traced integer: slice stored arrays with ``lax.dynamic_slice_in_dim``, or generate them
        from ``fold_in(key, b)``). Every block has the same shapes.
      nblocks: number of blocks; the users are ``nblocks * m``.
      config: as for ``fit`` (only ``altmin`` with ``spectral`` init is streamed).
      truth_U, truth_V: optional planted shared factors; the trace then records the subspace
        distances (``rel_error`` stays NaN: the users' ``W`` are never formed).
      axis_name: as for ``fit``: blocks of users on each device of a ``'users'`` mesh axis.

    Returns:
      ``(Estimate, Trace)`` as ``fit`` returns them (``S`` of all users, ``k r^2`` numbers).
    """
    config.validate()
    if config.algorithm != "altmin" or config.init != "spectral":
        raise ValueError("fit_blocks streams exact AltMin with spectral init: use algorithm='altmin', init='spectral'")
    first = jax.eval_shape(block, jnp.asarray(0))
    check_observations(first, config.rank, config.personal)
    diag, r = config.personal == "diag", config.rank
    dtype, model = first.X.dtype, first.model
    k, n = nblocks * first.users, first.samples
    S = jnp.zeros((k, r, r), dtype)
    pool = lambda x: bk.pool(x, axis_name)

    def init_part(b, _):
        obs = block(b)
        bad = jnp.sum(~jnp.isfinite(obs.X)) + jnp.sum(~jnp.isfinite(obs.Y))
        return (bk.spectral_moments(bk.design(obs)), jnp.sum(jnp.square(obs.Y)), bad), None

    ((MU, MV), yy, bad), _ = _sweep(init_part, S, nblocks)
    U, V = top_eigenvectors(pool(MU), r), top_eigenvectors(pool(MV), r)
    count = pool(jnp.asarray(k * n, dtype))
    floor = stopping_floor(pool(yy) / count)

    def objective(U, V, S):
        part = lambda b, Sb: (bk.sum_squares(bk.design(block(b)), U, V, Sb), None)
        return pool(_sweep(part, S, nblocks)[0]) / count

    def personal(U, V):
        part = lambda b, _: (jnp.zeros((), dtype), bk.personal_step(bk.design(block(b)), U, V, diag))
        return _sweep(part, S, nblocks)[1].reshape(k, r, r)

    def iteration(U, V):
        def s_and_u(b, _):
            Sb, normal = bk.personal_and_output_normal(bk.design(block(b)), U, V, diag)
            return normal, Sb

        (G, H), Snew = _sweep(s_and_u, S, nblocks)
        U, Snew = _normalize_U(bk.solve_factor(pool(G), pool(H), r), Snew.reshape(k, r, r), diag)
        v_part = lambda b, Sb: (bk.input_normal(bk.design(block(b)), U, Sb), None)
        (K, h), _ = _sweep(v_part, Snew, nblocks)
        V, Snew = _normalize_V(bk.solve_factor(pool(K), pool(h), r), Snew, diag)
        return Estimate(U, V, Snew), objective(U, V, Snew)

    def metrics(p, f):
        nan = jnp.full((), jnp.nan, dtype)
        dU = nan if truth_U is None else subspace_distance(p.U, truth_U)
        dV = nan if truth_V is None else subspace_distance(p.V, truth_V)
        return f, dU, dV, nan

    params = Estimate(U, V, personal(U, V))

    def advance(p):
        p, f = iteration(p.U, p.V)
        return p, metrics(p, f)

    params, buffers, iterations, done = iterate(
        advance, params, metrics(params, objective(*params)), config.iters, config.tol, floor
    )
    finite = pool(bad) == 0
    return params, Trace(*buffers, iterations=iterations, converged=done, finite_input=finite)


def stored_blocks(observations: Observations, nblocks: int) -> Callable[[Array], Observations]:
    """``block(b)`` reading users ``b m .. (b+1) m - 1`` of stored observations (``m = k / nblocks``)."""
    k = observations.users
    if k % nblocks:
        raise ValueError(f"{k} users cannot be split into {nblocks} equal blocks: choose a block count dividing {k}")
    m = k // nblocks
    return lambda b: jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, b * m, m), observations)


def fit_streaming(observations: Observations, config: FitConfig = FitConfig(), *, nblocks: int, **kwargs):
    """``fit_blocks`` over stored observations cut into ``nblocks`` blocks of users (see there)."""
    return fit_blocks(stored_blocks(observations, nblocks), nblocks, config, **kwargs)


class PlantedBlocks(NamedTuple):
    """A planted problem generated block by block (its users' ``W_i*`` are never formed)."""

    U: Float[Array, "d_out r"]  # shared U*
    V: Float[Array, "d_in r"]  # shared V*
    S: Float[Array, "k r r"]  # personal S_i*
    train: Observations  # all users' training data


def generate_blocks(key: PRNGKeyArray, config: ProblemConfig, nblocks: int) -> PlantedBlocks:
    """Generate ``W_i* = U* S_i* V*^T`` and training data, ``k / nblocks`` users at a time.

    Block ``b`` draws its ``S_i*`` and measurements from ``fold_in(k_blocks, b)`` (``fori_loop``), so
    peak memory is the output plus one block. Supports ``task_angle = 0`` and ``deviation = 0``
    (shared subspaces exactly); ``generate`` covers the rest at sizes that fit at once.
    """
    config.validate()
    if config.task_angle != 0 or config.deviation != 0:
        raise ValueError("generate_blocks plants exactly shared subspaces: use task_angle=0 and deviation=0")
    if config.users % nblocks:
        raise ValueError(f"{config.users} users cannot be split into {nblocks} equal blocks: choose a divisor")
    k_shared, k_blocks = jax.random.split(key)
    shared = generate_truth(k_shared, dataclasses.replace(config, users=1))
    per_block = dataclasses.replace(config, users=config.users // nblocks)

    def one(b):
        ks, km = jax.random.split(jax.random.fold_in(k_blocks, b))
        S = personal_matrices(ks, per_block)
        W = jnp.einsum("or,krs,is->koi", shared.U, S, shared.V)
        obs = measure(km, W, config.samples, config.noise, config.model)
        return obs.X, obs.Y, S

    # written block by block into preallocated outputs (in place inside the loop): stacking
    # lax.map's blocks and reshaping them copied the whole data once more (peak 2x the data)
    m = per_block.users
    shapes = jax.eval_shape(one, 0)
    out = tuple(jnp.zeros((config.users,) + a.shape[1:], a.dtype) for a in shapes)

    def write(b, acc):
        return tuple(jax.lax.dynamic_update_slice_in_dim(a, part, b * m, axis=0) for a, part in zip(acc, one(b)))

    X, Y, S = jax.lax.fori_loop(0, nblocks, write, out)
    return PlantedBlocks(shared.U, shared.V, S, Observations(X, Y, config.model))
