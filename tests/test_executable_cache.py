"""Trial programs (generator and fit) stored whole (``executable_cache``): the key separates what
changes the program, and a loaded program computes what the compiled one did, bit for bit."""

import jax
import numpy as np
import pytest

import colora_jax as cj
from colora_jax._src import executable_cache, trials

PC = cj.ProblemConfig(model="regression", users=4, d_out=5, d_in=6, rank=2, samples=12)
FC = cj.FitConfig(rank=2, iters=10)


@pytest.fixture
def cache_in(tmp_path):
    previous = cj.enable_compile_cache(tmp_path)
    yield tmp_path
    cj.enable_compile_cache(previous, disable=previous is None)


def test_the_key_separates_configurations_methods_precision_and_the_cache_switch(cache_in):
    key = lambda pc=PC, method="colora": executable_cache.entry_path("trials", (pc, FC, 3, method))
    assert key().parent == cache_in / executable_cache.SUBDIR
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
    assert executable_cache.entry_path("trials", (object(),)) is None  # printed with an address: not cached
    cj.enable_compile_cache(disable=True)
    assert key() is None


def test_a_loaded_program_equals_the_compiled_one_and_a_caller_function_is_not_stored(cache_in):
    keys = trials.trial_keys(jax.random.key(3), 0, 3)
    args = (keys, np.int32(12), np.float32(0.01))
    trials._compiled_trials.cache_clear()
    trials._compiled_generator.cache_clear()
    before = executable_cache.stats()
    compiled = trials.compiled_trials(PC, FC, 3)
    trials._compiled_trials.cache_clear()  # a new process would start here
    trials._compiled_generator.cache_clear()
    loaded = trials.compiled_trials(PC, FC, 3)
    after = executable_cache.stats()
    assert after["executables_saved"] - before["executables_saved"] == 2  # the generator and the fit
    assert after["executables_loaded"] - before["executables_loaded"] == 2
    a, b = jax.device_get(compiled(*args)), jax.device_get(loaded(*args))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    custom = lambda problem, key, fit_config: trials.fit_and_evaluate(problem, key, fit_config)
    assert trials.compiled_trials(PC, FC, 3, fn=custom).generate is loaded.generate  # one generator per problem
    assert executable_cache.stats()["executables_saved"] == after["executables_saved"]


def test_eviction_deletes_the_least_recently_used_entries_first(tmp_path):
    import os

    for i, name in enumerate(["old", "mid", "new"]):
        path = tmp_path / f"trials-{name}.pkl"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not an entry: never counted or deleted
    assert executable_cache.evict(tmp_path, max_bytes=250) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "trials-mid.pkl", "trials-new.pkl"]
    assert executable_cache.evict(tmp_path, max_bytes=250) == 0
