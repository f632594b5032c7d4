"""``colora compare``: CoLoRA and its baselines on the same planted problems."""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from colora_jax._src import registry
from colora_jax._src.baselines.federated import FederatedConfig
from colora_jax._src.cli import common
from colora_jax._src.experiments.trials import (
    check_memory,
    default_batch,
    generated_config,
    method_evaluator,
    trial_request,
)
from colora_jax._src.methods import parameter_counts
from colora_jax._src.model.config import ProblemConfig
from colora_jax._src.model.shared_input import FEDREP_SYNTHETIC
from colora_jax._src.runtime.provenance import code_version, device_info

METHODS = tuple(registry.METHODS)

SECONDS = (
    "wall-clock seconds of the method's whole run: compilation, generating every trial's problem"
    " (each method regenerates the same problems from the same keys), fitting and evaluating"
)


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(map(repr, unknown)) or 'list (empty)'}: choose from {', '.join(METHODS)}"
        )
    return tuple(dict.fromkeys(names))  # drop repeats, keep the order


def register(subparsers) -> None:
    """Add ``colora compare`` and its flags."""
    p = subparsers.add_parser(
        "compare",
        help="CoLoRA against its baselines on the same planted problems",
        description="Fit every method to the same generated problems (same keys) and print, per"
        " method, the median and interquartile range of the per-user relative error"
        " ||W_i_hat - W_i*||_F / ||W_i*||_F (over all users of all trials), the median held-out"
        " mean squared prediction error, the median sin-distance of the shared factors to U*, V*"
        " (where the method has them), the trained parameters (shared, per user) and the"
        f" seconds ({SECONDS}). A method that cannot run on the setting reports why in its row.",
    )
    common.add_problem_flags(p, samples=None)
    common.add_fit_flags(p)
    p.add_argument(
        "--methods", type=_methods, default=METHODS, help=f"comma-separated methods (default all: {','.join(METHODS)})"
    )
    p.add_argument(
        "--preset",
        choices=("fedrep",),
        default=None,
        help="fedrep: FedRep's synthetic setting, W_i* = h_i^T V*^T with scalar output"
        f" (d_in {FEDREP_SYNTHETIC.d_in}, rank {FEDREP_SYNTHETIC.rank}, {FEDREP_SYNTHETIC.users} users,"
        f" noise {FEDREP_SYNTHETIC.noise}); only --samples (default {FEDREP_SYNTHETIC.samples}),"
        " --test-samples and --x64 apply to the problem",
    )
    p.add_argument("--batch", type=common.positive_int, default=None, help="trials per compiled call")
    p.add_argument(
        "--workers",
        type=common.positive_int,
        default=1,
        help="split each method's trials between this many processes, one CPU core each (default 1;"
        " as colora recover --workers: worth it when a method runs for more than a few seconds)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def configs(args):
    """The problem and fit configurations the flags describe (the preset replaces the problem).

    Not validated here: ``compare`` validates them once for every method (``trial_request``).
    """
    if args.preset == "fedrep":
        pc = dataclasses.replace(
            FEDREP_SYNTHETIC,
            samples=args.samples or FEDREP_SYNTHETIC.samples,
            test_samples=args.test_samples,
            x64=args.x64,
        )
        return pc, common.fit_config(args, rank=pc.rank)
    samples = ProblemConfig.samples if args.samples is None else None
    return common.problem_config(args, samples), common.fit_config(args)


def _median(a) -> float:
    a = np.asarray(a, dtype=float)
    return float(np.median(a)) if np.isfinite(a).any() else float("nan")


def _row(method, pc, out, seconds, error):
    shared, per_user = parameter_counts(method, pc)
    row = {
        "status": "ok" if error is None else f"error: {error}",
        "params_shared": shared,
        "params_per_user": per_user,
        "seconds": seconds,
    }
    if error is not None:
        return row | {
            k: None
            for k in (
                "median_rel_error",
                "iqr_rel_error",
                "rel_error_quartiles",
                "test_mse",
                "subspace_distance_U",
                "subspace_distance_V",
                "iterations",
            )
        }
    ev = out.evaluation
    q25, q50, q75 = np.percentile(np.asarray(ev.per_user_rel_error, dtype=float), [25, 50, 75])
    return row | {
        "median_rel_error": q50,
        "iqr_rel_error": q75 - q25,
        "rel_error_quartiles": [q25, q75],
        "test_mse": _median(ev.test_mse),
        "subspace_distance_U": _median(ev.subspace_distance_U),
        "subspace_distance_V": _median(ev.subspace_distance_V),
        "iterations": _median(out.trace.iterations),
    }


def compare(args) -> dict:
    """Run every requested method on the same trials; returns the JSON-ready result.

    The run is checked once (``trial_request``) for every method; ``args`` is only read.
    """
    pc, fc = configs(args)
    request = trial_request(pc, fc, args.trials)
    check_memory(generated_config(pc))  # refused before any method runs (a method's error is its row's)
    batch = args.batch or default_batch(pc, args.trials)
    key = jax.random.key(args.seed)
    rows = {}
    with common.progress(len(args.methods) * args.trials, "compare", enabled=not args.json) as bar:
        for i, method in enumerate(args.methods):
            t0 = time.perf_counter()
            out, error = None, None
            try:
                out = request.run(
                    key,
                    method_evaluator(method),
                    batch=batch,
                    workers=args.workers,
                    on_batch=lambda done, i=i: bar.update(i * args.trials + done - bar.n),
                )
            except ValueError as err:
                error = str(err)
            rows[method] = _row(method, pc, out, time.perf_counter() - t0, error)
            bar.update((i + 1) * args.trials - bar.n)
    return {
        "config": {
            "problem": dataclasses.asdict(pc) | {"preset": args.preset},
            "fit": dataclasses.asdict(fc),
            "federated": dataclasses.asdict(FederatedConfig()),
            "methods": list(args.methods),
            "trials": args.trials,
            "seed": args.seed,
            "workers": args.workers,
            "seconds": SECONDS,
            "code_version": code_version(),
            "device": device_info(),
        },
        "methods": rows,
    }


def _fmt(x, spec=".2e") -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, spec)


def table(result: dict) -> str:
    """The result as a table readable in a terminal."""
    pc = result["config"]["problem"]
    head = (
        f"{pc['model']}: k={pc['users']} users, W in R^{pc['d_out']}x{pc['d_in']}, rank {pc['rank']},"
        f" {pc['samples']} samples/user, noise {pc['noise']:g}"
    )
    if "task_angle" in pc:
        head += f", task angle {pc['task_angle']:g}, deviation {pc['deviation']:g}"
    head += f" ({result['config']['trials']} trials, seed {result['config']['seed']})"
    lines = [
        head,
        "per-user relative error ||W_i_hat - W_i*||_F / ||W_i*||_F over all users and trials;"
        " sin U, sin V: sin-distance of the shared factors to U*, V*",
        "",
    ]
    cols = (
        f"{'method':<12} {'rel.err median':>14} {'[25%, 75%]':>20} {'test MSE':>9} {'sin U':>9} {'sin V':>9}"
        f" {'shared':>7} {'per user':>8} {'seconds':>8}"
    )
    lines += [cols, "-" * len(cols)]
    for name, r in result["methods"].items():
        if r["status"] != "ok":
            lines.append(f"{name:<12} {r['status']}")
            continue
        q = r["rel_error_quartiles"]
        lines.append(
            f"{name:<12} {_fmt(r['median_rel_error']):>14} {'[' + _fmt(q[0]) + ', ' + _fmt(q[1]) + ']':>20}"
            f" {_fmt(r['test_mse']):>9} {_fmt(r['subspace_distance_U']):>9} {_fmt(r['subspace_distance_V']):>9}"
            f" {r['params_shared']:>7} {r['params_per_user']:>8} {r['seconds']:>8.1f}"
        )
    return "\n".join(lines)


def run(args) -> int:
    """Compare the methods, print the table (or JSON); returns the exit code."""
    result = compare(args)
    if args.json:
        common.print_json(result)
    else:
        print(table(result))
    return 0
