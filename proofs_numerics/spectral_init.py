"""Spectral initialization: its error has a 1/sqrt(N) term and a per-user 1/n term, both predicted.

The initialization takes the top-r eigenvectors of M_hat = sum_i W_i_hat W_i_hat^T (and of
sum_i W_i_hat^T W_i_hat for V), W_i_hat = (1/n) sum_j y_ij X_ij the moment estimate of user i
(noiseless data here). Write W_i_hat = W_i + E_i. To first order the subspace error is
||P_perp Delta U*|| / gap, with Delta the fluctuation of (1/k) sum_i (E_i W_i^T + W_i E_i^T +
E_i E_i^T) around its mean, and gap the distance between the signal and complement eigenvalues
of the mean (S_i* orthogonal, so the signal block of (1/k) sum_i W_i W_i^T is the identity):

* sensing: E_i has nearly independent entries of variance ||W_i||_F^2 / n = r / n, so
  P_perp E_i W_i^T U* (a (d - r) x r block) has entries of variance r / n and
  P_perp E_i E_i^T U* entries of variance d_in r^2 / n^2; averaged over k independent users:
  dist^2 = c^2 (r / N) (1 + r d_in / n), N = k n (the mean of E_i E_i^T is r d_in / n times the
  identity plus W_i W_i^T / n: the gap widens to 1 + 1/n, negligible beside r d_in / n);
* regression: W_i_hat = W_i Sigma_i with Sigma_i = I + D_i the sample covariance of user i's
  inputs, so U is exact (columns in span(U*)) and the V side's moment matrix is
  (1/k) sum_i Sigma_i P Sigma_i, P = V* V*^T. For Gaussian inputs E[D A D] = (A^T + tr(A) I) / n,
  so its mean is (1 + (r + 1)/n) P + (r / n) P_perp: the signal block gains (r + 1)/n and the
  complement r/n, and the gap is 1 + 1/n (not a shift of every eigenvalue alike). Its
  off-diagonal block per user is Z (I + Y), Z = V_perp^T D V (entries of variance 1/n),
  Y = V^T D V, both built from the same inputs' projections b = V^T x: E_a[Z^T Z] =
  ((d_in - r)/n)(I + Y), so E||Z (I + Y)||^2 = ((d_in - r) r / n) E tr((I + Y)^3) / r =
  ((d_in - r) r / n)(1 + 3 (r + 1)/n + O(1/n^2)) (the 1, the cross term 2 (r + 1)/n, and
  E||Y||^2 = r (r + 1)/n). Divided by the gap squared, (1 - 2/n): dist^2 = c^2 (1 / N)
  (1 + (3 r + 1) / n), B / A = 3 r + 1 (7 at r = 2); a Monte Carlo of E tr((I + Y)^3) / (1 + 1/n)^2
  gives 1.688, 1.345, 1.174 at n = 10, 20, 40 against 1 + 7/n = 1.7, 1.35, 1.175;

with c the typical operator norm of a (d - r) x r standard Gaussian matrix, taking the larger of
the U and V sides: c is computed here by Monte Carlo of Gaussian matrices (theory, not data).
So at fixed n the error falls as N^(-1/2), but the level depends on n: the series "more users at
fixed n" and "more samples per user at fixed k" do *not* lie on one line (a/sqrt(N) + b/n at
fixed k), and N dist^2 = A + B / n is a straight line in 1/n.

Claims (bounds fixed before the run), on the points in the first-order regime (predicted
distance <= ``first_order``):

1. The prediction, which has no fitted constant, matches: median distance / predicted in
   [0.75, 1.25] (95% order-statistic interval) at every such point (first-order perturbation and
   the approximate Gaussian operator norm: 25%).
2. Both terms are there: the least-squares fit N dist^2 = A + B / n over those points gives B / A
   within a factor 2 of the predicted r d_in (sensing) or 3 r + 1 (regression) (bootstrap interval
   over trials), where a single N^(-1/2) law (B = 0) would fail. The regression prediction was
   re-derived (above) after an earlier run measured B / A = 6.6 [4.3, 8.5] against the old r; it
   is registered here before the confirmation run on a fresh seed, which decides the verdict.

    python -m proofs_numerics.spectral_init [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from colora_jax import Cell, FitConfig, ProblemConfig, plotting, statistics
from proofs_numerics import _common

NAME = "spectral_init"


@dataclasses.dataclass(frozen=True)
class Config:
    """Three series of total sample sizes: more users at two n, and more samples per user at fixed k."""

    seed: int = 0  # PRNG seed of every cell
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r
    users_series: tuple[int, ...] = (5, 20, 80, 320)  # k with n = fixed_samples
    fixed_samples: int = 40  # n in the users series
    small_users_series: tuple[int, ...] = (40, 160, 640, 2560)  # k with n = small_samples: the 1/n term large
    small_samples: int = 10  # n of that series
    samples_series: tuple[int, ...] = (40, 160, 640, 2560)  # n with k = fixed_users
    fixed_users: int = 5  # k in the samples series
    trials: int = 20  # trials per cell
    first_order: float = 0.3  # claims use the points whose predicted distance is at most this
    tolerance: float = 0.25  # claim 1: median measured / predicted within 1 +- this
    ratio_factor: float = 2.0  # claim 2: fitted B / A within this factor of the prediction
    gaussian_draws: int = 20000  # Monte Carlo draws for the typical operator norm c
    level: float = 0.95  # confidence level of every interval


SMOKE = Config(
    models=("sensing",),
    d_out=6,
    d_in=6,
    users_series=(2, 4),
    fixed_samples=12,
    small_users_series=(4, 8),
    small_samples=6,
    samples_series=(12, 48),
    fixed_users=2,
    trials=3,
    gaussian_draws=200,
)


def series(config: Config) -> dict[str, list[tuple[int, int]]]:
    """(k, n) of every point of each series."""
    return {
        f"more users, n={config.fixed_samples}": [(k, config.fixed_samples) for k in config.users_series],
        f"more users, n={config.small_samples}": [(k, config.small_samples) for k in config.small_users_series],
        f"more samples per user, k={config.fixed_users}": [(config.fixed_users, n) for n in config.samples_series],
    }


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=1)  # the trace's entry 0 is the initialization
    out, seen = [], set()
    for model in config.models:
        pad = max(config.samples_series)
        for points in series(config).values():
            for k, n in points:
                if (model, k, n) in seen:
                    continue
                seen.add((model, k, n))
                pc = ProblemConfig(
                    model=model,
                    users=k,
                    d_out=config.d_out,
                    d_in=config.d_in,
                    rank=config.rank,
                    samples=n,
                    test_samples=0,
                )
                grouped = k == config.fixed_users and n in config.samples_series  # one program for the n series
                out.append(((model, k, n), Cell(pc, fc, config.trials, config.seed, "colora", pad if grouped else 0)))
    return out


def initial_distance(result: dict) -> np.ndarray:
    tr = result["trace"]
    return np.fmax(
        np.asarray(tr["subspace_distance_U"], float)[:, 0], np.asarray(tr["subspace_distance_V"], float)[:, 0]
    )


def typical_norm(config: Config) -> float:
    """Median of max(||G_U||, ||G_V||) for independent (d - r) x r standard Gaussian matrices.

    Regression's U side is exact without noise, so there only the V side counts.
    """
    rng = np.random.default_rng(12345)
    r = config.rank
    gu = np.linalg.norm(rng.standard_normal((config.gaussian_draws, config.d_out - r, r)), ord=2, axis=(1, 2))
    gv = np.linalg.norm(rng.standard_normal((config.gaussian_draws, config.d_in - r, r)), ord=2, axis=(1, 2))
    return float(np.median(np.fmax(gu, gv))), float(np.median(gv))


def prediction(config: Config, model: str, c: float) -> tuple[float, float]:
    """``(A, B)`` of the first-order law ``dist^2 = (A + B / n) / N`` (module docstring)."""
    r = config.rank
    if model == "sensing":
        return c * c * r, c * c * r * r * config.d_in
    return c * c, c * c * (3 * r + 1)


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=_common.with_trace, tag="trace")
    dist = {label: initial_distance(res) for (label, _), res in zip(labelled, sw.results)}
    c_both, c_v = typical_norm(config)
    claims = _common.Claims()
    fig, axes = plotting.panels(2 * len(config.models), rows=len(config.models), width=5.2, height=3.9)
    results, measured = {"typical_norm": {"U_and_V": c_both, "V": c_v}}, {}
    for row, model in enumerate(config.models):
        ax, bx = axes[2 * row], axes[2 * row + 1]
        A, B = prediction(config, model, c_both if model == "sensing" else c_v)
        results[model] = {"A_predicted": A, "B_predicted": B, "series": {}}
        used = []  # (k, n, per-trial distances) in the first-order regime
        for (name, points), marker in zip(series(config).items(), "osD"):
            N = np.array([k * n for k, n in points], float)
            values = np.stack([dist[(model, k, n)] for k, n in points])
            pred = np.sqrt((A + B / np.array([n for _, n in points])) / N)
            line = plotting.band(ax, N, values, name, marker=marker, log=True)
            ax.plot(N, pred, ls=":", lw=1.5, color=line.get_color())
            med = np.median(values, axis=1)
            bx.plot(1 / np.array([n for _, n in points], float), N * med**2, marker, color=line.get_color(), label=name)
            results[model]["series"][name] = {"points": points, "median": med, "predicted": pred}
            for (k, n), v, p in zip(points, values, pred):
                if p <= config.first_order:
                    q = statistics.median_interval(v / p, config.level)
                    claims.add(
                        f"{model} k={k} n={n}: measured/predicted",
                        q.median,
                        q.low,
                        q.high,
                        lower=1 - config.tolerance,
                        upper=1 + config.tolerance,
                        source="first-order perturbation of the second-moment matrix",
                    )
                    if (k, n) not in [(a, b) for a, b, _ in used]:
                        used.append((k, n, v))

        def fit(*samples, used=used):
            """Least squares of N median(dist)^2 = A + B / n over the first-order points: B / A."""
            x = np.array([1 / n for _, n, _ in used])
            y = np.array([k * n * np.median(s) ** 2 for (k, n, _), s in zip(used, samples)])
            slope, intercept = np.polyfit(x, y, 1)
            return slope / intercept

        if len({n for _, n, _ in used}) >= 2:
            value, low, high = statistics.bootstrap_interval(
                fit, *[v for _, _, v in used], level=config.level, resamples=1000, seed=config.seed
            )
            claims.add(
                f"{model}: fitted B/A (predicted {B / A:g})",
                value,
                low,
                high,
                lower=B / A / config.ratio_factor,
                upper=B / A * config.ratio_factor,
                source="the per-user E_i E_i^T term of the moment matrix",
            )
            measured[f"{model}_B_over_A"] = [round(value, 2), round(B / A, 2)]
        xs = np.linspace(0, 1 / min(config.small_samples, config.fixed_samples), 50)
        bx.plot(xs, A + B * xs, ls=":", color="k", label=f"predicted N dist^2 = {A:.0f} + {B:.0f}/n")
        plotting.grid_axes(
            bx,
            "1 / samples per user",
            "N x median distance^2",
            title=f"{model}: the 1/n term (a single N^-1/2 law is flat here)",
        )
        bx.set_ylim(0, None)
        ax.axhline(config.first_order, color="gray", lw=0.6, ls="--")
        plotting.grid_axes(
            ax,
            "total samples N = k n (log)",
            "initial distance max(U, V) (log)",
            xlog=True,
            ylog=True,
            title=f"{model}: dotted: predicted (no fitted constant); dashed: first-order limit",
        )
        _common.plain_log_ticks(ax)
    figure = plotting.save(
        fig,
        os.path.join(args.out, f"{NAME}.png"),
        f"Spectral initialization error (median and 25-75% over {config.trials} trials)",
    )
    claim = (
        f"the spectral initialization's error follows the first-order prediction c sqrt((A + B/n)/N) within"
        f" {config.tolerance:.0%} (no fitted constant), and the fitted B/A is within {config.ratio_factor:g}x of"
        " the predicted one (both models)"
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
