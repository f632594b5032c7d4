"""Planted problems whose users share only the input side: ``W_i* = H_i* V*^T`` (FedRep's model).

``V*`` is a Haar orthonormal d_in x r basis and every ``H_i*`` (d_out x r) has i.i.d. N(0, 1)
entries. With ``d_out = 1`` and the defaults this is FedRep's synthetic setting (Collins et al.,
ICML 2021, Sec. 5: d = 20, k = 2, 100 users, noise std 1e-3; they use 5, 10 or 20 samples per
user). The truth is stored in CoLoRA form with ``U* = I_{d_out}`` and ``S_i* = H_i*``, so every
user's output side is the whole space. Measurements come from the same nested sample stream
as ``generate`` (``data.measure``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from colora_jax._src.model import counter_rng
from colora_jax._src.model.config import MODELS, ProblemConfig, check_integer, check_real, choice, effective_precision
from colora_jax._src.model.data import (
    TEST_STREAM,
    TRAIN_STREAM,
    TRUTH_STREAM,
    GroundTruth,
    Problem,
    generate,
    measure,
    orthonormal,
)


@dataclasses.dataclass(frozen=True)
class SharedInputConfig:
    """A planted problem ``W_i* = H_i* V*^T`` (see the module docstring)."""

    model: str = "regression"  # "regression" (FedRep's, with d_out = 1) or "sensing"
    users: int = 100  # k
    d_out: int = 1  # output dimension (1: scalar regression, FedRep's linear model)
    d_in: int = 20  # input dimension d
    rank: int = 2  # r, dimension of the shared representation
    samples: int = 10  # training samples per user (FedRep: 5, 10, 20)
    test_samples: int = 0  # held-out samples per user (0: the exact population risk)
    noise: float = 1e-3  # standard deviation of the additive Gaussian noise
    x64: bool = False  # float64

    @property
    def dtype(self):
        """The JAX float type: float64 when ``x64``, else float32."""
        return jnp.float64 if self.x64 else jnp.float32

    def validate(self) -> "SharedInputConfig":
        """Check every field; returns ``self``, or raises ValueError saying what to change."""
        choice("model", self.model, MODELS)
        for name in ("users", "d_out", "d_in", "rank", "samples"):
            check_integer("SharedInputConfig", name, getattr(self, name), 1)
        check_integer("SharedInputConfig", "test_samples", self.test_samples, 0)
        check_real("SharedInputConfig", "noise", self.noise)
        effective_precision(self)
        if self.rank > self.d_in:
            raise ValueError(f"rank {self.rank} exceeds d_in = {self.d_in}: choose rank <= d_in")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        return self


FEDREP_SYNTHETIC = SharedInputConfig()


def generate_shared_input(key: PRNGKeyArray, config: SharedInputConfig, *, noise=None) -> Problem:
    """Draw ``W_i* = H_i* V*^T`` and measure it as ``generate`` does (same streams and layout)."""
    config.validate()
    k, r, dtype = config.users, config.rank, config.dtype
    noise = config.noise if noise is None else noise
    kt = jax.random.fold_in(key, TRUTH_STREAM)
    V = orthonormal(
        counter_rng.normals(jax.random.fold_in(kt, 0), 1, 1, config.d_in * r, dtype).reshape(config.d_in, r)
    )
    H = counter_rng.normals(jax.random.fold_in(kt, 1), k, 1, config.d_out * r, dtype).reshape(k, config.d_out, r)
    U = jnp.eye(config.d_out, dtype=dtype)
    W = jnp.einsum("kor,ir->koi", H, V)
    truth = GroundTruth(
        U=U,
        V=V,
        S=H,
        U_users=jnp.broadcast_to(U, (k,) + U.shape),
        V_users=jnp.broadcast_to(V, (k,) + V.shape),
        W=W,
        noise=jnp.asarray(noise, dtype),
    )
    train = measure(jax.random.fold_in(key, TRAIN_STREAM), W, config.samples, noise, config.model)
    test = measure(jax.random.fold_in(key, TEST_STREAM), W, config.test_samples, noise, config.model)
    return Problem(truth=truth, train=train, test=test)


def generate_problem(key: PRNGKeyArray, config: ProblemConfig | SharedInputConfig, *, noise=None) -> Problem:
    """``generate`` for a ``ProblemConfig``, ``generate_shared_input`` for a ``SharedInputConfig``."""
    if isinstance(config, SharedInputConfig):
        return generate_shared_input(key, config, noise=noise)
    return generate(key, config, noise=noise)


def personal_size(config: ProblemConfig | SharedInputConfig) -> int:
    """Numbers in one user's planted personal part: ``r^2`` (``r`` diagonal), ``d_out r`` for ``H_i``."""
    if isinstance(config, SharedInputConfig):
        return config.d_out * config.rank
    return config.rank if config.personal == "diag" else config.rank**2
