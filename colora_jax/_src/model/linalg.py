"""Small dense linear-algebra helpers shared by the estimators."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, Float


def psd_solve(
    G: Float[Array, "p p"], H: Float[Array, "p ..."], refine: int = 2, substitute: bool = False
) -> Float[Array, "p ..."]:
    """Solve ``G X = H`` for a symmetric positive semi-definite normal matrix ``G = F^T F``.

    A Cholesky factorization ``L L^T`` of ``G + diag(delta)`` with the tiny ridge
    ``delta_j = 10 p eps G_jj`` (relative to each diagonal entry, so badly scaled columns of
    ``F`` do not matter, and the shifted matrix is safely positive definite even when ``G`` is
    singular), followed by ``refine`` steps of iterative refinement against ``G`` itself.
    Each refinement step multiplies the ridge's bias in an eigendirection with eigenvalue
    ``lambda`` by ``delta / (lambda + delta)``, so directions well above ``delta`` are solved
    exactly to rounding, while directions far below it (the null space of an under-determined
    ``G``, where ``H = F^T y`` has no component) get nothing: the result is the minimum-norm
    least-squares solution. That keeps every AltMin block step an exact minimization (the
    objective never increases) and never produces NaN from a singular ``G``.

    The shifted inverse is applied as ``L^{-T} L^{-1}`` with ``L^{-1}`` formed once (one
    triangular solve against the identity): every solve and refinement step is then a small
    matrix product, so the compiled program holds one Cholesky and one triangular solve per
    call instead of a pair of triangular solves per step (the systems here have ``r^2`` or
    ``d r`` unknowns; forming ``L^{-1}`` costs what one solve with ``p`` right-hand sides does).

    Batched Cholesky is far cheaper than ``eigh`` for the small systems of AltMin, and on least
    squares problems with column scales over many decades, rank-deficient or not, its objective
    matches ``lstsq`` to rounding in float64 (an ``eigh`` pseudo-inverse with a relative cutoff
    does not); a hypothesis test (``test_psd_solve_is_an_exact_least_squares_solve``) keeps it so.

    ``substitute=True`` applies the factor by a pair of triangular solves per step instead: the
    cheaper choice for one right-hand side of a larger system (a Levenberg-Marquardt step), the
    same numerics up to rounding.
    """
    p = G.shape[-1]
    finfo = jnp.finfo(G.dtype)
    delta = 10 * p * finfo.eps * jnp.diagonal(G) + finfo.tiny
    L = jnp.linalg.cholesky(G + jnp.diag(delta))
    rhs = H.reshape(p, -1)
    if substitute:
        solve = lambda b: solve_triangular(L, solve_triangular(L, b, lower=True), lower=True, trans=1)
    else:
        L_inv = solve_triangular(L, jnp.eye(p, dtype=G.dtype), lower=True)
        solve = lambda b: _matmul_small(L_inv.T, _matmul_small(L_inv, b))
    X = solve(rhs)
    for _ in range(refine):
        X = X + solve(rhs - _matmul_small(G, X))
    return X.reshape(H.shape)


def _matmul_small(A, B):
    """``A @ B``; for small systems as a fused product-and-sum.

    Vmapped over many users, a batched dot of tiny matrices runs one small GEMM per user on CPU, far
    slower.
    """
    if A.shape[0] * A.shape[1] * B.shape[1] > 2**16:
        return A @ B
    return jnp.sum(A[:, :, None] * B[None, :, :], axis=1)


def top_eigenvectors(M: Float[Array, "d d"], r: int) -> Float[Array, "d r"]:
    """The ``r`` leading eigenvectors of a symmetric matrix (orthonormal columns)."""
    _, q = jnp.linalg.eigh(M)
    return q[:, ::-1][:, :r]


def qr_positive(A: Float[Array, "d r"]) -> tuple[Float[Array, "d r"], Float[Array, "r r"]]:
    """Thin QR with ``diag(R) >= 0`` (a unique gauge, continuous in ``A``)."""
    q, r = jnp.linalg.qr(A)
    s = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(A.dtype)
    return q * s[None, :], r * s[:, None]
