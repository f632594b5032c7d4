"""Linear convergence of AltMin at the rate its linearization predicts.

Near the planted truth (noiseless) one AltMin iteration is a smooth map of the subspaces,
(span U, span V) -> (span U', span V'), with the truth as a fixed point. By Ostrowski's theorem
the error then contracts asymptotically by the spectral radius rho of that map's Jacobian at the
truth. rho is computed for every trial from its own data: the iteration (personal step, output
step, input step: ``cj.personal_step``, ``cj.output_step``, ``cj.input_step``) is written in the
graph chart of the Grassmannian, ``U' -> (I - U* U*^T) U' (U*^T U')^-1`` (likewise V), and
differentiated with ``jax.jacfwd`` at the truth; rho is the largest eigenvalue modulus of that
(d_out + d_in) r square matrix. That is the predicted rate, one number per trial, no free constant.

The measured rate is fitted per trial on log10 of the subspace distance max(dist(U, U*),
dist(V, V*)) over the iterations where it lies in (1e-12, 1e-2): below the start-up phase (some
trials near the threshold linger near 1e-1 for tens of iterations first; the *burn-in*, the
iterations before the distance first drops below 1e-2, is reported) and above float64's floor.

Claims (bounds fixed before the run):

1. At every sample size, over the trials that recover, the median of measured / predicted rate
   lies in [1 - ``rate_tolerance``, 1 + ``rate_tolerance``] = [0.9, 1.1] (95% order-statistic
   interval). The tolerance allows for the pre-asymptotic part of the fit window.
2. The measured rate gets faster with more samples (median factor decreasing in n).
3. Noiseless float64 runs reach machine precision: the median final distance is <= 1e-10 (upper
   end of its interval).

    python -m proofs_numerics.convergence [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import colora_jax as cj  # noqa: E402
from colora_jax import Cell, FitConfig, ProblemConfig, plotting, statistics  # noqa: E402
from proofs_numerics import _common  # noqa: E402

NAME = "convergence"


@dataclasses.dataclass(frozen=True)
class Config:
    """Noiseless float64 AltMin runs at a few multiples of the degrees-of-freedom minimum."""

    seed: int = 0  # PRNG seed of every cell
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    users: int = 20  # k
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r
    multiples: tuple[float, ...] = (2.0, 3.0, 5.0, 8.0)  # samples per user, in units of m*(k)
    trials: int = 20  # trials per sample size
    iters: int = 150  # iteration budget (tol 0: run to the float64 floor)
    window: tuple[float, float] = (1e-12, 1e-2)  # distances used to fit the contraction factor
    burn_in: float = 1e-2  # burn-in: iterations before the distance first drops below this
    rate_tolerance: float = 0.1  # claim 1: median measured / predicted rate within 1 +- this
    precision: float = 1e-10  # claim 3: median final distance at most this
    level: float = 0.95  # confidence level of every interval


SMOKE = Config(models=("sensing",), users=4, d_out=6, d_in=6, multiples=(3.0, 6.0), trials=3, iters=15)


def samples(config: Config, model: str) -> list[int]:
    if model == "sensing":
        ref = _common.dof_sensing(config.users, config.d_out, config.d_in, config.rank)
    else:
        ref = _common.dof_regression(config.users, config.d_in, config.rank)
    return sorted({max(int(round(m * ref)), cj.min_samples(model, config.rank, "full")) for m in config.multiples})


def _chart(P, A):
    """Graph chart of the Grassmannian at span(P) (P orthonormal): ``(I - P P^T) A (P^T A)^-1``."""
    return (A - P @ (P.T @ A)) @ jnp.linalg.inv(P.T @ A)


def predicted_rate(problem: cj.Problem) -> jax.Array:
    """Spectral radius of the Jacobian of one AltMin iteration at the truth, in the graph chart."""
    d = cj.design(problem.train)
    U0, V0 = problem.truth.U, problem.truth.V

    def step(x):
        U = U0 + x[: U0.size].reshape(U0.shape)
        V = V0 + x[U0.size :].reshape(V0.shape)
        S = cj.personal_step(d, U, V, False)
        U2 = cj.output_step(d, V, S)
        V2 = cj.input_step(d, U2, S)  # the same minimizer as after absorbing U2's QR factor into S
        return jnp.concatenate([_chart(U0, U2).ravel(), _chart(V0, V2).ravel()])

    jacobian = jax.jacfwd(step)(jnp.zeros(U0.size + V0.size, U0.dtype))
    return jnp.max(jnp.abs(jnp.linalg.eigvals(jacobian)))


def rate_trial(problem: cj.Problem, key, fit_config: FitConfig):
    """AltMin's fit and evaluation, and the predicted asymptotic rate of this trial."""
    return cj.fit_and_evaluate(problem, key, fit_config), predicted_rate(problem)


def compute(cells: list[Cell]) -> list[dict]:
    update, digest = cj.data_digest()
    (evaluation, trace), rate = cj.cell_trials(cells, lambda method: rate_trial, on_data=update)
    out = []
    for j in range(len(cells)):
        out.append(
            cj.to_jsonable(
                {
                    "trace": jax.tree.map(lambda a, j=j: a[:, j], trace)._asdict(),
                    "final_rel_error": evaluation.rel_error[:, j],
                    "predicted_rate": rate[:, j],
                    "data_sha256": digest(),
                }
            )
        )
    return out


def cells(config: Config):
    fc = FitConfig(rank=config.rank, iters=config.iters, tol=0.0)
    out = []
    for model in config.models:
        ns = samples(config, model)
        for n in ns:
            pc = ProblemConfig(
                model=model,
                users=config.users,
                d_out=config.d_out,
                d_in=config.d_in,
                rank=config.rank,
                samples=n,
                test_samples=0,
                x64=True,
            )
            out.append(((model, n), Cell(pc, fc, config.trials, config.seed, "colora", max(ns))))
    return out


def distance_curves(trace: dict) -> np.ndarray:
    """max(dist U, dist V) per trial and iteration, held at its last value after the fit stopped."""
    d = np.fmax(np.asarray(trace["subspace_distance_U"], float), np.asarray(trace["subspace_distance_V"], float))
    for row in d:
        last = np.nonzero(np.isfinite(row))[0][-1]
        row[last + 1 :] = row[last]
    return d


def burn_in(curve: np.ndarray, level: float) -> float:
    below = np.nonzero(curve < level)[0]
    return float(below[0]) if below.size else np.inf


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=compute, tag="trace-rate")
    claims = _common.Claims()
    results, measured = {}, {}
    fig, axes = plotting.panels(2 * len(config.models), rows=len(config.models), width=5.2, height=3.9)
    for row, model in enumerate(config.models):
        ax, bx = axes[2 * row], axes[2 * row + 1]
        medians, ns = [], []
        for ((m, n), _), res in zip(labelled, sw.results):
            if m != model:
                continue
            curves = distance_curves(res["trace"])
            finals = curves[:, -1]
            recovered = finals <= config.precision
            fitted = np.array([statistics.contraction(c, config.window) for c in curves])
            predicted = np.asarray(res["predicted_rate"], float)
            ok = recovered & np.isfinite(fitted)
            ratio = statistics.median_interval(fitted[ok] / predicted[ok], config.level) if ok.any() else None
            final = statistics.median_interval(finals, config.level)
            burn = statistics.median_interval([burn_in(c, config.burn_in) for c in curves], config.level)
            factor = float(np.median(fitted[ok])) if ok.any() else np.nan
            medians.append(factor)
            ns.append(n)
            if ratio is not None:
                claims.add(
                    f"{model} n={n}: measured/predicted rate",
                    ratio.median,
                    ratio.low,
                    ratio.high,
                    lower=1 - config.rate_tolerance,
                    upper=1 + config.rate_tolerance,
                    source="Ostrowski: rate = spectral radius of the iteration's Jacobian at the truth",
                )
            claims.add(
                f"{model} n={n}: median final distance",
                final.median,
                final.low,
                final.high,
                upper=config.precision,
                source="float64 noiseless: exact recovery to rounding",
            )
            q = np.percentile(curves, [25, 50, 75], axis=0)
            (line,) = ax.plot(
                np.arange(curves.shape[1]),
                q[1],
                lw=1.3,
                label=f"n={n}: rate {factor:.2f}, predicted {np.median(predicted):.2f}",
            )
            ax.fill_between(np.arange(curves.shape[1]), q[0], q[2], color=line.get_color(), alpha=0.15, lw=0)
            t0 = burn.median if np.isfinite(burn.median) else 0
            t = np.arange(t0, curves.shape[1])
            start = config.burn_in
            ax.plot(t, start * np.median(predicted) ** (t - t0), ls=":", color=line.get_color(), lw=1)
            results.setdefault(model, []).append(
                {
                    "samples": n,
                    "m_star_multiple": n / samples_ref(config, model),
                    "trials": len(curves),
                    "recovered": int(recovered.sum()),
                    "fitted_rate": fitted,
                    "predicted_rate": predicted,
                    "median_fitted_rate": factor,
                    "median_predicted_rate": float(np.median(predicted)),
                    "ratio": None if ratio is None else ratio._asdict(),
                    "final": final._asdict(),
                    "burn_in": burn._asdict(),
                    "median_curve": q[1],
                    "quartile_curves": [q[0], q[2]],
                }
            )
            bx.scatter(predicted[ok], fitted[ok], s=10, color=line.get_color(), label=f"n={n}")
        ax.axhspan(*config.window, color="gray", alpha=0.06, lw=0)
        plotting.grid_axes(
            ax,
            "iteration",
            "subspace distance (log)",
            ylog=True,
            title=f"{model}, k={config.users}, {config.d_out}x{config.d_in}, r={config.rank}, float64;"
            " dotted: predicted rate",
        )
        ax.set_ylim(1e-17, 2)
        lims = [0.0, 1.0]
        bx.plot(lims, lims, color="k", lw=0.8, label="measured = predicted")
        bx.fill_between(
            lims,
            [(1 - config.rate_tolerance) * v for v in lims],
            [(1 + config.rate_tolerance) * v for v in lims],
            color="gray",
            alpha=0.15,
            lw=0,
            label=f"+-{config.rate_tolerance:.0%}",
        )
        plotting.grid_axes(
            bx,
            "predicted rate: spectral radius of the linearized iteration",
            "fitted contraction factor per iteration",
            title=f"{model}: every recovered trial",
        )
        bx.set_xlim(0, 1)
        bx.set_ylim(0, 1)
        finite = [f for f in medians if np.isfinite(f)]
        monotone = len(finite) == len(medians) and all(b < a for a, b in zip(medians, medians[1:]))
        claims.add(
            f"{model}: rate faster with more samples (1 = yes)",
            float(monotone),
            float(monotone),
            float(monotone),
            lower=1,
            source="more samples, smaller sampling cross-correlation of the blocks",
        )
        measured[f"{model}_fitted_rate"] = [round(f, 3) for f in medians]
        measured[f"{model}_predicted_rate"] = [round(r["median_predicted_rate"], 3) for r in results[model]]
        measured[f"{model}_samples"] = ns
        measured[f"{model}_burn_in_median"] = [r["burn_in"]["median"] for r in results[model]]
    figure = plotting.save(
        fig,
        os.path.join(args.out, f"{NAME}.png"),
        "AltMin converges linearly at the predicted rate: max(sin angle(U,U*), sin angle(V,V*)),"
        f" median and 25-75% over {config.trials} trials; grey band: fit window",
    )
    claim = (
        f"AltMin's fitted rate equals the spectral radius of its linearized iteration within"
        f" {config.rate_tolerance:.0%} at every n, gets faster with n, and float64 runs reach"
        f" <= {config.precision:g} (both models)"
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


def samples_ref(config: Config, model: str) -> float:
    if model == "sensing":
        return _common.dof_sensing(config.users, config.d_out, config.d_in, config.rank)
    return _common.dof_regression(config.users, config.d_in, config.rank)


if __name__ == "__main__":
    main()
