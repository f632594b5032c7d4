"""Scaled gradient descent on ``(U, V, S)`` (``ScaledGD``, registered as ``"scaledgd"``).

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
the steps do not depend on the design's scale. ``eta = step_size`` (default 0.5, the
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

import dataclasses

import jax
import jax.numpy as jnp

from colora_jax._src.estimators import varpro
from colora_jax._src.estimators.fitting import Estimate, Estimator, normalize_U, normalize_V, personal_start
from colora_jax._src.model import blocks
from colora_jax._src.model.config import check_positive
from colora_jax._src.model.linalg import psd_solve


@dataclasses.dataclass(frozen=True)
class ScaledGD(Estimator):
    """ScaledGD (Tong-Ma-Chi): gradient steps on U, V, S_i at once, each preconditioned by the others' Gram."""

    step_size: float = 0.5  # eta (the paper's value); eta < 2/3 with three blocks moving at once

    monotone = False  # a fixed step: stops by budget or floor

    def check(self, config):
        """``step_size`` a finite number > 0."""
        check_positive("ScaledGD", "step_size", self.step_size)

    def configured(self, config):
        """``FitConfig.step_size`` as eta."""
        return dataclasses.replace(self, step_size=config.step_size)

    def start(self, s, config, users):
        """The normalized spectral start, every ``S_i`` the exact personal solve there, and each user's Gram scale."""
        _, lam = users.sum(lambda d, _: (None, varpro.ridge_scale(d)))
        return (*personal_start(s, config, users), lam)

    def step(self, params, s, config, users):
        """One ScaledGD iteration from ``(U, V, S)`` (``lam``: each user's Gram scale)."""
        U, V, S, lam = params
        diag = config.personal == "diag"
        eta = jnp.asarray(self.step_size, U.dtype)
        VtV, UtU = V.T @ V, U.T @ U

        def part(d, per_user):
            S_, lam_ = per_user
            sse_half, (gU, gV, gS) = jax.value_and_grad(
                lambda U_, V_, S__: 0.5 * blocks.sum_squares(d, U_, V_, S__), argnums=(0, 1, 2)
            )(users.local(U), users.local(V), S_)
            PU = jnp.einsum("k,kab,bc,kdc->ad", lam_, S_, VtV, S_)  # sum_i lam_i S_i V^T V S_i^T
            PV = jnp.einsum("k,kba,bc,kcd->ad", lam_, S_, UtU, S_)  # sum_i lam_i S_i^T U^T U S_i
            return (sse_half, gU, gV, PU, PV), gS

        (sse_half, gU, gV, PU, PV), gS = users.sum(part, (S, lam))
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
        return Estimate(U, V, S), 2 * sse_half, (U2, V2, S2, lam)
