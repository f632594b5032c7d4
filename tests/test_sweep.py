"""The resumable sweep driver: an interrupted sweep resumes without loss, a changed configuration
(or stream layout) never reuses a stale cell, a torn last line is skipped by readers and repaired
by the writer, and a group of cells computed in one runner call equals each cell computed alone."""

import json

import numpy as np
import pytest

import colora_jax as cj
from colora_jax import Cell, cell_key, per_cell, read_results, run_cells, sweep

PC = cj.ProblemConfig(model="regression", users=3, d_out=4, d_in=4, rank=1, samples=6, test_samples=0)
FC = cj.FitConfig(rank=1, iters=5)
CELLS = [Cell(PC, FC, trials=2, seed=s) for s in range(5)]


class Interrupt(Exception):
    pass


def fake_compute(calls, dies_after=None):
    """A cheap deterministic per-cell result that records which cells were computed (and, with
    ``dies_after``, is interrupted when that many cells are computed)."""

    def compute(cell):
        if len(calls) == dies_after:
            raise Interrupt
        calls.append(cell.seed)
        return {"value": [cell.seed * 1.5, cell.problem.noise]}

    return per_cell(compute)


def test_interrupted_sweep_resumes_and_loses_nothing(tmp_path):
    path = tmp_path / "s.jsonl"
    calls = []
    with pytest.raises(Interrupt):
        sweep(CELLS, fake_compute(calls, dies_after=2), path=path, progress=False)
    assert calls == [0, 1] and len(read_results(path)) == 2
    resumed = sweep(CELLS, fake_compute(calls), path=path, progress=False)
    assert calls == [0, 1, 2, 3, 4], "the restart must compute only the missing cells"
    assert (resumed.computed, resumed.reused, resumed.stale) == (3, 2, 0)
    whole = sweep(CELLS, fake_compute([]), path=tmp_path / "whole.jsonl", progress=False)
    assert resumed.results == whole.results


def test_changed_configuration_recomputes(tmp_path):
    path = tmp_path / "s.jsonl"
    calls = []
    sweep(CELLS[:2], fake_compute(calls), path=path, progress=False)
    changed = [Cell(cj.ProblemConfig(**{**PC.__dict__, "noise": 0.1}), FC, trials=2, seed=s) for s in range(2)]
    out = sweep(changed, fake_compute(calls), path=path, progress=False)
    assert out.computed == 2 and calls == [0, 1, 0, 1]
    assert out.results[0]["value"][1] == 0.1
    again = sweep(CELLS[:2] + [Cell(PC, FC, trials=3, seed=0)], fake_compute(calls), path=path, progress=False)
    assert again.computed == 1, "more trials is another cell"
    assert sweep(CELLS[:2], fake_compute(calls), path=path, tag="other", progress=False).computed == 2
    assert sweep(CELLS[:2], fake_compute(calls), path=path, fresh=True, progress=False).computed == 2


def test_torn_last_line_is_skipped_and_repaired_by_the_writer(tmp_path):
    path = tmp_path / "s.jsonl"
    sweep(CELLS[:2], fake_compute([]), path=path, progress=False)
    with open(path, "a") as f:
        f.write('{"key": "abc", "res')  # a kill in the middle of a write
    compute = fake_compute([])
    assert set(read_results(path)) == {cell_key(c, compute=compute) for c in CELLS[:2]}
    assert path.read_text().endswith('"res'), "reading never writes the file"
    calls = []
    sweep(CELLS[:3], fake_compute(calls), path=path, progress=False)
    assert calls == [2]
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_cell_key_is_the_resolved_configuration(monkeypatch):
    a, b = Cell(PC, FC, 2, 0), Cell(cj.ProblemConfig(**PC.__dict__), cj.FitConfig(**FC.__dict__), 2, 0)
    assert cell_key(a) == cell_key(b)
    assert cell_key(a) != cell_key(Cell(PC, FC, 2, 1)) != cell_key(Cell(PC, FC, 2, 0, pad_samples=8))
    before = cell_key(a)
    monkeypatch.setattr("colora_jax._src.experiments.sweep.STREAM_VERSION", "another layout")
    assert cell_key(a) != before, "results drawn with another stream layout are other cells"


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_a_group_of_cells_equals_each_cell_alone(model, x64):
    """One runner call for cells that differ only in samples (generated once with pad_samples)
    gives each cell's trials exactly as a call for that cell alone (float64: 1e-12)."""
    pc = cj.ProblemConfig(
        model=model, users=4, d_out=5, d_in=4, rank=2, samples=30, test_samples=0, noise=0.01, x64=True
    )
    fc = cj.FitConfig(rank=2, iters=8, tol=0.0)
    cells = [
        Cell(cj.ProblemConfig(**{**pc.__dict__, "samples": n}), fc, trials=3, seed=5, pad_samples=30)
        for n in (9, 18, 30)
    ]
    together = run_cells(cells, trace=True)
    for cell, joint in zip(cells, together):
        alone = run_cells([cell], trace=True)[0]
        np.testing.assert_allclose(joint["evaluation"]["rel_error"], alone["evaluation"]["rel_error"], rtol=1e-12)
        np.testing.assert_allclose(joint["trace"]["objective"][:5], alone["trace"]["objective"][:5], rtol=1e-12)


def test_data_digest_is_the_sha256_of_the_drawn_bytes():
    """``data_sha256`` hashes the generated draws themselves: the same for two methods on one
    ``data_key`` (common random numbers), different for another seed, and equal to the digest of
    the problems generated directly from the trial keys (``fold_in(key, t)``, first half of its split)."""
    import hashlib

    import jax

    pc = cj.ProblemConfig(model="sensing", users=3, d_out=4, d_in=4, rank=1, samples=6, test_samples=2)
    fc = cj.FitConfig(rank=1, iters=3)
    one, other, reseeded = (
        run_cells([Cell(pc, fc, trials=3, seed=s, method=m)])[0]
        for s, m in ((2, "colora"), (2, "local"), (3, "colora"))
    )
    assert one["data_sha256"] == other["data_sha256"] != reseeded["data_sha256"]
    keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.key(2), t))(np.arange(3))
    problems = jax.vmap(lambda k: cj.generate_problem(jax.random.split(k)[0], pc))(keys)
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(problems):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
    assert one["data_sha256"] == h.hexdigest()[:20]


def test_sweep_groups_cells_and_records_each(tmp_path):
    pc = cj.ProblemConfig(model="sensing", users=3, d_out=4, d_in=4, rank=1, samples=6, test_samples=0)
    fc = cj.FitConfig(rank=1, iters=5)
    cells = [
        Cell(cj.ProblemConfig(**{**pc.__dict__, "samples": n}), fc, trials=2, seed=1, pad_samples=8) for n in (4, 6, 8)
    ]
    calls = []

    def compute(group):
        calls.append(len(group))
        return run_cells(group)

    out = sweep(cells, compute, path=tmp_path / "g.jsonl", progress=False)
    assert calls == [3], "cells that differ only in samples are one group"
    assert len(read_results(tmp_path / "g.jsonl")) == 3 and len(out.results) == 3


@pytest.mark.slow
def test_two_worker_processes_give_the_same_cells_as_one(tmp_path):
    """Groups computed in two spawned processes (one core each): every cell bit for bit as in this
    process, the most expensive group first, each recorded once by this process."""
    fc = cj.FitConfig(rank=1, iters=8)
    cells = [
        Cell(
            cj.ProblemConfig(model=model, users=users, d_out=4, d_in=4, rank=1, samples=n), fc, trials=3, pad_samples=10
        )
        for model, users in (("sensing", 3), ("regression", 5), ("sensing", 6))
        for n in (6, 10)
    ]
    one = sweep(cells, path=tmp_path / "one.jsonl", progress=False)
    two = sweep(cells, path=tmp_path / "two.jsonl", progress=False, workers=2)
    assert two.computed == 6 and two.results == one.results
    assert len((tmp_path / "two.jsonl").read_text().splitlines()) == 6
    assert sweep(cells, path=tmp_path / "two.jsonl", progress=False, workers=2).computed == 0  # resumes
