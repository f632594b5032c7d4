"""Noise floor: recovery error against the noise level and against the number of users.

Near the truth CoLoRA's estimate is least squares on the tangent space of the model, so the
stacked relative error ||W_hat - W*||_F / ||W*||_F is, for large n,

    sigma * sqrt(m*(k) / n) / ||S_i*||_F,   m*(k) = r^2 + r (d_out + d_in - 2 r) / k,

the least-squares error of m*(k) parameters per user when n samples give the Fisher information
n I / sigma^2 on vec(W_i) -- true of both models (sensing: E[vec X vec X^T] = I; regression:
E[x x^T] (x) I_{d_out} = I). At finite n each block of parameters carries the Gaussian-design
factor M / (M - q - 1) of a least squares with q regressors and M equations
(``_common.noise_error``): at k = 1 in the sensing model, n = 200 against m* = 76, that is
sqrt(n / (n - m* - 1)) = 1.27, which the first version of this prediction left out.

Claims (bounds fixed before the run):

1. The error is proportional to sigma: fitted log-log slope in [0.95, 1.05] (95% interval; a
   smooth estimator's error is linear in sigma up to O(sigma^2) terms).
2. Against k at fixed sigma, the median error over trials / the prediction with the finite-sample
   factors lies in [0.9, 1.1] (95% interval) at every k: the prediction has no fitted constant.
   (40 trials per k: with 20, the k = 1 intervals were [0.90, 1.05] and [0.89, 1.05], medians
   0.997 and 0.968 -- undecided for lack of trials, so the count was raised; the bound was not.)
3. The error is non-increasing in k (median at the next k <= 1.05 x the median at this k).

(History: a first version divided by d_out "equations per sample" for regression; the measured
ratio 4.5 = sqrt(20) exposed that error in the derivation. A second version had no finite-sample
factor and a 1.5x tolerance; the k = 1 sensing ratio 1.20 was that factor.)

    python -m proofs_numerics.noise_floor [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from colora_jax import Cell, FitConfig, ProblemConfig, plotting, statistics
from proofs_numerics import _common

NAME = "noise_floor"


@dataclasses.dataclass(frozen=True)
class Config:
    """A noise sweep at fixed k, and a users sweep at fixed noise, at one sample size per model."""

    seed: int = 0  # PRNG seed of every cell
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r (S_i* has singular values 1, so ||S_i*||_F = sqrt(r))
    samples: tuple[int, ...] = (200, 80)  # n per model: above local LoRA's threshold, so k = 1 recovers
    noise_users: int = 20  # k in the noise sweep
    noises: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # sigma in the noise sweep
    users: tuple[int, ...] = (1, 5, 20, 100)  # k in the users sweep
    users_noise: float = 1e-2  # sigma in the users sweep
    trials: int = 20  # trials per cell of the noise sweep
    users_trials: int = 40  # trials per cell of the users sweep (claim 2's intervals: +-5% needs ~40 at k = 1)
    iters: int = 50  # AltMin iteration budget
    slope_tolerance: float = 0.05  # claim 1: the slope's interval inside 1 +- this
    prediction_tolerance: float = 0.1  # claim 2: measured / predicted error's interval inside 1 +- this
    monotone_slack: float = 1.05  # claim 3: error(k_next) <= slack * error(k)
    level: float = 0.95  # confidence level of every interval


SMOKE = Config(
    users_trials=3,
    models=("sensing",),
    d_out=6,
    d_in=6,
    samples=(60,),
    noise_users=4,
    noises=(1e-3, 1e-2),
    users=(2, 4),
    trials=3,
    iters=20,
)


def predicted(config: Config, model: str, users: int, n: int, noise: float) -> float:
    """``_common.noise_error``; ``||S_i*||_F = sqrt(r)`` (condition 1: singular values 1)."""
    return _common.noise_error(model, users, n, config.d_out, config.d_in, config.rank, noise, np.sqrt(config.rank))


def asymptotic(config: Config, users: int, n: int, noise: float) -> float:
    """The large-n prediction ``sigma sqrt(m*(k) / n) / ||S*||_F`` (no finite-sample factor)."""
    dof = _common.dof_sensing(users, config.d_out, config.d_in, config.rank)
    return noise * np.sqrt(dof / n) / np.sqrt(config.rank)


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=config.iters)
    out = []
    for model, n in zip(config.models, config.samples):

        def cell(users, noise, trials, model=model, n=n):
            pc = ProblemConfig(
                model=model,
                users=users,
                d_out=config.d_out,
                d_in=config.d_in,
                rank=config.rank,
                samples=n,
                test_samples=0,
                noise=noise,
            )
            return Cell(pc, fc, trials, config.seed)

        out += [(("noise", model, s), cell(config.noise_users, s, config.trials)) for s in config.noises]
        out += [(("users", model, k), cell(k, config.users_noise, config.users_trials)) for k in config.users]
    return out


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    errors = {
        label: np.asarray(result["evaluation"]["rel_error"], float) for (label, _), result in zip(labelled, sw.results)
    }
    fig, axes = plotting.panels(2 * len(config.models), rows=len(config.models), width=5.0, height=3.8)
    claims = _common.Claims()
    results, measured = {}, {}
    for row, (model, n) in enumerate(zip(config.models, config.samples)):
        ax, bx = axes[2 * row], axes[2 * row + 1]
        noise_err = np.stack([errors[("noise", model, s)] for s in config.noises], axis=0)
        fit = statistics.loglog_fit(config.noises, np.median(noise_err, axis=1), config.level)
        claims.add(
            f"{model}: noise slope",
            fit.slope,
            fit.low,
            fit.high,
            lower=1 - config.slope_tolerance,
            upper=1 + config.slope_tolerance,
            source="first-order perturbation: error linear in sigma",
        )
        plotting.band(ax, config.noises, noise_err, f"CoLoRA, k={config.noise_users}, n={n} (median, 25-75%)", log=True)
        plotting.fitted_line(ax, config.noises, fit.slope, fit.intercept, f"fit: slope {fit.slope:.3f}")
        ax.plot(
            config.noises,
            [predicted(config, model, config.noise_users, n, s) for s in config.noises],
            ls=":",
            color="gray",
            lw=2,
            label="prediction (finite-sample factors)",
        )
        plotting.grid_axes(
            ax,
            "noise std sigma (log)",
            "rel. error ||W-W*||_F/||W*||_F (log)",
            xlog=True,
            ylog=True,
            title=f"{model}: error against noise",
        )
        users_err = np.stack([errors[("users", model, k)] for k in config.users], axis=0)
        median = np.median(users_err, axis=1)
        pred = np.array([predicted(config, model, k, n, config.users_noise) for k in config.users])
        large_n = np.array([asymptotic(config, k, n, config.users_noise) for k in config.users])
        ratios = []
        for k, e, p in zip(config.users, users_err, pred):
            q = statistics.median_interval(e / p, config.level)
            ratios.append(q)
            claims.add(
                f"{model}: measured/predicted at k={k}",
                q.median,
                q.low,
                q.high,
                lower=1 - config.prediction_tolerance,
                upper=1 + config.prediction_tolerance,
                source="least squares on the tangent space, Gaussian-design finite-sample factors",
            )
        monotone = all(b <= config.monotone_slack * a for a, b in zip(median, median[1:]))
        claims.add(
            f"{model}: non-increasing in k (1 = yes)",
            float(monotone),
            float(monotone),
            float(monotone),
            lower=1,
            source="more users, fewer parameters per user",
        )
        plotting.band(bx, config.users, users_err, f"CoLoRA, sigma={config.users_noise:g}, n={n}", log=True)
        bx.plot(
            config.users,
            pred,
            ls=":",
            color="gray",
            lw=2,
            marker="x",
            label="prediction (finite-sample factors); measured/predicted "
            + ", ".join(f"{q.median:.2f}" for q in ratios),
        )
        bx.plot(config.users, large_n, ls="--", color="k", lw=0.8, label="sigma sqrt(m*(k)/n)/||S|| (large n)")
        plotting.grid_axes(
            bx,
            "users k (log)",
            "rel. error (log)",
            xlog=True,
            ylog=True,
            xticks=config.users,
            title=f"{model}: error against users ({config.users_trials} trials)",
        )
        bx.legend(fontsize=7, loc="upper right", framealpha=0.9)
        _common.plain_log_ticks(bx)
        measured[f"{model}_noise_slope"] = round(fit.slope, 3)
        measured[f"{model}_measured_over_predicted"] = [round(q.median, 3) for q in ratios]
        measured[f"{model}_measured_over_large_n"] = [round(float(m / p), 3) for m, p in zip(median, large_n)]
        results[model] = {
            "samples": n,
            "noises": config.noises,
            "noise_sweep_median": np.median(noise_err, axis=1),
            "noise_slope": fit._asdict(),
            "users": config.users,
            "users_sweep_median": median,
            "users_sweep_predicted": pred,
            "users_sweep_large_n": large_n,
            "ratio": [q._asdict() for q in ratios],
        }
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"), "Noise floor (median and 25-75% over trials)")
    claim = (
        f"error is proportional to noise (slope 1 +- {config.slope_tolerance}) and, against k, within"
        f" {config.prediction_tolerance:.0%} of the least-squares prediction with finite-sample factors,"
        " non-increasing (both models)"
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
