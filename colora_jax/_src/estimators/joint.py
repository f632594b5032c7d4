"""Joint first-order training of U, V and every S_i (``Adam``, registered as ``"adam"``), as LoRA is trained.

One optax step per iteration on the mean squared residual over all users' used samples
(default ``optax.adam(learning_rate)``; any optax transformation can be given as ``optimizer``).
The objective may increase, so only the budget and the floor stop the loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from colora_jax._src.estimators.fitting import Estimate, Estimator
from colora_jax._src.model import blocks
from colora_jax._src.model.config import check_positive


@dataclasses.dataclass(frozen=True)
class Adam(Estimator):
    """Joint first-order training of U, V and every S_i with optax (adam by default), as LoRA is trained."""

    learning_rate: float = 1e-2  # of the default optax.adam
    optimizer: Any = None  # any optax GradientTransformation (replaces optax.adam(learning_rate))

    monotone = False

    def check(self, config):
        """``learning_rate`` a finite number > 0."""
        check_positive("Adam", "learning_rate", self.learning_rate)

    def configured(self, config):
        """``FitConfig.learning_rate`` as this learning rate."""
        return dataclasses.replace(self, learning_rate=config.learning_rate)

    @property
    def transformation(self):
        """The optax transformation: ``optimizer``, or ``optax.adam(learning_rate)``."""
        return optax.adam(self.learning_rate) if self.optimizer is None else self.optimizer

    def start(self, s, config, users):
        """``(U0, V0, S0)`` with ``S0`` the exact personal step at the start, and the optimizer state."""
        diag = config.personal == "diag"
        _, S = users.sum(lambda d, _: (None, blocks.personal_step(d, s.U, s.V, diag)))
        start = Estimate(s.U, s.V, S)
        return start, self.transformation.init(start)

    def step(self, params, s, config, users):
        """One optax step on ``(U, V, S)`` (diagonal personal parts kept diagonal by a mask)."""
        p, opt_state = params
        mask = jnp.eye(config.rank, dtype=p.U.dtype)[None] if config.personal == "diag" else 1.0

        def part(d, S):
            sse, grads = jax.value_and_grad(lambda U, V, S_: blocks.sum_squares(d, U, V, S_ * mask), (0, 1, 2))(
                users.local(p.U), users.local(p.V), S
            )
            return (sse, grads[0], grads[1]), grads[2]

        (sse, gU, gV), gS = users.sum(part, p.S)
        grads = Estimate(gU, gV, gS)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int step count with floats
            updates, opt_state = self.transformation.update(jax.tree.map(lambda g: g / s.count, grads), opt_state, p)
        nxt = optax.apply_updates(p, updates)
        return p, sse, (nxt._replace(S=nxt.S * mask), opt_state)
