"""CoLoRA estimators: planted truth recovered, exact block minimizations, monotone objective,
gauge invariance, float64 precision, and clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import colora_jax as cj

pytestmark = pytest.mark.usefixtures("strict_numerics")

SHAPE = dict(users=12, d_out=8, d_in=6, rank=2, test_samples=0)
SAMPLES = {"regression": 6, "sensing": 20}


def problem(model, seed, personal="full", x64=False, **kw):
    kw = {**SHAPE, "samples": SAMPLES[model], **kw}
    cfg = cj.ProblemConfig(model=model, personal=personal, x64=x64, **kw)
    return cj.generate(jax.random.key(seed), cfg)


@functools.cache
def jitted_fit(fc: cj.FitConfig):
    return jax.jit(lambda obs, truth, key: cj.fit(obs, fc, truth=truth, key=key))


def run_fit(fc, p, seed=0):
    return jitted_fit(fc)(p.train, p.truth, jax.random.key(seed))


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("personal", ["full", "diag"])
@settings(derandomize=True)  # a fixed draw of seeds: recovery holds with high probability, not on every draw
@given(seed=st.integers(0, 2**31 - 1))
def test_altmin_recovers_planted_truth(model, personal, seed):
    """AltMin from the spectral start recovers the planted truth at these sizes. With high
    probability only: regression seed 4448 (full) stops at a spurious stationary point (objective
    73% of its start; VarPro recovers it), against 0 failures in 400 trials of each case."""
    p = problem(model, seed, personal)
    est, trace = run_fit(cj.FitConfig(personal=personal, iters=60), p)
    it = int(trace.iterations)
    assert float(trace.rel_error[it]) < 1e-3
    assert float(cj.subspace_distance(est.U, p.truth.U)) < 1e-3
    assert float(cj.subspace_distance(est.V, p.truth.V)) < 1e-3
    np.testing.assert_allclose(est.W, p.truth.W, atol=1e-3 * float(jnp.max(jnp.abs(p.truth.W))))


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_float64_noiseless_recovery_reaches_1e_10(model, x64):
    p = problem(model, 3, x64=True)
    est, trace = run_fit(cj.FitConfig(iters=200, tol=0.0), p)
    assert est.U.dtype == jnp.float64
    assert float(cj.relative_error(est.W, p.truth.W)) <= 1e-10


def test_joint_training_takes_any_optax_optimizer():
    import optax

    p = problem("sensing", 4)
    fc = cj.FitConfig(algorithm="adam", iters=1500)
    est, trace = jax.jit(lambda o: cj.fit(o, fc, optimizer=optax.sgd(0.05, momentum=0.9)))(p.train)
    assert float(cj.relative_error(est.W, p.truth.W)) < 1e-3
    assert float(trace.objective[int(trace.iterations)]) < 1e-6 * float(trace.objective[0])


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("personal", ["full", "diag"])
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 10.0))
def test_objective_never_increases_on_arbitrary_data(model, personal, seed, scale):
    """Each block is an exact minimization, so f is monotone for any data and any start."""
    with jax.enable_x64(True):
        _check_monotone(model, personal, seed, scale)


def _check_monotone(model, personal, seed, scale):
    p = problem(model, 0, personal, x64=True)
    kx, ky = jax.random.split(jax.random.key(seed))
    obs = cj.Observations(
        X=scale * jax.random.normal(kx, p.train.X.shape, jnp.float64),
        Y=jax.random.normal(ky, p.train.Y.shape, jnp.float64),  # no low-rank structure at all
        model=model,
    )
    fc = cj.FitConfig(personal=personal, init="random", iters=15, tol=0.0)
    _, trace = jitted_fit(fc)(obs, None, jax.random.key(seed))
    f = np.asarray(trace.objective)[: int(trace.iterations) + 1]
    assert np.all(np.diff(f) <= 1e-10 * f[:-1]), f


@given(
    seed=st.integers(0, 2**31 - 1),
    p=st.integers(1, 40),
    rows=st.integers(1, 90),
    decades=st.floats(0.0, 6.0),
    rank_deficient=st.booleans(),
)
def test_psd_solve_is_an_exact_least_squares_solve(seed, p, rows, decades, rank_deficient):
    """The Cholesky-with-refinement solve of ``F^T F x = F^T y`` minimizes ``||y - F x||`` as
    well as LAPACK's SVD-based lstsq, for badly scaled and rank-deficient (or wide) ``F``."""

    rng = np.random.default_rng(seed)
    F = rng.standard_normal((rows, p)) * 10.0 ** rng.uniform(-decades / 2, decades / 2, size=p)
    if rank_deficient and p > 1:
        F[:, -1] = F[:, 0]
    y = rng.standard_normal(rows)
    with jax.enable_x64(True):
        x = np.asarray(cj.psd_solve(jnp.asarray(F.T @ F), jnp.asarray(F.T @ y)))
    assert np.all(np.isfinite(x))
    best = np.linalg.lstsq(F, y, rcond=None)[0]
    f, f_best = np.sum((y - F @ x) ** 2), np.sum((y - F @ best) ** 2)
    assert f - f_best <= 1e-9 * np.sum(y**2), (f, f_best)


def _lstsq_reference(predict, x0, y):
    """Minimizer of ||y - predict(x)||^2 for a linear ``predict``, by NumPy lstsq on its Jacobian."""
    J = np.asarray(jax.jacobian(lambda x: predict(x).reshape(-1))(x0)).reshape(y.size, -1)
    return np.linalg.lstsq(J, np.asarray(y).reshape(-1), rcond=None)[0].reshape(x0.shape)


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_block_steps_agree_with_an_independent_least_squares(model, x64):
    p = problem(model, 5, x64=True, noise=0.3)  # noisy: the minimizers are not the truth
    d = cj.design(p.train)
    rng = np.random.default_rng(0)
    U, V = (jnp.asarray(np.linalg.qr(rng.standard_normal(s))[0]) for s in ((8, 2), (6, 2)))
    S = jnp.asarray(rng.standard_normal((12, 2, 2)))
    preds = lambda U_, V_, S_: p.train.Y - cj.residuals(d, U_, V_, S_)
    np.testing.assert_allclose(
        cj.output_step(d, V, S), _lstsq_reference(lambda U_: preds(U_, V, S), U, p.train.Y), atol=1e-9
    )
    np.testing.assert_allclose(
        cj.input_step(d, U, S), _lstsq_reference(lambda V_: preds(U, V_, S), V, p.train.Y), atol=1e-9
    )
    np.testing.assert_allclose(
        cj.personal_step(d, U, V, diag=False), _lstsq_reference(lambda S_: preds(U, V, S_), S, p.train.Y), atol=1e-9
    )


@given(seed=st.integers(0, 2**31 - 1))
def test_gauge_invariance(seed):
    """(U R, S R^-1) describes the same users: the exact steps give the same W_i."""
    with jax.enable_x64(True):
        _check_gauge(seed)


def _check_gauge(seed):
    p = problem("sensing", 6, x64=True, noise=0.1)
    d = cj.design(p.train)
    rng = np.random.default_rng(seed)
    U, V = (jnp.asarray(np.linalg.qr(rng.standard_normal(s))[0]) for s in ((8, 2), (6, 2)))
    R = jnp.asarray(rng.standard_normal((2, 2)) + 2 * np.eye(2))
    S = cj.personal_step(d, U, V, diag=False)
    S_R = cj.personal_step(d, U @ R, V, diag=False)
    np.testing.assert_allclose(jnp.einsum("ab,kbc->kac", R, S_R), S, atol=1e-9)  # S -> R^-1 S
    np.testing.assert_allclose(cj.sum_squares(d, U @ R, V, S_R), cj.sum_squares(d, U, V, S), rtol=1e-10)
    V_new = cj.input_step(d, U, S)
    V_new_R = cj.input_step(d, U @ R, jnp.einsum("ab,kbc->kac", jnp.linalg.inv(R), S))
    np.testing.assert_allclose(V_new_R, V_new, atol=1e-9)


def test_spectral_init_works_when_personal_parts_average_to_zero(x64):
    """With sum_i S_i* = 0 the average task is 0, yet second moments see both subspaces."""
    p = problem("regression", 7, x64=True, personal_mean="zero", users=40)
    d = cj.design(p.train)
    mean_task = jnp.mean(cj.moment_estimates(d), axis=0)
    assert float(jnp.linalg.norm(jnp.mean(p.truth.W, axis=0))) < 1e-12
    U0, V0 = cj.spectral_init(d, 2)
    assert float(cj.subspace_distance(U0, p.truth.U)) < 0.5
    assert float(cj.subspace_distance(V0, p.truth.V)) < 0.5
    est, _ = run_fit(cj.FitConfig(iters=100), p)
    assert float(cj.relative_error(est.W, p.truth.W)) < 1e-8
    del mean_task


def test_bad_observations_say_what_to_change():
    p = problem("sensing", 0)
    with pytest.raises(ValueError, match="at least 4 samples"):
        cj.fit(cj.Observations(p.train.X[:, :3], p.train.Y[:, :3], "sensing"))
    with pytest.raises(ValueError, match="rank 7 exceeds"):
        cj.fit(p.train, cj.FitConfig(rank=7))
    with pytest.raises(ValueError, match="disagree"):
        cj.fit(cj.Observations(p.train.X, p.train.Y[:, :5], "sensing"))
    with pytest.raises(ValueError, match="X \\(k, n, d_out, d_in\\)"):
        cj.fit(cj.Observations(p.train.X[..., 0], p.train.Y, "sensing"))
    with pytest.raises(ValueError, match="NaN or inf"):
        cj.fit(cj.Observations(p.train.X, p.train.Y.at[0, 0].set(jnp.nan), "sensing"))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        cj.fit(p.train, cj.FitConfig(init="random"))
    with pytest.raises(ValueError, match="unknown algorithm 'sgd': choose one of altmin, "):
        cj.fit(p.train, cj.FitConfig(algorithm="sgd"))


def test_non_finite_data_under_jit_is_reported_not_hidden():
    p = problem("regression", 0)
    bad = cj.Observations(p.train.X, p.train.Y.at[1, 2, 3].set(jnp.inf), "regression")
    _, trace = run_fit(cj.FitConfig(iters=60), cj.Problem(p.truth, bad, p.test))
    assert not bool(trace.finite_input)


def test_underdetermined_settings_run_and_fail_to_recover():
    """Legal but too few samples overall: a result (no recovery), not an error."""
    p = problem("sensing", 1, samples=4, users=2)
    est, trace = run_fit(cj.FitConfig(iters=30), p)
    assert np.all(np.isfinite(np.asarray(est.W)))
    assert float(cj.relative_error(est.W, p.truth.W)) > 1e-2
