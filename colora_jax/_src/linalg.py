"""Small dense linear-algebra helpers shared by the estimators."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import cho_solve
from jaxtyping import Array, Float


def psd_solve(G: Float[Array, "p p"], H: Float[Array, "p ..."], refine: int = 2) -> Float[Array, "p ..."]:
    """Solve ``G X = H`` for a symmetric positive semi-definite normal matrix ``G = F^T F``.

    A Cholesky factorization of ``G + diag(delta)`` with the tiny ridge
    ``delta_j = 10 p eps G_jj`` (relative to each diagonal entry, so badly scaled columns of
    ``F`` do not matter, and the shifted matrix is safely positive definite even when ``G`` is
    singular), followed by ``refine`` steps of iterative refinement against ``G`` itself.
    Each refinement step multiplies the ridge's bias in an eigendirection with eigenvalue
    ``lambda`` by ``delta / (lambda + delta)``, so directions well above ``delta`` are solved
    exactly to rounding, while directions far below it (the null space of an under-determined
    ``G``, where ``H = F^T y`` has no component) get nothing: the result is the minimum-norm
    least-squares solution. That keeps every AltMin block step an exact
    minimization (the objective never increases) and never produces NaN from a singular ``G``.

    Batched Cholesky is 20x faster than ``eigh`` on CPU for the small systems of AltMin (the
    ``r^2``-unknown personal solves and the ``d r``-unknown pooled ones). On random least
    squares problems with column scales over 6 decades, rank-deficient half the time, its
    objective matched ``lstsq`` to a relative 3e-15 in float64 (the ``eigh`` pseudo-inverse
    with cutoff ``p eps lambda_max`` that this replaced: 3e-8).
    """
    p = G.shape[-1]
    finfo = jnp.finfo(G.dtype)
    delta = 10 * p * finfo.eps * jnp.diagonal(G) + finfo.tiny
    L = jnp.linalg.cholesky(G + jnp.diag(delta))
    rhs = H.reshape(p, -1)
    solve = lambda b: cho_solve((L, True), b)
    X = solve(rhs)
    for _ in range(refine):  # G X as a fused product-and-sum: vmapped over many users, a batched
        X = X + solve(rhs - jnp.sum(G[:, :, None] * X[None, :, :], axis=1))  # dot of tiny G is slow
    return X.reshape(H.shape)


def top_eigenvectors(M: Float[Array, "d d"], r: int) -> Float[Array, "d r"]:
    """The ``r`` leading eigenvectors of a symmetric matrix (orthonormal columns)."""
    _, q = jnp.linalg.eigh(M)
    return q[:, ::-1][:, :r]


def qr_positive(A: Float[Array, "d r"]) -> tuple[Float[Array, "d r"], Float[Array, "r r"]]:
    """Thin QR with ``diag(R) >= 0`` (a unique gauge, continuous in ``A``)."""
    q, r = jnp.linalg.qr(A)
    s = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(A.dtype)
    return q * s[None, :], r * s[:, None]
