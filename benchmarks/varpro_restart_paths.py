"""Issue 22 step 3: could a restart be abandoned early? Continuation paths of every start, and rules replayed.

    .venv/bin/python benchmarks/varpro_restart_paths.py --model sensing --users 20 --seed 1,2,3
    .venv/bin/python benchmarks/varpro_restart_paths.py --replay --rules "15:1.0" "8:1.05,15:1.0"

For each trial (the trial driver's problems: ``trial_keys(key(seed), 0, trials)``, d_out = d_in =
20, r = 2, noiseless, float32, n = round(1.3 m*(k)) as in ``varpro_robust.py``), the registered
``varpro-restarts`` schedule (``varpro.ROBUST``; ``--schedule NAME/field=value/...`` another VarPro,
as ``varpro_robust.py`` reads it) runs its first fit from the spectral start and
``--restarts`` fits from the keyed random starts it would restart from (``restart_keys`` of the
trial's fit key), each to the end: the objective ``phi_alpha`` after every ridge of the
continuation, the fit proper's iterations, whether the fit is exact (final objective at the
stopping floor) and whether it recovers (stacked relative error <= 1e-3). Saved per cell and seed
under ``results/varpro/paths/``.

``--replay`` then runs, on the saved paths, the estimator's rule (restarts in order until one is
exact, at most ``--use`` of them) with an abandonment rule ``STAGE:FACTOR,...``: a restart is
abandoned at the first listed ridge ``STAGE`` (0-based) where its ``phi_alpha`` exceeds ``FACTOR``
times the first fit's at that ridge (the first fit being inexact, its path is a failing one). It
prints, per rule, the trials recovered and the restarts' cost relative to the first fits', in
LM iterations (a ridge of the continuation or an iteration of the fit proper counts one; an
abandoned restart costs the ridges it ran). Cost is counted, not timed: what a vmapped round would
take depends on how the rounds are batched. A trial counts as recovered when the fit that ends it
exact recovers (the final objectives are not recorded, so a trial that no fit makes exact counts
as not recovered, though the estimator's lowest-objective fit might be close; on these cells the
counts equal ``varpro_robust.py``'s).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import colora_jax as cj  # noqa: E402
from benchmarks.varpro_robust import SUCCESS, D, R, estimator, samples_at  # noqa: E402
from colora_jax._src.estimators import varpro as vp  # noqa: E402
from colora_jax._src.estimators.fitting import initialize, restart_keys, setup  # noqa: E402
from colora_jax._src.estimators.users import AllUsers  # noqa: E402
from colora_jax._src.experiments import trials  # noqa: E402
from colora_jax._src.model import blocks  # noqa: E402

OUT = "results/varpro/paths"


def paths(model: str, k: int, n: int, seed: int, trials_: int, restarts: int, schedule: vp.VarPro = vp.ROBUST) -> dict:
    """Every start's continuation path and end, for ``trials_`` trials (host arrays, leading axes (trial, start))."""
    pc = cj.ProblemConfig(model=model, users=k, d_out=D, d_in=D, rank=R, samples=n)
    est = dataclasses.replace(schedule, restarts=0, restart_rule="all")
    config = cj.FitConfig(rank=R, algorithm=est)
    keys = trials.trial_keys(jax.random.key(seed), 0, trials_)
    problems = trials._compiled_generator(trials.generated_config(pc), trials_)(keys, jnp.zeros((), pc.dtype))

    def one(problem, key):
        fit_key = jax.random.split(key)[1]  # as the trial driver's (``trials._fit_one``)
        users = AllUsers(blocks.design(problem.train), None)
        s = setup(users, config, fit_key, None)
        evaluate_at, normal, metrics, diag = est.reduced(users, config, s, problem.truth)
        random_init = dataclasses.replace(config, init="random")
        Us, Vs = jax.vmap(lambda kk: initialize(users, random_init, kk))(restart_keys(fit_key, restarts))

        def run(U, V):
            f, path = vp._fit_from(evaluate_at, normal, metrics, U, V, config, est, diag, s.floor, path=True)
            return path, f.iterations, f.final_objective <= s.floor, f.history.rel_error[f.iterations] <= SUCCESS

        return jax.vmap(run)(jnp.concatenate([s.U[None], Us]), jnp.concatenate([s.V[None], Vs]))

    path, iterations, exact, recovered = map(np.asarray, jax.jit(jax.vmap(one))(problems, keys))
    return {"path": path, "iterations": iterations, "exact": exact, "recovered": recovered}


def parse_rule(text: str) -> list[tuple[int, float]]:
    """``"8:1.05,15:1.0"`` -> ``[(8, 1.05), (15, 1.0)]``; ``""`` or ``"none"``: no abandonment."""
    if text in ("", "none"):
        return []
    try:
        return [(int(stage), float(factor)) for stage, factor in (part.split(":") for part in text.split(","))]
    except ValueError:
        raise ValueError(f"a rule is STAGE:FACTOR[,STAGE:FACTOR...], got {text!r}") from None


def replay(data: dict, rule: list[tuple[int, float]], use: int) -> dict:
    """The estimator's restarts until exact, at most ``use``, with ``rule``'s abandonment, on saved paths."""
    path, recovered, exact = data["path"], data["recovered"], data["exact"]
    ridges = path.shape[2]
    if any(not 0 <= stage < ridges for stage, _ in rule):
        raise ValueError(f"a rule's stage must lie in [0, {ridges}), got {rule}")
    cost = ridges + data["iterations"]  # LM iterations of each fit
    first_cost = int(cost[:, 0].sum())
    restart_cost = abandoned = run = 0
    ok = 0
    for t in range(path.shape[0]):
        if exact[t, 0]:
            ok += int(recovered[t, 0])
            continue
        for j in range(1, min(use, path.shape[1] - 1) + 1):
            run += 1
            stop = next((s for s, c in rule if path[t, j, s] > c * path[t, 0, s]), None)
            if stop is not None:
                restart_cost += stop + 1
                abandoned += 1
                continue
            restart_cost += int(cost[t, j])
            if exact[t, j]:
                ok += int(recovered[t, j])
                break
    return {
        "recovered": ok,
        "trials": int(path.shape[0]),
        "restarts_run": run,
        "abandoned": abandoned,
        "restart_cost": restart_cost,
        "first_cost": first_cost,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["sensing", "regression"], default="sensing")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--samples", type=int, help="per user (default: round(1.3 m*))")
    p.add_argument("--seed", default="1,2,3", help="comma-separated seeds (0 is the official tables')")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--restarts", type=int, default=32, help="restarts recorded per trial")
    p.add_argument(
        "--schedule",
        default="varpro-restarts",
        help="the fits' estimator: a registered VarPro, or NAME/field=value/... (as varpro_robust.py's --algorithms)",
    )
    p.add_argument("--replay", action="store_true", help="replay rules on saved paths instead of recording")
    p.add_argument("--rules", nargs="*", default=["none", "15:1.0"], help="abandonment rules STAGE:FACTOR,...")
    p.add_argument("--use", type=int, default=vp.ROBUST.restarts, help="restarts the replayed estimator may run")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    try:
        seeds = [int(s) for s in args.seed.split(",")]
        rules = [parse_rule(r) for r in args.rules]
        schedule = cj.resolve(cj.FitConfig(algorithm=estimator(args.schedule)))
        if not isinstance(schedule, vp.VarPro) or schedule.continuation != "always":
            raise ValueError(f"--schedule must be a VarPro with continuation='always', got {args.schedule!r}")
    except ValueError as e:
        p.error(str(e))
    for name in ("users", "trials", "restarts", "use"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    n = args.samples or samples_at(args.model, args.users)
    cell = f"{args.model}_{args.users}_{n}" + (
        "" if args.schedule == "varpro-restarts" else f"_{args.schedule.replace('/', '_')}"
    )
    os.makedirs(args.out, exist_ok=True)
    if not args.replay:
        cj.limit_cpu_threads(default=1)
        for seed in seeds:
            start = time.perf_counter()
            data = paths(args.model, args.users, n, seed, args.trials, args.restarts, schedule)
            np.savez(os.path.join(args.out, f"{cell}_{seed}.npz"), **data)
            hard = ~data["exact"][:, 0]
            cost = data["path"].shape[2] + data["iterations"]
            print(
                f"{cell} seed {seed}: first fit recovers {int(data['recovered'][:, 0].sum())}/{args.trials};"
                f" {int(hard.sum())} inexact, whose restarts recover {data['recovered'][hard, 1:].mean():.3f}"
                f" at {cost[hard, 1:].mean():.1f} LM iterations each (first fits: {cost[:, 0].mean():.1f})"
                f" ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        return 0
    files = [os.path.join(args.out, f"{cell}_{seed}.npz") for seed in seeds]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        found = len(glob.glob(os.path.join(args.out, "*.npz")))
        p.error(f"no saved paths {', '.join(missing)}: record them first (without --replay); {args.out} holds {found}")
    data = [dict(np.load(f)) for f in files]
    for text, rule in zip(args.rules, rules):
        try:
            parts = [replay(d, rule, args.use) for d in data]
        except ValueError as e:
            p.error(str(e))
        total = {
            "cell": cell,
            "seeds": seeds,
            "rule": text,
            "use": args.use,
            "recovered": sum(q["recovered"] for q in parts),
            "trials": sum(q["trials"] for q in parts),
            "restarts_run": sum(q["restarts_run"] for q in parts),
            "abandoned": sum(q["abandoned"] for q in parts),
            "restart_cost_over_first": sum(q["restart_cost"] for q in parts) / sum(q["first_cost"] for q in parts),
        }
        print(json.dumps(total))
        print(
            f"{cell} seeds {args.seed} rule {text or 'none'} (up to {args.use} restarts): recovers"
            f" {total['recovered']}/{total['trials']}; {total['abandoned']} of {total['restarts_run']}"
            f" restarts abandoned; restarts cost {total['restart_cost_over_first']:.2f}x the first fits",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
