"""Process-level XLA settings that must be in place before JAX starts its CPU backend.

XLA's CPU runtime (jaxlib 0.10) can deadlock when large vmapped ``while_loop``s run matmuls
on its multi-threaded Eigen pool: every thread waits and the call never returns (seen here
with 64 vmapped sensing trials, and with the streamed k = 10^6 regression problem). Turning
off Eigen's intra-op threading avoids it and costs nothing measurable on small CPUs (14.5 vs
14.7 trials/s on 2 cores). colora_jax therefore adds ``--xla_cpu_multi_thread_eigen=false``
to ``XLA_FLAGS`` on import, unless the variable already sets that flag. It only affects the
CPU backend, and only if JAX has not started it yet (import colora_jax before running JAX).
"""

from __future__ import annotations

import os

FLAG = "--xla_cpu_multi_thread_eigen"


def configure_xla_cpu() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=false".strip()
