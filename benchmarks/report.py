"""The measurement tables of docs/scale.md, rendered from the benchmark record (never typed by hand).

    python -m benchmarks.report [--bench figures/bench.json] [--write docs/scale.md]

``colora bench`` writes figures/bench.json; this renders each of its sections as a Markdown table.
``--write`` replaces the text between the markers ``<!-- bench: NAME -->`` and ``<!-- /bench -->``
of the given file (NAME one of ``TABLES``); without it every table is printed.
``tests/test_scale_docs.py`` keeps docs/scale.md in step with figures/bench.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable

MARK = re.compile(r"(<!-- bench: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.S)

# The targets the measurements are held to (issue 4), fixed before the runs: seconds for latency
# (cold, warm), a ratio of trials per second against NumPy by samples per user.
LATENCY_TARGETS = {"recover": (5.0, 2.0), "demo": (30.0, 30.0), "phase_diagram": (60.0, 60.0)}
NUMPY_TARGETS = {16: 10.0, 80: 4.0}
LATENCY_NAMES = {
    "recover": "`colora recover` (sensing, k = 50, d = 20, r = 2, 16 samples, 20 trials, `--json`)",
    "demo": "`make demo` (`python -m colora_jax.demo`)",
    "phase_diagram": "the issue-4 phase diagram (120 cells, `python -m colora_jax._src.bench.phase_grid`)",
}


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> str:
    lines = [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def _met(value: float, target: float) -> str:
    return "met" if value <= target else "missed"


def provenance(bench: dict) -> str:
    """Where and on what the record was measured."""
    device = bench["device"]
    loads = [bench.get("load_average_start"), bench.get("load_average_end")]
    load = " -> ".join(f"{x[0]:.2f}" for x in loads if x)
    rows = [
        ["code version", f"`{bench['code_version']}`"],
        ["jax", device.get("jax_version", "-")],
        ["backend, device kind, devices", f"{device['backend']}, {device['device_kind']}, {device['device_count']}"],
        ["sections", ", ".join(bench["sections"]) + (" (`--quick`)" if bench.get("quick") else "")],
        ["1-minute load average, start -> end", load or "-"],
    ]
    return _table(["", "figures/bench.json"], rows)


def latency(bench: dict) -> str:
    """Whole-process wall seconds of the canonical commands, cold and warm, against their targets."""
    rows = []
    for key, runs in bench["latency"].items():
        if key not in LATENCY_TARGETS:
            continue
        cold, warm = runs["cold"], runs["warm"]
        cold_target, warm_target = LATENCY_TARGETS[key]
        target = (
            f"{cold_target:g} s" if cold_target == warm_target else f"{cold_target:g} s cold, {warm_target:g} s warm"
        )
        verdict = f"cold {_met(cold['wall_seconds'], cold_target)}, warm {_met(warm['wall_seconds'], warm_target)}"
        rows.append(
            [
                LATENCY_NAMES[key],
                f"{cold['wall_seconds']:.1f}",
                f"{cold['xla_compile_seconds']:.1f}",
                f"{warm['wall_seconds']:.1f}",
                f"{warm['cache']['executables_loaded']}",
                target,
                verdict,
            ]
        )
    header = ["command", "cold s", "XLA compile s, cold", "warm s", "programs loaded whole, warm", "target", ""]
    return _table(header, rows)


def versus_numpy(bench: dict) -> str:
    """Trials and fits per second of colora against the hand-written NumPy AltMin."""
    rows = []
    for r in bench["versus_numpy"]:
        n = r["config"]["samples"]
        target = NUMPY_TARGETS.get(n)
        rows.append(
            [
                n,
                f"{r['colora_trials_per_second']:.1f} vs {r['numpy_trials_per_second']:.1f}",
                f"{r['ratio_trials']:.1f}x",
                f"{r['colora_fits_per_second']:.1f} vs {r['numpy_fits_per_second']:.1f}",
                f"{r['ratio_fits']:.1f}x",
                f"{r['colora_iterations_mean']:.1f} vs {r['numpy_iterations_mean']:.1f}",
                "-" if target is None else f"{target:g}x: " + ("met" if r["ratio_trials"] >= target else "missed"),
            ]
        )
    header = ["samples per user", "trials/s, colora vs NumPy", "ratio", "fits/s", "ratio", "mean iterations", "target"]
    return _table(header, rows)


def cores(bench: dict) -> str:
    """Trials per second on one core, one process on every core, and one one-core process per core."""
    rows = []
    for r in bench["cores"]:
        tps = r["trials_per_second"]
        rows.append(
            [
                r["config"]["samples"],
                f"{tps['one_core']:.1f}",
                f"{tps['all_cores']:.1f} ({r['speedup_all_cores']:.2f}x)",
                f"{tps['processes']:.1f} ({r['speedup_processes']:.2f}x)",
            ]
        )
    cores_used = bench["cores"][0]["cores"] if bench["cores"] else "-"
    header = ["samples per user", "one core", f"one process on {cores_used} cores", f"{cores_used} one-core processes"]
    return _table(header, rows)


def iteration(bench: dict) -> str:
    """Seconds per AltMin iteration against k and d (regression, in memory), with XLA's memory."""
    rows = []
    for sweep in ("iteration_vs_users", "iteration_vs_d"):
        for r in bench[sweep]:
            rows.append(
                [
                    "k" if sweep == "iteration_vs_users" else "d",
                    f"{r['users']:,}",
                    r["d"],
                    f"{r['seconds_per_iteration']:.4f}",
                    f"{1e6 * r['seconds_per_iteration'] / r['users']:.1f}",
                    f"{r['setup_seconds']:.3f}",
                    f"{r['compile_seconds']:.2f}",
                    f"{r['data_bytes'] / 1e6:,.1f}",
                    f"{r['xla_argument_bytes'] / 1e6:,.1f}",
                    f"{r['xla_temp_bytes'] / 1e6:,.1f}",
                ]
            )
    header = ["sweep", "k", "d", "s / iteration", "µs / user", "setup s", "compile s", "data MB", "XLA argument MB"]
    return _table([*header, "XLA temp MB"], rows)


def roofline(bench: dict) -> str:
    """The largest iteration against its bytes floor and its flop floor."""
    r = bench["roofline"]
    rows = [
        ["bytes floor", f"{r['bytes_per_iteration_floor'] / 1e6:,.1f} MB"],
        ["measured read bandwidth", f"{r['bandwidth_bytes_per_second'] / 1e9:.1f} GB/s"],
        ["bytes floor time", f"{1e3 * r['floor_seconds']:.1f} ms"],
        ["flop floor", f"{r['flops_per_iteration_floor'] / 1e9:.2f} GFLOP"],
        ["measured dense matmul rate", f"{r['matmul_flops_per_second'] / 1e9:.0f} GFLOP/s"],
        ["flop floor time", f"{1e3 * r['flop_floor_seconds']:.1f} ms"],
        ["measured iteration", f"{1e3 * r['measured_seconds']:.0f} ms"],
        ["measured / bytes floor", f"{r['ratio']:.1f}x"],
        ["measured / the larger floor (roofline)", f"{r['ratio_to_roofline']:.1f}x"],
    ]
    return _table(["", "largest k of the iteration sweep"], rows)


def device_scaling(bench: dict) -> str:
    """Strong and weak scaling of ``fit_sharded`` over (fake) devices."""
    r = bench["device_scaling"]
    devices = r["devices"]
    strong_users = r["users_per_device"] * max(devices)
    rows = [
        [f"strong ({strong_users:,} users) s/it", *(f"{s:.3f}" for s in r["strong_seconds"])],
        ["strong efficiency", *(f"{e:.2f}" for e in r["strong_efficiency"])],
        [f"weak ({r['users_per_device']:,} users per device) s/it", *(f"{s:.4f}" for s in r["weak_seconds"])],
        ["weak efficiency", *(f"{e:.2f}" for e in r["weak_efficiency"])],
    ]
    return _table(["devices", *devices], rows)


def streaming(bench: dict) -> str:
    """The streamed problem: its size, generation, compile and iteration times, and peak memory."""
    r = bench["streaming"]
    rows = [
        ["users, chunks", f"{r['users']:,}, {r['chunks']}"],
        ["samples, d, rank, dtype", f"{r['samples']}, {r['d']}, {r['rank']}, {r['dtype']}"],
        ["data", f"{r['data_bytes'] / 1e9:.2f} GB, {r['data']}"],
        ["generation", f"{r['generate_seconds']:.1f} s"],
        ["compile", f"{r['compile_seconds']:.1f} s"],
        ["per AltMin iteration", f"{r['seconds_per_iteration']:.1f} s"],
        ["peak RSS (an upper bound: a child starts from its parent's peak)", f"{r['peak_rss_bytes'] / 2**30:.2f} GiB"],
    ]
    return _table(["", "streamed"], rows)


TABLES: dict[str, Callable[[dict], str]] = {
    "provenance": provenance,
    "latency": latency,
    "versus_numpy": versus_numpy,
    "cores": cores,
    "iteration": iteration,
    "roofline": roofline,
    "device_scaling": device_scaling,
    "streaming": streaming,
}


def load(path: str) -> dict:
    """The benchmark record written by ``colora bench``."""
    with open(path) as f:
        return json.load(f)


def render(text: str, bench: dict) -> str:
    """``text`` with every marked table replaced from ``bench`` (a marker naming no table: ValueError)."""

    def table(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"docs mark bench table {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + TABLES[name](bench) + match.group(4)

    return MARK.sub(table, text)


def main() -> int:
    """Print every table, or rewrite the marked tables of ``--write``; 2 on a bad file."""
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--bench", default="figures/bench.json", help="benchmark record (default figures/bench.json)")
    p.add_argument("--write", default=None, help="Markdown file whose marked tables are replaced")
    args = p.parse_args()
    try:
        bench = load(args.bench)
        if args.write is None:
            for name, make in TABLES.items():
                print(f"## {name}\n\n{make(bench)}")
            return 0
        with open(args.write) as f:
            text = f.read()
        new = render(text, bench)
    except BrokenPipeError:  # printed into `head`: nothing more to say
        return 0
    except (OSError, ValueError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # a record from an older or partial run (``--sections``, ``--quick``)
        print(f"report: {args.bench} has no field {err} that docs/scale.md's tables need", file=sys.stderr)
        return 2
    with open(args.write, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
