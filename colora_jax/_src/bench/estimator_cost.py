"""What each estimator costs against AltMin on the same trials: compile and run apart, variants interleaved.

For each configuration (sensing, ``d_out x d_in``, rank ``r``, ``k`` users, ``n`` samples: by
default the issue's cells near ``1.3 m*``) and each estimator, one ``plan_trials`` program over
the same ``trials`` planted problems: its compile time (cold in this process; the hard-trial
programs of a split estimator compile inside its first run, which is not timed), then
``repeats`` warm runs, the estimators interleaved within each repeat so that the machine's load
falls on all alike. Reported per estimator: the median run time, its spread (min, max), the
process CPU time, the success rate; per repeat and estimator, the ratio of its run time to
AltMin's in that repeat (median and range): the figure the cost target is stated in.

    python -m colora_jax._src.bench.estimator_cost [--quick] [--out PATH]   # JSON, then the table
    python -m colora_jax._src.bench.estimator_cost --seed 1 --cells 20:10,5:24 --estimators altmin,varpro-restarts
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from colora_jax._src.algorithms import resolve
from colora_jax._src.experiments.trials import plan_trials
from colora_jax._src.model.config import FitConfig, ProblemConfig, degrees_of_freedom
from colora_jax._src.runtime.provenance import code_version


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the comparison (``QUICK`` shrinks it to seconds)."""

    cells: tuple[tuple[int, int], ...] = ((100, 6), (20, 10), (5, 24))  # (k, n): 1.27, 1.32, 1.30 m*
    estimators: tuple[str, ...] = ("altmin", "varpro", "varpro-restarts", "gnmr")
    d_out: int = 20
    d_in: int = 20
    rank: int = 2
    trials: int = 40
    iters: int = 100
    repeats: int = 3
    seed: int = 0
    success: float = 1e-3  # relative error of all users' W stacked


QUICK = Config(cells=((8, 8),), d_out=6, d_in=6, trials=4, iters=20, repeats=2)  # n = 1.33 m*


def measure_cell(config: Config, users: int, samples: int, progress=None) -> dict:
    """One cell: every estimator's compile time, then interleaved warm runs and their ratios to AltMin."""
    pc = ProblemConfig(
        model="sensing", users=users, d_out=config.d_out, d_in=config.d_in, rank=config.rank, samples=samples
    )
    key = jax.random.key(config.seed)
    plans, rows = {}, {}
    for name in config.estimators:
        fc = FitConfig(rank=config.rank, algorithm=name, iters=config.iters)
        start = time.perf_counter()
        plans[name] = plan_trials(pc, fc, config.trials)
        compile_seconds = time.perf_counter() - start
        evaluation, _ = plans[name].run(key)  # warm-up: a split estimator compiles its hard-trial programs here
        rel = np.asarray(evaluation.rel_error, float)
        success = float(np.mean(rel <= config.success))
        rows[name] = {"compile_seconds": compile_seconds, "run_seconds": [], "cpu_seconds": [], "success": success}
    for repeat in range(config.repeats):
        for name in config.estimators:
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(plans[name].run(key))
            rows[name]["run_seconds"].append(time.perf_counter() - wall)
            rows[name]["cpu_seconds"].append(time.process_time() - cpu)
        if progress:
            progress(f"k={users} n={samples} repeat {repeat + 1}/{config.repeats}")
    base = rows[config.estimators[0]]["run_seconds"]
    for row in rows.values():
        runs = row["run_seconds"]
        ratios = [r / b for r, b in zip(runs, base)]
        row.update(
            run_median=statistics.median(runs),
            run_min=min(runs),
            run_max=max(runs),
            ratio_median=statistics.median(ratios),
            ratio_min=min(ratios),
            ratio_max=max(ratios),
        )
    m = degrees_of_freedom("sensing", users, config.d_out, config.d_in, config.rank)
    return {"users": users, "samples": samples, "n_over_m_star": samples / m, "estimators": rows}


def run(config: Config, progress=None) -> dict:
    """Every cell, with the load average before and after."""
    out = {"config": dataclasses.asdict(config), "load_average_start": os.getloadavg(), "cells": []}
    for users, samples in config.cells:
        out["cells"].append(measure_cell(config, users, samples, progress))
    out["load_average_end"] = os.getloadavg()
    return out


def markdown(result: dict) -> str:
    """The result as a markdown table: one line per cell and estimator."""
    base = result["config"]["estimators"][0]
    head = f"| k | n (n/m*) | estimator | success | compile (s) | run median [min, max] (s) | x {base} [min, max] |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    for cell in result["cells"]:
        for name, row in cell["estimators"].items():
            rows.append(
                f"| {cell['users']} | {cell['samples']} ({cell['n_over_m_star']:.2f}) | {name} | {row['success']:.3f}"
                f" | {row['compile_seconds']:.1f}"
                f" | {row['run_median']:.2f} [{row['run_min']:.2f}, {row['run_max']:.2f}]"
                f" | {row['ratio_median']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}] |"
            )
    load = f"load average {result['load_average_start'][0]:.1f} -> {result['load_average_end'][0]:.1f}"
    return "\n".join(rows) + f"\n\n(code {result.get('code_version', '-')}, {load})"


def _configured(config: Config, args) -> Config:
    """``config`` with the command line's ``--seed``, ``--cells``, ``--estimators``, ``--repeats`` (checked)."""
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.repeats is not None:
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        changes["repeats"] = args.repeats
    if args.cells is not None:
        try:
            cells = tuple((int(k), int(n)) for k, n in (cell.split(":") for cell in args.cells.split(",")))
        except ValueError:
            raise ValueError(f"--cells is K:N[,K:N...] (users and samples per user), got {args.cells!r}") from None
        if any(k < 1 or n < 1 for k, n in cells):
            raise ValueError(f"--cells needs K >= 1 and N >= 1, got {args.cells!r}")
        changes["cells"] = cells
    if args.estimators is not None:
        names = tuple(args.estimators.split(","))
        for name in names:
            resolve(FitConfig(algorithm=name))  # a ValueError naming the registered ones
        changes["estimators"] = names
    return dataclasses.replace(config, **changes)


def main(argv=None) -> None:
    """The command line: measure, print the JSON and the table, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--seed", type=int, help=f"the trials' seed (default {Config.seed}: the official table's)")
    parser.add_argument("--cells", help="K:N,... users and samples per user (default: the issue's three cells)")
    parser.add_argument("--estimators", help="NAME,... (registered); ratios are to the first (default: altmin,...)")
    parser.add_argument("--repeats", type=int, help=f"warm runs of each (default {Config.repeats})")
    args = parser.parse_args(argv)
    try:
        config = _configured(QUICK if args.quick else Config(), args)
    except ValueError as e:
        parser.error(str(e))
    result = run(config, lambda s: print(s, file=sys.stderr, flush=True))
    result["code_version"] = code_version()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
