"""CoLoRA and per-user LoRA layers that wrap an existing ``flax.nnx.Linear``.

Convention. A flax kernel ``K`` has shape ``(d_in, d_out)`` and computes ``y = x K + b``; in the
math's column-vector notation that layer is ``W_0 = K^T`` (d_out x d_in). CoLoRA adapts it, for
user ``i``, to

    W_i = W_0 + U S_i V^T        U: (d_out, r) shared, V: (d_in, r) shared, S_i: (r, r) personal

which in flax's row-vector form reads

    y = x K + b + ((x V) S_i^T) U^T,        i.e. the kernel of user i is K + V S_i^T U^T.

The shared projection ``x V`` and the output projection ``U^T`` are one matmul for the whole
batch; only the ``r x r`` product with ``S_i`` depends on the example's user.
"""

from __future__ import annotations

import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

__all__ = [
    "SharedParam",
    "PersonalParam",
    "UserIds",
    "CoLoRALinear",
    "LoRABankLinear",
    "check_user_ids",
]


class SharedParam(nnx.Param):
    """Marker for the shared adapter factors ``U`` and ``V`` (trained on every user's data)."""


class PersonalParam(nnx.Param):
    """Marker for per-user parameters: the CoLoRA bank ``S`` and the per-user LoRA bank ``A, B``."""


class UserIds(nnx.Variable):
    """Non-trainable slot holding the user id of each example for the duration of one call.

    It is set by :func:`colora_jax.nnx.colora_users` and is empty (shape ``(0,)``) otherwise.
    """


def _empty_ids() -> Int[Array, "0"]:
    return jnp.zeros((0,), jnp.int32)


def check_user_ids(user_ids: Int[Array, "*batch"], users: int) -> None:
    """Raise ``ValueError`` if concrete ``user_ids`` are not integers in ``[0, users)``.

    Under ``jit`` the ids are tracers and cannot be inspected; then nothing is raised here and
    the layers instead return NaN for an example whose id is out of range (see
    :func:`_gather_rows`).
    """
    if isinstance(user_ids, jax.core.Tracer):
        return
    ids = np.asarray(user_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"user ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= users):
        bad = ids[(ids < 0) | (ids >= users)]
        raise ValueError(
            f"user id(s) {sorted(set(bad.tolist()))[:8]} out of range: this model has a bank of"
            f" {users} users, so ids must lie in [0, {users - 1}]; add users with"
            " colora_jax.nnx.add_users or build the model with a larger `users`"
        )


def _gather_rows(bank: Float[Array, "users ..."], user_ids: Int[Array, " batch"]) -> Float[Array, "batch ..."]:
    """``bank[user_ids]``, with NaN rows for ids outside ``[0, users)`` instead of clamping."""
    users = bank.shape[0]
    ids = jnp.where(user_ids < 0, users, user_ids)  # negative ids would otherwise wrap around
    return jnp.take(bank, ids, axis=0, mode="fill", fill_value=jnp.nan)


def _resolve_ids(layer: "CoLoRALinear | LoRABankLinear", x: Array, user_ids: Array | None) -> Array:
    if user_ids is None:
        user_ids = layer.user_ids[...]
        if user_ids.shape == (0,):
            raise ValueError(
                f"{type(layer).__name__} needs one user id per example: call it as"
                " layer(x, user_ids), or call the model inside `with colora_users(model, user_ids):`"
            )
    user_ids = jnp.asarray(user_ids)
    if user_ids.ndim != 1 or user_ids.shape[0] != x.shape[0]:
        raise ValueError(
            f"expected one user id per example, i.e. shape ({x.shape[0]},) for inputs of shape"
            f" {x.shape}; got user ids of shape {user_ids.shape}"
        )
    check_user_ids(user_ids, layer.users)
    return user_ids


def _check_rank(base: nnx.Linear, rank: int) -> None:
    if rank < 1 or rank > min(base.in_features, base.out_features):
        raise ValueError(
            f"rank {rank} is not in [1, min(d_in, d_out)] = [1, {min(base.in_features, base.out_features)}]"
            f" for a Linear({base.in_features} -> {base.out_features}): choose a smaller rank"
        )


def _per_example(x: Float[Array, "batch *seq d"]) -> tuple[Array, tp.Callable[[Array], Array]]:
    """Flatten middle axes so ``x`` is (batch, tokens, d); return it and the inverse reshape."""
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-1])
    return flat, lambda y: y.reshape(*shape[:-1], y.shape[-1])


class CoLoRALinear(nnx.Module):
    """A frozen ``nnx.Linear`` plus a shared low-rank adapter and a bank of personal ``r x r``.

    For an example of user ``i`` the layer computes

        y = x K + b + ((x V) S_i^T) U^T

    (``K, b`` the wrapped kernel and bias). ``U`` starts at zero, ``V`` random and every ``S_i``
    at the identity, so the output equals the base's at initialization while the gradient in
    ``U`` is non-zero (no saddle at the start, as LoRA's ``B = 0``).

    The wrapped ``base`` keeps its ``nnx.Param`` variables; it is frozen in the sense that
    training targets only :class:`SharedParam` and/or :class:`PersonalParam`
    (``nnx.Optimizer(model, tx, wrt=SharedParam)``).

    Args:
      base: the layer to adapt; its kernel and bias are reused, not copied.
      users: size ``k`` of the personal bank.
      rank: ``r``.
      rngs: source of the key for ``V``'s initialization (unused when ``shared_factors`` is given).
      shared_factors: optional initial ``(U, V)`` of shapes ``(d_out, r)`` and ``(d_in, r)``,
        e.g. an imported LoRA; the bank still starts at the identity.
      dtype: compute dtype (``None``: promote inputs and parameters).
    """

    def __init__(
        self,
        base: nnx.Linear,
        *,
        users: int,
        rank: int,
        rngs: nnx.Rngs | None = None,
        shared_factors: tuple[Float[Array, "d_out r"], Float[Array, "d_in r"]] | None = None,
        dtype: tp.Any = None,
    ):
        if not isinstance(base, nnx.Linear):
            raise ValueError(f"CoLoRALinear wraps an nnx.Linear, got {type(base).__name__}")
        _check_rank(base, rank)
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        d_in, d_out = base.in_features, base.out_features
        pdtype = base.kernel[...].dtype
        self.base = base
        self.users = users
        self.rank = rank
        self.dtype = dtype
        if shared_factors is None:
            if rngs is None:
                raise ValueError("CoLoRALinear needs rngs (for a random V) or explicit shared_factors")
            u = jnp.zeros((d_out, rank), pdtype)
            v = jax.random.normal(rngs.params(), (d_in, rank), pdtype) / jnp.sqrt(jnp.asarray(d_in, pdtype))
        else:
            u, v = (jnp.asarray(f, pdtype) for f in shared_factors)
            if u.shape != (d_out, rank) or v.shape != (d_in, rank):
                raise ValueError(
                    f"shared_factors must have shapes U {(d_out, rank)} and V {(d_in, rank)},"
                    f" got {u.shape} and {v.shape}"
                )
        self.shared_u = SharedParam(u)
        self.shared_v = SharedParam(v)
        self.personal = PersonalParam(jnp.broadcast_to(jnp.eye(rank, dtype=pdtype), (users, rank, rank)))
        self.user_ids = UserIds(_empty_ids())

    def delta_kernel(self, user: int | Int[Array, ""]) -> Float[Array, "d_in d_out"]:
        """The adapter's kernel update for one user: ``V S_user^T U^T`` (= ``(U S_user V^T)^T``)."""
        s = self.personal[...][user]
        return self.shared_v[...] @ s.T @ self.shared_u[...].T

    def __call__(
        self, x: Float[Array, "batch *seq d_in"], user_ids: Int[Array, " batch"] | None = None
    ) -> Float[Array, "batch *seq d_out"]:
        ids = _resolve_ids(self, x, user_ids)
        base_out = self.base(x)
        (xf, unflatten) = _per_example(x)
        xf, v, s, u = nnx.nn.dtypes.promote_dtype(
            (xf, self.shared_v[...], self.personal[...], self.shared_u[...]), dtype=self.dtype
        )
        h = xf @ v  # (batch, tokens, r): one skinny matmul for the whole batch
        s_b = _gather_rows(s, ids)  # (batch, r, r): the only per-user quantity
        h = jnp.einsum("btr,bsr->bts", h, s_b)  # h S_i^T
        return base_out + unflatten(h @ u.T)


class LoRABankLinear(nnx.Module):
    """A frozen ``nnx.Linear`` plus one independent LoRA per user (the per-user baseline).

    For an example of user ``i``: ``y = x K + b + (x A_i) B_i`` with ``A_i: (d_in, r)`` random and
    ``B_i: (r, d_out)`` zero at initialization. In the math's notation ``W_i = W_0 + B_i^T A_i^T``.
    Both banks are :class:`PersonalParam`: nothing is shared between users.

    Args:
      base: the layer to adapt.
      users: number of LoRAs in the bank.
      rank: ``r`` of every LoRA.
      rngs: source of the key for ``A``'s initialization (unused when ``initial_factors`` is given).
      initial_factors: optional ``(A, B)`` of shapes ``(d_in, r)``, ``(r, d_out)`` given to every
        user, e.g. a FedAvg-trained shared LoRA before local fine-tuning.
      dtype: compute dtype (``None``: promote inputs and parameters).
    """

    def __init__(
        self,
        base: nnx.Linear,
        *,
        users: int,
        rank: int,
        rngs: nnx.Rngs | None = None,
        initial_factors: tuple[Float[Array, "d_in r"], Float[Array, "r d_out"]] | None = None,
        dtype: tp.Any = None,
    ):
        if not isinstance(base, nnx.Linear):
            raise ValueError(f"LoRABankLinear wraps an nnx.Linear, got {type(base).__name__}")
        _check_rank(base, rank)
        d_in, d_out = base.in_features, base.out_features
        pdtype = base.kernel[...].dtype
        self.base = base
        self.users = users
        self.rank = rank
        self.dtype = dtype
        if initial_factors is None:
            if rngs is None:
                raise ValueError("LoRABankLinear needs rngs (for a random A) or explicit initial_factors")
            a = jax.random.normal(rngs.params(), (d_in, rank), pdtype) / jnp.sqrt(jnp.asarray(d_in, pdtype))
            b = jnp.zeros((rank, d_out), pdtype)
        else:
            a, b = (jnp.asarray(f, pdtype) for f in initial_factors)
            if a.shape != (d_in, rank) or b.shape != (rank, d_out):
                raise ValueError(
                    f"initial_factors must have shapes A {(d_in, rank)} and B {(rank, d_out)}, got {a.shape} and {b.shape}"
                )
        self.lora_a = PersonalParam(jnp.broadcast_to(a, (users, d_in, rank)))
        self.lora_b = PersonalParam(jnp.broadcast_to(b, (users, rank, d_out)))
        self.user_ids = UserIds(_empty_ids())

    def delta_kernel(self, user: int | Int[Array, ""]) -> Float[Array, "d_in d_out"]:
        """The kernel update of one user, ``A_user B_user``."""
        return self.lora_a[...][user] @ self.lora_b[...][user]

    def __call__(
        self, x: Float[Array, "batch *seq d_in"], user_ids: Int[Array, " batch"] | None = None
    ) -> Float[Array, "batch *seq d_out"]:
        ids = _resolve_ids(self, x, user_ids)
        base_out = self.base(x)
        xf, unflatten = _per_example(x)
        xf, a, b = nnx.nn.dtypes.promote_dtype((xf, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        h = jnp.einsum("btd,bdr->btr", xf, _gather_rows(a, ids))  # a (d_in, r) matrix per example
        return base_out + unflatten(jnp.einsum("btr,bro->bto", h, _gather_rows(b, ids)))
