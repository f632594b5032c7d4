"""Centred CoLoRA as a method (``colora-centered``): ``lambda`` chosen on held-out samples.

The estimator is the algorithm ``centered`` (``estimators/centered.py``, the objective and its
block steps): the last fifth of each user's samples is held out, ``lambda`` ranges over
``RIDGE_GRID``, and the fit with the smallest validation error is refitted on all samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from colora_jax._src.baselines.common import MethodFit
from colora_jax._src.estimators.centered import Centered
from colora_jax._src.estimators.fitting import check_fit
from colora_jax._src.estimators.users import AllUsers
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig, min_samples
from colora_jax._src.model.data import Observations, predict

RIDGE_GRID = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e4)  # lambda, per sample (0: CoLoRA; 1e4: ~ one shared S)
VALIDATION_FRACTION = 0.2  # of each user's samples held out to choose lambda


def validation_split(obs: Observations, fraction: float = VALIDATION_FRACTION):
    """Training counts (the first samples of each user) and the held-out rows (the rest)."""
    counts = obs.sample_counts()
    held = jnp.maximum(1, jnp.floor(fraction * counts).astype(counts.dtype))
    return counts - held, counts


def validation_error(obs: Observations, W, start, stop):
    """Mean squared residual of each user's rows ``start_i <= j < stop_i`` under ``W``."""
    rows = jnp.arange(obs.samples, dtype=start.dtype)[None, :]
    keep = (rows >= start[:, None]) & (rows < stop[:, None])
    pred = jax.vmap(lambda w, x: predict(w, x, obs.model))(W, obs.X)
    err = jnp.square(obs.Y - pred).reshape(obs.users, obs.samples, -1).sum(-1)
    return jnp.sum(jnp.where(keep, err, 0.0)) / jnp.sum(stop - start)


def fit_colora_centered(obs: Observations, fc: FitConfig, *, key=None, truth=None) -> MethodFit:
    """Centred CoLoRA with ``lambda`` chosen on validation data (see the module docstring)."""
    check_fit(obs, fc, Centered(), key)
    train_counts, all_counts = validation_split(obs)
    need = min_samples(obs.model, fc.rank, "full")
    if int(obs.samples - max(1, int(VALIDATION_FRACTION * obs.samples))) < need:
        raise ValueError(
            f"colora-centered holds out a fifth of each user's samples to choose lambda: use at least"
            f" {int(need / (1 - VALIDATION_FRACTION)) + 1} samples per user"
        )
    dtype = obs.X.dtype
    grid = jnp.asarray(RIDGE_GRID, dtype)
    train = Observations(obs.X, obs.Y, obs.model, counts=train_counts)

    def score(ridge):
        est, _ = Centered(ridge=ridge).fit(AllUsers(blocks.design(train)), fc, key=key)
        return validation_error(obs, est.W, train_counts, all_counts)

    errors = jax.vmap(score)(grid)
    chosen = grid[jnp.argmin(jnp.where(jnp.isfinite(errors), errors, jnp.inf))]
    est, trace = Centered(ridge=chosen).fit(AllUsers(blocks.design(obs)), fc, key=key, truth=truth)
    return MethodFit(est.W, est.U, est.V, trace)
