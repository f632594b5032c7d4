"""Fit any registered method by name, and count the parameters it trains (``registry.METHODS``)."""

from __future__ import annotations

import functools

import jax
from jaxtyping import PRNGKeyArray

from colora_jax._src import registry
from colora_jax._src.baselines.common import MethodFit
from colora_jax._src.model.config import FitConfig, ProblemConfig
from colora_jax._src.model.data import GroundTruth, Observations
from colora_jax._src.model.shared_input import SharedInputConfig, personal_size


def fit_method(
    method: str,
    observations: Observations,
    fit_config: FitConfig,
    *,
    key: PRNGKeyArray,
    truth: GroundTruth | None = None,
    **options,
) -> MethodFit:
    """Fit one of ``registry.METHODS`` to the users' observations.

    Pure: jit/vmap it with ``method``, ``fit_config`` and the options static.

    Args:
      method: a name in ``registry.METHODS`` (``colora``, ``local``, ``fedrep``, ...).
      observations: the users' training data.
      fit_config: rank, iterations, tolerance, and (colora, local, global) the core
        algorithm; ``step_size`` is fedrep's and ``learning_rate`` the federated methods'.
        ``colora`` fits a full personal part and ``colora-diag`` a diagonal one, whatever
        ``fit_config.personal`` says; ``local`` and ``oracle`` use ``fit_config.personal``.
      key: PRNG key (random initializations: federated methods, ``init="random"``).
      truth: optional ground truth; traces then record distances to it (``oracle`` needs it).
      options: method-specific settings, e.g. ``federated=FederatedConfig(...)`` for
        fedavg-lora and ffa-lora.

    Returns:
      ``MethodFit(W, U, V, trace)``. Raises ValueError (at trace time) if the method cannot
      run on these observations, e.g. a personal least squares with too few samples.
    """
    registry.method(method)
    fit_config.validate()
    return fit_method_unchecked(method, observations, fit_config, key=key, truth=truth, **options)


def fit_method_unchecked(
    method: str,
    observations: Observations,
    fit_config: FitConfig,
    *,
    key: PRNGKeyArray,
    truth: GroundTruth | None = None,
    **options,
) -> MethodFit:
    """``fit_method`` for a registered ``method`` and a validated ``fit_config``: neither is checked again.

    For callers that checked them once for a whole run (``trials.trial_request``); the method's
    own checks of the observations still run.
    """
    return _fit_method(method, observations, fit_config, key, truth, tuple(sorted(options.items())))


@functools.partial(jax.jit, static_argnums=(0, 2, 5))
def _fit_method(method, observations, fit_config, key, truth, options):
    return registry.method(method).fit(observations, fit_config, key=key, truth=truth, **dict(options))


def parameter_counts(method: str, problem_config: ProblemConfig | SharedInputConfig) -> tuple[int, int]:
    """``(params_shared, params_per_user)`` that the method trains, at the problem's rank."""
    pc = problem_config
    return registry.method(method).counts(pc.d_out, pc.d_in, pc.rank, personal_size(pc))
