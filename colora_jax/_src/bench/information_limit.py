"""The information-limit table: for every estimator, where its success rate crosses 1/2, in units of m*.

For each measurement model, estimator (a name in ``registry.ALGORITHMS``) and number of users
``k``: ``trials`` planted noiseless problems (sensing or regression, ``d_out x d_in``, rank
``r``), fitted at every sample size of a grid around the degrees-of-freedom count ``m*(k)``. A
trial succeeds when the relative error of all users' ``W`` stacked is at most ``success``.
``n50`` is where the success rate crosses one half (``statistics.rate_threshold``: the smallest
grid ``n`` whose observed rate is at least 1/2, with the Clopper-Pearson interval ``[low,
high]``); the table reports ``n50 / m*`` and its interval, and the run time per trial (the
compiled program's run, warm, apart from its compilation).

Each row (model, estimator, k) is one compiled ``run_trials`` program over the whole sample grid
(the first ``n`` samples of the same trials), appended to a JSON-lines file as soon as it is done:
an interrupted run resumes from the rows already there.

    python -m colora_jax._src.bench.information_limit [--smoke] [--results PATH] [--out PATH] [--markdown] [--finished]

``colora bench --sections information_limit`` runs the smoke configuration (``--quick``) or the
full one.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import sys
import time

import jax
import numpy as np

from colora_jax import statistics
from colora_jax._src.experiments.sweep import append_result, read_results
from colora_jax._src.experiments.trials import plan_trials
from colora_jax._src.model.config import FitConfig, ProblemConfig, degrees_of_freedom, min_samples
from colora_jax._src.runtime.provenance import code_version
from colora_jax._src.runtime.serialization import to_jsonable


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the table (``SMOKE`` shrinks sizes, trials and the estimator list)."""

    models: tuple[str, ...] = ("sensing", "regression")
    estimators: tuple[str, ...] = ("altmin", "varpro", "gnmr", "scaledgd", "altgd", "adam")
    users: tuple[int, ...] = (1, 5, 20, 100)  # k
    d_out: int = 20
    d_in: int = 20
    rank: int = 2
    trials: int = 40
    grid_lo: float = 0.9  # smallest n / m* (raised to the personal solve's minimum)
    grid_hi: float = 2.6  # largest n / m*
    grid_ratio: float = 1.08  # consecutive grid points differ by at least this factor (or one sample)
    # iteration budgets: the exact and second-order methods converge in tens of iterations; the
    # first-order ones need hundreds (the budget is part of what the row measures)
    iters: tuple[tuple[str, int], ...] = (
        ("altmin", 100),
        ("varpro", 100),
        ("gnmr", 100),
        ("scaledgd", 1000),
        ("altgd", 1000),
        ("adam", 2000),
    )
    tol: float = 1e-7
    success: float = 1e-3  # relative Frobenius error of every user's W stacked
    seed: int = 0
    level: float = 0.95


SMOKE = Config(
    estimators=("altmin", "varpro"),
    users=(1, 4),
    d_out=5,
    d_in=5,
    trials=4,
    grid_hi=1.8,
    iters=(("altmin", 15), ("varpro", 15)),
)


def m_star(config: Config, model: str, k: int) -> float:
    """The degrees-of-freedom count ``m*(k)`` of the table's sizes."""
    return degrees_of_freedom(model, k, config.d_out, config.d_in, config.rank)


def sample_grid(config: Config, model: str, k: int) -> list[int]:
    """Integers from ``grid_lo m*`` to ``grid_hi m*``, at least the personal solve's minimum."""
    m = m_star(config, model, k)
    return statistics.geometric_integers(
        math.floor(config.grid_lo * m),
        config.grid_hi * m,
        config.grid_ratio,
        minimum=min_samples(model, config.rank, "full"),
    )


def row_key(config: Config, model: str, estimator: str, k: int) -> str:
    """What determines a row's numbers (a changed configuration never reuses a row)."""
    fields = dataclasses.asdict(config)
    fields.update(models=model, estimators=estimator, users=k, iters=dict(config.iters).get(estimator))
    return json.dumps(fields, sort_keys=True)


def compute_row(config: Config, model: str, estimator: str, k: int) -> dict:
    """One row: success rates over the grid, the threshold and the timings."""
    ns = sample_grid(config, model, k)
    pc = ProblemConfig(model=model, users=k, d_out=config.d_out, d_in=config.d_in, rank=config.rank, samples=max(ns))
    fc = FitConfig(rank=config.rank, algorithm=estimator, iters=dict(config.iters)[estimator], tol=config.tol)
    start = time.perf_counter()
    plan = plan_trials(pc, fc, config.trials, samples=ns)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluation, _ = plan.run(jax.random.key(config.seed))
    run_seconds = time.perf_counter() - start
    rel = np.asarray(evaluation.rel_error, float)  # (trials, len(ns))
    ok = rel <= config.success  # NaN (a diverged fit) is a failure
    th = statistics.rate_threshold(ns, ok, config.level)
    m = m_star(config, model, k)
    return {
        "model": model,
        "estimator": estimator,
        "users": k,
        "m_star": m,
        "grid": ns,
        "rate": th.rate.tolist(),
        "n50": th.n50,
        "n50_low": th.low,
        "n50_high": th.high,
        "ratio": th.n50 / m,
        "ratio_low": th.low / m,
        "ratio_high": th.high / m,
        "integer_floor": statistics.integer_floor(m),
        "nonmonotone": th.nonmonotone,
        "diverged": int(np.sum(~np.isfinite(rel))),
        "compile_seconds": round(compile_seconds, 3),
        "run_seconds": round(run_seconds, 3),
        "seconds_per_trial": run_seconds / (config.trials * len(ns)),
    }


def run(config: Config, results: str | None = None, progress: bool = True, compute: bool = True) -> dict:
    """Every row of the table; rows already in ``results`` (JSON lines) are read back, not recomputed.

    The file is a sweep results file (``sweep.read_results`` / ``append_result``): torn last lines
    are skipped and repaired, each row is forced to disk as it finishes, infinities are written as
    null (``to_jsonable``). ``compute=False`` only reads: the table then holds the finished rows and
    says how many of all it has (``partial``).
    """
    done = dict(read_results(results)) if results else {}
    rows = []
    # estimator by estimator (both models), so an interrupted table has whole rows of the cheap ones
    specs = [(m, e, k) for e in config.estimators for m in config.models for k in config.users]
    for i, (model, estimator, k) in enumerate(specs):
        key = row_key(config, model, estimator, k)
        if key not in done and not compute:
            continue
        if key not in done:
            if progress:
                print(f"[{i + 1}/{len(specs)}] {model} {estimator} k={k}", file=sys.stderr, flush=True)
            row = to_jsonable(compute_row(config, model, estimator, k))
            done[key] = {"key": key, "result": row, "code_version": code_version()}
            if results:
                os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
                append_result(results, done[key])
        rows.append({**done[key]["result"], "code_version": done[key].get("code_version")})
    table = {"config": dataclasses.asdict(config), "rows": rows}
    if len(rows) < len(specs):
        table["partial"] = f"{len(rows)} of {len(specs)} rows: the others were not run"
    return table


def _finite(value) -> bool:
    """A finite number (a row read back holds null where it had an infinity)."""
    return value is not None and math.isfinite(value)


def _interval(row: dict) -> str:
    if not _finite(row["n50"]):
        return f"> {row['grid'][-1] / row['m_star']:.2f}"
    high = f"{row['ratio_high']:.2f}" if _finite(row["ratio_high"]) else "inf"
    return f"{row['ratio']:.2f} [{row['ratio_low']:.2f}, {high}]"


def markdown(table: dict) -> str:
    """The table as markdown: one line per (model, estimator), one column per k."""
    config = table["config"]
    users = config["users"]
    head = "| model | estimator | " + " | ".join(f"k = {k}" for k in users) + " | ms per trial (run) |"
    lines = [head, "|" + "---|" * (len(users) + 3)]
    by = {(r["model"], r["estimator"], r["users"]): r for r in table["rows"]}
    for model in config["models"]:
        for estimator in config["estimators"]:
            rows = [by.get((model, estimator, k)) for k in users]
            if not any(rows):
                continue
            ms = "/".join("-" if r is None else f"{1e3 * r['seconds_per_trial']:.1f}" for r in rows)
            cells = " | ".join("not run" if r is None else _interval(r) for r in rows)
            lines.append(f"| {model} | {estimator} | {cells} | {ms} |")
    versions = collections.Counter(row.get("code_version") for row in table["rows"])
    computed = ", ".join(f"{v} ({n} rows)" for v, n in versions.items())
    return "\n".join(lines) + f"\n\n(rows computed at code {computed})"


def main(argv=None) -> None:
    """The command line: compute (or read back) the rows, write JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the whole table in seconds")
    parser.add_argument("--results", default=None, help="JSON-lines file of finished rows (resumable)")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the markdown table")
    parser.add_argument("--finished", action="store_true", help="only the rows already in --results: compute none")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else Config()
    results = args.results or os.path.join("results", "information_limit" + ("_smoke" if args.smoke else "") + ".jsonl")
    table = run(config, results, compute=not args.finished)
    table["code_version"] = code_version()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=1)
    print(json.dumps({"rows": len(table["rows"]), "results": results, "out": args.out}))
    print(markdown(table) if args.markdown else f"{len(table['rows'])} rows; --markdown prints the table")


if __name__ == "__main__":
    main()
