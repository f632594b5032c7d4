"""Recovery phase transition: each trial's threshold, n50 with its interval, AltMin and VarPro, against m*(k).

The degrees-of-freedom count per user, m*(k) (sensing: r^2 + r (d_out + d_in - 2r) / k;
regression: r + (d_in - r) / k, see ``_common.dof_regression``), is the fewest samples per user
that can determine the k users' matrices: below it exact recovery is impossible, and an integer
sample size cannot go below ceil(m*), so n/m* >= ceil(m*)/m* (the *integer floor*).

Every trial is one planted problem fitted on the first n of its samples for every n of the grid
(nested samples, common random numbers). n50 is where the success rate crosses one half (the
smallest grid n at which at least half of the trials recover), with the interval from the
Clopper-Pearson bands (``colora_jax.statistics.rate_threshold``); the median of the trials' first
successes is kept as a secondary statistic (it is biased low when a trial recovers at n and
fails again at a larger n; the share of such trials is reported per curve). The grids step by
one sample (by 5% where m* is large) from 0.9 m*(k) to past each method's transition.

Local LoRA (each user fitting its own rank-r adapter with the same AltMin) is CoLoRA at k = 1: the
same fit on one user's data, so the k = 1 curve is local LoRA's.

Across k the thresholds are modelled as n50(k) = a m*(k) + b (``statistics.threshold_line``): the
range of a and b over the lines that pass through every k's interval, each interval at the
Bonferroni level 1 - 0.05 / (number of k) and widened down to the grid point below it (a grid
threshold is the first grid point at or above the line; ``slope_of``). No line through every
interval means the linear form itself fails there (a NaN range, an undecided claim). A ratio
n50/m* of small integers mixes the slope with an additive offset of a sample or two; where n50
sits on the integer floor ceil(m*) the ratio is decided by integrality, and those k are reported.

Claims (bounds fixed in ``Config`` before the confirmation run, which decides the verdict; the
exploration run on seed 0 is reported beside it):

1. AltMin: a <= ``altmin_constant`` = 2.0, both models (AltMin analyses give constant x dof x
   polylog and no constant; 2.0 is the largest n50/m* of an earlier run on seed 0, 1.70, with a
   margin). Verdict on the upper end of a's range.
2. VarPro: a <= ``varpro_aim`` = 1.2 over k = 5, 20, 100, both models (the aim set for the
   estimator in issue 13).
3. Collaboration's gain over local LoRA, n50(1)/n50(k_max), realizes the dof ratio
   m*(1)/m*(k_max) up to the constant: gain / dof ratio >= 1/``altmin_constant`` (lower end of its
   interval), i.e. claim 1 seen from the user's side (local LoRA is at least at the floor m*(1)).

    python -m proofs_numerics.phase_transition [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from colora_jax import Cell, FitConfig, ProblemConfig, min_samples, plotting, statistics
from proofs_numerics import _common

NAME = "phase_transition"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
LABEL = {"colora": "AltMin", "colora-varpro": "VarPro"}


@dataclasses.dataclass(frozen=True)
class Config:
    """The phase diagram: models x users x methods x samples per user x trials."""

    seed: int = 0  # PRNG seed of every cell (common random numbers across sample sizes and methods)
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    users: tuple[int, ...] = (1, 5, 20, 100)  # k, number of collaborating users (k = 1: local LoRA)
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r, planted and fitted rank
    methods: tuple[str, ...] = ("colora", "colora-varpro")  # AltMin (FitConfig.algorithm altmin) and VarPro
    method_users: tuple[tuple[int, ...], ...] = ((1, 5, 20, 100), (5, 20, 100))  # k per method (VarPro: ~1 s a fit
    # here, so not k = 1, single-user matrix recovery, which says nothing about collaboration)
    grid_lo: tuple[float, ...] = (0.9, 0.95)  # smallest sample size / m*(k), rounded down: a point below m*
    grid_hi: tuple[float, ...] = (2.1, 1.45)  # largest sample size / m*(k), per method (past its transition)
    grid_ratio: float = 1.06  # grid step: +1 sample, or x1.06 where that is larger
    trials: tuple[int, ...] = (40, 20)  # trials per method
    iters: int = 50  # iteration budget of both methods (spectral initialization)
    tol: float = 1e-7  # stop when the objective's relative decrease is below tol
    altmin_constant: float = 2.0  # claim 1: AltMin's slope a of n50(k) = a m*(k) + b at most this
    varpro_aim: float = 1.2  # claim 2: VarPro's slope a at most this
    level: float = 0.95  # confidence level of every interval


SMOKE = Config(
    models=("sensing",),
    users=(1, 4),
    d_out=6,
    d_in=6,
    method_users=((1, 4), (4,)),
    grid_hi=(1.6, 1.3),
    grid_ratio=1.2,
    trials=(6, 2),
    iters=15,
)


def reference(config: Config, model: str, users: int) -> float:
    """m*(k): the degrees-of-freedom minimum of samples per user for this model and k."""
    if model == "sensing":
        return _common.dof_sensing(users, config.d_out, config.d_in, config.rank)
    return _common.dof_regression(users, config.d_in, config.rank)


def grid(config: Config, model: str, users: int, method: str) -> list[int]:
    m = reference(config, model, users)
    j = config.methods.index(method)
    return statistics.geometric_integers(
        math.floor(config.grid_lo[j] * m),
        config.grid_hi[j] * m,
        config.grid_ratio,
        minimum=min_samples(model, config.rank, "full"),
    )


def users_of(config: Config, method: str) -> tuple[int, ...]:
    return config.method_users[config.methods.index(method)]


def cells(config: Config):
    """Every (model, method, k, n) cell, in sweep order (one runner call per model, method, k)."""
    fc = FitConfig(rank=config.rank, iters=config.iters, tol=config.tol)
    out = []
    for model in config.models:
        for method, trials in zip(config.methods, config.trials):
            for k in users_of(config, method):
                ns = grid(config, model, k, method)
                for n in ns:
                    pc = ProblemConfig(
                        model=model,
                        users=k,
                        d_out=config.d_out,
                        d_in=config.d_in,
                        rank=config.rank,
                        samples=n,
                        test_samples=0,
                    )
                    out.append(((model, method, k, n), Cell(pc, fc, trials, config.seed, method, max(ns))))
    return out


def slope_of(config: Config, curves: dict, users: tuple[int, ...]) -> statistics.LineFit:
    """``n50(k) = a m*(k) + b`` over ``users``, each k's interval at the Bonferroni level (NaN: one k).

    A threshold on a grid is the first grid point at or above the continuous crossing
    ``a m* + b``, so a k whose threshold lies in ``[low, high]`` constrains the line at ``m*(k)``
    to ``(the grid point below low, high]`` (no lower constraint below the grid's first point);
    the open end is taken closed, which only widens the ranges. Without this the integer grid
    itself would rule out most lines.
    """
    if len(users) < 2:
        return statistics.LineFit(*[math.nan] * 6)
    each = 1 - (1 - config.level) / len(users)
    thresholds, lows = [], []
    for k in users:
        c = curves[str(k)]
        t = statistics.rate_threshold(c["samples"], np.asarray(c["table"], bool), each)
        below = [n for n in c["samples"] if n < t.low]
        thresholds.append(t)
        lows.append(below[-1] if below else -math.inf)
    m = [curves[str(k)]["m_star"] for k in users]
    return statistics.threshold_line(m, [t.n50 for t in thresholds], lows, [t.high for t in thresholds])


def slope_estimate(fit: statistics.LineFit) -> float:
    """The slope reported beside its range: the middle of the range where it is finite (the
    least-squares slope through the grid-valued n50 can fall outside it), else least squares."""
    if math.isfinite(fit.a_low) and math.isfinite(fit.a_high):
        return (fit.a_low + fit.a_high) / 2
    return fit.a


def plot(config: Config, curves: dict, verdicts: dict, path: str) -> str:
    cols = len(config.methods) + 1
    fig, axes = plotting.panels(cols * len(config.models), rows=len(config.models), width=4.7, height=3.8)
    colors = dict(zip(config.users, COLORS))
    for row, model in enumerate(config.models):
        for j, method in enumerate(config.methods):
            ax = axes[cols * row + j]
            for k in users_of(config, method):
                c = curves[model][method][str(k)]
                x = np.asarray(c["samples"]) / c["m_star"]
                label = f"k={k}" + (" (= local LoRA)" if k == 1 else "")
                ax.plot(x, c["success"], marker="o", ms=2.5, lw=1.2, color=colors[k], label=label)
                ax.fill_between(x, c["success_low"], c["success_high"], color=colors[k], alpha=0.15, lw=0)
                if np.isfinite(c["n50"]):
                    hi = c["ratio_high"] if np.isfinite(c["ratio_high"]) else x[-1]
                    ax.errorbar(
                        [c["ratio"]],
                        [0.5],
                        xerr=[[c["ratio"] - c["ratio_low"]], [hi - c["ratio"]]],
                        fmt="D",
                        ms=5,
                        color=colors[k],
                        mec="k",
                        mew=0.6,
                        capsize=3,
                    )
                ax.plot([c["floor"]] * 2, [-0.04, 0.06], color=colors[k], lw=2)  # the integer floor ceil(m*)/m*
            ax.axvline(1.0, color="k", ls=":", lw=1)
            ax.plot([], [], "D", color="gray", mec="k", label="n50, 95% interval")
            ax.plot([], [], color="gray", lw=2, label="integer floor ceil(m*)/m*")
            plotting.grid_axes(
                ax,
                "samples per user / m*(k)",
                "P(exact recovery)",
                title=f"{model}, {LABEL.get(method, method)}: {config.trials[j]} trials, 95% bands",
            )
            ax.set_ylim(-0.05, 1.05)
            ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
        bx = axes[cols * row + cols - 1]
        ks = np.asarray(config.users, float)
        floors = [statistics.integer_floor(reference(config, model, k)) for k in config.users]
        bx.plot(ks, floors, ls="none", marker="_", ms=14, mew=2, color="gray", label="integer floor ceil(m*)/m*")
        for j, (method, marker) in enumerate(zip(config.methods, "os")):
            mk = np.asarray(users_of(config, method), float)
            cs = [curves[model][method][str(k)] for k in users_of(config, method)]
            r = np.array([c["ratio"] for c in cs])
            lo = np.array([c["ratio_low"] for c in cs])
            hi = np.array([c["ratio_high"] if np.isfinite(c["ratio_high"]) else np.nan for c in cs])
            shift = mk * (1.06 if j else 0.94)
            bx.errorbar(
                shift,
                r,
                yerr=[r - lo, np.nan_to_num(hi - r)],
                marker=marker,
                capsize=3,
                lw=1.2,
                label=f"{LABEL.get(method, method)} n50/m*",
            )
        bx.axhline(
            config.altmin_constant, color="tab:blue", ls=":", lw=1, label=f"AltMin bound {config.altmin_constant:g}"
        )
        bx.axhline(config.varpro_aim, color="tab:orange", ls=":", lw=1, label=f"VarPro aim {config.varpro_aim:g}")
        bx.axhline(1.0, color="k", lw=0.6)
        g = verdicts[model]
        bx.set_title(
            f"{model}: n50/m*(k), 95% intervals\ngain k=1 -> {config.users[-1]}: {g['gain']:.1f}"
            f" [{g['gain_low']:.1f}, {g['gain_high']:.1f}] vs dof ratio {g['dof_ratio']:.1f}",
            fontsize=9,
        )
        plotting.grid_axes(bx, "users k (log)", "n50 / m*(k)", xlog=True, xticks=config.users)
        bx.legend(fontsize=7, loc="upper right", framealpha=0.9)
        top = max(
            [config.altmin_constant]
            + [c["ratio"] for m in config.methods for c in curves[model][m].values() if np.isfinite(c["ratio"])]
        )
        bx.set_ylim(0.9, top * 1.25)
    return plotting.save(
        fig,
        path,
        f"Recovery phase transition, d_out=d_in={config.d_out}, r={config.rank}: P(rel. error <= 1e-3) against n/m*(k)",
    )


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args)
    rows: dict = {}
    for ((model, method, k, n), _), result in zip(labelled, sw.results):
        rows.setdefault((model, method, k), []).append((n, result))
    curves = {m: {meth: {} for meth in config.methods} for m in config.models}
    for (model, method, k), row in rows.items():
        ns = [n for n, _ in row]
        success = _common.success_table([r for _, r in row])
        curves[model][method][str(k)] = _common.threshold_summary(
            ns, success, reference(config, model, k), config.level
        )
    claims = _common.Claims()
    verdicts, measured = {}, {}
    altmin, varpro = config.methods[0], config.methods[-1]
    aims = {altmin: (config.altmin_constant, "constant x dof (AltMin theory); an earlier seed-0 run's 1.70 + margin")}
    if varpro != altmin:
        aims[varpro] = (config.varpro_aim, "VarPro's aim (issue 13)")
    lines: dict = {}
    for model in config.models:
        lines[model] = {}
        for method, (aim, source) in aims.items():
            fit = slope_of(config, curves[model][method], users_of(config, method))
            lines[model][method] = fit._asdict()
            claims.add(
                f"{model} {LABEL.get(method, method)} slope a of n50 = a m* + b",
                slope_estimate(fit),
                fit.a_low,
                fit.a_high,
                upper=aim,
                source=source,
            )
        one, many = curves[model][altmin][str(config.users[0])], curves[model][altmin][str(config.users[-1])]
        gain = _common.threshold_ratio(one, many, config.level)
        dof_ratio = one["m_star"] / many["m_star"]
        claims.add(
            f"{model} AltMin gain k={config.users[0]}->{config.users[-1]} / dof ratio",
            gain.median / dof_ratio,
            gain.low / dof_ratio,
            gain.high / dof_ratio,
            lower=1 / config.altmin_constant,
            source="m*(1)/m*(k) up to claim 1's constant",
        )
        verdicts[model] = {"gain": gain.median, "gain_low": gain.low, "gain_high": gain.high, "dof_ratio": dof_ratio}
        for method in config.methods:
            label = LABEL.get(method, method)
            ks = users_of(config, method)
            cs = [curves[model][method][str(k)] for k in ks]
            measured[f"{model}_{label}_n50_over_mstar"] = [round(c["ratio"], 3) for c in cs]
            measured[f"{model}_{label}_nonmonotone_fraction"] = [round(c["nonmonotone_fraction"], 3) for c in cs]
            measured[f"{model}_{label}_at_integer_floor"] = [
                k for k, c in zip(ks, cs) if c["n50"] == math.ceil(c["m_star"] - 1e-9)
            ]
            fit = lines[model].get(method)
            if fit is not None:
                measured[f"{model}_{label}_line_a_b"] = [round(fit["a"], 3), round(fit["b"], 2)]
        measured[f"{model}_AltMin_constant"] = round(max(c["ratio"] for c in curves[model][altmin].values()), 3)
        measured[f"{model}_gain_vs_dof_ratio"] = [round(gain.median, 2), round(dof_ratio, 2)]
    figure = plot(config, curves, verdicts, os.path.join(args.out, f"{NAME}.png"))
    claim = (
        f"n50(k) = a m*(k) + b with AltMin's a <= {config.altmin_constant:g} and VarPro's a <="
        f" {config.varpro_aim:g} (range over lines through every k's interval), and the gain over local LoRA"
        f" is >= the dof ratio m*(1)/m*(k) / {config.altmin_constant:g} (both models, k={list(config.users)})"
    )
    timing = {
        "sweep_seconds": round(sw.seconds, 1),
        "cpu_seconds": round(_common.cpu_seconds(), 1),
        "load_average": os.getloadavg(),
        "cells_computed": sw.computed,
        "cells_reused": sw.reused,
    }
    _common.finish(
        NAME,
        args,
        config,
        claim=claim,
        passed=claims.passed,
        measured={**measured, **claims.summary()},
        results={**curves, "lines": lines},
        started=started,
        figure=figure,
        extra={"timing": timing},
        claims=claims,
    )


if __name__ == "__main__":
    main()
