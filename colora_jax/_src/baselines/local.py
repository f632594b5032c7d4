"""One model per user: its own LoRA (``local``) or its whole ``W_i`` by least squares (``local-full``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from colora_jax._src.algorithms import fit
from colora_jax._src.baselines.common import MethodFit, finite, need_samples, record_fit
from colora_jax._src.estimators import fitting
from colora_jax._src.model import blocks
from colora_jax._src.model.data import GroundTruth, Observations


def fit_local(obs: Observations, fc, *, key, truth: GroundTruth | None = None) -> MethodFit:
    """The core ``fit`` on each user alone, vmapped over users; the trace pools the users.

    User i's fit uses the key ``fold_in(key, i)``. Users stop at different iterations, so each
    user's last value is held and the users are pooled: the objective is the users' mean and
    the relative error ``sqrt(sum_i err_i^2 ||W_i*||^2 / sum_i ||W_i*||^2)``.
    """
    fitting.check_observations(obs, fc.rank, fc.personal)
    counts = obs.sample_counts()

    def one(i, X, Y, c, t):
        mine = Observations(X[None], Y[None], obs.model, counts=None if obs.counts is None else c[None])
        est, tr = fit(mine, fc, key=jax.random.fold_in(key, i), truth=t)
        return est.W[0], tr

    users = jnp.arange(obs.users)
    if truth is None:
        W, tr = jax.vmap(lambda i, X, Y, c: one(i, X, Y, c, None))(users, obs.X, obs.Y, counts)
    else:
        own = GroundTruth(
            U=truth.U_users,
            V=truth.V_users,
            S=truth.S[:, None],
            U_users=truth.U_users[:, None],
            V_users=truth.V_users[:, None],
            W=truth.W[:, None],
            noise=jnp.broadcast_to(truth.noise, (obs.users,)),
        )
        W, tr = jax.vmap(one)(users, obs.X, obs.Y, counts, own)
    T = fc.iters + 1
    held = jnp.minimum(jnp.arange(T)[None, :], tr.iterations[:, None])
    last = lambda a: jnp.take_along_axis(a, held, axis=1)
    past = jnp.arange(T) > jnp.max(tr.iterations)
    nans = jnp.full((T,), jnp.nan, W.dtype)
    weights = counts.astype(W.dtype) / jnp.sum(counts)  # per-sample mean over all users' samples
    objective = jnp.where(past, jnp.nan, jnp.sum(last(tr.objective) * weights[:, None], axis=0))
    if truth is None:
        rel = nans
    else:
        ref2 = jnp.sum(jnp.square(truth.W), axis=(1, 2))  # ||W_i*||^2
        rel = jnp.sqrt(jnp.sum(jnp.square(last(tr.rel_error)) * ref2[:, None], axis=0) / jnp.sum(ref2))
        rel = jnp.where(past, jnp.nan, rel)
    history = fitting.Metrics(objective, nans, nans, rel)
    trace = fitting.make_trace(history, jnp.max(tr.iterations), jnp.all(tr.converged), jnp.all(tr.finite_input))
    return MethodFit(W, None, None, trace)


def fit_local_full(obs: Observations, fc, *, key=None, truth: GroundTruth | None = None) -> MethodFit:
    """Each user's min-norm least squares for its whole ``W_i``.

    CoLoRA's personal step with both shared factors the identity (``W_i = I S_i I^T``, ``S_i`` d_out
    x d_in).
    """
    d_out, d_in = obs.dims
    need_samples(obs, d_out, d_in, "local-full")
    d = blocks.design(obs)
    W = blocks.personal_step(d, jnp.eye(d_out, dtype=obs.X.dtype), jnp.eye(d_in, dtype=obs.X.dtype), False)
    return MethodFit(
        W, None, None, fitting.single_shot_trace(record_fit(obs, W, None, None, truth), fc.iters, finite(obs))
    )
