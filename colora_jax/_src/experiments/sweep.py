"""Resumable sweeps: a list of cells, each cell's result appended to a JSON-lines file.

A *cell* is one point of an experiment: the planted problem, the estimator (CoLoRA's
``FitConfig`` plus a method name), the number of trials and the seed. ``sweep`` computes the
cells and appends each finished cell to ``path`` as one JSON line (flushed and fsynced), so a
sweep killed midway and started again recomputes only the missing cells.

Cache key (the trade-off, decided here): a cell is identified by the SHA-256 of its fully
resolved configuration (every field of both configs, trials, seed, method, pad_samples), the
layout of the random streams (``data.STREAM_VERSION``: a change of how problems are drawn
changes every result), the computation (``computation_id``: the qualified name of ``compute``
and, for a ``functools.partial``, its bound arguments), the effective precision (float64 only
when ``x64`` is asked for *and* enabled in JAX: a cell computed in float32 is another cell) and
the caller's ``tag`` (for what the name of a computation cannot show, such as the variables a
closure holds). A changed configuration, stream, computation or precision therefore never
reuses a stale cell. Lines written before the computation was part of the key are not reused
(it is unknown which computation wrote them): they are counted in a warning and recomputed. The
code version is *not* part of the key: it is written on every line, and reused cells computed by
another code version are counted and reported (``SweepResult.stale`` and a warning), so that
editing a plotting script does not throw away an hour of trials. When the numerics
themselves change, pass ``fresh=True`` (``--fresh`` in the scripts, used by ``make figures``)
to recompute everything.

Reading never writes: a reader skips a last line that is still being written. Only the writer
repairs a line left torn by a killed writer, under an exclusive ``flock`` that every append
holds, so a reader or a second writer running beside a writer loses nothing (two sweeps on one
file may both compute a cell: the later line wins).

Speed: cells are computed in *groups* that differ only in their sample size. Each group is one
call of ``trials.run_trials`` with a sample grid: every trial is generated once with
``pad_samples`` per user and fitted on each prefix (common random numbers), and the noise level
is a traced input, so a whole phase diagram row (and every noise level) is one compiled
program.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from colora_jax._src.experiments.trials import method_evaluator, trial_bytes, trial_request
from colora_jax._src.model.config import FitConfig, ProblemConfig, effective_precision
from colora_jax._src.model.data import STREAM_VERSION
from colora_jax._src.model.shared_input import SharedInputConfig
from colora_jax._src.runtime.provenance import code_version
from colora_jax._src.runtime.serialization import to_jsonable
from colora_jax._src.runtime.workers import parallel_map, picklable

try:
    import fcntl
except ImportError:  # not POSIX: appends are not locked against a second writer
    fcntl = None


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a sweep: everything that determines its result.

    Samples per user: ``problem.samples`` are *fitted*, ``generated_samples()`` are *generated*
    (``pad_samples``, or the fitted ones when it is 0); a result records the fitted count.
    """

    problem: ProblemConfig | SharedInputConfig  # the planted problem (``samples``: fitted per user)
    fit_config: FitConfig  # CoLoRA's estimator settings (baselines read rank, iters, tol from it too)
    trials: int = 50  # independent trials; trial t uses fold_in(key(seed), t)
    seed: int = 0  # PRNG seed of the cell
    method: str = "colora"  # a name in ``registry.METHODS``, or one the caller's ``fn_for`` knows
    pad_samples: int = 0  # generate this many samples per user, fit the first ``samples`` (0: no padding)

    @property
    def fit(self) -> FitConfig:
        """Deprecated alias of ``fit_config`` (``Method.fit`` is a function; this is a configuration)."""
        warnings.warn("Cell.fit is deprecated: use Cell.fit_config", DeprecationWarning, stacklevel=2)
        return self.fit_config

    def generated_samples(self) -> int:
        """Samples per user that are generated (the prefix ``problem.samples`` of them is fitted)."""
        if self.pad_samples and self.pad_samples < self.problem.samples:
            raise ValueError(
                f"pad_samples={self.pad_samples} is below samples={self.problem.samples}: raise it or use 0"
            )
        return max(self.pad_samples, self.problem.samples)


_STORED_NAMES = {"fit_config": "fit"}  # field -> its name in keys and results files (written before a rename)


def cell_config(cell: Cell) -> dict:
    """The cell's resolved configuration as a JSON-ready dict (what its key hashes).

    Fields appear under their stored names (``fit_config`` as ``"fit"``), so the keys of results
    files written before a field was renamed stay the same and those files still resume.
    """
    return to_jsonable({_STORED_NAMES.get(k, k): v for k, v in dataclasses.asdict(cell).items()})


def cell_precision(cell: Cell) -> str:
    """The precision a cell computes in (``config.effective_precision``), part of its key.

    A computation that never validates its configuration (a caller's ``per_cell`` function) can
    still run a cell that asks for ``x64`` without JAX's 64-bit mode: it then computes in
    float32, and that is what is recorded, so enabling the mode later recomputes the cell.
    """
    try:
        return effective_precision(cell.problem)
    except ValueError:
        return "float32"


def _qualified_name(obj) -> str:
    """``module.qualname`` of a function or class; ``__main__`` named by the module run (``python -m``)."""
    module = getattr(obj, "__module__", None) or "?"
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _argument_id(value):
    """A JSON-ready value naming an argument bound to a computation, equal across processes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_argument_id(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _argument_id(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        array = np.asarray(value)
        return {"array": hashlib.sha256(array.tobytes()).hexdigest()[:20], "dtype": str(array.dtype),
                "shape": list(array.shape)}  # fmt: skip
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _argument_id(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": _qualified_name(type(value)), "fields": fields}
    if callable(value):
        return computation_id(value)
    return _repr_id(value)


def _repr_id(value) -> dict:
    """An object named by its class and repr; refused when the repr holds a memory address."""
    text = repr(value)
    if " at 0x" in text:
        raise ValueError(
            f"sweep: cannot name {text} in the cells' keys: its repr holds a memory address, so a later"
            " run could never find the cells it computed; bind plain values, arrays or a dataclass"
            " instead, or wrap the computation in a module-level function"
        )
    return {"type": _qualified_name(type(value)), "repr": text}


def computation_id(compute: Callable):
    """What a cell's key records of the computation that produced it (JSON-ready).

    A function is named by ``module.qualname``; a ``functools.partial`` by its function and
    bound arguments; ``per_cell(f)`` by ``f``; a callable object by its class and fields (a
    dataclass) or repr. What a closure captures is invisible here, and two lambdas of one function
    share a name: tell them apart with ``tag`` (or give them names).
    """
    named = getattr(compute, "computation", None)  # set by per_cell
    if named is not None:
        return named
    if isinstance(compute, functools.partial):
        return {
            "function": computation_id(compute.func),
            "args": [_argument_id(a) for a in compute.args],
            "keywords": _argument_id(dict(compute.keywords)),
        }
    if inspect.ismethod(compute):
        return {"method": _qualified_name(compute.__func__), "self": _argument_id(compute.__self__)}
    if inspect.isroutine(compute) or isinstance(compute, type):
        return _qualified_name(compute)
    return _argument_id(compute) if dataclasses.is_dataclass(compute) else _repr_id(compute)


def cell_key(cell: Cell, tag: str = "", compute: Callable | None = None) -> str:
    """SHA-256 (hex, 20 digits) of what determines a cell's result (the module docstring's cache key).

    ``compute``: the sweep's computation (default ``run_cells``).
    """
    return _key(cell, tag, computation_id(run_cells if compute is None else compute))


def _key(cell: Cell, tag: str, computation) -> str:
    """``cell_key`` with the computation already named (a sweep names it once for all its cells)."""
    text = json.dumps(
        {
            "cell": cell_config(cell),
            "stream": STREAM_VERSION,
            "tag": tag,
            "computation": computation,
            "precision": cell_precision(cell),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def data_key(cell: Cell) -> str:
    """SHA-256 (hex, 20 digits) of what determines the data a cell's trials are drawn from.

    The generated problem (with ``pad_samples`` per user), trials, seed, stream layout and
    precision: cells with equal ``data_key`` are fitted on the same draws (common random numbers),
    whatever their estimator or sample count. It names the draws by their causes, not by their
    bytes, which stay inside the compiled trial program.
    """
    problem = dataclasses.replace(cell.problem, samples=cell.generated_samples())
    text = json.dumps(
        {
            "problem": to_jsonable(dataclasses.asdict(problem)),
            "trials": cell.trials,
            "seed": cell.seed,
            "stream": STREAM_VERSION,
            "precision": cell_precision(cell),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- trials of cells


def group_key(cell: Cell):
    """Cells with equal group keys differ only in ``problem.samples``: one runner call computes them."""
    return (
        dataclasses.replace(cell.problem, samples=cell.generated_samples()),
        cell.fit_config,
        cell.trials,
        cell.seed,
        cell.method,
    )


def data_digest() -> tuple[Callable[[object], None], Callable[[], str]]:
    """``(update, hexdigest)``: SHA-256 over the bytes of generated problems.

    Leaf by leaf, in trial order (``TrialPlan.run``'s ``on_data``): the data as drawn, whatever
    caused them.
    """
    h = hashlib.sha256()

    def update(problems) -> None:
        for leaf in jax.tree.leaves(problems):
            a = np.ascontiguousarray(leaf)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())

    return update, lambda: h.hexdigest()[:20]


def cell_trials(cells: Sequence[Cell], fn_for: Callable[[str], Callable] = method_evaluator, on_data=None):
    """Every trial of a group of cells (``group_key`` equal) as NumPy arrays ``(trials, cells, ...)``.

    One run: generated with ``generated_samples()`` per user, fitted at each cell's
    ``problem.samples``. ``fn_for(method)`` gives the per-problem function (default: the
    registry's method); it must return a stable, hashable function. ``on_data`` sees the
    generated draws (``TrialPlan.run``). Each distinct problem is validated once: the first
    cell's with the run (``trial_request``), the others' (their fitted counts) here.
    """
    first = cells[0]
    group = group_key(first)
    if any(group_key(c) != group for c in cells):
        raise ValueError("cell_trials computes cells that differ only in problem.samples: group them with group_key")
    for problem in dict.fromkeys(c.problem for c in cells):
        if problem != first.problem:
            problem.validate()
    fn = fn_for(first.method)
    request = trial_request(
        first.problem,
        first.fit_config,
        first.trials,
        samples=[c.problem.samples for c in cells],
        generate_samples=group[0].samples,  # the generated problem's: first.generated_samples()
    )
    return request.plan(fn).run(jax.random.key(first.seed), on_data=on_data)


def run_cells(cells: Sequence[Cell], trace: bool = False, fn_for: Callable[[str], Callable] = method_evaluator) -> list:
    """The default computation of a group of cells: every trial's evaluation (and, if asked, trace).

    Each result also holds ``data_sha256``, the digest of the group's generated draws
    (``data_digest``; each cell fits a prefix of every user's samples of those draws).
    """
    update, digest = data_digest()
    evaluation, tr = cell_trials(cells, fn_for, on_data=update)
    out = []
    for j in range(len(cells)):
        one = {"evaluation": jax.tree.map(lambda a, j=j: a[:, j], evaluation)._asdict(), "data_sha256": digest()}
        if trace:
            one["trace"] = jax.tree.map(lambda a, j=j: a[:, j], tr)._asdict()
        out.append(to_jsonable(one))
    return out


def per_cell(compute: Callable[[Cell], Any]) -> Callable[[Sequence[Cell]], list]:
    """Turn a one-cell computation into a group computation (for cells that are not runner trials).

    The result is named in the cells' keys by ``compute`` (``computation_id``).
    """

    def run(cells):
        return [compute(c) for c in cells]

    run.groups = False  # every cell is its own group
    run.computation = {"per_cell": computation_id(compute)}
    return run


# ----------------------------------------------------------------------------- the resumable driver


class SweepResult(NamedTuple):
    """What a sweep returns: per-cell results in the order of the cells, and bookkeeping."""

    results: list  # compute(cell) for every cell (JSON-ready)
    computed: int  # cells computed by this call
    reused: int  # cells read back from the results file
    stale: int  # reused cells that another code version computed
    seconds: float  # wall time of this call (reading, computing and writing)


def _timed(compute: Callable, cells: Sequence[Cell]) -> tuple[list, float]:
    start = time.perf_counter()
    return compute(cells), time.perf_counter() - start


def _group_cost(cells: Sequence[Cell]) -> float:
    """A group's rough cost for ordering the work: trials x generated bytes x cells."""
    first = cells[0]
    try:
        size = trial_bytes(dataclasses.replace(first.problem, samples=first.generated_samples()))
    except (AttributeError, TypeError, ValueError):
        size = 1
    return float(first.trials * size * len(cells))


def read_results(path: str | os.PathLike) -> dict[str, dict]:
    """Finished cells of a results file, by key.

    Never writes the file: a last line without its newline (being written now, or torn by a kill) is
    skipped, and repaired by the next writer.
    """
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    done = {}
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record and "result" in record:
            done[record["key"]] = record
    return done


def _record_line(record: dict) -> str:
    """One JSON line; a result JSON cannot hold is a ValueError naming what to return instead."""
    try:
        return json.dumps(record, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"sweep: the result of cell {record.get('key')} cannot be written as JSON ({err}): return numbers,"
            " strings, booleans, None, NumPy or JAX arrays, and lists or dicts (with string keys) of them"
        ) from None


def append_result(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and force it to disk (a kill loses at most the line being written).

    Under an exclusive lock: a last line torn by a killed writer is cut off first, so the new
    line starts a line of its own; a second writer waits, and readers never need the lock.
    """
    line = _record_line(record).encode()
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # torn by a killed writer: keep up to its last newline
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _check_writable(path: str | os.PathLike) -> None:
    """Fail before any work when ``path`` cannot be appended to (nothing computed would be kept)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as err:
        raise ValueError(
            f"sweep: cannot write the results file {path} ({err.strerror}): make it writable or choose another path"
        ) from None


def sweep(
    cells: Sequence[Cell],
    compute: Callable[[Sequence[Cell]], list] = run_cells,
    *,
    path: str | os.PathLike,
    tag: str = "",
    fresh: bool = False,
    progress: bool = True,
    desc: str = "sweep",
    workers: int = 1,
) -> SweepResult:
    """Compute every cell, reusing the finished cells recorded in ``path``.

    Args:
      cells: the cells, in the order results are returned (duplicates are computed once).
      compute: ``compute(group)`` -> one JSON-ready result per cell of ``group`` (cells with
        equal ``group_key``; default ``run_cells``). ``per_cell(f)`` adapts a one-cell function.
      path: the JSON-lines results file (created with its directory if missing).
      tag: names what ``compute`` records beyond its name and bound arguments (``computation_id``),
        such as what a closure captures; part of every cell's key.
      fresh: ignore (and overwrite) the file's finished cells: recompute everything.
      progress: show a tqdm bar (cells done, time left) on stderr.
      desc: the bar's label.
      workers: compute the groups in this many processes, one core each (``workers.parallel_map``;
        the most expensive groups first), when ``compute`` can be sent to them (a module-level
        function, as ``run_cells``); the same results as one process, in about 1/workers of the
        time on a CPU whose cores are free. Only this process writes ``path``. The workers end
        with this process, however it ends.

    Returns:
      ``SweepResult``. Each computed cell is written as soon as its group finishes as
      ``{"key", "config", "tag", "computation", "precision", "stream", "data", "result",
      "seconds", "code_version"}`` (``data``: ``data_key``; ``seconds``: the group's wall time
      divided among its cells).

    Raises:
      ValueError: before any work, when ``path`` cannot be read or written or the computation
        cannot be named; after a group, when its result cannot be written as JSON.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    computation = computation_id(compute)
    keys = [_key(c, tag, computation) for c in cells]
    if fresh and os.path.exists(path):
        _check_writable(path)
        os.remove(path)
    try:
        done = read_results(path)
    except OSError as err:
        raise ValueError(f"sweep: cannot read the results file {path} ({err.strerror}): choose another path") from None
    todo = list(dict.fromkeys(k for k in keys if k not in done))
    if todo:
        _check_writable(path)
    legacy = sum(1 for record in done.values() if "computation" not in record)
    if legacy and todo:
        warnings.warn(
            f"{path}: {legacy} lines were written before the computation was part of a cell's key, so it is"
            " unknown which computation wrote them: they are not reused (the cells are recomputed)",
            stacklevel=2,
        )
    version = code_version()
    reused = sum(1 for k in dict.fromkeys(keys) if k in done)
    stale = sum(1 for k in dict.fromkeys(keys) if k in done and done[k].get("code_version") != version)
    if stale:
        warnings.warn(
            f"{path}: reusing {stale} cells computed by another code version; pass fresh=True (--fresh) to recompute",
            stacklevel=2,
        )
    by_key = dict(zip(keys, cells))
    groups: dict = {}
    for k in todo:
        groups.setdefault(group_key(by_key[k]) if getattr(compute, "groups", True) else k, []).append(k)
    with tqdm(
        total=len(set(keys)),
        initial=reused,
        desc=desc,
        unit="cell",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        order = list(groups.values())
        parallel = workers > 1 and picklable(compute)
        if parallel:
            order.sort(key=lambda members: -_group_cost([by_key[k] for k in members]))
        items = [[by_key[k] for k in members] for members in order]
        run = functools.partial(_timed, compute)
        for i, (results, seconds) in parallel_map(run, items, workers if parallel else 1):
            members = order[i]
            seconds = round(seconds / len(members), 4)
            for k, result in zip(members, results, strict=True):
                cell = by_key[k]
                record = {
                    "key": k,
                    "config": cell_config(cell),
                    "tag": tag,
                    "computation": computation,
                    "precision": cell_precision(cell),
                    "stream": STREAM_VERSION,
                    "data": data_key(cell),
                    "result": to_jsonable(result),
                    "seconds": seconds,
                    "code_version": version,
                }
                append_result(path, record)
                done[k] = record
            bar.update(len(members))
    return SweepResult(
        results=[done[k]["result"] for k in keys],
        computed=len(todo),
        reused=reused,
        stale=stale,
        seconds=time.perf_counter() - start,
    )
