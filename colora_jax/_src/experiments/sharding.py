"""Users sharded over a device mesh: the same ``fit``, its pooled sums become ``psum``s.

A mesh with one axis, ``'users'``, splits the users (the leading axis of ``X``, ``Y`` and of
the per-user parts of the truth) evenly across devices. Inside ``jax.shard_map`` each device
runs the estimator on the users it holds and forms its partial sums over them (for AltMin, the
pooled U/V normal equations),

    G = sum_devices sum_{i on device} G_i,      h = sum_devices sum_{i on device} h_i,

which ``Users.sum`` (``AllUsers(design, "users")``) adds across the mesh with ``blocks.pool``
(``lax.psum``, the only collective). U, V and the
trace are replicated; the personal ``S`` comes back sharded like the users. Results equal the
single-device ``fit`` up to the order of floating-point summation.

The mesh may span several processes (``jax.distributed``): build the global observations with
``jax.make_array_from_process_local_data`` and call the same function on every process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from colora_jax._src.algorithms import fit
from colora_jax._src.estimators.fitting import Estimate, Trace, check_finite
from colora_jax._src.experiments.trials import TrialResult, evaluate
from colora_jax._src.model.config import FitConfig
from colora_jax._src.model.data import GroundTruth, Observations, Problem
from colora_jax._src.runtime import caches

AXIS = "users"  # the mesh axis the users are split over

_TRUTH_SPEC = GroundTruth(U=P(), V=P(), S=P(AXIS), U_users=P(AXIS), V_users=P(AXIS), W=P(AXIS), noise=P())
_TRACE_SPEC = Trace(*(P(),) * len(Trace._fields))


def users_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh ``('users',)`` over ``devices`` (a count of the first global devices, a list, or all)."""
    available = jax.devices()
    if devices is None:
        devices = available
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"asked for {devices} devices but {len(available)} are visible: choose 1..{len(available)}"
            )
        devices = available[:devices]
    return Mesh(np.asarray(devices), (AXIS,))


def check_divisible(users: int, devices: int) -> None:
    """Users are split evenly: raise ValueError unless ``devices`` divides ``users``."""
    n = devices
    if users % n:
        raise ValueError(f"{users} users cannot be split evenly over {n} devices: choose users divisible by {n}")


def users_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of an array whose leading axis is the users."""
    return NamedSharding(mesh, P(AXIS))


def shard_users(observations: Observations, mesh: Mesh) -> Observations:
    """Place observations (from one process) on the mesh, users split across its devices."""
    check_divisible(observations.users, mesh.shape[AXIS])
    return jax.device_put(observations, users_sharding(mesh))


def fit_sharded(
    observations: Observations,
    config: FitConfig = FitConfig(),
    *,
    mesh: Mesh,
    key=None,
    truth: GroundTruth | None = None,
) -> tuple[Estimate, Trace]:
    """``fit`` with the users sharded over ``mesh``'s ``'users'`` axis (see the module docstring).

    Args:
      observations: all users' data (global arrays; sharded or not, they are split by users).
      config: as for ``fit``.
      mesh: a mesh with a ``'users'`` axis (``users_mesh``); its size must divide the users.
      key: as for ``fit`` (replicated).
      truth: optional ground truth; its per-user arrays are split like the observations.

    Returns:
      ``(Estimate, Trace)`` as ``fit``: ``U``, ``V`` and the trace replicated, ``S`` sharded.
    """
    check_divisible(observations.users, mesh.shape[AXIS])
    check_finite(observations)
    body = functools.partial(_fit_shard, config=config)
    specs = (P(AXIS), P(), None if truth is None else _TRUTH_SPEC)
    out = (Estimate(P(), P(), P(AXIS)), _TRACE_SPEC)
    return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=out)(observations, key, truth)


def _fit_shard(observations, key, truth, *, config):
    return fit(observations, config, key=key, truth=truth, axis_name=AXIS)


def sharded_fit_and_evaluate(problem: Problem, key, fit_config: FitConfig, *, mesh: Mesh) -> TrialResult:
    """``trials.fit_and_evaluate`` of CoLoRA with the users sharded over ``mesh`` (``recover --devices``)."""
    estimate, trace = fit_sharded(problem.train, fit_config, mesh=mesh, key=key, truth=problem.truth)
    return TrialResult(evaluate(estimate.W, problem, estimate.U, estimate.V), trace)


@functools.cache
def sharded_evaluator(devices: int):
    """A stable, hashable ``sharded_fit_and_evaluate`` over the first ``devices`` devices (``run_trials(fn=...)``).

    Its ``program_key`` (a name and the mesh's placement) lets the trial program be stored whole
    (``caches.load_or_compile``), keyed by the mesh it is sharded over.
    """
    mesh = users_mesh(devices)
    evaluator = functools.partial(sharded_fit_and_evaluate, mesh=mesh)
    evaluator.program_key = ("colora-sharded", caches.mesh_placement(mesh))
    return evaluator
