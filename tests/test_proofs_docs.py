"""docs/proofs.md's claim tables are the figure records', rendered (``proofs_numerics.report``), never typed."""

import os

from proofs_numerics import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_claim_tables_of_docs_proofs_are_the_figure_records():
    path = os.path.join(ROOT, "docs", "proofs.md")
    with open(path) as f:
        text = f.read()
    records = report.load(os.path.join(ROOT, "figures"))
    assert report.render(text, records) == text, "run: python -m proofs_numerics.report --write docs/proofs.md"
    for name in records:  # every claim figure has its table, and every table shows both runs
        assert f"<!-- claims: {name} -->" in text
        assert "confirmation" in records[name], f"{name}.json has no confirmation run attached"
