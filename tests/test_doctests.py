"""The examples in the main public docstrings run and print what they say."""

import doctest

import pytest

import colora_jax as cj
import colora_jax.nnx as cn


@pytest.mark.parametrize("obj", [cj.fit, cj.run_trials, cj.principal_angles, cn.apply_colora], ids=lambda o: o.__name__)
def test_docstring_example(obj):
    tests = [t for t in doctest.DocTestFinder().find(obj, obj.__name__, globs={}) if t.examples]
    assert tests, f"{obj.__name__} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
