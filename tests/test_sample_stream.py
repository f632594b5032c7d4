"""The nested sample stream: samples and users are prefixes, a masked fit is the fit of the prefix,
and the closed-form held-out error is what a large test set measures."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import colora_jax as cj
from colora_jax._src.model.counter_rng import threefry2x32  # the hash itself is internal; its output is public

pytestmark = pytest.mark.usefixtures("x64")

BASE = cj.ProblemConfig(
    model="sensing", users=5, d_out=6, d_in=5, rank=2, samples=12, noise=0.1, task_angle=0.3, deviation=0.1, x64=True
)


def test_hash_is_jax_threefry_bit_for_bit():
    from jax.extend.random import threefry2x32_p

    rng = np.random.default_rng(0)
    words = [jnp.asarray(rng.integers(0, 2**32, 257, dtype=np.uint64).astype(np.uint32)) for _ in range(4)]
    for ours, theirs in zip(threefry2x32(*words), threefry2x32_p.bind(*words)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_normals_are_standard_normal_and_nested(dtype):
    key = jax.random.key(3)
    z = np.asarray(cj.nested_normals(key, 40, 30, 101, dtype), np.float64).ravel()
    # 121,200 draws: the mean and variance are within 5 standard errors of 0 and 1, and the
    # tails match the normal's (a 4-sigma event has probability 6.3e-5: about 8 expected)
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
    assert 0 < np.sum(np.abs(z) > 4) < 30
    small = cj.nested_normals(key, 7, 11, 101, dtype)
    np.testing.assert_array_equal(small, cj.nested_normals(key, 40, 30, 101, dtype)[:7, :11])
    chunk = cj.nested_normals(key, 5, 30, 101, dtype, first_user=20)
    np.testing.assert_array_equal(chunk, cj.nested_normals(key, 40, 30, 101, dtype)[20:25])


@given(seed=st.integers(0, 2**31 - 1), model=st.sampled_from(["regression", "sensing"]))
def test_a_smaller_problem_is_a_prefix_of_a_larger_one(seed, model):
    """The draws (designs, noise, planted parts) are the same numbers; what is computed from them
    (W_i*, y) agrees to rounding (a product's summation order may depend on the batch shape)."""
    big, small = _prefix_pair(model)
    P, p = big(jax.random.key(seed)), small(jax.random.key(seed))
    np.testing.assert_array_equal(p.train.X, P.train.X[:3, :7])
    np.testing.assert_array_equal(p.truth.S, P.truth.S[:3])
    np.testing.assert_allclose(p.truth.W, P.truth.W[:3], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(p.train.Y, P.train.Y[:3, :7], rtol=1e-14, atol=1e-14)


@functools.cache
def _prefix_pair(model):
    big = dataclasses.replace(BASE, model=model, samples=20, users=8)
    small = dataclasses.replace(BASE, model=model, samples=7, users=3)
    return jax.jit(lambda k: cj.generate(k, big)), jax.jit(lambda k: cj.generate(k, small))


def test_generated_chunks_equal_the_whole_problem():
    pc = dataclasses.replace(BASE, model="regression", users=6, task_angle=0.0, deviation=0.0)
    whole = cj.generate(jax.random.key(4), pc)
    chunked = cj.generate_chunks(jax.random.key(4), pc, 3)
    np.testing.assert_array_equal(chunked.train.X, whole.train.X)
    np.testing.assert_array_equal(chunked.S, whole.truth.S)
    np.testing.assert_array_equal(chunked.U, whole.truth.U)


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("algorithm", ["altmin", "altgd"])
def test_a_masked_fit_is_the_fit_of_the_prefix(model, algorithm):
    """``counts`` = n on N stored samples fits exactly the first n (float64, to 1e-12)."""
    pc = dataclasses.replace(BASE, model=model, samples=20, task_angle=0.0, deviation=0.0)
    fc = cj.FitConfig(rank=2, iters=6, tol=0.0, algorithm=algorithm)
    full = cj.generate(jax.random.key(5), pc).train
    for n in (9, 14):
        prefix = cj.Observations(full.X[:, :n], full.Y[:, :n], model)
        a, ta = cj.fit(full.with_counts(n), fc)
        b, tb = cj.fit(prefix, fc)
        np.testing.assert_allclose(a.W, b.W, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(b.W))))
        np.testing.assert_allclose(ta.objective, tb.objective, rtol=1e-12)


def test_per_user_counts_ignore_the_unused_rows_even_when_they_are_nan():
    pc = dataclasses.replace(BASE, samples=16)
    obs = cj.generate(jax.random.key(6), pc).train
    counts = jnp.asarray([16, 10, 12, 9, 16])
    poisoned = cj.Observations(obs.X.at[1, 12].set(jnp.nan), obs.Y.at[3, 10].set(jnp.inf), "sensing", counts=counts)
    clean = cj.Observations(obs.X, obs.Y, "sensing", counts=counts)
    fc = cj.FitConfig(rank=2, iters=5, tol=0.0)
    a, ta = cj.fit(poisoned, fc)
    b, _ = cj.fit(clean, fc)
    np.testing.assert_array_equal(a.W, b.W)
    assert bool(ta.finite_input)


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_population_risk_is_what_a_large_test_set_measures(model):
    """The closed form against 4000 held-out samples per user: within 4 standard errors."""
    pc = dataclasses.replace(BASE, model=model, users=3, samples=10, test_samples=4000, noise=0.3)
    p = cj.generate(jax.random.key(7), pc)
    W_hat = p.truth.W + 0.2 * jax.random.normal(jax.random.key(8), p.truth.W.shape)
    exact, exact_rel = cj.population_risk(W_hat, p.truth, model)
    sampled, sampled_rel = cj.prediction_error(W_hat, p.test)
    # per-sample squared errors are (scaled) chi-square: their standard deviation is at most
    # sqrt(2) times their mean per output, so the mean of N of them has SE <= sqrt(2 / N) * exact
    n = pc.users * pc.test_samples * (pc.d_out if model == "regression" else 1)
    assert abs(float(sampled) - float(exact)) < 4 * np.sqrt(2 / n) * float(exact)
    assert abs(float(sampled_rel) - float(exact_rel)) < 0.05 * float(exact_rel)
    no_test = dataclasses.replace(p, test=cj.Observations(p.test.X[:, :0], p.test.Y[:, :0], model))
    assert float(cj.evaluate(W_hat, no_test).test_mse) == pytest.approx(float(exact), rel=1e-12)
