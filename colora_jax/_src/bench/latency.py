"""Whole-process latency of the canonical commands, cold (empty compile cache) and warm.

Each command runs in a new process (``python -m ...``) with ``COLORA_JAX_CACHE_DIR`` pointing
at a fresh directory: the first run compiles everything (cold), the second loads every program
from the cache (warm). Reported per run: wall seconds of the whole process (interpreter start,
imports, tracing, compiling or loading, running, writing), and, from the command's own record,
the seconds spent compiling (XLA backend compiles only), the compile cache's hits and misses,
and the trial programs loaded whole (``caches.load_or_compile``: neither traced nor compiled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

RECOVER = [
    "-m",
    "colora_jax.cli",
    "recover",
    "--model",
    "sensing",
    "--users",
    "50",
    "--d-out",
    "20",
    "--d-in",
    "20",
    "--rank",
    "2",
    "--samples",
    "16",
    "--trials",
    "20",
    "--json",
]


def _run(args: list[str], cache: str, out_dir: str) -> dict:
    env = {**os.environ, "COLORA_JAX_CACHE_DIR": cache, "TF_CPP_MIN_LOG_LEVEL": "3", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *[a.replace("{out}", out_dir) for a in args]],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return {"wall_seconds": wall, "stdout": done.stdout}


def _cache(counts: dict) -> dict:
    """JAX's persistent cache (hits, misses) and the trial programs stored whole (loaded, saved)."""
    keys = ("hits", "misses", "executables_loaded", "executables_saved")
    return {k: counts.get(k, 0) for k in keys}


def _recover(cache: str, out_dir: str) -> dict:
    r = _run(RECOVER, cache, out_dir)
    record = json.loads(r["stdout"])
    return {
        "wall_seconds": r["wall_seconds"],
        "compile_seconds": record["compile_seconds"],
        "run_seconds": record["run_seconds"],
        "xla_compile_seconds": record["compile_cache"]["compile_seconds"],
        "cache": _cache(record["compile_cache"]),
    }


def _demo(cache: str, out_dir: str) -> dict:
    r = _run(["-m", "colora_jax.demo", "--out", "{out}"], cache, out_dir)
    with open(os.path.join(out_dir, "demo_recovery.json")) as f:
        record = json.load(f)
    cc = record["compile_cache"]
    return {
        "wall_seconds": r["wall_seconds"],
        "xla_compile_seconds": cc["compile_seconds"],
        "cache": _cache(cc),
        "success_rate": record["success_rate"],
    }


def _phase_grid(cache: str, out_dir: str) -> dict:
    r = _run(["-m", "colora_jax._src.bench.phase_grid"], cache, out_dir)
    record = json.loads(r["stdout"].strip().splitlines()[-1])
    cc = record["compile_cache"]
    return {
        "wall_seconds": r["wall_seconds"],
        "run_seconds": record["seconds"],
        "cells": record["cells"],
        "xla_compile_seconds": cc["compile_seconds"],
        "cache": _cache(cc),
    }


COMMANDS = {
    "recover": (" ".join(["colora"] + RECOVER[3:]), _recover),
    "demo": ("make demo (python -m colora_jax.demo)", _demo),
    "phase_diagram": ("python -m colora_jax._src.bench.phase_grid (issue-4 grid, 120 cells)", _phase_grid),
}


def run(names=("recover", "demo", "phase_diagram")) -> dict:
    """Cold then warm whole-process runs of each named command (see the module docstring)."""
    out = {"load_average_start": os.getloadavg()}
    for name in names:
        command, measure = COMMANDS[name]
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out_dir:
            out[name] = {"command": command, "cold": measure(cache, out_dir), "warm": measure(cache, out_dir)}
    out["load_average_end"] = os.getloadavg()
    return out


def lines(latency: dict) -> list[str]:
    """One readable line per command."""
    text = []
    for name in COMMANDS:
        if name in latency:
            c, w = latency[name]["cold"], latency[name]["warm"]
            text.append(
                f"latency {name}: cold {c['wall_seconds']:.1f} s ({c['xla_compile_seconds']:.1f} s XLA compile,"
                f" {c['cache']['misses']} programs compiled), warm {w['wall_seconds']:.1f} s"
                f" ({w['cache']['hits'] + w['cache']['executables_loaded']} programs loaded, of which"
                f" {w['cache']['executables_loaded']} stored whole, {w['cache']['misses']} compiled)"
            )
    return text
