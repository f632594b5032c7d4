"""CPU affinity: a process pinned to one core can still place its worker processes on the others."""

import os
import subprocess
import sys

import pytest

from colora_jax._src.runtime.cpu_threads import initial_cores

SCRIPT = """
import os
from colora_jax._src.runtime.cpu_threads import initial_cores, limit_cpu_threads
cores = initial_cores()
limit_cpu_threads(1)  # the parent: one core (a proof script's default)
assert sorted(os.sched_getaffinity(0)) == cores[:1], os.sched_getaffinity(0)
limit_cpu_threads(1, offset=1, cores=cores)  # what parallel_map's second worker does
print(sorted(os.sched_getaffinity(0)) == [cores[1]], initial_cores() == cores)
"""


TWO_CORES = pytest.mark.skipif(
    len(initial_cores()) < 2 or not hasattr(os, "sched_setaffinity"), reason="needs two cores"
)


def _run(script: str, threads: str | None = None) -> list[str]:
    """``script``'s printed words, run in a child given every core this process started with (a
    child inherits this process's affinity) and ``COLORA_JAX_THREADS`` = ``threads`` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "COLORA_JAX_THREADS"}
    if threads is not None:
        env["COLORA_JAX_THREADS"] = threads
    out = subprocess.run(
        ["taskset", "-c", ",".join(map(str, initial_cores())), sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@TWO_CORES
def test_a_worker_leaves_its_parents_single_core_for_another_initial_core():
    assert _run(SCRIPT) == ["True", "True"]


@TWO_CORES
@pytest.mark.parametrize("env, expected", [(None, "1"), ("2", "2")])
def test_the_environment_overrides_a_callers_default(env, expected):
    """``limit_cpu_threads(default=1)`` (the proof scripts): one core, unless ``COLORA_JAX_THREADS`` says."""
    script = (
        "import os; from colora_jax import limit_cpu_threads as f; print(f(default=1), len(os.sched_getaffinity(0)))"
    )
    assert _run(script, env) == [expected, expected]
