"""``colora recover``: recovery of planted shared factors over many independent trials."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from colora_jax._src.commands import common
from colora_jax._src.provenance import code_version, device_info
from colora_jax._src.sharding import check_divisible, sharded_trial_fn, users_mesh
from colora_jax._src.trials import compiled_trials, default_batch, run_trials, trial


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recover",
        help="recover planted shared factors over many trials",
        description="Generate planted CoLoRA problems, fit them, and report how often the truth is"
        " recovered. A trial succeeds when the relative Frobenius error of all users' W stacked,"
        " ||W_hat - W*||_F / ||W*||_F, is <= --success-threshold (default 1e-3).",
    )
    common.add_problem_flags(p)
    common.add_fit_flags(p)
    p.add_argument("--success-threshold", type=common._finite_float, default=1e-3,
                   help="a trial succeeds when its stacked relative error is <= this")
    p.add_argument("--devices", type=common._positive_int, default=None,
                   help="split each trial's users over this many devices (default: all visible);"
                   " the users must be divisible by it")
    p.add_argument("--batch", type=common._positive_int, default=None, help="trials per compiled call")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(run=run)


def recover(args) -> dict:
    """Run the trials described by ``args``; returns the JSON-ready result."""
    pc, fc = common.problem_config(args), common.fit_config(args)
    devices = users_mesh(args.devices).shape["users"]
    check_divisible(pc.users, devices)
    fn = trial if devices == 1 else sharded_trial_fn(devices)
    batch = args.batch or default_batch(pc, args.trials)
    t0 = time.perf_counter()
    compiled_trials(pc, fc, min(batch, args.trials), fn)
    t1 = time.perf_counter()
    with common.progress(args.trials, "recover", enabled=not args.json) as bar:
        out = run_trials(jax.random.key(args.seed), pc, fc, args.trials, batch=batch, fn=fn,
                         on_batch=lambda done: bar.update(done - bar.n))
    t2 = time.perf_counter()
    ev, tr = out.evaluation, out.trace
    return {
        "config": {
            "problem": dataclasses.asdict(pc),
            "fit": dataclasses.asdict(fc),
            "trials": args.trials,
            "seed": args.seed,
            "success_threshold": args.success_threshold,
            "code_version": code_version(),
            "device": device_info(),
            "devices": devices,
        },
        "success_rate": float(np.mean(ev.rel_error <= args.success_threshold)),
        "rel_errors": ev.rel_error,
        "subspace_distance_U": ev.subspace_distance_U,
        "subspace_distance_V": ev.subspace_distance_V,
        "test_mse": ev.test_mse,
        "iterations": tr.iterations,
        "converged": tr.converged,
        "seconds": t2 - t0,
        "compile_seconds": t1 - t0,
        "trials_per_second": args.trials / (t2 - t1),
    }


def run(args) -> int:
    result = recover(args)
    if args.json:
        common.print_json(result)
        return 0
    pc = result["config"]["problem"]
    err = np.asarray(result["rel_errors"])
    print(
        f"{pc['model']}: k={pc['users']} users, W in R^{pc['d_out']}x{pc['d_in']}, rank {pc['rank']},"
        f" {pc['samples']} samples/user, noise {pc['noise']}, task angle {pc['task_angle']}"
    )
    print(
        f"{args.algorithm}: recovered (rel. error <= {args.success_threshold:g}) in"
        f" {result['success_rate']:.0%} of {args.trials} trials"
    )
    print(
        f"  rel. error median {np.median(err):.2e} [min {err.min():.2e}, max {err.max():.2e}];"
        f" sin-distance U median {np.median(result['subspace_distance_U']):.2e},"
        f" V {np.median(result['subspace_distance_V']):.2e}"
    )
    print(
        f"  iterations median {int(np.median(result['iterations']))};"
        f" {result['seconds']:.2f} s ({result['compile_seconds']:.2f} s compiling,"
        f" {result['trials_per_second']:.1f} trials/s after)"
    )
    return 0
