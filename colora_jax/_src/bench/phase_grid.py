"""``python -m colora_jax._src.bench.phase_grid``: the issue-4 phase diagram as one timed run.

The grid of the committed phase diagram before its statistics were reworked: sensing and
regression, d_out = d_in = 20, r = 2, k in (1, 5, 20, 100) with 12 sample sizes each from
0.75 to 4 times the degrees-of-freedom count m*(k) (regression: r + (d_in - r)/k), 50 trials
per cell, AltMin with 50 iterations, plus the local-LoRA cells (5 users, each alone, on the
k = 1 grid): 120 cells. Every (model, k) row is one ``run_trials`` call with a sample grid, so
one compiled program each; the rows run in one process per core (``workers.parallel_map``,
``python -m colora_jax._src.bench.phase_grid [WORKERS]``). Prints one JSON line: wall seconds,
the number of workers, the compile cache counts summed over the rows, and each row's success
rates (a check that the run did the work).
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from colora_jax._src.experiments.trials import run_trials
from colora_jax._src.model.config import FitConfig, ProblemConfig, degrees_of_freedom, min_samples
from colora_jax._src.runtime.caches import enable_compile_cache, stats
from colora_jax._src.runtime.cpu_threads import available_cores
from colora_jax._src.runtime.workers import parallel_map

USERS, D, RANK, POINTS, TRIALS = (1, 5, 20, 100), 20, 2, 12, 50
ROWS = [(k, "colora", k) for k in USERS] + [(5, "local", 1)]  # (users, method, the k whose grid it uses)
SUCCESS = 1e-3


def dof(model: str, k: int) -> float:
    """m*(k) at the grid's dimensions and rank."""
    return degrees_of_freedom(model, k, D, D, RANK)


def grid(model: str, k: int) -> list[int]:
    """12 distinct integers near ``m*(k) geomspace(0.75, 4)``, all at least the personal solve's minimum."""
    out: list[int] = []
    for x in dof(model, k) * np.geomspace(0.75, 4.0, POINTS):
        out.append(max(int(round(x)), min_samples(model, RANK, "full"), out[-1] + 1 if out else 0))
    return out


def _counts() -> dict:
    """This process's compile-cache counters (numbers only)."""
    return {k: v for k, v in stats().items() if isinstance(v, (int, float))}


def row(spec: tuple) -> tuple[str, dict, dict]:
    """One (model, method, k) row: every sample size of its grid, one ``run_trials`` call.

    Also returns the compile-cache counts it added (so that rows computed in workers are counted
    too).
    """
    before = _counts()
    model, users, method, ref = spec
    ns = grid(model, ref)
    pc = ProblemConfig(model=model, users=users, d_out=D, d_in=D, rank=RANK, samples=max(ns))
    out = run_trials(jax.random.key(0), pc, FitConfig(rank=RANK, iters=50, tol=1e-7), TRIALS, method=method, samples=ns)
    errors = out.evaluation.per_user_rel_error if method == "local" else out.evaluation.rel_error
    rate = np.mean(errors <= SUCCESS, axis=tuple(a for a in range(errors.ndim) if a != 1))
    added = {k: v - before.get(k, 0) for k, v in _counts().items()}
    return f"{model}/{method}/k={users}", {"samples": ns, "success": [round(float(p), 3) for p in rate]}, added


def main(workers: int | None = None) -> dict:
    """The whole grid; rows in ``workers`` processes of one core each (default: one per core)."""
    enable_compile_cache()
    workers = len(available_cores()) if workers is None else workers
    specs = [(m, k, method, ref) for m in ("sensing", "regression") for k, method, ref in ROWS]
    # the most expensive rows first (sensing, then by generated data per trial), so the workers finish together
    cost = lambda spec: (spec[0] == "sensing", spec[1] * max(grid(spec[0], spec[3])))
    specs.sort(key=cost, reverse=True)
    start = time.perf_counter()
    rows, counts = {}, {}
    for _, (name, result, added) in parallel_map(row, specs, workers):
        rows[name] = result
        for k, v in added.items():
            counts[k] = counts.get(k, 0) + v
    return {
        "cells": sum(len(r["samples"]) for r in rows.values()),
        "seconds": time.perf_counter() - start,
        "workers": workers,
        "compile_cache": counts,  # summed over the rows, whichever process computed them
        "rows": {name: rows[name] for name in sorted(rows)},
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else None)))
