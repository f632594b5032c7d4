"""Run every proof script and print one table: script, PASS/FAIL, measured figures, figure path.

    python -m proofs_numerics.run_all [--smoke] [--fresh] [--only NAME ...]

``make proofs`` runs this (``make proofs SMOKE=1``: the smoke configurations, written under
results/smoke/figures so the committed figures stay untouched); ``make figures`` adds
``--fresh``, recomputing every sweep cell. Each script runs twice: the
exploration (its Config's seeds) and then the confirmation (``--confirm``: the registered fresh
seeds), whose verdict is the one of record (``_common.attach_confirmation``). Exit status 1 if
a script crashed or wrote no JSON (a FAIL is a finding about the claim, reported in the table, not an error of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (module, whether it takes the sweep flags --fresh/--results and --confirm)
SCRIPTS: tuple[tuple[str, bool], ...] = (
    ("phase_transition", True),
    ("convergence", True),
    ("task_similarity", True),
    ("noise_floor", True),
    ("scaling", True),
    ("spectral_init", True),
    ("fedrep_linear", True),
    ("restricted_isometry", True),
    ("assumptions", True),
    ("nnx_planted_teacher", True),
    ("nnx_shakespeare", True),
)


def command(name: str, sweeps: bool, args, confirm: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", f"proofs_numerics.{name}", "--no-progress", "--out", args.out]
    if args.smoke:
        cmd.append("--smoke")
    if sweeps and args.fresh:
        cmd.append("--fresh")
    if confirm:
        cmd.append("--confirm")
    return cmd


def row(name: str, out: str, status: int, seconds: float) -> dict:
    path = os.path.join(out, f"{name}.json")
    if status != 0 or not os.path.exists(path) or os.path.getmtime(path) < time.time() - seconds - 1:
        return {
            "script": name,
            "result": "ERROR",
            "measured": f"exit status {status}",
            "figure": "-",
            "claim": "-",
            "seconds": seconds,
        }
    with open(path) as f:
        record = json.load(f)
    measured = record.get("measured")
    measured = "; ".join(f"{k}={v}" for k, v in measured.items()) if measured else "(in the claim)"
    result = "PASS" if record["passed"] else "FAIL"
    if "confirmation" in record:
        result += f" (exploration {'PASS' if record['exploration_passed'] else 'FAIL'})"
    return {
        "script": name,
        "result": result,
        "measured": measured,
        "figure": record.get("figure", os.path.join(out, f"{name}.png")),
        "claim": record["claim"],
        "seconds": seconds,
    }


def table(rows: list[dict]) -> str:
    lines = ["| script | result | seconds | figure | measured |", "|---|---|---|---|---|"]
    lines += [f"| {r['script']} | {r['result']} | {r['seconds']:.0f} | {r['figure']} | {r['measured']} |" for r in rows]
    lines += ["", "Claims:"] + [f"- {r['script']}: {r['claim']}" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the smoke configurations (seconds each)")
    p.add_argument("--fresh", action="store_true", help="recompute every sweep cell")
    p.add_argument("--out", default=None, help="figures directory (default figures/, smoke: results/smoke/figures)")
    p.add_argument("--only", nargs="+", default=None, help="run only these scripts")
    args = p.parse_args()
    args.out = args.out or (os.path.join("results", "smoke", "figures") if args.smoke else "figures")
    rows = []
    for name, sweeps in SCRIPTS:
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        start = time.time()
        status = subprocess.call(command(name, sweeps, args))
        if status == 0 and sweeps:
            status = subprocess.call(command(name, sweeps, args, confirm=True))
        rows.append(row(name, args.out, status, time.time() - start))
    print("\n" + table(rows), flush=True)
    return 1 if any(r["result"] == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
