"""Noise floor: recovery error against the noise level and against the number of users.

Claim: with noise of standard deviation sigma the error is proportional to sigma (fitted
log-log slope within 1 +- 0.15), and at fixed sigma it follows the parameter count per user:
the stacked relative error ||W_hat - W*||_F / ||W*||_F stays within a factor 1.5 of

    sigma * sqrt(m*(k) / n) / ||S_i*||_F,   m*(k) = r^2 + r (d_out + d_in - 2 r) / k,

the least-squares error of m*(k) parameters per user when n samples give the Fisher information
n I / sigma^2 on vec(W_i) -- true of both models (sensing: E[vec X vec X^T] = I; regression:
E[x x^T] (x) I_{d_out} = I). It falls as k grows toward the personal floor sigma r / sqrt(n r),
and is non-increasing in k. (A first version divided by d_out "equations per sample" for
regression; the measured ratio 4.5 = sqrt(20) exposed that error in the derivation.)

    python -m proofs_numerics.noise_floor [--smoke] [--fresh] [--no-progress]
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

NAME = "noise_floor"


@dataclasses.dataclass(frozen=True)
class Config:
    """A noise sweep at fixed k, and a users sweep at fixed noise, at one sample size per model."""

    seed: int = 0  # PRNG seed of every cell
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r (S_i* has singular values 1, so ||S_i*||_F = sqrt(r))
    samples: tuple[int, ...] = (200, 80)  # n per model: above local LoRA's threshold, so k = 1 recovers
    noise_users: int = 20  # k in the noise sweep
    noises: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # sigma in the noise sweep
    users: tuple[int, ...] = (1, 5, 20, 100)  # k in the users sweep
    users_noise: float = 1e-2  # sigma in the users sweep
    trials: int = 20  # trials per cell
    iters: int = 50  # AltMin iteration budget
    slope_tolerance: float = 0.15  # |fitted slope - 1| allowed
    prediction_factor: float = 1.5  # measured / predicted error allowed in [1/f, f]
    monotone_slack: float = 1.05  # error(k_next) <= slack * error(k)


SMOKE = Config(models=("sensing",), d_out=6, d_in=6, samples=(60,), noise_users=4, noises=(1e-3, 1e-2), users=(2, 4),
               trials=3, iters=20)


def predicted(config: Config, users: int, n: int, noise: float) -> float:
    dof = _common.dof_sensing(users, config.d_out, config.d_in, config.rank)
    return noise * np.sqrt(dof / n) / np.sqrt(config.rank)


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=config.iters)
    out = []
    for model, n in zip(config.models, config.samples):
        def cell(users, noise):
            pc = ProblemConfig(model=model, users=users, d_out=config.d_out, d_in=config.d_in, rank=config.rank,
                               samples=n, test_samples=0, noise=noise)
            return Cell(pc, fc, config.trials, config.seed)
        out += [(("noise", model, s), cell(config.noise_users, s)) for s in config.noises]
        out += [(("users", model, k), cell(k, config.users_noise)) for k in config.users]
    return out


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    errors = {}
    for (label, result) in zip([lab for lab, _ in labelled], sw.results):
        errors[label] = np.asarray(result["evaluation"]["rel_error"], float)
    fig, axes = plotting.panels(2 * len(config.models), rows=len(config.models), width=5.0, height=3.7)
    results, measured, passed = {}, {}, True
    for row, (model, n) in enumerate(zip(config.models, config.samples)):
        ax, bx = axes[2 * row], axes[2 * row + 1]
        noise_err = np.stack([errors[("noise", model, s)] for s in config.noises], axis=0)
        slope, intercept = _common.loglog_fit(config.noises, np.median(noise_err, axis=1))
        plotting.band(ax, config.noises, noise_err, f"CoLoRA, k={config.noise_users}, n={n}", log=True)
        plotting.fitted_line(ax, config.noises, slope, intercept, f"fit: slope {slope:.3f}")
        ax.plot(config.noises, [predicted(config, config.noise_users, n, s) for s in config.noises],
                ls=":", color="gray", label="prediction sigma sqrt(m*(k)/n)/||S||")
        plotting.grid_axes(ax, "noise std sigma (log)", "rel. error ||W-W*||_F/||W*||_F (log)", xlog=True, ylog=True,
                           title=f"{model}: error against noise")
        users_err = np.stack([errors[("users", model, k)] for k in config.users], axis=0)
        median = np.median(users_err, axis=1)
        pred = np.array([predicted(config, k, n, config.users_noise) for k in config.users])
        plotting.band(bx, config.users, users_err, f"CoLoRA, sigma={config.users_noise:g}, n={n}", log=True)
        bx.plot(config.users, pred, ls=":", color="gray", marker="x", label="prediction sigma sqrt(m*(k)/n)/||S||")
        bx.axhline(predicted(config, 10**9, n, config.users_noise), color="k", lw=0.8, ls="--",
                   label="personal floor (k -> inf)")
        plotting.grid_axes(bx, "users k (log)", "rel. error (log)", xlog=True, ylog=True, xticks=config.users,
                           title=f"{model}: error against users")
        ratio = median / pred
        ok = (abs(slope - 1) <= config.slope_tolerance
              and all(1 / config.prediction_factor <= q <= config.prediction_factor for q in ratio)
              and all(b <= config.monotone_slack * a for a, b in zip(median, median[1:])))
        passed = passed and ok
        measured[f"{model}_noise_slope"] = round(slope, 3)
        measured[f"{model}_measured_over_predicted"] = [round(float(q), 2) for q in ratio]
        results[model] = {"samples": n, "noises": config.noises, "noise_sweep_median": np.median(noise_err, axis=1),
                          "noise_slope": slope, "users": config.users, "users_sweep_median": median,
                          "users_sweep_predicted": pred}
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           f"Noise floor (median and 25-75% over {config.trials} trials)")
    claim = (f"error is proportional to noise (log-log slope 1 +- {config.slope_tolerance}) and, against k, within"
             f" {config.prediction_factor}x of sigma sqrt(m*(k)/n)/||S*||, non-increasing (both models)")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured, results=results,
                   started=started, figure=figure)


if __name__ == "__main__":
    main()
