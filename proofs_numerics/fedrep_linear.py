"""FedRep's linear experiment in its own setting: FedRep, FedSGD and CoLoRA's exact AltMin.

Setting (Collins et al., ICML 2021, Sec. 5; ``baselines.FEDREP_SYNTHETIC``): 100 users,
y = h_i^T B*^T x + e with x in R^20, a shared representation B* (20 x 2), personal heads h_i
(N(0, I_2)) and noise std 1e-3; 5, 10 or 20 samples per user. With a scalar output the output
side has nothing to share, so CoLoRA's AltMin here is the one-sided exact scheme ``W_i = H_i V^T``
(exact personal heads, exact pooled least squares for V: ``baselines`` method "fedsa-lora").

Methods: ``fedrep`` (exact heads, one gradient step on the representation per round, as FedRep),
``colora`` (the exact AltMin above), ``fedsgd`` (FedSGD: one global model, head and representation
both shared, trained by gradient steps on the pooled data -- each round every user's full-batch
gradient, averaged; as FedRep's FedSGD baseline, it has no personal part), plus local least
squares per user (``local-full``) and the ``oracle`` (B* given) for the held-out MSE bars. All
iterative methods start from the same spectral (method-of-moments) representation.

Claim: at every sample size CoLoRA's AltMin and FedRep recover the representation (median final
subspace distance <= 1e-2), CoLoRA in no more rounds than FedRep, while FedSGD's single global
model does not (final distance > 0.2).

    python -m proofs_numerics.fedrep_linear [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import colora_jax as cj
from colora_jax import FEDREP_SYNTHETIC, Cell, FitConfig, MethodFit, SharedInputConfig, Trace, plotting
from colora_jax import relative_error, run_cells, subspace_distance
from proofs_numerics import _common

NAME = "fedrep_linear"
LABELS = {"fedsa-lora": "colora", "fedrep": "fedrep", "fedsgd": "fedsgd", "local-full": "local", "oracle": "oracle"}
LEGEND = {"colora": "colora (exact AltMin, U = I)", "fedrep": "fedrep (gradient step on V)",
          "fedsgd": "fedsgd (one global model)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """FedRep's synthetic linear setting, three sample sizes, one round budget."""

    seed: int = 0  # PRNG seed of every cell (all methods see the same problems)
    problem: SharedInputConfig = dataclasses.replace(FEDREP_SYNTHETIC, test_samples=50)  # d=20, r=2, 100 users
    samples: tuple[int, ...] = (5, 10, 20)  # samples per user (FedRep's)
    rounds: int = 100  # communication rounds (iterations) of every iterative method
    step_size: float = 0.5  # fedrep: representation step, times 1/L (the isotropic Lipschitz bound)
    fedsgd_learning_rate: float = 0.1  # fedsgd: gradient step on the pooled mean squared error
    trials: int = 10  # trials per cell
    bars_samples: int = 10  # sample size of the held-out MSE bars
    recovered: float = 1e-2  # "recovers": median final subspace distance at most this
    not_recovered: float = 0.2  # FedSGD "does not": median final distance above this


SMOKE = Config(problem=dataclasses.replace(FEDREP_SYNTHETIC, users=8, d_in=6, test_samples=5), samples=(5, 10),
               rounds=10, trials=2, bars_samples=10)


def fedsgd(obs, fc: FitConfig, truth) -> MethodFit:
    """FedSGD on ``W = h^T B^T`` shared by all users: gradient descent on the pooled mean squared error.

    Each round is one full-batch gradient step of the head ``h`` (d_out x r) and the
    representation ``B`` (d_in x r) at ``fc.learning_rate`` (equal samples per user: the average
    of the users' gradients is the pooled gradient). ``B`` starts from the spectral
    initialization, ``h`` from zero. The trace records the subspace distance of ``B``.
    """
    d = cj.design(obs)
    d_out, d_in = obs.dims
    k, dtype = obs.users, obs.X.dtype
    eye = jnp.eye(d_out, dtype=dtype)
    _, B = cj.spectral_init(d, fc.rank)
    params = (jnp.zeros((d_out, fc.rank), dtype), B)
    count = jnp.sum(obs.sample_counts()) * (d_out if obs.model == 'regression' else 1)
    loss = lambda p: cj.sum_squares(d, eye, p[1], jnp.broadcast_to(p[0], (k,) + p[0].shape)) / count
    opt = optax.sgd(fc.learning_rate)

    def W_of(p):
        return jnp.broadcast_to(p[0] @ p[1].T, (k, d_out, d_in))

    def record(p):
        return loss(p), subspace_distance(p[1], truth.V), relative_error(W_of(p), truth.W)

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), record(p)

    (params, _), (obj, dist, rel) = jax.lax.scan(step, (params, opt.init(params)), None, length=fc.iters)
    first = record((jnp.zeros_like(params[0]), B))
    cat = lambda a0, a: jnp.concatenate([a0[None], a])
    nan = jnp.full((fc.iters + 1,), jnp.nan, dtype)
    trace = Trace(cat(first[0], obj), nan, cat(first[1], dist), cat(first[2], rel), jnp.asarray(fc.iters),
                  jnp.asarray(False), jnp.all(jnp.isfinite(obs.Y)))
    return MethodFit(W_of(params), None, params[1], trace)


def fedsgd_trial(problem, key, fit_config) -> cj.TrialResult:
    """One trial of FedSGD (``fedsgd``), scored like every registered method."""
    f = fedsgd(problem.train, fit_config, problem.truth)
    return cj.TrialResult(cj.evaluate(f.W, problem, f.U, f.V), f.trace)


def fn_for(method: str):
    """The registry's methods, plus "fedsgd"."""
    return fedsgd_trial if method == "fedsgd" else cj.method_evaluator(method)


def compute(cells: list[Cell]) -> list[dict]:
    return run_cells(cells, trace=True, fn_for=fn_for)


def cells(config: Config):
    out = []
    for method in LABELS:
        lr = config.fedsgd_learning_rate
        fc = FitConfig(rank=config.problem.rank, iters=config.rounds, tol=0.0, step_size=config.step_size,
                       learning_rate=lr)
        for n in config.samples:
            pc = dataclasses.replace(config.problem, samples=n)
            out.append(((method, n), Cell(pc, fc, config.trials, config.seed, method, max(config.samples))))
    return out


def held(curve: np.ndarray) -> np.ndarray:
    """Hold each trial's last finite value after it stopped."""
    curve = np.array(curve, float)
    for row in curve:
        finite = np.nonzero(np.isfinite(row))[0]
        row[finite[-1] + 1:] = row[finite[-1]]
    return curve


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=compute, tag="trace-fedsgd")
    res = {lab: r for (lab, _), r in zip(labelled, sw.results)}
    fig, axes = plotting.panels(len(config.samples) + 1, width=5.2, rows=2)
    results, measured, passed = {"distance": {}, "test_mse": {}}, {}, True
    for ax, n in zip(axes, config.samples):
        rounds_to, finals = {}, {}
        for method in ("fedsa-lora", "fedrep", "fedsgd"):
            dist = held(res[(method, n)]["trace"]["subspace_distance_V"])
            plotting.band(ax, np.arange(dist.shape[1]), dist.T, LEGEND[LABELS[method]], marker="", log=True)
            median = np.median(dist, axis=0)
            below = np.nonzero(median <= config.recovered)[0]
            rounds_to[LABELS[method]] = int(below[0]) if below.size else None
            finals[LABELS[method]] = float(median[-1])
            results["distance"][f"{LABELS[method]}_n{n}"] = median
        ax.axhline(config.recovered, color="gray", ls=":", lw=1, label=f"recovered ({config.recovered:g})")
        plotting.grid_axes(ax, "communication round", "subspace distance of the representation (log)", ylog=True,
                           title=f"n={n} samples per user, k={config.problem.users}, d={config.problem.d_in}")
        ok = (finals["colora"] <= config.recovered and finals["fedrep"] <= config.recovered
              and finals["fedsgd"] > config.not_recovered and rounds_to["colora"] is not None
              and (rounds_to["fedrep"] is None or rounds_to["colora"] <= rounds_to["fedrep"]))
        passed = passed and ok
        measured[f"n{n}_final_distance"] = {m: float(f"{v:.2e}") for m, v in finals.items()}
        measured[f"n{n}_rounds_to_recovered"] = rounds_to
    bx = axes[-1]
    mses = {LABELS[m]: np.asarray(res[(m, config.bars_samples)]["evaluation"]["test_mse"], float) for m in LABELS}
    names = list(mses)
    bx.bar(names, [np.median(mses[m]) for m in names], color=["tab:blue", "tab:orange", "tab:green", "tab:red", "k"])
    bx.set_yscale("log")
    bx.set_ylabel("held-out MSE per sample (log)")
    bx.set_title(f"local (per-user) test MSE, n={config.bars_samples}; noise var {config.problem.noise ** 2:.0e}",
                 fontsize=9)
    bx.axhline(config.problem.noise ** 2, color="gray", ls=":", lw=1)
    results["test_mse"] = {m: float(np.median(v)) for m, v in mses.items()}
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           f"FedRep's linear setting: median and 25-75% over {config.trials} trials")
    claim = (f"CoLoRA's AltMin and FedRep recover FedRep's representation (final distance <= {config.recovered:g}),"
             f" CoLoRA in no more rounds, and FedSGD's global model does not (> {config.not_recovered:g})")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured, results=results,
                   started=started, figure=figure)


if __name__ == "__main__":
    main()
