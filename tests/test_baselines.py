"""Baselines: each recovers its own model class, and the comparison shows what the issue claims.

Noiseless recoveries are checked against ``tolerance(float32)`` (sqrt(eps) ~ 3e-4). The
comparison runs use few trials and small sizes; their claims are margins of an order of
magnitude or more, far outside the trial-to-trial spread.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tolerance

import colora_jax as cj

TOL = tolerance(np.float32)


def _fit(method, obs, fc, truth=None, key=0):
    run = jax.jit(functools.partial(cj.fit_method, method, fit_config=fc, truth=truth))
    return run(obs, key=jax.random.key(key))


def _rel(W, W_star):
    return float(cj.relative_error(W, W_star))


# ----------------------------------------------------------------------------- own model class


def test_fedrep_recovers_fedreps_linear_model():
    """d_out = 1, W_i* = h_i^T V*^T (FedRep's synthetic setting, fewer users, noiseless)."""
    pc = dataclasses.replace(cj.FEDREP_SYNTHETIC, users=30, noise=0.0, samples=10)
    p = cj.generate_problem(jax.random.key(1), pc)
    f = _fit("fedrep", p.train, cj.FitConfig(rank=2, iters=400, tol=0.0), p.truth)
    assert _rel(f.W, p.truth.W) < TOL
    assert float(cj.subspace_distance(f.V, p.truth.V)) < TOL and f.U is None


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def shared_input():
    """A sensing problem W_i* = H_i* V*^T with a full d_out x r personal H_i*."""
    pc = cj.SharedInputConfig(model="sensing", users=6, d_out=4, d_in=6, rank=2, samples=24, noise=0.0)
    return cj.generate_problem(jax.random.key(2), pc)


@pytest.mark.xdist_group("baselines_shared_input")
def test_fedsa_lora_recovers_a_personal_output_side_with_monotone_objective(shared_input):
    p = shared_input
    f = _fit("fedsa-lora", p.train, cj.FitConfig(rank=2, iters=200), p.truth)
    assert _rel(f.W, p.truth.W) < TOL
    assert float(cj.subspace_distance(f.V, p.truth.V)) < TOL
    obj = np.asarray(f.trace.objective[: int(f.trace.iterations) + 1])
    assert np.all(np.diff(obj) <= 1e-5 * obj[:-1]), "exact block steps never increase the objective"


@pytest.mark.xdist_group("baselines_shared_input")
def test_alora_recovers_a_personal_input_side(shared_input):
    """alora is fedsa-lora with the sides exchanged: it recovers W_i* = V* H_i*^T."""
    W = jnp.swapaxes(shared_input.truth.W, 1, 2)  # (k, 6, 4): shared output side V*
    obs = cj.measure(jax.random.key(3), W, 24, 0.0, "sensing")
    f = _fit("alora", obs, cj.FitConfig(rank=2, iters=200))
    assert _rel(f.W, W) < TOL
    assert float(cj.subspace_distance(f.U, shared_input.truth.V)) < TOL and f.V is None


def test_global_recovers_one_adapter_shared_by_all():
    truth = cj.generate_truth(jax.random.key(4), cj.ProblemConfig(model="regression", users=5, d_out=6, d_in=5, rank=2))
    W = jnp.broadcast_to(truth.W[0], truth.W.shape)
    obs = cj.measure(jax.random.key(5), W, 3, 0.0, "regression")  # 3 samples each: only pooled they suffice
    f = _fit("global", obs, cj.FitConfig(rank=2, iters=100))
    assert _rel(f.W, W) < TOL


def test_local_full_recovers_full_rank_matrices(x64):
    """n = d_in: exactly determined square systems, whose Gaussian designs can have condition
    numbers in the hundreds (float32 would lose cond^2 eps to the normal equations): float64."""
    W = jax.random.normal(jax.random.key(6), (4, 3, 5), jnp.float64)
    obs = cj.measure(jax.random.key(7), W, 5, 0.0, "regression")
    assert _rel(_fit("local-full", obs, cj.FitConfig(rank=2)).W, W) < tolerance(np.float64)


def test_local_recovers_unrelated_rank_r_users_where_colora_cannot():
    pc = cj.ProblemConfig(model="regression", users=4, d_out=6, d_in=6, rank=2, samples=12, task_angle=np.pi / 2)
    p = cj.generate(jax.random.key(8), pc)
    fc = cj.FitConfig(rank=2, iters=200)
    assert _rel(_fit("local", p.train, fc, p.truth).W, p.truth.W) < TOL
    assert _rel(_fit("colora", p.train, fc, p.truth).W, p.truth.W) > 0.1  # no shared rank-2 subspace exists


# ----------------------------------------------------------------------------- the harness


def test_every_method_sees_the_same_problem_and_colora_is_the_core_trial():
    pc = cj.ProblemConfig(users=6, d_out=6, d_in=5, rank=2, samples=20, test_samples=4, noise=0.01)
    fc = cj.FitConfig(iters=30, tol=0.0)
    key = cj.trial_keys(jax.random.key(0), 0, 1)[0]
    core = jax.jit(lambda k: cj.fit(cj.generate(jax.random.split(k)[0], pc).train, fc))(key)
    for method in ("colora", "oracle", "local"):  # every method fits the problem the core trial generates
        ours = jax.jit(lambda k, method=method: cj.trial(k, pc, fc, method))(key)
        assert ours.evaluation.rel_error.shape == ()
    ours = jax.jit(lambda k: cj.trial(k, pc, fc, "colora"))(key)
    np.testing.assert_allclose(ours.trace.objective, core[1].objective, rtol=1e-5)


def test_parameter_counts():
    pc = cj.ProblemConfig(d_out=20, d_in=30, rank=3)
    assert cj.parameter_counts("colora", pc) == (150, 9)
    assert cj.parameter_counts("colora-diag", pc) == (150, 3)
    assert cj.parameter_counts("local", pc) == (0, 150)
    assert cj.parameter_counts("local-full", pc) == (0, 600)
    assert cj.parameter_counts("fedrep", pc) == (90, 60)
    assert cj.parameter_counts("alora", pc) == (60, 90)
    assert cj.parameter_counts("oracle", dataclasses.replace(pc, personal="diag")) == (0, 3)
    assert cj.parameter_counts("oracle", cj.FEDREP_SYNTHETIC) == (0, 2)  # h_i: d_out x r = 1 x 2
    assert cj.parameter_counts("base", pc) == (0, 0)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose from colora, colora-diag, .*, local, local-full"):
        cj.fit_method("lora", None, cj.FitConfig(), key=jax.random.key(0))


def test_a_method_that_cannot_run_says_what_it_needs():
    obs = cj.measure(jax.random.key(0), jnp.zeros((2, 4, 5)), 6, 0.0, "sensing")
    with pytest.raises(ValueError, match="local-full: 6 samples per user cannot determine a 4x5.*at least 20"):
        cj.fit_method("local-full", obs, cj.FitConfig(), key=jax.random.key(0))


# ----------------------------------------------------------------------------- what the comparison shows

SCARCE = cj.ProblemConfig(users=20, d_out=8, d_in=8, rank=2, samples=8, test_samples=10, noise=0.01)
CROSSOVER = dataclasses.replace(SCARCE, samples=60, task_angle=0.6)
FC = cj.FitConfig(iters=60)
COMPARED = {"scarce": (SCARCE, ("colora", "oracle", "local", "global")), "crossover": (CROSSOVER, ("colora", "local"))}


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def runs():
    key = jax.random.key(0)
    return {
        (name, m): cj.run_trials(key, pc, FC, 3, method=m) for name, (pc, methods) in COMPARED.items() for m in methods
    }


def _median(runs, setting, method):
    return float(np.median(runs[setting, method].evaluation.per_user_rel_error))


@pytest.mark.xdist_group("baselines_runs")
def test_scarce_shared_data_colora_is_near_the_oracle_and_far_below_local_and_global(runs):
    colora, oracle = _median(runs, "scarce", "colora"), _median(runs, "scarce", "oracle")
    assert colora < 3 * oracle
    assert colora < 0.1 * _median(runs, "scarce", "local")
    assert colora < 0.1 * _median(runs, "scarce", "global")


@pytest.mark.xdist_group("baselines_runs")
def test_tilted_tasks_with_enough_data_local_overtakes_colora(runs):
    assert _median(runs, "crossover", "local") < 0.5 * _median(runs, "crossover", "colora")


@pytest.mark.xdist_group("baselines_runs")
@pytest.mark.parametrize("method", ["local", "global"])
def test_pooled_trace_error_equals_the_evaluation(runs, method):
    """The trace's stacked relative error of local (pooled over users) and global (converted
    from the fit against the users' mean) agrees with evaluating the final W directly."""
    out = runs["scarce", method]
    last = np.take_along_axis(out.trace.rel_error, out.trace.iterations[:, None], axis=1)[:, 0]
    np.testing.assert_allclose(last, out.evaluation.rel_error, rtol=1e-3)


def test_diag_span_start_begins_in_the_truths_span_in_another_basis_and_recovers():
    """colora-diag-span: iteration 0 sits in span U*, span V* (distance ~ 0) but not in their basis
    (a diagonal S_i in the start's basis misfits: the first objective is far from 0); AltMin then
    finds the basis, float64 noiseless, to 1e-10; a reference that reads the truth refuses none."""
    pc = cj.ProblemConfig(model="sensing", users=8, d_out=6, d_in=6, rank=2, samples=30, personal="diag", x64=True)
    with jax.enable_x64(True):
        p = cj.generate_problem(jax.random.key(2), pc)
        fc = cj.FitConfig(rank=2, iters=300, tol=0.0, personal="diag")
        f = _fit("colora-diag-span", p.train, fc, p.truth)
        assert float(f.trace.subspace_distance_U[0]) < 1e-12 and float(f.trace.subspace_distance_V[0]) < 1e-12
        assert float(f.trace.objective[0]) > 1e-3 * float(jnp.mean(jnp.square(p.train.Y)))
        assert _rel(f.W, p.truth.W) < 1e-10
        with pytest.raises(ValueError, match="needs the ground truth"):
            cj.fit_method("colora-diag-span", p.train, fc, key=jax.random.key(0))
