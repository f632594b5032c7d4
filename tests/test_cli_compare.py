"""`colora compare`: the JSON contract, a failing method's row, and one-line usage errors."""

import json

import pytest

from colora_jax.cli import main

# one worker runs the whole module: its tests share one expensive session-scoped fixture
pytestmark = pytest.mark.xdist_group("cli_compare")

SMALL = [
    "compare",
    "--users",
    "6",
    "--d-out",
    "5",
    "--d-in",
    "4",
    "--samples",
    "12",
    "--trials",
    "4",
    "--iters",
    "30",
    "--test-samples",
    "4",
    "--noise",
    "0.01",
    "--methods",
    "colora,local-full,oracle",
]
FIELDS = (
    "median_rel_error",
    "iqr_rel_error",
    "test_mse",
    "subspace_distance_U",
    "subspace_distance_V",
    "params_shared",
    "params_per_user",
    "seconds",
)


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def result():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(SMALL + ["--json"]) == 0
    return json.loads(out.getvalue())


def test_json_has_every_requested_method_with_the_documented_fields(result):
    assert list(result["methods"]) == ["colora", "local-full", "oracle"]
    assert result["config"]["problem"]["users"] == 6 and result["config"]["trials"] == 4
    for row in result["methods"].values():
        assert all(field in row for field in FIELDS)
    colora, oracle = result["methods"]["colora"], result["methods"]["oracle"]
    assert colora["status"] == "ok" and colora["params_shared"] == (5 + 4) * 2 and colora["params_per_user"] == 4
    assert 0 < oracle["median_rel_error"] <= colora["median_rel_error"] < 0.1
    assert oracle["subspace_distance_U"] < 1e-5


def test_a_method_that_cannot_run_reports_it_in_its_row(result):
    row = result["methods"]["local-full"]
    assert row["status"].startswith("error: local-full") and "at least 20 samples" in row["status"]
    assert row["median_rel_error"] is None and row["subspace_distance_U"] is None and row["params_per_user"] == 20


@pytest.mark.slow
def test_workers_give_every_method_the_rows_of_one_process(result, capsys):
    """``--workers 2``: each method's 4 trials in two processes; the same numbers in every row as
    in one process (the shared run), and a method that cannot run reports the same error from its
    workers."""
    assert main(SMALL + ["--json", "--workers", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["config"]["workers"] == 2 and result["config"]["workers"] == 1
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert {m: drop(r) for m, r in result["methods"].items()} == {m: drop(r) for m, r in two["methods"].items()}
    assert two["methods"]["local-full"]["status"].startswith("error: local-full")


def test_table(capsys):
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "rel.err median" in out and "error: local-full" in out
    assert all(m in out for m in ("colora", "oracle"))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["compare", "--methods", "colora,lora"], "unknown method 'lora': choose from colora, colora-diag, "),
        (["compare", "--methods", ","], "choose from"),
        (["compare", "--preset", "fedavg"], "invalid choice"),
        (["compare", "--rank", "30"], "rank 30 is larger"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_docs_tables_are_the_registry(capsys):
    """docs/baselines.md shows exactly what ``colora methods`` prints (regenerate with --write)."""
    import pathlib

    assert main(["methods"]) == 0
    tables = capsys.readouterr().out.strip()
    docs = (pathlib.Path(__file__).parents[1] / "docs" / "baselines.md").read_text()
    assert tables in docs, "docs/baselines.md is out of date: colora methods --write docs/baselines.md"
