"""Shared test settings.

Core tests run under strict dtype promotion and raising rank promotion (the numerics must
not rely on implicit casts or broadcasting), via the ``strict_numerics`` fixture. Float64
checks use ``jax.enable_x64(True)`` locally, so other modules keep JAX's defaults.
"""

import os
from importlib.metadata import version

# Before jax is imported: where compiled programs are cached for the test suite, and XLA's
# spurious log lines on every executable loaded from that cache kept quiet (README, Known issues).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite is compile-bound (hundreds of small programs, each run a few times): XLA's optimization
# passes and LLVM's -O2 cost more than they save, so they are off (about 30% less wall time for
# the whole suite; the numerical claims hold either way, and the demo, benchmarks and proofs run
# optimized). JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite with them on. Subprocesses inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Likewise XLA:CPU's older (non-"fusion emitter") code generator compiles these programs 1.5-2.5x
# faster (a VarPro fit: 1.2 s -> 0.5 s) with the same run time. Its numbers agree to rounding, not
# bit for bit, so the library and its entry points keep XLA's default; tested on jaxlib 0.9 only
# (an unknown flag in XLA_FLAGS is fatal), and left alone when the caller set it.
_FLAG = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "") and version("jaxlib").startswith("0.9."):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

os.environ.setdefault("TQDM_DISABLE", "1")

import colora_jax  # noqa: E402

# pytest-xdist workers run side by side: each on a core of its own, so that XLA's threads of one
# worker never wait on a core the other holds (several times slower on a busy 2-core machine)
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):
    colora_jax.limit_cpu_threads(1, offset=int(_worker[2:]))
colora_jax.enable_compile_cache()  # the user's cache dir, or $COLORA_JAX_CACHE_DIR (off: "off")

settings.register_profile("colora", deadline=None, max_examples=8, derandomize=False, print_blob=True)
settings.load_profile("colora")


@pytest.fixture
def strict_numerics():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def tolerance(dtype) -> float:
    """A tolerance tied to the precision in use: sqrt(eps) (float32 ~ 3e-4, float64 ~ 1.5e-8)."""
    import numpy as np

    return float(np.sqrt(np.finfo(dtype).eps))


# `make test` hands each file to one worker (`--dist loadfile`): a file's tests share their traced
# and compiled programs in that worker's memory instead of both workers tracing them (about a
# fifth of the suite's worker time). The files that take longest start first, so that the small
# ones fill in at the end and the two workers finish together (`--no-loadscope-reorder` keeps this
# order). A stale list costs balance, never a result. Their xdist_group marks keep a file's
# subprocess-sharing tests on one worker under `--dist loadgroup` too.
LONGEST_FIRST = (
    "test_varpro.py",
    "test_proofs_smoke.py",
    "test_estimators.py",
    "test_cli_recover.py",
    "test_reliability_runtime.py",
    "test_bench_accelerator.py",
    "test_baselines.py",
    "test_bench.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
