"""The claim tables of docs/proofs.md, rendered from the figure records (never typed by hand).

    python -m proofs_numerics.report [--figures figures] [--write docs/proofs.md]

For every ``figures/NAME.json`` with ``claims``, one table: each sub-claim with its registered
bounds and their source, the exploration run's value and interval and verdict, the confirmation
run's (on its fresh seed) beside it, and the verdict of record (the confirmation's, or the
exploration's while no confirmation is attached). ``--write`` replaces the text between the
markers ``<!-- claims: NAME -->`` and ``<!-- /claims -->`` of the given Markdown file (and the
summary between ``<!-- summary -->`` and ``<!-- /summary -->``); without it the tables are
printed. ``tests/test_proofs_common.py`` keeps docs/proofs.md in step with figures/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

MARK = re.compile(r"(<!-- claims: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /claims -->)", re.S)
SUMMARY = re.compile(r"(<!-- summary -->\n)(?P<body>.*?)(<!-- /summary -->)", re.S)


def _number(v) -> str:
    if v is None:  # JSON's null: NaN, or an infinite end written by the record
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _measured(c: dict | None) -> str:
    if c is None:
        return "not run"
    return f"{_number(c['value'])} [{_number(c['low'])}, {_number(c['high'])}] {c['verdict']}"


def _bounds(c: dict) -> str:
    lower, upper = c.get("lower"), c.get("upper")
    if lower is not None and upper is not None:
        return f"in [{_number(lower)}, {_number(upper)}]"
    if upper is not None:
        return f"<= {_number(upper)}"
    if lower is not None:
        return f">= {_number(lower)}"
    return "-"


def claims_table(record: dict) -> str:
    """The Markdown table of one record's sub-claims, exploration and confirmation side by side."""
    confirmation = record.get("confirmation")
    confirmed = {c["claim"]: c for c in confirmation["claims"]} if confirmation else {}
    seed = record.get("seed")
    fresh = confirmation.get("seed") if confirmation else None
    head = f"| sub-claim | must lie | source | exploration (seed {seed}) | confirmation (seed {_number(fresh)}) |"
    lines = [head, "|---|---|---|---|---|"]
    for c in record.get("claims", []):
        other = confirmed.get(c["claim"]) if confirmation else None
        lines.append(f"| {c['claim']} | {_bounds(c)} | {c.get('source', '')} | {_measured(c)} | {_measured(other)} |")
    for name in sorted(set(confirmed) - {c["claim"] for c in record.get("claims", [])}):
        c = confirmed[name]
        lines.append(f"| {name} | {_bounds(c)} | {c.get('source', '')} | not run | {_measured(c)} |")
    verdict = "PASS" if record["passed"] else "FAIL"
    if confirmation:
        first = "PASS" if record.get("exploration_passed") else "FAIL"
        lines.append(f"\nVerdict of record: **{verdict}** (the confirmation's; exploration: {first}).")
    else:
        lines.append(f"\nVerdict: **{verdict}** (exploration only: no confirmation run attached).")
    lines.append(f"Code version `{record['code_version']}`, {record.get('seconds', '-')} s.")
    return "\n".join(lines) + "\n"


def summary_table(records: dict[str, dict]) -> str:
    """One line per script: the verdict of record, the exploration's, and the claim."""
    lines = ["| script | verdict of record | exploration | claim |", "|---|---|---|---|"]
    for name, r in records.items():
        record_verdict = "PASS" if r["passed"] else "FAIL"
        if "confirmation" not in r:
            record_verdict += " (no confirmation)"
        first = "PASS" if r.get("exploration_passed", r["passed"]) else "FAIL"
        lines.append(f"| `{name}` | {record_verdict} | {first} | {r['claim']} |")
    return "\n".join(lines) + "\n"


def load(folder: str) -> dict[str, dict]:
    """Every record written by ``_common.finish`` with sub-claims in ``folder``, by name, in file-name order."""
    records = {}
    for file in sorted(os.listdir(folder)):
        if file.endswith(".json"):
            with open(os.path.join(folder, file)) as f:
                record = json.load(f)
            claims = record.get("claims") if isinstance(record, dict) else None
            if "name" in record and isinstance(claims, list) and all("verdict" in c for c in claims):
                records[record["name"]] = record
    return records


def render(text: str, records: dict[str, dict]) -> str:
    """``text`` with every marked table replaced from ``records`` (a marker naming no record: ValueError)."""

    def table(match: re.Match) -> str:
        name = match["name"]
        if name not in records:
            raise ValueError(f"docs mark claims of {name!r}, but no figure record with claims has that name")
        return match.group(1) + claims_table(records[name]) + match.group(4)

    text = MARK.sub(table, text)
    return SUMMARY.sub(lambda m: m.group(1) + summary_table(records) + m.group(3), text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--figures", default="figures", help="folder of the figure records (default figures/)")
    p.add_argument("--write", default=None, help="Markdown file whose marked tables are replaced")
    args = p.parse_args()
    try:
        records = load(args.figures)
        if args.write is None:
            print(summary_table(records))
            for name, record in records.items():
                print(f"## {name}\n\n{claims_table(record)}")
            return 0
        with open(args.write) as f:
            text = f.read()
        new = render(text, records)
    except BrokenPipeError:  # printed into `head`: nothing more to say
        return 0
    except (OSError, ValueError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    with open(args.write, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
