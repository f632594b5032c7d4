"""Why VarPro fails near the information limit: where it starts, where it stops, what the stop is.

    .venv/bin/python benchmarks/varpro_failures.py [--users 5 20] [--ratio 1.3] [--trials 40] [--smoke]

Sensing, d_out = d_in = 20, r = 2, n = ceil(ratio m*(k)) samples per user, float64, the
registry's ``varpro`` without its stall rule (``VarPro(stall=0)``: a failing fit runs on until the
relative-decrease rule stops it, at the stationary point examined here) with the phase diagram's
budget (50 iterations, tol 1e-7). For every trial:
the spectral start's subspace distance to the truth, the fit's final objective (relative to the
start's), its distance and relative error, and the size of the fitted personal parts. For every
trial that does not recover (relative error > 1e-3), the stopping point is examined on the
reduced objective ``phi(U, V) = sum_i min_S ||A_i(U S V^T) - y_i||^2`` (every ``S_i`` eliminated
exactly), written here independently of the library in plain JAX:

- the norm of its gradient, relative to ``phi`` (a stationary point has ~0);
- the spectrum of its Hessian on the horizontal space (the orthogonal complement of the
  ``2 r^2`` gauge directions ``(U A, 0)``, ``(0, V B)``, along which ``phi`` is constant): a
  negative eigenvalue makes the point a saddle (escapable by a second-order step), none a local
  minimum (escapable only by a restart or a better start).

Writes ``figures/varpro_failures.json`` and ``.png`` (``--smoke``: a tiny run under results/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # the Hessian's small eigenvalues need float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import colora_jax as cj  # noqa: E402
from colora_jax import plotting  # noqa: E402

D, R, SUCCESS = 20, 2, 1e-3


def reduced_objective(U, V, X, Y):
    """``phi(U, V)``: the residual sum of squares with every user's ``S_i`` the exact least squares."""

    def one(Xi, yi):
        F = jnp.einsum("or,noi,is->nrs", U, Xi, V).reshape(Xi.shape[0], -1)  # <X_ij, U S V^T> = F_j . vec(S)
        s = jnp.linalg.lstsq(F, yi)[0]
        r = F @ s - yi
        return r @ r

    return jnp.sum(jax.vmap(one)(X, Y))


def horizontal_basis(U, V) -> np.ndarray:
    """Orthonormal basis of the complement of the gauge directions ``(U A, 0)``, ``(0, V B)``."""
    gauge = []
    for a in range(R):
        for b in range(R):
            E = np.zeros((R, R))
            E[a, b] = 1
            gauge.append(np.concatenate([(U @ E).ravel(), np.zeros(V.size)]))
            gauge.append(np.concatenate([np.zeros(U.size), (V @ E).ravel()]))
    G = np.linalg.qr(np.stack(gauge, axis=1))[0]
    full = np.eye(U.size + V.size) - G @ G.T
    w, Q = np.linalg.eigh(full)
    return Q[:, w > 0.5]


def examine(U, V, X, Y) -> dict:
    """Gradient and horizontal Hessian spectrum of ``phi`` at ``(U, V)``."""
    split = lambda t: (t[: U.size].reshape(U.shape), t[U.size :].reshape(V.shape))
    f = lambda t: reduced_objective(*split(t), X, Y)
    theta = jnp.concatenate([U.ravel(), V.ravel()])
    phi = float(f(theta))
    grad = np.asarray(jax.grad(f)(theta))
    H = np.asarray(jax.hessian(f)(theta))
    Q = horizontal_basis(np.asarray(U), np.asarray(V))
    eig = np.linalg.eigvalsh(Q.T @ H @ Q)
    scale = np.abs(eig).max()
    return {
        "phi": phi,
        "grad_rel": float(np.linalg.norm(grad) / max(phi, 1e-300)),
        "hessian_min": float(eig[0]),
        "hessian_max": float(eig[-1]),
        "negative_eigenvalues": int(np.sum(eig < -1e-8 * scale)),
        "hessian_min_rel": float(eig[0] / scale),
    }


def run(users: int, ratio: float, trials: int, seed: int) -> dict:
    m_star = cj.degrees_of_freedom("sensing", users, D, D, R)
    n = math.ceil(ratio * m_star - 1e-9)
    pc = cj.ProblemConfig(model="sensing", users=users, d_out=D, d_in=D, rank=R, samples=n, test_samples=0, x64=True)
    varpro = cj.FitConfig(rank=R, iters=50, tol=1e-7, algorithm=cj.VarPro(stall=0))  # to the stationary point
    start = cj.FitConfig(rank=R, iters=1)  # trace entry 0: the spectral initialization

    @jax.jit
    def trial(key):
        problem = cj.generate(key, pc)
        _, t0 = cj.fit(problem.train, start, truth=problem.truth)
        est, tr = cj.fit(problem.train, varpro, truth=problem.truth)
        return problem, est, t0, tr

    rows = []
    for t in range(trials):
        problem, est, t0, tr = trial(jax.random.fold_in(jax.random.key(seed), t))
        last = int(tr.iterations)
        rel = float(cj.relative_error(est.W, problem.truth.W))
        row = {
            "trial": t,
            "start_distance": float(max(t0.subspace_distance_U[0], t0.subspace_distance_V[0])),
            "final_distance": float(max(tr.subspace_distance_U[last], tr.subspace_distance_V[last])),
            "rel_error": rel,
            "recovered": rel <= SUCCESS,
            "objective_ratio": float(tr.objective[last] / tr.objective[0]),
            "iterations": last,
            "personal_norm_ratio": float(jnp.linalg.norm(est.S) / jnp.linalg.norm(problem.truth.S)),
        }
        if not row["recovered"]:
            row |= examine(est.U, est.V, problem.train.X, problem.train.Y)
        rows.append(row)
        print(f"k={users} n={n} trial {t}: {'ok' if row['recovered'] else 'FAIL'} {row}", flush=True)
    failed = [r for r in rows if not r["recovered"]]
    return {
        "users": users,
        "samples": n,
        "m_star": m_star,
        "ratio": n / m_star,
        "success": 1 - len(failed) / trials,
        "failures": len(failed),
        "saddles": sum(r["negative_eigenvalues"] > 0 for r in failed),
        "local_minima": sum(r["negative_eigenvalues"] == 0 and r["grad_rel"] < 1e-6 for r in failed),
        "start_distance_recovered": float(np.median([r["start_distance"] for r in rows if r["recovered"]] or [np.nan])),
        "start_distance_failed": float(np.median([r["start_distance"] for r in failed] or [np.nan])),
        "trials": rows,
    }


def plot(results: list[dict], path: str) -> str:
    fig, axes = plotting.panels(2, width=5.0, height=3.8)
    ax, bx = axes
    for res, marker in zip(results, "os^D"):
        ok = [r for r in res["trials"] if r["recovered"]]
        bad = [r for r in res["trials"] if not r["recovered"]]
        label = f"k={res['users']}, n={res['samples']} ({res['ratio']:.2f} m*)"
        ax.scatter(
            [r["start_distance"] for r in ok],
            [r["final_distance"] for r in ok],
            marker=marker,
            s=18,
            facecolors="none",
            edgecolors="tab:blue",
            label=f"{label}: recovered",
        )
        ax.scatter(
            [r["start_distance"] for r in bad],
            [r["final_distance"] for r in bad],
            marker=marker,
            s=22,
            color="tab:red",
            label=f"{label}: failed",
        )
        bx.scatter(
            [r["objective_ratio"] for r in bad],
            [r["hessian_min_rel"] for r in bad],
            marker=marker,
            s=22,
            color="tab:red",
            label=label,
        )
    ax.set_yscale("log")
    plotting.grid_axes(
        ax,
        "spectral start: subspace distance",
        "VarPro's end: subspace distance (log)",
        title="where VarPro starts and stops",
    )
    bx.axhline(0, color="gray", lw=0.8)
    plotting.grid_axes(
        bx,
        "final / initial objective (failed trials)",
        "smallest horizontal Hessian eigenvalue / largest",
        title="failed trials: < 0 is a saddle, >= 0 a local minimum",
    )
    return plotting.save(fig, path, "VarPro near the information limit (sensing, d=20, r=2)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--users", type=int, nargs="+", default=[5, 20])
    p.add_argument("--ratio", type=float, default=1.3, help="samples per user / m*(k), rounded up")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="3 trials at k = 20 (seconds), written under results/")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.smoke:
        args.users, args.trials = [20], 3
    out = args.out or (os.path.join("results", "smoke") if args.smoke else "figures")
    cj.enable_compile_cache()
    started = time.time()
    results = [run(k, args.ratio, args.trials, args.seed) for k in args.users]
    os.makedirs(out, exist_ok=True)
    figure = plot(results, os.path.join(out, "varpro_failures.png"))
    record = {
        "code_version": cj.code_version(),
        "device": cj.device_info(),
        "seed": args.seed,
        "seconds": round(time.time() - started, 1),
        "figure": os.path.relpath(figure),
        "results": results,
    }
    with open(os.path.join(out, "varpro_failures.json"), "w") as f:
        json.dump(cj.to_jsonable(record), f, indent=1)
    for r in results:
        print(
            f"k={r['users']} n={r['samples']} ({r['ratio']:.2f} m*): success {r['success']:.3f};"
            f" {r['failures']} failed: {r['saddles']} saddles, {r['local_minima']} local minima;"
            f" spectral start distance median {r['start_distance_recovered']:.3f} (recovered),"
            f" {r['start_distance_failed']:.3f} (failed)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
