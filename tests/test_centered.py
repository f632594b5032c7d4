"""Centred CoLoRA: S_i = S_bar + Delta_i with a weight-space ridge on the deviations.

Claims: the penalized objective never increases; lambda = 0 is CoLoRA exactly; a huge lambda
makes every user's matrix the same (one shared adapter, the `global` model class); and the
validation-selected method recovers noiseless planted truth (it can choose lambda = 0).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import colora_jax as cj

PC = cj.ProblemConfig(model="sensing", users=12, d_out=6, d_in=6, rank=2, samples=30, noise=0.05, x64=True)


@functools.cache
def _problem(model, groups=0):
    pc = dataclasses.replace(PC, model=model, personal_groups=groups)
    return jax.jit(cj.generate, static_argnums=1)(jax.random.key(4), pc)


def _fit(obs, **config):
    fc = cj.FitConfig(rank=2, algorithm="centered", iters=60, **config)
    return jax.jit(lambda o: cj.fit(o, fc))(obs)


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_objective_never_increases_and_zero_ridge_is_colora(x64, model):
    obs = _problem(model).train
    est, trace = _fit(obs, ridge=0.3)
    f = np.asarray(trace.objective[: int(trace.iterations) + 1])
    assert np.all(np.diff(f) <= 1e-10 * f[:-1]), "every block step is an exact minimization"
    plain, _ = jax.jit(lambda o: cj.fit(o, cj.FitConfig(rank=2, iters=60)))(obs)
    zero, _ = _fit(obs, ridge=0.0)
    np.testing.assert_allclose(zero.W, plain.W, atol=1e-10)


def test_a_huge_ridge_gives_one_shared_adapter(x64):
    """lambda -> inf: every W_i equals the centre's U S_bar V^T (deviations at most ~1/lambda)."""
    est, _ = _fit(_problem("sensing").train, ridge=1e8)
    spread = jnp.max(jnp.abs(est.W - jnp.mean(est.W, axis=0, keepdims=True)))
    assert float(spread) < 1e-5 * float(jnp.max(jnp.abs(est.W)))


def test_validation_selected_centring_recovers_its_model_class(x64):
    """Users that share one S* (no personal signal): the chosen lambda pulls everybody to the centre,
    and the fit is better than plain CoLoRA's, which spends r^2 noisy numbers per user."""
    p = _problem("sensing", groups=1)
    fc = cj.FitConfig(rank=2, iters=60)
    run = jax.jit(lambda o, t, m: cj.fit_method(m, o, fc, key=jax.random.key(0), truth=t), static_argnums=2)
    centred, plain = run(p.train, p.truth, "colora-centered"), run(p.train, p.truth, "colora")
    assert float(cj.relative_error(centred.W, p.truth.W)) < 0.7 * float(cj.relative_error(plain.W, p.truth.W))


def test_bad_configurations_say_what_to_change(x64):
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        cj.FitConfig(algorithm="centered", ridge=-1.0).validate()
    with pytest.raises(ValueError, match="personal='full'"):
        cj.fit(_problem("sensing").train, cj.FitConfig(rank=2, algorithm="centered", personal="diag"))
