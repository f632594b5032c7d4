"""Spectral initialization: initial subspace distance against the total number of samples.

Claim: the second-moment spectral initialization's subspace distance max(dist(U0, U*),
dist(V0, V*)) decays like (total samples N = k n)^(-1/2): the fitted log-log slope lies within
-1/2 +- 0.15, whether N grows through more users (n fixed) or more samples per user (k fixed).

    python -m proofs_numerics.spectral_init [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from colora_jax import plotting
from colora_jax import FitConfig, ProblemConfig
from colora_jax import Cell
from proofs_numerics import _common

NAME = "spectral_init"


@dataclasses.dataclass(frozen=True)
class Config:
    """Two series of the same total sample sizes: over users, and over samples per user."""

    seed: int = 0  # PRNG seed of every cell
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r
    users_series: tuple[int, ...] = (5, 20, 80, 320)  # k with n = fixed_samples
    fixed_samples: int = 40  # n in the users series
    samples_series: tuple[int, ...] = (40, 160, 640, 2560)  # n with k = fixed_users
    fixed_users: int = 5  # k in the samples series
    trials: int = 20  # trials per cell
    slope: float = -0.5  # the theory's exponent
    tolerance: float = 0.15  # |fitted slope - slope| allowed


SMOKE = Config(models=("sensing",), d_out=6, d_in=6, users_series=(2, 4), fixed_samples=12, samples_series=(12, 48),
               fixed_users=2, trials=3)


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=1)  # the trace's entry 0 is the initialization
    out = []
    for model in config.models:
        def cell(users, n, pad):
            pc = ProblemConfig(model=model, users=users, d_out=config.d_out, d_in=config.d_in, rank=config.rank,
                               samples=n, test_samples=0)
            return Cell(pc, fc, config.trials, config.seed, "colora", pad)
        out += [(("users", model, k), cell(k, config.fixed_samples, 0)) for k in config.users_series]
        pad = max(config.samples_series)
        out += [(("samples", model, n), cell(config.fixed_users, n, pad)) for n in config.samples_series]
    return out


def initial_distance(result: dict) -> np.ndarray:
    tr = result["trace"]
    return np.fmax(np.asarray(tr["subspace_distance_U"], float)[:, 0], np.asarray(tr["subspace_distance_V"], float)[:, 0])


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=_common.with_trace, tag="trace")
    dist = {label: initial_distance(res) for (label, _), res in zip(labelled, sw.results)}
    fig, axes = plotting.panels(len(config.models), width=5.0)
    results, measured, passed = {}, {}, True
    for ax, model in zip(axes, config.models):
        series = {
            "users": ([k * config.fixed_samples for k in config.users_series],
                      [dist[("users", model, k)] for k in config.users_series],
                      f"more users (n={config.fixed_samples})"),
            "samples": ([config.fixed_users * n for n in config.samples_series],
                        [dist[("samples", model, n)] for n in config.samples_series],
                        f"more samples per user (k={config.fixed_users})"),
        }
        results[model] = {}
        for name, (total, values, label) in series.items():
            values = np.stack(values)
            slope, intercept = _common.loglog_fit(total, np.median(values, axis=1))
            line = plotting.band(ax, total, values, f"{label}: slope {slope:.2f}", log=True)
            plotting.fitted_line(ax, total, slope, intercept, None, color=line.get_color())
            passed = passed and abs(slope - config.slope) <= config.tolerance
            measured[f"{model}_slope_{name}"] = round(slope, 3)
            results[model][name] = {"total_samples": total, "median_distance": np.median(values, axis=1), "slope": slope}
        plotting.grid_axes(ax, "total samples N = k n (log)", "initial subspace distance, max over U,V (log)",
                           xlog=True, ylog=True, title=f"{model}: spectral initialization (theory: slope -1/2)")
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           f"Spectral initialization error (median and 25-75% over {config.trials} trials; dashed: fit)")
    claim = (f"the spectral initialization's subspace distance decays as N^(-1/2) in the total samples"
             f" (slope {config.slope} +- {config.tolerance}, over users and over samples per user, both models)")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured, results=results,
                   started=started, figure=figure)


if __name__ == "__main__":
    main()
