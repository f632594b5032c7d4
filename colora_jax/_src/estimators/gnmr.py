"""Gauss-Newton on the factors, GNMR's updating variant (``GNMR``, registered as ``"gnmr"``).

Zilber & Nadler, "GNMR: a provable one-line algorithm for low rank matrix recovery", SIAM J.
Math. Data Sci. 4 (2022). For ``X = U V^T`` GNMR linearizes the factorization at the current
factors and solves one least squares per iteration, without damping or line search,

    (U~, V~) = min-norm argmin || A(U V~^T + U~ V^T) - (y + alpha A(U V^T)) ||^2,
    U' = (1 - alpha) / 2 U + U~,   V' = (1 - alpha) / 2 V + V~.

Every ``alpha`` solves the same Gauss-Newton equation ``A(U V^T + dU V^T + U dV^T) = y``; they
differ in which of its solutions (they differ along the gauge) is taken: the new factors of
minimum norm (setting, ``alpha = 1`` in the authors' code), the step of minimum norm
(updating, ``alpha = -1``), or between (averaging, ``alpha = 0``).

Adapted to the CoLoRA factorization ``W_i = U S_i V^T``: the linearization at ``(U, V, S)`` is

    A_i(U S_i V^T + dU S_i V^T + U dS_i V^T + U S_i dV^T) = y_i      for every user i,

one least squares in ``(dU, dV, dS_1 .. dS_k)``. This module takes the updating variant: the
step of minimum norm ``||dU||^2 + ||dV||^2 + sum_i ||dS_i||^2``, then ``(U, V, S) + step``.
Why not the setting variant: with three factors its minimum-norm point moves along the gauge
``(U A, V B, -(A S_i + S_i B^T))`` by O(1) unless the factors are matrix-balanced
(``U^T U = sum_i S_i S_i^T``, ``V^T V = sum_i S_i^T S_i``), and a gauge move changes ``W_i`` at
second order, so an exact solution is not a fixed point (measured: the setting variant stalls
near relative error 0.2 where the updating variant reaches rounding; docs/varpro.md). The
minimum-norm step vanishes at every exact solution whatever the gauge.

The least squares is solved in three exact stages, so no system larger than
``(d_out + d_in) r`` is formed (checked against a dense minimum-norm ``lstsq`` in the tests):

1. the users' ``dS_i`` are eliminated by a Schur complement (as in ``varpro``): the pooled
   Gauss-Newton matrix of ``(dU, dV)`` is ``N = sum_i (P_i^perp J_theta,i)^T (P_i^perp J_theta,i)``
   (``varpro.normal_equations`` at ``S``), the right-hand side ``sum_i J_theta,i^T P_i^perp r_i``,
   and ``P_i^perp r_i`` is the residual of the exact personal solve at ``(U, V)``; a horizontal
   solution (``U^T dU = 0``, ``V^T dV = 0``) is taken (``varpro.damped_step`` with zero damping);
2. ``dS_i`` is each user's exact least squares given ``(dU, dV)``;
3. the null space of the linearization is the gauge ``(U A, V B, -(A S_i + S_i B^T))``
   (``A``, ``B`` diagonal for a diagonal personal part), so the minimum-norm step adds the gauge
   direction minimizing the norm above: a pooled least squares in ``2 r^2`` unknowns.

When the data leave more than the gauge undetermined (too few samples), stage 1 returns one
least-squares solution of the reduced system (``psd_solve``'s regularized Cholesky), not the
joint minimum-norm one. The factors are then re-orthonormalized (``normalize_U``/``normalize_V``,
which leaves every ``W_i`` unchanged) and the next iteration linearizes there.

The objective is not monotone (full Gauss-Newton steps, as in the paper): the loop stops by the
budget ``iters`` or the floor, not by ``tol``. Initialization: the shared spectral start, with
every ``S_i`` the exact personal solve there.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from colora_jax._src.estimators import varpro
from colora_jax._src.estimators.fitting import Estimate, Estimator, normalize_U, normalize_V, personal_start
from colora_jax._src.estimators.users import Users
from colora_jax._src.model import blocks
from colora_jax._src.model.linalg import psd_solve


def gauge_coordinates(r: int, diag: bool, dtype):
    """``c -> (A, B)``: the gauge's ``2 r^2`` coordinates (``2 r`` when diagonal) as two r x r matrices."""

    def coords(c):
        if diag:
            return jnp.diag(c[:r]), jnp.diag(c[r:])
        return c[: r * r].reshape(r, r), c[r * r :].reshape(r, r)

    return coords, jnp.zeros(2 * r if diag else 2 * r * r, dtype)


def minimum_norm(users: Users, U, V, S, dU, dV, dS, diag: bool):
    """The minimum-norm step among ``(dU + U A, dV + V B, dS_i - A S_i - S_i B^T)`` over the gauge.

    Minimizes ``||dU + U A||^2 + ||dV + V B||^2 + sum_i ||dS_i - A S_i - S_i B^T||^2`` over
    ``(A, B)`` (diagonal when ``diag``): a least squares in the gauge coordinates whose user sum
    goes through ``users``. Every such step solves the same linearized least squares at
    ``(U, V, S)`` (the gauge directions are its null space).
    """
    r = U.shape[1]
    coords, c0 = gauge_coordinates(r, diag, U.dtype)
    shared = lambda c: jnp.concatenate([(U @ coords(c)[0]).ravel(), (V @ coords(c)[1]).ravel()])
    personal = lambda c, S_i: (coords(c)[0] @ S_i + S_i @ coords(c)[1].T).ravel()
    Js = jax.jacfwd(shared)(c0)  # (p_shared, q), exact: the maps are linear

    def part(_, per_user):
        S_, dS_ = per_user
        Jp = jax.vmap(lambda S_i: jax.jacfwd(personal)(c0, S_i))(S_)  # (users, r^2, q)
        q = Jp.shape[2]
        Jp = Jp.reshape(-1, q)
        return (Jp.T @ Jp, Jp.T @ dS_.reshape(-1)), None

    (JtJ, Jtd), _ = users.sum(part, (S, dS))
    G = Js.T @ Js + JtJ
    h = Jtd - Js.T @ jnp.concatenate([dU.ravel(), dV.ravel()])
    A, B = coords(psd_solve(G, h))
    return dU + U @ A, dV + V @ B, dS - (A[None] @ S + S @ B.T[None])


def _regression_reduced_gradient(d: blocks.Design, star: varpro.Point, S):
    """Regression: the Schur-reduced right-hand side of the joint linearization at ``S``.

    That is ``sum_i J_theta,i(S)^T r*_i`` (flattened ``(dU, dV)``), ``r*`` the residual of the exact
    personal solve at ``(U, V)`` (``varpro.normal_equations`` forms it from the residual at ``S``
    itself, which is right only when ``S`` is the exact solve).
    """
    U = star.U
    CV, VCV, BtV = star.cache
    MV = BtV - U[None] @ star.S @ VCV  # M*_i V, M*_i = Bt_i - U S*_i V^T C_i
    gU = jnp.einsum("kob,kab->oa", MV, S)
    GuS = (U.T @ U)[None] @ S
    gV = jnp.einsum("koj,kob->jb", d.Bt, U[None] @ S) - jnp.einsum("kja,kca,kcb->jb", CV, star.S, GuS)
    return jnp.concatenate([gU.ravel(), gV.ravel()])


def personal_given_shared_step(d: blocks.Design, star: varpro.Point, S, dU, dV, diag: bool):
    """``S + dS``: each user's exact least squares of the linearization given ``(dU, dV)``.

    ``min_T || y_i - A_i(dU S_i V^T + U S_i dV^T) - A_i(U T V^T) ||^2``: the personal step at
    ``(U, V)`` with the targets moved by the shared step's first-order change.
    """
    U, V = star.U, star.V
    if d.model == "regression":
        CV, VCV, BtV = star.cache
        # Y'_i = Y_i - X_i (dU S_i V^T + U S_i dV^T)^T  =>  Y'^T X V = Bt V - dU S Q - U S dV^T C V
        BtV2 = BtV - dU[None] @ S @ VCV - U[None] @ S @ (dV.T[None] @ CV)
        return blocks.personal_regression(VCV, BtV2, U, diag)
    XV, _ = star.cache
    D = dU[None] @ S @ V.T[None] + U[None] @ S @ dV.T[None]  # (k, d_out, d_in)
    Y2 = d.Y - jnp.einsum("knoi,koi->kn", d.X, D)
    return blocks.personal_from_core(dataclasses.replace(d, Y=Y2), blocks.sensing_core(XV, U), diag)


@dataclasses.dataclass(frozen=True)
class GNMR(Estimator):
    """GNMR (Zilber-Nadler), the updating variant: one undamped Gauss-Newton least squares in ``(U, V, S_i)``."""

    monotone = False  # full Gauss-Newton steps, as in the paper: stops by budget or floor

    def start(self, s, config, users):
        """The normalized spectral start, every ``S_i`` the exact personal solve there."""
        return personal_start(s, config, users)

    def step(self, params, s, config, users):
        """One GNMR iteration from ``(U, V, S)``: the current iterate, its objective, the next ``(U, V, S)``."""
        U, V, S = params
        diag = config.personal == "diag"

        def linearize(d, S_):
            sse = blocks.sum_squares(d, U, V, S_)
            star = varpro.evaluate_point(d, U, V, diag)  # exact personal solve: P^perp r, the caches
            # the Schur complement at S; sensing: its gradient formed from the cached residual r* (right as it is)
            N, g = varpro.normal_equations(d, star._replace(S=S_), diag, False)
            if d.model == "regression":
                g = _regression_reduced_gradient(d, star, S_)
            return (sse, N, g), None

        (sse, N, g), _ = users.sum(linearize, S)
        h = varpro.horizontal(N, g, varpro.gauge_basis(U, V, diag))
        delta, _ = varpro.damped_step(h, jnp.zeros((), U.dtype))
        n_u = U.size
        dU, dV = delta[:n_u].reshape(U.shape), delta[n_u:].reshape(V.shape)

        def personal(d, S_):
            star = varpro.evaluate_point(d, U, V, diag)
            return None, personal_given_shared_step(d, star, S_, dU, dV, diag) - S_

        _, dS = users.sum(personal, S)
        dU, dV, dS = minimum_norm(users, U, V, S, dU, dV, dS, diag)
        U2, S2 = normalize_U(U + dU, S + dS, diag)
        V2, S2 = normalize_V(V + dV, S2, diag)
        return Estimate(U, V, S), sse, (U2, V2, S2)
