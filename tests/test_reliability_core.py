"""Nothing silently wrong in the core library (issue 24): precision, data scale, bad input.

Each test reproduces a reported problem: before the fix it gave NaN, a wrong answer that
claimed convergence, or a raw traceback; now it gives the right result or a ValueError that
says what to change.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import colora_jax as cj
from colora_jax._src.model.config import effective_precision

SENSING = cj.ProblemConfig(model="sensing", users=6, d_out=6, d_in=6, rank=2, samples=20)


@pytest.fixture(scope="module")
def problem():
    return cj.generate(jax.random.key(0), SENSING)


# ----------------------------------------------------------------------------- precision


def test_x64_without_jax_64_bit_mode_is_refused_with_the_fix():
    # reported: rel_error [nan nan nan], and fit blamed the data ("Y contain NaN or inf")
    pc = cj.ProblemConfig(model="sensing", users=10, d_out=6, d_in=6, rank=2, samples=20, x64=True)
    with jax.enable_x64(False):
        for call in (
            lambda: cj.run_trials(jax.random.key(1), pc, cj.FitConfig(rank=2), trials=3),
            lambda: cj.generate(jax.random.key(1), pc),
            lambda: effective_precision(pc),
            lambda: cj.generate_problem(jax.random.key(1), dataclasses.replace(cj.FEDREP_SYNTHETIC, x64=True)),
        ):
            with pytest.raises(ValueError, match=r"x64=True needs JAX's 64-bit mode.*jax_enable_x64"):
                call()
        assert effective_precision(dataclasses.replace(pc, x64=False)) == "float32"


def test_x64_with_jax_64_bit_mode_fits_in_float64(x64):
    pc = cj.ProblemConfig(model="sensing", users=10, d_out=6, d_in=6, rank=2, samples=20, x64=True)
    out = cj.run_trials(jax.random.key(1), pc, cj.FitConfig(rank=2), trials=3)
    assert effective_precision(pc) == "float64"
    assert out.evaluation.rel_error.dtype == np.float64
    assert np.all(out.evaluation.rel_error < 1e-9), out.evaluation.rel_error


def test_observations_of_two_precisions_are_refused(x64, problem):
    obs = cj.Observations(problem.train.X.astype(jnp.float64), problem.train.Y, "sensing")
    with pytest.raises(ValueError, match="X are float64 but Y are float32: cast both"):
        cj.fit(obs, cj.FitConfig(rank=2))


# ----------------------------------------------------------------------------- data scale


def _rescaled(obs, s):
    return dataclasses.replace(obs, Y=obs.Y * jnp.asarray(s, obs.Y.dtype))


@pytest.mark.parametrize("scale", [1e-15, 1e-18, 1e-19, 1e19])
def test_accuracy_does_not_depend_on_the_scale_of_y(problem, scale):
    # reported (float32, altmin): 1.1e-4 at 1e-15, 5% at 1e-18, 105% at 1e-19, all converged=True; NaN at 1e19
    est1, trace1 = cj.fit(problem.train, cj.FitConfig(rank=2))
    est, trace = cj.fit(_rescaled(problem.train, scale), cj.FitConfig(rank=2))
    err1 = float(cj.relative_error(est1.W, problem.truth.W))
    err = float(cj.relative_error(est.W / scale, problem.truth.W))
    assert err1 < 1e-5 and err < 1e-5, (err1, err)
    assert bool(trace.converged) and int(trace.iterations) == int(trace1.iterations)


@pytest.mark.parametrize("algorithm", list(cj.ALGORITHMS))
def test_every_algorithm_fits_on_one_scale_and_reports_on_the_callers(problem, algorithm):
    # fit brings Y times 2^50 and 2^-50 to the same data near one: the same fit, bit for bit,
    # returned in each caller's units (S scaled, objective scaled by the square, errors unitless)
    fc = cj.FitConfig(rank=2, algorithm=algorithm, iters=30, ridge=1e-2 if algorithm == "centered" else 0.0)
    scaled_truth = lambda s: dataclasses.replace(problem.truth, W=problem.truth.W * s)
    key = jax.random.key(0)  # varpro-restarts draws its restarts from it; the others ignore it
    fits = [cj.fit(_rescaled(problem.train, 2.0**e), fc, truth=scaled_truth(2.0**e), key=key) for e in (50, -50)]
    (big, big_trace), (small, small_trace) = fits
    np.testing.assert_array_equal(big.S, small.S * 2.0**100)
    np.testing.assert_array_equal(big.U, small.U)
    np.testing.assert_array_equal(big_trace.rel_error, small_trace.rel_error)
    np.testing.assert_array_equal(big_trace.iterations, small_trace.iterations)
    np.testing.assert_array_equal(big_trace.converged, small_trace.converged)
    assert float(big_trace.objective[0]) == float(small_trace.objective[0]) * 2.0**200
    # and the same answer as at scale one (data of order one are fitted as given, here in units
    # 2^3 apart): except adam, whose learning rate is a step in the parameters' own units
    one, one_trace = cj.fit(problem.train, fc, truth=problem.truth, key=key)
    if algorithm != "adam":
        np.testing.assert_allclose(big.W / 2.0**50, one.W, atol=1e-4)
    if algorithm not in ("adam", "gnmr"):  # gnmr's shortest step weighs dS against dU, dV in the data's units,
        # so its path (not its answer) depends on the scale it is given
        np.testing.assert_allclose(big_trace.rel_error, one_trace.rel_error, atol=1e-4)
    mean_y2 = float(jnp.mean(jnp.square(problem.train.Y)))
    np.testing.assert_allclose(float(big_trace.objective[0]) / 2.0**100, float(one_trace.objective[0]), rtol=1e-5)
    assert float(one_trace.objective[0]) <= mean_y2 * (1 + 1e-5)  # the objective is a mean squared residual


def test_centred_fit_ridge_is_in_the_callers_units(problem):
    # the penalty lambda n_i ||U Delta_i V^T||^2 is on the caller's W: with X times 2^40 (W 2^-40)
    # the same objective has lambda 2^80, whatever scale the fit runs on inside
    fc = cj.FitConfig(rank=2, algorithm="centered", iters=30, ridge=10.0)
    est1, _ = cj.fit(problem.train, fc)
    obs = dataclasses.replace(problem.train, X=problem.train.X * 2.0**40)
    est, _ = cj.fit(obs, dataclasses.replace(fc, ridge=10.0 * 2.0**80))
    np.testing.assert_allclose(est.W * 2.0**40, est1.W, atol=1e-4)
    plain, _ = cj.fit(problem.train, dataclasses.replace(fc, ridge=0.0))
    assert float(jnp.max(jnp.abs(plain.W - est1.W))) > 1e-2  # the ridge matters: the check can fail


def test_a_stop_on_underflow_is_not_called_convergence(problem):
    # inside jit, and in the streamed fit, the data are fitted as given: at 1e-19 every squared
    # residual underflows and the stopping rule fires at once; the trace used to say converged=True
    # (with 105% error)
    tiny = _rescaled(problem.train, 1e-19)
    fc = cj.FitConfig(rank=2)
    for run in (jax.jit(lambda o: cj.fit(o, fc)), lambda o: cj.fit_streaming(o, fc, nchunks=2)):
        assert not bool(run(tiny)[1].converged)
        assert bool(run(problem.train)[1].converged)


# ----------------------------------------------------------------------------- bad input


def test_fractional_counts_are_refused(problem):
    # reported: counts=10.5 passed validation as 10 while the mask used 11 samples
    with pytest.raises(ValueError, match="whole numbers of samples"):
        problem.train.with_counts(10.5)
    with pytest.raises(ValueError, match="counts must be integer sample counts"):
        cj.fit(dataclasses.replace(problem.train, counts=jnp.full((6,), 10.5)), cj.FitConfig(rank=2))
    with pytest.raises(ValueError, match="sample counts must be integers, got 10.5"):
        cj.run_trials(jax.random.key(0), SENSING, cj.FitConfig(rank=2), trials=2, samples=10.5)
    with pytest.raises(ValueError, match="sample counts must be integers"):
        cj.run_trials(jax.random.key(0), SENSING, cj.FitConfig(rank=2), trials=2, samples=[8, 12.0])


def test_no_users_is_refused(problem):
    # reported: k = 0 users ran 100 iterations without complaint
    obs = cj.Observations(problem.train.X[:0], problem.train.Y[:0], "sensing")
    with pytest.raises(ValueError, match="no users"):
        cj.fit(obs, cj.FitConfig(rank=2))


@pytest.mark.parametrize(
    "dtype, why",
    [
        (jnp.complex64, "complex data"),  # reported: NaN
        (jnp.float16, "half precision"),  # reported: NotImplementedError from a LAPACK kernel
        (jnp.bfloat16, "half precision"),
        (jnp.int32, "its sums of squares need floating point"),
    ],
)
def test_observations_of_an_unfit_type_are_refused(problem, dtype, why):
    obs = cj.Observations(problem.train.X.astype(dtype), problem.train.Y.astype(dtype), "sensing")
    with pytest.raises(ValueError, match=rf"float32 or float64 \({why}[^)]*\): pass real X.astype\(jnp.float32\)"):
        cj.fit(obs, cj.FitConfig(rank=2))


def test_ragged_observations_are_refused_with_the_padding_advice(problem):
    # reported: AttributeError 'list' object has no attribute 'ndim'
    X = [np.asarray(problem.train.X[i, : 10 + i]) for i in range(6)]
    Y = [np.asarray(problem.train.Y[i, : 10 + i]) for i in range(6)]
    for obs in (cj.Observations(X, Y, "sensing"), cj.Observations(np.array(X, object), np.array(Y, object), "sensing")):
        with pytest.raises(ValueError, match="must be one array.*pad users with fewer samples.*counts="):
            cj.fit(obs, cj.FitConfig(rank=2))


FIT_INTEGERS = ["rank", "iters"]
PROBLEM_INTEGERS = ["users", "d_out", "d_in", "rank", "samples", "test_samples", "personal_groups"]
SHARED_INTEGERS = ["users", "d_out", "d_in", "rank", "samples", "test_samples"]


@pytest.mark.parametrize("field", FIT_INTEGERS)
def test_every_integer_field_of_fit_config_refuses_a_fraction(problem, field):
    # reported: FitConfig(rank=2.5) -> TypeError deep inside JAX
    bad = cj.FitConfig(**{field: getattr(cj.FitConfig(), field) + 0.5})
    with pytest.raises(ValueError, match=rf"FitConfig.{field} must be an integer, got .*\.5 \(float\)"):
        cj.fit(problem.train, bad)
    with pytest.raises(ValueError, match=rf"pass {field}=2"):
        cj.FitConfig(**{field: 2.0}).validate()


@pytest.mark.parametrize("field", PROBLEM_INTEGERS)
def test_every_integer_field_of_problem_config_refuses_a_fraction(field):
    bad = dataclasses.replace(SENSING, **{field: getattr(SENSING, field) + 0.5})
    with pytest.raises(ValueError, match=rf"ProblemConfig.{field} must be an integer"):
        cj.generate(jax.random.key(0), bad)
    with pytest.raises(ValueError, match=rf"ProblemConfig.{field} must be an integer"):
        cj.run_trials(jax.random.key(0), bad, cj.FitConfig(rank=2), trials=2)


@pytest.mark.parametrize("field", SHARED_INTEGERS)
def test_every_integer_field_of_shared_input_config_refuses_a_fraction(field):
    bad = dataclasses.replace(cj.FEDREP_SYNTHETIC, **{field: getattr(cj.FEDREP_SYNTHETIC, field) + 0.5})
    with pytest.raises(ValueError, match=rf"SharedInputConfig.{field} must be an integer"):
        bad.validate()


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(noise=float("nan")), "ProblemConfig.noise must be finite"),  # NaN passed `noise < 0`: NaN data
        (dict(deviation=float("nan")), "ProblemConfig.deviation must be finite"),
        (dict(noise=None), "ProblemConfig.noise must be a real number"),  # TypeError on '<'
        (dict(x64="yes"), "x64 must be True or False"),
        (dict(rank=True), "ProblemConfig.rank must be an integer"),
    ],
)
def test_problem_config_values_that_used_to_slip_through(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SENSING, **changes).validate()


def test_fit_config_nan_is_refused():
    with pytest.raises(ValueError, match="FitConfig.step_size must be finite"):
        cj.FitConfig(step_size=float("nan")).validate()
