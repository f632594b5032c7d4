"""Variable projection: planted truth recovered, monotone objective, the hand-derived Gauss-Newton
matrix and gradient against autodiff, gauge handling, agreement with AltMin, batched, sharded and
streamed equal to the plain fit, and clear errors.

Run as a script (``python tests/test_varpro.py devices N``) it is its own subprocess worker for the
sharded test: XLA_FLAGS must be set before jax is imported.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before jax is imported (the sharded worker); importing the tests changes nothing
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={int(sys.argv[2])}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import doctest  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st

import colora_jax as cj  # noqa: E402
from colora_jax._src.estimators import fitting, varpro  # noqa: E402
from colora_jax._src.model import blocks  # noqa: E402

SHAPE = {"regression": (12, 8, 6), "sensing": (12, 8, 6)}  # (users, d_out, d_in)
SAMPLES = {"regression": 6, "sensing": 20}  # about 2 m*(k) or more: every start recovers


def problem(model, seed, personal="full", x64=False, shape=(12, 8, 6), **kw):
    users, d_out, d_in = shape
    kw = {"samples": SAMPLES[model], "test_samples": 0, **kw}
    cfg = cj.ProblemConfig(model=model, users=users, d_out=d_out, d_in=d_in, rank=2, personal=personal, x64=x64, **kw)
    return _generate(jax.random.key(seed), cfg)


_generate = jax.jit(cj.generate, static_argnums=1)  # one compile per configuration (eager: one per operation)


@functools.cache
def jitted(fc: cj.FitConfig, options: tuple = ()):
    return jax.jit(lambda obs, truth, key: varpro.fit_varpro(obs, fc, truth=truth, key=key, **dict(options)))


def run_fit(fc, obs, truth=None, seed=0, **options):
    return jitted(fc, tuple(sorted(options.items())))(obs, truth, jax.random.key(seed))


# ----------------------------------------------------------------------------- recovery


@pytest.mark.usefixtures("strict_numerics")
@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("personal", ["full", "diag"])
@settings(max_examples=3, derandomize=True)  # a fixed draw: recovery holds with high probability, not on every draw
@given(seed=st.integers(0, 2**31 - 1))
def test_recovers_planted_truth(model, personal, seed):
    p = problem(model, seed, personal)
    est, trace = run_fit(cj.FitConfig(personal=personal, iters=40), p.train, p.truth)
    it = int(trace.iterations)
    assert float(trace.rel_error[it]) < 1e-3
    assert float(cj.subspace_distance(est.U, p.truth.U)) < 1e-3
    assert float(cj.subspace_distance(est.V, p.truth.V)) < 1e-3
    assert bool(trace.finite_input)


@pytest.mark.usefixtures("strict_numerics")
@settings(max_examples=3)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(6, 9, 5), (30, 5, 8)]),
    model=st.sampled_from(["regression", "sensing"]),
)
def test_recovers_planted_truth_across_shapes(seed, shape, model):
    """Other numbers of users and rectangular shapes (both wider and taller than before)."""
    p = problem(model, seed, shape=shape, samples=2 * SAMPLES[model])
    est, trace = run_fit(cj.FitConfig(iters=40), p.train, p.truth)
    assert float(trace.rel_error[int(trace.iterations)]) < 1e-3


@pytest.mark.parametrize(
    "model, jacobian", [("regression", "kaufman"), ("sensing", "kaufman"), ("sensing", "golub-pereyra")]
)
def test_float64_noiseless_recovery_reaches_1e_10(model, jacobian, x64):
    p = problem(model, 3, x64=True)
    est, trace = run_fit(cj.FitConfig(iters=30, tol=0.0), p.train, p.truth, jacobian=jacobian)
    assert est.U.dtype == jnp.float64
    assert float(cj.relative_error(est.W, p.truth.W)) <= 1e-10
    assert bool(trace.converged)  # stopped at the floor, within the budget


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_random_initialization_recovers(model):
    p = problem(model, 5)
    est, _ = run_fit(cj.FitConfig(iters=40, init="random"), p.train, p.truth, seed=7)
    assert float(cj.relative_error(est.W, p.truth.W)) < 1e-3


@pytest.mark.parametrize("seed", [0, 4])  # the continued fit exact (0), not exact (4): both branches
def test_fallback_is_the_better_of_the_plain_and_the_continued_fit(seed, x64):
    """Near the sample threshold (sensing, k = 6, d = 8: m* = 6.7, n = 9): "fallback" returns
    the continued fit when it interpolates the data, else the lower objective of continued and plain."""
    p = problem("sensing", seed, x64=True, shape=(6, 8, 8), samples=9)
    fc = cj.FitConfig(iters=40)
    final = {}
    for mode in ("never", "always", "fallback"):
        _, trace = run_fit(fc, p.train, p.truth, continuation=mode)
        final[mode] = float(trace.objective[int(trace.iterations)])
    # two programs (fallback, always) agree to rounding, not to the bit (their GEMMs may round
    # differently): to the floor where the fits are exact, relatively where a stall stopped them
    floor = float((10 * jnp.finfo(jnp.float64).eps) ** 2 * jnp.mean(jnp.square(p.train.Y)))
    slack = lambda f: f * (1 + 1e-6) + floor
    assert final["fallback"] <= slack(min(final["never"], final["always"]))
    assert (final["always"] > floor) == (seed == 4)  # the branch this seed is for
    if final["always"] > floor:  # the continued fit did not interpolate: the plain fit was tried
        assert final["fallback"] <= slack(final["never"])


NEAR = dict(shape=(6, 8, 8), samples=9)  # sensing, k = 6, d = 8: m* = 6.7, n = 9 (1.34 m*): some starts fail


def _restart_fits(p, fc, seed, restarts):
    """Each fit ``restarts`` runs on its own: the default fit, then one from each keyed random start."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), restarts)
    rand = dataclasses.replace(fc, init="random")
    fits = [run_fit(fc, p.train, p.truth, seed=seed)]
    fits += [jitted(rand)(p.train, p.truth, kk) for kk in keys]
    return [float(t.objective[int(t.iterations)]) for _, t in fits]


@pytest.mark.parametrize("seed", [4])  # a seed whose default fit is not exact: restarts run
def test_restarts_until_exact_pick_the_lowest_objective_of_the_fits_run(seed, x64):
    """``restart_rule="until-exact"`` runs the default fit, then restarts in order until one reaches
    the stopping floor; it returns the lowest final objective of the fits it ran. ``"all"`` returns
    the lowest of every fit."""
    p = problem("sensing", seed, x64=True, **NEAR)
    fc = cj.FitConfig(iters=40)
    finals = _restart_fits(p, fc, seed, 3)
    floor = float(fitting.stopping_floor(jnp.sum(jnp.square(p.train.Y)) / p.train.Y.size))
    ran = next((j + 1 for j, f in enumerate(finals) if f <= floor), len(finals))
    assert ran > 1  # the claim is exercised: the first fit is not exact
    for rule, expected in (("until-exact", min(finals[:ran])), ("all", min(finals))):
        _, trace = run_fit(fc, p.train, p.truth, seed=seed, restarts=3, restart_rule=rule)
        # fits at the floor are all exact: their objectives are rounding, which a program may order differently;
        # a fit stopped mid-crawl (``stall``) is not at a stationary point, so rounding shows in its objective
        got = float(trace.objective[int(trace.iterations)])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=floor, err_msg=rule)


def test_stall_only_truncates_the_continued_fit(x64):
    """After the continuation the fit proper stops once the last ``stall`` iterations have lowered
    its objective by less than ``stall_decrease`` of it, and only then: its trace is the one
    without the rule up to that point, and a fit that reaches the stopping floor without the rule
    ends there with it too."""
    fc, rule = cj.FitConfig(iters=40), cj.VarPro()
    w, keep = rule.stall, 1 - rule.stall_decrease
    stopped = exact = 0
    for seed in range(6):
        p = problem("sensing", seed, x64=True, **NEAR)
        floor = float(fitting.stopping_floor(jnp.sum(jnp.square(p.train.Y)) / p.train.Y.size))
        (_, ruled), (_, free) = run_fit(fc, p.train), run_fit(fc, p.train, stall=0)
        i, j = int(ruled.iterations), int(free.iterations)
        f = np.asarray(ruled.objective[: i + 1])
        np.testing.assert_allclose(f, free.objective[: i + 1], rtol=1e-6, atol=1e-12 * f[0])  # two programs: rounding
        slow = [t for t in range(w, i + 1) if f[t] >= keep * f[t - w]]
        if float(free.objective[j]) <= floor:
            exact += 1
            assert i == j and float(ruled.objective[i]) <= floor
        if i < j:  # only the rule ends it early, at the first iteration where it applies
            stopped += 1
            assert slow == [i]
        else:
            assert slow in ([], [i])
    assert stopped and exact  # both kinds occur near the threshold


def test_continuation_path_never_increases_and_ends_where_the_fit_goes_on(x64):
    """``continuation(path=True)`` records ``phi_alpha`` after each ridge's iteration. It never
    increases: an iteration keeps its point or lowers ``phi_alpha`` at its ridge, and at a fixed
    point ``phi_alpha`` falls with ``alpha`` (the ridge term is nonnegative). The path's end is the
    continuation's without the record, and its last value the objective there."""
    from colora_jax._src.estimators.users import AllUsers

    p = problem("sensing", 1, x64=True, **NEAR)
    est, config = cj.VarPro(), cj.FitConfig(iters=40)
    users = AllUsers(blocks.design(p.train), None)
    s = fitting.setup(users, config, jax.random.key(0), None)
    evaluate_at, normal, _, diag = est.reduced(users, config, s)
    U, V = varpro.retract(s.U, s.V, diag)
    mu = jnp.asarray(est.damping, U.dtype)
    run = jax.jit(
        lambda path: varpro.continuation(evaluate_at, normal, U, V, mu, diag, est, path=path), static_argnums=0
    )
    (*end, path), plain = run(True), run(False)
    path = np.asarray(path)
    assert path.shape == (est.continuation_iterations,)
    assert np.all(np.diff(path) <= 1e-12 * path[:-1]), np.diff(path).max()
    assert path[-1] < 0.5 * path[0]  # it does descend
    # two programs: rounding apart; the damping passes through gain ratios of differences of nearly
    # equal objectives, which magnify rounding by the inverse of the relative decrease
    for got, want, rtol in zip(end, plain, (1e-9, 1e-9, 1e-6)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)
    last = est.continuation_start * est.continuation_decay ** (est.continuation_iterations - 1)
    np.testing.assert_allclose(path[-1], evaluate_at(end[0], end[1], last).sse, rtol=1e-9)
    plain = dataclasses.replace(est, continuation="never")
    with pytest.raises(ValueError, match="continuation path needs continuation='always', got 'never'"):
        varpro._fit_from(evaluate_at, normal, None, U, V, config, plain, diag, s.floor, path=True)


@pytest.mark.parametrize("model", ["sensing", "regression"])
def test_a_ridge_evaluated_at_a_kept_point_is_the_ridge_evaluated_afresh(model):
    """``evaluate_at(U, V, alpha, at=point)`` (how the continuation starts each ridge where the last
    ended) reuses the point's pass over the data: the same personal parts, objective and cache, bit
    for bit, as evaluating afresh."""
    from colora_jax._src.estimators.users import AllUsers

    p = problem(model, 1, **NEAR)
    est, config = cj.VarPro(), cj.FitConfig()
    users = AllUsers(blocks.design(p.train), None)
    s = fitting.setup(users, config, jax.random.key(0), None)
    evaluate_at = est.reduced(users, config, s)[0]
    last = jax.jit(lambda U, V: evaluate_at(U, V, 3.0))(s.U, s.V)
    fresh = jax.jit(lambda U, V: evaluate_at(U, V, 2.5))(s.U, s.V)
    kept = jax.jit(lambda U, V, at: evaluate_at(U, V, 2.5, at))(s.U, s.V, last)
    for got, want in zip(jax.tree.leaves(kept), jax.tree.leaves(fresh)):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(kept.S, last.S)  # the new ridge's personal parts, not the kept ones


def test_restarts_until_exact_leave_an_exact_first_fit_unchanged(x64):
    """Where the default fit is exact (about 2 m*), "until-exact" runs no restart: the default's result."""
    p = problem("sensing", 0, x64=True)
    fc = cj.FitConfig(iters=40)
    plain = run_fit(fc, p.train, p.truth)
    restarted = run_fit(fc, p.train, p.truth, restarts=3, restart_rule="until-exact")
    for got, want in zip(jax.tree.leaves(restarted), jax.tree.leaves(plain)):  # two programs: rounding apart
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_registered_varpro_restarts_is_fit_varpro_with_restarts(x64):
    p = problem("sensing", 1, x64=True, **NEAR)
    fc = cj.FitConfig(iters=40)
    key = jax.random.key(3)
    got = jax.jit(lambda o, t, k: cj.fit(o, dataclasses.replace(fc, algorithm="varpro-restarts"), truth=t, key=k))(
        p.train, p.truth, key
    )
    robust = (  # its documented options: the shorter continuation, the earlier stall, 16 restarts until exact
        ("continuation_start", 3.0),
        ("continuation_stop", 0.2),
        ("restart_rule", "until-exact"),
        ("restarts", 16),
        ("stall", 5),
        ("stall_decrease", 0.5),
    )
    want = jitted(fc, robust)(p.train, p.truth, key)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="key"):
        cj.fit(p.train, dataclasses.replace(fc, algorithm="varpro-restarts"))


# ----------------------------------------------------------------------------- monotone, AltMin


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("personal", ["full", "diag"])
@settings(max_examples=4)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 10.0))
def test_objective_never_increases_on_arbitrary_data(model, personal, seed, scale):
    """Only steps that lower phi are accepted, so the trace is monotone for any data and start."""
    with jax.enable_x64(True):
        p = problem(model, 0, personal, x64=True)
        kx, ky = jax.random.split(jax.random.key(seed))
        obs = cj.Observations(
            X=scale * jax.random.normal(kx, p.train.X.shape, jnp.float64),
            Y=jax.random.normal(ky, p.train.Y.shape, jnp.float64),  # no low-rank structure at all
            model=model,
        )
        _, trace = run_fit(
            cj.FitConfig(personal=personal, init="random", iters=15, tol=0.0), obs, seed=seed, continuation="always"
        )
        f = np.asarray(trace.objective)[: int(trace.iterations) + 1]
        assert np.all(np.isfinite(f))
        assert np.all(np.diff(f) <= 0), f


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_agrees_with_altmin_at_a_common_minimizer(model, x64):
    """Noisy data, well above the threshold: the least-squares minimizer is unique up to the gauge,
    and both algorithms end there (same users' matrices, same objective)."""
    p = problem(model, 11, x64=True, noise=0.2, samples=3 * SAMPLES[model])
    est_vp, tr_vp = run_fit(cj.FitConfig(iters=60, tol=0.0), p.train)
    est_am, tr_am = jax.jit(lambda o: cj.fit(o, cj.FitConfig(iters=400, tol=0.0)))(p.train)
    f_vp = float(tr_vp.objective[int(tr_vp.iterations)])
    f_am = float(tr_am.objective[int(tr_am.iterations)])
    assert abs(f_vp - f_am) <= 1e-10 * f_am
    np.testing.assert_allclose(est_vp.W, est_am.W, atol=1e-6 * float(jnp.max(jnp.abs(est_am.W))))
    assert float(cj.relative_error(est_vp.W, p.truth.W)) > 1e-3  # noisy: the minimizer is not the truth


# ----------------------------------------------------------------------------- Jacobian products


def _predictions(X, U, V, S, model):
    W = jnp.einsum("or,krs,is->koi", U, S, V)
    if model == "sensing":
        return jnp.einsum("knoi,koi->kn", X, W)
    return jnp.einsum("kni,koi->kno", X, W)


def _reference(obs, U, V, diag, lam):
    """Autodiff reference: the reduced residual with S*(theta) from a dense solve of each user's
    (ridged) normal equations; its Jacobian (Golub-Pereyra), Kaufman's projected Jacobian, and
    ``-grad phi / 2``, all in theta = (vec U, vec V)."""
    k, r, model = obs.users, U.shape[1], obs.model
    q = r if diag else r * r
    as_matrix = (lambda s: jax.vmap(jnp.diag)(s)) if diag else (lambda s: s.reshape(k, r, r))

    def personal_jacobians(U_, V_):
        def pred(s, X):
            S = jnp.diag(s) if diag else s.reshape(r, r)
            return _predictions(X[None], U_, V_, S[None], model).reshape(-1)

        return jax.vmap(lambda X: jax.jacfwd(pred)(jnp.zeros(q, U.dtype), X))(obs.X)

    def s_star(U_, V_):
        J, y = personal_jacobians(U_, V_), obs.Y.reshape(k, -1)
        return jax.vmap(lambda J, y, lam_i: jnp.linalg.solve(J.T @ J + lam_i * jnp.eye(q), J.T @ y))(J, y, lam)

    split = lambda th: (th[: U.size].reshape(U.shape), th[U.size :].reshape(V.shape))

    def reduced(th):
        U_, V_ = split(th)
        s = s_star(U_, V_)
        res = (obs.Y - _predictions(obs.X, U_, V_, as_matrix(s), model)).reshape(-1)
        return jnp.concatenate([res, (-jnp.sqrt(lam)[:, None] * s).reshape(-1)])

    theta = jnp.concatenate([U.reshape(-1), V.reshape(-1)])
    J_gp = jax.jacfwd(reduced)(theta)
    s = s_star(U, V)
    Jt = jax.jacfwd(lambda th: _predictions(obs.X, *split(th), as_matrix(s), model).reshape(k, -1))(theta)
    Js = personal_jacobians(U, V)
    Ja = jnp.concatenate([Js, jnp.sqrt(lam)[:, None, None] * jnp.eye(q)[None]], axis=1)  # ridge rows
    Ta = jnp.concatenate([Jt, jnp.zeros((k, q, theta.size))], axis=1)
    J_k = jax.vmap(lambda J, A: A - J @ jnp.linalg.solve(J.T @ J, J.T @ A))(Ja, Ta).reshape(-1, theta.size)
    grad = -0.5 * jax.grad(lambda th: jnp.sum(jnp.square(reduced(th))))(theta)
    return J_k, J_gp, grad


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("personal", ["full", "diag"])
def test_normal_equations_equal_autodiff(model, personal, x64):
    """N = J^T J and g = -grad phi / 2 for the hand-derived Schur complements (Kaufman and
    Golub-Pereyra), at a point that is not a minimizer, with and without the continuation's ridge."""
    p = problem(model, 1, personal, x64=True, shape=(4, 5, 4), samples=9 if model == "sensing" else 3, noise=0.3)
    diag = personal == "diag"
    rng = np.random.default_rng(0)
    U = jnp.asarray(np.linalg.qr(rng.standard_normal((5, 2)))[0])
    V = jnp.asarray(np.linalg.qr(rng.standard_normal((4, 2)))[0])
    if diag:  # unit columns, not orthogonal
        U = U @ jnp.asarray([[1.0, 0.3], [0.0, 1.0]])
        U = U / jnp.linalg.norm(U, axis=0)
    for ridge, case in zip((None, 0.7), _autodiff_cases(p.train, U, V, diag)):
        N, g, J_k, J_gp, grad, Pg = case
        Ph = jnp.eye(Pg.shape[0]) - Pg
        for gp, J in ((False, J_k), (True, J_gp)):
            ref = J.T @ J
            # the steps only see the horizontal part; without a ridge N is J^T J everywhere
            got, want = (Ph @ N[gp] @ Ph, Ph @ ref @ Ph) if ridge is not None else (N[gp], ref)
            np.testing.assert_allclose(got, want, atol=1e-12 * float(jnp.max(jnp.abs(ref))))
            np.testing.assert_allclose(g[gp], grad, atol=1e-12 * float(jnp.max(jnp.abs(grad))))
            if ridge is None:  # phi is constant along the gauge: N and g vanish there
                assert float(jnp.max(jnp.abs(N[gp] @ Pg))) <= 1e-12 * float(jnp.max(jnp.abs(N[gp])))
                assert float(jnp.max(jnp.abs(Pg @ g[gp]))) <= 1e-12 * float(jnp.max(jnp.abs(g[gp])))


@functools.partial(jax.jit, static_argnums=3)
def _autodiff_cases(obs, U, V, diag):
    return [_autodiff_case(obs, U, V, diag, ridge) for ridge in (None, 0.7)]


def _autodiff_case(obs, U, V, diag, ridge):
    d = blocks.design(obs)
    lam = jnp.zeros(obs.users, U.dtype) if ridge is None else ridge * varpro.ridge_scale(d)
    J_k, J_gp, grad = _reference(obs, U, V, diag, lam)
    pt = varpro.evaluate_point(d, U, V, diag, ridge=None if ridge is None else lam)
    N, g = zip(*(varpro.normal_equations(d, pt, diag, gp) for gp in (False, True)))
    Q = varpro.gauge_basis(U, V, diag)
    return N, g, J_k, J_gp, grad, Q @ Q.T  # the projector onto the gauge directions


# ----------------------------------------------------------------------------- gauge, degenerate cases


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("personal", ["full", "diag"])
@pytest.mark.parametrize("mu", [1e-8, 1e-3, 1e3])
def test_steps_stay_horizontal_and_bounded(model, personal, mu, x64):
    """A damped step has no component along the gauge and ``||delta|| <= ||P_h g|| / (mu c)``,
    where the Gauss-Newton matrix is singular (always, along the gauge); the accepted step lowers
    phi and the factors come back normalized."""
    p = problem(model, 2, personal, x64=True, noise=0.1)
    delta, predicted, h, sse, new, accepted = _one_step(p.train, personal == "diag", jnp.asarray(mu))
    assert np.all(np.isfinite(np.asarray(delta))) and float(predicted) > 0
    assert float(jnp.linalg.norm(h.Pg @ delta)) <= 1e-10 * float(jnp.linalg.norm(delta))
    assert float(jnp.linalg.norm(delta)) <= (1 + 1e-9) * float(jnp.linalg.norm(h.g)) / (mu * float(h.scale))
    assert bool(accepted) and float(new.sse) < float(sse)
    if personal == "diag":
        np.testing.assert_allclose(jnp.linalg.norm(new.U, axis=0), 1.0, rtol=1e-12)
    else:
        np.testing.assert_allclose(new.U.T @ new.U, np.eye(2), atol=1e-12)


@functools.partial(jax.jit, static_argnums=1)
def _one_step(obs, diag, mu):
    d = blocks.design(obs)
    U, V = varpro.retract(*blocks.spectral_init(d, 2), diag)
    pt = varpro.evaluate_point(d, U, V, diag)
    N, g = varpro.normal_equations(d, pt, diag, False)
    h = varpro.horizontal(N, g, varpro.gauge_basis(U, V, diag))
    delta, predicted = varpro.damped_step(h, mu, refine=0)  # as the Levenberg-Marquardt attempts take it
    new, _, accepted = _lm_iteration(lambda U_, V_: varpro.evaluate_point(d, U_, V_, diag), h, pt, mu, diag, 10)
    return delta, predicted, h, pt.sse, new, accepted


def _lm_iteration(evaluate_at, h, pt, mu, diag, max_tries):
    """One Levenberg-Marquardt iteration written out: damped steps from the system ``h`` built at
    ``pt`` until one is accepted, ``max_tries`` are spent, or none can lower the objective. Returns
    the point, the damping for the next iteration (the accepted step's, else ``mu``), accepted."""

    def going(carry):
        tries, a = carry
        return (tries < max_tries) & ~a.accepted & ~a.hopeless

    def attempt(carry):
        tries, a = carry
        return tries + 1, varpro.lm_attempt(evaluate_at, h, a.point, a.mu, a.nu, diag)

    false = jnp.asarray(False)
    _, a = jax.lax.while_loop(going, attempt, (0, varpro.Attempt(pt, mu, jnp.asarray(2.0, mu.dtype), false, false)))
    return a.point, jnp.where(a.accepted, a.mu, mu), a.accepted


def test_continuation_runs_one_iteration_per_ridge_whatever_the_batch(x64):
    """The continuation's single loop of attempts (``continuation``) is ridge after ridge of one
    Levenberg-Marquardt iteration each (``_lm_iteration``, written out here), on every trial of a
    vmapped batch as on each alone: the same end, damping and path (float64; two programs, whose
    rounding the 56 ridges' steps magnify), though the trials' retries fall at different ridges."""
    from colora_jax._src.estimators.users import AllUsers

    p = problem("sensing", 1, x64=True, shape=(20, 20, 20), samples=10)  # 1.3 m*: attempts are rejected
    est, config = cj.VarPro(), cj.FitConfig()
    users = AllUsers(blocks.design(p.train), None)
    s = fitting.setup(users, config, jax.random.key(0), None)
    evaluate_at, normal, _, diag = est.reduced(users, config, s)
    mu = jnp.asarray(est.damping, s.U.dtype)

    def written_out(U, V):
        U, V = varpro.retract(U, V, diag)
        path, m = [], mu
        for t in range(est.continuation_iterations):
            ev = lambda U_, V_, t=t: evaluate_at(U_, V_, est.continuation_start * est.continuation_decay**t)
            pt = ev(U, V)
            pt, m, _ = _lm_iteration(ev, varpro.lm_system(*normal(pt), pt, diag), pt, m, diag, est.max_tries)
            U, V = pt.U, pt.V
            path.append(pt.sse)
        return U, V, m, jnp.stack(path)

    def looped(U, V):
        U, V = varpro.retract(U, V, diag)
        return varpro.continuation(evaluate_at, normal, U, V, mu, diag, est, path=True)

    starts = jax.vmap(lambda k: fitting.initialize(users, dataclasses.replace(config, init="random"), k))(
        jax.random.split(jax.random.key(1), 4)
    )
    batched = jax.jit(jax.vmap(looped))(*starts)
    for i in range(4):
        want = jax.jit(written_out)(starts[0][i], starts[1][i])
        # measured 1e-8 apart; a wrong ridge or count of tries puts them 0.01-50 apart
        for got, wanted in zip((a[i] for a in batched), want):
            np.testing.assert_allclose(got, wanted, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", ["square_output_factor", "exactly_determined", "rank_deficient_design"])
def test_degenerate_problems_give_finite_results(case, x64):
    """Gauge-only directions (d_out = r), a zero reduced objective (n = r^2 in sensing: every user
    fits its data exactly whatever U, V), and duplicated samples: no NaN, no blow-up."""
    if case == "square_output_factor":
        p = problem("sensing", 4, x64=True, shape=(12, 2, 6))
        est, trace = run_fit(cj.FitConfig(iters=30), p.train, p.truth)
        assert float(cj.relative_error(est.W, p.truth.W)) < 1e-8
    elif case == "exactly_determined":
        p = problem("sensing", 4, x64=True, samples=4)
        est, trace = run_fit(cj.FitConfig(iters=30), p.train, p.truth)
        assert float(trace.objective[int(trace.iterations)]) <= 1e-20
    else:
        p = problem("regression", 4, x64=True)
        X = p.train.X.at[:, 1].set(p.train.X[:, 0])  # two identical samples per user
        Y = p.train.Y.at[:, 1].set(p.train.Y[:, 0])
        est, trace = run_fit(cj.FitConfig(iters=30), cj.Observations(X, Y, "regression"), p.truth)
    it = int(trace.iterations)
    for a in (est.U, est.V, est.S, trace.objective[: it + 1]):
        assert np.all(np.isfinite(np.asarray(a)))
    assert float(jnp.max(jnp.abs(est.S))) < 1e6


# ----------------------------------------------------------------------------- batched, streamed, sharded

SMALL_FIT = cj.FitConfig(iters=6, tol=0.0)
# a deterministic path for the equality tests (the fallback's choice between two fits that end at the same
# noisy minimum could flip on rounding): the continuation always, 4 iterations
SHORT_PATH = dict(continuation="always", continuation_start=1.0, continuation_stop=0.5, continuation_decay=0.8)


def test_batched_equals_looped_with_restarts_until_exact(x64):
    """Near the threshold some trials restart and others do not: each batched trial equals its own fit."""
    cfg = cj.ProblemConfig(model="sensing", users=6, d_out=8, d_in=8, rank=2, samples=9, test_samples=0, x64=True)
    keys = jax.random.split(jax.random.key(1), 4)
    problems = jax.jit(jax.vmap(lambda k: cj.generate(k, cfg)))(keys)
    fc = cj.FitConfig(iters=40)
    fit = lambda o, t, k: varpro.fit_varpro(o, fc, truth=t, key=k, restarts=2, restart_rule="until-exact")
    batched = jax.jit(jax.vmap(fit))(problems.train, problems.truth, keys)
    one = jax.jit(fit)
    for i in range(4):
        at_i = lambda tree, i=i: jax.tree.map(lambda a: a[i], tree)
        looped = one(*at_i((problems.train, problems.truth)), keys[i])
        # 40 iterations of several fits amplify a vmap's rounding (seen: 2e-9 relative in one trace entry)
        for got, want in zip(jax.tree.leaves(at_i(batched)), jax.tree.leaves(looped)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def _one_program(problem, key, fit_config):
    """A caller's per-problem function: ``run_trials`` runs it as one program (no split)."""
    return cj.fit_and_evaluate(problem, key, fit_config, method="colora")


@pytest.mark.parametrize(
    "algorithm", [cj.VarPro(continuation="fallback"), "varpro-restarts"], ids=["fallback", "restarts"]
)
def test_hard_trials_rerun_apart_equal_every_trial_run_whole(algorithm, x64):
    """``run_trials`` fits the first stage (the continued fit) on every trial and the second
    (the fallback's plain fit; the restarts) only on the trials where that fit is not exact
    (trials.SplitFit): the same results as the estimator on every trial in one program. Near the
    threshold, so both kinds occur."""
    assert cj.resolve(cj.FitConfig(algorithm=algorithm)).stages is not None  # the split is exercised
    pc = cj.ProblemConfig(model="sensing", users=6, d_out=8, d_in=8, rank=2, samples=10, test_samples=0, x64=True)
    fc = cj.FitConfig(rank=2, iters=40, algorithm=algorithm)
    split = cj.run_trials(jax.random.key(0), pc, fc, 8)
    whole = cj.run_trials(jax.random.key(0), pc, fc, 8, fn=_one_program)
    first = dataclasses.replace(fc, algorithm=cj.resolve(fc).stages.first)
    hard = cj.run_trials(jax.random.key(0), pc, first, 8).evaluation.rel_error > 1e-6
    assert 0 < hard.sum() < 8, hard  # both kinds of trial occur
    for got, want in zip(jax.tree.leaves(split), jax.tree.leaves(whole)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("model, samples", [("regression", 8), ("sensing", 30)])
def test_streamed_equals_in_memory(model, samples, x64):
    pc = cj.ProblemConfig(model=model, users=12, d_out=6, d_in=5, rank=2, samples=samples, noise=0.1, x64=True)
    prob = jax.jit(cj.generate, static_argnums=1)(jax.random.key(1), pc)
    fc = cj.FitConfig(iters=3, tol=0.0)
    ref, ref_trace = jax.jit(lambda o, t: varpro.fit_varpro(o, fc, truth=t, **SHORT_PATH))(prob.train, prob.truth)
    streamed = dataclasses.replace(fc, algorithm=cj.VarPro(**SHORT_PATH))
    run = jax.jit(lambda o, U, V: cj.fit_streaming(o, streamed, nchunks=3, truth_U=U, truth_V=V))
    est, trace = run(prob.train, prob.truth.U, prob.truth.V)
    assert int(trace.iterations) == int(ref_trace.iterations)
    for got, want in (
        (est.U, ref.U),
        (est.V, ref.V),
        (est.S, ref.S),
        (trace.objective, ref_trace.objective),
        (trace.subspace_distance_U, ref_trace.subspace_distance_U),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


WORKER_PROBLEMS = {
    "regression": dict(model="regression", users=8, d_out=6, d_in=5, rank=2, samples=8, noise=0.1, x64=True),
    "sensing": dict(model="sensing", users=8, d_out=6, d_in=5, rank=2, samples=30, noise=0.1, x64=True),
}


def _sharded_differences(devices: int) -> dict:
    """Worker body (fake CPU devices): the fit inside shard_map, users split, against one device."""
    from jax.sharding import PartitionSpec as P

    from colora_jax._src.experiments import sharding

    out = {}
    for model, kw in WORKER_PROBLEMS.items():
        prob = jax.jit(cj.generate, static_argnums=1)(jax.random.key(3), cj.ProblemConfig(**kw))
        fit = lambda o, axis=None: varpro.fit_varpro(o, SMALL_FIT, axis_name=axis, **SHORT_PATH)
        ref, ref_trace = jax.jit(fit)(prob.train)
        mesh = sharding.users_mesh(devices)
        outs = (cj.Estimate(P(), P(), P(sharding.AXIS)), cj.Trace(*(P(),) * len(cj.Trace._fields)))
        body = functools.partial(fit, axis=sharding.AXIS)
        run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(sharding.AXIS),), out_specs=outs))
        est, trace = run(sharding.shard_users(prob.train, mesh))
        ran = slice(0, int(ref_trace.iterations) + 1)  # NaN past the last iteration
        out[model] = {
            "U": float(np.max(np.abs(est.U - ref.U))),
            "S": float(np.max(np.abs(est.S - ref.S))),
            "objective": float(
                np.max(np.abs(trace.objective[ran] - ref_trace.objective[ran]) / ref_trace.objective[ran])
            ),
            "iterations": [int(trace.iterations), int(ref_trace.iterations)],
            "S_sharded": len(est.S.sharding.device_set) == devices,
        }
    return out


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def sharded():
    out = subprocess.run([sys.executable, __file__, "devices", "4"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.xdist_group("varpro_sharded")  # one worker: one subprocess
@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_sharded_equals_single_device(sharded, model):
    d = sharded[model]  # 4 devices, 2 users each
    assert d["S_sharded"]
    assert d["iterations"][0] == d["iterations"][1]
    for name in ("U", "S", "objective"):  # float64: only the order of summation differs
        assert d[name] < 1e-9, (name, d[name])


# ----------------------------------------------------------------------------- errors, docs


def test_bad_input_says_what_to_change():
    p = problem("sensing", 0)
    with pytest.raises(ValueError, match="at least 4 samples"):
        varpro.fit_varpro(cj.Observations(p.train.X[:, :3], p.train.Y[:, :3], "sensing"))
    with pytest.raises(ValueError, match="rank 7 exceeds"):
        varpro.fit_varpro(p.train, cj.FitConfig(rank=7))
    with pytest.raises(ValueError, match="disagree"):
        varpro.fit_varpro(cj.Observations(p.train.X, p.train.Y[:, :5], "sensing"))
    with pytest.raises(ValueError, match="NaN or inf"):
        varpro.fit_varpro(cj.Observations(p.train.X, p.train.Y.at[0, 0].set(jnp.nan), "sensing"))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        varpro.fit_varpro(p.train, cj.FitConfig(init="random"))
    with pytest.raises(ValueError, match="unknown jacobian"):
        varpro.fit_varpro(p.train, jacobian="newton")
    with pytest.raises(ValueError, match="unknown continuation"):
        varpro.fit_varpro(p.train, continuation=True)
    with pytest.raises(ValueError, match="continuation_decay"):
        varpro.fit_varpro(p.train, continuation_decay=1.5)
    with pytest.raises(ValueError, match="stall_decrease must lie in"):
        varpro.fit_varpro(p.train, stall_decrease=1.0)
    with pytest.warns(DeprecationWarning, match="ridge_decay"):  # the name before 0.2 still works
        varpro.fit_varpro(p.train, cj.FitConfig(iters=1), ridge_decay=0.9)
    with pytest.raises(TypeError):
        varpro.fit_varpro(p.train, damping_schedule=3)  # not an option


def test_non_finite_data_under_jit_is_reported_not_hidden():
    p = problem("regression", 0)
    bad = cj.Observations(p.train.X, p.train.Y.at[1, 2, 3].set(jnp.inf), "regression")
    _, trace = run_fit(cj.FitConfig(iters=5), bad)
    assert not bool(trace.finite_input)


def test_docstring_example_runs():
    result = doctest.testmod(varpro, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    cj.enable_compile_cache()  # the suite's cache (the user's cache dir, or $COLORA_JAX_CACHE_DIR)
    print(json.dumps(_sharded_differences(int(sys.argv[2]))))
