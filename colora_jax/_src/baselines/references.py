"""Reference points: the oracle (the truth's shared factors given) and the frozen base."""

from __future__ import annotations

import jax.numpy as jnp

from colora_jax._src import blocks, fitting
from colora_jax._src.baselines.common import MethodFit, finite, need_samples, record_fit
from colora_jax._src.data import GroundTruth, Observations


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
