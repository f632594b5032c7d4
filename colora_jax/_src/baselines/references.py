"""Reference points: the oracle, AltMin started inside the truth's subspaces, the frozen base."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from colora_jax._src.baselines.common import MethodFit, finite, need_samples, record_fit
from colora_jax._src.estimators import fitting
from colora_jax._src.estimators.altmin import AltMin
from colora_jax._src.estimators.users import AllUsers
from colora_jax._src.model import blocks
from colora_jax._src.model.data import GroundTruth, Observations


def fit_oracle(obs: Observations, fc, *, key=None, truth: GroundTruth | None = None) -> MethodFit:
    """Only the personal parts fitted, with the truth's shared ``U*``, ``V*`` given.

    When the truth's users are tilted (task_angle > 0) or deviate, the oracle still uses the
    shared ``U*``, ``V*``: it is the best any method that shares exactly the truth's factors
    can do, not the noise floor of a per-user model.
    """
    if truth is None:
        raise ValueError("oracle needs the ground truth: pass truth=problem.truth")
    a, b = truth.U.shape[1], truth.V.shape[1]
    diag = fc.personal == "diag" and a == b
    if a == b:
        fitting.check_observations(obs, a, fc.personal)
    else:  # a shared-input truth: U* = I, S_i* = H_i* (d_out x r)
        need_samples(obs, a, b, "oracle")
    S = blocks.personal_step(blocks.design(obs), truth.U, truth.V, diag)
    W = jnp.einsum("or,krs,is->koi", truth.U, S, truth.V)
    U = truth.U if a == b else None  # a shared-input truth's U* = I is no shared factor
    return MethodFit(
        W, U, truth.V, fitting.single_shot_trace(record_fit(obs, W, U, truth.V, truth), fc.iters, finite(obs))
    )


def fit_base(obs: Observations, fc, *, key=None, truth: GroundTruth | None = None) -> MethodFit:
    """The frozen base model: nothing is adapted, so every user's update is ``W_i = 0``."""
    d_out, d_in = obs.dims
    W = jnp.zeros((obs.users, d_out, d_in), obs.X.dtype)
    return MethodFit(
        W, None, None, fitting.single_shot_trace(record_fit(obs, W, None, None, truth), fc.iters, finite(obs))
    )


def random_rotation(key, r: int, dtype):
    """A Haar-distributed ``r x r`` orthogonal matrix (QR of a Gaussian, signs fixed by ``diag(R)``)."""
    Q, R = jnp.linalg.qr(jax.random.normal(key, (r, r), dtype))
    return Q * jnp.where(jnp.diagonal(R) < 0, -1, 1).astype(dtype)


def fit_diag_span_start(obs: Observations, fc, *, key, truth: GroundTruth | None = None) -> MethodFit:
    """AltMin with diagonal personal parts, started inside ``span(U*)``, ``span(V*)`` in a wrong basis.

    The start is ``U* Q_U``, ``V* Q_V`` with ``Q_U``, ``Q_V`` Haar-random ``r x r`` rotations drawn
    from ``key``: the subspaces are exact, the basis is not, and a diagonal ``S_i`` is diagonal in one
    basis only, so the estimator must still find it. Its threshold against the spectral start's
    separates what the diagonal estimator needs from the subspace error of its start. A reference:
    it reads the truth, so it is no estimator.
    """
    if truth is None:
        raise ValueError("colora-diag-span needs the ground truth: pass truth=problem.truth")
    if truth.U.shape[1] != fc.rank or truth.V.shape[1] != fc.rank:
        raise ValueError(f"colora-diag-span needs a truth of rank {fc.rank}, got {truth.U.shape[1]}")
    ku, kv = jax.random.split(key)
    rotation_u, rotation_v = random_rotation(ku, fc.rank, truth.U.dtype), random_rotation(kv, fc.rank, truth.V.dtype)
    start = (truth.U @ rotation_u, truth.V @ rotation_v)
    config = dataclasses.replace(fc, personal="diag", algorithm="altmin")
    fitting.check_fit(obs, config, AltMin(), key)
    est, trace = AltMin().fit(AllUsers(blocks.design(obs)), config, key=key, truth=truth, start=start)
    return MethodFit(est.W, est.U, est.V, trace)
