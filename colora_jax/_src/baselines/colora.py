"""The CoLoRA model ``U S_i V^T`` as a method: ``fit`` with the algorithm of the config."""

from __future__ import annotations

import dataclasses

from colora_jax._src.algorithms import fit
from colora_jax._src.baselines.common import MethodFit


def _fit(obs, fc, key, truth, **changes) -> MethodFit:
    est, trace = fit(obs, dataclasses.replace(fc, **changes), key=key, truth=truth)
    return MethodFit(est.W, est.U, est.V, trace)


def fit_colora(obs, fc, *, key, truth=None) -> MethodFit:
    """A full ``r x r`` personal part, fitted by ``fc.algorithm``."""
    return _fit(obs, fc, key, truth, personal="full")


def fit_colora_diag(obs, fc, *, key, truth=None) -> MethodFit:
    """A diagonal personal part, fitted by ``fc.algorithm``."""
    return _fit(obs, fc, key, truth, personal="diag")


def fit_colora_varpro(obs, fc, *, key, truth=None) -> MethodFit:
    """A full personal part fitted by variable projection (whatever ``fc.algorithm`` says)."""
    return _fit(obs, fc, key, truth, personal="full", algorithm="varpro")
