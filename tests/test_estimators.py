"""Conformance of every registered estimator (``cj.ALGORITHMS``): a new one is picked up here by its entry.

For each estimator, on one noiseless float64 sensing problem: it recovers the planted matrices;
its objective never increases (or it declares ``monotone = False`` and then only the budget or the
floor stops it); a vmapped batch equals the fits one by one; users visited in chunks
(``fit_streaming``) equal users in memory; users sharded over 2 devices equal one device (one
subprocess for all estimators); bad input is a ValueError that says what to change.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # the sharded worker: 2 fake CPU devices, set before jax is imported
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import colora_jax as cj  # noqa: E402

# every claim below is checked in float64; one worker runs the module (its fixtures fit every estimator once)
pytestmark = [pytest.mark.usefixtures("x64"), pytest.mark.xdist_group("estimators")]

NAMES = list(cj.ALGORITHMS)
# k = 6 users, 5 x 4, rank 2, n = 30: well above m* = 8.7, so every estimator recovers every trial
PROBLEM = cj.ProblemConfig(model="sensing", users=6, d_out=5, d_in=4, rank=2, samples=30, x64=True)
ITERS = {"altgd": 400, "scaledgd": 200, "adam": 1500}  # first-order methods converge linearly (or slower)
RECOVERY = {"adam": 1e-2}  # relative error of W reached; every other estimator converges to rounding
TOLERANCE = 1e-10  # execution modes agree to this (float64, relative; they differ in summation order only)
# adam's first steps are lr g / (|g| + eps) entry by entry: a gradient entry at the rounding level of a sum
# over users moves by up to lr |g| / eps, so a different summation order shows at about 1e-10
MODES = {"adam": 1e-8}


def fit_config(name: str) -> cj.FitConfig:
    return cj.FitConfig(rank=2, algorithm=name, iters=ITERS.get(name, 60), learning_rate=3e-2)


def problems(seeds=(0, 1)):
    with jax.enable_x64(True):
        return [cj.generate(jax.random.key(s), PROBLEM) for s in seeds]


@pytest.fixture(scope="module")
def planted():
    return problems()


def fit_every_estimator(planted, config_of):
    """Every estimator's fit of each problem, one by one (one compiled program per estimator)."""
    out = {}
    with jax.enable_x64(True):
        for name in NAMES:
            run = jax.jit(lambda o, t, k, fc=config_of(name): cj.fit(o, fc, truth=t, key=k))
            out[name] = [run(p.train, p.truth, jax.random.key(9)) for p in planted]
    return out


@pytest.fixture(scope="module")
def fits(planted):
    return fit_every_estimator(planted, fit_config)


@pytest.mark.parametrize("name", NAMES)
def test_recovers_the_planted_matrices(fits, planted, name):
    for (est, trace), p in zip(fits[name], planted):
        assert float(cj.relative_error(est.W, p.truth.W)) <= RECOVERY.get(name, 1e-8), name
        assert bool(trace.finite_input)


@pytest.mark.parametrize("name", NAMES)
def test_objective_never_increases_or_is_declared_not_monotone(fits, planted, name):
    estimator = cj.resolve(fit_config(name))
    for (_, trace), p in zip(fits[name], planted):
        t = int(trace.iterations)
        f = np.asarray(trace.objective[: t + 1])
        assert np.all(np.isfinite(f)) and np.all(np.isnan(np.asarray(trace.objective[t + 1 :])))
        if estimator.monotone:
            assert np.all(np.diff(f) <= 1e-12 * f[:-1] + 1e-300), (name, f)
        else:  # no relative-decrease stop: only the budget or the floor
            floor = (10 * np.finfo(np.float64).eps) ** 2 * float(np.mean(np.square(p.train.Y)))
            assert t == fit_config(name).iters or f[-1] <= floor, (name, t, f[-1])


def short_config(name: str) -> cj.FitConfig:
    """A few iterations, no tolerance: the execution modes are compared before rounding can grow."""
    return dataclasses.replace(fit_config(name), iters=6, tol=0.0)


@pytest.fixture(scope="module")
def short_fits(planted):
    """The reference of the execution modes: every estimator's short fit, one problem at a time."""
    return fit_every_estimator(planted, short_config)


def assert_same_fit(got, want, name, atol_W=TOLERANCE, W=None):
    """Same iterations, users' matrices (``W``: given, else ``got``'s) and objectives (to rounding)."""
    (est, trace), (ref, ref_trace) = got, want
    assert int(trace.iterations) == int(ref_trace.iterations), name
    scale = float(jnp.max(jnp.abs(ref.W)))
    np.testing.assert_allclose(est.W if W is None else W, ref.W, rtol=0, atol=atol_W * scale, err_msg=name)
    f0 = float(ref_trace.objective[0])  # objectives near the floor are rounding: compare to the start
    np.testing.assert_allclose(trace.objective, ref_trace.objective, rtol=1e-8, atol=1e-12 * f0, err_msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_looped(short_fits, planted, name):
    fc = short_config(name)
    train = jax.tree.map(lambda *a: jnp.stack(a), *[p.train for p in planted])
    truth = jax.tree.map(lambda *a: jnp.stack(a), *[p.truth for p in planted])
    keys = jnp.stack([jax.random.key(9)] * len(planted))
    batched = jax.jit(jax.vmap(lambda o, t, k: cj.fit(o, fc, truth=t, key=k)))(train, truth, keys)
    for i, one in enumerate(short_fits[name]):
        assert_same_fit(jax.tree.map(lambda a, i=i: a[i], batched), one, name, MODES.get(name, TOLERANCE))


@pytest.mark.parametrize("name", NAMES)
def test_users_in_chunks_equal_users_in_memory(short_fits, planted, name):
    p = planted[0]
    fc, key = short_config(name), jax.random.key(9)
    run = jax.jit(lambda o, U, V: cj.fit_streaming(o, fc, nchunks=3, key=key, truth_U=U, truth_V=V))
    est, trace = run(p.train, p.truth.U, p.truth.V)
    ref, ref_trace = short_fits[name][0]
    assert_same_fit((est, trace._replace(rel_error=ref_trace.rel_error)), (ref, ref_trace), name, atol_W=1e-9)
    np.testing.assert_allclose(trace.subspace_distance_U, ref_trace.subspace_distance_U, atol=1e-8)
    assert bool(jnp.all(jnp.isnan(trace.rel_error)))  # W is never formed in chunks


def _sharded_fits():
    """In the worker: each estimator's short fit of the first problem, users sharded over 2 devices."""
    jax.config.update("jax_enable_x64", True)
    p = problems((0,))[0]
    mesh = cj.users_mesh(2)
    out = {}
    for name in NAMES:
        fc = short_config(name)
        run = jax.jit(lambda o, t, fc=fc: cj.fit_sharded(o, fc, mesh=mesh, truth=t, key=jax.random.key(9)))
        est, trace = run(cj.shard_users(p.train, mesh), p.truth)
        out[name] = {
            "W": np.asarray(est.W).tolist(),
            "objective": np.nan_to_num(np.asarray(trace.objective), nan=-1.0).tolist(),
            "iterations": int(trace.iterations),
            "S_sharded": len(est.S.sharding.device_set) == 2,
        }
    return out


@pytest.fixture(scope="module")
def sharded():
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NAMES)
def test_sharded_equals_single_device(sharded, short_fits, name):
    d = sharded[name]
    assert d["S_sharded"], name
    ref, ref_trace = short_fits[name][0]
    objective = jnp.asarray(d["objective"])
    trace = ref_trace._replace(objective=jnp.where(objective == -1.0, jnp.nan, objective), iterations=d["iterations"])
    assert_same_fit((ref._replace(S=None), trace), (ref, ref_trace), name, MODES.get(name, TOLERANCE), W=d["W"])


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_says_what_to_change(planted, name):
    p = planted[0]
    fc = fit_config(name)
    key = jax.random.key(0)
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="NaN or inf"):
            cj.fit(dataclasses.replace(p.train, Y=p.train.Y.at[0, 0].set(jnp.nan)), fc, key=key)
        with pytest.raises(ValueError, match="at least 4 samples"):
            cj.fit(cj.Observations(p.train.X[:, :3], p.train.Y[:, :3], "sensing"), fc, key=key)
        with pytest.raises(ValueError, match="float32 or float64"):
            cj.fit(cj.Observations(p.train.X.astype(jnp.int32), p.train.Y.astype(jnp.int32), "sensing"), fc, key=key)
        with pytest.raises(ValueError, match="rank 5 exceeds"):
            cj.fit(p.train, dataclasses.replace(fc, rank=5), key=key)
        if not cj.resolve(fc).__dataclass_fields__.get("optimizer"):
            with pytest.raises(ValueError, match="takes no optimizer"):
                cj.fit(p.train, fc, key=key, optimizer=optax.sgd(0.1))


def test_a_name_or_an_object_resolves_to_the_same_fit(planted):
    """``FitConfig(algorithm="altgd", step_size=s)`` and ``FitConfig(algorithm=AltGD(step_size=s))`` are one fit."""
    p = planted[0]
    with jax.enable_x64(True):
        by_name = cj.fit(p.train, cj.FitConfig(rank=2, algorithm="altgd", step_size=0.3, iters=5, tol=0.0))
        by_object = cj.fit(p.train, cj.FitConfig(rank=2, algorithm=cj.AltGD(step_size=0.3), iters=5, tol=0.0))
        default = cj.fit(p.train, cj.FitConfig(rank=2, algorithm="altgd", iters=5, tol=0.0))
    np.testing.assert_array_equal(by_name[0].W, by_object[0].W)
    assert float(jnp.max(jnp.abs(by_name[0].W - default[0].W))) > 0  # the option reached the estimator
    first = cj.VarPro(continuation_start=3.0, continuation_stop=0.2, stall=5, stall_decrease=0.5)
    assert cj.resolve(cj.FitConfig(algorithm="varpro-restarts")).stages[0] == first
    with pytest.raises(ValueError, match="unknown algorithm 'newton': choose one of altmin"):
        cj.resolve(cj.FitConfig(algorithm="newton"))
    with pytest.raises(ValueError, match="a registered name .* or an Estimator"):
        cj.resolve(cj.FitConfig(algorithm=3))
    with pytest.raises(ValueError, match="step_size must be > 0"):
        cj.fit(p.train, cj.FitConfig(rank=2, algorithm=cj.ScaledGD(step_size=-1.0)))


if __name__ == "__main__":
    cj.enable_compile_cache()  # the suite's cache (the user's cache dir, or $COLORA_JAX_CACHE_DIR), as in-process
    print(json.dumps(_sharded_fits()))
