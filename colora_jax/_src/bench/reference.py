"""The sensing-model AltMin as a user would write it by hand in NumPy (the benchmark's baseline).

Vectorised over users (batched ``np.linalg.solve``, BLAS matmuls on reshaped arrays,
``np.einsum(optimize=True)``), one trial at a time. Same algorithm as ``colora_jax.fit`` with
``algorithm="altmin"``, spectral init, full personal part: S-step, U-step, QR, V-step, QR,
objective from raw residuals at each iterate ``(U, V, S(U, V))``, stop on relative decrease ``< tol``.
"""

from __future__ import annotations

import numpy as np

DTYPE = np.float32  # as colora's default; float32 BLAS and generation are NumPy's fastest setting too


def generate(rng: np.random.Generator, k, d_out, d_in, r, n, noise):
    """Planted sensing problem: ``W_i = U S_i V^T`` with Haar U, V and orthogonal S_i (condition 1)."""
    normal = lambda shape: rng.standard_normal(shape, dtype=DTYPE)
    U = np.linalg.qr(normal((d_out, r)))[0]
    V = np.linalg.qr(normal((d_in, r)))[0]
    S = np.linalg.qr(normal((k, r, r)))[0] @ np.linalg.qr(normal((k, r, r)))[0]
    W = np.einsum("or,krs,is->koi", U, S, V, optimize=True)
    X = normal((k, n, d_out, d_in))
    y = np.einsum("knoi,koi->kn", X, W, optimize=True) + DTYPE(noise) * normal((k, n))
    return U, V, W, (X, y)


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

    floor = (10 * np.finfo(X.dtype).eps) ** 2 * np.mean(np.square(y))
    it, f_prev = 0, np.inf
    while True:  # as colora's loop: the iterate (U, V, S(U, V)) and its objective, then the steps
        XV = (X.reshape(-1, d_in) @ V).reshape(k, n, d_out, r)
        S = personal(XV, U)
        f = objective(U, V, S)
        if it >= iters or f <= floor or (it > 0 and f_prev - f <= tol * f_prev):
            return U, V, S, it
        U, R = _qr(pooled(XV, S))
        S = R @ S
        XtU = (Xt.reshape(-1, d_out) @ U).reshape(k, n, d_in, r)
        V, _ = _qr(pooled(XtU, S.transpose(0, 2, 1)))
        f_prev, it = f, it + 1


def trial(rng, k, d_out, d_in, r, n, noise=0.0, iters=100, tol=1e-7):
    """Generate, fit and score one problem.

    Returns the relative error of all users' W stacked, and the held-out error as colora computes it
    by default (the exact population risk ``mean_i ||W_i_hat - W_i||^2 + noise^2`` of the Gaussian
    design, no test set drawn).
    """
    U0, V0, W, (X, y) = generate(rng, k, d_out, d_in, r, n, noise)
    U, V, S, it = altmin(X, y, r, iters, tol)
    W_hat = np.einsum("or,krs,is->koi", U, S, V, optimize=True)
    test_mse = np.mean(np.sum(np.square(W_hat - W), axis=(1, 2))) + noise**2
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
    data = [generate(rng, k, d, d, r, n, 0.0)[3] for _ in range(trials)]
    t2 = time.perf_counter()
    for X, y in data:
        altmin(X, y, r)
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "trials_per_second": trials / (t1 - t0),
                "fits_per_second": trials / (t3 - t2),
                "rel_error_max": float(max(res[0] for res in results)),
                "iterations_mean": float(np.mean([res[2] for res in results])),
            }
        )
    )


if __name__ == "__main__":
    main()
