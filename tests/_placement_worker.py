"""Subprocess helper of test_executable_cache.py: one fresh process on fake CPU devices.

python tests/_placement_worker.py DEVICES SWEEP_PATH
    With the cache directory of ``COLORA_JAX_CACHE_DIR``: sharded trials over a DEVICES-device
    mesh (``run_trials``), the same trials on the default device, and a sweep whose cells run
    sharded; prints one JSON line of a sha256 of every result array and this process's
    executable-cache counts.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={int(sys.argv[1])}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import colora_jax as cj  # noqa: E402
from colora_jax._src.experiments.sharding import sharded_evaluator  # noqa: E402
from colora_jax._src.runtime import caches  # noqa: E402

PROBLEM = cj.ProblemConfig(model="regression", users=8, d_out=6, d_in=5, rank=2, samples=8, noise=0.01)
FIT = cj.FitConfig(rank=2, iters=8)


def digest(tree) -> str:
    """sha256 over every leaf's bytes, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def sharded(devices: int, method: str):
    """``run_cells``' evaluator: every method of the sweep runs CoLoRA sharded over ``devices``."""
    return sharded_evaluator(devices)


def main(devices: int, sweep_path: str) -> None:
    cj.enable_compile_cache()
    key = jax.random.key(5)
    out = {
        "sharded": digest(cj.run_trials(key, PROBLEM, FIT, trials=3, samples=[6, 8], fn=sharded_evaluator(devices))),
        "default": digest(cj.run_trials(key, PROBLEM, FIT, trials=3, samples=[6, 8])),
    }
    cells = [cj.Cell(dataclasses.replace(PROBLEM, samples=n), FIT, trials=3, seed=2) for n in (6, 8)]
    compute = functools.partial(cj.run_cells, fn_for=functools.partial(sharded, devices))
    result = cj.sweep(cells, compute, path=sweep_path, fresh=True, progress=False)
    out["sweep"] = hashlib.sha256(json.dumps(result.results, sort_keys=True).encode()).hexdigest()
    print(json.dumps(out | caches.executable_stats()))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
