"""``python -m benchmarks.accelerator --smoke`` on the CPU backend: one run, its JSON checked."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks.accelerator import sanitize

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_device_kinds_become_file_names():
    assert sanitize("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert sanitize("TPU v5 lite") == "tpu_v5_lite"
    assert sanitize("cpu") == "cpu"
    assert sanitize("  ") == "unknown"


@pytest.fixture(scope="module")
def smoke_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    files = list(out.iterdir())
    assert [f.name for f in files] == ["accelerator_cpu.json"]  # a CPU run is never named as an accelerator
    return json.loads(files[0].read_text()), run.stdout


def _rates_ok(rate: dict) -> None:
    assert 0 < rate["range"][0] <= rate["tokens_per_second"] <= rate["range"][1] < math.inf
    assert rate["clock"] == "cpu"  # on the CPU backend the rates come from CPU time


def test_smoke_measures_every_part_compile_apart(smoke_record):
    record, stdout = smoke_record
    assert record["device_name"] == "cpu" and record["smoke"]
    assert set(record["seconds"]) == {"linear", "nnx", "compile", "total"}
    lin = record["linear"]
    assert lin["versus_numpy"][0]["colora_trials_per_second"] > 0
    assert lin["versus_numpy"][0]["colora_compile_seconds"] > 0
    assert lin["iteration_vs_users"][0]["compile_seconds"] > 0
    width = record["nnx"]["widths"]["32"]
    for mode in ("serve", "train"):
        for method in ("base", "global", "colora", "local"):
            _rates_ok(width[mode][method])
            assert len(width[mode][method]["cpu_seconds"]) == record["nnx"]["config"]["repeats"]
        ratio = width[mode]["colora_over_base"]
        assert ratio["range"][0] <= ratio["median"] <= ratio["range"][1]
    for method, rec in width["compile"].items():
        assert rec["compile_seconds"]["serve"] > 0 and rec["compile_seconds"]["train"] > 0, method
    for state in ("cold", "warm"):
        assert record["compile"][state]["serve"] > 0 and record["compile"][state]["train"] > 0
    assert "colora/base" in stdout and "wrote" in stdout
