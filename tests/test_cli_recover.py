"""`colora recover`: the JSON contract and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from colora_jax.cli import main

SMALL = ["recover", "--users", "6", "--d-out", "6", "--d-in", "5", "--samples", "20", "--trials", "3", "--iters", "40", "--test-samples", "4"]


def test_json_output_has_the_documented_fields(capsys):
    assert main(SMALL + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for field in ("config", "success_rate", "rel_errors", "subspace_distance_U", "subspace_distance_V", "iterations", "seconds"):
        assert field in out
    assert len(out["rel_errors"]) == 3 and len(out["subspace_distance_U"]) == 3
    assert out["config"]["problem"]["users"] == 6 and out["config"]["seed"] == 0
    assert out["success_rate"] == 1.0  # noiseless, plenty of samples: every trial recovers
    assert all(e <= 1e-3 for e in out["rel_errors"])


def test_threshold_flag_changes_success(capsys):
    assert main(SMALL + ["--json", "--noise", "0.1", "--success-threshold", "1e-9"]) == 0
    assert json.loads(capsys.readouterr().out)["success_rate"] == 0.0


def test_readable_summary(capsys):
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "recovered" in out and "trials" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["recover", "--rank", "30"], "rank 30 is larger"),
        (["recover", "--samples", "3"], "samples >= 4"),
        (["recover", "--model", "tensor"], "invalid choice"),
        (["recover", "--users", "0"], "positive integer"),
        (["recover", "--noise", "nan"], "finite number"),
        (["recover", "--algorithm", "sgd"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_code():
    proc = subprocess.run([sys.executable, "-m", "colora_jax.cli", "recover", "--rank", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("colora: error:") and "Traceback" not in proc.stderr
