"""``colora recover``: recovery of planted shared factors over many independent trials."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from colora_jax._src.cli import common
from colora_jax._src.experiments.sharding import check_divisible, sharded_evaluator, users_mesh
from colora_jax._src.experiments.trials import method_evaluator, trial_request
from colora_jax._src.model.data import STREAM_VERSION
from colora_jax._src.runtime import caches
from colora_jax._src.runtime.provenance import code_version, device_info


def register(subparsers) -> None:
    """Add ``colora recover`` and its flags."""
    p = subparsers.add_parser(
        "recover",
        help="recover planted shared factors over many trials",
        description="Generate planted CoLoRA problems, fit them, and report how often the truth is"
        " recovered. A trial succeeds when the relative Frobenius error of all users' W stacked,"
        " ||W_hat - W*||_F / ||W*||_F, is <= --success-threshold (default 1e-3). Several --samples"
        " values fit the first n samples of the same trials for each n (one compiled program).",
    )
    common.add_problem_flags(p, many_samples=True)
    common.add_fit_flags(p)
    p.add_argument(
        "--success-threshold",
        type=common.positive_float,
        default=1e-3,
        help="a trial succeeds when its stacked relative error is <= this (a positive number)",
    )
    p.add_argument(
        "--devices",
        type=common.positive_int,
        default=None,
        help="split each trial's users over this many devices (default 1; the users must be divisible by it)",
    )
    p.add_argument(
        "--workers",
        type=common.positive_int,
        default=1,
        help="split the trials between this many processes, one CPU core each (default 1): worth it for"
        " runs longer than a few seconds, since each worker has to start (docs/scale.md)",
    )
    p.add_argument("--batch", type=common.positive_int, default=None, help="trials per compiled call")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(run=run)


def _summary(ev, tr, threshold: float) -> dict:
    return {
        "success_rate": float(np.mean(ev.rel_error <= threshold)),
        "rel_errors": ev.rel_error,
        "subspace_distance_U": ev.subspace_distance_U,
        "subspace_distance_V": ev.subspace_distance_V,
        "test_mse": ev.test_mse,
        "iterations": tr.iterations,
        "converged": tr.converged,
    }


def recover(args) -> dict:
    """Run the trials described by ``args``; returns the JSON-ready result.

    The run is checked once (``trial_request``), before anything else; ``args`` is only read.
    """
    pc, fc = common.problem_config(args), common.fit_config(args)  # generated: the largest --samples
    request = trial_request(pc, fc, args.trials, samples=args.samples)
    fitted_samples = request.distinct_samples  # ascending, each once: the rows of the report
    column = [request.fitted_samples.index(n) for n in fitted_samples]  # where each is in the result
    devices = 1 if args.devices is None else users_mesh(args.devices).shape["users"]
    check_divisible(pc.users, devices)
    if args.workers > 1 and devices > 1:
        raise common.UsageError(
            "--workers splits trials between one-core processes; use it with --devices 1", "colora recover"
        )
    fn = method_evaluator("colora") if devices == 1 else sharded_evaluator(devices)
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    with common.progress(args.trials, "recover", enabled=not args.json) as bar:
        advance = lambda done: bar.update(done - bar.n)
        if args.workers > 1:  # the workers compile (or load) their own programs
            t1 = t0
            out = request.run(key, fn, batch=args.batch, workers=args.workers, on_batch=advance)
        else:
            plan = request.plan(fn, batch=args.batch)
            t1 = time.perf_counter()
            out = plan.run(key, on_batch=advance)
    t2 = time.perf_counter()
    config = {
        "problem": dataclasses.asdict(pc)
        | {"samples": list(fitted_samples) if len(fitted_samples) > 1 else fitted_samples[0]},
        "fit": dataclasses.asdict(fc),
        "trials": args.trials,
        "seed": args.seed,
        "success_threshold": args.success_threshold,
        "stream": STREAM_VERSION,
        "code_version": code_version(),
        "device": device_info(),
        "devices": devices,
        "workers": args.workers,
    }
    timing = {  # with workers, their start and compiles are in run_seconds (compile_seconds is 0)
        "seconds": t2 - t0,
        "compile_seconds": t1 - t0,
        "run_seconds": t2 - t1,
        "trials_per_second": args.trials / (t2 - t1),
        "compile_cache": caches.stats(),
    }
    ev, tr = out.evaluation, out.trace
    at = lambda j: _summary(
        jax.tree.map(lambda a: a[:, j], ev), jax.tree.map(lambda a: a[:, j], tr), args.success_threshold
    )
    if len(fitted_samples) == 1:
        return {"config": config, **at(column[0]), **timing}
    by_samples = [{"samples": n, **at(j)} for n, j in zip(fitted_samples, column)]
    return {"config": config, "by_samples": by_samples, **timing}


def run(args) -> int:
    """Run the trials, print the summary (or JSON); returns the exit code."""
    result = recover(args)
    if args.json:
        common.print_json(result)
        return 0
    pc = result["config"]["problem"]
    rows = result.get("by_samples") or [{"samples": pc["samples"], **result}]
    print(
        f"{pc['model']}: k={pc['users']} users, W in R^{pc['d_out']}x{pc['d_in']}, rank {pc['rank']},"
        f" noise {pc['noise']}, task angle {pc['task_angle']}; {args.trials} trials"
    )
    for row in rows:
        err = np.asarray(row["rel_errors"])
        print(
            f"n={row['samples']}: {args.algorithm} recovered (rel. error <= {args.success_threshold:g}) in"
            f" {row['success_rate']:.0%}; rel. error median {np.median(err):.2e} [min {err.min():.2e}, max"
            f" {err.max():.2e}]; sin-distance U median {np.median(row['subspace_distance_U']):.2e}, V"
            f" {np.median(row['subspace_distance_V']):.2e}; iterations median {int(np.median(row['iterations']))}"
        )
    if result["config"]["workers"] > 1:
        print(
            f"{result['seconds']:.2f} s in {result['config']['workers']} worker processes"
            " (starting them, compiling or loading, running)"
        )
    else:
        print(
            f"{result['seconds']:.2f} s ({result['compile_seconds']:.2f} s compiling or loading from the compile cache,"
            f" {result['trials_per_second']:.1f} trials/s after)"
        )
    return 0
