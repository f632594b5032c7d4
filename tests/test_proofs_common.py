"""The proof scripts' shared predictions and verdict bookkeeping (proofs_numerics/_common.py), on known answers."""

import argparse
import importlib
import json
import math

import jax
import numpy as np
import pytest

import colora_jax as cj
from proofs_numerics import _common
from proofs_numerics.run_all import SCRIPTS


@pytest.mark.parametrize("model", ["sensing", "regression"])
def test_noise_error_tends_to_the_fisher_limit(model):
    """sigma sqrt(m*(k)/n)/||S|| for large n: every finite-sample factor tends to 1."""
    for k in (1, 5, 100):
        limit = 0.01 * math.sqrt(_common.dof_sensing(k, 20, 20, 2) / 1e7) / math.sqrt(2)
        assert _common.noise_error(model, k, 10**7, 20, 20, 2, 0.01, math.sqrt(2)) == pytest.approx(limit, rel=1e-4)


def test_noise_error_single_user_sensing_is_least_squares_on_the_tangent_space():
    """k = 1, sensing: all 76 tangent parameters seen by n Gaussian equations, E tr((G^T G)^-1) = p / (n - p - 1)."""
    n, p = 200, 2 * (20 + 20 - 2)
    joint = 0.01 * math.sqrt(p / (n - p - 1)) / math.sqrt(2)
    assert _common.noise_error("sensing", 1, n, 20, 20, 2, 0.01, math.sqrt(2)) == pytest.approx(joint, rel=0.02)


def test_noise_error_is_linear_in_sigma_and_falls_with_users():
    e = [_common.noise_error("sensing", k, 200, 20, 20, 2, 0.01, 1.0) for k in (1, 5, 20, 100)]
    assert all(b < a for a, b in zip(e, e[1:]))
    assert _common.noise_error("regression", 5, 80, 20, 20, 2, 0.3, 1.0) == pytest.approx(
        30 * _common.noise_error("regression", 5, 80, 20, 20, 2, 0.01, 1.0)
    )


def test_dof_counts():
    assert _common.dof_sensing(1, 20, 20, 2) == 76
    assert _common.dof_sensing(100, 20, 20, 2) == pytest.approx(4.72)
    assert _common.dof_regression(1, 20, 2) == 20  # one user: n = d_in determines W by least squares
    assert _common.dof_regression(100, 20, 2) == pytest.approx(2.18)
    # the library's count, which the scripts, the demo and the benchmarks read
    assert cj.degrees_of_freedom("sensing", 20, 10, 10, 2) == pytest.approx(5.6)  # the demo's m*(20)
    assert cj.degrees_of_freedom("sensing", 4, 12, 8, 2, "diag") == pytest.approx(2 + 2 * 18 / 4)
    assert cj.degrees_of_freedom("regression", 5, 30, 20, 2) == pytest.approx(2 + 18 / 5)  # d_out plays no part
    with pytest.raises(ValueError, match="full personal parts only"):
        cj.degrees_of_freedom("regression", 5, 20, 20, 2, "diag")
    with pytest.raises(ValueError, match="personal"):
        cj.degrees_of_freedom("sensing", 5, 20, 20, 2, "diagonal")


def test_threshold_summary_on_a_known_table():
    grid = [5, 6, 7, 8]
    thresholds = np.array([6] * 12 + [7] * 10 + [8] * 8)  # 30 monotone trials
    success = np.asarray(grid)[None, :] >= thresholds[:, None]
    s = _common.threshold_summary(grid, success, m_star=4.72)
    assert s["n50"] == 7 and s["ratio"] == pytest.approx(7 / 4.72)
    assert s["n50_low"] <= 7 <= s["n50_high"]
    assert s["floor"] == pytest.approx(5 / 4.72)
    np.testing.assert_allclose(s["success"], [0, 12 / 30, 22 / 30, 1])
    assert np.all(s["success_low"] <= s["success"]) and np.all(s["success"] <= s["success_high"])
    assert s["nonmonotone"] == []


def test_claims_pass_only_when_every_interval_is_inside():
    c = _common.Claims()
    assert c.add("a", 1.0, 0.9, 1.1, lower=0.8, upper=1.2) == "holds"
    assert c.passed
    assert c.add("b", 1.0, 0.9, 1.3, upper=1.2) == "undecided"
    assert not c.passed
    summary = c.summary()
    assert summary["a"].endswith("holds") and summary["b"].endswith("undecided")
    assert not _common.Claims().passed  # no claim checked is not a pass


def test_threshold_summary_reads_n50_off_the_rate_on_non_monotone_trials():
    # 3 of 6 trials recover at 5, two of them fail again at 6 and 7: the first-success median is 5,
    # but at 6 only 2 of 6 recover; the rate reaches 1/2 again at 8.
    success = np.array([[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    s = _common.threshold_summary([5, 6, 7, 8], success, m_star=4.0)
    assert s["n50_first_success"] == 5 and s["n50"] == 5  # 3 of 6 at 5: the rate is exactly 1/2 there
    success[2, 0] = False  # now 2 of 6 at 5, 2 at 6, 2 at 7, 5 at 8
    s = _common.threshold_summary([5, 6, 7, 8], success, m_star=4.0)
    assert s["n50_first_success"] == 6 and s["n50"] == 8
    assert s["nonmonotone_fraction"] == pytest.approx(2 / 6) and s["nonmonotone"] == [0, 1]
    assert s["n50_low"] <= s["n50"] <= s["n50_high"]
    ratio = _common.threshold_ratio(s, s)
    assert ratio.median == 1 and ratio.low <= 1 <= ratio.high


def _record(tmp_path, name, **fields):
    base = {"passed": True, "code_version": "abc", "config": {"seed": 0, "confirmation_seed": 1, "trials": 4}}
    record = {**base, "claims": [], "measured": {}, "seconds": 1.0, **fields}
    path = tmp_path / name
    path.write_text(json.dumps(record))
    return str(path)


def test_the_confirmation_decides_the_verdict_of_record(tmp_path):
    main = _record(tmp_path, "x.json", passed=True)
    confirmation = _record(tmp_path, "c.json", passed=False, config={"seed": 1, "confirmation_seed": 1, "trials": 4})
    record = _common.attach_confirmation(main, confirmation)
    assert record["exploration_passed"] is True and record["passed"] is False
    assert record["confirmation"]["seed"] == 1 and record["confirmation"]["passed"] is False
    assert json.loads((tmp_path / "x.json").read_text())["passed"] is False
    # attached again (a rerun of the confirmation): the exploration's verdict is kept
    assert _common.attach_confirmation(main, confirmation)["exploration_passed"] is True


def test_a_confirmation_from_another_version_or_configuration_is_refused(tmp_path):
    main = _record(tmp_path, "x.json")
    other_code = _record(tmp_path, "c1.json", code_version="def")
    with pytest.raises(ValueError, match="one clean commit"):
        _common.attach_confirmation(main, other_code)
    other_config = _record(tmp_path, "c2.json", config={"seed": 1, "confirmation_seed": 1, "trials": 5})
    with pytest.raises(ValueError, match="more than their seeds"):
        _common.attach_confirmation(main, other_config)
    with pytest.raises(ValueError, match="without --confirm first"):
        _common.attach_confirmation(str(tmp_path / "missing.json"), other_code)


@pytest.mark.parametrize("name", [name for name, sweeps in SCRIPTS if sweeps])
def test_every_linear_script_registers_fresh_confirmation_seeds(name):
    x64 = jax.config.read("jax_enable_x64")
    try:
        module = importlib.import_module(f"proofs_numerics.{name}")
    finally:  # convergence turns float64 on when imported: the files after this one in the worker keep the default
        jax.config.update("jax_enable_x64", x64)
    for config in (module.Config(), module.SMOKE):
        confirmed = _common.configure(config, argparse.Namespace(confirm=True))
        assert confirmed.seed == config.confirmation_seed != config.seed
        assert _common.configure(config, argparse.Namespace(confirm=False)) is config
        if hasattr(config, "seeds"):  # the NNX scripts: a seed set each, the confirmation's disjoint
            assert config.seed in config.seeds and not set(confirmed.seeds) & set(config.seeds)


def test_phase_transition_line_allows_for_the_integer_grid():
    # True thresholds on a unit grid are ceil(a m* + b): not collinear, yet the true a must lie in the range.
    from proofs_numerics import phase_transition as pt

    config, a, b = pt.Config(), 1.37, 0.4
    m = {"5": 18.4, "20": 7.6, "100": 5.92}
    curves = {}
    for k, mk in m.items():
        grid = list(range(5, 30))
        threshold = math.ceil(a * mk + b)
        table = np.broadcast_to(np.asarray(grid) >= threshold, (40, len(grid))).astype(int).tolist()
        curves[k] = {"samples": grid, "table": table, "m_star": mk}
    fit = pt.slope_of(config, curves, (5, 20, 100))
    assert fit.a_low <= a <= fit.a_high and fit.b_low <= b <= fit.b_high
    assert fit.a_high - fit.a_low < 0.3  # and the range is informative
    points = [math.ceil(a * mk + b) for mk in m.values()]
    assert math.isnan(
        _common.statistics.threshold_line(list(m.values()), points, points, points).a_low
    )  # not collinear
