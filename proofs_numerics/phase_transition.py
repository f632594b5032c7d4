"""Recovery phase transition: probability of exact recovery against samples per user.

Claim: with k collaborating users the 50% recovery threshold n50(k) moves toward the
degrees-of-freedom minimum (sensing: m*(k) = r^2 + r (d_out + d_in - 2r) / k; regression:
r + (d_in - r) / k, see ``_common.dof_regression``) as k grows -- n50(k) / m*(k) does not grow
with k and is smaller at the largest k than at k = 1 -- and collaboration needs several (>= 3)
times fewer samples per user than local LoRA (every user fitting its own rank-r adapter alone).

Exact recovery: stacked relative error ||W_hat - W*||_F / ||W*||_F <= 1e-3 over all users of a
trial (local LoRA: per user, since its users are independent problems). Each k has its own
grid of samples per user, ``m*(k) * geomspace(lo, hi)``, so every transition is resolved.

    python -m proofs_numerics.phase_transition [--smoke] [--fresh] [--no-progress]
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

NAME = "phase_transition"


@dataclasses.dataclass(frozen=True)
class Config:
    """The phase diagram: models x users x samples per user x trials."""

    seed: int = 0  # PRNG seed of every cell (common random numbers across sample sizes)
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    users: tuple[int, ...] = (1, 5, 20, 100)  # k, number of collaborating users
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r, planted and fitted rank
    points: int = 12  # sample sizes per (model, k)
    grid_lo: float = 0.75  # smallest sample size, in units of m*(k) (raised to the S-step minimum)
    grid_hi: float = 4.0  # largest sample size, in units of m*(k) (observed transitions: 1.3-1.6 m*)
    trials: int = 50  # independent trials per cell
    iters: int = 50  # AltMin iteration budget (spectral initialization)
    tol: float = 1e-7  # AltMin stops when the objective's relative decrease is below tol
    local_users: int = 5  # users in the local-LoRA cells (each fits alone; success counted per user)
    ratio_slack: float = 1.1  # n50/m* may grow by at most this factor from one k to the next
    local_factor: float = 3.0  # "several times fewer": local n50 >= this x CoLoRA's n50 at the largest k


SMOKE = Config(models=("sensing",), users=(1, 4), d_out=6, d_in=6, points=4, trials=4, iters=20, local_users=2)


def reference(config: Config, model: str, users: int) -> float:
    """The degrees-of-freedom minimum of samples per user for this model and k."""
    if model == "sensing":
        return _common.dof_sensing(users, config.d_out, config.d_in, config.rank)
    return _common.dof_regression(users, config.d_in, config.rank)


def grid(config: Config, model: str, users: int) -> list[int]:
    return _common.sample_grid(min_samples(model, config.rank, "full"), reference(config, model, users),
                               config.grid_lo, config.grid_hi, config.points)


def cells(config: Config):
    """Every (model, k, n) CoLoRA cell and every (model, n) local-LoRA cell, in sweep order."""
    fc = FitConfig(rank=config.rank, iters=config.iters, tol=config.tol)
    out = []
    for model in config.models:
        runs = [(k, "colora", k) for k in config.users] + [(config.local_users, "local", 1)]
        for users, method, ref_users in runs:
            ns = grid(config, model, ref_users)
            for n in ns:
                pc = ProblemConfig(model=model, users=users, d_out=config.d_out, d_in=config.d_in, rank=config.rank,
                                   samples=n, test_samples=0)
                out.append(((model, method, users, n), Cell(pc, fc, config.trials, config.seed, method, max(ns))))
    return out


def success(result: dict, method: str) -> float:
    ev = result["evaluation"]
    if method == "local":
        return float(np.mean(np.asarray(ev["per_user_rel_error"], float) <= _common.SUCCESS))
    return float(np.mean(np.asarray(ev["rel_error"], float) <= _common.SUCCESS))


def plot(config: Config, curves: dict, path: str) -> str:
    fig, axes = plotting.panels(2 * len(config.models), rows=len(config.models), width=5.2, height=3.9)
    colors = dict(zip(config.users, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]))
    for row, model in enumerate(config.models):
        ax, hm = axes[2 * row], axes[2 * row + 1]
        for k in config.users:
            c = curves[model]["colora"][str(k)]
            ax.plot(c["samples"], c["success"], marker="o", ms=3, color=colors[k],
                    label=f"CoLoRA k={k} (n50/m*={c['n50'] / c['m_star']:.2f})")
            ax.axvline(c["m_star"], color=colors[k], ls=":", lw=1)
        loc = curves[model]["local"]
        ax.plot(loc["samples"], loc["success"], marker="s", ms=3, color="k", label="local LoRA (each user alone)")
        ax.plot([], [], color="gray", ls=":", label="dotted: m*(k), dof minimum")
        ticks = [t for t in (2, 5, 10, 20, 50, 100, 200, 500) if t <= max(loc["samples"])]
        plotting.grid_axes(ax, "samples per user n (log)", "P(exact recovery)", xlog=True, xticks=ticks,
                           title=f"{model}: rel. error <= {_common.SUCCESS:g}")
        # heatmap: one column per k, each with its own sample sizes (cell edges midway in log n)
        for j, k in enumerate(config.users):
            c = curves[model]["colora"][str(k)]
            n = np.asarray(c["samples"], float)
            mids = np.sqrt(n[1:] * n[:-1])
            edges = np.concatenate([[n[0] ** 2 / mids[0]], mids, [n[-1] ** 2 / mids[-1]]]) if n.size > 1 else n * [0.8, 1.25]
            mesh = hm.pcolormesh([j - 0.5, j + 0.5], edges, np.asarray(c["success"])[:, None], vmin=0, vmax=1,
                                 cmap="viridis", shading="flat")
            hm.plot([j - 0.5, j + 0.5], [c["m_star"]] * 2, color="w", ls="--", lw=1.5)
        hm.set_xticks(range(len(config.users)), [str(k) for k in config.users])
        hm.set_yscale("log")
        hm.set_xlabel("users k")
        hm.set_ylabel("samples per user n (log)")
        hm.set_title(f"{model}: P(exact recovery); white dashes: m*(k)", fontsize=10)
        fig.colorbar(mesh, ax=hm, label="P(exact recovery)")
    return plotting.save(fig, path, f"Recovery phase transition, d_out=d_in={config.d_out}, r={config.rank},"
                                    f" {config.trials} trials per cell")


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    curves = {m: {"colora": {}, "local": {}} for m in config.models}
    for ((model, method, users, n), cell), result in zip(labelled, sw.results):
        entry = curves[model]["local"] if method == "local" else curves[model]["colora"].setdefault(str(users), {})
        entry.setdefault("samples", []).append(n)
        entry.setdefault("success", []).append(success(result, method))
    measured, passed = {}, True
    for model in config.models:
        ratios = []
        for k in config.users:
            c = curves[model]["colora"][str(k)]
            c["m_star"] = reference(config, model, k)
            c["n50"] = _common.threshold(c["samples"], c["success"])
            ratios.append(c["n50"] / c["m_star"])
        loc = curves[model]["local"]
        loc["m_star"] = reference(config, model, 1)
        loc["n50"] = _common.threshold(loc["samples"], loc["success"])
        speedup = loc["n50"] / curves[model]["colora"][str(config.users[-1])]["n50"]
        moves = ratios[-1] < ratios[0] and all(b <= config.ratio_slack * a for a, b in zip(ratios, ratios[1:]))
        passed = passed and moves and speedup >= config.local_factor
        measured[f"{model}_n50_over_mstar"] = [round(r, 2) for r in ratios]
        measured[f"{model}_local_over_colora_n50"] = round(speedup, 2)
    figure = plot(config, curves, os.path.join(args.out, f"{NAME}.png"))
    claim = (f"n50(k)/m*(k) shrinks toward 1 as k grows (k={list(config.users)}) and local LoRA needs"
             f" >= {config.local_factor:g}x more samples per user than CoLoRA at k={config.users[-1]} (both models)")
    timing = {"phase_diagram_seconds": round(sw.seconds, 1) if sw.reused == 0 else None,
              "cpu_seconds": round(_common.cpu_seconds(), 1), "load_average": os.getloadavg(),
              "cells_computed": sw.computed, "cells_reused": sw.reused}
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured={**measured, **timing},
                   results=curves, started=started, figure=figure, extra={"timing": timing})


if __name__ == "__main__":
    main()
