"""Independent pieces of work in several processes, each on a core of its own.

A sweep's trial programs are many small operations in a loop: on this 2-core CPU XLA ran the
issue-4 phase diagram's rows in 121 s on one core and in the same 121 s with both (its thread
pool splits each operation, and the operations are too small to gain). Two processes, each
pinned to one core and given half of the rows, do the same work in about half the time. The
numbers are those of the same work in one process on one core (tested); a process on more
cores can differ at rounding, since XLA splits a long sum over its threads (``cpu_threads``).

``parallel_map`` runs a picklable function over items in ``spawn``-ed worker processes (never
``fork``: the parent's JAX runtime must not be copied); each worker is pinned to one of the
cores the parent had when it started (``limit_cpu_threads(1, offset=i, cores=initial_cores())``,
so a parent pinned to one core still spreads its workers) and uses the parent's compile cache
and 64-bit setting.
Items are handed out in the order given, so put the most expensive first.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def _start(counter, cores: list[int], cache_dir: str | None, x64: bool) -> None:
    """A worker's set-up, before any JAX computation: the next free core, the parent's cache and precision."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    import jax

    from colora_jax._src.compile_cache import enable_compile_cache
    from colora_jax._src.cpu_threads import limit_cpu_threads

    limit_cpu_threads(1, offset=index, cores=cores)
    enable_compile_cache(cache_dir, disable=cache_dir is None)
    jax.config.update("jax_enable_x64", x64)


def picklable(fn: Callable) -> bool:
    """Whether ``fn`` can be sent to a worker process (a module-level function or a partial of one)."""
    try:
        pickle.dumps(fn)
    except Exception:
        return False
    return True


def parallel_map(fn: Callable[[Any], Any], items: Sequence, workers: int) -> Iterator[tuple[int, Any]]:
    """``(index, fn(items[index]))`` pairs as they finish, computed by ``workers`` processes.

    ``workers <= 1`` (or a single item) computes in this process, in order. An exception in a
    worker is raised here; on an interrupt the items not started are cancelled.
    """
    if workers <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    import jax

    from colora_jax._src.compile_cache import cache_dir
    from colora_jax._src.cpu_threads import initial_cores

    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        mp_context=context,
        initializer=_start,
        initargs=(counter, initial_cores(), cache_dir(), bool(jax.config.read("jax_enable_x64"))),
    )
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
