"""One command for a lent accelerator: the linear trials/s suite and the NNX serve/train benchmark.

    python -m benchmarks.accelerator [--smoke] [--sections linear,nnx,compile] [--out figures]

Writes ``figures/accelerator_<device>.json``, ``<device>`` being ``jax.devices()[0].device_kind``
in lower case with every run of other characters than ``a-z0-9`` turned into one ``_`` (an H100
reads ``nvidia_h100_80gb_hbm3``; the CPU backend ``cpu``: a CPU run is the CPU reference, not an
accelerator figure). Nothing here names a device: the same command runs on CPU, GPU or TPU.
Parts, each timed apart from its compiles:

1. ``linear`` (``colora_jax._src.bench``, as ``colora bench``): whole-process latency of
   ``colora recover`` cold (empty compile cache) and warm (child processes); trials/s of the
   compiled recover path against the NumPy reference, compile seconds apart; seconds per AltMin
   iteration against the number of users ``k`` and the dimension ``d``; memory bandwidth, matmul
   throughput and the roofline ratio.
2. ``nnx``: benchmarks/serving.py's sweep (base, shared LoRA, CoLoRA at widths 256, 1024, 2048;
   distinct users; bank sizes to 10^6) at accelerator sizes; rates from wall time on an
   accelerator (the host's CPU time does not see the device), from CPU time on the CPU backend.
3. ``compile``: the CoLoRA serving and train functions at the largest width compiled with a
   fresh persistent compilation cache (cold), then again after ``jax.clear_caches()`` (warm:
   loaded from that cache).

The sizes aim at under 8 minutes on one H100 (not yet run on one: no accelerator was lent while it
was written). ``--smoke``: seconds-long sizes on any backend (the test suite runs it on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import time

import jax

from benchmarks import serving
from colora_jax import device_info
from colora_jax._src.bench import latency, suite
from colora_jax._src.cli.common import to_jsonable
from colora_jax.nnx import nnx_code_version as code_version

PARTS = ("linear", "nnx", "compile")

NNX = serving.Config(
    vocab=32_768,
    seq_len=128,
    widths=(256, 1024, 2048),
    width_batches=(1024, 256, 128),
    users=4096,
    distinct_users=(1, 16, 256),
    bank_sizes=(100_000, 1_000_000),
    memory_limit_gb=16.0,
    warmup=2,
    repeats=10,
    clock="wall",
)
NNX_SMOKE = serving.Config(
    vocab=64,
    seq_len=4,
    widths=(32,),
    width_batches=(8,),
    users=16,
    distinct_users=(1,),
    bank_sizes=(),
    repeats=2,
    clock="cpu",
)


def sanitize(kind: str) -> str:
    """A device kind as a file name: ``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia_h100_80gb_hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "unknown"


def device_name() -> str:
    """``jax.devices()[0].device_kind``, sanitized."""
    return sanitize(jax.devices()[0].device_kind)


def linear(smoke: bool) -> dict:
    """Part 1: latency (cold/warm), trials/s against NumPy, iteration time, roofline."""
    out = {"latency": latency.run(("recover",))} if not smoke else {}
    trials, numpy_trials = (4, 1) if smoke else (128, 10)
    out["versus_numpy"] = [suite.versus_numpy(n, trials, numpy_trials) for n in ((16,) if smoke else (16, 80))]
    ks = (64,) if smoke else (1_000, 10_000, 100_000)
    out["iteration_vs_users"] = [suite.iteration_time(k, 8 if smoke else 32) for k in ks]
    if smoke:  # the d sweep's one point (k = 64, d = 8) is the users sweep's: measured once
        out["iteration_vs_d"] = out["iteration_vs_users"][:1]
    else:
        out["iteration_vs_d"] = [suite.iteration_time(10_000, d) for d in (16, 32, 64)]
    bandwidth = suite.read_bandwidth(2**22 if smoke else 2**30)
    flop_rate = suite.matmul_throughput(256 if smoke else 8192)
    out["roofline"] = suite.roofline(out["iteration_vs_users"][-1], bandwidth, flop_rate)
    for line in latency.lines(out.get("latency", {})):
        print(line)
    for v in out["versus_numpy"]:
        print(
            f"sensing k={v['config']['users']} n={v['config']['samples']}: colora {v['colora_trials_per_second']:.1f}"
            f" trials/s (compile {v['colora_compile_seconds']:.1f} s apart) vs NumPy"
            f" {v['numpy_trials_per_second']:.2f} -> {v['ratio_trials']:.1f}x",
            flush=True,
        )
    for it in out["iteration_vs_users"] + out["iteration_vs_d"]:
        print(
            f"AltMin iteration k={it['users']} d={it['d']}: {it['seconds_per_iteration'] * 1e3:.2f} ms"
            f" (compile {it['compile_seconds']:.1f} s)",
            flush=True,
        )
    rf = out["roofline"]
    print(f"roofline: {rf['ratio']:.1f}x the bandwidth floor; matmul {flop_rate / 1e12:.2f} TFLOP/s", flush=True)
    return out


def compile_cold_warm(config: serving.Config) -> dict:
    """Part 3: compile seconds of CoLoRA's serve and train at the largest width, cold then warm."""
    width, batch = config.widths[-1], config.width_batches[-1]
    model_cfg = serving.model_config(width, config.vocab, config.seq_len)
    previous = jax.config.jax_compilation_cache_dir
    out = {"width": width, "batch": batch}
    with tempfile.TemporaryDirectory() as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        for state in ("cold", "warm"):
            jax.clear_caches()
            b = serving.Bench(model_cfg, config, "colora", batch, batch, jax.random.key(0))
            out[state] = {"serve": b.serve_compile, "train": b.step_compile}
            b = None
        jax.config.update("jax_compilation_cache_dir", previous)
    print(
        f"CoLoRA width {width} compile: serve cold {out['cold']['serve']:.2f} s, warm {out['warm']['serve']:.2f} s;"
        f" train cold {out['cold']['train']:.2f} s, warm {out['warm']['train']:.2f} s",
        flush=True,
    )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long sizes (any backend)")
    parser.add_argument("--sections", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args(argv)
    parts = [p for p in args.sections.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}: choose from {', '.join(PARTS)}")
    nnx_config = NNX_SMOKE if args.smoke else NNX
    if jax.default_backend() == "cpu":
        nnx_config = dataclasses.replace(nnx_config, clock="cpu")
    start, load_before = time.time(), os.getloadavg()
    record = {
        "device_name": device_name(),
        "device": device_info(),
        "smoke": args.smoke,
        "code_version": code_version("benchmarks/accelerator.py"),
        "cores": sorted(os.sched_getaffinity(0)),
        "seconds": {},
    }
    for part in parts:
        t = time.time()
        if part == "linear":
            record["linear"] = linear(args.smoke)
        elif part == "nnx":
            record["nnx"] = serving.run(nnx_config, smoke=args.smoke)
        else:
            record["compile"] = compile_cold_warm(nnx_config)
        record["seconds"][part] = round(time.time() - t, 1)
    record["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    record["seconds"]["total"] = round(time.time() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"accelerator_{record['device_name']}.json")
    with open(path, "w") as f:
        json.dump(to_jsonable(record), f, indent=1)
    print(f"{record['device']['device_kind']}: {record['seconds']} s; load {record['load_average']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
