"""Joint first-order training of U, V and every S_i (``algorithm="adam"``), as LoRA is trained.

One optax step per iteration on the mean squared residual over all users' used samples
(default ``optax.adam(config.learning_rate)``; any optax transformation can be passed).
The objective may increase, so only the budget and the floor stop the loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from colora_jax._src.estimators.fitting import Estimate, Setup, fit_by_steps
from colora_jax._src.model import blocks


def make_body(s: Setup, config, optimizer, axis_name):
    """``(body, params0)`` of ``adam`` for ``fitting.iterate``: joint first-order steps on U, V and S."""
    d, count = s.design, s.count
    opt = optax.adam(config.learning_rate) if optimizer is None else optimizer
    mask = jnp.eye(config.rank, dtype=d.X.dtype)[None] if config.personal == "diag" else 1.0
    start = Estimate(s.U, s.V, blocks.personal_step(d, s.U, s.V, config.personal == "diag"))

    def loss(p):
        return blocks.sum_squares(d, p.U, p.V, p.S * mask, axis_name) / count

    def body(state):
        params, opt_state = state
        sse, grads = jax.value_and_grad(lambda p: loss(p) * count)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int step count with floats
            updates, opt_state = opt.update(jax.tree.map(lambda g: g / count, grads), opt_state, params)
        nxt = optax.apply_updates(params, updates)
        return params, sse, (nxt._replace(S=nxt.S * mask), opt_state)

    return body, (start, opt.init(start))


def fit_joint(observations, config, *, key=None, truth=None, optimizer=None, axis_name=None):
    """``fit`` with ``algorithm="adam"`` (see the module docstring)."""
    return fit_by_steps(
        make_body, observations, config, key=key, truth=truth, optimizer=optimizer, axis_name=axis_name, monotone=False
    )
