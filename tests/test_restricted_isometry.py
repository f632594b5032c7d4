"""The restricted-isometry script's exact pieces: the eigenproblem in S, the certified pooled upper
bound and the Wishart reference law, each against a direct computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colora_jax import ProblemConfig, measure, predict
from proofs_numerics import restricted_isometry as ri


def _operator(model, users, samples, d=5, seed=0):
    pc = ProblemConfig(model=model, users=users, d_out=d, d_in=d, rank=1, samples=samples, test_samples=0)
    X = measure(jax.random.key(seed), jnp.zeros((users, d, d)), samples, 0.0, model).X
    return pc, X


def _orthonormal(key, d, r):
    return jnp.linalg.qr(jax.random.normal(key, (d, r)))[0]


@pytest.mark.parametrize("model,samples", [("sensing", 12), ("sensing", 40), ("regression", 12)])
def test_each_users_ratio_is_the_rayleigh_quotient_of_its_block(model, samples):
    pc, X = _operator(model, 3, samples)
    keys = jax.random.split(jax.random.key(1), 3)
    U, V = _orthonormal(keys[0], 5, 2), _orthonormal(keys[1], 5, 2)
    S = jax.random.normal(keys[2], (3, 2, 2))
    Z = jnp.einsum("or,krs,is->koi", U, S, V)
    direct = jnp.sum(jnp.square(jax.vmap(predict, in_axes=(0, 0, None))(Z, X, model)).reshape(3, -1), axis=1)
    direct = direct / (samples * jnp.sum(jnp.square(Z), axis=(1, 2)))
    stat = ri.statistic_of(X, pc)  # the same design the direct ratio sees
    M = ri.blocks(stat, model, U, V) if model == "sensing" else ri.blocks(stat, model, V)
    if model == "sensing":
        s = S.reshape(3, -1)
        quotient = jnp.einsum("kp,kpq,kq->k", s, M, s) / jnp.sum(s * s, axis=1)
    else:  # the ratio is the quotient of I (x) M on vec(S): tr(S M S^T) / ||S||^2
        quotient = jnp.einsum("krs,kst,krt->k", S, M, S) / jnp.sum(S * S, axis=(1, 2))
    np.testing.assert_allclose(direct, quotient, rtol=2e-5)


@pytest.mark.parametrize("users", [1, 3, 12])
def test_the_ky_fan_bound_lies_above_every_balanced_direction_and_the_search(users):
    pc, _ = _operator("regression", users, 15)
    stat = ri.statistic(jax.random.key(0), pc)
    bound = float(ri.pooled_upper(stat, 2))
    for key in jax.random.split(jax.random.key(2), 50):
        lam = jnp.linalg.eigvalsh(ri.blocks(stat, "regression", _orthonormal(key, 5, 2)))
        assert max(float(jnp.mean(lam[:, -1])) - 1, 1 - float(jnp.mean(lam[:, 0]))) <= bound + 1e-6
    best, found, _ = ri.summarize(*ri.search(stat, "regression", jax.random.key(3), (5,), 2, 4, 100, 0.3))
    assert float(best) <= bound + 1e-6 and int(found) >= 1
    if users == 1:  # one user: the set holds the top eigenvector, the search reaches the exact constant
        lam = jnp.linalg.eigvalsh(stat[0])
        assert float(best) == pytest.approx(max(float(lam[-1]) - 1, 1 - float(lam[0])), rel=1e-3)


def test_bartletts_wishart_law_matches_the_librarys_generator():
    pc, _ = _operator("regression", 3000, 20)
    lam = np.linalg.eigvalsh(np.asarray(ri.statistic(jax.random.key(4), pc), float))
    generated = np.maximum(lam[:, -1] - 1, 1 - lam[:, 0])
    reference = ri.wishart_reference(0, 3000, 5, 20, 3000)
    levels = [0.1, 0.5, 0.9]
    np.testing.assert_allclose(np.quantile(generated, levels), np.quantile(reference, levels), rtol=0.05)


def test_the_predicted_median_is_the_quantile_of_the_largest_of_k():
    draws = np.random.default_rng(5).random(20001)  # Uniform(0, 1): the largest of k has median 2^(-1/k)
    for users in (1, 4, 64):
        point, low, high = ri.predicted(draws, users, 0.95)
        assert low <= 0.5 ** (1 / users) <= high and abs(point - 0.5 ** (1 / users)) < 0.01
