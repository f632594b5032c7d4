"""Federated averaging of LoRA factors with local steps, then per-user fine-tuning: FedAvg-LoRA, FFA-LoRA."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src.baselines.common import MethodFit, finite, floor, iterate_fit, record_fit
from colora_jax._src.estimators import fitting
from colora_jax._src.estimators.fitting import Trace
from colora_jax._src.model.config import FitConfig
from colora_jax._src.model.data import GroundTruth, Observations, predict


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    """Local training of the FedAvg-style baselines (fedavg-lora, ffa-lora).

    Rounds are ``FitConfig.iters``; the local optimizer is ``optax.adam(FitConfig.learning_rate)``
    restarted every round (clients keep no optimizer state between rounds).
    """

    local_steps: int = 5  # local gradient steps per user per round, before averaging
    finetune_steps: int = 50  # local steps of each user from the final global adapter ("+ FT")
    init_scale: float = 1.0  # A0 ~ N(0, init_scale^2 / d_in); B0 = 0 (LoRA's initialization)

    def validate(self) -> "FederatedConfig":
        """Check the options; returns ``self``, or raises ValueError saying what to change."""
        if self.local_steps < 1 or self.finetune_steps < 0 or not self.init_scale > 0:
            raise ValueError("local_steps must be >= 1, finetune_steps >= 0 and init_scale > 0")
        return self


class LoRAFactors(NamedTuple):
    """LoRA factors of one adapter: ``W = B @ A``."""

    B: Float[Array, "d_out r"]  # output side (starts at zero)
    A: Float[Array, "r d_in"]  # input side (random at initialization)


def federated_lora(
    obs: Observations,
    config: FitConfig,
    federated: FederatedConfig = FederatedConfig(),
    *,
    key: PRNGKeyArray,
    train_A: bool = True,
    truth: GroundTruth | None = None,
) -> tuple[LoRAFactors, LoRAFactors, Trace]:
    """FedAvg of LoRA factors with local steps, then per-user fine-tuning ("FedAvg + FT").

    Each round every user starts from the global ``(B, A)``, takes ``local_steps`` Adam steps
    on its own mean squared residual (over its used samples), and the server averages the
    factors: ``B <- mean_i B_i``, ``A <- mean_i A_i``. The product of the averages is not the
    average of the products ``B_i A_i`` (the inexactness FFA-LoRA avoids by freezing A). With
    ``train_A=False`` (FFA-LoRA) A stays at its random initialization and only B is trained
    and averaged. After ``config.iters`` rounds each user fine-tunes its own copy for
    ``finetune_steps`` steps (A frozen too when ``train_A=False``).

    Returns:
      ``(global_adapter, personal_adapters, trace)``: the trace records the global adapter
      after each round (its subspace distances: span(B) to U*, span(A^T) to V*).
    """
    config.validate()
    federated.validate()
    d_out, d_in = obs.dims
    r, dtype = config.rank, obs.X.dtype
    used, counts = obs.masked(), obs.sample_counts().astype(obs.X.dtype)
    global_ = LoRAFactors(
        B=jnp.zeros((d_out, r), dtype),
        A=(federated.init_scale / jnp.sqrt(jnp.asarray(d_in, dtype))) * jax.random.normal(key, (r, d_in), dtype),
    )
    opt = optax.adam(config.learning_rate)
    mask = LoRAFactors(B=jnp.ones((), dtype), A=jnp.ones((), dtype) if train_A else jnp.zeros((), dtype))

    def user_loss(p: LoRAFactors, X, Y, n):
        per_sample = jnp.square(Y - predict(p.B @ p.A, X, obs.model)).reshape(Y.shape[0], -1)
        return jnp.sum(jnp.mean(per_sample, axis=1)) / jnp.maximum(n, 1.0)  # unused rows are zero

    def local(p: LoRAFactors, X, Y, n, steps: int) -> LoRAFactors:
        def body(_, carry):
            p, s = carry
            g = jax.tree.map(jnp.multiply, jax.grad(user_loss)(p, X, Y, n), mask)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes its int step count with floats
                u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, steps, body, (p, opt.init(p)))[0]

    every_user = (None, 0, 0, 0, None)

    def round_(p: LoRAFactors) -> LoRAFactors:
        users = jax.vmap(local, every_user)(p, used.X, used.Y, counts, federated.local_steps)
        return jax.tree.map(lambda a: jnp.mean(a, axis=0), users)

    def metrics_of(p: LoRAFactors):
        W = jnp.broadcast_to(p.B @ p.A, (obs.users, d_out, d_in))
        return record_fit(obs, W, p.B, p.A.T, truth)

    global_, history, it, done = iterate_fit(round_, global_, metrics_of, config.iters, 0.0, floor(obs), False)
    personal = jax.vmap(local, every_user)(global_, used.X, used.Y, counts, federated.finetune_steps)
    return global_, personal, fitting.make_trace(history, it, done, finite(obs))


def _federated(obs, fc, key, truth, train_A: bool, federated: FederatedConfig) -> MethodFit:
    g, personal, trace = federated_lora(obs, fc, federated, key=key, train_A=train_A, truth=truth)
    W = jnp.einsum("kor,kri->koi", personal.B, personal.A)
    d_out, d_in = obs.dims
    U = g.B if fc.rank <= d_out else None
    V = g.A.T if fc.rank <= d_in else None
    return MethodFit(W, U, V, trace)


def fit_fedavg_lora(obs, fc, *, key, truth=None, federated: FederatedConfig = FederatedConfig()) -> MethodFit:
    """FedAvg of both LoRA factors, then per-user fine-tuning."""
    return _federated(obs, fc, key, truth, True, federated)


def fit_ffa_lora(obs, fc, *, key, truth=None, federated: FederatedConfig = FederatedConfig()) -> MethodFit:
    """FFA-LoRA: A frozen at its random initialization, FedAvg of B, then fine-tuning of B."""
    return _federated(obs, fc, key, truth, False, federated)
