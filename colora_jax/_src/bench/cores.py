"""``python -m colora_jax._src.bench.cores [SAMPLES] [TRIALS]``: how one process uses this machine's cores.

The trials of ``colora recover``'s canonical configuration (sensing, k = 50, d = 20, r = 2,
float32, ``SAMPLES`` per user, default 16; ``TRIALS`` trials, default 128), warm (each process
compiles, then times a second run), three ways:

* ``one_core``: one process kept on one core (``limit_cpu_threads(1)``);
* ``all_cores``: one process on every core (XLA's threads split each operation);
* ``processes``: one one-core process per core at once, the trials split between them (what
  ``workers.parallel_map`` does for the proof scripts and the phase grid).

Each child compiles (or loads from the compile cache) and runs once, says so, and times its
second run when every child of its way is ready (so that the one-core processes run at the same
time, not one while another still compiles); it reports its wall and CPU seconds. This prints one
JSON line (trials per second of each way, and the speed-ups over one core), then a readable line on
stderr. Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

CHILD, READY = "--child", "ready"


def _child(samples: int, trials: int, core: int | None) -> dict:
    """Run ``trials`` trials twice in this process (on ``core`` alone, or every core); time the second."""
    from colora_jax._src.runtime.caches import enable_compile_cache
    from colora_jax._src.runtime.cpu_threads import limit_cpu_threads

    if core is not None:
        limit_cpu_threads(1, offset=core)
    enable_compile_cache()  # the untimed first run compiles or loads; only the second run is timed
    import jax

    from colora_jax._src.experiments.trials import run_trials
    from colora_jax._src.model.config import FitConfig, ProblemConfig

    pc = ProblemConfig(model="sensing", users=50, d_out=20, d_in=20, rank=2, samples=samples)
    fc = FitConfig(rank=2)
    run = lambda: run_trials(jax.random.key(core or 0), pc, fc, trials, batch=trials)
    run()
    print(READY, flush=True)
    sys.stdin.readline()  # the parent's go, once every child is ready
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"trials": trials, "wall_seconds": wall, "cpu_seconds": cpu}


def _spawn(samples: int, trials: int, core: int | None) -> subprocess.Popen:
    where = "all" if core is None else str(core)
    args = [sys.executable, "-m", "colora_jax._src.bench.cores", CHILD, str(samples), str(trials), where]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _together(procs: list[subprocess.Popen]) -> list[dict]:
    """Wait until every child has compiled and run once, start their timed runs, collect them."""
    for proc in procs:
        if proc.stdout.readline().strip() != READY:  # it failed before its timed run
            break
    else:
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"child failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(samples: int = 16, trials: int = 128) -> dict:
    """The three ways, one after the other (see the module docstring)."""
    from colora_jax._src.runtime.cpu_threads import available_cores

    cores = len(available_cores())
    (one,) = _together([_spawn(samples, trials, 0)])
    (every,) = _together([_spawn(samples, trials, None)])
    share = -(-trials // cores)
    parts = _together([_spawn(samples, share, c) for c in range(cores)])
    rate = lambda r: r["trials"] / r["wall_seconds"]
    together = sum(p["trials"] for p in parts) / max(p["wall_seconds"] for p in parts)
    return {
        "config": {"model": "sensing", "users": 50, "d": 20, "rank": 2, "samples": samples, "trials": trials},
        "cores": cores,
        "load_average": list(os.getloadavg()),
        "one_core": one,
        "all_cores": every,
        "processes": parts,
        "trials_per_second": {"one_core": rate(one), "all_cores": rate(every), "processes": together},
        "speedup_all_cores": rate(every) / rate(one),
        "speedup_processes": together / rate(one),
    }


def line(result: dict) -> str:
    """The readable summary of one ``main`` result."""
    tps = result["trials_per_second"]
    return (
        f"cores ({result['cores']}), sensing n={result['config']['samples']}: one core {tps['one_core']:.1f} trials/s;"
        f" one process on every core {tps['all_cores']:.1f} ({result['speedup_all_cores']:.2f}x);"
        f" one-core processes at once {tps['processes']:.1f} ({result['speedup_processes']:.2f}x)"
        f" (load {result['load_average'][0]:.2f})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        n, t, where = sys.argv[2:5]
        print(json.dumps(_child(int(n), int(t), None if where == "all" else int(where))))
    else:
        result = main(*(int(a) for a in sys.argv[1:3]))
        print(json.dumps(result))
        print(line(result), file=sys.stderr)
