"""Subspace metrics that are accurate over the whole range of angles, and recovery errors.

Principal angles ``0 <= theta_1 <= ... <= theta_q <= pi/2`` between span(A) and span(B)
(Bjorck & Golub 1973). With orthonormal bases ``Q_A``, ``Q_B`` (q = dim span(B) <= p):

* ``cos(theta)`` are the singular values of ``Q_A^T Q_B``, accurate in absolute terms, so they
  resolve angles near pi/2 but lose about half the digits near 0 (arccos(1 - eps) ~ 1e-8);
* ``sin(theta)`` are the singular values of ``(I - Q_A Q_A^T) Q_B``, which resolve tiny angles.

scipy.linalg.subspace_angles switches between the two per angle, but pairs its mask with
reversed lists, so for a pair of subspaces with both a tiny and a large angle it uses arcsin
for the large one and arccos for the tiny one (Knyazev & Argentati, SISC 2002, describe the
correct combination). Here every angle is ``atan2(sin, cos)`` with the i-th largest cosine
paired with the i-th smallest sine: atan2 is well conditioned in both arguments, so each angle
is as accurate as the better of its sine and cosine, over the whole range at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _check_bases(A, B) -> None:
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"bases must be matrices (d x p), got shapes {A.shape} and {B.shape}")
    if A.shape[0] != B.shape[0]:
        raise ValueError(
            f"bases live in different spaces: A has {A.shape[0]} rows and B has {B.shape[0]};"
            " pass two bases of subspaces of the same R^d"
        )
    if A.shape[1] > A.shape[0] or B.shape[1] > B.shape[0]:
        raise ValueError(f"a basis of R^{A.shape[0]} has at most {A.shape[0]} columns, got {A.shape}, {B.shape}")


def orthonormal_basis(A: Float[Array, "d p"]) -> Float[Array, "d p"]:
    """Orthonormal basis of span(A) (Householder QR; A must have full column rank)."""
    q, _ = jnp.linalg.qr(A)
    return q


def principal_angles(A: Float[Array, "d p"], B: Float[Array, "d q"]) -> Float[Array, " min(p,q)"]:
    """Principal angles between span(A) and span(B), ascending, in radians.

    Args:
      A, B: full-column-rank bases (not necessarily orthonormal) of subspaces of R^d.

    Returns:
      ``min(p, q)`` angles in [0, pi/2], ascending. ``theta_i = atan2(sin_i, cos_i)`` with
      ``cos`` the singular values of ``Q_A^T Q_B`` (descending) and ``sin`` those of the
      residual ``Q_B - Q_A (Q_A^T Q_B)`` (projected twice), ascending.

    Example: a tiny and a right angle in one pair of planes, both to full precision:

      >>> import jax, jax.numpy as jnp, colora_jax as cj
      >>> jax.config.update("jax_enable_x64", True)
      >>> A = jnp.eye(4)[:, :2]
      >>> B = jnp.stack([jnp.array([1.0, 0, 1e-9, 0]), jnp.array([0.0, 0, 0, 1.0])], axis=1)
      >>> [float(f"{t:.6g}") for t in cj.principal_angles(A, B)]
      [1e-09, 1.5708]
      >>> jax.config.update("jax_enable_x64", False)
    """
    _check_bases(A, B)
    if B.shape[1] > A.shape[1]:
        A, B = B, A
    qa, qb = orthonormal_basis(A), orthonormal_basis(B)
    cross = qa.T @ qb
    resid = qb - qa @ cross
    resid = resid - qa @ (qa.T @ resid)  # "twice is enough": residual orthogonal to working precision
    cos = jnp.linalg.svd(cross, compute_uv=False)  # descending: smallest angle first
    sin = jnp.linalg.svd(resid, compute_uv=False)[::-1]  # ascending: smallest angle first
    return jnp.arctan2(sin, cos)


def subspace_distance(A: Float[Array, "d p"], B: Float[Array, "d q"], norm: str = "spectral") -> Float[Array, ""]:
    """Distance between two subspaces from the sines of their principal angles.

    ``norm="spectral"``: ``sin(theta_max)`` (= ``||(I - P_A) P_B||_2`` for equal dimensions),
    in [0, 1]. ``norm="frobenius"``: ``||sin(theta)||_2``, in [0, sqrt(min(p, q))].

    Both are computed from the residual ``R = Q_B - Q_A (Q_A^T Q_B)`` (projected twice, with
    ``Q`` orthonormal bases of the larger and the smaller subspace), whose singular values are
    the sines: no cosine and no arccos, so tiny distances keep their relative accuracy (a
    distance of 1e-12 is resolved to a few eps of itself). The spectral norm is the square
    root of the largest eigenvalue of the small Gram matrix ``R^T R``; the Frobenius norm is
    ``||R||_F``. This is what the fits record every iteration, so it is kept cheap: two thin
    QRs and one symmetric eigenvalue problem of size ``min(p, q)``, no SVD.
    """
    _check_bases(A, B)
    if norm not in ("spectral", "frobenius"):
        raise ValueError(f"unknown norm {norm!r}: choose 'spectral' or 'frobenius'")
    if B.shape[1] > A.shape[1]:
        A, B = B, A
    qa, qb = orthonormal_basis(A), orthonormal_basis(B)
    resid = qb - qa @ (qa.T @ qb)
    resid = resid - qa @ (qa.T @ resid)  # "twice is enough"
    if norm == "frobenius":
        return jnp.linalg.norm(resid)
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(resid.T @ resid)[-1], 0.0))


def geodesic_distance(A: Float[Array, "d p"], B: Float[Array, "d q"]) -> Float[Array, ""]:
    """Grassmann geodesic (arc-length) distance ``||theta||_2``."""
    return jnp.linalg.norm(principal_angles(A, B))


def _projector(A: Float[Array, "d p"]) -> Float[Array, "d d"]:
    """Orthogonal projector onto span(A): ``A (A^T A)^{-1} A^T`` (no SVD)."""
    return A @ jnp.linalg.solve(A.T @ A, A.T)


def projection_distance(A: Float[Array, "d p"], B: Float[Array, "d q"]) -> Float[Array, ""]:
    """``||P_A - P_B||_F`` from the projectors themselves (no angles are computed).

    For subspaces of equal dimension this equals ``sqrt(2) ||sin(theta)||_2``; it is an
    independent route to the same number, accurate in absolute (not relative) terms.
    """
    _check_bases(A, B)
    return jnp.linalg.norm(_projector(A) - _projector(B))


def chordal_distance_squared(A: Float[Array, "d p"], B: Float[Array, "d q"]) -> Float[Array, ""]:
    """Smooth squared distance ``||P_A - P_B||_F^2 / 2`` with no SVD, safe to differentiate.

    ``= (p + q)/2 - tr((A^T A)^{-1} A^T B (B^T B)^{-1} B^T A)``; for equal dimensions it equals
    ``sum_i sin(theta_i)^2``. Gradients exist everywhere (also at distance 0), so it can be a
    training loss or a regularizer.
    """
    _check_bases(A, B)
    ab = A.T @ B
    t = jnp.trace(jnp.linalg.solve(A.T @ A, ab) @ jnp.linalg.solve(B.T @ B, ab.T))
    return 0.5 * (A.shape[1] + B.shape[1]) - t


def relative_error(W_hat: Float[Array, "*k d_out d_in"], W_star: Float[Array, "*k d_out d_in"]) -> Float[Array, ""]:
    """``||W_hat - W*||_F / ||W*||_F`` over everything passed (all users stacked)."""
    return jnp.linalg.norm(W_hat - W_star) / jnp.linalg.norm(W_star)


def per_user_relative_error(
    W_hat: Float[Array, "k d_out d_in"], W_star: Float[Array, "k d_out d_in"]
) -> Float[Array, " k"]:
    """``||W_i_hat - W_i*||_F / ||W_i*||_F`` for each user i."""
    return jax.vmap(relative_error)(W_hat, W_star)
