"""Sample-complexity scaling: the empirical 50% recovery threshold against k, d and r.

Claim: the threshold n50 (samples per user at which half of the trials recover exactly,
stacked relative error <= 1e-3) scales like the degrees-of-freedom count
m*(k, d, r) = r^2 + r (2 d - 2 r) / k (sensing, d_out = d_in = d): along each of the three
series -- users k, dimension d, rank r -- the fitted log-log exponent of n50 lies within 0.15 of
the exponent of m* fitted on the same points.

    python -m proofs_numerics.scaling [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from colora_jax import plotting
from colora_jax import FitConfig, ProblemConfig, min_samples
from colora_jax import Cell
from proofs_numerics import _common

NAME = "scaling"


@dataclasses.dataclass(frozen=True)
class Config:
    """Three one-dimensional series through a base point (k, d, r), sensing model."""

    seed: int = 0  # PRNG seed of every cell
    model: str = "sensing"  # measurement model (m* is the sensing count)
    users: tuple[int, ...] = (2, 5, 10, 20, 50)  # k series (at base d, r)
    dims: tuple[int, ...] = (10, 20, 40)  # d = d_out = d_in series (at base k, r)
    ranks: tuple[int, ...] = (1, 2, 3, 4)  # r series (at base k, d)
    base: tuple[int, int, int] = (10, 20, 2)  # (k, d, r) held fixed in the other series
    points: int = 10  # sample sizes per threshold
    grid_lo: float = 0.75  # smallest sample size / m*
    grid_hi: float = 5.0  # largest sample size / m*
    trials: int = 30  # trials per cell
    iters: int = 50  # AltMin iteration budget
    tolerance: float = 0.15  # |exponent(n50) - exponent(m*)| allowed per series


SMOKE = Config(users=(2, 6), dims=(6, 8), ranks=(1, 2), base=(2, 6, 1), points=4, trials=3, iters=20)


def dof(k: int, d: int, r: int) -> float:
    return _common.dof_sensing(k, d, d, r)


def points(config: Config):
    k0, d0, r0 = config.base
    return {
        "users": [(k, d0, r0) for k in config.users],
        "dims": [(k0, d, r0) for d in config.dims],
        "ranks": [(k0, d0, r) for r in config.ranks],
    }


def grid(config: Config, k: int, d: int, r: int) -> list[int]:
    return _common.sample_grid(min_samples(config.model, r, "full"), dof(k, d, r), config.grid_lo, config.grid_hi,
                               config.points)


def cells(config: Config):
    out = []
    for k, d, r in dict.fromkeys(p for series in points(config).values() for p in series):
        ns = grid(config, k, d, r)
        fc = FitConfig(rank=r, iters=config.iters)
        for n in ns:
            pc = ProblemConfig(model=config.model, users=k, d_out=d, d_in=d, rank=r, samples=n, test_samples=0)
            out.append(((k, d, r, n), Cell(pc, fc, config.trials, config.seed, "colora", max(ns))))
    return out


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    success = {}
    for ((k, d, r, n), _), res in zip(labelled, sw.results):
        success.setdefault((k, d, r), ([], []))
        success[(k, d, r)][0].append(n)
        success[(k, d, r)][1].append(float(np.mean(np.asarray(res["evaluation"]["rel_error"], float) <= _common.SUCCESS)))
    n50 = {p: _common.threshold(*success[p]) for p in success}
    fig, axes = plotting.panels(3, width=4.4)
    results, measured, passed = {}, {}, True
    axis_of = {"users": (0, "users k"), "dims": (1, "dimension d = d_out = d_in"), "ranks": (2, "rank r")}
    for ax, (series, pts) in zip(axes, points(config).items()):
        i, label = axis_of[series]
        x = [p[i] for p in pts]
        y = [n50[p] for p in pts]
        m = [dof(*p) for p in pts]
        ok = all(np.isfinite(y))
        slope = _common.loglog_fit(x, y)[0] if ok else float("nan")
        slope_m = _common.loglog_fit(x, m)[0]
        ok = ok and abs(slope - slope_m) <= config.tolerance
        passed = passed and ok
        measured[f"exponent_{series}"] = round(slope, 3)
        measured[f"dof_exponent_{series}"] = round(slope_m, 3)
        results[series] = {"x": x, "n50": y, "m_star": m, "exponent": slope, "dof_exponent": slope_m,
                           "curves": {str(p): success[p] for p in pts}}
        ax.plot(x, y, "o-", label=f"measured n50: exponent {slope:.2f}")
        ax.plot(x, m, "s--", color="gray", label=f"m* (dof): exponent {slope_m:.2f}")
        fixed = {"users": "d={1}, r={2}", "dims": "k={0}, r={2}", "ranks": "k={0}, d={1}"}[series].format(*config.base)
        plotting.grid_axes(ax, f"{label} (log)", "samples per user n (log)", xlog=True, ylog=True, xticks=x,
                           title=f"threshold against {label.split(' ')[-1]} ({fixed})")
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           f"50% exact-recovery threshold (rel. error <= {_common.SUCCESS:g}), {config.model},"
                           f" {config.trials} trials per cell")
    claim = (f"the 50% recovery threshold scales like m* = r^2 + r(2d-2r)/k: fitted exponents against k, d and r"
             f" within {config.tolerance} of m*'s ({config.model})")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured, results=results,
                   started=started, figure=figure)


if __name__ == "__main__":
    main()
