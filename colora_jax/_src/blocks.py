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

from colora_jax._src.data import Observations
from colora_jax._src.linalg import psd_solve, top_eigenvectors


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
    B: Float[Array, "k d_in d_out"] | None  # regression: X_i^T Y_i
    Xt: Float[Array, "k n d_in d_out"] | None  # sensing: every X_ij transposed (contiguous for X^T U)
    model: str = dataclasses.field(metadata=dict(static=True))


def design(obs: Observations) -> Design:
    """Precompute what the block steps need from the observations."""
    if obs.model == "regression":
        C = jnp.einsum("kni,knj->kij", obs.X, obs.X)
        B = jnp.einsum("kni,kno->kio", obs.X, obs.Y)
        return Design(X=obs.X, Y=obs.Y, C=C, B=B, Xt=None, model=obs.model)
    return Design(X=obs.X, Y=obs.Y, C=None, B=None, Xt=jnp.swapaxes(obs.X, 2, 3), model=obs.model)


# ----------------------------------------------------------------------------- personal step


def _solve_personal(normal, rhs, A, diag: bool):
    """Solve ``A S normal = rhs`` for S (full) or ``(A o normal) s = diag(rhs)`` (diagonal)."""
    if diag:
        return jnp.diag(psd_solve(A * normal, jnp.diagonal(rhs)))
    T = psd_solve(A, rhs)  # T = A^+ rhs, then S normal = T
    return psd_solve(normal, T.T).T


def _personal_regression(C, B, U, V, diag):
    # min_S ||Y - X V S^T U^T||^2  <=>  (U^T U) S (V^T C V) = U^T B^T V
    return _solve_personal(V.T @ C @ V, U.T @ B.T @ V, U.T @ U, diag)


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
        return jax.vmap(_personal_regression, (0, 0, None, None, None))(d.C, d.B, U, V, diag)
    return personal_from_core(d, sensing_core(d.X @ V, U), diag)


# ----------------------------------------------------------------------------- shared steps


def factor_normal(P: Float[Array, "k n d s"], Y: Float[Array, "k n"], M: Float[Array, "k r s"]):
    """Sensing: these users' (unpooled) ``(F^T F, F^T y)``, the normal equations of ``pooled_factor``."""
    d, r = P.shape[2], M.shape[1]  # M may be rectangular (r x s) when a factor is the identity
    F = jnp.einsum("knos,krs->knor", P, M).reshape(-1, d * r)
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
        CV = jnp.einsum("kij,jr->kir", d.C, V)
        G = jnp.einsum("kra,kia,ib,ksb->rs", S, CV, V, S)  # sum_i S V^T C V S^T
        H = jnp.einsum("kra,ia,kio->ro", S, V, d.B)  # sum_i S V^T B
        return G, H
    return factor_normal(d.X @ V, d.Y, S)


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
        r, d_in = S.shape[-1], d.C.shape[1]  # S_i may be rectangular (U = I, one-sided baselines)
        P = jnp.einsum("or,krs->kos", U, S)
        Q = jnp.einsum("kor,kos->krs", P, P)
        K = jnp.einsum("kac,keb->abce", d.C, Q).reshape(d_in * r, d_in * r)
        h = jnp.einsum("kao,kob->ab", d.B, P).reshape(-1)
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


def moment_estimates(d: Design) -> Float[Array, "k d_out d_in"]:
    """Unbiased per-user moment estimates ``W_i_hat = (1/n) sum_j y_ij x_ij^T`` (or y_ij X_ij)."""
    n = d.X.shape[1]
    if d.model == "regression":
        return jnp.swapaxes(d.B, 1, 2) / n
    return jnp.einsum("kn,knoi->koi", d.Y, d.X) / n


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
    W = moment_estimates(d)
    return jnp.einsum("koi,kpi->op", W, W), jnp.einsum("koi,koj->ij", W, W)
