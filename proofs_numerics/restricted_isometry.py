"""Restricted isometry of the pooled measurement operator over the CoLoRA model set.

The pooled operator maps the users' matrices to all their measurements, A(Z) = (A_ij(Z_i)), with
A_ij(Z) = <X_ij, Z> (sensing) or Z x_ij (regression), and E ||A_i(Z_i)||^2 = n ||Z_i||_F^2. Over
the set of differences of two CoLoRA points, Z_i = U S_i V^T with shared U (d_out x 2r), V
(d_in x 2r) and personal S_i (2r x 2r), its restricted isometry constant is

    delta = sup_Z | ||A(Z)||^2 / (n sum_i ||Z_i||_F^2) - 1 |.

Any set of directions gives a lower bound on delta: random directions (Gaussian U, V, S_i), and
directions locally maximized by Adam ascent of the ratio (and descent, for its lower side).

Claim: delta's empirical lower bounds fall like (total samples N = k n)^(-1/2) -- fitted log-log
slopes within -1/2 +- 0.15 for both kinds of directions -- and maximization finds larger
deviations than random directions at every N (so the random bound alone understates delta).

    python -m proofs_numerics.restricted_isometry [--smoke] [--fresh] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from colora_jax import plotting
from colora_jax import Cell, FitConfig, ProblemConfig, measure, per_cell, predict, to_jsonable, trial_keys
from proofs_numerics import _common

NAME = "restricted_isometry"


@dataclasses.dataclass(frozen=True)
class Config:
    """Lower bounds on delta at a few total sample sizes, both models."""

    seed: int = 0  # PRNG seed of every cell
    models: tuple[str, ...] = ("sensing", "regression")  # measurement models
    users: int = 10  # k
    d_out: int = 20  # output dimension
    d_in: int = 20  # input dimension
    rank: int = 2  # r of the CoLoRA points; the differences have rank 2r
    multiples: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0)  # N / p, p = dof of the difference set
    directions: int = 64  # random directions per trial
    steps: int = 200  # Adam ascent steps per maximization
    learning_rate: float = 0.05  # Adam learning rate of the ascent
    trials: int = 8  # independent operators per N
    slope: float = -0.5  # the theory's exponent
    tolerance: float = 0.15  # |fitted slope - slope| allowed


SMOKE = Config(models=("sensing",), users=2, d_out=5, d_in=5, rank=1, multiples=(4.0, 16.0), directions=4, steps=10,
               trials=2)


def difference_dof(config: Config) -> int:
    """p = k (2r)^2 + 2r (d_out + d_in - 4r): parameters of the set of differences."""
    R = 2 * config.rank
    return config.users * R * R + R * (config.d_out + config.d_in - 2 * R)


def isometry_ratio(X, model: str, U, V, S):
    """||A(Z)||^2 / (n sum_i ||Z_i||_F^2) for Z_i = U S_i V^T."""
    Z = jnp.einsum("or,krs,is->koi", U, S, V)
    AZ = jax.vmap(predict, in_axes=(0, 0, None))(Z, X, model)
    return jnp.sum(jnp.square(AZ)) / (X.shape[1] * jnp.sum(jnp.square(Z)))


def _direction(key, k, d_out, d_in, R, dtype):
    ku, kv, ks = jax.random.split(key, 3)
    return (jax.random.normal(ku, (d_out, R), dtype), jax.random.normal(kv, (d_in, R), dtype),
            jax.random.normal(ks, (k, R, R), dtype))


def isometry_trial(key, problem_config: ProblemConfig, fit_config: FitConfig, directions: int):
    """(max |ratio - 1| over random directions, the same after Adam ascent/descent of the ratio)."""
    pc, R = problem_config, fit_config.rank
    kx, kr, ka = jax.random.split(key, 3)
    zeros = jnp.zeros((pc.users, pc.d_out, pc.d_in), pc.dtype)
    X = measure(kx, zeros, pc.samples, 0.0, pc.model).X
    ratio = lambda p: isometry_ratio(X, pc.model, *p)
    draw = lambda k: _direction(k, pc.users, pc.d_out, pc.d_in, R, pc.dtype)
    random = jax.vmap(lambda k: ratio(draw(k)))(jax.random.split(kr, directions))
    opt = optax.adam(fit_config.learning_rate)

    def ascend(key, sign):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(lambda p: -sign * ratio(p))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        params = draw(key)
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=fit_config.iters)
        return ratio(params)

    extremes = jax.vmap(ascend)(jax.random.split(ka, 2), jnp.asarray([1.0, -1.0], pc.dtype))
    return jnp.max(jnp.abs(random - 1)), jnp.max(jnp.abs(extremes - 1))


@functools.lru_cache(maxsize=32)
def _compiled(problem_config: ProblemConfig, fit_config: FitConfig, directions: int, trials: int):
    one = functools.partial(isometry_trial, problem_config=problem_config, fit_config=fit_config, directions=directions)
    return jax.jit(jax.vmap(one))


def isometry_cell(cell: Cell, directions: int) -> dict:
    """Random and maximized lower bounds of every trial of a cell."""
    run = _compiled(cell.problem, cell.fit, directions, cell.trials)
    random, maximized = jax.device_get(run(trial_keys(jax.random.key(cell.seed), 0, cell.trials)))
    return to_jsonable({"random": random, "maximized": maximized})


def cells(config: Config):
    # the ascent runs FitConfig.iters Adam steps at FitConfig.learning_rate on rank-2r directions
    fc = FitConfig(rank=2 * config.rank, iters=config.steps, learning_rate=config.learning_rate)
    p = difference_dof(config)
    out = []
    for model in config.models:
        for m in config.multiples:
            n = int(round(m * p / config.users))
            pc = ProblemConfig(model=model, users=config.users, d_out=config.d_out, d_in=config.d_in,
                               rank=config.rank, samples=n, test_samples=0)
            out.append(((model, config.users * n), Cell(pc, fc, config.trials, config.seed, "isometry")))
    return out


def main() -> None:
    args = _common.arguments(__doc__)
    config = SMOKE if args.smoke else Config()
    started = time.time()
    labelled = cells(config)
    compute = per_cell(functools.partial(isometry_cell, directions=config.directions))
    sw = _common.run_sweep(NAME, [c for _, c in labelled], args, compute=compute, tag=f"isometry-{config.directions}")
    fig, axes = plotting.panels(len(config.models), width=5.0)
    results, measured, passed = {}, {}, True
    for ax, model in zip(axes, config.models):
        rows = [(N, res) for ((m, N), _), res in zip(labelled, sw.results) if m == model]
        N = [r[0] for r in rows]
        results[model] = {"total_samples": N}
        for kind, marker in (("maximized", "o"), ("random", "s")):
            values = np.stack([np.asarray(r[1][kind], float) for r in rows])
            slope, intercept = _common.loglog_fit(N, np.median(values, axis=1))
            line = plotting.band(ax, N, values, f"{kind} directions: slope {slope:.2f}", marker=marker, log=True)
            plotting.fitted_line(ax, N, slope, intercept, None, color=line.get_color())
            passed = passed and abs(slope - config.slope) <= config.tolerance
            measured[f"{model}_slope_{kind}"] = round(slope, 3)
            results[model][kind] = {"median": np.median(values, axis=1), "slope": slope}
        above = bool(np.all(results[model]["maximized"]["median"] >= results[model]["random"]["median"]))
        passed = passed and above
        measured[f"{model}_delta_at_smallest_N"] = round(float(results[model]["maximized"]["median"][0]), 3)
        plotting.grid_axes(ax, "total samples N = k n (log)", "lower bound on delta (log)", xlog=True, ylog=True, xticks=N,
                           title=f"{model}: k={config.users}, {config.d_out}x{config.d_in}, differences of rank {2 * config.rank}")
    figure = plotting.save(fig, os.path.join(args.out, f"{NAME}.png"),
                           f"Restricted isometry over the CoLoRA set: max |ratio - 1|, median and 25-75% over"
                           f" {config.trials} operators; p = {difference_dof(config)} dof")
    claim = (f"the restricted isometry constant's empirical lower bounds fall as N^(-1/2) (slope {config.slope} +-"
             f" {config.tolerance}, random and maximized directions) and maximized >= random at every N")
    _common.finish(NAME, args, config, claim=claim, passed=passed, measured=measured, results=results,
                   started=started, figure=figure)


if __name__ == "__main__":
    main()
