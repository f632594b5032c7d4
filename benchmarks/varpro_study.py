"""Variable projection (issue 13) measured: phase-diagram cells, cost per iteration, random init.

    .venv/bin/python benchmarks/varpro_study.py phase --model sensing [--users 1,5,20,100]
        [--methods altmin,varpro,...] [--trials 50] [--init spectral|random] [--x64]
    .venv/bin/python benchmarks/varpro_study.py summary [--model sensing] [--init spectral]
    .venv/bin/python benchmarks/varpro_study.py cost [--model sensing] [--users 100,10000]

``phase`` runs the grid of ``proofs_numerics/phase_transition`` (d_out = d_in = 20, r = 2,
n = m*(k) * geomspace(0.75, 4, 12), success = stacked relative error <= 1e-3) with *nested*
samples: each trial draws the largest n once and every smaller n fits its first n samples (the
rest are zeroed, which removes them from every least squares exactly). So each trial has its
own threshold (the smallest grid n from which it succeeds at every larger n), and n50 is their
median with an order-statistic 95% interval; success rates get Wilson intervals. One compiled
program per (model, k, method) serves every n. Results append to
``results/varpro/phase.jsonl`` (one line per model, k, method, init; finished lines are reused).

``cost`` times one problem's fit (jit, warm, best of 3) per iteration and to convergence, VarPro
against AltMin, at k = 100 and 10^4 users.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import colora_jax as cj  # noqa: E402
from colora_jax import (  # noqa: E402
    VarPro,
    code_version,
    fit_varpro,
    statistics,  # noqa: E402
)
from proofs_numerics import _common  # noqa: E402

RESULTS = os.path.join("results", "varpro")

# name -> options of fit_varpro (None: AltMin, fit's own algorithm)
METHODS: dict[str, dict | None] = {
    "altmin": None,
    "varpro": {},  # the defaults: Kaufman Jacobian, ridge continuation as a fallback
    "varpro-plain": {"continuation": "never"},  # no continuation: LM from the spectral start
    "varpro-always": {"continuation": "always"},  # the continuation before every fit
    "varpro-gp": {"jacobian": "golub-pereyra"},  # full Golub-Pereyra Jacobian (continuation as a fallback)
    "varpro-gp-plain": {"jacobian": "golub-pereyra", "continuation": "never"},
    "varpro-slow": {"continuation_decay": 0.96},  # twice as many continuation iterations
    "varpro-restarts4": {"restarts": 4},  # the spectral path and 4 from random starts; lowest objective wins
}


@dataclasses.dataclass(frozen=True)
class Grid:
    """The phase diagram's grid (as ``proofs_numerics.phase_transition.Config``)."""

    d_out: int = 20
    d_in: int = 20
    rank: int = 2
    points: int = 12
    grid_lo: float = 0.75
    grid_hi: float = 4.0
    iters: int = 50  # iteration budget of both AltMin and VarPro (the phase diagram's AltMin budget)
    tol: float = 1e-7
    seed: int = 0


def m_star(model: str, users: int, g: Grid) -> float:
    return cj.degrees_of_freedom(model, users, g.d_out, g.d_in, g.rank)


def sample_sizes(model: str, users: int, g: Grid) -> list[int]:
    return _common.sample_grid(
        cj.min_samples(model, g.rank, "full"), m_star(model, users, g), g.grid_lo, g.grid_hi, g.points
    )


def _fit(obs, fc, key, truth, method):
    options = METHODS[method]
    if options is None:
        return cj.fit(obs, fc, key=key, truth=truth)
    return fit_varpro(obs, fc, key=key, truth=truth, **options)


def _one(key, n, pc: cj.ProblemConfig, fc: cj.FitConfig, method: str):
    kp, kf = jax.random.split(key)
    problem = cj.generate(kp, pc)
    obs = problem.train.with_counts(n)  # the first n samples of the nested stream
    est, trace = _fit(obs, fc, kf, problem.truth, method)
    it = trace.iterations
    W = est.W
    return dict(
        rel_error=cj.relative_error(W, problem.truth.W),
        iterations=it,
        objective_ratio=trace.objective[it] / trace.objective[0],  # (VarPro: index 0 is after the continuation)
        residual_fraction=trace.objective[it] * problem.train.Y.size / jnp.sum(jnp.square(obs.masked().Y)),
        distance_start=jnp.maximum(trace.subspace_distance_U[0], trace.subspace_distance_V[0]),
        distance_end=jnp.maximum(trace.subspace_distance_U[it], trace.subspace_distance_V[it]),
        personal_norm=jnp.max(jnp.linalg.norm(est.S, axis=(1, 2))),  # blow-up of the personal solves
    )


def _load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _key(rec: dict) -> tuple:
    return (rec["model"], rec["users"], rec["method"], rec["init"], rec["trials"], rec["x64"], len(rec["samples"]))


def phase(args) -> None:
    g = Grid()
    path = os.path.join(RESULTS, "phase.jsonl")
    os.makedirs(RESULTS, exist_ok=True)
    done = {_key(r) for r in _load(path)}
    for users in [int(u) for u in args.users.split(",")]:
        ns = [n for n in sample_sizes(args.model, users, g) if n <= args.max_ratio * m_star(args.model, users, g)]
        pc = cj.ProblemConfig(
            model=args.model,
            users=users,
            d_out=g.d_out,
            d_in=g.d_in,
            rank=g.rank,
            samples=max(ns),
            test_samples=0,
            x64=args.x64,
        )
        fc = cj.FitConfig(rank=g.rank, iters=g.iters, tol=g.tol, init=args.init)
        keys = cj.trial_keys(jax.random.key(g.seed), 0, args.trials)  # trial t: fold_in(key, t)
        for method in args.methods.split(","):
            rec = dict(
                model=args.model,
                users=users,
                method=method,
                init=args.init,
                trials=args.trials,
                x64=args.x64,
                samples=ns,
            )
            if _key(rec) in done:
                continue
            t0 = time.time()
            run = jax.jit(jax.vmap(lambda k, n: _one(k, n, pc, fc, method), (0, None)))
            run = run.lower(keys, jnp.asarray(max(ns))).compile()
            compile_s = time.time() - t0
            cells, seconds = [], []
            for n in ns:
                t0 = time.time()
                cells.append(jax.device_get(run(keys, jnp.asarray(n))))
                seconds.append(time.time() - t0)
            out = {name: np.stack([np.asarray(c[name], float) for c in cells], axis=1) for name in cells[0]}
            success = out["rel_error"] <= _common.SUCCESS
            rec.update(
                samples=ns,
                m_star=m_star(args.model, users, g),
                grid=dataclasses.asdict(g),
                options=METHODS[method],
                compile_seconds=round(compile_s, 1),
                seconds=[round(s, 2) for s in seconds],
                load_average=os.getloadavg(),
                code_version=code_version(),
                success=success.astype(int).tolist(),
                **{name: np.round(v, 6).tolist() for name, v in out.items()},
            )
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            _print_record(rec)


def _print_record(rec: dict) -> None:
    s = np.asarray(rec["success"], bool)
    N = s.shape[0]
    rates = " ".join(f"{n}:{int(c.sum())}" for n, c in zip(rec["samples"], s.T))
    n50 = _common.threshold(rec["samples"], s.mean(axis=0))
    th = statistics.trial_thresholds(rec["samples"], s)
    med, lo, hi, _ = statistics.median_interval(th.values)
    ms = rec["m_star"]
    print(
        f"{rec['model']:10s} k={rec['users']:<4d} {rec['method']:16s} [{rec['init']}] successes/{N}: {rates} | "
        f"n50/m* interp {n50 / ms:.2f}, median trial threshold {med / ms:.2f} [{lo / ms:.2f}, {hi / ms:.2f}] "
        f"| {sum(rec['seconds']):.0f} s + compile {rec['compile_seconds']:.0f} s",
        flush=True,
    )


def summary(args) -> None:
    recs = [
        r
        for r in _load(os.path.join(RESULTS, "phase.jsonl"))
        if (args.model in (None, r["model"])) and r["init"] == args.init
    ]
    for r in sorted(recs, key=lambda r: (r["model"], r["users"], list(METHODS).index(r["method"]))):
        _print_record(r)
        if args.failures and r["method"] != "altmin":
            s = np.asarray(r["success"], bool)
            for j, n in enumerate(r["samples"]):
                fail = ~s[:, j]
                if 0 < fail.sum() < len(fail):
                    pick = lambda name: np.asarray(r[name])[:, j][fail]
                    frac = (
                        f" (of sum y^2: {np.median(pick('residual_fraction')):.2g})" if "residual_fraction" in r else ""
                    )
                    print(
                        f"    n={n}: {fail.sum()} failed: objective end/start median"
                        f" {np.median(pick('objective_ratio')):.2g}{frac},"
                        f" subspace distance median {np.median(pick('distance_end')):.2f},"
                        f" largest |S_i| median {np.median(pick('personal_norm')):.2g}"
                        f" (successes: {np.median(np.asarray(r['personal_norm'])[:, j][~fail]):.2g})"
                    )


# ----------------------------------------------------------------------------- cost


def _best_of(run, *a, repeats: int = 3) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that call, result) of a warm jitted call."""
    out = jax.block_until_ready(run(*a))
    best = (math.inf, math.inf)
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(run(*a))
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best[0], best[1], out


def cost(args) -> None:
    """Per-iteration time and iterations to converge, one problem (jit, warm, best of 3)."""
    g = Grid()
    path = os.path.join(RESULTS, "cost.jsonl")
    os.makedirs(RESULTS, exist_ok=True)
    for users in [int(u) for u in args.users.split(",")]:
        ms = m_star(args.model, users, g)
        n = max(int(round(args.ratio * ms)), cj.min_samples(args.model, g.rank, "full"))
        pc = cj.ProblemConfig(
            model=args.model, users=users, d_out=g.d_out, d_in=g.d_in, rank=g.rank, samples=n, test_samples=0
        )
        clean = jax.jit(cj.generate, static_argnums=1)(jax.random.key(1), pc)
        noisy = jax.jit(cj.generate, static_argnums=1)(jax.random.key(1), dataclasses.replace(pc, noise=0.1))
        for method in args.methods.split(","):
            options = METHODS[method]
            fit = lambda o, t, fc, opts: cj.fit(o, fc, truth=t) if opts is None else fit_varpro(o, fc, truth=t, **opts)
            # per iteration: 1 and 11 iterations of the fit proper on noisy data (tol 0), no continuation
            plain = None if options is None else {**options, "continuation": "never"}
            per = []
            for iters in (1, 11):
                fc = cj.FitConfig(iters=iters, tol=0.0)
                run = jax.jit(lambda o, t: fit(o, t, fc, plain))
                wall, cpu, (_, trace) = _best_of(run, noisy.train, noisy.truth)
                per.append((wall, cpu, int(trace.iterations)))
            dit = max(per[1][2] - per[0][2], 1)
            per_wall, per_cpu = (per[1][0] - per[0][0]) / dit, (per[1][1] - per[0][1]) / dit
            # whole fit to convergence, noiseless (default tol, budget 200), continuation included
            fc = cj.FitConfig(iters=200, tol=g.tol)
            run = jax.jit(lambda o, t: fit(o, t, fc, options))
            wall, cpu, (est, trace) = _best_of(run, clean.train, clean.truth)
            it = int(trace.iterations)
            # the continuation's length when it runs ("fallback": only if the plain fit does not interpolate)
            opts = None if options is None else VarPro(**options)
            cont = 0 if opts is None or opts.continuation == "never" else opts.continuation_iterations
            when = "" if opts is None or opts.continuation != "fallback" else " if needed"
            rec = dict(
                model=args.model,
                users=users,
                samples=n,
                ratio=round(n / ms, 3),
                method=method,
                options=options,
                per_iteration_wall_ms=round(per_wall * 1e3, 3),
                per_iteration_cpu_ms=round(per_cpu * 1e3, 3),
                timed_iterations=dit,
                fit_wall_ms=round(wall * 1e3, 2),
                fit_cpu_ms=round(cpu * 1e3, 2),
                iterations=it,
                continuation_iterations=cont,  # its length when it runs (see continuation_mode)
                continuation_mode=None if opts is None else opts.continuation,
                rel_error=float(trace.rel_error[it]),
                load_average=os.getloadavg(),
                code_version=code_version(),
            )
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(
                f"{args.model} k={users} n={n} ({n / ms:.2f} m*) {method:14s} per iteration {per_wall * 1e3:8.2f} ms"
                f" wall ({per_cpu * 1e3:8.2f} ms CPU) | fit: {wall * 1e3:9.1f} ms wall ({cpu * 1e3:9.1f} ms CPU),"
                f" {it} iterations (+{cont} continuation{when}), rel. error {rec['rel_error']:.1e}"
                f" | load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    ph = sub.add_parser("phase")
    ph.add_argument("--model", default="sensing", choices=["sensing", "regression"])
    ph.add_argument("--users", default="1,5,20,100")
    ph.add_argument("--methods", default="altmin,varpro,varpro-plain,varpro-gp")
    ph.add_argument("--trials", type=int, default=50)
    ph.add_argument("--init", default="spectral", choices=["spectral", "random"])
    ph.add_argument("--x64", action="store_true")
    ph.add_argument("--max-ratio", type=float, default=math.inf, help="keep the grid's n <= this times m*(k)")
    su = sub.add_parser("summary")
    su.add_argument("--model", default=None)
    su.add_argument("--init", default="spectral")
    su.add_argument("--failures", action="store_true", help="describe the failed runs of each cell")
    co = sub.add_parser("cost")
    co.add_argument("--model", default="sensing", choices=["sensing", "regression"])
    co.add_argument("--users", default="100,10000")
    co.add_argument("--ratio", type=float, default=2.0, help="samples per user in units of m*(k)")
    co.add_argument("--methods", default="altmin,varpro")
    args = p.parse_args()
    if getattr(args, "x64", False):
        jax.config.update("jax_enable_x64", True)  # x64=True problems need JAX's 64-bit mode
    _common.compile_cache()
    {"phase": phase, "summary": summary, "cost": cost}[args.command](args)


if __name__ == "__main__":
    main()
