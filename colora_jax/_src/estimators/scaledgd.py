"""Scaled gradient descent on ``(U, V, S)`` (``algorithm="scaledgd"``).

Tong, Ma & Chi, "Accelerating ill-conditioned low-rank matrix estimation via scaled gradient
descent", JMLR 22 (2021). For ``X = L R^T`` ScaledGD preconditions each factor's gradient by the
inverse Gram matrix of the other, ``L' = L - eta grad_L f (R^T R)^-1``,
``R' = R - eta grad_R f (L^T L)^-1``, so the contraction rate does not depend on the condition
number of ``X``; the paper's matrix-sensing experiments use ``eta = 0.5``, with a sensing
operator scaled so that ``A^* A`` is about the identity.

Adapted to ``W_i = U S_i V^T`` with ``f = 1/2 sum_i sum_j ||y_ij - A_ij(U S_i V^T)||^2``: each
block's gradient is preconditioned by the inverse of its own Gauss-Newton block under an
isotropic design (``sum_j A_ij^* A_ij ~ lambda_i I``), and all blocks are updated at once from
the same point::

    U'   = U   - eta grad_U f   (sum_i lambda_i S_i V^T V S_i^T)^-1,
    V'   = V   - eta grad_V f   (sum_i lambda_i S_i^T U^T U S_i)^-1,
    S_i' = S_i - eta (U^T U)^-1 grad_{S_i} f (V^T V)^-1 / lambda_i,

``lambda_i`` user i's Gram scale (``varpro.ridge_scale``: ``sum_j ||X_ij||^2 / (d_out d_in)`` in
sensing, ``tr(X_i^T X_i) / d_in`` in regression; ``n_i`` for a standard Gaussian design), so
the steps do not depend on the design's scale. ``eta = FitConfig.step_size`` (default 0.5, the
paper's value). Like the paper's update, this one is equivariant under the gauge
``U -> U A, S_i -> A^-1 S_i B^-T, V -> V B``, so re-orthonormalizing ``U`` and ``V`` after each
step (``normalize_U``/``normalize_V``, absorbed into every ``S_i``) changes no iterate's ``W_i``
and keeps the preconditioners well conditioned. With three blocks moving at once the component
of the error in ``span(U) x span(V)`` is corrected three times, so ``eta < 2/3`` is needed where
two factors allow ``eta < 1``.

The objective is not monotone (a fixed step): the loop stops by the budget ``iters`` or the
floor, not by ``tol``. Initialization: the shared spectral start, every ``S_i`` the exact
personal solve there (the paper starts from the spectral estimate's factors).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from colora_jax._src.estimators import varpro
from colora_jax._src.estimators.fitting import Estimate, Setup, fit_by_steps, normalize_U, normalize_V
from colora_jax._src.model import blocks
from colora_jax._src.model.linalg import psd_solve


def scaledgd_body(d: blocks.Design, U, V, S, lam, eta, diag: bool, axis_name=None):
    """One ScaledGD iteration from ``(U, V, S)``.

    Returns the current iterate, its sum of squared residuals, and the next ``(U, V, S)`` (see the
    module docstring). ``lam``: each user's Gram scale.
    """
    # f pooled inside (as altgd): under shard_map the gradients of the replicated U, V come back summed
    # over the users' devices, and each device's gS is its own users'
    half_sse = lambda U_, V_, S_: 0.5 * blocks.sum_squares(d, U_, V_, S_, axis_name)
    sse_half, (gU, gV, gS) = jax.value_and_grad(half_sse, argnums=(0, 1, 2))(U, V, S)
    VtV, UtU = V.T @ V, U.T @ U
    PU = blocks.pool(jnp.einsum("k,kab,bc,kdc->ad", lam, S, VtV, S), axis_name)  # sum_i lam_i S_i V^T V S_i^T
    PV = blocks.pool(jnp.einsum("k,kba,bc,kcd->ad", lam, S, UtU, S), axis_name)  # sum_i lam_i S_i^T U^T U S_i
    U2 = U - eta * psd_solve(PU, gU.T).T
    V2 = V - eta * psd_solve(PV, gV.T).T
    if diag:  # the Gauss-Newton block of diagonal S_i under isotropy: lam_i (U^T U o V^T V)
        step_S = jax.vmap(jnp.diag)(
            jnp.linalg.solve((UtU * VtV)[None], jnp.diagonal(gS, axis1=1, axis2=2)[..., None])[..., 0]
        )
    else:  # (U^T U)^-1 grad_{S_i} f (V^T V)^-1
        T = jnp.linalg.solve(UtU[None], gS)
        step_S = jnp.swapaxes(jnp.linalg.solve(VtV[None], jnp.swapaxes(T, 1, 2)), 1, 2)
    S2 = S - eta * step_S / jnp.where(lam > 0, lam, 1.0)[:, None, None]
    U2, S2 = normalize_U(U2, S2, diag)
    V2, S2 = normalize_V(V2, S2, diag)
    return Estimate(U, V, S), 2 * sse_half, (U2, V2, S2)


def make_body(s: Setup, config, optimizer, axis_name):
    """``(body, params0)`` of ``scaledgd`` for ``fitting.iterate``: preconditioned gradient steps."""
    d, diag = s.design, config.personal == "diag"
    lam = varpro.ridge_scale(d)
    eta = jnp.asarray(config.step_size, d.X.dtype)
    U, S = normalize_U(s.U, blocks.personal_step(d, s.U, s.V, diag), diag)
    V, S = normalize_V(s.V, S, diag)
    return (lambda p: scaledgd_body(d, *p, lam, eta, diag, axis_name)), (U, V, S)


def fit_scaledgd(observations, config, *, key=None, truth=None, optimizer=None, axis_name=None):
    """``fit`` with ``algorithm="scaledgd"`` (see the module docstring). Not monotone: stops by budget or floor."""
    if optimizer is not None:
        raise ValueError("scaledgd takes no optimizer (its step is FitConfig.step_size): drop optimizer=")
    return fit_by_steps(make_body, observations, config, key=key, truth=truth, axis_name=axis_name, monotone=False)
