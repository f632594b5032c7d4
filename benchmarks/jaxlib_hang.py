"""Reproducers of two XLA:CPU deadlocks: the one that keeps jaxlib 0.10.0-0.10.2 out of the allowed
range, and one of jaxlib 0.9.2 on a single core.

Symptom (jaxlib 0.10.0, 0.10.1, 0.10.2 on CPU; seen on this project's 2-core machines): a vmapped
``lax.while_loop`` of small matrix products -- here 64 batched exact-AltMin fits of the sensing
model, k = 50 users, d = 20, r = 2, n = 16 -- never returns. Every XLA worker thread waits on a
futex and the process uses 0% CPU. It hung in 2 of 2 runs on 0.10.2 (with and without
``--xla_cpu_multi_thread_eigen=false``) and in 1 of 3 with ``jax_cpu_enable_async_dispatch=False``;
jaxlib 0.9.2 completed 12 of 12 runs. jax >= 0.11 (Python >= 3.12) was not tested here.

``--program fit-svd`` (jaxlib 0.9.2, found 2026-12-06): a vmapped AltMin fit of 4 sensing trials
(k = 20, d = 20, r = 2, n = 10, 30 iterations) followed, in the same program, by an SVD of each
fitted ``[W_1 ... W_k]``. With the process pinned to one core (``--cores 1``, as
``cj.limit_cpu_threads(1)`` or ``taskset -c 0`` pin it) it compiles, then never returns, at 0%
CPU: 18 of 18 runs hung here, of this program and of larger ones (VarPro fits, rank 3, 40
trials), also with ``--xla_cpu_multi_thread_eigen=false`` or ``OMP_NUM_THREADS=1``. On two
cores it completes in seconds (3.6 s), and on one core so does the same program with ``eigh``
or ``qr`` in place of the SVD, or the SVD without the fit before it, or ``cj.principal_angles`` of
the fitted ``U`` after the fit (its SVDs are of ``d x r`` and ``r x r`` matrices). The library's own programs compute no
SVD after a fit (its subspace metrics use QR and ``eigh``), so this bites only a caller's
program.

    python benchmarks/jaxlib_hang.py [--program altmin-batch|fit-svd] [--cores N] [--timeout 120] [--repeats 3]

Prints one line per repeat ("completed in X s" or "HUNG: no result after T s") and exits 1 if
any repeat hung, so it can be run against a candidate jax/jaxlib before widening the range.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

PIN = """
import os
if {cores}:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:{cores}])
"""

ALTMIN_BATCH = """
import jax, jax.numpy as jnp
import colora_jax as cj
pc = cj.ProblemConfig(model="sensing", users=50, d_out=20, d_in=20, rank=2, samples=16)
fc = cj.FitConfig(rank=2)
keys = cj.trial_keys(jax.random.key(0), 0, 64)
problems = jax.jit(jax.vmap(lambda k: cj.generate(k, pc)))(keys)
out = jax.jit(jax.vmap(lambda o: cj.fit(o, fc)[1].iterations))(problems.train)
print(int(jnp.max(out)))
"""

FIT_SVD = """
import jax, jax.numpy as jnp
import colora_jax as cj
pc = cj.ProblemConfig(model="sensing", users=20, d_out=20, d_in=20, rank=2, samples=10)
def one(key):
    estimate, _ = cj.fit(cj.generate(key, pc).train, cj.FitConfig(rank=2, iters=30))
    W = jnp.einsum("ar,krs,bs->akb", estimate.U, estimate.S, estimate.V).reshape(20, -1)
    return jnp.linalg.svd(W, full_matrices=False)[0][:, :2].sum()
print(float(jax.jit(jax.vmap(one))(cj.trial_keys(jax.random.key(1), 0, 4)).sum()))
"""

PROGRAMS = {"altmin-batch": ALTMIN_BATCH, "fit-svd": FIT_SVD}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as hung")
    p.add_argument("--repeats", type=int, default=3, help="independent processes to run")
    p.add_argument("--program", choices=sorted(PROGRAMS), default="altmin-batch", help="which deadlock to try")
    p.add_argument("--cores", type=int, default=0, help="pin each run to this many cores (0: as started)")
    args = p.parse_args()
    if args.cores < 0:
        p.error(f"--cores must be >= 0, got {args.cores}")
    import jax
    import jaxlib

    print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}; {args.program}, cores {args.cores or 'as started'}")
    hung = 0
    for i in range(args.repeats):
        start = time.perf_counter()
        try:
            subprocess.run(
                [sys.executable, "-c", PIN.format(cores=args.cores) + PROGRAMS[args.program]],
                check=True,
                capture_output=True,
                timeout=args.timeout,
                env={
                    "COLORA_JAX_CACHE_DIR": "off",
                    "TF_CPP_MIN_LOG_LEVEL": "3",
                    **{k: v for k, v in __import__("os").environ.items() if k != "COLORA_JAX_CACHE_DIR"},
                },
            )
            print(f"run {i + 1}: completed in {time.perf_counter() - start:.1f} s")
        except subprocess.TimeoutExpired:
            hung += 1
            print(f"run {i + 1}: HUNG: no result after {args.timeout:g} s")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
