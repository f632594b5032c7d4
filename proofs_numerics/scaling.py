"""Sample-complexity scaling: the empirical 50% recovery threshold against k, d and r.

Claim: the threshold n50 (where the exact-recovery rate, stacked relative error <= 1e-3, crosses
one half) scales like the degrees-of-freedom count m*(k, d, r) = r^2 + r (2 d - 2 r) / k
(sensing, d_out = d_in = d): along each of the three series -- users k, dimension d, rank r --
the fitted log-log exponent of n50 lies within 0.15 of the exponent of m* fitted on the same
points, for the whole 95% bootstrap interval of the exponent.

The exponent is fitted on the crossings of the rate curves, interpolated in log n between the
two grid points around one half: grid-valued thresholds would make the bootstrap degenerate
(its point estimate on an end of its interval). The bootstrap resamples the trials (rows of the
success table) within every point. Whether the interval excludes m*'s exponent is reported
beside the verdict: an exponent inside the tolerance can still differ measurably from m*'s.

    python -m proofs_numerics.scaling [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from colora_jax import Cell, FitConfig, ProblemConfig, min_samples, plotting, statistics
from proofs_numerics import _common

NAME = "scaling"


@dataclasses.dataclass(frozen=True)
class Config:
    """Three one-dimensional series through a base point (k, d, r), sensing model."""

    seed: int = 0  # PRNG seed of every cell
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    model: str = "sensing"  # measurement model (m* is the sensing count)
    users: tuple[int, ...] = (2, 5, 10, 20, 50)  # k series (at base d, r)
    dims: tuple[int, ...] = (10, 20, 30)  # d = d_out = d_in series (at base k, r)
    ranks: tuple[int, ...] = (1, 2, 3)  # r series (at base k, d)
    base: tuple[int, int, int] = (10, 20, 2)  # (k, d, r) held fixed in the other series
    grid_lo: float = 0.9  # smallest sample size / m* (rounded down)
    grid_hi: float = 2.2  # largest sample size / m* (AltMin's transitions: 1.4-1.8 m*)
    grid_ratio: float = 1.08  # grid step: +1 sample, or x1.08 where that is larger
    trials: int = 24  # trials per cell
    iters: int = 50  # AltMin iteration budget
    tolerance: float = 0.15  # |exponent(n50) - exponent(m*)| allowed per series
    level: float = 0.95  # confidence level of every interval
    resamples: int = 1000  # bootstrap resamples of the exponent


SMOKE = Config(
    users=(2, 6), dims=(6, 8), ranks=(1, 2), base=(2, 6, 1), grid_ratio=1.3, trials=3, iters=20, resamples=50
)


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
    m = dof(k, d, r)
    return statistics.geometric_integers(
        math.floor(config.grid_lo * m),
        config.grid_hi * m,
        config.grid_ratio,
        minimum=min_samples(config.model, r, "full"),
    )


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
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    rows: dict = {}
    for ((k, d, r, n), _), res in zip(labelled, sw.results):
        rows.setdefault((k, d, r), []).append((n, res))
    summary, tables = {}, {}
    for p, row in rows.items():
        tables[p] = _common.success_table([r for _, r in row])
        summary[p] = _common.threshold_summary([n for n, _ in row], tables[p], dof(*p), config.level)
    fig, axes = plotting.panels(3, width=4.6)
    claims = _common.Claims()
    results, measured = {}, {}
    axis_of = {"users": (0, "users k"), "dims": (1, "dimension d = d_out = d_in"), "ranks": (2, "rank r")}
    for ax, (series, pts) in zip(axes, points(config).items()):
        i, label = axis_of[series]
        x = [p[i] for p in pts]
        m = [dof(*p) for p in pts]
        slope_m = statistics.loglog_fit(x, m).slope

        def exponent(*samples, pts=pts, x=x):
            crossings = [_common.threshold(summary[p]["samples"], t.mean(axis=0)) for p, t in zip(pts, samples)]
            return statistics.loglog_fit(x, crossings).slope if np.all(np.isfinite(crossings)) else np.nan

        value, low, high = statistics.bootstrap_interval(
            exponent, *[tables[p] for p in pts], level=config.level, resamples=config.resamples, seed=config.seed
        )
        claims.add(
            f"exponent in {series} - m*'s ({slope_m:.2f})",
            value - slope_m,
            low - slope_m,
            high - slope_m,
            lower=-config.tolerance,
            upper=config.tolerance,
            source="m* = r^2 + r(2d - 2r)/k (dof count)",
        )
        measured[f"exponent_{series}"] = [round(value, 3), round(low, 3), round(high, 3)]
        measured[f"exponent_{series}_differs_from_dof"] = bool(not low <= slope_m <= high)
        measured[f"dof_exponent_{series}"] = round(slope_m, 3)
        y = np.array([summary[p]["n50"] for p in pts])
        lo = np.array([summary[p]["n50_low"] for p in pts])
        hi = np.array([summary[p]["n50_high"] for p in pts])
        results[series] = {
            "x": x,
            "m_star": m,
            "exponent": [value, low, high],
            "dof_exponent": slope_m,
            "points": {str(p): summary[p] for p in pts},
        }
        ax.errorbar(
            x,
            y,
            yerr=[y - lo, np.where(np.isfinite(hi), hi, y) - y],
            fmt="o-",
            capsize=3,
            label=f"n50 (95% interval): exponent {value:.2f} [{low:.2f}, {high:.2f}]",
        )
        ax.plot(x, m, "s--", color="gray", label=f"m* (dof): exponent {slope_m:.2f}")
        fixed = {"users": "d={1}, r={2}", "dims": "k={0}, r={2}", "ranks": "k={0}, d={1}"}[series].format(*config.base)
        plotting.grid_axes(
            ax,
            f"{label} (log)",
            "samples per user n (log)",
            xlog=True,
            ylog=True,
            xticks=x,
            title=f"threshold against {label.split(' ')[-1]} ({fixed})",
        )
        _common.plain_log_ticks(ax)
    figure = plotting.save(
        fig,
        os.path.join(args.out, f"{NAME}.png"),
        f"50% exact-recovery threshold (rel. error <= {_common.SUCCESS:g}), {config.model},"
        f" {config.trials} trials per cell",
    )
    ratios = [round(summary[p]["ratio"], 2) for p in summary]
    measured["n50_over_mstar_range"] = [min(ratios), max(ratios)]
    measured["nonmonotone_trials"] = sum(len(summary[p]["nonmonotone"]) for p in summary)
    measured["nonmonotone_fraction_max"] = round(max(summary[p]["nonmonotone_fraction"] for p in summary), 3)
    claim = (
        f"the 50% recovery threshold scales like m* = r^2 + r(2d-2r)/k: fitted exponents against k, d and r"
        f" within {config.tolerance} of m*'s, 95% bootstrap intervals included ({config.model})"
    )
    _common.finish(
        NAME,
        args,
        config,
        claim=claim,
        passed=claims.passed,
        measured={**measured, **claims.summary()},
        results=results,
        started=started,
        figure=figure,
        claims=claims,
    )


if __name__ == "__main__":
    main()
