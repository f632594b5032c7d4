"""Nothing lost at the edges of a run (issue 24): each test reproduces a reported failure of the
sweeps, their result files, the worker processes or the command line, and states what must hold
instead: a sweep never reuses cells of another computation or precision, a reader never cuts
records a writer is finishing, a kill loses and duplicates nothing, workers end with their
parent, a bad results path or result fails before (or without losing) work, and the command
line answers SIGINT, a closed pipe or no arguments with one line and a conventional exit code."""

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import colora_jax as cj
from colora_jax import Cell, cell_key, per_cell, read_results, sweep
from colora_jax._src.experiments.sweep import cell_config
from colora_jax._src.model.data import STREAM_VERSION

PC = cj.ProblemConfig(model="regression", users=3, d_out=4, d_in=4, rank=1, samples=6, test_samples=0)
FC = cj.FitConfig(rank=1, iters=5)
CELLS = [Cell(PC, FC, trials=2, seed=s) for s in range(4)]
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}


def seed_times(cell, factor=1.0):
    return {"value": cell.seed * factor}


def seed_plus_one(cell):
    return {"value": cell.seed + 1.0}


def working_dtype(cell):
    """The dtype the cell's arrays get: float32 when x64 is asked for but not enabled."""
    return {"dtype": str(jnp.zeros((), cell.problem.dtype).dtype)}


def slow_cell(cell):
    """A cell that takes a while and writes a long line (so a kill often tears one)."""
    time.sleep(0.3)
    return {"seed": cell.seed, "padding": "x" * 200_000}


def note_pid_and_sleep(folder, cells):
    """A group computation for worker processes: leaves its pid in ``folder``, then sleeps a minute."""
    with open(os.path.join(folder, str(os.getpid())), "w"):
        pass
    time.sleep(60)
    return [{} for _ in cells]


def run(*args, **kwargs):
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, **kwargs)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a reaper that never comes counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- 1. the key


def test_a_sweep_never_reuses_cells_another_computation_wrote(tmp_path):
    path = tmp_path / "s.jsonl"
    assert sweep(CELLS, per_cell(seed_times), path=path, progress=False).computed == 4
    other = sweep(CELLS, per_cell(seed_plus_one), path=path, progress=False)
    assert other.computed == 4 and [r["value"] for r in other.results] == [1.0, 2.0, 3.0, 4.0]
    doubled = sweep(CELLS, per_cell(functools.partial(seed_times, factor=2.0)), path=path, progress=False)
    assert doubled.computed == 4 and [r["value"] for r in doubled.results] == [0.0, 2.0, 4.0, 6.0]
    again = sweep(CELLS, per_cell(functools.partial(seed_times, factor=2.0)), path=path, progress=False)
    assert (again.computed, again.reused) == (0, 4), "the same computation resumes"
    records = read_results(path).values()
    assert {json.dumps(r["computation"], sort_keys=True) for r in records} == {
        '{"per_cell": "test_reliability_runtime.seed_times"}',
        '{"per_cell": "test_reliability_runtime.seed_plus_one"}',
        '{"per_cell": {"args": [], "function": "test_reliability_runtime.seed_times", "keywords": {"factor": 2.0}}}',
    }
    assert all(r["code_version"] == cj.code_version() and len(r["data"]) == 20 for r in records)


def test_run_cells_with_a_trace_is_not_the_default_computation(tmp_path):
    """The reported case: the default sweep, then ``partial(run_cells, trace=True)`` on the same file."""
    path = tmp_path / "s.jsonl"
    cells = CELLS[:2]
    plain = sweep(cells, path=path, progress=False)
    traced = sweep(cells, functools.partial(cj.run_cells, trace=True), path=path, progress=False)
    assert plain.computed == 2 and traced.computed == 2
    assert all("trace" not in r for r in plain.results) and all("trace" in r for r in traced.results)
    assert [r["evaluation"] for r in traced.results] == [r["evaluation"] for r in plain.results]


def test_cells_computed_without_x64_are_not_reused_with_it(tmp_path):
    """x64 asked for but not enabled computes in float32: enabling it later must recompute."""
    path = tmp_path / "s.jsonl"
    cells = [Cell(cj.ProblemConfig(**{**PC.__dict__, "x64": True}), FC, trials=2, seed=s) for s in range(2)]
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX's "float64 requested, float32 used"
        low = sweep(cells, per_cell(working_dtype), path=path, progress=False)
    with jax.enable_x64(True):
        high = sweep(cells, per_cell(working_dtype), path=path, progress=False)
        assert sweep(cells, per_cell(working_dtype), path=path, progress=False).computed == 0
    assert [r["dtype"] for r in low.results] == ["float32"] * 2
    assert high.computed == 2 and [r["dtype"] for r in high.results] == ["float64"] * 2
    assert sorted(r["precision"] for r in read_results(path).values()) == ["float32"] * 2 + ["float64"] * 2


def test_lines_of_the_older_key_are_recomputed_with_a_warning(tmp_path):
    """A file written before the computation was in the key: which computation wrote it is unknown."""
    path = tmp_path / "s.jsonl"
    cell = CELLS[0]
    old = json.dumps({"cell": cell_config(cell), "stream": STREAM_VERSION, "tag": ""}, sort_keys=True)
    old_key = hashlib.sha256(old.encode()).hexdigest()[:20]
    path.write_text(json.dumps({"key": old_key, "result": {"value": 99.0}, "code_version": "old"}) + "\n")
    with pytest.warns(UserWarning, match="1 lines were written before the computation"):
        out = sweep([cell], per_cell(seed_times), path=path, progress=False)
    assert out.computed == 1 and out.results == [{"value": 0.0}]


def test_an_unnameable_bound_argument_is_refused_before_any_work(tmp_path):
    class Opaque:
        pass

    with pytest.raises(ValueError, match="memory address"):
        sweep(CELLS, per_cell(functools.partial(seed_times, factor=Opaque())), path=tmp_path / "s.jsonl")
    assert not (tmp_path / "s.jsonl").exists()


def test_kill_9_mid_sweep_then_resume_loses_and_duplicates_nothing(tmp_path):
    path = tmp_path / "s.jsonl"
    cells = [Cell(PC, FC, trials=2, seed=s) for s in range(8)]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, colora_jax as cj, test_reliability_runtime as t;"
            f" cj.sweep([cj.Cell(t.PC, t.FC, trials=2, seed=s) for s in range(8)], cj.per_cell(t.slow_cell),"
            f" path={str(path)!r}, progress=False)",
        ],
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while (not path.exists() or path.read_bytes().count(b"\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.02)
    child.kill()
    child.wait()
    before = read_results(path)
    assert 3 <= len(before) < 8, "killed midway"
    resumed = sweep(cells, per_cell(slow_cell), path=path, progress=False)
    assert (resumed.reused, resumed.computed) == (len(before), 8 - len(before))
    lines = path.read_bytes().splitlines()
    keys = [json.loads(line)["key"] for line in lines]  # every line whole: a torn one was repaired
    assert len(keys) == len(set(keys)) == 8, "nothing lost, nothing written twice"
    assert [r["seed"] for r in resumed.results] == list(range(8))


# ----------------------------------------------------------------------------- 2. readers never write


WRITERS = {
    "library": "from colora_jax._src.experiments.sweep import append_result as write",
    # a line written in two parts, as a text stream or a network file system may: readers see half
    "in pieces": "import time\n"
    "def write(path, record):\n"
    "    import json\n"
    "    line = json.dumps(record) + '\\n'\n"
    "    with open(path, 'a') as f:\n"
    "        f.write(line[: len(line) // 2]); f.flush(); time.sleep(0.05); f.write(line[len(line) // 2 :])",
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_reader_beside_a_writer_of_large_records_loses_nothing(tmp_path, writer):
    path = tmp_path / "s.jsonl"
    size, count = 4_000_000, 6
    code = (
        f"{WRITERS[writer]}\nfor i in range({count}): write({str(path)!r}, {{'key': str(i), 'result': 'x' * {size}}})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    reads = 0
    while child.poll() is None:
        seen = read_results(path)
        assert all(len(r["result"]) == size for r in seen.values())
        reads += 1
    assert child.returncode == 0 and reads > 0
    assert sorted(read_results(path)) == [str(i) for i in range(count)], "the reader cut records away"


# ----------------------------------------------------------------------------- 3. workers end with their parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "parent, how",
    [("parallel_map", signal.SIGKILL), ("sweep", signal.SIGTERM)],
    ids=["parallel_map-SIGKILL", "sweep-SIGTERM"],
)
def test_workers_end_when_their_parent_is_killed(tmp_path, parent, how):
    folder = tmp_path / "pids"
    folder.mkdir()
    call = {
        "parallel_map": "list(parallel_map(functools.partial(t.note_pid_and_sleep, folder), [[1], [2]], 2))",
        "sweep": "cj.sweep([cj.Cell(t.PC, t.FC, trials=2, seed=s) for s in (0, 1)],"
        " functools.partial(t.note_pid_and_sleep, folder), path=folder + '.jsonl', progress=False, workers=2)",
    }[parent]
    code = (
        "import functools, colora_jax as cj, test_reliability_runtime as t\n"
        f"from colora_jax._src.runtime.workers import parallel_map\nfolder = {str(folder)!r}\n{call}"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    deadline = time.monotonic() + 90
    while len(os.listdir(folder)) < 2 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    pids = [int(name) for name in os.listdir(folder)]
    assert len(pids) == 2 and all(alive(pid) for pid in pids), "both workers started"
    os.kill(child.pid, how)
    child.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:  # leave no process behind, then fail
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their parent"


# ----------------------------------------------------------------------------- 4. bad paths and results


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_results_file_is_refused_before_any_work(tmp_path):
    path = tmp_path / "s.jsonl"
    sweep(CELLS[:1], per_cell(seed_times), path=path, progress=False)
    path.chmod(0o444)
    calls = []
    with pytest.raises(ValueError, match="cannot write the results file"):
        sweep(CELLS, per_cell(lambda c: calls.append(c) or {}), path=path, progress=False)
    assert calls == []


@pytest.mark.parametrize("where", ["under a file", "a directory"])
def test_an_unwritable_results_path_is_refused_before_any_work(tmp_path, where):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "s.jsonl" if where == "under a file" else tmp_path
    calls = []
    with pytest.raises(ValueError, match="cannot (read|write) the results file"):
        sweep(CELLS, per_cell(lambda c: calls.append(c) or {}), path=path, progress=False)
    assert calls == []


def test_jax_and_numpy_arrays_and_scalars_in_a_result_are_written(tmp_path):
    def arrays(cell):
        return {
            "matrix": jnp.full((2, 2), cell.seed, jnp.float32),
            "scalar": jnp.float32(0.5) * cell.seed,
            "count": np.int64(cell.seed),
            "nan": jnp.array([jnp.nan, 1.0]),
            "flag": jnp.bool_(True),
        }

    out = sweep(CELLS[:2], per_cell(arrays), path=tmp_path / "s.jsonl", progress=False)
    assert out.results[1] == {"matrix": [[1.0, 1.0], [1.0, 1.0]], "scalar": 0.5, "count": 1, "nan": [None, 1.0],
                              "flag": True}  # fmt: skip
    assert read_results(tmp_path / "s.jsonl")[cell_key(CELLS[1], compute=per_cell(arrays))]["result"] == out.results[1]


def test_a_result_json_cannot_hold_is_a_value_error_naming_the_cell(tmp_path):
    with pytest.raises(ValueError, match="cannot be written as JSON.*return numbers"):
        sweep(CELLS[:1], per_cell(lambda c: {"values": {1.0, 2.0}}), path=tmp_path / "s.jsonl", progress=False)


# ----------------------------------------------------------------------------- 5. the command line's edges

LONG_RECOVER = ["-m", "colora_jax.cli", "recover", "--users", "3", "--d-out", "4", "--d-in", "4", "--rank", "1"]
LONG_RECOVER += ["--samples", "8", "--trials", "1000000", "--batch", "10", "--json"]  # minutes: always cut short


@pytest.mark.parametrize("delay", [0.2, 1.0, 3.0])  # loading JAX, compiling, running
def test_sigint_at_any_moment_gives_one_line_and_exit_130(delay):
    child = subprocess.Popen(
        [sys.executable, *LONG_RECOVER], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"still running a minute after SIGINT; stderr: {child.communicate()[1][-2000:]}")
    assert (child.returncode, err, out) == (130, "colora: interrupted\n", "")


def workers_of(pid: int) -> list[int]:
    """The worker processes of ``pid`` (its children but multiprocessing's resource tracker)."""
    found = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{child}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{child}/cmdline", "rb") as f:
                tracker = b"resource_tracker" in f.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and not tracker:
            found.append(int(child))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_to_the_process_group_of_recover_with_workers():
    """A terminal's Ctrl-C reaches the workers too: they leave it to the parent, which ends them."""
    child = subprocess.Popen(
        [sys.executable, *LONG_RECOVER, "--workers", "2"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(workers := workers_of(child.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2
    time.sleep(0.5)  # the workers are importing JAX
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, err, out) == (130, "colora: interrupted\n", "")
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]


@pytest.mark.parametrize("fate", ["swallowed", "another error"])
def test_an_interrupt_lost_inside_a_command_still_exits_130(monkeypatch, capfd, fate):
    """Code between the handler and ``main`` may swallow the KeyboardInterrupt (a ``__del__``, a
    callback) or turn it into another error (a callback whose error is re-raised as a string)."""
    from colora_jax import cli
    from colora_jax._src.cli import methods

    def swallows(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here
        except KeyboardInterrupt:
            if fate == "another error":
                raise RuntimeError("INTERNAL: KeyboardInterrupt") from None
        return 0

    monkeypatch.setattr(methods, "run", swallows)
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["methods"]) == 130
    assert capfd.readouterr().err == "colora: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is before, "a call with argv gives the caller's handler back"


def test_sigint_while_the_main_thread_is_held_in_c_still_ends_the_command():
    """Python runs handlers in the main thread between bytecodes only: a main thread held in a
    long C call that releases the GIL (as XLA's do) must not hold the interrupt back for the
    whole call. Here: a call that never returns (a normal mutex locked twice by one thread)."""
    code = (
        "import ctypes, sys, colora_jax.cli as cli\n"
        "from colora_jax._src.cli import methods\n"
        "def held(args):\n"
        "    libc, mutex = ctypes.CDLL(None), ctypes.create_string_buffer(64)  # a default (normal) mutex\n"
        "    libc.pthread_mutex_lock(mutex)\n"
        "    print('ready', flush=True)\n"
        "    return libc.pthread_mutex_lock(mutex)  # locked again: waits forever, through any signal\n"
        "methods.run = held\n"
        "sys.argv = ['colora', 'methods']\n"
        "sys.exit(cli.main())"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the interrupt waited for the C call")
    assert (child.returncode, err) == (130, "colora: interrupted\n")


def test_output_into_a_closed_pipe_ends_quietly():
    child = subprocess.Popen(
        [sys.executable, "-m", "colora_jax.cli", "methods"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    child.stdout.close()  # the reader went away (`colora methods | head -0`)
    err = child.stderr.read()
    assert (child.wait(timeout=60), err) == (141, b"")


def test_colora_alone_prints_its_usage_and_one_error_line():
    proc = run("-m", "colora_jax.cli", timeout=60)
    usage, error = proc.stderr.splitlines()
    assert proc.returncode == 2 and usage.startswith("usage: colora ")
    assert error == "colora: error: choose a command: recover, compare, bench, methods"


def test_a_subcommand_mistake_names_the_subcommand_once():
    proc = run("-m", "colora_jax.cli", "recover", "--rank", "0", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "colora recover: error: argument --rank: expected a positive integer, got '0'\n"
