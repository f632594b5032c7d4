"""Independent pieces of work in several processes, each on a core of its own.

A sweep's trial programs are many small operations in a loop: XLA's thread pool splits each
operation over the cores, and the operations are too small to gain from it (docs/scale.md,
"Cores"). Processes, each pinned to one core and given a share of the work, scale instead. The
numbers are those of the same work in one process on one core (tested); a process on more
cores can differ at rounding, since XLA splits a long sum over its threads (``cpu_threads``).

``parallel_map`` runs a picklable function over items in ``spawn``-ed worker processes (never
``fork``: the parent's JAX runtime must not be copied); each worker is pinned to one of the
cores the parent had when it started (``limit_cpu_threads(1, offset=i, cores=initial_cores())``,
so a parent pinned to one core still spreads its workers) and uses the parent's compile cache
and 64-bit setting.
Items are handed out in the order given, so put the most expensive first.

Workers end with their parent, however it ends (SIGKILL included): each holds the read end of a
pipe whose only write end the parent holds, and a thread of the worker exits the process when
that pipe reports end-of-file; on Linux the kernel also sends the worker SIGKILL when the thread
that started it ends (``PR_SET_PDEATHSIG``), which covers a worker stuck in C code. Workers
ignore SIGINT (they start with it blocked, then ignore it): a Ctrl-C reaches the whole process
group, and the parent decides (it closes the pipe, so the workers end at once instead of
finishing their items).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(lifeline, parent: int) -> None:
    """End this worker when its parent ends: a watch of the parent's pipe, and PR_SET_PDEATHSIG on Linux."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the pipe watch alone

    def watch():
        try:
            lifeline.recv()  # the parent never sends: this returns only by EOFError, when its end closes
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="colora-lifeline", daemon=True).start()
    if os.getppid() != parent:  # the parent ended before the watch began
        os._exit(1)


@contextlib.contextmanager
def _sigint_blocked():
    """SIGINT blocked in this thread.

    Held pending, not lost: another thread's handler still flags it for the main thread; processes
    started meanwhile inherit the mask through exec.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start(counter, cores: list[int], cache_dir: str | None, x64: bool, lifeline, parent: int) -> None:
    """A worker's set-up, before any JAX computation.

    Bound to its parent's life, SIGINT left to the parent, then the next free core, the parent's
    cache and precision.
    """
    _die_with_parent(lifeline, parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    import jax

    from colora_jax._src.runtime.caches import enable_compile_cache
    from colora_jax._src.runtime.cpu_threads import limit_cpu_threads

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
    worker is raised here; on any exception here (an interrupt included), or when the caller
    stops iterating, the workers end at once and their items are dropped.
    """
    if workers <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    import jax

    from colora_jax._src.runtime.caches import cache_dir
    from colora_jax._src.runtime.cpu_threads import initial_cores

    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    lifeline, keep_alive = context.Pipe(duplex=False)  # workers get the read end; only this process writes
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        mp_context=context,
        initializer=_start,
        initargs=(
            counter,
            initial_cores(),
            cache_dir(),
            bool(jax.config.read("jax_enable_x64")),
            lifeline,
            os.getpid(),
        ),
    )
    finished = False
    try:
        with _sigint_blocked():  # the workers start with it blocked, so none is interrupted while it imports
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
        finished = True
    finally:
        if not finished:  # end the workers now: one still starting has no watch yet
            keep_alive.close()
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        keep_alive.close()
        lifeline.close()
