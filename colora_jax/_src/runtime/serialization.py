"""JSON-ready values of results: NumPy and JAX scalars and arrays as Python numbers and lists, NaN as null."""

from __future__ import annotations

import math

import jax
import numpy as np


def to_jsonable(x):
    """Floats with NaN/inf as null, NumPy and JAX scalars and arrays as Python numbers and lists (recursively)."""
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, jax.Array):  # fetched to the host; a 0-d array becomes a Python number
        x = np.asarray(x)
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
