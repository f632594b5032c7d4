"""Linear convergence of AltMin: log subspace distance against iteration.

Claim: above the recovery threshold the subspace distance max(dist(U, U*), dist(V, V*))
contracts linearly -- the fitted contraction factor per iteration is < 1 for every sample size,
and does not get worse (grow) with more samples -- and noiseless float64 runs reach machine
precision (median final distance <= 1e-10).

The factor is fitted per trial on log10 of the distance over the iterations where it lies in
(1e-12, 1e-1) (the linear phase, before the float64 floor), and the median over trials is reported.

    python -m proofs_numerics.convergence [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from colora_jax import plotting  # noqa: E402
from colora_jax import FitConfig, ProblemConfig  # noqa: E402
from colora_jax import Cell  # noqa: E402
from proofs_numerics import _common  # noqa: E402

NAME = "convergence"


@dataclasses.dataclass(frozen=True)
class Config:
    """Noiseless float64 AltMin runs at a few multiples of the degrees-of-freedom minimum."""

    seed: int = 0  # PRNG seed of every cell
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    users: int = 20  # k
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r
    multiples: tuple[float, ...] = (2.0, 3.0, 5.0, 8.0)  # samples per user, in units of m*(k)
    trials: int = 20  # trials per sample size
    iters: int = 150  # iteration budget (tol 0: run to the float64 floor; 0.75**150 ~ 1e-19)
    window: tuple[float, float] = (1e-12, 1e-1)  # distances used to fit the contraction factor
    precision: float = 1e-10  # "machine precision": median final distance at most this


SMOKE = Config(models=("sensing",), users=4, d_out=6, d_in=6, multiples=(3.0, 6.0), trials=3, iters=15)


def samples(config: Config, model: str) -> list[int]:
    if model == "sensing":
        ref = _common.dof_sensing(config.users, config.d_out, config.d_in, config.rank)
    else:
        ref = _common.dof_regression(config.users, config.d_in, config.rank)
    return sorted({max(int(round(m * ref)), config.rank**2) for m in config.multiples})


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=config.iters, tol=0.0)
    out = []
    for model in config.models:
        ns = samples(config, model)
        for n in ns:
            pc = ProblemConfig(model=model, users=config.users, d_out=config.d_out, d_in=config.d_in,
                               rank=config.rank, samples=n, test_samples=0, x64=True)
            out.append(((model, n), Cell(pc, fc, config.trials, config.seed, "colora", max(ns))))
    return out


def distance_curves(trace: dict) -> np.ndarray:
    """max(dist U, dist V) per trial and iteration, held at its last value after the fit stopped."""
    d = np.fmax(np.asarray(trace["subspace_distance_U"], float), np.asarray(trace["subspace_distance_V"], float))
    for row in d:
        last = np.nonzero(np.isfinite(row))[0][-1]
        row[last + 1:] = row[last]
    return d


def contraction(curve: np.ndarray, window) -> float:
    """10 ** slope of log10(distance) against iteration over the points inside ``window``."""
    t = np.nonzero((curve > window[0]) & (curve < window[1]))[0]
    if t.size < 2:
        return float("nan")
    return float(10 ** np.polyfit(t, np.log10(curve[t]), 1)[0])


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=_common.with_trace, tag="trace")
    results, measured, passed = {}, {}, True
    fig, axes = plotting.panels(len(config.models))
    for ax, model in zip(axes, config.models):
        factors, finals = [], []
        for ((m, n), _), res in zip(labelled, sw.results):
            if m != model:
                continue
            curves = distance_curves(res["trace"])
            factor = float(np.nanmedian([contraction(c, config.window) for c in curves]))
            final = float(np.median(curves[:, -1]))
            factors.append(factor)
            finals.append(final)
            results.setdefault(model, []).append({"samples": n, "contraction": factor, "final_distance": final,
                                                  "median_curve": np.median(curves, axis=0)})
            plotting.band(ax, np.arange(curves.shape[1]), curves.T, f"n={n}: factor {factor:.2f}", marker="", log=True)
        ax.axhspan(*config.window, color="gray", alpha=0.06, lw=0)
        plotting.grid_axes(ax, "iteration", "subspace distance (log)", ylog=True,
                           title=f"{model}, k={config.users}, {config.d_out}x{config.d_in}, r={config.rank}, float64")
        ok = (all(f < 1 for f in factors) and all(b <= a for a, b in zip(factors, factors[1:]))
              and max(finals) <= config.precision)
        passed = passed and ok
        measured[f"{model}_contraction"] = [round(f, 3) for f in factors]
        measured[f"{model}_final_distance_max"] = max(finals)
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           "AltMin converges linearly: max(sin angle(U,U*), sin angle(V,V*)), median and 25-75% over"
                           f" {config.trials} trials; grey band: fit window")
    claim = ("AltMin's fitted contraction factor is < 1 and non-increasing in samples per user, and noiseless"
             f" float64 runs reach a median final distance <= {config.precision:g} (both models)")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured, results=results,
                   started=started, figure=figure)


if __name__ == "__main__":
    main()
