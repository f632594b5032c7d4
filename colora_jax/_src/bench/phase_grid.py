"""``python -m colora_jax._src.bench.phase_grid``: the issue-4 phase diagram as one timed run.

The grid of the committed phase diagram before its statistics were reworked: sensing and
regression, d_out = d_in = 20, r = 2, k in (1, 5, 20, 100) with 12 sample sizes each from
0.75 to 4 times the degrees-of-freedom count m*(k) (regression: r + (d_in - r)/k), 50 trials
per cell, AltMin with 50 iterations, plus the local-LoRA cells (5 users, each alone, on the
k = 1 grid): 120 cells. Every (model, k) row is one ``run_trials`` call with a sample grid, so
one compiled program each. Prints one JSON line: wall seconds, the compile cache's counts, and
each row's success rates (a check that the run did the work).
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from colora_jax._src.compile_cache import enable_compile_cache, stats
from colora_jax._src.config import FitConfig, ProblemConfig, degrees_of_freedom, min_samples
from colora_jax._src.trials import run_trials

USERS, D, RANK, POINTS, TRIALS = (1, 5, 20, 100), 20, 2, 12, 50
SUCCESS = 1e-3


def dof(model: str, k: int) -> float:
    return degrees_of_freedom(model, k, D, D, RANK)


def grid(model: str, k: int) -> list[int]:
    """12 distinct integers near ``m*(k) geomspace(0.75, 4)``, all at least the personal solve's minimum."""
    out: list[int] = []
    for x in dof(model, k) * np.geomspace(0.75, 4.0, POINTS):
        out.append(max(int(round(x)), min_samples(model, RANK, "full"), out[-1] + 1 if out else 0))
    return out


def main() -> dict:
    enable_compile_cache()
    fc = FitConfig(rank=RANK, iters=50, tol=1e-7)
    start = time.perf_counter()
    rows = {}
    for model in ("sensing", "regression"):
        for users, method, ref in [(k, "colora", k) for k in USERS] + [(5, "local", 1)]:
            ns = grid(model, ref)
            pc = ProblemConfig(model=model, users=users, d_out=D, d_in=D, rank=RANK, samples=max(ns))
            out = run_trials(jax.random.key(0), pc, fc, TRIALS, method=method, samples=ns)
            errors = out.evaluation.per_user_rel_error if method == "local" else out.evaluation.rel_error
            rate = np.mean(errors <= SUCCESS, axis=tuple(a for a in range(errors.ndim) if a != 1))
            rows[f"{model}/{method}/k={users}"] = {"samples": ns, "success": [round(float(p), 3) for p in rate]}
    return {
        "cells": sum(len(r["samples"]) for r in rows.values()),
        "seconds": time.perf_counter() - start,
        "compile_cache": stats(),
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
