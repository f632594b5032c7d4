"""Subprocess helper of test_sharding.py and test_multiprocess.py (needs its own XLA_FLAGS).

python tests/_sharded_worker.py devices N
    On N fake CPU devices: for both models, the sharded fit on 1, 2, ..., N devices against
    the single-device fit; prints one JSON line of the largest differences.
python tests/_sharded_worker.py process I P PORT OUT
    Process I of P under jax.distributed (coordinator on 127.0.0.1:PORT), one CPU device
    each, holding its slice of the users; process 0 writes the fitted U, V, S and trace to
    OUT (.npz).
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # before jax is imported; importing this module (tests) changes nothing
    MODE = sys.argv[1]
    LOCAL_DEVICES = int(sys.argv[2]) if MODE == "devices" else 1
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={LOCAL_DEVICES}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

import colora_jax as cj  # noqa: E402

# shared with the tests: the same problems and fit on every side
PROBLEMS = {
    "regression": cj.ProblemConfig(
        model="regression", users=8, d_out=6, d_in=5, rank=2, samples=8, noise=0.1, x64=True
    ),
    "sensing": cj.ProblemConfig(model="sensing", users=8, d_out=6, d_in=5, rank=2, samples=30, noise=0.1, x64=True),
}
FIT = cj.FitConfig(rank=2, iters=6, tol=0.0)
SEED = 3


def problem(model):
    return jax.jit(cj.generate, static_argnums=1)(jax.random.key(SEED), PROBLEMS[model])


def compare_devices(n_devices):
    out = {}
    for model in PROBLEMS:
        prob = problem(model)
        ref, ref_trace = jax.jit(lambda o, t: cj.fit(o, FIT, truth=t))(prob.train, prob.truth)
        out[model] = {}
        for n in range(1, n_devices + 1):
            if n_devices % n:
                continue
            mesh = cj.users_mesh(n)
            run = jax.jit(lambda o, t, mesh=mesh: cj.fit_sharded(o, FIT, mesh=mesh, truth=t))
            est, trace = run(cj.shard_users(prob.train, mesh), prob.truth)
            out[model][n] = {
                "U": float(np.max(np.abs(est.U - ref.U))),
                "V": float(np.max(np.abs(est.V - ref.V))),
                "S": float(np.max(np.abs(est.S - ref.S))),
                "objective": float(np.max(np.abs(trace.objective - ref_trace.objective) / ref_trace.objective)),
                "rel_error": float(np.max(np.abs(trace.rel_error - ref_trace.rel_error))),
                "iterations": [int(trace.iterations), int(ref_trace.iterations)],
                "S_sharded": len(est.S.sharding.device_set) == n,
            }
    uneven = cj.Observations(np.zeros((10, 4, 3), np.float32), np.zeros((10, 4, 3), np.float32), "regression")
    try:
        cj.shard_users(uneven, cj.users_mesh(n_devices))
        out["uneven_split_error"] = None
    except ValueError as err:
        out["uneven_split_error"] = str(err)
    print(json.dumps(out))


def distributed(process_id, processes, port, path):
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=processes,
        process_id=process_id,
        initialization_timeout=60,
    )
    from jax.experimental import multihost_utils

    mesh = cj.users_mesh()  # all processes' devices
    result = {}
    for model in PROBLEMS:
        prob = problem(model)  # every process draws the same problem, then keeps its users
        k = prob.train.users
        mine = slice(process_id * k // processes, (process_id + 1) * k // processes)
        users = cj.users_sharding(mesh)
        obs = jax.tree.map(
            lambda a, users=users, mine=mine: jax.make_array_from_process_local_data(
                users, np.asarray(a[mine]), a.shape
            ),
            prob.train,
        )
        est, trace = jax.jit(lambda o: cj.fit_sharded(o, FIT, mesh=mesh))(obs)
        est, trace = multihost_utils.process_allgather((est, trace), tiled=True)
        for name, value in zip(("U", "V", "S", "objective"), (est.U, est.V, est.S, trace.objective)):
            result[f"{model}_{name}"] = np.asarray(value)
    if process_id == 0:
        np.savez(path, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    cj.enable_compile_cache()  # the suite's cache (the user's cache dir, or $COLORA_JAX_CACHE_DIR), as in-process
    jax.config.update("jax_enable_x64", True)
    if MODE == "devices":
        compare_devices(LOCAL_DEVICES)
    else:
        distributed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
