"""Users sharded over a device mesh give the single-device fit (fake CPU devices, subprocess)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jax
import pytest

import colora_jax as cj

# one worker runs the whole module: its tests share one expensive session-scoped fixture
pytestmark = pytest.mark.xdist_group("sharding")

WORKER = pathlib.Path(__file__).with_name("_sharded_worker.py")


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def differences():
    # XLA_FLAGS must be set before jax is imported: a fresh process with 4 fake CPU devices
    out = subprocess.run([sys.executable, str(WORKER), "devices", "4"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["regression", "sensing"])
@pytest.mark.parametrize("devices", ["1", "2", "4"])
def test_sharded_fit_equals_single_device(differences, model, devices):
    d = differences[model][devices]
    assert d["S_sharded"]  # S comes back split over the devices
    assert d["iterations"][0] == d["iterations"][1]
    for name in ("U", "V", "S", "objective", "rel_error"):  # float64: only summation order differs
        assert d[name] < 1e-10, (name, d[name])


def test_users_must_divide_evenly(differences):
    assert cj.users_mesh(1).axis_names == ("users",)
    assert "10 users cannot be split evenly over 4 devices" in differences["uneven_split_error"]


def test_too_many_devices_is_a_clear_error():
    with pytest.raises(ValueError, match="visible"):
        cj.users_mesh(len(jax.devices()) + 1)
