"""Task similarity: where sharing the subspaces stops paying, predicted and measured.

Users' tasks are varied on one generated problem per trial (so every method and every setting sees
the same designs and noise): the users' subspaces are tilted from the shared U*, V* by a principal
angle theta, ``U_i = U* cos(theta) + E_i sin(theta)`` (``cj.tilt``); the personal parts are given a
common mean, ``S_i = sqrt(m) Q + sqrt(1 - m) S_i^0`` with one orthogonal Q per trial (m = 0: the
S_i average to ~0, where one global adapter can only fit ~nothing; m = 1: identical tasks); or a
personal full-rank deviation is added. Methods: colora, local (each user's own LoRA), global (one
adapter for all), oracle (U*, V* given, only S_i fitted). Error: stacked relative error
||W_hat - W*||_F / ||W*||_F (regression model, k = 20, n = 40, noise 0.1).

Predictions (``_common.noise_error``: least squares on the tangent space with finite-sample factors):

* at theta = 0, m = 0: colora / oracle = sqrt(all of colora's parameter blocks / the personal
  block) = 1.38 here;
* a shared subspace tilted by theta on both sides leaves CoLoRA the bias sqrt(1 - cos^4 theta)
  (the best rank-r fit inside span U* x span V* keeps cos^2 theta of each W_i); local LoRA's error
  does not depend on theta. So local overtakes CoLoRA at theta* with
  1 - cos^4 theta* = err_local(0)^2 - err_colora(0)^2 (variance and bias add in quadrature);
* one global adapter has the bias sqrt((1 - m)(1 - 1/k)) (the spread of the S_i around their mean),
  against CoLoRA's estimation error ~0.03: CoLoRA wins at every m up to 1 - 0.03^2 ~ 0.999, and at
  m = 1 the global adapter wins (k-fold fewer parameters for the same data).

Claims (tolerances fixed before the run):

1. At theta = 0: colora's error / oracle's lies within 15% of the predicted ratio (95% interval of
   the per-trial ratio), and colora beats local (per-trial ratio colora / local < 1).
2. The measured crossover angle / the predicted one lies in [0.85, 1.15] (bootstrap over trials;
   the angle grid is dense around the value predicted before the run, 0.087 rad).
3. colora beats global at m = 0, 0.5, 0.9, 0.99 (per-trial ratio colora / global < 1), and global
   beats colora at m = 1 (ratio > 1).

    python -m proofs_numerics.task_similarity [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import colora_jax as cj
from colora_jax import Cell, FitConfig, ProblemConfig, plotting, statistics
from proofs_numerics import _common

NAME = "task_similarity"
STYLE = {"colora": ("tab:blue", "o"), "local": ("tab:orange", "s"), "global": ("tab:green", "^"), "oracle": ("k", "x")}


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings (angle, mean fraction, deviation) applied to one generated problem per trial, regression model."""

    seed: int = 0  # PRNG seed of every cell (all methods and settings see the same problems)
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    model: str = "regression"  # measurement model (the LoRA-faithful one)
    users: int = 20  # k
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r of the truth and of every fitted adapter
    samples: int = 40  # n per user: above local LoRA's threshold (d_in), so local LoRA works
    noise: float = 0.1  # noise std: sets local LoRA's error, hence where the crossover lies
    methods: tuple[str, ...] = ("colora", "local", "global", "oracle")  # registry names
    # task angles (radians), dense around the crossover predicted before the run (0.087 rad)
    angles: tuple[float, ...] = (0.0, 0.03, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.13, 0.16, 0.2, 0.3, 0.5, 1.0)
    mean_fractions: tuple[float, ...] = (0.5, 0.9, 0.99, 1.0)  # m at angle 0 (m = 0 is the angle sweep's first)
    deviations: tuple[float, ...] = (0.1, 0.5)  # personal full-rank deviation at angle 0
    trials: int = 20  # trials per cell
    iters: int = 50  # iteration budget of the iterative methods
    oracle_tolerance: float = 0.15  # claim 1: (colora / oracle) / predicted within 1 +- this
    crossover_tolerance: float = 0.15  # claim 2: measured / predicted crossover within 1 +- this
    level: float = 0.95  # confidence level of every interval
    resamples: int = 1000  # bootstrap resamples of the crossover


SMOKE = Config(
    users=3,
    d_out=6,
    d_in=6,
    rank=1,
    samples=10,
    methods=("colora", "local", "global", "oracle"),
    angles=(0.0, 0.3, 1.0),
    mean_fractions=(1.0,),
    deviations=(),
    trials=2,
    iters=10,
    resamples=20,
)


def settings(config: Config) -> tuple[tuple[float, float, float], ...]:
    """(angle, mean fraction, deviation) of every setting, angle sweep first."""
    return (
        tuple((a, 0.0, 0.0) for a in config.angles)
        + tuple((0.0, m, 0.0) for m in config.mean_fractions)
        + tuple((0.0, 0.0, v) for v in config.deviations)
    )


def vary(problem: cj.Problem, key, setting) -> cj.Problem:
    """The problem with its tasks tilted, given a common mean, or deviated (same designs and noise)."""
    truth, train = problem.truth, problem.train
    k, r = truth.S.shape[0], truth.S.shape[1]
    d_out, d_in = truth.U.shape[0], truth.V.shape[0]
    dtype = truth.W.dtype
    angle, mean, deviation = setting[0], setting[1], setting[2]
    kg, kq, kd = jax.random.split(jax.random.fold_in(key, 7), 3)
    G = jax.random.normal(kg, (k, d_out + d_in, r), dtype)
    U = jax.vmap(cj.tilt, (None, 0, None))(truth.U, G[:, :d_out], angle)
    V = jax.vmap(cj.tilt, (None, 0, None))(truth.V, G[:, d_out:], angle)
    Q = jnp.linalg.qr(jax.random.normal(kq, (r, r), dtype))[0]
    S = jnp.sqrt(mean) * Q[None] + jnp.sqrt(1 - mean) * truth.S
    W = jnp.einsum("kor,krs,kis->koi", U, S, V)
    D = jax.random.normal(kd, (k, d_out, d_in), dtype)
    scale = jnp.linalg.norm(W, axis=(1, 2)) / jnp.linalg.norm(D, axis=(1, 2))
    W = W + deviation * scale[:, None, None] * D
    measure = jax.vmap(cj.predict, in_axes=(0, 0, None))
    noise = train.Y - measure(truth.W, train.X, train.model)  # the trial's own noise, kept
    Y = measure(W, train.X, train.model) + noise
    new_truth = cj.GroundTruth(U=truth.U, V=truth.V, S=S, U_users=U, V_users=V, W=W, noise=truth.noise)
    new_train = cj.Observations(train.X, Y, train.model, counts=train.counts)
    return cj.Problem(truth=new_truth, train=new_train, test=problem.test)


def settings_trial(problem, key, fit_config, *, method: str, grid: tuple):
    """Every setting of ``grid`` applied to the trial's problem, and ``method`` fitted to each."""
    table = jnp.asarray(grid, problem.truth.W.dtype)
    return jax.vmap(lambda s: cj.fit_and_evaluate(vary(problem, key, s), key, fit_config, method))(table)


@functools.cache
def fn_for(method: str, grid: tuple):
    return functools.partial(settings_trial, method=method, grid=grid)


def compute_for(config: Config):
    grid = settings(config)

    def compute(cells: list[Cell]) -> list[dict]:
        update, digest = cj.data_digest()
        evaluation, _ = cj.cell_trials(cells, lambda m: fn_for(m, grid), on_data=update)
        return [
            cj.to_jsonable({"rel_error": evaluation.rel_error[:, j], "data_sha256": digest()})
            for j in range(len(cells))
        ]

    return compute


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=config.iters)
    pc = ProblemConfig(
        model=config.model,
        users=config.users,
        d_out=config.d_out,
        d_in=config.d_in,
        rank=config.rank,
        samples=config.samples,
        test_samples=0,
        noise=config.noise,
    )
    return [(m, Cell(pc, fc, config.trials, config.seed, m)) for m in config.methods]


def predicted_oracle_ratio(config: Config) -> float:
    """sqrt(CoLoRA's parameter blocks / the personal block): ``noise_error`` with and without the shared part."""
    full = _common.noise_error(
        config.model, config.users, config.samples, config.d_out, config.d_in, config.rank, 1.0, 1.0
    )
    r, n = config.rank, config.samples
    personal = np.sqrt(r * r / (n - r - 1)) if config.model == "regression" else np.sqrt(r * r / (n - r * r - 1))
    return float(full / personal)


def crossover(angles, colora, local) -> tuple[float, float]:
    """(measured crossing of the mean error curves, predicted theta* from their values at angle 0)."""
    c, l_ = colora.mean(axis=0), local.mean(axis=0)
    measured = statistics.crossing(angles, c, l_)
    gap = l_[0] ** 2 - c[0] ** 2
    predicted = float(np.arccos((1 - gap) ** 0.25)) if 0 < gap < 1 else np.nan
    return measured, predicted


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    grid = settings(config)
    sw = _common.run_sweep(
        NAME,
        [c for _, c in labelled],
        args,
        compute=compute_for(config),
        tag="settings-" + hashlib.sha256(repr(grid).encode()).hexdigest()[:12],
    )
    err = {m: np.asarray(res["rel_error"], float) for (m, _), res in zip(labelled, sw.results)}  # (trials, settings)
    na = len(config.angles)
    angle_err = {m: e[:, :na] for m, e in err.items()}
    mean_idx = [grid.index((0.0, m, 0.0)) for m in config.mean_fractions]
    dev_idx = [grid.index((0.0, 0.0, v)) for v in config.deviations]
    claims = _common.Claims()
    measured = {}
    # claim 1
    ratio = statistics.median_interval(err["colora"][:, 0] / err["oracle"][:, 0], config.level)
    pred = predicted_oracle_ratio(config)
    claims.add(
        "angle 0: (colora / oracle) / predicted",
        ratio.median / pred,
        ratio.low / pred,
        ratio.high / pred,
        lower=1 - config.oracle_tolerance,
        upper=1 + config.oracle_tolerance,
        source=f"least squares on the tangent space: predicted ratio {pred:.3f}",
    )
    vs_local = statistics.median_interval(err["colora"][:, 0] / err["local"][:, 0], config.level)
    claims.add(
        "angle 0: colora / local",
        vs_local.median,
        vs_local.low,
        vs_local.high,
        upper=1.0 - 1e-9,
        source="m*(k) << m*(1) parameters per user",
    )
    # claim 2
    theta, theta_pred = crossover(config.angles, angle_err["colora"], angle_err["local"])
    stat = lambda c, l_: np.divide(*crossover(config.angles, c, l_))
    value, low, high = statistics.bootstrap_interval(
        lambda idx: stat(angle_err["colora"][idx], angle_err["local"][idx]),
        np.arange(config.trials),
        level=config.level,
        resamples=config.resamples,
        seed=config.seed,
    )
    claims.add(
        "crossover angle: measured / predicted",
        value,
        low,
        high,
        lower=1 - config.crossover_tolerance,
        upper=1 + config.crossover_tolerance,
        source="1 - cos^4 theta* = err_local^2 - err_colora^2",
    )
    measured["crossover_angle"] = [round(theta, 4), round(theta_pred, 4)]
    # claim 3
    means = (0.0,) + tuple(config.mean_fractions)
    idx = [0] + mean_idx
    for m, j in zip(means, idx):
        q = statistics.median_interval(err["colora"][:, j] / err["global"][:, j], config.level)
        if m < 1:
            claims.add(
                f"m={m:g}: colora / global",
                q.median,
                q.low,
                q.high,
                upper=1.0 - 1e-9,
                source="global's bias sqrt((1-m)(1-1/k)) > colora's error",
            )
        else:
            claims.add(
                f"m={m:g}: colora / global",
                q.median,
                q.low,
                q.high,
                lower=1.0 + 1e-9,
                source="identical tasks: global has k-fold fewer parameters",
            )
    measured["angle0_errors"] = {m: round(float(np.mean(e[:, 0])), 4) for m, e in err.items()}
    measured["global_error_by_mean"] = [round(float(np.mean(err["global"][:, j])), 4) for j in idx]
    # figure
    fig, axes = plotting.panels(3, width=5.0, height=3.9)
    ax = axes[0]
    for m in config.methods:
        color, marker = STYLE.get(m, (None, "o"))
        plotting.band(ax, config.angles, angle_err[m].T, m, color=color, marker=marker, log=True)
    if np.isfinite(theta_pred):
        ax.axvline(theta_pred, color="gray", ls=":", label=f"predicted crossover {theta_pred:.3f}")
    if np.isfinite(theta):
        ax.axvspan(low * theta_pred, high * theta_pred, color="gray", alpha=0.15, lw=0)
        ax.axvline(theta, color="k", ls="--", lw=1, label=f"measured {theta:.3f} (95%: band)")
    bias = np.sqrt(1 - np.cos(np.asarray(config.angles)) ** 4)
    ax.plot(config.angles, bias, color="tab:blue", ls=":", lw=1, label="colora's bias sqrt(1 - cos^4)")
    ax.set_xscale("symlog", linthresh=0.03)
    plotting.grid_axes(
        ax,
        "task angle theta (radians, symlog)",
        "rel. error (log)",
        ylog=True,
        title=f"tilted tasks: {config.model}, k={config.users}, n={config.samples}, noise {config.noise:g}",
    )
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    bx = axes[1]
    het = np.array([1 - m for m in means])
    x = np.where(het > 0, het, 1e-4)
    for m in ("colora", "global"):
        color, marker = STYLE[m]
        plotting.band(bx, x, err[m][:, idx].T, m, color=color, marker=marker, log=True)
    bx.plot(
        x[het > 0],
        np.sqrt(het[het > 0] * (1 - 1 / config.users)),
        color="tab:green",
        ls=":",
        label="global's bias sqrt((1-m)(1-1/k))",
    )
    plotting.grid_axes(
        bx,
        "1 - m: spread of the S_i around their mean (log; 1e-4: m = 1)",
        "rel. error (log)",
        xlog=True,
        ylog=True,
        title="tasks with a common mean S_i = sqrt(m) Q + sqrt(1-m) S_i0",
    )
    cx = axes[2]
    devs = (0.0,) + tuple(config.deviations)
    for m in config.methods:
        color, marker = STYLE.get(m, (None, "o"))
        plotting.band(cx, devs, err[m][:, [0] + dev_idx].T, m, color=color, marker=marker, log=True)
    cx.set_xscale("symlog", linthresh=0.1)
    plotting.grid_axes(
        cx,
        "deviation ||D_i|| / ||U_i S_i V_i^T|| (symlog)",
        "rel. error (log)",
        ylog=True,
        title="a personal full-rank deviation (no claim)",
    )
    figure = plotting.save(
        fig,
        os.path.join(args.out, f"{NAME}.png"),
        f"Task similarity: median and 25-75% over {config.trials} trials (every method and setting on"
        " the same problems)",
    )
    results = {
        "settings": grid,
        "errors": {m: e for m, e in err.items()},
        "crossover": [theta, theta_pred, low, high],
        "predicted_oracle_ratio": pred,
    }
    claim = (
        f"at angle 0 colora beats local and is within {config.oracle_tolerance:.0%} of the predicted ratio to the"
        f" oracle; the crossover angle with local LoRA is within {config.crossover_tolerance:.0%} of its"
        " prediction; colora beats a global adapter unless the tasks are identical (m = 1)"
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
