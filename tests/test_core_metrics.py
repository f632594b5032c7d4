"""Principal angles and subspace distances against exact constructions and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import colora_jax as cj

pytestmark = pytest.mark.usefixtures("strict_numerics", "x64")


def planted_pair(seed, d, angles, conditioned=True):
    """Bases of two subspaces of R^d with exactly the given principal angles (float64).

    span(A) = Q [e_1..e_p], span(B) = Q [cos t_j e_j + sin t_j e_{p+j}] for a random orthogonal
    Q; then each basis is multiplied by a random well-conditioned matrix (not orthonormal).
    """
    rng = np.random.default_rng(seed)
    p = len(angles)
    E = np.eye(d)
    A0 = E[:, :p]
    B0 = A0 * np.cos(angles) + E[:, p : 2 * p] * np.sin(angles)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A, B = Q @ A0, Q @ B0
    if conditioned:
        A = A @ (np.eye(p) + 0.3 * rng.standard_normal((p, p)) / np.sqrt(p))
        B = B @ (np.eye(p) + 0.3 * rng.standard_normal((p, p)) / np.sqrt(p))
    return jnp.asarray(A), jnp.asarray(B)


angle = st.one_of(
    st.floats(1e-9, 1e-5),  # tiny: arccos would return 0 for all of these
    st.floats(1e-5, 1.5),
    st.floats(1.5, float(np.pi / 2)),  # near-orthogonal: arcsin loses digits here
)


@given(seed=st.integers(0, 2**31 - 1), angles=st.lists(angle, min_size=1, max_size=3))
def test_principal_angles_match_exact_construction_over_the_whole_range(seed, angles):
    d = 2 * len(angles) + 3
    A, B = planted_pair(seed, d, np.array(angles))
    got = np.asarray(cj.principal_angles(A, B))
    want = np.sort(np.array(angles))
    # absolute accuracy at the eps level everywhere; tiny angles are therefore relatively accurate
    np.testing.assert_allclose(got, want, rtol=0, atol=200 * np.finfo(np.float64).eps)
    tiny = want < 1e-6
    if tiny.any():
        assert np.all(np.abs(got[tiny] - want[tiny]) <= 1e-5 * want[tiny]), "tiny angles must keep relative accuracy"


def test_tiny_and_large_angles_in_one_pair():
    """The case scipy.linalg.subspace_angles gets wrong: it pairs arccos with the tiny angle."""
    angles = np.array([1e-10, 1.5707963])
    A, B = planted_pair(3, 7, angles)
    got = np.asarray(cj.principal_angles(A, B))
    np.testing.assert_allclose(got, angles, rtol=1e-5, atol=1e-14)
    qa, qb = np.linalg.qr(np.asarray(A))[0], np.linalg.qr(np.asarray(B))[0]
    arccos_only = np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1))
    assert abs(np.min(arccos_only) - 1e-10) > 1e-10, "the check is vacuous if arccos alone resolved 1e-10"


def test_relative_accuracy_far_below_eps_on_coordinate_bases():
    A = jnp.asarray([[1.0], [0.0], [0.0]])
    for t in (1e-20, 1e-12, 1e-3):
        B = jnp.asarray([[np.cos(t)], [np.sin(t)], [0.0]])
        np.testing.assert_allclose(cj.principal_angles(A, B), [t], rtol=1e-14)


def test_unequal_dimensions_give_min_pq_angles():
    A, B = planted_pair(1, 9, np.array([0.1, 0.7, 1.2]))
    got = cj.principal_angles(A, B[:, :1])
    assert got.shape == (1,)
    np.testing.assert_allclose(cj.principal_angles(A[:, :2], B), cj.principal_angles(B, A[:, :2]), atol=1e-14)


@given(seed=st.integers(0, 2**31 - 1))
def test_distances_symmetric_invariant_and_in_range(seed):
    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.standard_normal((8, 3)))
    B = jnp.asarray(rng.standard_normal((8, 3)))
    R = jnp.asarray(rng.standard_normal((3, 3)) + 3 * np.eye(3))
    Q = jnp.asarray(np.linalg.qr(rng.standard_normal((8, 8)))[0])
    for dist in (cj.subspace_distance, cj.geodesic_distance, cj.projection_distance, cj.chordal_distance_squared):
        dab = float(dist(A, B))
        np.testing.assert_allclose(dist(B, A), dab, atol=1e-12)  # symmetry
        np.testing.assert_allclose(dist(A @ R, B), dab, atol=1e-10)  # change of basis
        np.testing.assert_allclose(dist(Q @ A, Q @ B), dab, atol=1e-10)  # rotation of the space
        assert abs(float(dist(A, A @ R))) <= 1e-7  # equal spans
    assert 0.0 <= float(cj.subspace_distance(A, B)) <= 1.0
    assert 0.0 <= float(cj.geodesic_distance(A, B)) <= np.sqrt(3) * np.pi / 2


@given(seed=st.integers(0, 2**31 - 1))
def test_independent_routes_agree(seed):
    """Projectors (no angles) and chordal distance (no SVD) agree with the sines of the angles."""
    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.standard_normal((7, 2)))
    B = jnp.asarray(rng.standard_normal((7, 2)))
    s = np.sin(np.asarray(cj.principal_angles(A, B)))
    np.testing.assert_allclose(cj.projection_distance(A, B), np.sqrt(2) * np.linalg.norm(s), atol=1e-12)
    np.testing.assert_allclose(cj.chordal_distance_squared(A, B), np.sum(s**2), atol=1e-12)
    np.testing.assert_allclose(cj.subspace_distance(A, B, norm="frobenius"), np.linalg.norm(s), atol=1e-12)
    np.testing.assert_allclose(cj.geodesic_distance(A, B), np.linalg.norm(np.arcsin(s)), atol=1e-10)


def test_chordal_distance_has_finite_gradient_at_zero():
    A = jnp.asarray(np.random.default_rng(0).standard_normal((6, 2)))
    g = jax.grad(cj.chordal_distance_squared)(A, A)
    assert np.all(np.isfinite(g)) and float(jnp.max(jnp.abs(g))) < 1e-10


def test_bad_bases_raise():
    with pytest.raises(ValueError, match="same R\\^d"):
        cj.principal_angles(jnp.ones((5, 2)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="spectral"):
        cj.subspace_distance(jnp.eye(4)[:, :2], jnp.eye(4)[:, 1:3], norm="nuclear")
