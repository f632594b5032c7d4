"""The sharded fit under jax.distributed: two CPU processes on loopback agree with one process."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import colora_jax as cj

# one worker runs the whole module: its tests share one expensive session-scoped fixture
pytestmark = pytest.mark.xdist_group("multiprocess")

WORKER = pathlib.Path(__file__).with_name("_sharded_worker.py")
PROCESSES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def distributed_result(tmp_path_factory):
    path = tmp_path_factory.mktemp("multiprocess") / "result.npz"
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "process", str(i), str(PROCESSES), port, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return dict(np.load(path))


@pytest.mark.parametrize("model", ["regression", "sensing"])
def test_two_processes_agree_with_one(distributed_result, model):
    sys.path.insert(0, str(WORKER.parent))
    from _sharded_worker import FIT, PROBLEMS, SEED  # the configuration the processes ran

    with jax.enable_x64(True):
        prob = jax.jit(cj.generate, static_argnums=1)(jax.random.key(SEED), PROBLEMS[model])
        ref, trace = jax.jit(lambda o: cj.fit(o, FIT))(prob.train)
        for name, want in (("U", ref.U), ("V", ref.V), ("S", ref.S), ("objective", trace.objective)):
            got = distributed_result[f"{model}_{name}"]
            np.testing.assert_allclose(got, np.asarray(want), rtol=1e-9, atol=1e-10, err_msg=name)
