"""Trial programs (generator and fit) stored whole (``caches.load_or_compile``): the key separates what
changes the program, and a loaded program computes what the compiled one did, bit for bit."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import colora_jax as cj
from colora_jax._src.experiments import trials
from colora_jax._src.runtime import caches

PC = cj.ProblemConfig(model="regression", users=4, d_out=5, d_in=6, rank=2, samples=12)
FC = cj.FitConfig(rank=2, iters=10)


@pytest.fixture
def cache_in(tmp_path):
    previous = cj.enable_compile_cache(tmp_path)
    yield tmp_path
    cj.enable_compile_cache(previous, disable=previous is None)


def test_the_key_separates_configurations_methods_precision_and_the_cache_switch(cache_in):
    key = lambda pc=PC, method="colora": caches.entry_path("trials", (pc, FC, 3, method))
    assert key().parent == cache_in / caches.SUBDIR
    assert key() == key()  # stable
    assert key(pc=PC.__class__(**{**PC.__dict__, "samples": 13})) != key()
    assert key(method="local") != key()
    single = key()
    with jax.enable_x64(True):
        assert key() != single
    disabled = jax.config.read("jax_disable_most_optimizations")  # an XLA compile option, not a trace-time one
    jax.config.update("jax_disable_most_optimizations", not disabled)
    try:
        assert key() != single
    finally:
        jax.config.update("jax_disable_most_optimizations", disabled)
    assert caches.entry_path("trials", (object(),)) is None  # printed with an address: not cached
    cj.enable_compile_cache(disable=True)
    assert key() is None


def test_a_loaded_program_equals_the_compiled_one_and_a_caller_function_is_not_stored(cache_in):
    keys = trials.trial_keys(jax.random.key(3), 0, 3)
    args = (keys, np.int32(12), np.float32(0.01))
    trials._compiled_trials.cache_clear()
    trials._compiled_generator.cache_clear()
    before = caches.executable_stats()
    compiled = trials.compiled_trials(PC, FC, 3)
    trials._compiled_trials.cache_clear()  # a new process would start here
    trials._compiled_generator.cache_clear()
    loaded = trials.compiled_trials(PC, FC, 3)
    after = caches.executable_stats()
    assert after["executables_saved"] - before["executables_saved"] == 2  # the generator and the fit
    assert after["executables_loaded"] - before["executables_loaded"] == 2
    a, b = jax.device_get(compiled(*args)), jax.device_get(loaded(*args))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    custom = lambda problem, key, fit_config: trials.fit_and_evaluate(problem, key, fit_config)
    assert trials.compiled_trials(PC, FC, 3, fn=custom).generate is loaded.generate  # one generator per problem
    assert caches.executable_stats()["executables_saved"] == after["executables_saved"]


def test_eviction_deletes_the_least_recently_used_entries_first(tmp_path):
    import os

    for i, name in enumerate(["old", "mid", "new"]):
        path = tmp_path / f"trials-{name}.pkl"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not an entry: never counted or deleted
    assert caches.evict(tmp_path, max_bytes=250) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "trials-mid.pkl", "trials-new.pkl"]
    assert caches.evict(tmp_path, max_bytes=250) == 0


PLACEMENT_WORKER = pathlib.Path(__file__).with_name("_placement_worker.py")


def _fresh_process(args: list[str], cache: pathlib.Path, devices: int = 4) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLORA_JAX_CACHE_DIR=str(cache))
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_a_warm_run_on_several_devices_equals_the_cold_one_bit_for_bit(tmp_path):
    # Stored programs are bound to the devices they were compiled for: a one-device program
    # loaded in a process that sees 4 devices used to be placed on all 4 and failed at its
    # first call ("Expected args ... to have 4 shards, got: [1, 1]"), and so did every warm
    # `colora recover --devices N`. Sharded trial programs are stored under their mesh.
    worker = [str(PLACEMENT_WORKER), "4", str(tmp_path / "sweep.jsonl")]
    cold = json.loads(_fresh_process(worker, tmp_path).stdout.splitlines()[-1])
    warm = json.loads(_fresh_process(worker, tmp_path).stdout.splitlines()[-1])
    assert cold["executables_saved"] > 0 and cold["executables_loaded"] == 0
    assert warm["executables_loaded"] == cold["executables_saved"] and warm["executables_saved"] == 0
    for part in ("sharded", "default", "sweep"):  # run_trials over a mesh, on one device, a sweep over a mesh
        assert warm[part] == cold[part], part
    recover = ["-m", "colora_jax.cli", "recover", "--model", "regression", "--users", "8", "--d-out", "6"]
    recover += ["--d-in", "5", "--rank", "2", "--samples", "6", "--trials", "3", "--seed", "5", "--json"]
    recover += ["--devices", "4"]
    first, second = (json.loads(_fresh_process(recover, tmp_path).stdout) for _ in range(2))
    assert second["compile_cache"]["executables_loaded"] > 0
    for field in ("rel_errors", "subspace_distance_U", "subspace_distance_V", "test_mse", "iterations"):
        assert first[field] == second[field], field


def test_the_key_separates_placements(cache_in):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("users",))
    default = caches.entry_path("trials", (PC, FC, 3, "colora"))
    assert caches.entry_path("trials", (PC, FC, 3, "colora"), caches.default_placement()) == default
    meshed = caches.entry_path("trials", (PC, FC, 3, "colora"), caches.mesh_placement(mesh))
    other_axis = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    assert meshed != default
    assert caches.entry_path("trials", (PC, FC, 3, "colora"), caches.mesh_placement(other_axis)) != meshed


def test_a_damaged_entry_fails_its_digest_and_is_compiled_afresh(cache_in, capsys, monkeypatch):
    keys = trials.trial_keys(jax.random.key(4), 0, 3)
    args = (keys, np.int32(12), np.float32(0.01))
    trials._compiled_trials.cache_clear()
    trials._compiled_generator.cache_clear()
    expected = jax.device_get(trials.compiled_trials(PC, FC, 3)(*args))
    entries = sorted((cache_in / caches.SUBDIR).glob("*.pkl"))
    assert len(entries) == 2
    for entry in entries:  # one flipped byte in the middle of the payload; the file still unpickles as bytes
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    monkeypatch.setitem(caches._executable_state, "warned", False)
    before = caches.executable_stats()
    trials._compiled_trials.cache_clear()
    trials._compiled_generator.cache_clear()
    again = jax.device_get(trials.compiled_trials(PC, FC, 3)(*args))
    after = caches.executable_stats()
    assert after["executables_loaded"] == before["executables_loaded"]  # neither damaged entry was run
    assert after["executables_saved"] - before["executables_saved"] == 2  # both compiled and stored afresh
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "sha256 digest" in warning[0] and "compiling it afresh" in warning[0]
    jax.tree.map(np.testing.assert_array_equal, expected, again)
