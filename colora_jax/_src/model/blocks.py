"""The exact block minimizations of the CoLoRA objective, for both measurement models.

Objective (sum over users i and their samples j)::

    f(U, V, S) = sum_i sum_j || y_ij - A_ij(U S_i V^T) ||^2,
    A_ij(W) = W x_ij            (regression)     A_ij(W) = <X_ij, W>     (sensing)

Every block below is the exact minimizer of ``f`` over one block with the others held:

* personal step (per user, vmapped): an ``r^2``-unknown least squares (``r`` if diagonal);
* output-side step (U) and input-side step (V): one least squares pooled over all users.

Sums over users are the only place users meet. They are local sums followed by
``lax.psum(., axis_name)`` when ``axis_name`` is given (users sharded over a device mesh,
e.g. inside ``shard_map``), so the same code runs on one device or many.

For the regression model the steps use per-user sufficient statistics ``C_i = X_i^T X_i``
and ``B_i = X_i^T Y_i``: after one pass over the data their cost does not depend on ``n``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from colora_jax._src.model.data import Observations
from colora_jax._src.model.linalg import psd_solve, top_eigenvectors


def pool(x, axis_name: str | None):
    """Sum of per-device partial sums across the ``axis_name`` mesh axis (identity if None)."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Design:
    """Observations plus the regression model's sufficient statistics (``None`` for sensing)."""

    X: Float[Array, "k n ..."]
    Y: Float[Array, "k n ..."]
    C: Float[Array, "k d_in d_in"] | None  # regression: X_i^T X_i
    Bt: Float[Array, "k d_out d_in"] | None  # regression: Y_i^T X_i (= (X_i^T Y_i)^T)
    Xt: Float[Array, "k n d_in d_out"] | None  # sensing: every X_ij transposed (contiguous for X^T U)
    counts: Float[Array, " k"]  # samples used per user (unused rows of X, Y are zero)
    model: str = dataclasses.field(metadata=dict(static=True))


def design(obs: Observations) -> Design:
    """Precompute what the block steps need from the observations (unused samples zeroed)."""
    obs = obs.masked()
    counts = obs.sample_counts().astype(obs.X.dtype)
    if obs.model == "regression":
        C = jnp.einsum("kni,knj->kij", obs.X, obs.X)
        Bt = jnp.einsum("kno,kni->koi", obs.Y, obs.X)
        return Design(X=obs.X, Y=obs.Y, C=C, Bt=Bt, Xt=None, counts=counts, model=obs.model)
    return Design(X=obs.X, Y=obs.Y, C=None, Bt=None, Xt=jnp.swapaxes(obs.X, 2, 3), counts=counts, model=obs.model)


# The regression steps touch the per-user statistics C (k, d_in, d_in) and Bt (k, d_out, d_in)
# only through these helpers, written so that XLA never transposes them: a statistic is always
# the left operand of one flat GEMM over its rows ((k d) x d_in times d_in x r), or the right
# operand contracted over its leading (k d) rows; per-user contractions of the small (k, d, r)
# results are broadcast products reduced in one fused loop (batched dots of tiny matrices run
# one small GEMM per user on CPU, far slower).


def _times(A: Float[Array, "k p q"], M: Float[Array, "q s"]) -> Float[Array, "k p s"]:
    """``A_i M`` for every user, as one GEMM over the stacked rows of all ``A_i``."""
    k, p, q = A.shape
    return (A.reshape(k * p, q) @ M).reshape(k, p, M.shape[1])


def _mm(A: Float[Array, "k p q"], B: Float[Array, "k q s"]) -> Float[Array, "k p s"]:
    """``A_i B_i`` for every user, small factors only (a fused broadcast-and-reduce over q).

    A factor shared by all users is passed with a leading axis of 1 (``M[None]``).
    """
    return jnp.sum(A[:, :, :, None] * B[:, None, :, :], axis=2)


def _sum_tn(A: Float[Array, "k p a"], B: Float[Array, "k p b"]) -> Float[Array, "a b"]:
    """``sum_i A_i^T B_i`` as one GEMM over the stacked rows (``A`` is the small operand)."""
    k, p, a = A.shape
    return A.reshape(k * p, a).T @ B.reshape(k * p, B.shape[2])


def regression_projections(d: Design, V):
    """``V^T C_i V`` (k, r, r) and ``Y_i^T X_i V`` (k, d_out, r): one pass over C and Bt."""
    return _mm(V.T[None], _times(d.C, V)), _times(d.Bt, V)


# ----------------------------------------------------------------------------- personal step


def _solve_personal(normal, rhs, A, diag: bool):
    """Solve ``A S normal = rhs`` for S (full) or ``(A o normal) s = diag(rhs)`` (diagonal)."""
    if diag:
        return jnp.diag(psd_solve(A * normal, jnp.diagonal(rhs)))
    T = psd_solve(A, rhs)  # T = A^+ rhs, then S normal = T
    return psd_solve(normal, T.T).T


def personal_regression(VCV, BtV, U, diag) -> Float[Array, "k r r"]:
    """Regression personal step from ``regression_projections(d, V)`` (shared with the U step)."""
    # min_S ||Y - X V S^T U^T||^2  <=>  (U^T U) S (V^T C V) = U^T B^T V, per user
    rhs = _mm(U.T[None], BtV)
    return jax.vmap(_solve_personal, (0, 0, None, None))(VCV, rhs, U.T @ U, diag)


def _personal_sensing(F, y, diag):
    # y_j = <F_j, S> with F_j = U^T X_j V: a least squares in the r^2 entries of S (r if diagonal);
    # a rectangular S (U or V with a different number of columns) works the same way when full
    n = F.shape[0]
    f = jnp.diagonal(F, axis1=1, axis2=2) if diag else F.reshape(n, -1)
    s = psd_solve(f.T @ f, f.T @ y)
    return jnp.diag(s) if diag else s.reshape(F.shape[1:])


def sensing_core(XV: Float[Array, "k n d_out r"], U) -> Float[Array, "k n r r"]:
    """``U^T X_ij V`` from the projections ``X_ij V`` (cheap: no pass over X)."""
    return jnp.einsum("or,knos->knrs", U, XV)


def personal_from_core(d: Design, core: Float[Array, "k n r r"], diag: bool) -> Float[Array, "k r r"]:
    """Sensing personal step given ``U^T X_ij V`` for every user and sample."""
    return jax.vmap(_personal_sensing, (0, 0, None))(core, d.Y, diag)


def personal_step(d: Design, U, V, diag: bool) -> Float[Array, "k r r"]:
    """Exact minimizer over every user's ``S_i`` (independent across users: vmapped)."""
    if d.model == "regression":
        return personal_regression(*regression_projections(d, V), U, diag)
    return personal_from_core(d, sensing_core(d.X @ V, U), diag)


# ----------------------------------------------------------------------------- shared steps


def factor_normal(P: Float[Array, "k n d s"], Y: Float[Array, "k n"], M: Float[Array, "k r s"]):
    """Sensing: these users' (unpooled) ``(F^T F, F^T y)``, the normal equations of ``pooled_factor``."""
    d, r = P.shape[2], M.shape[1]  # M may be rectangular (r x s) when a factor is the identity
    # F_ij = P_ij M_i^T as a fused product-and-sum over s (an einsum runs one tiny GEMM per user on CPU)
    F = jnp.sum(P[:, :, :, None, :] * M[:, None, None, :, :], axis=-1).reshape(-1, d * r)
    return F.T @ F, F.T @ Y.reshape(-1)


def solve_factor(G, H, rank: int) -> Float[Array, "d r"]:
    """The shared factor (d x rank) solving the pooled normal equations ``G x = H``.

    ``H`` is ``r x d_out`` for the regression output step (the solution is ``U^T``), else the
    vector ``vec(A)`` of the ``d x r`` factor ``A``.
    """
    x = psd_solve(G, H)
    return x.T if H.ndim == 2 else x.reshape(-1, rank)


def pooled_factor(P: Float[Array, "k n d s"], Y: Float[Array, "k n"], M: Float[Array, "k r s"], axis_name=None):
    """Sensing: the factor ``A`` minimizing ``sum_ij (y_ij - <P_ij M_i^T, A>)^2`` (d x r).

    Output step: ``P = X V``, ``M = S`` (``<X V S^T, U> = <X, U S V^T>``). Input step:
    ``P = X^T U``, ``M = S^T``. One least squares in ``d r`` unknowns pooled over users.
    """
    G, h = factor_normal(P, Y, M)
    return solve_factor(pool(G, axis_name), pool(h, axis_name), M.shape[1])


def output_normal(d: Design, V, S):
    """These users' (unpooled) part of the normal equations of ``output_step``."""
    if d.model == "regression":
        return output_normal_regression(*regression_projections(d, V), S)
    return factor_normal(d.X @ V, d.Y, S)


def output_normal_regression(VCV, BtV, S):
    """Regression ``output_normal`` from ``regression_projections(d, V)``."""
    SN = _mm(S, VCV)  # S_i V^T C_i V
    G = _sum_tn(jnp.swapaxes(SN, 1, 2), jnp.swapaxes(S, 1, 2))  # sum_i S_i V^T C_i V S_i^T
    H = jnp.sum(S[:, :, None, :] * BtV[:, None, :, :], axis=(0, 3))  # sum_i S_i V^T B_i
    return G, H


def personal_output_and_objective(d: Design, U, V, diag: bool, axis_name: str | None = None):
    """The exact personal step, the output-step normal equations and the residual at ``(U, V)``.

    At ``(U, V)``: the exact personal step ``S``, these users' (unpooled) output-step normal
    equations ``(G, H)`` at ``(V, S)``, and the pooled sum of squared residuals ``f(U, V, S)``.

    One pass over the data serves all three: ``V^T C_i V`` and ``Bt_i V`` (regression; the
    residuals ``Y - X V S^T U^T`` add one product with the raw ``X``), or ``X_ij V`` (sensing:
    the residuals come from ``U^T X_ij V``, already formed for the personal step).
    """
    if d.model == "regression":
        VCV, BtV = regression_projections(d, V)
        S = personal_regression(VCV, BtV, U, diag)
        return S, output_normal_regression(VCV, BtV, S), sum_squares(d, U, V, S, axis_name)
    XV = d.X @ V
    core = sensing_core(XV, U)
    S = personal_from_core(d, core, diag)
    resid = d.Y - jnp.einsum("knrs,krs->kn", core, S)
    return S, factor_normal(XV, d.Y, S), pool(jnp.sum(jnp.square(resid)), axis_name)


def output_step(d: Design, V, S, axis_name: str | None = None) -> Float[Array, "d_out r"]:
    """Exact minimizer over ``U`` given ``V`` and all ``S_i`` (one pooled least squares).

    Regression: ``U^T = (sum_i S_i V^T C_i V S_i^T)^+ sum_i S_i V^T B_i`` (an r x r system).
    Sensing: ``y_ij = <X_ij V S_i^T, U>``, a least squares in the ``d_out r`` entries of U.
    """
    G, H = output_normal(d, V, S)
    return solve_factor(pool(G, axis_name), pool(H, axis_name), S.shape[1])


def input_normal(d: Design, U, S):
    """These users' (unpooled) part of the normal equations of ``input_step``."""
    if d.model == "regression":
        k, r, d_in = S.shape[0], S.shape[-1], d.C.shape[1]  # S_i may be rectangular (U = I, one-sided baselines)
        P = _mm(U[None], S)  # U S_i (k, d_out, r)
        Q = _mm(jnp.swapaxes(P, 1, 2), P)  # P_i^T P_i
        # K[(a, b), (c, e)] = sum_i C_i[a, c] Q_i[e, b]: one GEMM over users, C the right operand
        M = Q.reshape(k, r * r).T @ d.C.reshape(k, d_in * d_in)  # [(e, b), (a, c)]
        K = M.reshape(r, r, d_in, d_in).transpose(2, 1, 3, 0).reshape(d_in * r, d_in * r)
        h = _sum_tn(P, d.Bt).T.reshape(-1)  # sum_i B_i P_i, B_i = Bt_i^T
        return K, h
    return factor_normal(d.Xt @ U, d.Y, jnp.swapaxes(S, 1, 2))


def input_step(d: Design, U, S, axis_name: str | None = None) -> Float[Array, "d_in r"]:
    """Exact minimizer over ``V`` given ``U`` and all ``S_i`` (one pooled least squares).

    Regression: ``sum_i C_i V Q_i = sum_i B_i P_i`` with ``P_i = U S_i``, ``Q_i = P_i^T P_i``,
    a ``d_in r`` system whose matrix ``sum_i C_i (x) Q_i`` is one contraction over users.
    Sensing: ``y_ij = <X_ij^T U S_i, V>``, a least squares in the ``d_in r`` entries of V.
    """
    K, h = input_normal(d, U, S)
    return solve_factor(pool(K, axis_name), pool(h, axis_name), S.shape[-1])


# ----------------------------------------------------------------------------- objective, init


def residuals(d: Design, U, V, S) -> Float[Array, "k n ..."]:
    """``y_ij - A_ij(U S_i V^T)`` for every user and sample."""
    if d.model == "regression":
        return d.Y - jnp.einsum("kns,krs,or->kno", d.X @ V, S, U)
    return d.Y - jnp.einsum("knrs,krs->kn", sensing_core(d.X @ V, U), S)


def sum_squares(d: Design, U, V, S, axis_name: str | None = None):
    """``f(U, V, S)``, the pooled sum of squared residuals (computed from raw residuals)."""
    return pool(jnp.sum(jnp.square(residuals(d, U, V, S))), axis_name)


def _per_user_scale(d: Design, power: int):
    """``1 / n_i^power`` per user (0 for a user without samples), shaped to scale ``(k, ., .)``."""
    n = d.counts
    return (jnp.where(n > 0, 1.0 / jnp.maximum(n, 1) ** power, 0.0)).astype(d.X.dtype)[:, None, None]


def moment_estimates(d: Design) -> Float[Array, "k d_out d_in"]:
    """Unbiased per-user moment estimates ``W_i_hat = (1/n_i) sum_j y_ij x_ij^T`` (or y_ij X_ij)."""
    if d.model == "regression":
        return d.Bt * _per_user_scale(d, 1)
    return jnp.einsum("kn,knoi->koi", d.Y, d.X) * _per_user_scale(d, 1)


def spectral_init(d: Design, rank: int, axis_name: str | None = None):
    """Second-moment spectral initialization of the shared factors.

    ``U0`` = top-``r`` eigenvectors of ``sum_i W_i_hat W_i_hat^T``, ``V0`` those of
    ``sum_i W_i_hat^T W_i_hat``, with ``W_i_hat`` the moment estimate of user i. Because these
    are second moments, they see span(U*) and span(V*) even when ``sum_i S_i* = 0`` (where the
    plain average ``sum_i W_i_hat`` carries no signal). The estimation noise adds a nearly
    isotropic term, which leaves the leading eigenvectors in place.
    """
    MU, MV = spectral_moments(d)
    return top_eigenvectors(pool(MU, axis_name), rank), top_eigenvectors(pool(MV, axis_name), rank)


def spectral_moments(d: Design):
    """These users' (unpooled) ``sum_i W_i_hat W_i_hat^T`` and ``sum_i W_i_hat^T W_i_hat``."""
    if d.model == "regression":  # W_i_hat = Bt_i / n_i
        Bt = d.Bt * _per_user_scale(d, 1)
        B = jnp.swapaxes(Bt, 1, 2)  # one copy: an einsum("koi,kpi->op") on Bt transposes per user, far slower
        return _sum_tn(B, B), _sum_tn(Bt, Bt)
    W = moment_estimates(d)
    return jnp.einsum("koi,kpi->op", W, W), jnp.einsum("koi,koj->ij", W, W)
