"""The registered ``varpro`` in trial programs: split in two stages against one program, same trials.

``run_trials`` splits ``varpro`` (``Estimator.stages``: the continued fit on every trial, the plain
fit only where it is not exact); a caller's per-problem function runs it as one program. For each
cell (sensing, d = 20, r = 2, 40 trials, near 1.3 m*) both are compiled, run once (the split's
hard-trial programs compile there), then run ``--repeats`` times interleaved; printed: the run
times, the ratio split / one program per repeat, and whether the same trials succeed.

    python -m benchmarks.varpro_split [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

import colora_jax as cj
from colora_jax._src.experiments.trials import plan_trials

CELLS = ((100, 6), (20, 10), (5, 24))  # (k, n): 1.27, 1.32, 1.30 m*


def one_program(problem, key, fit_config):
    """A caller's per-problem function: ``run_trials`` runs it as one program (no split)."""
    return cj.fit_and_evaluate(problem, key, fit_config, method="colora")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for k, n in CELLS:
        pc = cj.ProblemConfig(model="sensing", users=k, d_out=20, d_in=20, rank=2, samples=n)
        fc = cj.FitConfig(rank=2, algorithm="varpro", iters=100)
        plans = {"split": plan_trials(pc, fc, 40), "one_program": plan_trials(pc, fc, 40, fn=one_program)}
        results = {name: plan.run(jax.random.key(0))[0] for name, plan in plans.items()}
        times = {name: [] for name in plans}
        for _ in range(args.repeats):
            for name, plan in plans.items():
                start = time.perf_counter()
                jax.block_until_ready(plan.run(jax.random.key(0)))
                times[name].append(time.perf_counter() - start)
        ok = {name: np.asarray(r.rel_error) <= 1e-3 for name, r in results.items()}
        ratios = [a / b for a, b in zip(times["split"], times["one_program"])]
        record = {"users": k, "samples": n, "seconds": times, "ratio": ratios, "load_average": os.getloadavg()}
        record["same_successes"] = bool(np.all(ok["split"] == ok["one_program"]))
        record["code_version"] = cj.code_version()
        print(json.dumps(record))
        same = record["same_successes"]
        print(f"k={k} n={n}: split / one program {min(ratios):.2f}-{max(ratios):.2f}, same successes {same}")


if __name__ == "__main__":
    main()
