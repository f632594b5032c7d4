"""The planted generator does exactly what its knobs say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import colora_jax as cj

pytestmark = pytest.mark.usefixtures("strict_numerics", "x64")

BASE = cj.ProblemConfig(model="regression", users=6, d_out=7, d_in=6, rank=2, samples=5, test_samples=4, x64=True)


@given(seed=st.integers(0, 2**31 - 1), angle=st.floats(0.0, float(np.pi / 2)))
def test_task_angle_is_every_principal_angle(seed, angle):
    truth = cj.generate_truth(jax.random.key(seed), BASE.__class__(**{**BASE.__dict__, "task_angle": angle}))
    for i in range(BASE.users):
        np.testing.assert_allclose(cj.principal_angles(truth.U_users[i], truth.U), [angle] * 2, atol=1e-12)
        np.testing.assert_allclose(cj.principal_angles(truth.V_users[i], truth.V), [angle] * 2, atol=1e-12)
        np.testing.assert_allclose(truth.U_users[i].T @ truth.U_users[i], np.eye(2), atol=1e-13)


@given(seed=st.integers(0, 2**31 - 1), condition=st.floats(1.0, 100.0), personal=st.sampled_from(["full", "diag"]))
def test_personal_matrices_have_the_requested_spectrum(seed, condition, personal):
    cfg = cj.ProblemConfig(**{**BASE.__dict__, "condition": condition, "personal": personal})
    S = cj.generate_truth(jax.random.key(seed), cfg).S
    sv = np.linalg.svd(np.asarray(S), compute_uv=False)
    np.testing.assert_allclose(sv, np.broadcast_to([1.0, 1.0 / condition], sv.shape), rtol=1e-12)
    if personal == "diag":
        np.testing.assert_array_equal(np.asarray(S) * (1 - np.eye(2)), 0.0)


def test_zero_mean_personal_part_and_deviation_size():
    cfg = cj.ProblemConfig(**{**BASE.__dict__, "personal_mean": "zero", "deviation": 0.3})
    truth = cj.generate_truth(jax.random.key(1), cfg)
    np.testing.assert_allclose(jnp.sum(truth.S, axis=0), 0.0, atol=1e-14)
    low_rank = jnp.einsum("kor,krs,kis->koi", truth.U_users, truth.S, truth.V_users)
    ratio = jnp.linalg.norm(truth.W - low_rank, axis=(1, 2)) / jnp.linalg.norm(low_rank, axis=(1, 2))
    np.testing.assert_allclose(ratio, 0.3, rtol=1e-12)


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_measurements_follow_the_model(model):
    cfg = cj.ProblemConfig(**{**BASE.__dict__, "model": model})
    p = cj.generate(jax.random.key(2), cfg)
    X, Y = np.asarray(p.train.X), np.asarray(p.train.Y)
    W = np.asarray(p.truth.W)
    if model == "regression":
        assert X.shape == (6, 5, 6) and Y.shape == (6, 5, 7)
        np.testing.assert_allclose(Y, np.einsum("kni,koi->kno", X, W), atol=1e-12)
    else:
        assert X.shape == (6, 5, 7, 6) and Y.shape == (6, 5)
        np.testing.assert_allclose(Y, np.einsum("knoi,koi->kn", X, W), atol=1e-12)
    assert p.train.dims == (7, 6) and p.test.samples == 4


def test_deterministic_in_the_key_and_noise_has_its_level():
    cfg = cj.ProblemConfig(**{**BASE.__dict__, "samples": 4000, "noise": 0.25, "users": 2})
    a, b, c = (cj.generate(jax.random.key(s), cfg) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.train.Y, b.train.Y)
    assert not np.allclose(a.train.Y, c.train.Y)
    resid = a.train.Y - jnp.einsum("kni,koi->kno", a.train.X, a.truth.W)
    assert abs(float(jnp.std(resid)) - 0.25) < 0.01


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rank=8), "rank 8 is larger"),
        (dict(model="sensing", samples=3), "use samples >= 4"),
        (dict(model="tensor"), "unknown model 'tensor'"),
        (dict(task_angle=0.2, rank=4), "2\\*rank"),
        (dict(task_angle=2.0), "\\[0, pi/2\\]"),
        (dict(condition=0.5), "condition"),
        (dict(users=0), "users must be a positive integer"),
    ],
)
def test_bad_configs_say_what_to_change(change, message):
    with pytest.raises(ValueError, match=message):
        cj.ProblemConfig(**{**BASE.__dict__, **change}).validate()
