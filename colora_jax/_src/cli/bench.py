"""``colora bench``: the benchmark suite (JSON, one readable summary, figures/bench.png)."""

from __future__ import annotations

import argparse
import json
import pathlib

from colora_jax._src.bench import cores, latency, suite
from colora_jax._src.cli import common
from colora_jax._src.runtime.provenance import code_version, device_info


def register(subparsers) -> None:
    """Add ``colora bench`` and its flags."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark suite: trials/s against NumPy, scaling in k, d and devices, memory, roofline",
        description="Measure colora against a hand-written NumPy AltMin (sensing, k=50, d=20, r=2,"
        " samples 16 and 80), how its trials use the cores (one core, every core, one-core processes),"
        " time per AltMin iteration against k and d, device scaling on fake CPU"
        " devices, the streamed k=10^6 regression problem's peak memory, and the ratio of the"
        " measured iteration time to the memory-bandwidth floor. Writes JSON and a figure.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: the whole suite in about a minute")
    p.add_argument(
        "--sections",
        type=_sections,
        default=suite.SECTIONS,
        help=f"comma-separated parts to run (default all: {','.join(suite.SECTIONS)}; also, asked for by name:"
        f" {','.join(suite.OPTIONAL_SECTIONS)})",
    )
    p.add_argument("--out", default="figures", help="directory for bench.json and bench.png")
    p.add_argument("--json", action="store_true", help="print the whole JSON result")
    p.set_defaults(run=run)


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    known = suite.SECTIONS + suite.OPTIONAL_SECTIONS
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(map(repr, unknown)) or '(none)'}: choose from {', '.join(known)}"
        )
    return names


def _writable_folder(folder: str) -> pathlib.Path:
    """The output folder, created and probed before minutes of measuring (UsageError otherwise)."""
    out = pathlib.Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bench-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise common.UsageError(
            f"cannot write to --out {folder} ({err.strerror or err}): choose a writable folder", "colora bench"
        ) from None
    return out


def run(args) -> int:
    """Run the suite, write bench.json and bench.png, print a summary; returns the exit code."""
    out = _writable_folder(args.out)
    result = {"code_version": code_version(), "device": device_info(), **suite.run(args.quick, args.sections)}
    (out / "bench.json").write_text(json.dumps(common.to_jsonable(result), indent=1))
    suite.plot(result, out / "bench.png")
    if args.json:
        common.print_json(result)
    for line in latency.lines(result.get("latency", {})):
        print(line)
    for v in result.get("versus_numpy", []):
        print(
            f"sensing k={v['config']['users']} d={v['config']['d_in']} r={v['config']['rank']}"
            f" n={v['config']['samples']}: colora {v['colora_trials_per_second']:.1f} trials/s vs NumPy"
            f" {v['numpy_trials_per_second']:.2f} -> {v['ratio_trials']:.1f}x (fits only: {v['ratio_fits']:.1f}x)"
        )
    for c in result.get("cores", []):
        print(cores.line(c))
    if "information_limit" in result:
        from colora_jax._src.bench import information_limit

        table = common.to_jsonable(result["information_limit"])
        (out / "information_limit.json").write_text(json.dumps(table, indent=1))
        print(information_limit.markdown(result["information_limit"]))
    if "roofline" in result:
        rf = result["roofline"]
        print(
            f"roofline: {rf['measured_seconds'] * 1e3:.1f} ms/iteration, {rf['ratio']:.1f}x the"
            f" {rf['floor_seconds'] * 1e3:.1f} ms bandwidth floor, {rf['ratio_to_roofline']:.1f}x the roofline"
            f" (flop floor {rf['flop_floor_seconds'] * 1e3:.1f} ms)"
        )
    if "streaming" in result:
        st = result["streaming"]
        print(
            f"streamed k={st['users']}: {st['seconds_per_iteration']:.2f} s/iteration, peak RSS"
            f" {st['peak_rss_bytes'] / 2**30:.2f} GiB"
        )
    print(f"wrote {out / 'bench.json'}" + (f" and {out / 'bench.png'}" if (out / "bench.png").exists() else ""))
    return 0
