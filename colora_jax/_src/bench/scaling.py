"""``python -m colora_jax._src.bench.scaling MAX_DEVICES USERS_PER_DEVICE D`` (XLA_FLAGS set by the caller).

Seconds per AltMin iteration of the users-sharded fit (regression, n=16, r=4) on 1, 2, 4, ...
devices: at fixed total work (``USERS_PER_DEVICE * MAX_DEVICES`` users; strong scaling,
efficiency ``t_1 / (N t_N)``) and at fixed work per device (``USERS_PER_DEVICE * N`` users;
weak scaling, efficiency ``t_1 / t_N``). One JSON line.
"""

from __future__ import annotations

import json
import sys

import jax

from colora_jax._src.bench.suite import seconds_per_iteration
from colora_jax._src.experiments.sharding import fit_sharded, shard_users, users_mesh
from colora_jax._src.model.config import ProblemConfig
from colora_jax._src.model.data import generate


def time_sharded(devices: int, users: int, d: int, rank=4) -> float:
    """Seconds per ``fit_sharded`` iteration of a regression problem over ``devices`` devices."""
    pc = ProblemConfig(
        model="regression", users=users, d_out=d, d_in=d, rank=rank, samples=16, test_samples=0, noise=0.1
    )
    mesh = users_mesh(devices)
    obs = shard_users(jax.jit(lambda k: generate(k, pc).train)(jax.random.key(0)), mesh)
    return seconds_per_iteration(lambda fc: lambda o: fit_sharded(o, fc, mesh=mesh), obs, rank)[0]


def main(max_devices: int, per_device: int, d: int) -> dict:
    """Strong (fixed total users) and weak (fixed users per device) scaling of ``fit_sharded``."""
    counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= max_devices]
    strong = [time_sharded(n, per_device * max_devices, d) for n in counts]
    weak = [time_sharded(n, per_device * n, d) for n in counts]
    return {
        "devices": counts,
        "users_per_device": per_device,
        "d": d,
        "strong_seconds": strong,
        "weak_seconds": weak,
        "strong_efficiency": [strong[0] / (n * t) for n, t in zip(counts, strong)],
        "weak_efficiency": [weak[0] / t for t in weak],
    }


if __name__ == "__main__":
    print(json.dumps(main(*(int(a) for a in sys.argv[1:4]))))
