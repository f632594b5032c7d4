"""Users streamed in chunks: the same AltMin as ``fit``, and a planted problem recovered."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import colora_jax as cj

FIT = cj.FitConfig(rank=2, iters=6, tol=0.0)


@pytest.mark.parametrize("model, samples", [("regression", 8), ("sensing", 30)])
def test_streamed_equals_in_memory_fit(x64, strict_numerics, model, samples):
    pc = cj.ProblemConfig(model=model, users=12, d_out=6, d_in=5, rank=2, samples=samples, noise=0.1, x64=True)
    prob = jax.jit(cj.generate, static_argnums=1)(jax.random.key(1), pc)
    ref, ref_trace = jax.jit(lambda o, t: cj.fit(o, FIT, truth=t))(prob.train, prob.truth)
    run = jax.jit(lambda o, U, V: cj.fit_streaming(o, FIT, nchunks=3, truth_U=U, truth_V=V))
    est, trace = run(prob.train, prob.truth.U, prob.truth.V)
    assert int(trace.iterations) == int(ref_trace.iterations)
    for got, want in (
        (est.U, ref.U),
        (est.V, ref.V),
        (est.S, ref.S),
        (trace.objective, ref_trace.objective),
        (trace.subspace_distance_U, ref_trace.subspace_distance_U),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert bool(trace.finite_input)


def test_chunk_generated_problem_is_recovered():
    pc = cj.ProblemConfig(model="regression", users=40, d_out=8, d_in=6, rank=2, samples=6)
    planted = jax.jit(cj.generate_chunks, static_argnums=(1, 2))(jax.random.key(0), pc, 4)
    assert planted.train.X.shape == (40, 6, 6) and planted.S.shape == (40, 2, 2)
    fit = jax.jit(lambda o, U, V: cj.fit_streaming(o, cj.FitConfig(iters=30), nchunks=5, truth_U=U, truth_V=V))
    est, trace = fit(planted.train, planted.U, planted.V)
    assert float(trace.subspace_distance_U[trace.iterations]) < 1e-3
    assert float(trace.subspace_distance_V[trace.iterations]) < 1e-3
    W_hat = np.einsum("or,krs,is->koi", est.U, est.S, est.V)
    W = np.einsum("or,krs,is->koi", planted.U, planted.S, planted.V)
    assert np.linalg.norm(W_hat - W) / np.linalg.norm(W) < 1e-3


def test_chunks_must_divide_users():
    obs = cj.Observations(np.zeros((10, 4, 3), np.float32), np.zeros((10, 4, 3), np.float32), "regression")
    with pytest.raises(ValueError, match="equal chunks"):
        cj.fit_streaming(obs, FIT, nchunks=3)
