"""GNMR and ScaledGD adapted to ``U S_i V^T``: planted truth recovered, one GNMR step against a dense
minimum-norm Gauss-Newton step, ScaledGD's gauge equivariance and its rate against the condition
number, reachable from ``run_trials``, errors. The claims every estimator shares (declared not monotone,
batched = looped, sharded = single device, in chunks = in memory) are tests/test_estimators.py's.
"""

from __future__ import annotations

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import colora_jax as cj  # noqa: E402
from colora_jax._src.estimators import varpro  # noqa: E402
from colora_jax._src.model import blocks  # noqa: E402

SOTA = ("gnmr", "scaledgd")


def planted(model, seed=0, *, users=6, d_out=4, d_in=5, samples=None, noise=0.0, condition=1.0, personal="full"):
    """A float64 problem with enough samples that both methods converge from the spectral start."""
    if samples is None:
        samples = 60 if model == "sensing" else 30
    pc = cj.ProblemConfig(
        model=model,
        users=users,
        d_out=d_out,
        d_in=d_in,
        rank=2,
        samples=samples,
        noise=noise,
        condition=condition,
        personal=personal,
        x64=True,
    )
    return cj.generate(jax.random.key(seed), pc)


def final(trace, name="rel_error"):
    return float(getattr(trace, name)[int(trace.iterations)])


# ----------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("algorithm", SOTA)
def test_noiseless_planted_truth_recovered_to_rounding(model, algorithm):
    with jax.enable_x64(True):
        p = planted(model)
        est, trace = cj.fit(p.train, cj.FitConfig(rank=2, algorithm=algorithm, iters=300), truth=p.truth)
        assert bool(trace.converged)  # stopped at the floor, not by the budget
        assert cj.relative_error(est.W, p.truth.W) <= 1e-10
        assert final(trace) <= 1e-10
        assert final(trace, "subspace_distance_U") <= 1e-10 and final(trace, "subspace_distance_V") <= 1e-10


def test_gnmr_diagonal_personal_part_recovered():
    with jax.enable_x64(True):
        p = planted("sensing", 2, personal="diag", samples=20)
        est, trace = cj.fit(p.train, cj.FitConfig(rank=2, personal="diag", algorithm="gnmr"), truth=p.truth)
        assert cj.relative_error(est.W, p.truth.W) <= 1e-10
        assert bool(jnp.all(est.S == jax.vmap(jnp.diag)(jax.vmap(jnp.diagonal)(est.S))))


# ----------------------------------------------------------------------------- GNMR: one step


@pytest.mark.parametrize(("model", "personal"), [("regression", "full"), ("sensing", "full"), ("sensing", "diag")])
def test_gnmr_step_is_the_dense_minimum_norm_gauss_newton_step(model, personal):
    """From a point where S is not the personal optimum, the next users' matrices equal
    ``(U + dU)(S + dS)(V + dV)^T`` for the minimum-norm solution of the dense joint linearized
    least squares (``lstsq`` over all of U, V and every S_i, no Schur complement)."""
    with jax.enable_x64(True):
        diag = personal == "diag"
        p = planted(model, 1, users=4, samples=16 if model == "sensing" else 6, personal=personal)
        pick = (lambda s: jax.vmap(jnp.diagonal)(s)) if diag else (lambda s: s)
        unpick = (lambda s: jax.vmap(jnp.diag)(s)) if diag else (lambda s: s)
        config = cj.FitConfig(rank=2, personal=personal)

        # each side is one compiled program (run op by op, the step alone compiles dozens)
        @jax.jit
        def start(d):
            U, V = blocks.spectral_init(d, 2)
            S = blocks.personal_step(d, U, V, diag)
            noise = 0.2 * jax.random.normal(jax.random.key(5), S.shape, S.dtype)
            return U, V, S + unpick(pick(noise))

        @jax.jit
        def dense_step(d, U, V, S):
            flat, unravel = ravel_pytree((U, V, pick(S)))

            def predictions(z):
                U_, V_, s_ = unravel(z)
                return (d.Y - blocks.residuals(d, U_, V_, unpick(s_))).ravel()

            J = jax.jacfwd(predictions)(flat)
            step = jnp.linalg.lstsq(J, d.Y.ravel() - predictions(flat), rcond=1e-10)[0]
            dU, dV, ds = unravel(step)
            return cj.Estimate(U + dU, V + dV, S + unpick(ds)).W

        @jax.jit
        def gnmr_step(d, U, V, S):
            _, _, (U2, V2, S2) = cj.GNMR().step((U, V, S), None, config, cj.AllUsers(d))
            return cj.Estimate(U2, V2, S2).W

        d = blocks.design(p.train)
        U, V, S = start(d)
        W, W_ref = gnmr_step(d, U, V, S), dense_step(d, U, V, S)
        assert float(jnp.max(jnp.abs(W - W_ref))) <= 1e-10 * float(jnp.max(jnp.abs(W_ref)))


def test_gnmr_converges_quadratically():
    """Noiseless and well sampled: once the objective is small, ``f_{t+1} <= f_t^2 / f_0`` (Gauss-Newton's
    local quadratic rate at a zero-residual solution), until the floor."""
    with jax.enable_x64(True):
        p = planted("sensing", 3)
        _, trace = cj.fit(p.train, cj.FitConfig(rank=2, algorithm="gnmr"), truth=p.truth)
        f = np.asarray(trace.objective[: int(trace.iterations) + 1])
        assert int(trace.iterations) <= 8
        tail = [t for t in range(len(f) - 1) if f[t] < 1e-3 * f[0] and f[t + 1] > 1e-24 * f[0]]
        assert tail  # the claim is exercised
        for t in tail:
            assert f[t + 1] <= f[t] ** 2 / f[0], (t, f)


# ----------------------------------------------------------------------------- ScaledGD


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_scaledgd_step_is_gauge_equivariant(model):
    """``(U A, V B, A^-1 S_i B^-T)`` (same users' matrices) gives the same next users' matrices: the
    preconditioners make the step independent of the factors' representation (plain gradient
    steps are not)."""
    with jax.enable_x64(True):
        p = planted(model, 4)
        d = blocks.design(p.train)
        U, V = blocks.spectral_init(d, 2)
        S = blocks.personal_step(d, U, V, False) + 0.1
        A = jnp.array([[2.0, 0.5], [-0.3, 0.7]])
        B = jnp.array([[0.4, 0.0], [1.0, 3.0]])
        S_g = jnp.linalg.solve(A, S) @ jnp.linalg.inv(B).T
        lam, config = varpro.ridge_scale(d), cj.FitConfig(rank=2)

        @jax.jit  # one compiled program for both representations
        def next_W(d, U, V, S):
            nxt = cj.ScaledGD(step_size=0.5).step((U, V, S, lam), None, config, cj.AllUsers(d))[2]
            return cj.Estimate(*nxt[:3]).W

        W, W_g = next_W(d, U, V, S), next_W(d, U @ A, V @ B, S_g)
        assert float(jnp.max(jnp.abs(W - W_g))) <= 1e-12 * float(jnp.max(jnp.abs(W)))
        assert float(jnp.max(jnp.abs(W - cj.Estimate(U, V, S).W))) > 1e-3  # the step moved


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_scaledgd_rate_does_not_follow_the_condition_number(model):
    """Iterations to a relative error of 1e-8 with every S_i* of condition number 30 are at most
    1.25 times those at condition number 1 (same data otherwise)."""
    with jax.enable_x64(True):
        hits = []
        for condition in (1.0, 30.0):
            p = planted(model, 1, condition=condition)
            _, trace = cj.fit(p.train, cj.FitConfig(rank=2, algorithm="scaledgd", iters=300), truth=p.truth)
            err = np.asarray(trace.rel_error)
            assert (err < 1e-8).any()
            hits.append(int(np.argmax(err < 1e-8)))
        assert hits[1] <= 1.25 * hits[0], hits


# ----------------------------------------------------------------------------- stopping, batching


def test_reachable_from_run_trials():
    with jax.enable_x64(True):
        pc = cj.ProblemConfig(model="sensing", users=6, d_out=4, d_in=5, rank=2, samples=60, x64=True)
        for algorithm in SOTA:
            out = cj.run_trials(jax.random.key(0), pc, cj.FitConfig(rank=2, algorithm=algorithm, iters=300), trials=2)
            assert np.all(out.evaluation.rel_error <= 1e-10), algorithm


# ----------------------------------------------------------------------------- errors, registry


@pytest.mark.parametrize("algorithm", SOTA)
def test_bad_input_says_what_to_change(algorithm):
    p = cj.generate(jax.random.key(0), cj.ProblemConfig(model="sensing", users=6, d_out=4, d_in=5, samples=8))
    with pytest.raises(ValueError, match="takes no optimizer"):
        cj.fit(p.train, cj.FitConfig(algorithm=algorithm), optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="at least 4 samples"):
        cj.fit(cj.Observations(p.train.X[:, :3], p.train.Y[:, :3], "sensing"), cj.FitConfig(algorithm=algorithm))
    with pytest.raises(ValueError, match="step_size and learning_rate must be > 0"):
        cj.fit(p.train, cj.FitConfig(algorithm=algorithm, step_size=0.0))
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = cj.Observations(p.train.X, p.train.Y.at[0, 0].set(jnp.nan), "sensing")
        cj.fit(bad, cj.FitConfig(algorithm=algorithm))


def test_registered_and_listed():
    assert set(SOTA) <= set(cj.ALGORITHMS)
    with jax.enable_x64(True), pytest.raises(ValueError, match="gnmr, scaledgd"):  # planted() is float64
        cj.fit(planted("regression").train, cj.FitConfig(algorithm="gauss-newton"))
