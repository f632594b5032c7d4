"""FedRep's linear experiment in its own setting: exact AltMin, FedRep and FedAvg, each with a tuned step.

Setting (Collins et al., ICML 2021, Sec. 5; ``FEDREP_SYNTHETIC``): 100 users, y = h_i^T B*^T x + e
with x in R^20, a shared representation B* (20 x 2), personal heads h_i ~ N(0, I_2), noise std
1e-3; 5, 10 or 20 samples per user. With a scalar output the output side has nothing to share,
so CoLoRA's AltMin here is the one-sided exact scheme ``W_i = H_i V^T`` (exact personal heads,
exact pooled least squares for V: method ``fedsa-lora``).

Methods and what each round communicates per user (d = 20, r = 2, up + down):

* ``altmin`` (exact): the user's normal equations of the pooled least squares for V
  ((d r)(d r + 1)/2 + d r numbers) up, V (d r) down;
* ``fedrep``: exact heads, one gradient step on the representation (gradient d r up, V d r down);
* ``fedavg``: the global baseline, FedAvg of the head and the representation with tau local
  gradient steps per round on each user's own data ((d + 1) r up and down), then each user's own
  least-squares head on the learned representation (FedAvg + fine-tuning; Collins et al.,
  NeurIPS 2022). With tau = 1 it is FedSGD, whose representation moves only along the global
  head: a rank-one update, so its second direction never learns and "FedSGD does not recover"
  holds by construction. It is not run.

Steps are tuned, not fixed: every value of each method's grid (FedAvg: learning rate x tau) runs on
a *tuning* seed and the one with the lowest training objective over the rounds (the median over
trials of the mean of log10(objective) over rounds, so the faster of two steps that reach the same
floor wins; a trial that diverges scores infinity; the largest over the sample sizes decides; no
truth used) is chosen; the figures and claims use the *evaluation* seed. FedAvg's objective is that
of every user's least-squares head on the global representation (its global model ``h B^T`` is one
task for all users). Every grid value is also shown on the evaluation seed.

Claims (thresholds fixed before the run):

1. AltMin (exact) recovers the representation: median final subspace distance <= 1e-2 within the
   round budget, at every n (FedRep's paper shows recovery in this setting; exact steps do at least
   as well).
2. FedRep with its tuned step recovers it too (<= 1e-2 within 100 rounds) at every n (the anchor's
   reported result).
3. FedAvg with tau >= 2 local steps (tuned) recovers it too (<= 1e-2 within 100 rounds) at every n:
   local updates of the head give the representation gradients in every user's head direction,
   and FedAvg learns the ground-truth representation at a linear rate (Collins et al. 2022, for
   the multi-task linear model; their analysis takes many samples per user, here n = 5-20 < d).
4. Exact AltMin needs fewer rounds than FedRep to reach 1e-2 (median rounds, 95% intervals
   disjoint) at every n: an exact block minimization against one gradient step.
Rounds and numbers communicated to reach 1e-2 are reported for each method.

    python -m proofs_numerics.fedrep_linear [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import colora_jax as cj
from colora_jax import FEDREP_SYNTHETIC, Cell, FitConfig, MethodFit, Trace, plotting, statistics
from proofs_numerics import _common

NAME = "fedrep_linear"
METHOD = {"altmin": "fedsa-lora", "fedrep": "fedrep", "fedavg": "fedavg"}  # label -> method name (fedavg: tau appended)
LEGEND = {"altmin": "AltMin (exact)", "fedrep": "FedRep (gradient on B)", "fedavg": "FedAvg (local steps) + own heads"}
COLOR = {"altmin": "tab:blue", "fedrep": "tab:orange", "fedavg": "tab:green"}


@dataclasses.dataclass(frozen=True)
class Config:
    """FedRep's synthetic linear setting, three sample sizes, tuned steps, one round budget."""

    seed: int = 0  # PRNG seed of the evaluation cells (all methods see the same problems)
    confirmation_seed: int = 1  # the registered fresh seed of the confirmation run (--confirm)
    tuning_seed: int = 1000  # PRNG seed of the tuning cells (other problems)
    problem: cj.SharedInputConfig = dataclasses.replace(FEDREP_SYNTHETIC, test_samples=50)  # d=20, r=2, 100 users
    samples: tuple[int, ...] = (5, 10, 20)  # samples per user (FedRep's)
    rounds: int = 100  # communication rounds (iterations) of every iterative method
    fedrep_steps: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # FedRep step grid, times 1/L (L: isotropic Lipschitz bound)
    # FedAvg's grid: learning rate (each user's mean squared error) x tau (local steps per round).
    # The first grid, rates {0.003, 0.01, 0.03, 0.1} x tau {2, 5, 10}, chose its corner (0.1, 10)
    # on the tuning seed; 0.3 diverged in a one-trial check (another problem, n = 20, tau = 10), so
    # the rate is bracketed and tau is extended; 0.003 ended with the worst tuning objective at
    # every tau and n and is dropped.
    fedavg_rates: tuple[float, ...] = (0.01, 0.03, 0.1)
    fedavg_local_steps: tuple[int, ...] = (2, 5, 10, 20, 50)
    trials: int = 10  # trials per cell (tuning and evaluation)
    bars_samples: int = 10  # sample size of the held-out MSE bars
    recovered: float = 1e-2  # claims 1-3: median final subspace distance at most this
    level: float = 0.95  # confidence level of every interval


SMOKE = Config(
    problem=dataclasses.replace(FEDREP_SYNTHETIC, users=8, d_in=6, test_samples=5),
    samples=(5, 10),
    rounds=10,
    fedrep_steps=(1.0,),
    fedavg_rates=(0.03,),
    fedavg_local_steps=(5,),
    trials=2,
    bars_samples=10,
)


def communicated(label: str, d_in: int, d_out: int, r: int) -> int:
    """Numbers sent per user and round, up plus down (see the module docstring)."""
    dr = d_in * r
    if label == "altmin":
        return dr * (dr + 1) // 2 + dr + dr
    if label == "fedrep":
        return 2 * dr
    return 2 * (d_in + d_out) * r


def fedavg(obs, fc: FitConfig, truth, key, local_steps: int) -> MethodFit:
    """FedAvg of the head ``h`` and the representation ``B`` with local steps, then a personal head per user.

    Each round every user starts from the global ``(h, B)`` (``h``: d_out x r, ``B``: d_in x r),
    takes ``local_steps`` full-batch gradient steps at ``fc.learning_rate`` on its own mean
    squared error of ``h B^T``, and the server averages: ``h <- mean_i h_i``, ``B <- mean_i B_i``
    (Collins et al., NeurIPS 2022). Local steps move each user's head toward its own task, so
    ``B`` receives gradients in every user's head direction and can learn all r of them; with
    one local step this is FedSGD, whose ``B`` changes only along the global head (rank one).
    ``B`` starts as a random orthonormal matrix and ``h`` as a random N(0, 1/r) head.

    The trace records, after each round, the subspace distance of ``B`` and the objective with
    every user's least-squares head on the global ``B`` (what the users get by fitting their own
    heads, the "+ FT" of FedAvg + FT; the tuning criterion, no truth used); the returned
    ``W_i = H_i B^T`` uses those heads on the final ``B``.
    """
    d = cj.design(obs)
    d_out, d_in = obs.dims
    dtype, r = obs.X.dtype, fc.rank
    eye = jnp.eye(d_out, dtype=dtype)
    kb, kh = jax.random.split(key)
    params = (
        jax.random.normal(kh, (d_out, r), dtype) / np.sqrt(r),
        jnp.linalg.qr(jax.random.normal(kb, (d_in, r), dtype))[0],
    )
    count = jnp.sum(obs.sample_counts()) * (d_out if obs.model == "regression" else 1)
    used, n = obs.masked(), obs.sample_counts().astype(dtype)  # unused rows are zero: no residual

    def user_loss(p, X, Y, n_i):
        return jnp.sum(jnp.square(Y - cj.predict(p[0] @ p[1].T, X, obs.model))) / n_i

    def local(p, X, Y, n_i):
        def gd(_, q):
            return jax.tree.map(lambda a, g: a - fc.learning_rate * g, q, jax.grad(user_loss)(q, X, Y, n_i))

        return jax.lax.fori_loop(0, local_steps, gd, p)

    def personal(B):
        Bq = jnp.linalg.qr(B)[0]
        H = cj.personal_step(d, eye, Bq, False)  # each user's own head on the representation
        return Bq, H

    def record(p):
        Bq, H = personal(p[1])
        return (
            cj.sum_squares(d, eye, Bq, H) / count,
            cj.subspace_distance(p[1], truth.V),
            cj.relative_error(jnp.einsum("kor,ir->koi", H, Bq), truth.W),
        )

    def round_(p, _):
        p = jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(local, (None, 0, 0, 0))(p, used.X, used.Y, n))
        return p, record(p)

    first = record(params)
    params, (obj, dist, rel) = jax.lax.scan(round_, params, None, length=fc.iters)
    cat = lambda a0, a: jnp.concatenate([a0[None], a])
    nan = jnp.full((fc.iters + 1,), jnp.nan, dtype)
    trace = Trace(
        cat(first[0], obj),
        nan,
        cat(first[1], dist),
        cat(first[2], rel),
        jnp.asarray(fc.iters),
        jnp.asarray(False),
        jnp.all(jnp.isfinite(obs.Y)),
    )
    Bq, H = personal(params[1])
    return MethodFit(jnp.einsum("kor,ir->koi", H, Bq), None, params[1], trace)


def fedavg_trial(problem, key, fit_config, local_steps: int) -> cj.TrialResult:
    """One trial of FedAvg (``fedavg``), scored like every registered method."""
    f = fedavg(problem.train, fit_config, problem.truth, key, local_steps)
    return cj.TrialResult(cj.evaluate(f.W, problem, f.U, f.V), f.trace)


def fn_for(method: str):
    """The registry's methods, plus "fedavg-TAU" (``fedavg`` with TAU local steps)."""
    if method.startswith("fedavg-"):
        return functools.partial(fedavg_trial, local_steps=int(method.split("-")[1]))
    return cj.method_evaluator(method)


def compute(cells: list[Cell]) -> list[dict]:
    return cj.run_cells(cells, trace=True, fn_for=fn_for)


def fit_config(config: Config, label: str, value) -> FitConfig:
    """The method's FitConfig at one value of its step grid (altmin has no step)."""
    step = {"step_size": value} if label == "fedrep" else {"learning_rate": value[0]} if label == "fedavg" else {}
    return FitConfig(rank=config.problem.rank, iters=config.rounds, tol=0.0, **step)


def method_name(label: str, value) -> str:
    """The method a cell runs: ``fedavg-TAU`` carries FedAvg's local steps."""
    return f"fedavg-{value[1]}" if label == "fedavg" else METHOD[label]


def grid(config: Config, label: str) -> tuple:
    """The values tuned: altmin none, FedRep its step, FedAvg (learning rate, tau) pairs."""
    if label == "fedavg":
        return tuple((lr, tau) for tau in config.fedavg_local_steps for lr in config.fedavg_rates)
    return {"altmin": (0.0,), "fedrep": config.fedrep_steps}[label]


def describe(label: str, value) -> str:
    """A grid value in words (legends)."""
    if label == "fedavg":
        return f", rate {value[0]:g}, tau {value[1]}"
    return f", step {value:g}/L" if label == "fedrep" else ""


def cells(config: Config):
    out = []
    for seed, role in ((config.tuning_seed, "tune"), (config.seed, "eval")):
        for label in METHOD:
            for value in grid(config, label):
                fc = fit_config(config, label, value)
                for n in config.samples:
                    pc = dataclasses.replace(config.problem, samples=n)
                    out.append(
                        (
                            (role, label, value, n),
                            Cell(pc, fc, config.trials, seed, method_name(label, value), max(config.samples)),
                        )
                    )
    return out


def held(trace: dict, key: str) -> np.ndarray:
    """A trace's curve ``key`` per trial, held at its last iterate after the trial stopped.

    Entries past a trial's ``iterations`` (stopped by its tolerance) repeat the value at
    ``iterations``; a non-finite value at or before it means the trial diverged and becomes
    ``inf`` from there on (a diverged trial has not recovered, and its objective is infinite).
    """
    curve = np.array(trace[key], float)
    stops = np.broadcast_to(np.asarray(trace["iterations"], int), curve.shape[:1])
    for row, stop in zip(curve, stops):
        row[stop + 1 :] = row[stop]
        bad = np.nonzero(~np.isfinite(row))[0]
        if bad.size:
            row[bad[0] :] = np.inf
    return curve


def rounds_to(curve: np.ndarray, level: float) -> float:
    below = np.nonzero(curve <= level)[0]
    return float(below[0]) if below.size else np.inf


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=compute, tag="trace-fedavg")
    res = {lab: r for (lab, _), r in zip(labelled, sw.results)}
    chosen, tuning = {}, {}
    for label in METHOD:
        scores = {}
        for value in grid(config, label):
            areas = [
                np.median(np.mean(np.log10(held(res[("tune", label, value, n)]["trace"], "objective")), axis=1))
                for n in config.samples
            ]
            scores[value] = float(np.nanmax(areas)) if np.all(np.isfinite(areas)) else np.inf  # worst n decides
        chosen[label] = min(scores, key=scores.get)
        tuning[label] = {describe(label, v).lstrip(", ") or "exact": x for v, x in scores.items()}
    claims = _common.Claims()
    fig, axes = plotting.panels(len(config.samples) + 2, width=4.8, height=3.8, rows=2)
    chosen_text = {label: describe(label, v).lstrip(", ") or "exact" for label, v in chosen.items()}
    results = {
        "chosen_step": chosen_text,
        "tuning_objective": tuning,
        "distance": {},
        "rounds_to_recovered": {},
        "communicated_per_round": {},
        "test_mse": {},
        "step_sensitivity": {},
    }
    measured = {"chosen_step": chosen_text}
    d_in, d_out, r = config.problem.d_in, config.problem.d_out, config.problem.rank
    for ax, n in zip(axes, config.samples):
        rounds = {}
        for label in METHOD:
            dist = held(res[("eval", label, chosen[label], n)]["trace"], "subspace_distance_V")
            plotting.band(
                ax,
                np.arange(dist.shape[1]),
                dist.T,
                LEGEND[label] + describe(label, chosen[label]),
                color=COLOR[label],
                marker="",
                log=True,
            )
            final = statistics.median_interval(dist[:, -1], config.level)
            rounds[label] = statistics.median_interval([rounds_to(c, config.recovered) for c in dist], config.level)
            results["distance"][f"{label}_n{n}"] = np.median(dist, axis=0)
            results["rounds_to_recovered"][f"{label}_n{n}"] = rounds[label]._asdict()
            per = communicated(label, d_in, d_out, r)
            results["communicated_per_round"][label] = per
            measured[f"n{n}_{label}_rounds_to_1e-2"] = rounds[label].median
            measured[f"n{n}_{label}_numbers_to_1e-2"] = rounds[label].median * per
            source = {
                "altmin": "FedRep (Collins et al. 2021), Sec. 5; exact steps",
                "fedrep": "FedRep (Collins et al. 2021), Sec. 5",
                "fedavg": "FedAvg with local steps learns the representation (Collins et al., NeurIPS 2022)",
            }[label]
            claims.add(
                f"n={n}: {label} median final distance",
                final.median,
                final.low,
                final.high,
                upper=config.recovered,
                source=source,
            )
        a, f = rounds["altmin"], rounds["fedrep"]
        claims.add(
            f"n={n}: AltMin rounds < FedRep rounds (gap of the intervals)",
            f.low - a.high,
            f.low - a.high,
            f.low - a.high,
            lower=1e-9,
            source="exact block step against one gradient step",
        )
        ax.axhline(config.recovered, color="gray", ls=":", lw=1)
        plotting.grid_axes(
            ax,
            "communication round",
            "subspace distance of B (log)",
            ylog=True,
            title=f"n={n}: rounds to 1e-2 " + ", ".join(f"{m} {rounds[m].median:g}" for m in METHOD),
        )
        ax.legend(fontsize=7, loc="center right")
    sx = axes[len(config.samples)]
    final_at = lambda label, v: float(
        np.median(held(res[("eval", label, v, config.bars_samples)]["trace"], "subspace_distance_V")[:, -1])
    )
    steps = config.fedrep_steps
    sx.plot(steps, [final_at("fedrep", v) for v in steps], marker="o", color=COLOR["fedrep"], label="FedRep (x 1/L)")
    results["step_sensitivity"]["fedrep"] = {f"{v:g}/L": final_at("fedrep", v) for v in steps}
    results["step_sensitivity"]["fedavg"] = {}
    for j, tau in enumerate(config.fedavg_local_steps):
        rates = config.fedavg_rates
        finals = [final_at("fedavg", (lr, tau)) for lr in rates]
        results["step_sensitivity"]["fedavg"].update({f"rate {lr:g}, tau {tau}": x for lr, x in zip(rates, finals)})
        sx.plot(
            rates, finals, marker="os^v"[j % 4], color=COLOR["fedavg"], alpha=1 - 0.15 * j, label=f"FedAvg, tau {tau}"
        )
    plotting.grid_axes(
        sx,
        "step (FedRep: x 1/L; FedAvg: learning rate) (log)",
        "median final distance (log)",
        xlog=True,
        ylog=True,
        title=f"step grids, n={config.bars_samples}, evaluation seed\nchosen: FedRep {chosen_text['fedrep']},"
        f" FedAvg {chosen_text['fedavg']}",
    )
    bx = axes[len(config.samples) + 1]
    mse = {}
    for label in METHOD:
        values = np.asarray(res[("eval", label, chosen[label], config.bars_samples)]["evaluation"]["test_mse"], float)
        mse[label] = np.where(np.isfinite(values), values, np.inf)  # a diverged trial's error is infinite
    names = list(mse)
    bx.bar(
        [LEGEND[m].split(" (")[0] + ("\n+ own heads" if m == "fedavg" else "") for m in names],
        [np.median(mse[m]) if np.isfinite(np.median(mse[m])) else np.nan for m in names],  # inf: no bar
        color=[COLOR[m] for m in names],
    )
    bx.set_yscale("log")
    bx.set_ylabel("held-out MSE per sample (log)")
    bx.axhline(config.problem.noise**2, color="gray", ls=":", lw=1, label="noise variance")
    bx.legend(fontsize=7)
    bx.set_title(
        f"held-out MSE, n={config.bars_samples}\nnumbers per user and round: "
        + ", ".join(f"{m} {communicated(m, d_in, d_out, r)}" for m in METHOD),
        fontsize=8,
    )
    results["test_mse"] = {m: float(np.median(v)) for m, v in mse.items()}
    figure = plotting.save(
        fig,
        os.path.join(args.out, f"{NAME}.png"),
        f"FedRep's linear setting (k={config.problem.users}, d={d_in}, r={r}): median and 25-75%"
        f" over {config.trials} trials, tuned steps",
    )
    claim = (
        f"exact AltMin, FedRep and FedAvg with local steps (tuned steps) recover FedRep's representation"
        f" (<= {config.recovered:g}), AltMin in fewer rounds than FedRep"
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
