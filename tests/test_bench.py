"""The benchmark's NumPy reference is the same AltMin as colora's; ``colora bench --quick`` runs (smoke)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import colora_jax as cj
from colora_jax._src.bench import latency, reference, suite  # the benchmark's internals are what is tested here
from colora_jax.cli import main


def test_numpy_reference_agrees_with_fit(x64):
    pc = cj.ProblemConfig(model="sensing", users=10, d_out=6, d_in=5, rank=2, samples=12, noise=0.05, x64=True)
    fc = cj.FitConfig(rank=2, iters=25)
    obs = jax.jit(cj.generate, static_argnums=1)(jax.random.key(2), pc).train
    est, trace = jax.jit(lambda o: cj.fit(o, fc))(obs)
    U, V, S, iterations = reference.altmin(np.asarray(obs.X), np.asarray(obs.Y), 2, fc.iters, fc.tol)
    W_ref = np.einsum("or,krs,is->koi", U, S, V)
    np.testing.assert_allclose(np.asarray(est.W), W_ref, rtol=1e-7, atol=1e-9)
    assert abs(int(trace.iterations) - iterations) <= 1


def test_roofline_is_the_larger_of_the_bytes_and_flops_floors():
    it = {"users": 1000, "d": 32, "samples": 16, "rank": 4, "seconds_per_iteration": 0.01}
    rf = suite.roofline(it, bandwidth=1e9, flop_rate=1e9)
    assert rf["bytes_per_iteration_floor"] == 1000 * 16 * 64 * 4  # n (d_in + d_out) < d (d_in + d_out)
    assert rf["ratio"] == pytest.approx(0.01 / (rf["bytes_per_iteration_floor"] / 1e9))
    # per user: C V (d^2 r), C (x) Q (d^2 r^2), B^T V and B P (2 d^2 r), residuals n r (2 d + r): x2 flops
    assert rf["flops_per_iteration_floor"] == 1000 * 2 * (4096 + 16384 + 8192 + 16 * 4 * 68)
    assert rf["ratio_to_roofline"] == pytest.approx(0.01 / max(rf["floor_seconds"], rf["flop_floor_seconds"]))


@pytest.mark.slow
def test_bench_quick_writes_json_with_latency_and_the_numpy_comparison(tmp_path, capsys, monkeypatch):
    # the latency section's cold and warm processes on a small recover (its numbers are not checked
    # here; test_cli_recover's cold and warm runs state what the cache does for this command)
    small = ["--users", "4", "--d-out", "5", "--d-in", "4", "--rank", "2", "--samples", "12", "--trials", "2"]
    monkeypatch.setattr(latency, "RECOVER", [*latency.RECOVER[:5], *small, "--json"])
    assert main(["bench", "--quick", "--sections", "latency,versus_numpy,cores", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["device"]["device_kind"] and len(result["versus_numpy"]) == 1
    assert all(v["colora_rel_error_max"] < 1e-3 and v["numpy_rel_error_max"] < 1e-3 for v in result["versus_numpy"])
    cold, warm = result["latency"]["recover"]["cold"], result["latency"]["recover"]["warm"]
    assert cold["cache"]["misses"] > 0 and warm["cache"]["misses"] == 0 and warm["cache"]["hits"] > 0
    assert cold["cache"]["executables_saved"] == 2 and warm["cache"]["executables_loaded"] == 2  # generator and fit
    (cores,) = result["cores"]  # each way ran every trial, in as many processes as it says
    assert cores["one_core"]["trials"] == cores["all_cores"]["trials"] == 4
    assert len(cores["processes"]) == cores["cores"] and sum(p["trials"] for p in cores["processes"]) >= 4
    out = capsys.readouterr().out
    assert "trials/s" in out and "latency recover: cold" in out and "one-core processes at once" in out


def test_an_unwritable_output_folder_is_refused_before_measuring(capsys):
    assert main(["bench", "--out", "/proc/colora-bench"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --out /proc/colora-bench" in err and err.count("\n") == 1


TINY_LIMIT = dict(models=("sensing",), estimators=("altmin",), users=(3,), d_out=4, d_in=4, trials=6, grid_hi=2.6)


def test_information_limit_rows_resume_and_no_estimator_beats_the_count(tmp_path, monkeypatch, capsys):
    """Below m* (fewer equations than the users' U S_i V^T have parameters) no trial can recover,
    for any estimator: the rate there is 0; well above it AltMin recovers every noiseless trial.
    A second run reads its rows back instead of computing them; the CLI section prints the table."""
    import dataclasses

    from colora_jax._src.bench import information_limit as il

    config = dataclasses.replace(il.Config(), iters=(("altmin", 40),), **TINY_LIMIT)
    path = tmp_path / "rows.jsonl"
    table = il.run(config, str(path), progress=False)
    (row,) = table["rows"]
    below = [r for n, r in zip(row["grid"], row["rate"]) if n < row["m_star"]]
    assert below and all(r == 0 for r in below), row
    assert row["rate"][-1] == 1.0 and row["n50_low"] <= row["n50"] <= row["n50_high"]
    assert row["ratio"] == pytest.approx(row["n50"] / row["m_star"]) and row["compile_seconds"] > 0

    def refuse(*args):
        raise AssertionError("a finished row was recomputed")

    monkeypatch.setattr(il, "compute_row", refuse)
    assert il.run(config, str(path), progress=False)["rows"] == table["rows"]
    assert "| sensing | altmin | " in il.markdown(table)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(il, "SMOKE", config)
    assert main(["bench", "--quick", "--sections", "information_limit", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "information_limit.json").read_text())["rows"][0]["grid"] == row["grid"]
    assert "| sensing | altmin | " in capsys.readouterr().out


def test_estimator_cost_ratios_are_per_repeat_against_the_first_estimator(monkeypatch):
    """Every ratio is an estimator's run over the first estimator's in the same repeat; runs are warm."""
    from colora_jax._src.bench import estimator_cost as ec

    config = ec.Config(cells=((4, 8),), estimators=("altmin", "altgd"), d_out=4, d_in=4, trials=2, iters=3, repeats=3)
    result = ec.run(config)
    rows = result["cells"][0]["estimators"]
    base = rows["altmin"]["run_seconds"]
    ratios = [r / b for r, b in zip(rows["altgd"]["run_seconds"], base)]
    assert rows["altmin"]["ratio_median"] == 1.0 and len(base) == 3
    assert rows["altgd"]["ratio_min"] == min(ratios) and rows["altgd"]["ratio_max"] == max(ratios)
    assert all(0 <= row["success"] <= 1 and row["compile_seconds"] > row["run_min"] for row in rows.values())
    assert len(ec.markdown({**result, "code_version": "x"}).splitlines()) == 2 + 2 + 2


def test_estimator_cost_command_line_picks_seed_cells_estimators_and_names_a_bad_one(capsys):
    """``--seed``, ``--cells K:N,...``, ``--estimators``, ``--repeats`` replace those fields of the
    configuration; a malformed one exits 2 with one line that says what to write."""
    import argparse

    from colora_jax._src.bench import estimator_cost as ec

    def configured(**given):
        args = argparse.Namespace(**{"seed": None, "cells": None, "estimators": None, "repeats": None, **given})
        return ec._configured(ec.Config(), args)

    assert configured() == ec.Config()
    config = configured(seed=3, cells="20:10,5:24", estimators="altmin,varpro-restarts", repeats=5)
    assert config == dataclasses.replace(
        ec.Config(), seed=3, cells=((20, 10), (5, 24)), estimators=("altmin", "varpro-restarts"), repeats=5
    )
    for given, message in [
        ({"cells": "20-10"}, "--cells is K:N"),
        ({"cells": "0:10"}, "--cells needs K >= 1 and N >= 1"),
        ({"estimators": "altmin,nope"}, "unknown algorithm 'nope'"),
        ({"repeats": 0}, "--repeats must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            configured(**given)
    with pytest.raises(SystemExit) as exit_:
        ec.main(["--cells", "20"])
    assert exit_.value.code == 2 and "--cells is K:N" in capsys.readouterr().err


def test_varpro_robust_reads_an_algorithm_with_its_options_replaced():
    """``benchmarks/varpro_robust.py --algorithms NAME/field=value/...``: the registered estimator with
    those fields replaced (how the docs reproduce the schedule before ba1d6b7); a bad option names the fix."""
    from benchmarks.varpro_robust import estimator

    assert estimator("varpro") == "varpro"
    assert estimator("varpro/restarts=8/restart_rule=until-exact") == cj.VarPro(restarts=8, restart_rule="until-exact")
    robust = cj.resolve(cj.FitConfig(algorithm="varpro-restarts"))
    assert estimator("varpro-restarts/restarts=8/continuation_stop=0.1") == cj.VarPro(
        restarts=8,
        restart_rule="until-exact",
        continuation_start=robust.continuation_start,
        continuation_stop=0.1,
        stall=robust.stall,
        stall_decrease=robust.stall_decrease,
    )
    with pytest.raises(ValueError, match="varpro has no option 'nope'; choose from jacobian"):
        estimator("varpro/nope=1")
    with pytest.raises(ValueError, match="write each option as field=value"):
        estimator("varpro/restarts")
    with pytest.raises(ValueError, match="restarts must be an integer"):
        estimator("varpro/restarts=x")


def test_varpro_restart_paths_replays_the_estimators_rule_with_abandonment():
    """``benchmarks/varpro_restart_paths.py --replay``: restarts in order until an exact one, at most
    ``use``; under a rule a restart whose ``phi_alpha`` at a listed ridge exceeds the factor times the
    first fit's stops there (costing the ridges it ran); the cost counts LM iterations."""
    from benchmarks.varpro_restart_paths import parse_rule, replay

    ridges, starts = 5, 4
    path = np.tile(np.linspace(10.0, 6.0, ridges), (3, starts, 1))
    iterations = np.full((3, starts), 3)
    exact = np.zeros((3, starts), bool)
    exact[0, 0] = exact[1, 2] = exact[1, 3] = True  # trial 0: the first fit; trial 1: restarts 2 and 3
    path[1, 1, 2:] *= 1.5  # trial 1, restart 1: above the first fit's path from ridge 2 on
    data = {"path": path, "iterations": iterations, "exact": exact, "recovered": exact.copy()}
    first = 3 * (ridges + 3)

    plain = replay(data, parse_rule("none"), use=3)  # trial 1 runs restarts 1, 2; trial 2 runs 1, 2, 3
    assert plain == {
        "recovered": 2,
        "trials": 3,
        "restarts_run": 5,
        "abandoned": 0,
        "restart_cost": 5 * 8,
        "first_cost": first,
    }
    ruled = replay(data, parse_rule("1:1.2,3:1.2"), use=3)  # restart 1 of trial 1 stops at ridge 3
    assert ruled == {**plain, "abandoned": 1, "restart_cost": 4 * 8 + 4}
    assert replay(data, parse_rule("0:0.5"), use=2)["restart_cost"] == 4  # every restart stops at ridge 0
    with pytest.raises(ValueError, match="STAGE:FACTOR"):
        parse_rule("15")
    with pytest.raises(ValueError, match=r"stage must lie in \[0, 5\)"):
        replay(data, parse_rule("5:1.0"), use=1)
