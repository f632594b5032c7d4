"""docs/scale.md's measurement tables are the benchmark record's, rendered (``benchmarks.report``), never typed."""

import os
import re

from benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_tables_of_docs_scale_are_the_benchmark_record():
    with open(os.path.join(ROOT, "docs", "scale.md")) as f:
        text = f.read()
    bench = report.load(os.path.join(ROOT, "figures", "bench.json"))
    assert report.render(text, bench) == text, "run: python -m benchmarks.report --write docs/scale.md"
    for name in report.TABLES:  # every section of the record has its table in the docs
        assert f"<!-- bench: {name} -->" in text


def test_the_docs_cite_no_commit():
    """Prose states what holds; the record carries its code version (the provenance table renders it)."""
    with open(os.path.join(ROOT, "docs", "scale.md")) as f:
        text = report.MARK.sub("", f.read())
    assert not re.findall(r"\b(?:code|commit|at) [0-9a-f]{7}\b", text)
