"""One adapter for all users (``global``): the core ``fit`` on every user's data pooled as one user."""

from __future__ import annotations

import jax.numpy as jnp

from colora_jax._src.algorithms import fit
from colora_jax._src.baselines.common import MethodFit
from colora_jax._src.model.data import GroundTruth, Observations


def fit_global(obs: Observations, fc, *, key, truth: GroundTruth | None = None) -> MethodFit:
    """One rank-r adapter for everybody: ``fit`` on all used samples pooled as one user.

    The trace's relative error is converted exactly from the pooled fit's error against the
    users' mean ``Wbar``: ``sum_i ||W - W_i||^2 = k ||W - Wbar||^2 + sum_i ||W_i - Wbar||^2``.
    """
    k, n = obs.users, obs.samples
    used = obs.masked()  # unused rows are zero rows of the pooled user: they drop out exactly
    pooled = Observations(
        used.X.reshape((1, k * n) + obs.X.shape[2:]), used.Y.reshape((1, k * n) + obs.Y.shape[2:]), obs.model
    )
    mean_truth = None
    if truth is not None:
        Wbar = jnp.mean(truth.W, axis=0, keepdims=True)
        mean_truth = GroundTruth(
            U=truth.U,
            V=truth.V,
            S=truth.S[:1],
            U_users=truth.U_users[:1],
            V_users=truth.V_users[:1],
            W=Wbar,
            noise=truth.noise,
        )
    est, tr = fit(pooled, fc, key=key, truth=mean_truth)
    # the pooled fit counts every stored row; report the mean over the used samples
    tr = tr._replace(objective=tr.objective * ((k * n) / jnp.sum(obs.sample_counts()).astype(tr.objective.dtype)))
    if truth is not None:
        spread2 = jnp.sum(jnp.square(truth.W - Wbar))
        rel = jnp.sqrt(
            (k * jnp.square(tr.rel_error) * jnp.sum(jnp.square(Wbar)) + spread2) / jnp.sum(jnp.square(truth.W))
        )
        tr = tr._replace(rel_error=rel)
    return MethodFit(jnp.broadcast_to(est.W, (k,) + est.W.shape[1:]), est.U, est.V, tr)
