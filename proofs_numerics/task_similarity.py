"""Task similarity: per-user error of CoLoRA, local LoRA, one global LoRA and the oracle.

Users' tasks are tilted from the shared subspaces by a principal angle (task_angle), or carry a
personal full-rank deviation. Claim: at task_angle 0 CoLoRA has a lower mean per-user error than
local LoRA and the global adapter and is within 1.5x of the oracle (shared U*, V* given, only S_i
fitted); as the angle grows local LoRA overtakes CoLoRA inside the angle grid, and the measured
crossover angle is reported next to its prediction sin(theta*) = local error / sqrt(2) (the bias
of sharing a subspace tilted by theta on both sides, about sqrt(2) sin(theta) in relative error).

Error: per-user relative error ||W_i_hat - W_i*||_F / ||W_i*||_F, averaged over users and trials.

    python -m proofs_numerics.task_similarity [--smoke] [--fresh] [--no-progress]
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

NAME = "task_similarity"
STYLE = {"colora": ("tab:blue", "o"), "local": ("tab:orange", "s"), "global": ("tab:green", "^"),
         "oracle": ("k", "x")}


@dataclasses.dataclass(frozen=True)
class Config:
    """Sweeps over the task angle and over the deviation, regression model (the LoRA-faithful one)."""

    seed: int = 0  # PRNG seed of every cell (all methods see the same problems)
    model: str = "regression"  # measurement model
    users: int = 20  # k
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r of the truth and of every fitted adapter
    samples: int = 40  # n per user: above local LoRA's threshold (d_in), so local LoRA works
    noise: float = 0.1  # noise std: sets local LoRA's error, hence where the crossover lies
    methods: tuple[str, ...] = ("colora", "local", "global", "oracle")  # baselines.METHODS names
    angles: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0)  # task_angle grid (radians); one compile per angle and method
    deviations: tuple[float, ...] = (0.1, 0.5)  # deviation grid (at angle 0; 0 is the angle sweep's first)
    trials: int = 20  # trials per cell
    iters: int = 50  # iteration budget of the iterative methods
    oracle_factor: float = 1.5  # CoLoRA within this factor of the oracle at angle 0


SMOKE = Config(users=3, d_out=6, d_in=6, rank=1, samples=10, methods=("colora", "local"), angles=(0.0, 1.0), deviations=(),
               trials=2, iters=10)


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=config.iters)
    out = []
    settings = [("angle", a, a, 0.0) for a in config.angles] + [("deviation", v, 0.0, v) for v in config.deviations]
    for sweep_name, value, angle, deviation in settings:
        pc = ProblemConfig(model=config.model, users=config.users, d_out=config.d_out, d_in=config.d_in,
                           rank=config.rank, samples=config.samples, test_samples=0, noise=config.noise,
                           task_angle=angle, deviation=deviation)
        out += [((sweep_name, value, m), Cell(pc, fc, config.trials, config.seed, m)) for m in config.methods]
    return out


def crossing(x, a, b) -> float:
    """First x where ``a - b`` changes sign from negative to non-negative (linear interpolation)."""
    diff = np.asarray(a) - np.asarray(b)
    for i in range(1, len(x)):
        if diff[i - 1] < 0 <= diff[i]:
            return float(x[i - 1] + (x[i] - x[i - 1]) * -diff[i - 1] / (diff[i] - diff[i - 1]))
    return float("nan")


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    error = {lab: float(np.mean(np.asarray(res["evaluation"]["per_user_rel_error"], float)))
             for (lab, _), res in zip(labelled, sw.results)}
    curves = {
        "angle": {m: [error[("angle", a, m)] for a in config.angles] for m in config.methods},
        "deviation": {m: [error[("angle", 0.0, m)]] + [error[("deviation", v, m)] for v in config.deviations]
                      for m in config.methods},
    }
    deviations = (0.0,) + tuple(config.deviations)
    fig, axes = plotting.panels(2, width=5.2)
    for ax, (name, xs, label) in zip(axes, (("angle", config.angles, "task angle theta (radians)"),
                                            ("deviation", deviations, "deviation ||D_i||_F / ||U_i S_i V_i^T||_F"))):
        for m in config.methods:
            color, marker = STYLE.get(m, (None, "o"))
            ax.plot(xs, curves[name][m], marker=marker, color=color, label=m)
        ax.set_xscale("symlog", linthresh=xs[1] if len(xs) > 1 else 1.0)
        plotting.grid_axes(ax, f"{label} (symlog)", "mean per-user rel. error (log)", ylog=True,
                           title=f"{config.model}: k={config.users}, n={config.samples}, noise {config.noise:g}")
    a = curves["angle"]
    theta = crossing(config.angles, a["colora"], a["local"])
    predicted = float(np.arcsin(min(1.0, a["local"][0] / np.sqrt(2))))
    if np.isfinite(theta):
        axes[0].axvline(theta, color="gray", ls=":", label=f"crossover {theta:.3f} rad")
        axes[0].legend(fontsize=7)
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           f"Task similarity: mean per-user error over {config.trials} trials (all methods on the same problems)")
    nan = [float("nan")]
    passed = bool(a["colora"][0] < a["local"][0] and a["colora"][0] < a.get("global", nan)[0]
                  and a["colora"][0] <= config.oracle_factor * a.get("oracle", nan)[0] and np.isfinite(theta))
    measured = {"angle0_errors": {m: round(a[m][0], 4) for m in config.methods},
                "crossover_angle": round(theta, 4), "predicted_crossover_angle": round(predicted, 4)}
    claim = (f"at task angle 0 CoLoRA beats local and global and is within {config.oracle_factor}x of the oracle;"
             f" local LoRA overtakes CoLoRA at a crossover angle inside the grid ({config.model})")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured,
                   results={"angles": config.angles, "deviations": deviations, **curves}, started=started,
                   figure=figure)


if __name__ == "__main__":
    main()
