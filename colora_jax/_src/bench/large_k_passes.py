"""Where the regression AltMin iteration at k = 1e5 spends its time: pass by pass, against bandwidth.

    .venv/bin/python -m colora_jax._src.bench.large_k_passes [--users 100000] [--d 32] [--rank 4] [--samples 16]

The bench's roofline row (``colora bench``, figures/bench.json) times the whole iteration against
the floor "read every user's data once". This splits the iteration (``AltMin.step`` on the
``Design`` that ``fit`` builds) into its passes over the large arrays, each jitted alone, and
gives each its bytes read and its effective bandwidth, next to alternative formulations of the
same quantity (the same numbers up to float32 rounding, checked): where an alternative is
faster, the library could adopt it. Fastest of 3 runs after a warm-up; one JSON line per pass,
then a readable table. Nothing here changes the library.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from colora_jax._src.estimators.altmin import AltMin
from colora_jax._src.estimators.users import AllUsers
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig, ProblemConfig
from colora_jax._src.model.data import generate


def best_seconds(fn, *args, repeats=3) -> float:
    """Fastest of ``repeats`` timed calls of ``fn(*args)``, after one untimed call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> list[dict]:
    """Time each pass of ``AltMin.step`` over the large arrays alone; one record per pass."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--samples", type=int, default=16)
    a = p.parse_args(argv)
    k, d, r, n = a.users, a.d, a.rank, a.samples
    pc = ProblemConfig(model="regression", users=k, d_out=d, d_in=d, rank=r, samples=n, noise=0.1)
    obs = jax.jit(lambda key: generate(key, pc).train)(jax.random.key(0))
    des = jax.jit(blocks.design)(obs)
    key_u, key_v, key_s = jax.random.split(jax.random.key(1), 3)
    U = jnp.linalg.qr(jax.random.normal(key_u, (d, r)))[0]
    V = jnp.linalg.qr(jax.random.normal(key_v, (d, r)))[0]
    S = jax.random.normal(key_s, (k, r, r))
    P = blocks._mm(U[None], S)  # U S_i
    Q = blocks._mm(jnp.swapaxes(P, 1, 2), P)
    item = 4
    stat = k * d * d * item  # one statistic (C or Bt)
    raw = k * n * d * item  # X or Y
    sum_all = jax.jit(jnp.sum)
    big = jnp.ones((2**27,), jnp.float32)
    bandwidth = big.nbytes / best_seconds(sum_all, big)

    rows = []

    def row(name, fn, args, bytes_read, reference=None):
        f = jax.jit(fn)
        seconds = best_seconds(f, *args)
        out = {"pass": name, "ms": seconds * 1e3, "MB_read": bytes_read / 1e6, "GB_per_s": bytes_read / seconds / 1e9}
        if reference is not None:
            got, want = np.asarray(f(*args), np.float64), np.asarray(reference, np.float64)
            out["max_rel_diff"] = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        rows.append(out)
        print(json.dumps(out), flush=True)
        return f(*args)

    cv = row("C V (flat GEMM, the library)", lambda C, V: blocks._times(C, V), (des.C, V), stat)
    row("C V (einsum kij,jr)", lambda C, V: jnp.einsum("kij,jr->kir", C, V), (des.C, V), stat, cv)
    row("Bt V (flat GEMM, the library)", lambda B, V: blocks._times(B, V), (des.Bt, V), stat)
    flat_qc = lambda Q, C: Q.reshape(k, -1).T @ C.reshape(k, -1)
    m = row("Q^T C (K of the V step, the library)", flat_qc, (Q, des.C), stat)
    row(
        "Q^T C (einsum kq,kab->qab)",
        lambda Q, C: jnp.einsum("kq,kab->qab", Q.reshape(k, -1), C).reshape(r * r, -1),
        (Q, des.C),
        stat,
        m,
    )
    h = row("sum_i P_i^T Bt_i (h of the V step)", lambda P, B: blocks._sum_tn(P, B), (P, des.Bt), stat)
    row("same, einsum kor,koi->ri", lambda P, B: jnp.einsum("kor,koi->ri", P, B), (P, des.Bt), stat, h)
    sse = row("residual sum of squares (X, Y)", blocks.sum_squares, (des, U, V, S), 2 * raw)

    def sse_flat(X, Y, U, V, S):  # per-user products as broadcast-and-reduce, the rest as flat GEMMs
        XV = (X.reshape(k * n, d) @ V).reshape(k, n, r)
        T = jnp.sum(XV[:, :, None, :] * S[:, None, :, :], axis=-1)  # (X_i V S_i^T), k n r
        return jnp.sum(jnp.square(Y - (T.reshape(k * n, r) @ U.T).reshape(k, n, d)))

    row("same, flat GEMMs around a fused S_i product", sse_flat, (des.X, des.Y, U, V, S), 2 * raw, sse)
    # the objective's reduction: a plain sum of Y against a sum of its squares (same bytes read)
    row("sum of Y (one pass over Y, no arithmetic)", lambda Y: jnp.sum(Y.reshape(-1)), (des.Y,), raw)
    row("sum of Y^2 (the square fused into the sum)", lambda Y: jnp.sum(jnp.square(Y).reshape(-1)), (des.Y,), raw)
    vcv = jax.jit(lambda C, V: blocks._mm(V.T[None], blocks._times(C, V)))(des.C, V)
    row("V^T C_i V from raw X (n < d)", lambda X: jnp.einsum("knr,kns->krs", X @ V, X @ V), (des.X,), raw, vcv)
    whole = jax.jit(lambda dz, U, V: AltMin().step((U, V), None, FitConfig(rank=U.shape[1]), AllUsers(dz))[2])
    seconds = best_seconds(whole, des, U, V)
    total = {"pass": "whole iteration (AltMin.step)", "ms": seconds * 1e3, "read_bandwidth_GB_per_s": bandwidth / 1e9}
    rows.append(total)
    print(json.dumps(total), flush=True)
    load = os.getloadavg()
    print(f"k={k} d={d} r={r} n={n} float32; read bandwidth {bandwidth / 1e9:.1f} GB/s; load {load[0]:.2f}")
    for x in rows:
        extra = f"  {x['GB_per_s']:.1f} GB/s of {x['MB_read']:.0f} MB" if "GB_per_s" in x else ""
        diff = f"  (max rel. diff {x['max_rel_diff']:.1e})" if "max_rel_diff" in x else ""
        print(f"{x['pass']:42s} {x['ms']:8.1f} ms{extra}{diff}")
    return rows


if __name__ == "__main__":
    main()
