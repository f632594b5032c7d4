"""``colora bench``: the benchmark suite (JSON, one readable summary, figures/bench.png)."""

from __future__ import annotations

import json
import pathlib

from colora_jax._src.bench import suite
from colora_jax._src.commands import common
from colora_jax._src.provenance import code_version, device_info


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark suite: trials/s against NumPy, scaling in k, d and devices, memory, roofline",
        description="Measure colora against a hand-written NumPy AltMin (sensing, k=50, d=20, r=2,"
        " samples 16 and 80), time per AltMin iteration against k and d, device scaling on fake CPU"
        " devices, the streamed k=10^6 regression problem's peak memory, and the ratio of the"
        " measured iteration time to the memory-bandwidth floor. Writes JSON and a figure.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: the whole suite in well under a minute")
    p.add_argument("--out", default="figures", help="directory for bench.json and bench.png")
    p.add_argument("--json", action="store_true", help="print the whole JSON result")
    p.set_defaults(run=run)


def run(args) -> int:
    result = {"code_version": code_version(), "device": device_info(), **suite.run(args.quick)}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(common.to_jsonable(result), indent=1))
    suite.plot(result, out / "bench.png")
    if args.json:
        common.print_json(result)
    for v in result["versus_numpy"]:
        print(f"sensing k={v['config']['users']} d={v['config']['d_in']} r={v['config']['rank']}"
              f" n={v['config']['samples']}: colora {v['colora_trials_per_second']:.1f} trials/s vs NumPy"
              f" {v['numpy_trials_per_second']:.2f} -> {v['ratio_trials']:.0f}x (fits only: {v['ratio_fits']:.0f}x)")
    rf, st = result["roofline"], result["streaming"]
    print(f"roofline: {rf['measured_seconds'] * 1e3:.1f} ms/iteration, {rf['ratio']:.1f}x the"
          f" {rf['floor_seconds'] * 1e3:.1f} ms bandwidth floor, {rf['ratio_to_roofline']:.1f}x the roofline"
          f" (flop floor {rf['flop_floor_seconds'] * 1e3:.1f} ms); streamed k={st['users']}:"
          f" {st['seconds_per_iteration']:.2f} s/iteration, peak RSS {st['peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0
