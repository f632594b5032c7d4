"""Every proof script's --smoke configuration runs end to end and writes its figure and JSON record.

Each script runs in a subprocess (scripts set process-wide JAX flags, e.g. float64), with its
sweep file and figure in a temporary directory; compiled executables come from the checkout's
the persistent compilation cache when a previous run left them there (cold, the first run
compiles a few dozen executables: minutes on a loaded 2-core CPU; warm, about 65 s of CPU for the
nine linear scripts; the two nnx_* scripts add about two minutes of CPU: a few dozen short
fits each). No smoke run is expected to PASS (tiny problems, 2-6 trials, short budgets: most
intervals are undecided): the smoke runs check the pipeline, the default runs check the claims.
"""

import json
import os
import subprocess
import sys

import pytest

from proofs_numerics.run_all import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = [name for name, sweeps in SCRIPTS if sweeps]
FIELDS = {
    "name",
    "claim",
    "passed",
    "measured",
    "config",
    "smoke",
    "seed",
    "code_version",
    "device",
    "seconds",
    "figure",
    "results",
}


def _smoke(name: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"proofs_numerics.{name}", "--smoke", "--no-progress", "--out", str(tmp_path)]
    cmd += ["--results", str(tmp_path / "results"), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _check_smoke_run(name: str, tmp_path, done: subprocess.CompletedProcess) -> None:
    """The run ended with a verdict line and wrote its record, figure and sweep file."""
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(("PASS: ", "FAIL: ")), last
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert FIELDS <= set(record), FIELDS - set(record)
    assert record["smoke"] is True and record["config"] and record["code_version"]
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "smoke" / f"{name}.jsonl").exists(), "the sweep writes its cells as it goes"


# phase_transition's exploration run is the first half of the confirmation test below: run once
@pytest.mark.parametrize("name", [name for name in OURS if name != "phase_transition"])
def test_smoke_configuration_writes_figure_and_record(name, tmp_path):
    _check_smoke_run(name, tmp_path, _smoke(name, tmp_path))


def test_the_confirmation_run_is_attached_and_decides(tmp_path):
    _check_smoke_run("phase_transition", tmp_path, _smoke("phase_transition", tmp_path))
    figure = (tmp_path / "phase_transition.png").read_bytes()
    done = _smoke("phase_transition", tmp_path, "--confirm")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "phase_transition.png").read_bytes() == figure  # the exploration's figure stays
    assert (tmp_path / "results" / "smoke" / "confirmation" / "phase_transition.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "phase_transition.json").read_text())
    confirmation = json.loads((tmp_path / "results" / "smoke" / "confirmation" / "phase_transition.json").read_text())
    assert record["confirmation"]["seed"] == confirmation["seed"] == record["config"]["confirmation_seed"]
    assert record["confirmation"]["seed"] != record["seed"]
    assert record["passed"] == confirmation["passed"] and "exploration_passed" in record
    assert record["confirmation"]["claims"] == confirmation["claims"]
