"""Every proof script's --smoke configuration runs end to end and writes its figure and JSON record.

The scripts run outside the test process (a script may set process-wide JAX flags: convergence
turns on float64), each with its sweep file and figure in a temporary directory: those that set no
such flag one after the other in one subprocess (tests/_proofs_smoke_worker.py: one interpreter
and one JAX import for all of them), the others each in its own. Compiled executables come from
the persistent compilation cache when a previous run left them there (cold, the first run
compiles a few dozen executables: minutes on a loaded 2-core CPU). No smoke run is expected to
PASS (tiny problems, 2-6 trials, short budgets: most intervals are undecided): the smoke runs
check the pipeline, the default runs check the claims.
"""

import json
import os
import subprocess
import sys

import pytest

from proofs_numerics.run_all import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_proofs_smoke_worker.py")
OURS = [name for name, sweeps in SCRIPTS if sweeps]
# phase_transition's exploration run is the first half of the confirmation test below: run once there
OWN_PROCESS = {"convergence"}  # sets jax_enable_x64 when imported: the scripts after it would run in float64
SHARED = [name for name in OURS if name not in OWN_PROCESS | {"phase_transition"}]
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


def _check_smoke_run(name: str, tmp_path, returncode: int, stdout: str, stderr: str) -> None:
    """The run ended with a verdict line and wrote its record, figure and sweep file."""
    assert returncode == 0, stderr[-3000:]
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(("PASS: ", "FAIL: ")), last
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert FIELDS <= set(record), FIELDS - set(record)
    assert record["smoke"] is True and record["config"] and record["code_version"]
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "smoke" / f"{name}.jsonl").exists(), "the sweep writes its cells as it goes"


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """Every script of SHARED run once, in one subprocess: {name: (its folder, its exit status and output)}."""
    out = tmp_path_factory.mktemp("proofs_smoke")
    done = subprocess.run(
        [sys.executable, WORKER, str(out), *SHARED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: (out / name, runs[name]) for name in SHARED}


@pytest.mark.xdist_group("proofs_smoke_shared")  # one worker: the run is shared
@pytest.mark.parametrize("name", SHARED)
def test_smoke_configuration_writes_figure_and_record(name, shared_runs):
    folder, run = shared_runs[name]
    _check_smoke_run(name, folder, run["returncode"], run["stdout"], run["stderr"])


@pytest.mark.parametrize("name", sorted(OWN_PROCESS))
def test_smoke_configuration_in_its_own_process_writes_figure_and_record(name, tmp_path):
    done = _smoke(name, tmp_path)
    _check_smoke_run(name, tmp_path, done.returncode, done.stdout, done.stderr)


def test_the_confirmation_run_is_attached_and_decides(tmp_path):
    done = _smoke("phase_transition", tmp_path)
    _check_smoke_run("phase_transition", tmp_path, done.returncode, done.stdout, done.stderr)
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
