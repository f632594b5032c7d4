"""`colora recover`: the JSON contract and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from colora_jax.cli import main

SMALL = ["recover", "--users", "6", "--d-out", "6", "--d-in", "5", "--samples", "20", "--trials", "3", "--iters", "40"]


def test_json_output_has_the_documented_fields(capsys):
    assert main(SMALL + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for field in (
        "config",
        "success_rate",
        "rel_errors",
        "subspace_distance_U",
        "subspace_distance_V",
        "iterations",
        "seconds",
    ):
        assert field in out
    assert len(out["rel_errors"]) == 3 and len(out["subspace_distance_U"]) == 3
    assert out["config"]["problem"]["users"] == 6 and out["config"]["seed"] == 0
    assert out["success_rate"] == 1.0  # noiseless, plenty of samples: every trial recovers
    assert all(e <= 1e-3 for e in out["rel_errors"])


def test_threshold_flag_changes_success(capsys):
    assert main(SMALL + ["--json", "--noise", "0.1", "--success-threshold", "1e-9"]) == 0
    assert json.loads(capsys.readouterr().out)["success_rate"] == 0.0


def test_readable_summary(capsys):
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "recovered" in out and "trials" in out


@pytest.mark.slow
def test_workers_give_the_trials_of_one_process(capsys):
    """``--workers 2``: the same trials (errors, distances, iterations), computed in two processes
    (two trials each)."""
    results = []
    for workers in ("1", "2"):
        assert main(SMALL + ["--trials", "4", "--samples", "10", "20", "--json", "--workers", workers]) == 0
        results.append(json.loads(capsys.readouterr().out))
    one, two = results
    assert two["config"]["workers"] == 2 and one["config"]["workers"] == 1
    assert two["by_samples"] == one["by_samples"]
    assert main(SMALL + ["--trials", "4", "--workers", "2"]) == 0
    assert "in 2 worker processes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["recover", "--rank", "30"], "rank 30 is larger"),
        (["recover", "--samples", "3"], "samples >= 4"),
        (["recover", "--model", "tensor"], "invalid choice"),
        (["recover", "--users", "0"], "positive integer"),
        (["recover", "--workers", "0"], "positive integer"),
        (["recover", "--noise", "nan"], "finite number"),
        (["recover", "--algorithm", "sgd"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "colora_jax.cli", "recover", "--rank", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("colora recover: error:") and "Traceback" not in proc.stderr


def test_several_sample_sizes_fit_prefixes_of_the_same_trials(capsys):
    """With noise the errors are set by the data, not by rounding: the n = 20 fits of a two-size
    run equal a run of n = 20 alone (same trials, same first 20 samples)."""
    argv = SMALL[:7] + ["--samples", "8", "20", "--trials", "3", "--iters", "40", "--noise", "0.05", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["samples"] for row in out["by_samples"]] == [8, 20]
    assert max(out["by_samples"][1]["rel_errors"]) < 0.1
    assert main(SMALL[:7] + ["--samples", "20", "--trials", "3", "--iters", "40", "--noise", "0.05", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["rel_errors"] == pytest.approx(out["by_samples"][1]["rel_errors"], rel=1e-3)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["recover", "--success-threshold", "-1"], "positive number"),
        (["recover", "--test-samples", "-3"], "non-negative integer"),
        (
            ["recover", "--users", "100000000", "--d-out", "1000", "--d-in", "1000", "--trials", "1"],
            "use fewer users or samples",
        ),
    ],
)
def test_impossible_runs_are_refused_before_anything_runs(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def _recover_in_a_new_process(cache_dir, *extra):
    env = {**__import__("os").environ, "COLORA_JAX_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "colora_jax.cli", *SMALL, "--json", *extra], capture_output=True, text=True, env=env
    )
    return proc


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory):
    """A run into an empty cache and a second identical one, shared by the tests of this group
    (the cache's keys depend on its path, so it cannot be copied); a test may damage the cache
    only after both ran."""
    cache = tmp_path_factory.mktemp("recover") / "cache"
    first = _recover_in_a_new_process(cache)
    second = _recover_in_a_new_process(cache)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    return cache, first, second


@pytest.mark.xdist_group("recover_cold_and_warm")  # one worker: the two runs are shared
def test_a_second_identical_run_loads_every_program_from_the_compile_cache(cold_and_warm):
    """The trial program is stored whole (neither traced nor looked up again), the small ones in
    JAX's cache: a second run compiles nothing and gives the same numbers bit for bit."""
    cache, first, second = cold_and_warm
    a, b = json.loads(first.stdout)["compile_cache"], json.loads(second.stdout)["compile_cache"]
    assert a["misses"] > 0 and a["dir"] == str(cache)
    assert a["executables_saved"] == 2 and a["executables_loaded"] == 0, a  # the generator and the fit
    assert b["executables_loaded"] == 2 and b["executables_saved"] == 0, b
    assert b["misses"] == 0 and b["hits"] == a["requests"], (a, b)  # the trial program never goes to JAX's
    assert json.loads(first.stdout)["rel_errors"] == json.loads(second.stdout)["rel_errors"]


def test_a_program_in_jax_cache_is_stored_from_a_fresh_compile(tmp_path):
    """An executable JAX loads from its own cache serializes without its kernels (jaxlib 0.9.2):
    with the trial program in JAX's cache and no stored copy, the copy stored must still run in
    the next process."""
    cache = tmp_path / "cache"
    script = (  # the same run with nothing stored whole: JAX's cache gets the trial program too
        "import sys; from colora_jax._src.runtime import caches;"
        " caches.entry_path = lambda *args: None;"
        " from colora_jax.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    seeded = subprocess.run(
        [sys.executable, "-c", script, *SMALL, "--json", "--compile-cache", str(cache)], capture_output=True, text=True
    )
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    assert json.loads(seeded.stdout)["compile_cache"]["executables_saved"] == 0
    stores = _recover_in_a_new_process(cache)  # JAX's cache has the trial program; none is stored yet
    loads = _recover_in_a_new_process(cache)
    assert stores.returncode == 0 and loads.returncode == 0, loads.stderr[-2000:]
    assert json.loads(stores.stdout)["compile_cache"]["executables_saved"] == 2
    assert json.loads(loads.stdout)["compile_cache"]["executables_loaded"] == 2
    assert json.loads(loads.stdout)["rel_errors"] == json.loads(stores.stdout)["rel_errors"]


def test_an_unusable_cache_directory_degrades_to_compiling_with_one_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _recover_in_a_new_process(blocker / "cache")
    assert proc.returncode == 0 and json.loads(proc.stdout)["compile_cache"]["dir"] is None
    assert proc.stderr.count("compile cache") == 1 and "Traceback" not in proc.stderr


@pytest.mark.xdist_group("recover_cold_and_warm")
def test_corrupt_cache_entries_are_recompiled_not_fatal(cold_and_warm):
    """Every entry garbled, JAX's and the stored trial program alike: one warning line each, the
    programs compiled afresh, the same numbers."""
    cache, first, _ = cold_and_warm
    entries = [entry for entry in cache.rglob("*") if entry.is_file() and not entry.name.startswith(".")]
    assert any(entry.parent.name == "colora_executables" for entry in entries)
    for entry in entries:
        entry.write_bytes(b"\x00garbage" * 10)
    proc = _recover_in_a_new_process(cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["rel_errors"] == json.loads(first.stdout)["rel_errors"]
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 2, proc.stderr
    assert proc.stderr.count("could not be loaded") == 1, proc.stderr
