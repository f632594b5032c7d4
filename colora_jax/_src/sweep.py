"""Resumable sweeps: a list of cells, each cell's result appended to a JSON-lines file.

A *cell* is one point of an experiment: the planted problem, the estimator (CoLoRA's
``FitConfig`` plus a method name), the number of trials and the seed. ``sweep`` computes the
cells and appends each finished cell to ``path`` as one JSON line (flushed and fsynced), so a
sweep killed midway and started again recomputes only the missing cells.

Cache key (the trade-off, decided here): a cell is identified by the SHA-256 of its fully
resolved configuration (every field of both configs, trials, seed, method, pad_samples), the
layout of the random streams (``data.STREAM_VERSION``: a change of how problems are drawn
changes every result) and the caller's ``tag`` (what is recorded per cell, and by which
fitter). A changed configuration or stream therefore never reuses a stale cell. The code
version is *not* part of the key: it is written on every line, and reused cells computed by
another code version are counted and reported (``SweepResult.stale`` and a warning), so that
editing a plotting script does not throw away an hour of trials. When the numerics
themselves change, pass ``fresh=True`` (``--fresh`` in the scripts, used by ``make figures``)
to recompute everything.

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
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from colora_jax._src.config import FitConfig, ProblemConfig
from colora_jax._src.data import STREAM_VERSION
from colora_jax._src.provenance import code_version
from colora_jax._src.serialization import to_jsonable
from colora_jax._src.shared_input import SharedInputConfig
from colora_jax._src.trials import method_evaluator, plan_trials, trial_bytes
from colora_jax._src.workers import parallel_map, picklable


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a sweep: everything that determines its result."""

    problem: ProblemConfig | SharedInputConfig  # the planted problem (``samples``: per user, as used)
    fit: FitConfig  # CoLoRA's estimator settings (baselines read rank, iters, tol from it too)
    trials: int = 50  # independent trials; trial t uses fold_in(key(seed), t)
    seed: int = 0  # PRNG seed of the cell
    method: str = "colora"  # a name in ``registry.METHODS``, or one the caller's ``fn_for`` knows
    pad_samples: int = 0  # generate this many samples per user, fit the first ``samples`` (0: no padding)

    def generated_samples(self) -> int:
        """Samples per user that are generated (the prefix ``problem.samples`` of them is fitted)."""
        if self.pad_samples and self.pad_samples < self.problem.samples:
            raise ValueError(
                f"pad_samples={self.pad_samples} is below samples={self.problem.samples}: raise it or use 0"
            )
        return max(self.pad_samples, self.problem.samples)


def cell_config(cell: Cell) -> dict:
    """The cell's resolved configuration as a JSON-ready dict (what its key hashes)."""
    return to_jsonable(dataclasses.asdict(cell))


def cell_key(cell: Cell, tag: str = "") -> str:
    """SHA-256 (hex, 20 digits) of the resolved configuration, the stream layout and the caller's tag."""
    text = json.dumps({"cell": cell_config(cell), "stream": STREAM_VERSION, "tag": tag}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- trials of cells


def group_key(cell: Cell):
    """Cells with equal group keys differ only in ``problem.samples``: one runner call computes them."""
    return (
        dataclasses.replace(cell.problem, samples=cell.generated_samples()),
        cell.fit,
        cell.trials,
        cell.seed,
        cell.method,
    )


def cell_trials(cells: Sequence[Cell], fn_for: Callable[[str], Callable] = method_evaluator):
    """Every trial of a group of cells (``group_key`` equal) as NumPy arrays ``(trials, cells, ...)``.

    One ``run_trials`` call: generated with ``pad_samples`` per user, fitted at each cell's
    sample count. ``fn_for(method)`` gives the per-problem function (default: the registry's
    method); it must return a stable, hashable function.
    """
    first = cells[0]
    if any(group_key(c) != group_key(first) for c in cells):
        raise ValueError("cell_trials computes cells that differ only in problem.samples: group them with group_key")
    for c in cells:
        c.problem.validate()
    plan = plan_trials(
        first.problem,
        first.fit,
        first.trials,
        samples=[c.problem.samples for c in cells],
        fn=fn_for(first.method),
        generate_samples=first.generated_samples(),
    )
    return plan.run(jax.random.key(first.seed))


def run_cells(cells: Sequence[Cell], trace: bool = False, fn_for: Callable[[str], Callable] = method_evaluator) -> list:
    """The default computation of a group of cells: every trial's evaluation (and, if asked, trace)."""
    evaluation, tr = cell_trials(cells, fn_for)
    out = []
    for j in range(len(cells)):
        one = {"evaluation": jax.tree.map(lambda a, j=j: a[:, j], evaluation)._asdict()}
        if trace:
            one["trace"] = jax.tree.map(lambda a, j=j: a[:, j], tr)._asdict()
        out.append(to_jsonable(one))
    return out


def per_cell(compute: Callable[[Cell], Any]) -> Callable[[Sequence[Cell]], list]:
    """Turn a one-cell computation into a group computation (for cells that are not runner trials)."""

    def run(cells):
        return [compute(c) for c in cells]

    run.groups = False  # every cell is its own group
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
    """Finished cells of a results file, by key. A truncated last line is dropped from the file."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # a write was interrupted mid-line: cut the partial line off
        with open(path, "r+b") as f:
            f.truncate(end)
    done = {}
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record and "result" in record:
            done[record["key"]] = record
    return done


def append_result(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and force it to disk (a kill loses at most the line being written)."""
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
      tag: names what ``compute`` records; part of every cell's key, so changing what is
        recorded never reuses cells recorded the old way.
      fresh: ignore (and overwrite) the file's finished cells: recompute everything.
      progress: show a tqdm bar (cells done, time left) on stderr.
      desc: the bar's label.
      workers: compute the groups in this many processes, one core each (``workers.parallel_map``;
        the most expensive groups first), when ``compute`` can be sent to them (a module-level
        function, as ``run_cells``); the same results as one process, in about 1/workers of the
        time on a CPU whose cores are free. Only this process writes ``path``.

    Returns:
      ``SweepResult``. Each computed cell is written as soon as its group finishes as
      ``{"key", "config", "tag", "stream", "result", "seconds", "code_version"}`` (``seconds``:
      the group's wall time divided among its cells).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fresh and os.path.exists(path):
        os.remove(path)
    done = read_results(path)
    keys = [cell_key(c, tag) for c in cells]
    todo = list(dict.fromkeys(k for k in keys if k not in done))
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
                record = {
                    "key": k,
                    "config": cell_config(by_key[k]),
                    "tag": tag,
                    "stream": STREAM_VERSION,
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
