"""Issue 22 steps 2-3: success at 1.3 m*(k) and wall time, AltMin against VarPro variants.

    .venv/bin/python benchmarks/varpro_robust.py --model sensing --users 20 --algorithms altmin,varpro,varpro-restarts
    .venv/bin/python benchmarks/varpro_robust.py --render   # the markdown table from the JSONL

d_out = d_in = 20, r = 2, noiseless, float32, default ``FitConfig`` (as ``colora recover``), 40
trials per cell and seed (default 0; trial t: ``fold_in(key(seed), t)``, the same problems for every
algorithm). An algorithm is a registered name, or a name with some options replaced
(``varpro/restarts=8/restart_rule=until-exact``: the registered ``varpro-restarts`` before ba1d6b7).
n = round(1.3 m*(k)), raised to ceil(m*) where that is larger (regression at k = 100).
Success: stacked relative error <= 1e-3; the interval is Clopper-Pearson 95%
(``colora_jax.statistics.binomial_interval``). Compile (``plan_trials``) and run timed apart;
algorithms interleaved per cell, in one process. Appends one JSON line per (cell, algorithm)
to ``results/varpro/robust.jsonl`` with the load average and the code version.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import colora_jax as cj  # noqa: E402
from colora_jax._src.experiments.trials import plan_trials  # noqa: E402
from colora_jax._src.runtime.provenance import code_version  # noqa: E402
from colora_jax.statistics import binomial_interval  # noqa: E402

D, R, SUCCESS = 20, 2, 1e-3
OUT = "results/varpro/robust.jsonl"


def samples_at(model: str, k: int, ratio: float = 1.3) -> int:
    m = cj.degrees_of_freedom(model, k, D, D, R)
    return max(round(ratio * m), math.ceil(m - 1e-9))


def one_program(problem, key, fit_config):
    """CoLoRA's trial as a caller's function: ``run_trials`` runs it as one program (no split)."""
    return cj.fit_and_evaluate(problem, key, fit_config, method="colora")


def estimator(spec: str):
    """``FitConfig.algorithm`` for ``NAME`` (a registered algorithm: the name itself, checked) or
    ``NAME/option=value/...`` (its estimator with those fields replaced; values read as Python literals,
    else as strings), e.g. ``varpro/restarts=8/restart_rule=until-exact``."""
    name, *options = spec.split("/")
    est = cj.resolve(cj.FitConfig(algorithm=name))
    if not options:
        return name
    fields, known = {}, [f.name for f in dataclasses.fields(est)]
    for option in options:
        field, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"{spec!r}: write each option as field=value, got {option!r}")
        if field not in known:
            raise ValueError(f"{spec!r}: {name} has no option {field!r}; choose from {', '.join(known)}")
        try:
            fields[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            fields[field] = value
    return dataclasses.replace(est, **fields).check()


def cell(model: str, k: int, n: int | None, algorithm: str, trials: int, seed: int, repeats: int = 1) -> dict:
    n = samples_at(model, k) if n is None else n
    pc = cj.ProblemConfig(model=model, users=k, d_out=D, d_in=D, rank=R, samples=n)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    whole = algorithm.endswith(":whole")
    fc = cj.FitConfig(rank=R, algorithm=estimator(algorithm.removesuffix(":whole")))
    plan = plan_trials(pc, fc, trials, fn=one_program if whole else None)
    t1 = time.perf_counter()
    runs = []
    for _ in range(repeats):  # the first run also compiles a split's hard-trial programs (lazily)
        t = time.perf_counter()
        out = plan.run(jax.random.key(seed))
        runs.append(time.perf_counter() - t)
    t2 = t1 + runs[-1]
    err = np.asarray(out.evaluation.rel_error)
    ok = int(np.sum(err <= SUCCESS))
    lo, hi = binomial_interval(ok, trials)
    return dict(
        model=model,
        users=k,
        samples=n,
        m_star=cj.degrees_of_freedom(model, k, D, D, R),
        algorithm=algorithm,
        trials=trials,
        seed=seed,
        successes=ok,
        rate=ok / trials,
        interval=[float(lo), float(hi)],
        compile_s=t1 - t0,
        run_s=t2 - t1,
        runs_s=runs,
        load=[load0, os.getloadavg()[0]],
        code=code_version(),
        iterations_median=float(np.median(np.asarray(out.trace.iterations))),
    )


def render(path: str) -> str:
    rows = [json.loads(line) for line in open(path)]
    lines = [
        "| model | k | n (n/m*) | algorithm | success [95% CI] | compile + run(s) (s) | load | code |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['users']} | {r['samples']} ({r['samples'] / r['m_star']:.2f}) | {r['algorithm']} |"
            f" {r['successes']}/{r['trials']} = {r['rate']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] |"
            f" {r['compile_s']:.1f} + {' / '.join(f'{t:.1f}' for t in r.get('runs_s', [r['run_s']]))} |"
            f" {r['load'][0]:.1f}-{r['load'][1]:.1f} | {r['code']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sensing")
    ap.add_argument("--users", default="20")
    ap.add_argument("--samples", type=int, default=None, help="n (default round(1.3 m*))")
    ap.add_argument(
        "--algorithms",
        default="altmin,varpro,varpro-restarts",
        help="NAME, NAME/field=value/... (its options replaced) or either with :whole (one program, no split)",
    )
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", default="0", help="one seed or several, comma-separated")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each plan (the last is reported as run_s)")
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    if args.render:
        print(render(args.out))
        return
    algorithms = args.algorithms.split(",")
    try:
        seeds = [int(seed) for seed in args.seed.split(",")]
        for algorithm in algorithms:
            estimator(algorithm.removesuffix(":whole"))
    except ValueError as err:
        ap.error(str(err))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    for k in map(int, args.users.split(",")):
        for algorithm in algorithms:
            for seed in seeds:
                rec = cell(args.model, k, args.samples, algorithm, args.trials, seed, args.repeats)
                print(json.dumps(rec), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
