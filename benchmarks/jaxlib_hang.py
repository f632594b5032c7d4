"""Minimal reproducer of the XLA:CPU deadlock that keeps jaxlib 0.10.0-0.10.2 out of the allowed range.

Symptom (jaxlib 0.10.0, 0.10.1, 0.10.2 on CPU; seen on this project's 2-core machines): a vmapped
``lax.while_loop`` of small matrix products -- here 64 batched exact-AltMin fits of the sensing
model, k = 50 users, d = 20, r = 2, n = 16 -- never returns. Every XLA worker thread waits on a
futex and the process uses 0% CPU. It hung in 2 of 2 runs on 0.10.2 (with and without
``--xla_cpu_multi_thread_eigen=false``) and in 1 of 3 with ``jax_cpu_enable_async_dispatch=False``;
jaxlib 0.9.2 completed 12 of 12 runs. jax >= 0.11 (Python >= 3.12) was not tested here.

    python benchmarks/jaxlib_hang.py [--timeout 120] [--repeats 3]

Prints one line per repeat ("completed in X s" or "HUNG: no result after T s") and exits 1 if
any repeat hung, so it can be run against a candidate jax/jaxlib before widening the range.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = """
import jax, jax.numpy as jnp
import colora_jax as cj
pc = cj.ProblemConfig(model="sensing", users=50, d_out=20, d_in=20, rank=2, samples=16)
fc = cj.FitConfig(rank=2)
keys = cj.trial_keys(jax.random.key(0), 0, 64)
problems = jax.jit(jax.vmap(lambda k: cj.generate(k, pc)))(keys)
out = jax.jit(jax.vmap(lambda o: cj.fit(o, fc)[1].iterations))(problems.train)
print(int(jnp.max(out)))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as hung")
    p.add_argument("--repeats", type=int, default=3, help="independent processes to run")
    args = p.parse_args()
    import jax
    import jaxlib

    print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}")
    hung = 0
    for i in range(args.repeats):
        start = time.perf_counter()
        try:
            subprocess.run(
                [sys.executable, "-c", CHILD],
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
