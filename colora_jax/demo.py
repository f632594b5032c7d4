"""The main job (``make demo``): collaboration lets users recover their tasks from fewer samples.

Matrix sensing, W_i* = U* S_i* V*^T in R^{10 x 10}, rank 2. For each number of samples per
user it runs independent trials of exact AltMin for one user alone (k = 1, i.e. a local
LoRA) and for k = 20 users sharing U, V, prints the recovery rates, and writes
figures/demo_recovery.png (+ .json). The degrees-of-freedom count per user,
m*(k) = r^2 + r (d_out + d_in - 2r) / k, is the fewest samples any method could use.

Run: ``python -m colora_jax.demo [--trials N] [--out figures]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

from colora_jax._src.experiments.trials import run_trials
from colora_jax._src.model.config import FitConfig, ProblemConfig, degrees_of_freedom, min_samples
from colora_jax._src.model.data import STREAM_VERSION
from colora_jax._src.runtime.caches import enable_compile_cache, stats
from colora_jax._src.runtime.cpu_threads import limit_cpu_threads
from colora_jax._src.runtime.provenance import code_version, device_info

D, RANK = 10, 2
USERS = (1, 20)
SAMPLES = (4, 6, 8, 12, 20, 30, 40)
THRESHOLD = 1e-3  # a trial succeeds when ||W_hat - W*||_F / ||W*||_F <= THRESHOLD (all users)


def dof_per_user(k: int) -> float:
    """m*(k) = r^2 + r (d_out + d_in - 2 r) / k: parameters per user of the CoLoRA model."""
    return degrees_of_freedom("sensing", k, D, D, RANK)


def main(argv: list[str] | None = None) -> int:
    """Run the demo: print the recovery rates, write figures/demo_recovery.png and .json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per cell")
    parser.add_argument("--out", default="figures", help="folder for demo_recovery.png/.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.trials < 1:
        print("demo: error: --trials must be >= 1", file=sys.stderr)
        return 2

    limit_cpu_threads()  # $COLORA_JAX_THREADS, if set
    enable_compile_cache()
    fit = FitConfig(rank=RANK, iters=100)
    rates: dict[int, list[float]] = {}
    start = time.perf_counter()
    print(f"sensing, W_i in R^{D}x{D}, rank {RANK}; success = rel. error <= {THRESHOLD:g}; {args.trials} trials/cell")
    print("samples/user " + "".join(f"{n:>7d}" for n in SAMPLES))
    usable = [n for n in SAMPLES if n >= min_samples("sensing", RANK, "full")]
    for k in USERS:
        # one compiled program per k: every trial is drawn once with the largest n and fitted on
        # the first n samples of each user for every n (common random numbers across n)
        problem = ProblemConfig(model="sensing", users=k, d_out=D, d_in=D, rank=RANK, samples=max(usable))
        out = run_trials(jax.random.key(args.seed), problem, fit, args.trials, samples=usable)
        success = np.mean(out.evaluation.rel_error <= THRESHOLD, axis=0)
        rates[k] = [float(success[usable.index(n)]) if n in usable else float("nan") for n in SAMPLES]
        label = "local (k=1)" if k == 1 else f"CoLoRA k={k}"
        print(f"{label:<13}" + "".join(f"{r:>7.0%}" for r in rates[k]) + f"   m*(k) = {dof_per_user(k):.1f}")
    seconds = time.perf_counter() - start

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "samples": SAMPLES,
        "success_rate": {str(k): v for k, v in rates.items()},
        "dof_per_user": {str(k): dof_per_user(k) for k in USERS},
        "config": {
            "d_out": D,
            "d_in": D,
            "rank": RANK,
            "threshold": THRESHOLD,
            "trials": args.trials,
            "fit": fit.__dict__,
        },
        "seed": args.seed,
        "stream": STREAM_VERSION,
        "seconds": seconds,
        "compile_cache": {k: v for k, v in stats().items() if k != "dir"},
        "code_version": code_version(),
        "device": device_info(),
    }
    (out_dir / "demo_recovery.json").write_text(json.dumps(record, indent=1))
    _plot(rates, out_dir / "demo_recovery.png")
    n_half = {k: _first_at_least(rates[k], 0.5) for k in USERS}
    print(
        f"50% recovery needs {n_half[USERS[-1]]} samples/user with k={USERS[-1]} users against"
        f" {n_half[1]} alone; {seconds:.0f} s; wrote {out_dir / 'demo_recovery.png'}"
    )
    return 0


def _first_at_least(rates: list[float], level: float):
    return next((n for n, r in zip(SAMPLES, rates) if r >= level), f">{SAMPLES[-1]}")


def _plot(rates, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, color in zip(USERS, ("tab:gray", "tab:blue")):
        label = "one user alone (local LoRA)" if k == 1 else f"CoLoRA, k = {k} users"
        ax.plot(SAMPLES, rates[k], "o-", color=color, label=label)
        ax.axvline(dof_per_user(k), color=color, ls=":", lw=1)
        ax.text(dof_per_user(k), 0.5, f" m*({k})", color=color, fontsize=8)
    ax.set_xlabel("training samples per user")
    ax.set_ylabel(f"P(recovery), rel. error <= {THRESHOLD:g}")
    ax.set_title(f"Matrix sensing, d = {D}x{D}, rank {RANK}: exact AltMin")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
