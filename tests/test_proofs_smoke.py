"""Every proof script's --smoke configuration runs end to end and writes its figure and JSON record.

The scripts run outside the test process, one after the other in one subprocess
(tests/_proofs_smoke_worker.py: as ``python -m`` runs them, with one interpreter and one JAX
import for all of them), each with its sweep file and figure in a folder of its own. A script
may set a process-wide JAX flag (convergence turns on float64 when imported): it runs last, and
the worker refuses to run a script after such a change. Compiled executables come from the
persistent compilation cache when a previous run left them there (cold, the first run compiles
a few dozen executables: minutes on a loaded 2-core CPU). No smoke run is expected to PASS (tiny
problems, 2-6 trials, short budgets: most intervals are undecided): the smoke runs check the
pipeline, the default runs check the claims.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from proofs_numerics.run_all import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_proofs_smoke_worker.py")
OURS = [name for name, sweeps in SCRIPTS if sweeps]
LAST = ["convergence"]  # turns on float64 when imported: nothing may run after it in the shared process
# phase_transition's exploration run is the first half of the confirmation test below
RUNS = [name for name in OURS if name not in LAST] + ["phase_transition:confirm"] + LAST
pytestmark = pytest.mark.xdist_group("proofs_smoke")  # one worker: the run is shared
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


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_smoke_run(name: str, tmp_path, run: dict) -> None:
    """The run ended with a verdict line and wrote its record, figure and sweep file."""
    assert run["returncode"] == 0, run["stderr"][-3000:]
    last = run["stdout"].strip().splitlines()[-1]
    assert last.startswith(("PASS: ", "FAIL: ")), last
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert FIELDS <= set(record), FIELDS - set(record)
    assert record["smoke"] is True and record["config"] and record["code_version"]
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "smoke" / f"{name}.jsonl").exists(), "the sweep writes its cells as it goes"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of RUNS, in order, in one subprocess: {run: (its script's folder, its exit status and output)}."""
    out = tmp_path_factory.mktemp("proofs_smoke")
    done = subprocess.run(
        [sys.executable, WORKER, str(out), *RUNS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {run: (out / run.partition(":")[0], results[run]) for run in RUNS}


# phase_transition's exploration run is checked with its confirmation below
@pytest.mark.parametrize("name", [name for name in OURS if name != "phase_transition"])
def test_smoke_configuration_writes_figure_and_record(name, runs):
    folder, run = runs[name]
    _check_smoke_run(name, folder, run)


def test_the_confirmation_run_is_attached_and_decides(runs):
    tmp_path, exploration = runs["phase_transition"]
    _check_smoke_run("phase_transition", tmp_path, exploration)
    _, done = runs["phase_transition:confirm"]
    assert done["returncode"] == 0, done["stderr"][-3000:]
    # the exploration's figure stays
    assert done["figure_sha256"] == exploration["figure_sha256"] == _sha256(tmp_path / "phase_transition.png")
    assert (tmp_path / "results" / "smoke" / "confirmation" / "phase_transition.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "phase_transition.json").read_text())
    confirmation = json.loads((tmp_path / "results" / "smoke" / "confirmation" / "phase_transition.json").read_text())
    assert record["confirmation"]["seed"] == confirmation["seed"] == record["config"]["confirmation_seed"]
    assert record["confirmation"]["seed"] != record["seed"]
    assert record["passed"] == confirmation["passed"] and "exploration_passed" in record
    assert record["confirmation"]["claims"] == confirmation["claims"]
