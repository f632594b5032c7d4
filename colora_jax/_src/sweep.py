"""Resumable sweeps: a list of cells, each cell's result appended to a JSON-lines file.

A *cell* is one point of an experiment: the planted problem, the estimator (CoLoRA's
``FitConfig`` plus a method name), the number of trials and the seed. ``sweep`` computes the
cells in order and appends each finished cell to ``path`` as one JSON line (flushed and
fsynced), so a sweep killed midway and started again recomputes only the missing cells.

Cache key (the trade-off, decided here): a cell is identified by the SHA-256 of its fully
resolved configuration (every field of both configs, trials, seed, method, pad_samples) plus the
caller's ``tag`` (what is recorded per cell, and by which fitter). A changed *configuration* therefore never reuses
a stale cell. The code version is *not* part of the key: it is written on every line, and
reused cells computed by another code version are counted and reported (``SweepResult.stale``
and a warning), so that editing a plotting script does not throw away an hour of trials. When
the numerics themselves change, pass ``fresh=True`` (``--fresh`` in the scripts, used by
``make figures``) to recompute everything.

Speed: ``cell_trials`` runs a cell's trials as one jit-compiled vmapped call, and compiling
(seconds per configuration on a CPU) dominates sweeps over many small cells. Two knobs are
therefore traced instead of static: the noise level (problems are generated noiselessly and
the cell's Gaussian noise is added to the measurements inside the trial), and the sample size
(a cell may generate ``pad_samples >= samples`` measurements per user and keep only the first
``samples``: the rest are zeroed, which removes them from every least squares exactly). Cells
differing only in noise, or in ``samples`` below a common ``pad_samples``, share one
executable; that makes a phase diagram over many sample sizes affordable on a CPU.
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
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from colora_jax._src.baselines import SharedInputConfig, fit_method, generate_problem
from colora_jax._src.commands.common import to_jsonable
from colora_jax._src.config import FitConfig, ProblemConfig
from colora_jax._src.data import Observations
from colora_jax._src.provenance import code_version
from colora_jax._src.trials import default_batch, evaluate, trial_keys


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a sweep: everything that determines its result."""

    problem: ProblemConfig | SharedInputConfig  # the planted problem (``samples``: per user, as used)
    fit: FitConfig  # CoLoRA's estimator settings (baselines read rank, iters, tol from it too)
    trials: int = 50  # independent trials; trial t uses fold_in(key(seed), t)
    seed: int = 0  # PRNG seed of the cell
    method: str = "colora"  # a name in ``baselines.METHODS``, or one the caller's ``fitter`` knows
    pad_samples: int = 0  # generate this many samples per user, keep ``samples`` (0: no padding)

    def generated_problem(self) -> ProblemConfig | SharedInputConfig:
        """The configuration that is compiled and generated: noiseless, ``pad_samples`` per user."""
        if self.pad_samples and self.pad_samples < self.problem.samples:
            raise ValueError(f"pad_samples={self.pad_samples} is below samples={self.problem.samples}: raise it or use 0")
        return dataclasses.replace(self.problem, samples=max(self.pad_samples, self.problem.samples), noise=0.0)


def cell_config(cell: Cell) -> dict:
    """The cell's resolved configuration as a JSON-ready dict (what its key hashes)."""
    return to_jsonable(dataclasses.asdict(cell))


def cell_key(cell: Cell, tag: str = "") -> str:
    """SHA-256 (hex, 20 digits) of the resolved configuration and the caller's tag."""
    text = json.dumps({"cell": cell_config(cell), "tag": tag}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- trials of one cell


def keep_samples(obs: Observations, samples) -> Observations:
    """Zero every measurement of index ``>= samples`` (a traced integer is fine).

    A zero row (``x = 0, y = 0``) adds nothing to any normal equation or sum of squares, so
    fitting the masked observations is fitting the first ``samples`` measurements.
    """
    keep = (jnp.arange(obs.samples) < samples).astype(obs.X.dtype)
    x_keep = keep.reshape((1, -1) + (1,) * (obs.X.ndim - 2))
    y_keep = keep.reshape((1, -1) + (1,) * (obs.Y.ndim - 2))
    return Observations(X=obs.X * x_keep, Y=obs.Y * y_keep, model=obs.model)


def add_noise(key, obs: Observations, noise) -> Observations:
    """``y + noise * e`` with ``e`` standard Gaussian (``measure``'s noise, with a traced level)."""
    return Observations(X=obs.X, Y=obs.Y + noise * jax.random.normal(key, obs.Y.shape, obs.Y.dtype), model=obs.model)


def masked_trial(key, samples, noise, problem_config, fit_config: FitConfig, method: str, fitter: Callable = fit_method):
    """One trial of ``method``: a noiseless problem, noise of std ``noise``, first ``samples`` kept.

    ``problem_config`` is the generated (noiseless, padded) configuration; ``samples`` and
    ``noise`` may be traced. ``fitter(method, observations, fit_config, key=, truth=)`` returns
    a ``MethodFit`` (default ``baselines.fit_method``, whose "colora" is the core ``fit``).
    Returns ``(Evaluation, trace)``.
    """
    kp, kf, ktr, kte = jax.random.split(key, 4)
    problem = generate_problem(kp, problem_config)
    test = add_noise(kte, problem.test, noise)
    problem = dataclasses.replace(problem, test=test)
    train = keep_samples(add_noise(ktr, problem.train, noise), samples)
    result = fitter(method, train, fit_config, key=kf, truth=problem.truth)
    return evaluate(result.W, problem, result.U, result.V), result.trace


@functools.lru_cache(maxsize=64)
def _compiled(problem_config, fit_config: FitConfig, method: str, batch: int, fitter: Callable):
    problem_config.validate()
    fit_config.validate()
    one = functools.partial(masked_trial, problem_config=problem_config, fit_config=fit_config, method=method,
                            fitter=fitter)
    keys = trial_keys(jax.random.key(0), 0, batch)
    noise = jnp.asarray(0.0, problem_config.dtype)
    return jax.jit(jax.vmap(one, in_axes=(0, None, None))).lower(keys, jnp.asarray(1), noise).compile()


def cell_trials(cell: Cell, batch: int | None = None, fitter: Callable = fit_method):
    """All trials of a cell as NumPy arrays with a leading trials axis: ``(Evaluation, trace)``.

    One compiled executable per (generated configuration, fit configuration, method, batch):
    cells differing only in noise, or in ``problem.samples`` below a common ``pad_samples``,
    share it. ``fitter`` must be hashable and stable (a module-level function).
    """
    cell.problem.validate()
    generated = cell.generated_problem()
    batch = default_batch(generated, cell.trials) if batch is None else max(1, min(batch, cell.trials))
    run = _compiled(generated, cell.fit, cell.method, batch, fitter)
    key, parts = jax.random.key(cell.seed), []
    for start in range(0, cell.trials, batch):
        keys = trial_keys(key, start, start + batch)
        out = jax.device_get(run(keys, jnp.asarray(cell.problem.samples), jnp.asarray(cell.problem.noise, generated.dtype)))
        parts.append(jax.tree.map(lambda a: a[: min(batch, cell.trials - start)], out))
    return jax.tree.map(lambda *a: np.concatenate(a, axis=0), *parts)


def run_cell(cell: Cell, trace: bool = False, fitter: Callable = fit_method) -> dict:
    """The default per-cell computation: every trial's evaluation (and, if asked, trace)."""
    evaluation, tr = cell_trials(cell, fitter=fitter)
    out = {"evaluation": evaluation._asdict()}
    if trace:
        out["trace"] = tr._asdict()
    return to_jsonable(out)


# ----------------------------------------------------------------------------- the resumable driver


class SweepResult(NamedTuple):
    """What a sweep returns: per-cell results in the order of the cells, and bookkeeping."""

    results: list  # compute(cell) for every cell (JSON-ready)
    computed: int  # cells computed by this call
    reused: int  # cells read back from the results file
    stale: int  # reused cells that another code version computed
    seconds: float  # wall time of this call (reading, computing and writing)


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
    compute: Callable[[Cell], Any] = run_cell,
    *,
    path: str | os.PathLike,
    tag: str = "",
    fresh: bool = False,
    progress: bool = True,
    desc: str = "sweep",
) -> SweepResult:
    """Compute every cell, reusing the finished cells recorded in ``path``.

    Args:
      cells: the cells, in the order results are returned (duplicates are computed once).
      compute: ``compute(cell)`` -> a JSON-ready result (default ``run_cell``).
      path: the JSON-lines results file (created with its directory if missing).
      tag: names what ``compute`` records; part of every cell's key, so changing what is
        recorded never reuses cells recorded the old way.
      fresh: ignore (and overwrite) the file's finished cells: recompute everything.
      progress: show a tqdm bar (cells done, time left) on stderr.
      desc: the bar's label.

    Returns:
      ``SweepResult``. Each computed cell is written as soon as it finishes as
      ``{"key", "config", "tag", "result", "seconds", "code_version"}``.
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
    with tqdm(total=len(set(keys)), initial=reused, desc=desc, unit="cell", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for k in todo:
            t0 = time.perf_counter()
            result = compute(by_key[k])
            record = {
                "key": k, "config": cell_config(by_key[k]), "tag": tag, "result": to_jsonable(result),
                "seconds": round(time.perf_counter() - t0, 4), "code_version": version,
            }
            append_result(path, record)
            done[k] = record
            bar.update(1)
    return SweepResult(
        results=[done[k]["result"] for k in keys], computed=len(todo), reused=reused, stale=stale,
        seconds=time.perf_counter() - start,
    )
