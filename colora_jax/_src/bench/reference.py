"""The sensing-model AltMin as a user would write it by hand in NumPy (the benchmark's baseline).

Vectorised over users (batched ``np.linalg.solve``, BLAS matmuls on reshaped arrays,
``np.einsum(optimize=True)``), one trial at a time. Same algorithm as ``colora_jax.fit`` with
``algorithm="altmin"``, spectral init, full personal part: S-step, U-step, QR, V-step, QR,
objective from raw residuals, stop on relative decrease ``< tol``.
"""

from __future__ import annotations

import numpy as np


def generate(rng: np.random.Generator, k, d_out, d_in, r, n, test_n, noise):
    """Planted sensing problem: ``W_i = U S_i V^T`` with Haar U, V and orthogonal S_i (condition 1)."""
    U = np.linalg.qr(rng.standard_normal((d_out, r)))[0]
    V = np.linalg.qr(rng.standard_normal((d_in, r)))[0]
    S = np.linalg.qr(rng.standard_normal((k, r, r)))[0] @ np.linalg.qr(rng.standard_normal((k, r, r)))[0]
    W = np.einsum("or,krs,is->koi", U, S, V, optimize=True)

    def measure(m):
        X = rng.standard_normal((k, m, d_out, d_in))
        y = np.einsum("knoi,koi->kn", X, W, optimize=True) + noise * rng.standard_normal((k, m))
        return X, y

    return U, V, W, measure(n), measure(test_n)


def _top(M, r):
    return np.linalg.eigh(M)[1][:, ::-1][:, :r]


def _qr(A):
    q, R = np.linalg.qr(A)
    s = np.where(np.diag(R) < 0, -1.0, 1.0)
    return q * s, R * s[:, None]


def altmin(X, y, r, iters=100, tol=1e-7):
    """Exact AltMin for ``y_ij = <X_ij, U S_i V^T>``; returns ``U, V, S, iterations``."""
    k, n, d_out, d_in = X.shape
    Xt = np.ascontiguousarray(X.transpose(0, 1, 3, 2))
    What = np.einsum("kn,knoi->koi", y, X, optimize=True) / n
    U = _top(np.einsum("koi,kpi->op", What, What, optimize=True), r)
    V = _top(np.einsum("koi,koj->ij", What, What, optimize=True), r)

    def personal(XV, U):
        F = np.einsum("or,knos->knrs", U, XV, optimize=True).reshape(k, n, r * r)
        G = F.transpose(0, 2, 1) @ F
        return np.linalg.solve(G, (F.transpose(0, 2, 1) @ y[..., None]))[..., 0].reshape(k, r, r)

    def pooled(P, M):  # least squares in the d r entries of A: y_ij = <P_ij M_i^T, A>
        d = P.shape[2]
        F = np.einsum("knos,krs->knor", P, M, optimize=True).reshape(k * n, d * r)
        return np.linalg.solve(F.T @ F, F.T @ y.reshape(-1)).reshape(d, r)

    def objective(U, V, S):
        W = np.einsum("or,krs,is->koi", U, S, V, optimize=True)
        return np.mean(np.square(y - np.einsum("knoi,koi->kn", X, W, optimize=True)))

    S = personal((X.reshape(-1, d_in) @ V).reshape(k, n, d_out, r), U)
    f = objective(U, V, S)
    floor = (10 * np.finfo(X.dtype).eps) ** 2 * np.mean(np.square(y))
    it = 0
    while it < iters and f > floor:
        XV = (X.reshape(-1, d_in) @ V).reshape(k, n, d_out, r)
        S = personal(XV, U)
        U, R = _qr(pooled(XV, S))
        S = R @ S
        XtU = (Xt.reshape(-1, d_out) @ U).reshape(k, n, d_in, r)
        V, R = _qr(pooled(XtU, S.transpose(0, 2, 1)))
        S = S @ R.T
        f, f_prev = objective(U, V, S), f
        it += 1
        if f_prev - f <= tol * f_prev:
            break
    return U, V, S, it


def trial(rng, k, d_out, d_in, r, n, test_n=50, noise=0.0, iters=100, tol=1e-7):
    """Generate, fit and score one problem: relative error of all users' W stacked, test MSE."""
    U0, V0, W, (X, y), (Xte, yte) = generate(rng, k, d_out, d_in, r, n, test_n, noise)
    U, V, S, it = altmin(X, y, r, iters, tol)
    W_hat = np.einsum("or,krs,is->koi", U, S, V, optimize=True)
    test_mse = np.mean(np.square(yte - np.einsum("knoi,koi->kn", Xte, W_hat, optimize=True)))
    return np.linalg.norm(W_hat - W) / np.linalg.norm(W), test_mse, it


def main(argv=None) -> None:
    """``python -m colora_jax._src.bench.reference K D R N TRIALS``: one JSON line of timings."""
    import json
    import sys
    import time

    k, d, r, n, trials = (int(a) for a in (argv or sys.argv[1:]))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    results = [trial(rng, k, d, d, r, n) for _ in range(trials)]
    t1 = time.perf_counter()
    data = [generate(rng, k, d, d, r, n, 0, 0.0)[3] for _ in range(trials)]
    t2 = time.perf_counter()
    for X, y in data:
        altmin(X, y, r)
    t3 = time.perf_counter()
    print(json.dumps({
        "trials_per_second": trials / (t1 - t0),
        "fits_per_second": trials / (t3 - t2),
        "rel_error_max": float(max(res[0] for res in results)),
        "iterations_mean": float(np.mean([res[2] for res in results])),
    }))


if __name__ == "__main__":
    main()
