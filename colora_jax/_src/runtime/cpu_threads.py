"""How many CPU cores the XLA:CPU runtime of this process may use.

XLA:CPU splits every sizeable operation across one thread per schedulable core, and each split
waits for its slowest part. On a machine whose cores are busy with other work, a descheduled
thread stalls every operation of a fit's loop, so the run time of small programs varies
several-fold when another XLA process competes for the cores, and stays steady on fewer cores
(docs/scale.md, "CPU threads"). Running several processes side by side (pytest-xdist workers,
sweeps) has the same effect on each other.

XLA sizes its thread pool and its task partitioning from the cores the process may run on, so
the only reliable knob is the process's CPU affinity, set before JAX starts its CPU backend:
``COLORA_JAX_THREADS=N`` (or the CLI's ``--threads N``) keeps the process on N cores (by
default the CLI uses every core the process may use).
"""

from __future__ import annotations

import os
import sys

ENV = "COLORA_JAX_THREADS"


def available_cores() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


_INITIAL_CORES = available_cores()  # before this process pinned itself: what its worker processes may spread over


def initial_cores() -> list[int]:
    """The cores this process could run on when colora_jax was imported (before ``limit_cpu_threads``)."""
    return list(_INITIAL_CORES)


def backend_started() -> bool:
    """Whether JAX has already created its CPU client (then the thread count is fixed)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", None))


def limit_cpu_threads(
    threads: int | None = None, *, offset: int = 0, cores: list[int] | None = None, default: int | None = None
) -> int:
    """Keep this process (and XLA's thread pool) on ``threads`` cores; returns the number in use.

    Args:
      threads: cores to use (default ``$COLORA_JAX_THREADS``, else ``default``). Values above
        the available cores use them all.
      offset: start at the ``offset``-th available core (wrapping), so that side-by-side
        processes (test workers) take different cores.
      cores: the cores to choose from (default the ones this process may use now); a worker
        process is given its parent's ``initial_cores`` so that it can leave a parent pinned to one.
      default: cores to use when neither ``threads`` nor ``$COLORA_JAX_THREADS`` says (default
        all available; the proof scripts pass 1).

    Must run before the first JAX computation of the process (it raises otherwise): XLA reads
    the affinity once, when its CPU client starts.
    """
    cores = available_cores() if cores is None else sorted(cores)
    if threads is None:
        value = os.environ.get(ENV, "").strip()
        if not value and default is None:
            return len(cores)
        try:
            threads = int(value) if value else default
        except ValueError:
            raise ValueError(f"{ENV} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    threads = min(threads, len(cores))
    chosen = {cores[(offset + i) % len(cores)] for i in range(threads)}
    if chosen == set(available_cores()):
        return threads
    if backend_started():
        raise ValueError("set the CPU threads before JAX's first computation (the CPU backend has started)")
    os.sched_setaffinity(0, chosen)
    return threads
