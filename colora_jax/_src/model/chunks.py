"""A planted problem generated chunk by chunk, for fits that visit users in chunks.

``generate_chunks`` writes the training data of ``generate(key, config)`` ``k / nchunks`` users at a
time (peak memory: the output plus one chunk). The fit over chunks of users is ``fit_chunks``
(``algorithms.py``: any registered estimator over ``users.UserChunks``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src.model.config import ProblemConfig
from colora_jax._src.model.data import TRUTH_STREAM, Observations, generate, shared_factors


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
