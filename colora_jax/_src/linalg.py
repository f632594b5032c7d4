"""Small dense linear-algebra helpers shared by the estimators."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def psd_solve(G: Float[Array, "p p"], H: Float[Array, "p ..."]) -> Float[Array, "p ..."]:
    """Minimum-norm solution of ``G X = H`` for symmetric positive semi-definite ``G``.

    ``X = G^+ H`` through ``eigh``: eigenvalues below ``p * eps * lambda_max`` are treated as
    zero. For a normal matrix ``G = F^T F`` and ``H = F^T y`` this is the minimum-norm least
    squares solution, an exact minimizer even when the system is under-determined, which is
    what keeps every AltMin block step a true minimization (the objective never increases).
    """
    w, q = jnp.linalg.eigh(G)
    cutoff = jnp.max(w) * G.shape[-1] * jnp.finfo(G.dtype).eps
    inv = jnp.where(w > cutoff, 1.0 / jnp.where(w > cutoff, w, 1.0), 0.0)
    return q @ (inv.reshape(inv.shape + (1,) * (H.ndim - 1)) * (q.T @ H))


def top_eigenvectors(M: Float[Array, "d d"], r: int) -> Float[Array, "d r"]:
    """The ``r`` leading eigenvectors of a symmetric matrix (orthonormal columns)."""
    _, q = jnp.linalg.eigh(M)
    return q[:, ::-1][:, :r]


def qr_positive(A: Float[Array, "d r"]) -> tuple[Float[Array, "d r"], Float[Array, "r r"]]:
    """Thin QR with ``diag(R) >= 0`` (a unique gauge, continuous in ``A``)."""
    q, r = jnp.linalg.qr(A)
    s = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(A.dtype)
    return q * s[None, :], r * s[:, None]
