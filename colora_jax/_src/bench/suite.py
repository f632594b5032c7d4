"""The benchmark suite behind ``colora bench``.

Speed against NumPy, scaling in k, d and devices, memory, and a roofline floor. Every figure is
measured here; nothing is asserted.

Child processes are used where a measurement needs its own setting before NumPy or JAX is
imported: the NumPy reference (single-threaded OpenBLAS, its fastest setting for these small
matrices), fake devices (``XLA_FLAGS``), and the streamed run whose peak RSS is reported.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from colora_jax._src.algorithms import fit
from colora_jax._src.estimators.altmin import AltMin
from colora_jax._src.estimators.users import AllUsers
from colora_jax._src.experiments.trials import compiled_trials, generated_config, run_trials
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig, ProblemConfig
from colora_jax._src.model.data import generate


def _child(module: str, args, env=None, timeout=3600) -> dict:
    env = {**os.environ, **(env or {})}
    out = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )
    if out.returncode:
        raise RuntimeError(f"{module} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(fn, repeats=3):
    """Fastest of ``repeats`` timed calls of ``fn`` (seconds); other engineers share the CPU."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def versus_numpy(samples: int, trials: int, numpy_trials: int, users=50, d=20, rank=2) -> dict:
    """Trials (and fits) per second of the compiled ``colora recover`` path against NumPy."""
    pc = ProblemConfig(model="sensing", users=users, d_out=d, d_in=d, rank=rank, samples=samples)
    fc = FitConfig(rank=rank)
    t = time.perf_counter()
    compiled_trials(generated_config(pc, None), fc, trials)
    compile_s = time.perf_counter() - t
    key = jax.random.key(0)
    trial_s = _best(lambda: run_trials(key, pc, fc, trials, batch=trials))
    res = run_trials(key, pc, fc, trials, batch=trials)
    problems = jax.jit(jax.vmap(lambda k: generate(k, pc)))(jax.random.split(key, trials))
    fit_all = jax.jit(jax.vmap(lambda o: fit(o, fc)))
    jax.block_until_ready(fit_all(problems.train))
    fit_s = _best(lambda: fit_all(problems.train))
    ref = _child(
        "colora_jax._src.bench.reference",
        [users, d, rank, samples, numpy_trials],
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    colora_tps = trials / trial_s
    return {
        "config": {"model": "sensing", "users": users, "d_out": d, "d_in": d, "rank": rank, "samples": samples},
        "colora_trials_per_second": colora_tps,
        "colora_fits_per_second": trials / fit_s,
        "colora_compile_seconds": compile_s,
        "colora_iterations_mean": float(np.mean(res.trace.iterations)),
        "colora_rel_error_max": float(np.max(res.evaluation.rel_error)),
        "numpy_trials_per_second": ref["trials_per_second"],
        "numpy_fits_per_second": ref["fits_per_second"],
        "numpy_iterations_mean": ref["iterations_mean"],
        "numpy_rel_error_max": ref["rel_error_max"],
        "ratio_trials": colora_tps / ref["trials_per_second"],
        "ratio_fits": (trials / fit_s) / ref["fits_per_second"],
    }


def seconds_per_iteration(make, obs, rank: int, iters=(2, 8), repeats=3):
    """Per-iteration seconds of ``make(fit_config)(obs)``, its compile time and XLA memory analysis.

    Two fits that differ only in their iteration budget: the difference of their run times over
    the difference of the iterations they ran (tol 0 and noisy data: no early stop at a floor).
    """
    runs = []
    for budget in iters:
        fc = FitConfig(rank=rank, iters=budget, tol=0.0)
        t = time.perf_counter()
        compiled = jax.jit(make(fc)).lower(obs).compile()
        compile_s = time.perf_counter() - t
        seconds = _best(lambda compiled=compiled: compiled(obs), repeats)
        runs.append((seconds, int(compiled(obs)[1].iterations), compile_s, compiled.memory_analysis()))
    (t0, i0, _, _), (t1, i1, compile_s, mem) = runs
    return (t1 - t0) / max(i1 - i0, 1), compile_s, mem


def iteration_time(users: int, d: int, samples=16, rank=4, iters=(2, 12)) -> dict:
    """Seconds per exact AltMin iteration (regression, in memory), compile time, XLA memory.

    The iteration is ``fit``'s own step, run exactly ``n`` times in a ``fori_loop`` from the
    spectral start (``fit`` itself stops once the objective stops decreasing, after as few as
    3-4 iterations at k = 10^5, too few to time). Per iteration: the difference of the run times
    for the two ``iters`` over their difference. ``setup_seconds``: what a fit does once before
    iterating (the statistics ``C_i``, ``Bt_i``, spectral init, first personal step).
    """
    pc = ProblemConfig(
        model="regression", users=users, d_out=d, d_in=d, rank=rank, samples=samples, test_samples=0, noise=0.1
    )
    obs = jax.jit(lambda k: generate(k, pc).train)(jax.random.key(0))

    def setup(o):  # what fit does before its loop
        dz = blocks.design(o)
        return dz, blocks.spectral_init(dz, rank)

    def run_steps(dz, start, n):  # the objective is carried, so XLA cannot drop its pass over the data
        def body(_, carry):
            _, sse, nxt = AltMin().step(carry[0], None, FitConfig(rank=rank), AllUsers(dz))
            return nxt, sse

        return jax.lax.fori_loop(0, n, body, (start, jnp.zeros((), start[0].dtype)))

    setup_c = jax.jit(setup).lower(obs).compile()
    setup_s = _best(lambda: setup_c(obs))
    dz, start = setup_c(obs)
    times = []
    for n in iters:
        t = time.perf_counter()
        compiled = jax.jit(run_steps, static_argnums=2).lower(dz, start, n).compile()
        compile_s = time.perf_counter() - t
        times.append(_best(lambda compiled=compiled: compiled(dz, start)))
    mem = compiled.memory_analysis()
    return {
        "users": users,
        "d": d,
        "samples": samples,
        "rank": rank,
        "seconds_per_iteration": (times[1] - times[0]) / (iters[1] - iters[0]),
        "setup_seconds": setup_s,
        "compile_seconds": compile_s,
        "data_bytes": obs.X.nbytes + obs.Y.nbytes,
        "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
        "xla_argument_bytes": getattr(mem, "argument_size_in_bytes", None),
    }


def read_bandwidth(bytes_=2**29) -> float:
    """Measured memory read bandwidth (bytes/s): a jitted sum over a large float32 array."""
    a = jnp.ones((bytes_ // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    jax.block_until_ready(total(a))
    return bytes_ / _best(lambda: total(a), repeats=5)


def matmul_throughput(n=2048) -> float:
    """Measured dense float32 matmul rate (flop/s): a jitted ``n x n`` product, ``2 n^3`` flops."""
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, a))
    return 2 * n**3 / _best(lambda: mm(a, a), repeats=5)


def iteration_flops(users: int, d: int, samples: int, rank: int) -> int:
    """Fewest flops of one exact regression AltMin iteration (d_in = d_out = d).

    Counted per the statistics-based steps: ``C_i V`` and ``B_i^T V`` (personal and output steps),
    the input step's ``sum_i C_i (x) Q_i`` and ``sum_i B_i P_i``, and the objective's raw residuals
    ``Y_i - X_i V S_i^T U^T``. Multiply-adds count 2; the r x r and (d r) x (d r) solves are left
    out (they do not grow with k).
    """
    d2r = d * d * rank
    return users * 2 * (d2r + d2r * rank + 2 * d2r + samples * rank * (2 * d + rank))


def roofline(it: dict, bandwidth: float, flop_rate: float | None = None) -> dict:
    """The floors of one iteration against its measured time.

    Bytes: every iteration reads each user's data once, in its smaller form — the observations
    ``n (d_in + d_out)`` numbers or the statistics ``C_i, B_i`` ``d_in (d_in + d_out)`` — over the
    measured read bandwidth (``ratio`` = measured / that floor). Flops (when ``flop_rate`` is
    given): ``iteration_flops`` over the measured dense matmul rate; the roofline is the larger
    of the two floors (``ratio_to_roofline``).
    """
    d, n, itemsize = it["d"], it["samples"], 4
    per_user = min(n * 2 * d, 2 * d * d) * itemsize
    floor_bytes = it["users"] * per_user
    floor_s = floor_bytes / bandwidth
    out = {
        "bytes_per_iteration_floor": floor_bytes,
        "bandwidth_bytes_per_second": bandwidth,
        "floor_seconds": floor_s,
        "measured_seconds": it["seconds_per_iteration"],
        "ratio": it["seconds_per_iteration"] / floor_s,
    }
    if flop_rate is not None:
        flops = iteration_flops(it["users"], d, n, it["rank"])
        flop_s = flops / flop_rate
        out |= {
            "flops_per_iteration_floor": flops,
            "matmul_flops_per_second": flop_rate,
            "flop_floor_seconds": flop_s,
            "ratio_to_roofline": it["seconds_per_iteration"] / max(floor_s, flop_s),
        }
    return out


def device_scaling(max_devices: int, users_per_device: int, d: int) -> dict:
    """Seconds per iteration of the sharded fit on 1..max_devices fake CPU devices (child process)."""
    return _child(
        "colora_jax._src.bench.scaling",
        [max_devices, users_per_device, d],
        env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={max_devices}"},
    )


def streaming(users: int, nchunks: int) -> dict:
    """The streamed regression problem (n=16, d=32, r=4) in a child process: its peak RSS."""
    return _child("colora_jax._src.bench.stream", [users, nchunks])


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _stage(name: str) -> None:
    """Progress on stderr (the full suite runs for many minutes; stdout stays the result)."""
    print(f"[colora bench {time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


SECTIONS = (
    "latency",
    "versus_numpy",
    "cores",
    "iteration",
    "roofline",
    "device_scaling",
    "streaming",
    "estimator_cost",
)
# asked for by name only (``--sections information_limit``): hours at full size, not part of the default run
OPTIONAL_SECTIONS = ("information_limit",)


def run(quick: bool, sections=SECTIONS) -> dict:
    """The measurements of ``sections``; ``quick`` shrinks every size so the whole suite takes a minute."""
    from colora_jax._src.bench import latency

    out = {"quick": quick, "sections": list(sections), "load_average_start": os.getloadavg()}
    if "latency" in sections:
        _stage("latency of the canonical commands, cold and warm (child processes)")
        out["latency"] = latency.run(("recover",) if quick else ("recover", "demo", "phase_diagram"))
    if "versus_numpy" in sections:
        trials, numpy_trials = (4, 1) if quick else (128, 10)
        out["versus_numpy"] = []
        for n in (16,) if quick else (16, 80):
            _stage(f"colora vs NumPy, sensing n={n}")
            out["versus_numpy"].append(versus_numpy(n, trials, numpy_trials))
    if "cores" in sections:
        from colora_jax._src.bench import cores

        out["cores"] = []  # CPU cores only: on an accelerator the trials do not run on them
        for n in ((16,) if quick else (16, 80)) if jax.default_backend() == "cpu" else ():
            _stage(f"one process on one core, on every core, and one-core processes at once, sensing n={n}")
            out["cores"].append(cores.main(n, 4 if quick else 128))
    ks = (64, 128) if quick else (1_000, 10_000, 100_000)
    if "iteration" in sections or "roofline" in sections:
        ds = (8, 16) if quick else (16, 32, 64)
        _stage(f"time per iteration against k in {ks}")
        out["iteration_vs_users"] = [iteration_time(k, 8 if quick else 32) for k in ks]
        _stage(f"time per iteration against d in {ds}")
        out["iteration_vs_d"] = [iteration_time(ks[0] if quick else 10_000, d) for d in ds]
    if "roofline" in sections:
        _stage("memory bandwidth and roofline")
        bandwidth = read_bandwidth(2**24 if quick else 2**29)
        flop_rate = matmul_throughput(512 if quick else 2048)
        out["roofline"] = roofline(out["iteration_vs_users"][-1], bandwidth, flop_rate)
    if "device_scaling" in sections:
        _stage("device scaling (child process, fake CPU devices)")
        out["device_scaling"] = device_scaling(2 if quick else 8, 64 if quick else 2048, 8 if quick else 32)
    if "streaming" in sections:
        users = 2_000 if quick else 1_000_000
        _stage(f"streamed regression, k={users} (child process)")
        out["streaming"] = streaming(users, 4 if quick else 100)
    if "estimator_cost" in sections:
        from colora_jax._src.bench import estimator_cost

        _stage("estimator cost against AltMin near 1.3 m*: compile and run apart, interleaved repeats")
        out["estimator_cost"] = estimator_cost.run(estimator_cost.QUICK if quick else estimator_cost.Config(), _stage)
    if "information_limit" in sections:
        from colora_jax._src.bench import information_limit as il

        _stage("information-limit table: n50 / m* of every estimator (resumable rows)")
        config = il.SMOKE if quick else il.Config()
        path = os.path.join("results", "information_limit" + ("_smoke" if quick else "") + ".jsonl")
        out["information_limit"] = il.run(config, path)
    out["peak_rss_bytes_bench_process"] = peak_rss_bytes()
    out["load_average_end"] = os.getloadavg()
    return out


def plot(result: dict, path) -> None:
    """Iteration time against k and d, device-scaling efficiency, and the roofline ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not all(key in result for key in ("iteration_vs_users", "device_scaling", "roofline")):
        return  # a partial run (--sections) has no full figure
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    vk, vd = result["iteration_vs_users"], result["iteration_vs_d"]
    ax[0].loglog([r["users"] for r in vk], [r["seconds_per_iteration"] for r in vk], "o-", label="measured")
    k0, t0 = vk[0]["users"], vk[0]["seconds_per_iteration"]
    ax[0].loglog([r["users"] for r in vk], [t0 * r["users"] / k0 for r in vk], "k:", label="linear")
    ax[0].set(xlabel="users k", ylabel="s / AltMin iteration", title=f"regression, d={vk[0]['d']}, n=16, r=4")
    ax[0].legend()
    ax[1].loglog([r["d"] for r in vd], [r["seconds_per_iteration"] for r in vd], "o-")
    ax[1].set(xlabel="d = d_in = d_out", ylabel="s / AltMin iteration", title=f"k={vd[0]['users']}")
    sc = result["device_scaling"]
    for kind in ("strong", "weak"):
        ax[2].plot(
            sc["devices"],
            sc[f"{kind}_efficiency"],
            "o-",
            label=f"{kind} (fixed {'total' if kind == 'strong' else 'per device'})",
        )
    ax[2].set(
        xlabel="fake CPU devices", ylabel="scaling efficiency", ylim=(0, 1.1), title=f"{os.cpu_count()} physical cores"
    )
    ax[2].legend()
    rf = result["roofline"]
    ax[3].bar(
        ["bytes /\nbandwidth", "flops /\nmatmul rate", "measured"],
        [rf["floor_seconds"], rf["flop_floor_seconds"], rf["measured_seconds"]],
        color=["C0", "C1", "C2"],
    )
    ax[3].set(
        ylabel="s / iteration",
        title=f"k={vk[-1]['users']}: {rf['ratio']:.1f}x bytes floor, {rf['ratio_to_roofline']:.1f}x roofline",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
